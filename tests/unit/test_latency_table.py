"""gslb.latency_table: normalisation, freshness, bounds, batch validation."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.latency_table import LatencyTable, network_of, normalise

ip = ipaddress.ip_address
net = ipaddress.ip_network


def test_ingest_and_lookup_by_client_network() -> None:
    t = LatencyTable()
    t.ingest(net("1.2.3.0/24"), "us-east", 23.5, now=100.0)
    t.ingest(net("1.2.3.128/25"), "eu-central", 90, now=101.0)   # folded into 1.2.3.0/24
    assert len(t) == 1
    assert t.lookup(ip("1.2.3.200"), now=102.0) == {"us-east": 23.5, "eu-central": 90.0}
    assert t.lookup(ip("1.2.4.1"), now=102.0) == {}
    assert t.lookup(ip("::ffff:1.2.3.4"), now=102.0) == {"us-east": 23.5, "eu-central": 90.0}


def test_ipv6_is_per_48() -> None:
    t = LatencyTable()
    t.ingest(net("2001:db8:1:2::/64"), "ap", 5.0, now=0.0)
    assert t.lookup(ip("2001:db8:1:ffff::1"), now=0.0) == {"ap": 5.0}
    assert t.lookup(ip("2001:db8:2::1"), now=0.0) == {}


def test_wider_networks_are_refused() -> None:
    t = LatencyTable()
    with pytest.raises(ValueError, match="wider than /24"):
        t.ingest(net("1.2.0.0/16"), "r", 1.0, now=0.0)
    with pytest.raises(ValueError, match="wider than /48"):
        t.ingest(net("2001:db8::/32"), "r", 1.0, now=0.0)
    assert normalise(net("::ffff:1.2.3.0/120")) == net("1.2.3.0/24")


@pytest.mark.parametrize("rtt", [-1, math.nan, math.inf, "3", True, None])
def test_bad_rtt_refused(rtt) -> None:
    with pytest.raises(ValueError, match="rtt_ms"):
        LatencyTable().ingest(net("1.2.3.0/24"), "r", rtt, now=0.0)


def test_freshness_and_expiry() -> None:
    t = LatencyTable(max_age=60.0)
    t.ingest(net("1.2.3.0/24"), "a", 10.0, now=0.0)
    t.ingest(net("1.2.3.0/24"), "b", 20.0, now=30.0)
    assert t.lookup(ip("1.2.3.1"), now=60.0) == {"a": 10.0, "b": 20.0}
    assert t.lookup(ip("1.2.3.1"), now=61.0) == {"b": 20.0}
    assert t.lookup_detail(ip("1.2.3.1"), now=10.0) == ({"a": 10.0, "b": 20.0}, 60.0)
    assert t.lookup(ip("1.2.3.1"), now=40.0, max_age=20.0) == {"b": 20.0}
    assert t.lookup_detail(ip("9.9.9.9"), now=0.0) == ({}, math.inf)
    gen = t.generation
    assert t.expire(now=61.0) == 1
    assert t.generation == gen + 1
    assert t.expire(now=61.0) == 0
    assert t.generation == gen + 1
    assert t.expire(now=1000.0) == 1
    assert len(t) == 0


def test_memory_is_bounded_lru_by_report() -> None:
    t = LatencyTable(max_networks=3)
    for i in range(3):
        t.ingest(net(f"10.0.{i}.0/24"), "r", 1.0, now=float(i))
    t.ingest(net("10.0.0.0/24"), "r", 2.0, now=5.0)        # refreshes 10.0.0.0/24
    for i in range(3, 1000):
        t.ingest(net(f"10.{i // 256}.{i % 256}.0/24"), "r", 1.0, now=float(i))
        assert len(t) <= 3
    assert t.evicted == 997
    t2 = LatencyTable(max_networks=2)
    t2.ingest(net("10.0.0.0/24"), "r", 1.0, now=0.0)
    t2.ingest(net("10.0.1.0/24"), "r", 1.0, now=1.0)
    t2.ingest(net("10.0.0.0/24"), "r", 1.0, now=2.0)        # now most recent
    t2.ingest(net("10.0.2.0/24"), "r", 1.0, now=3.0)        # evicts 10.0.1.0/24
    assert t2.lookup(ip("10.0.0.1"), now=3.0)
    assert not t2.lookup(ip("10.0.1.1"), now=3.0)


def test_regions_per_network_are_bounded() -> None:
    t = LatencyTable(max_regions=2)
    t.ingest(net("10.0.0.0/24"), "a", 1.0, now=0.0)
    t.ingest(net("10.0.0.0/24"), "b", 1.0, now=1.0)
    t.ingest(net("10.0.0.0/24"), "c", 1.0, now=2.0)
    assert t.lookup(ip("10.0.0.1"), now=2.0) == {"b": 1.0, "c": 1.0}


def test_batch_ingest() -> None:
    t = LatencyTable()
    n = t.ingest_batch({"measurements": [
        {"network": "1.2.3.0/24", "region": "us-east", "rtt_ms": 23.5},
        {"network": "2001:db8::/48", "region": "eu", "rtt_ms": 80},
    ]}, now=0.0, known_regions={"us-east", "eu"})
    assert n == 2
    assert t.lookup(ip("2001:db8::5"), now=0.0) == {"eu": 80.0}


@pytest.mark.parametrize(("payload", "message"), [
    ([], "expected an object"),
    ({"measurements": "x"}, "expected an object"),
    ({"measurements": [], "extra": 1}, "unknown key 'extra'"),
    ({"measurements": [5]}, r"measurements\[0\]: expected an object"),
    ({"measurements": [{"network": "1.2.3.0/24", "region": "a", "rtt_ms": 1, "x": 1}]},
     r"measurements\[0\]: unknown key 'x'"),
    ({"measurements": [{"network": 3, "region": "a", "rtt_ms": 1}]}, r"measurements\[0\]\.network"),
    ({"measurements": [{"network": "1.2.3.0/33", "region": "a", "rtt_ms": 1}]}, r"\.network"),
    ({"measurements": [{"network": "1.0.0.0/8", "region": "a", "rtt_ms": 1}]}, "wider than /24"),
    ({"measurements": [{"network": "1.2.3.0/24", "region": "", "rtt_ms": 1}]}, r"\.region"),
    ({"measurements": [{"network": "1.2.3.0/24", "region": "zz", "rtt_ms": 1}]}, "unknown region 'zz'"),
    ({"measurements": [{"network": "1.2.3.0/24", "region": "a", "rtt_ms": -2}]}, r"\.rtt_ms"),
])
def test_batch_validation_is_atomic(payload, message) -> None:
    t = LatencyTable()
    good = {"network": "9.9.9.0/24", "region": "a", "rtt_ms": 1}
    if isinstance(payload, dict) and isinstance(payload.get("measurements"), list) and payload["measurements"]:
        payload = {**payload, "measurements": [good, *payload["measurements"]]}
        message = message.replace(r"measurements\[0\]", r"measurements\[1\]")
    with pytest.raises(ValueError, match=message):
        t.ingest_batch(payload, now=0.0, known_regions={"a"})
    assert len(t) == 0


@given(st.integers(0, 2**32 - 1))
def test_network_of_v4_contains_address(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    n = network_of(address)
    assert n.prefixlen == 24
    assert address in n
    assert network_of(ipaddress.IPv6Address(f"::ffff:{address}")) == n


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("abc"), st.floats(0, 1e4),
                          st.floats(0, 1000)), max_size=60))
def test_bounded_and_fresh_invariants(reports) -> None:
    t = LatencyTable(max_networks=5, max_age=100.0)
    latest = 0.0
    for i, region, rtt, now in reports:
        t.ingest(net(f"10.0.{i}.0/24"), region, rtt, now)
        latest = max(latest, now)
        assert len(t) <= 5
    for i in range(51):
        for region, value in t.lookup(ip(f"10.0.{i}.1"), now=latest).items():
            assert region in "abc"
            assert value >= 0


def test_repr() -> None:
    assert repr(LatencyTable(max_networks=7)).startswith("<LatencyTable 0 networks (max 7)")


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                       max_leaves=12)


@given(st.one_of(JSONISH, st.fixed_dictionaries({"measurements": st.lists(st.one_of(
    JSONISH, st.fixed_dictionaries({"network": st.one_of(st.text(max_size=20), st.sampled_from(
        ["1.2.3.0/24", "1.2.3.4", "2001:db8::/48", "::/0", "1.2.3.0/25"])), "region": JSONISH,
        "rtt_ms": JSONISH})), max_size=4)})))
def test_ingest_batch_accepts_or_raises_value_error(payload) -> None:
    t = LatencyTable()
    try:
        n = t.ingest_batch(payload, now=0.0)
    except ValueError:
        assert len(t) == 0
    else:
        assert n == len(payload["measurements"])
