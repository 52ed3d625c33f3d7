"""The responder's compiled miss path: the same bytes and counters as the reference path.

Two responders over the same zones, database and region states: one whose steering answers from
the compiled tables (its `respond` takes `_fast_miss` for known ECS shapes, then the compiled
answers remembered by the query's bytes), one without tables whose `respond_uncached` parses,
locates, ranks and widens every query.
"""

from __future__ import annotations

import ipaddress
import random

import dns.edns
import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.common.configload import Section
from gslb.dns.responder import MAX_TEMPLATES, Responder
from gslb.dns.zone import load_zones
from gslb.geoip import MaxMindLocator, read_tree
from gslb.latency_table import LatencyTable
from gslb.status import AnswerSampler
from gslb.steering import Steering
from gslb.steering.base import RegionState
from gslb.steering.config import load_services
from gslb.steering.table import compile_tables
from tests.geo_fixtures import write_city_db
from tests.unit.test_steering_table import REGIONS, STATES, _layout, _spill_states, _spilled

CONFIG = """
zones:
  example.test:
    ttl: 3600
    soa: {mname: ns1.example.test, rname: hostmaster.example.test, serial: 1, minimum: 60}
    ns: [ns1.example.test]
    records:
      ns1: {A: [127.0.0.1]}
      static: {A: [127.0.0.7]}
      alias: {CNAME: www}
services:
  www.example.test: {policy: geo, regions: [us-east, eu-central, ap-northeast]}
  two.example.test: {policy: geo, count: 2}
  static.example.test: {policy: geo}
  none.example.test: {policy: geo, regions: [us-east, eu-central], all_down: {action: nodata, negative_ttl: 7}}
  addr.example.test: {policy: geo, all_down: {action: address, addresses: [192.0.2.99, "2001:db8::99"]}}
  lat.example.test: {policy: latency, regions: [us-east, eu-central, ap-northeast]}
  map.example.test:
    policy: geo_map
    regions: [us-east, eu-central, ap-northeast]
    map:
      cidr: {"198.18.0.0/20": [ap-northeast, eu-central], "198.18.64.96/27": [eu-central]}
      continent: {EU: [eu-central, us-east]}
      default: [us-east, ap-northeast]
"""
NAMES = ("www.example.test", "two.example.test", "static.example.test", "none.example.test",
         "addr.example.test", "map.example.test", "alias.example.test", "WWW.Example.test", "lat.example.test")
RESOLVER = ipaddress.IPv4Address("127.0.0.1")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Responder, Responder, Steering, Steering]:
    database = write_city_db(tmp_path_factory.mktemp("geo") / "dense.mmdb", _layout())
    root = Section.from_yaml_text(CONFIG, file="t.yaml")
    zones = load_zones(root.section("zones"))
    services = load_services(root.section("services"), REGIONS)
    compiled = Steering(REGIONS, services, MaxMindLocator(database), LatencyTable())
    compiled.install_tables(compile_tables(read_tree(database), compiled.table_specs()))
    reference = Steering(REGIONS, services, MaxMindLocator(database), LatencyTable())
    fast = Responder(zones, compiled)
    fast.on_answer = AnswerSampler(every=1)
    return fast, Responder(zones, reference), compiled, reference


def _query(name: str, qtype: str, msg_id: int, family: int, bits: int, source: int, do: bool) -> bytes:
    if family == 4:
        address = str(ipaddress.IPv4Address(0xC6120000 + bits % (1 << 17) if bits & 1 else bits % (1 << 32)))
        source = min(source, 32)
    else:
        address = str(ipaddress.IPv6Address((0x20010DB8 << 96) + bits % (1 << 96) if bits & 1 else bits))
    network = ipaddress.ip_network(f"{address}/{source}", strict=False)
    query = dns.message.make_query(name, qtype, use_edns=0, want_dnssec=do,
                                   options=[dns.edns.ECSOption(str(network.network_address), source)])
    query.id = msg_id
    return query.to_wire()


queries = st.tuples(st.sampled_from(NAMES), st.sampled_from(("A", "AAAA")), st.integers(0, 0xFFFF),
                    st.sampled_from((4, 6)), st.integers(0, 2**128 - 1), st.integers(1, 64), st.booleans())
region_states = st.fixed_dictionaries({name: st.sampled_from(STATES) for name in REGIONS})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=region_states, batch=st.lists(queries, min_size=1, max_size=20))
def test_compiled_replies_equal_the_reference_replies(pair: tuple[Responder, Responder, Steering, Steering],
                                                      states: dict[str, RegionState],
                                                      batch: list[tuple[str, str, int, int, int, int, bool]]) -> None:
    fast, slow, compiled, reference = pair
    compiled.update_region_states(states)
    reference.update_region_states(states)
    for args in batch:
        data = _query(*args)
        expected = slow.respond_uncached(data, RESOLVER, 5.0)
        for _ in range(3):          # learns the shape, then the compiled path, then the remembered bytes
            assert fast.respond(data, RESOLVER, 5.0) == expected, args
            data = bytes([data[0] ^ 0x5A]) + data[1:]      # another ID: the same reply but for the ID
            expected = None if expected is None else bytes([expected[0] ^ 0x5A]) + expected[1:]


def test_spilled_replies_come_from_the_table_and_equal_the_reference_replies(
        pair: tuple[Responder, Responder, Steering, Steering]) -> None:
    """Seeded: state sets where a nearest region is down or drained, queries from the fixture's IPv4
    and IPv6 records; the replies are the reference's byte for byte, a good share of them spilled,
    those were answered from the table (the reference path's cache saw none of them), and the replies
    are made from a few templates per shape (the spill answers are interned by content)."""
    fast, slow, compiled, reference = pair
    rng = random.Random(11)
    total = spilled = 0
    for _ in range(25):
        states = _spill_states(rng)
        compiled.update_region_states(states)
        reference.update_region_states(states)
        for _ in range(40):
            name = rng.choice(("www.example.test", "two.example.test", "addr.example.test", "lat.example.test"))
            family = rng.choice((4, 6))
            source = 24 if family == 4 else rng.choice((48, 56, 64))
            data = _query(name, rng.choice(("A", "AAAA")), rng.getrandbits(16), family,
                          rng.getrandbits(128) | 1, source, False)
            ecs = dns.message.from_wire(data).options[0]
            client = ipaddress.ip_address(ecs.address)    # type: ignore[attr-defined]
            expected = slow.respond_uncached(data, RESOLVER, 5.0)
            before, misses = compiled.compiled_answers, compiled.cache_misses
            assert fast.respond(data, RESOLVER, 5.0) == expected, (data, states)
            total += 1
            if _spilled(reference.decide(name, client, source, 5.0)):
                spilled += 1
                assert compiled.compiled_answers > before
                assert compiled.cache_misses == misses
    assert spilled >= total * 0.4, (spilled, total)
    templates = [len(shape.fast.templates) for shape in fast._shapes.values()   # type: ignore[union-attr]
                 if shape.fast]
    assert templates
    assert max(templates) < MAX_TEMPLATES // 4, templates


def test_the_compiled_miss_path_answers_and_counts_like_the_reference(
        pair: tuple[Responder, Responder, Steering, Steering]) -> None:
    fast, slow, compiled, reference = pair
    compiled.update_region_states({})
    reference.update_region_states({})
    base = compiled.compiled_answers
    before_fast = dict(fast.stats.by_region)
    before_slow = dict(slow.stats.by_region)
    sampled = fast.on_answer.seen      # type: ignore[union-attr]
    count = 0
    for n in range(512):            # every /24 of 198.18.0.0/15 once
        query = dns.message.make_query("www.example.test", "A", use_edns=0, options=[
            dns.edns.ECSOption(str(ipaddress.IPv4Address(0xC6120000 + (n << 8))), 24)])
        data = query.to_wire()
        assert fast.respond(data, RESOLVER, 7.0) == slow.respond(data, RESOLVER, 7.0)
        count += 1
    assert compiled.compiled_answers - base >= count * 0.9          # nearly all from the table
    moved_fast = {k: v - before_fast.get(k, 0) for k, v in fast.stats.by_region.items()}
    moved_slow = {k: v - before_slow.get(k, 0) for k, v in slow.stats.by_region.items()}
    assert {k: v for k, v in moved_fast.items() if v} == {k: v for k, v in moved_slow.items() if v}
    assert fast.on_answer.seen - sampled == count      # type: ignore[union-attr]


def test_a_state_change_is_seen_by_the_next_query(pair: tuple[Responder, Responder, Steering, Steering]) -> None:
    fast, slow, compiled, reference = pair
    data = _query("www.example.test", "A", 7, 4, (0x1234 << 1) | 1, 24, False)
    for states in ({}, {"us-east": RegionState(up=False), "eu-central": RegionState(up=False)}, {}):
        compiled.update_region_states(states)
        reference.update_region_states(states)
        for _ in range(3):
            assert fast.respond(data, RESOLVER, 9.0) == slow.respond_uncached(data, RESOLVER, 9.0)


@given(st.integers(0, 2**32 - 1))
def test_the_unchecked_ipv4_address_equals_the_checked_one(value: int) -> None:
    from gslb.dns.responder import _v4_address

    fast, checked = _v4_address(value), ipaddress.IPv4Address(value)
    assert (fast, hash(fast), str(fast), repr(fast), fast.packed) == \
        (checked, hash(checked), str(checked), repr(checked), checked.packed)
    assert ipaddress.ip_network(f"{fast}/24", strict=False) == ipaddress.ip_network(f"{checked}/24", strict=False)


def test_latency_answers_follow_the_latency_table(pair: tuple[Responder, Responder, Steering, Steering]) -> None:
    """A latency service answered from the table while no RTT is known; a push changes the next reply
    (also for a query whose reply was remembered by its bytes)."""
    fast, slow, compiled, reference = pair
    for s in (compiled, reference):
        s.update_region_states({})
    learn = dns.message.make_query("lat.example.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption("198.18.200.0", 24)])
    fast.respond(learn.to_wire(), RESOLVER, 3.0)         # the shape is learnt: the next one is compiled
    query = dns.message.make_query("lat.example.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption("198.18.9.0", 24)])
    data = query.to_wire()
    for _ in range(3):
        assert fast.respond(data, RESOLVER, 3.0) == slow.respond_uncached(data, RESOLVER, 3.0)
    before = dns.message.from_wire(fast.respond(data, RESOLVER, 3.0))
    network = ipaddress.ip_network("198.18.9.0/24")
    region = "us-east" if before.answer[0][0].address != "127.0.1.1" else "eu-central"
    for s in (compiled, reference):
        s._latency.ingest(network, region, 1.0, 3.0)
    after = fast.respond(data, RESOLVER, 4.0)
    assert after == slow.respond_uncached(data, RESOLVER, 4.0)
    assert dns.message.from_wire(after).answer[0][0].address == {"us-east": "127.0.1.1",
                                                                 "eu-central": "127.0.2.1"}[region]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), tail=st.binary(min_size=0, max_size=20), cut=st.integers(0, 20),
       family=st.sampled_from((4, 6)))
def test_crafted_ecs_tails_get_a_reply_or_a_drop_never_an_error(
        pair: tuple[Responder, Responder, Steering, Steering], name: str, tail: bytes, cut: int, family: int) -> None:
    """Queries that share a learnt shape's bytes but end in other bytes (another length, bits past the
    source prefix, garbage): the compiled miss path takes what the parser would accept, the rest goes to
    the parser; the same reply as the reference either way."""
    fast, slow, compiled, reference = pair
    compiled.update_region_states({})
    reference.update_region_states({})
    base = _query(name, "A", 1, family, 12345, 24 if family == 4 else 56, False)
    fast.respond(base, RESOLVER, 2.0)            # the shape is learnt
    data = base[:len(base) - cut] + tail
    errors = fast.stats.internal_errors
    assert fast.respond(data, RESOLVER, 2.0) == slow.respond_uncached(data, RESOLVER, 2.0)
    assert fast.stats.internal_errors == errors
