"""The pure policy pieces: distance, geo, geo_map, latency, weighted, spill."""

from __future__ import annotations

import collections
import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.geoip import Location
from gslb.steering import failover, geo, geo_map, latency, spill, weighted
from gslb.steering.base import Region
from gslb.steering.config import GeoMap
from gslb.steering.distance import great_circle_km

ip = ipaddress.ip_address
net = ipaddress.ip_network


def test_great_circle_known_distances() -> None:
    # New York - London is about 5570 km; a point to itself is 0; antipodes are half the circumference
    assert great_circle_km(40.71, -74.01, 51.51, -0.13) == pytest.approx(5570, rel=0.01)
    assert great_circle_km(10, 20, 10, 20) == 0
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(20015, rel=0.001)


@given(st.floats(-90, 90), st.floats(-180, 180), st.floats(-90, 90), st.floats(-180, 180))
def test_distance_symmetric_and_bounded(a, b, c, d) -> None:
    x = great_circle_km(a, b, c, d)
    assert x == pytest.approx(great_circle_km(c, d, a, b), abs=1e-6)
    assert 0 <= x <= 20016


def test_geo_rank_nearest_first() -> None:
    regions = [Region("us", 39.0, -77.5), Region("eu", 50.1, 8.7), Region("ap", 37.6, 127.0)]
    order = geo.rank(regions, 48.85, 2.35)          # Paris
    assert [r for r, _ in order] == ["eu", "us", "ap"]
    assert order[0][1] == pytest.approx(480, rel=0.05)
    assert [r for r, _ in geo.rank(regions, 35.7, 139.7)] == ["ap", "eu", "us"]   # Tokyo: Frankfurt is nearer


GMAP = GeoMap(cidr=((net("10.1.0.0/16"), ("ap",)), (net("10.0.0.0/8"), ("eu",))),
              country={"KR": ("ap", "us")}, continent={"EU": ("eu", "us")}, default=("us", "eu"))


def loc(country: str = "", continent: str = "", network: str = "0.0.0.0/0") -> Location:
    return Location(0.0, 0.0, country, continent, "", net(network))


def test_geo_map_precedence() -> None:
    assert geo_map.rank(GMAP, ip("10.1.2.3"), loc("KR")) == (("ap",), "cidr 10.1.0.0/16")
    assert geo_map.rank(GMAP, ip("10.2.2.3"), loc("KR")) == (("eu",), "cidr 10.0.0.0/8")
    assert geo_map.rank(GMAP, ip("1.2.3.4"), loc("KR", "AS")) == (("ap", "us"), "country KR")
    assert geo_map.rank(GMAP, ip("1.2.3.4"), loc("FR", "EU")) == (("eu", "us"), "continent EU")
    assert geo_map.rank(GMAP, ip("1.2.3.4"), loc("BR", "SA")) == (("us", "eu"), "default")
    assert geo_map.rank(GMAP, ip("1.2.3.4"), None) == (("us", "eu"), "default")
    assert geo_map.rank(GMAP, None, None) == (("us", "eu"), "default")
    assert geo_map.rank(GMAP, ip("::1"), None)[1] == "default"


def test_geo_map_key_prefix_never_spans_a_cidr_boundary() -> None:
    # 10.1.0.0/16 inside 10.0.0.0/8: a client in 10.2.x must not get a scope covering 10.1/16
    assert geo_map.key_prefix(GMAP, ip("10.1.2.3"), 8) == 16
    assert geo_map.key_prefix(GMAP, ip("10.2.2.3"), 8) == 15
    assert geo_map.key_prefix(GMAP, ip("10.200.2.3"), 8) == 9
    assert geo_map.key_prefix(GMAP, ip("1.2.3.4"), 0) == 5      # 0.0.0.0/5 holds neither 10/8 nor 10.1/16
    assert geo_map.key_prefix(GMAP, ip("1.2.3.4"), 24) == 24


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_geo_map_key_prefix_invariant(value: int, start: int) -> None:
    address = ipaddress.IPv4Address(value)
    p = geo_map.key_prefix(GMAP, address, start)
    assert p >= start
    around = ipaddress.ip_network((address, p), strict=False)
    want = geo_map.match_cidr(GMAP, address)
    # every address of the key network matches the same CIDR entry: check the corners
    for probe in (around.network_address, around.broadcast_address):
        assert geo_map.match_cidr(GMAP, probe) == want


def test_latency_rank() -> None:
    assert latency.rank({"eu": 80.0, "ap": 20.0}, ["us", "eu", "ap"]) == ["ap", "eu", "us"]
    assert latency.rank({}, ["us", "eu"]) == ["us", "eu"]
    assert latency.rank({"b": 5.0, "a": 5.0}, ["b", "a"]) == ["a", "b"]


def test_failover_is_the_configured_order() -> None:
    assert failover.rank(("b", "a", "c")) == ["b", "a", "c"]


def test_weighted_proportions() -> None:
    rng = random.Random(7)
    firsts = collections.Counter(weighted.order(["a", "b", "c"], {"a": 3, "b": 1, "c": 0}, rng)[0]
                                 for _ in range(20000))
    assert firsts["c"] == 0
    assert firsts["a"] / 20000 == pytest.approx(0.75, abs=0.02)


def test_weighted_order_is_a_permutation_with_zero_weights_last() -> None:
    rng = random.Random(1)
    for _ in range(100):
        out = weighted.order(["a", "b", "c", "d"], {"a": 1, "b": 0, "c": 2, "d": 0}, rng)
        assert sorted(out) == ["a", "b", "c", "d"]
        assert out[2:] == ["b", "d"]


def test_spill_proportional_to_capacity() -> None:
    capacity = {"b": 3.0, "c": 1.0, "d": 0.0}
    firsts = collections.Counter(spill.spread(f"10.{i // 256}.{i % 256}.0/24", ["b", "c", "d"], capacity)[0]
                                 for i in range(20000))
    assert firsts["d"] == 0
    assert firsts["b"] / 20000 == pytest.approx(0.75, abs=0.02)


def test_spill_stable_and_minimal_disruption() -> None:
    capacity = {"b": 1.0, "c": 1.0, "d": 1.0}
    keys = [f"192.0.{i}.0/24" for i in range(256)]
    before = {k: spill.spread(k, ["b", "c", "d"], capacity)[0] for k in keys}
    assert before == {k: spill.spread(k, ["b", "c", "d"], capacity)[0] for k in keys}
    after = {k: spill.spread(k, ["b", "c"], capacity)[0] for k in keys}   # d fails too
    moved = [k for k in keys if before[k] != after[k]]
    assert moved
    assert all(before[k] == "d" for k in moved)         # only d's clients move
