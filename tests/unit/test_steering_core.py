"""gslb.steering.core.Steering wired with a FakeLocator and a LatencyTable (no sockets)."""

from __future__ import annotations

import collections
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import Section
from gslb.geoip import FakeLocator, Location, Place, exactly
from gslb.latency_table import LatencyTable
from gslb.steering import Steering, SteeringError
from gslb.steering.base import Region, RegionState, ServiceSteering
from gslb.steering.config import load_services

ip = ipaddress.ip_address
net = ipaddress.ip_network

REGIONS = {
    "us-east": Region("us-east", 39.04, -77.49, ("127.0.1.1",), ("::1:1",)),
    "eu-central": Region("eu-central", 50.11, 8.68, ("127.0.2.1",), ("::2:1",), capacity=3.0),
    "ap-northeast": Region("ap-northeast", 37.57, 126.98, ("127.0.3.1",), ("::3:1",)),
}
DOWN = RegionState(up=False)
DRAINED = RegionState(drained=True)
DEGRADED = RegionState(degraded=True)

PLACES = {
    "198.51.100.0/24": Place(40.71, -74.01, "US", "NA", "New York"),
    "198.51.101.0/24": Place(40.71, -74.01, "US", "NA", "New York"),     # sibling, same answer
    "198.51.102.0/23": Place(48.85, 2.35, "FR", "EU", "Paris"),          # the /23 next door
    "203.0.113.0/24": Place(37.57, 126.98, "KR", "AS", "Seoul"),
    "192.0.2.0/24": Place(50.11, 8.68, "DE", "EU", "Frankfurt"),
    "192.0.3.0/24": Place(52.52, 13.40, "DE", "EU", "Berlin"),
    "2001:db8:1::/48": Place(35.68, 139.69, "JP", "AS", "Tokyo"),
    "100.64.0.0/16": Place(None, None, "BR", "SA", ""),                   # country only
}

NEW_YORK, SEOUL, FRANKFURT, TOKYO6 = ip("198.51.100.7"), ip("203.0.113.9"), ip("192.0.2.1"), ip("2001:db8:1::5")

SERVICES = """
services:
  geo.test: {policy: geo, ttl: 30, degraded_ttl: 5}
  two.test: {policy: geo, count: 2}
  lat.test: {policy: latency, latency_max_age: 100}
  fo.test: {policy: failover, regions: [eu-central, us-east]}
  w.test: {policy: weighted, weights: {us-east: 3, eu-central: 1, ap-northeast: 0}}
  one.test: {regions: [us-east]}
  order.test: {policy: geo, default_order: [ap-northeast, eu-central, us-east]}
  addr.test: {all_down: {action: address, addresses: [192.0.2.99, "2001:db8::99"]}}
  cname.test: {all_down: {action: cname, cname: sorry.example.net}}
  nodata.test: {all_down: {action: nodata, negative_ttl: 7}}
  map.test:
    policy: geo_map
    map:
      cidr: {"198.51.100.0/25": [ap-northeast], "10.0.0.0/8": [eu-central]}
      country: {KR: [ap-northeast, us-east]}
      continent: {EU: [eu-central, us-east]}
      default: [us-east, eu-central]
"""


def make(rng: random.Random | None = None, locator=None, latency: LatencyTable | None = None) -> Steering:
    services = load_services(Section.from_yaml_text(SERVICES, file="t.yaml").section("services"), REGIONS)
    return Steering(REGIONS, services, locator or FakeLocator(PLACES),
                    LatencyTable() if latency is None else latency,
                    rng=rng or random.Random(1))


def test_satisfies_the_contract() -> None:
    s: ServiceSteering = make()
    assert s.is_service("geo.test")
    assert not s.is_service("nope.test")
    with pytest.raises(SteeringError):
        s.answer("nope.test", NEW_YORK, None, 0.0)
    assert repr(s).startswith("<Steering 11 services, 3 regions [0 down, 0 drained]")


def test_unknown_region_in_service_refused() -> None:
    services = load_services(Section({"a.test": {}}, file="f"), REGIONS)
    with pytest.raises(SteeringError, match="unknown region"):
        Steering({"us-east": REGIONS["us-east"]}, services, FakeLocator(), LatencyTable())


def test_geo_nearest_v4_and_v6() -> None:
    s = make()
    a = s.answer("geo.test", SEOUL, 24, 0.0)
    assert a.decision.regions == ("ap-northeast",)
    assert (a.v4, a.v6, a.ttl) == (("127.0.3.1",), ("::3:1",), 30)
    assert a.cache_for == 30.0
    assert s.answer("geo.test", FRANKFURT, None, 0.0).decision.regions == ("eu-central",)
    assert s.answer("geo.test", TOKYO6, 56, 0.0).decision.regions == ("ap-northeast",)
    assert s.answer("geo.test", ip("::ffff:198.51.100.7"), None, 0.0).decision.regions == ("us-east",)


def test_count_returns_the_n_best() -> None:
    a = make().answer("two.test", FRANKFURT, 24, 0.0)
    assert a.decision.regions == ("eu-central", "us-east")
    assert a.v4 == ("127.0.2.1", "127.0.1.1")


def test_down_and_drained_are_skipped_degraded_shortens_ttl() -> None:
    s = make()
    s.update_region_states({"ap-northeast": DEGRADED})
    a = s.answer("geo.test", SEOUL, 24, 0.0)
    assert a.decision.regions == ("ap-northeast",)
    assert a.ttl == 5
    s.update_region_states({"eu-central": DRAINED})
    a = s.answer("geo.test", FRANKFURT, 24, 0.0)
    assert "eu-central" not in a.decision.regions
    assert a.ttl == 5                                   # a drained region was skipped
    assert not a.decision.all_down
    s.update_region_states({"us-east": DOWN})
    assert s.answer("two.test", NEW_YORK, 24, 0.0).decision.regions in (
        ("eu-central", "ap-northeast"), ("ap-northeast", "eu-central"))


def test_no_location_uses_default_order_and_source_scope() -> None:
    s = make()
    a = s.answer("order.test", ip("8.8.8.8"), 24, 0.0)
    assert a.decision.regions == ("ap-northeast",)
    assert a.scope_prefix == 24
    assert s.answer("order.test", ip("8.8.8.8"), 20, 0.0).scope_prefix == 20
    assert s.answer("order.test", None, None, 0.0).decision.regions == ("ap-northeast",)
    s.update_region_states({"ap-northeast": DOWN})
    assert s.answer("order.test", ip("8.8.8.8"), 24, 0.0).decision.regions == ("eu-central",)
    # a country-only record has no coordinates: default order too
    assert s.answer("order.test", ip("100.64.1.1"), 24, 0.0).decision.regions == ("eu-central",)


def test_failover_first_healthy_scope_zero() -> None:
    s = make()
    a = s.answer("fo.test", SEOUL, 24, 0.0)
    assert a.decision.regions == ("eu-central",)
    assert a.scope_prefix == 0
    s.update_region_states({"eu-central": DOWN})
    assert s.answer("fo.test", SEOUL, 24, 0.0).decision.regions == ("us-east",)


def test_single_region_service_scope_zero() -> None:
    assert make().answer("one.test", SEOUL, 24, 0.0).scope_prefix == 0


def test_weighted_random_per_query() -> None:
    s = make(rng=random.Random(42))
    answers = [s.answer("w.test", SEOUL, 24, 0.0) for _ in range(4000)]
    assert all(a.cache_for == 0 and a.scope_prefix == 0 for a in answers)
    firsts = collections.Counter(a.decision.regions[0] for a in answers)
    assert firsts["ap-northeast"] == 0
    assert firsts["us-east"] / 4000 == pytest.approx(0.75, abs=0.03)
    s.update_region_states({"us-east": DOWN})
    assert {s.answer("w.test", SEOUL, 24, 0.0).decision.regions[0] for _ in range(50)} == {"eu-central"}
    s.update_region_states({r: DOWN for r in REGIONS})
    a = s.answer("w.test", SEOUL, 24, 0.0)
    assert a.decision.all_down
    assert a.decision.regions


@pytest.mark.parametrize("service", ["geo.test", "two.test", "lat.test", "fo.test", "w.test", "map.test"])
def test_all_down_fail_open_answers_as_if_all_were_up(service: str) -> None:
    s = make()
    healthy = s.answer(service, SEOUL, 24, 0.0)
    s.update_region_states({r: DOWN for r in REGIONS})
    a = s.answer(service, SEOUL, 24, 0.0)
    assert a.decision.all_down
    assert len(a.decision.regions) == len(healthy.decision.regions)
    if service != "w.test":
        assert a.decision.regions == healthy.decision.regions
    assert a.v4


def test_all_down_rules() -> None:
    s = make()
    s.update_region_states({r: DOWN for r in REGIONS})
    a = s.answer("addr.test", SEOUL, 24, 0.0)
    assert (a.v4, a.v6, a.scope_prefix, a.decision.all_down) == (("192.0.2.99",), ("2001:db8::99",), 0, True)
    c = s.answer("cname.test", SEOUL, 24, 0.0)
    assert c.cname == "sorry.example.net."
    assert c.scope_prefix == 0
    n = s.answer("nodata.test", SEOUL, 24, 0.0)
    assert (n.negative_ttl, n.v4, n.v6, n.decision.all_down) == (7, (), (), True)


def test_generation_bumps_only_on_change() -> None:
    s = make()
    g = s.generation
    s.update_region_states({})
    assert s.generation == g
    s.update_region_states({"us-east": DOWN})
    assert s.generation == g + 1
    s.update_region_states({"us-east": DOWN})
    assert s.generation == g + 1
    s.update_region_states({"us-east": RegionState()})
    assert s.generation == g + 2


def test_latency_policy() -> None:
    table = LatencyTable(max_age=600)
    s = make(latency=table)
    assert s.answer("lat.test", NEW_YORK, 24, 0.0).decision.regions == ("us-east",)   # geo fallback
    g, d = s.generation, s.data_generation
    table.ingest(net("198.51.100.0/24"), "ap-northeast", 12.0, now=0.0)
    table.ingest(net("198.51.100.0/24"), "us-east", 40.0, now=0.0)
    assert s.generation == g                # latency data does not move every answer ...
    assert s.data_generation > d            # ... only those that carry data_generation
    a = s.answer("lat.test", NEW_YORK, 24, 10.0)
    assert a.decision.regions == ("ap-northeast",)
    assert a.data_generation == s.data_generation
    assert s.answer("geo.test", NEW_YORK, 24, 10.0).data_generation is None
    assert a.cache_for == 30.0
    assert s.answer("lat.test", NEW_YORK, 24, 80.0).cache_for == pytest.approx(20.0)   # stale at 100
    explained = s.explain("lat.test", NEW_YORK, 24, 10.0)
    assert any("rtt 12.0 ms" in line for line in explained.lines)
    assert "lowest measured RTT" in explained.location
    # latency_max_age 100: at t=150 the data is stale for this service -> geo again (cache honours it)
    assert s.answer("lat.test", NEW_YORK, 24, 150.0).decision.regions == ("us-east",)
    # the neighbour /24 has no data
    assert s.answer("lat.test", ip("198.51.101.1"), 24, 10.0).decision.regions == ("us-east",)


def test_latency_scope_never_below_the_measured_network() -> None:
    table = LatencyTable()
    table.ingest(net("192.0.2.0/24"), "ap-northeast", 1.0, now=0.0)
    s = make(latency=table)
    a = s.answer("lat.test", FRANKFURT, 24, 0.0)
    assert a.decision.regions == ("ap-northeast",)
    assert a.scope_prefix == 24


def test_geo_map() -> None:
    s = make()
    assert s.answer("map.test", ip("198.51.100.1"), 32, 0.0).decision.regions == ("ap-northeast",)  # cidr
    assert s.answer("map.test", ip("198.51.100.200"), 32, 0.0).decision.regions == ("us-east",)    # default
    assert s.answer("map.test", SEOUL, 24, 0.0).decision.regions == ("ap-northeast",)              # country
    assert s.answer("map.test", FRANKFURT, 24, 0.0).decision.regions == ("eu-central",)            # continent
    assert s.answer("map.test", ip("10.9.9.9"), 24, 0.0).decision.regions == ("eu-central",)       # unlocated
    s.update_region_states({"ap-northeast": DOWN})
    assert s.answer("map.test", SEOUL, 24, 0.0).decision.regions == ("us-east",)


def test_geo_map_scope_respects_cidr_entries_inside_a_record() -> None:
    s = make()
    # 198.51.100.0/24 is one GeoIP record, but the map splits it at /25
    assert s.answer("map.test", ip("198.51.100.1"), 24, 0.0).scope_prefix == 25
    assert s.answer("map.test", ip("198.51.100.200"), 24, 0.0).scope_prefix == 25


def test_ecs_scope_widens_over_siblings_with_the_same_answer() -> None:
    s = make()
    # 198.51.100.0/24 and 198.51.101.0/24 are both New York: one /23; the /23 next door is Paris
    a = s.answer("geo.test", NEW_YORK, 24, 0.0)
    assert a.scope_prefix == 23
    # Frankfurt /24 and Berlin /24 both go to eu-central: widened to /23
    assert s.answer("geo.test", FRANKFURT, 24, 0.0).scope_prefix == 23
    assert s.answer("geo.test", SEOUL, 24, 0.0).scope_prefix == 24       # sibling unknown
    assert s.answer("geo.test", TOKYO6, 48, 0.0).scope_prefix == 48


class GridLocator:
    """Every address is located in its own /24 (or /48), all at the same place."""

    def __init__(self, place: Place) -> None:
        self.place = place

    def locate(self, address):
        prefix = 24 if address.version == 4 else 48
        network = ipaddress.ip_network((address, prefix), strict=False)
        return Location(self.place.lat, self.place.lon, "US", "NA", "", network)

    def locate_exact(self, address, prefix_len):
        return exactly(self.locate(address), prefix_len)


def test_ecs_widening_stops_at_a_finer_sibling() -> None:
    s = make(locator=GridLocator(Place(40.7, -74.0)))
    # the sibling /24 is one record: widen to /23; the sibling /23 is two records: stop
    assert s.answer("geo.test", ip("10.1.2.3"), 24, 0.0).scope_prefix == 23


def test_ecs_widening_is_bounded() -> None:
    # records 10.0.0.0/24, its sibling /24, the sibling /23, /22, ... /9: all the same place
    base = int(ip("10.0.0.0"))
    places = {"10.0.0.0/24": Place(40.7, -74.0)}
    for p in range(24, 8, -1):
        places[str(ipaddress.ip_network((base ^ (1 << (32 - p)), p)))] = Place(40.7, -74.0)
    s = make(locator=FakeLocator(places))
    assert s.answer("geo.test", ip("10.0.0.1"), 24, 0.0).scope_prefix == 24 - 8


def test_capacity_spill_proportions_and_stability() -> None:
    s = make(locator=GridLocator(Place(40.7, -74.0)))    # everyone's nearest is us-east
    s.update_region_states({"us-east": DOWN})
    clients = [ip(f"10.{i // 256}.{i % 256}.1") for i in range(4000)]
    chosen = [s.answer("geo.test", c, 24, 0.0).decision.regions[0] for c in clients]
    counts = collections.Counter(chosen)
    # eu-central has capacity 3, ap-northeast 1
    assert counts["eu-central"] / len(clients) == pytest.approx(0.75, abs=0.02)
    again = make(locator=GridLocator(Place(40.7, -74.0)))
    again.update_region_states({"us-east": DOWN})
    assert [again.answer("geo.test", c, 24, 0.0).decision.regions[0] for c in clients[:1000]] == chosen[:1000]
    # the same network always gets the same choice, whatever host asks
    assert {s.answer("geo.test", ip(f"10.0.7.{h}"), 24, 0.0).decision.regions[0] for h in range(50)} \
        == {chosen[7]}
    lines = s.explain("geo.test", clients[0], 24, 0.0).lines
    assert any("spill" in line for line in lines)


def test_cache_hits_and_invalidation() -> None:
    locator = FakeLocator(PLACES)
    s = make(locator=locator)
    first = s.answer("geo.test", ip("198.51.100.7"), 24, 0.0)
    hits = s.cache_hits
    assert s.answer("geo.test", ip("198.51.100.99"), 24, 0.0) is first      # same record network
    assert s.cache_hits == hits + 1
    s.update_region_states({"us-east": DOWN})
    assert s.answer("geo.test", ip("198.51.100.7"), 24, 0.0).decision.regions != ("us-east",)


def test_explain_matches_answer_and_says_how() -> None:
    s = make()
    d = s.explain("geo.test", SEOUL, 24, 0.0)
    assert d == s.answer("geo.test", SEOUL, 24, 0.0).decision.__class__(
        **{**{f: getattr(d, f) for f in d.__dataclass_fields__}})
    assert d.regions == s.answer("geo.test", SEOUL, 24, 0.0).decision.regions
    assert d.location.startswith("ecs 203.0.113.9/24 -> KR Seoul")
    assert s.explain("geo.test", SEOUL, None, 0.0).location.startswith("resolver 203.0.113.9 -> ")
    assert s.explain("geo.test", None, None, 0.0).location.startswith("no client address")
    assert any("km" in line for line in d.lines)
    with pytest.raises(SteeringError):
        s.explain("nope.test", SEOUL, None, 0.0)
    assert s.explain("w.test", SEOUL, None, 0.0).policy == "weighted"


ADDRESSES = st.one_of(
    st.sampled_from([NEW_YORK, SEOUL, FRANKFURT, TOKYO6, ip("198.51.100.200"), ip("198.51.102.1"),
                     ip("192.0.3.4"), ip("100.64.3.3"), ip("10.1.1.1"), ip("8.8.8.8")]),
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
STATES = st.sampled_from([RegionState(), DOWN, DRAINED, DEGRADED])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["geo.test", "two.test", "lat.test", "fo.test", "map.test",
                                           "order.test", "addr.test", "one.test"]),
                          ADDRESSES, st.sampled_from([None, 16, 24, 32])), min_size=1, max_size=20),
       st.dictionaries(st.sampled_from(sorted(REGIONS)), STATES))
def test_cached_answers_equal_the_reference_path(queries, states) -> None:
    table = LatencyTable()
    table.ingest(net("198.51.100.0/24"), "eu-central", 3.0, now=0.0)
    s = make(latency=table)
    s.update_region_states(states)
    for _ in range(2):          # second round is served from the cache
        for name, address, source in queries:
            assert s.answer(name, address, source, 1.0) == s.decide(name, address, source, 1.0)


@settings(max_examples=100, deadline=None)
@given(ADDRESSES, st.dictionaries(st.sampled_from(sorted(REGIONS)), STATES),
       st.sampled_from(["geo.test", "map.test", "lat.test"]))
def test_scope_never_covers_a_different_answer(address, states, name) -> None:
    table = LatencyTable()
    table.ingest(net("198.51.100.0/24"), "eu-central", 3.0, now=0.0)
    s = make(latency=table)
    s.update_region_states(states)
    a = s.answer(name, address, 24, 1.0)
    if s._locator.locate(address) is None:      # unlocated: scope is the SOURCE prefix
        return
    around = ipaddress.ip_network((address, a.scope_prefix), strict=False)
    for probe in (around.network_address, around.broadcast_address,
                  ipaddress.ip_address(int(around.network_address) + around.num_addresses // 2)):
        if s._locator.locate(probe) is None:
            continue
        assert s.decide(name, probe, 24, 1.0).decision.regions == a.decision.regions


def test_latency_without_the_best_region_takes_the_next_lowest_rtt() -> None:
    table = LatencyTable()
    for region, rtt in (("ap-northeast", 5.0), ("us-east", 50.0), ("eu-central", 90.0)):
        table.ingest(net("198.51.100.0/24"), region, rtt, now=0.0)
    s = make(latency=table)
    s.update_region_states({"ap-northeast": DOWN})
    assert s.answer("lat.test", NEW_YORK, 24, 1.0).decision.regions == ("us-east",)


def test_latency_data_does_not_flush_other_services_entries() -> None:
    table = LatencyTable()
    s = make(latency=table)
    geo_first = s.answer("geo.test", NEW_YORK, 24, 0.0)
    lat_first = s.answer("lat.test", NEW_YORK, 24, 0.0)
    table.ingest(net("198.51.100.0/24"), "ap-northeast", 1.0, now=0.0)
    assert s.answer("geo.test", NEW_YORK, 24, 0.0) is geo_first          # still cached
    lat_now = s.answer("lat.test", NEW_YORK, 24, 0.0)
    assert lat_now is not lat_first
    assert lat_now.decision.regions == ("ap-northeast",)


@pytest.mark.parametrize(("rule", "check"), [
    ("{action: address, addresses: [192.0.2.99]}", lambda a: a.v4 == ("192.0.2.99",)),
    ("{action: cname, cname: sorry.example.net}", lambda a: a.cname == "sorry.example.net."),
    ("{action: nodata, negative_ttl: 4}", lambda a: a.negative_ttl == 4 and a.ttl == 4),
])
def test_weighted_all_down_rules(rule, check) -> None:
    text = f"services: {{w.test: {{policy: weighted, all_down: {rule}}}}}"
    services = load_services(Section.from_yaml_text(text, file="t").section("services"), REGIONS)
    s = Steering(REGIONS, services, FakeLocator(), LatencyTable(), rng=random.Random(3))
    s.update_region_states({r: DOWN for r in REGIONS})
    a = s.answer("w.test", SEOUL, 24, 0.0)
    assert a.decision.all_down
    assert a.decision.regions == ()
    assert a.scope_prefix == 0
    assert check(a)
    assert s.decide("w.test", SEOUL, 24, 0.0).decision.all_down


def test_generation_ignores_latency_without_latency_services() -> None:
    services = load_services(Section({"g.test": {}}, file="f"), REGIONS)
    table = LatencyTable()
    s = Steering(REGIONS, services, FakeLocator(PLACES), table)
    g = s.generation
    table.ingest(net("198.51.100.0/24"), "us-east", 1.0, now=0.0)
    assert s.generation == g
    assert s.services["g.test"].policy == "geo"
    assert s.region_states()["us-east"] == RegionState()


def test_decision_cache_is_bounded() -> None:
    services = load_services(Section({"g.test": {}}, file="f"), REGIONS)
    s = Steering(REGIONS, services, FakeLocator(PLACES), LatencyTable(), max_cache=2)
    for address in (NEW_YORK, SEOUL, FRANKFURT, TOKYO6, NEW_YORK):
        s.answer("g.test", address, 24, 0.0)
    assert len(s._cache) <= 2
    assert s.cache_misses == 5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["geo.test", "two.test", "map.test", "order.test", "lat.test"]),
                          ADDRESSES), min_size=1, max_size=12),
       st.lists(st.dictionaries(st.sampled_from(sorted(REGIONS)), STATES), min_size=2, max_size=4))
def test_memos_follow_region_state_changes(queries, state_sequence) -> None:
    s = make()
    for states in state_sequence:       # choices and widening steps memoised under old states must go
        s.update_region_states(states)
        for name, address in queries:
            assert s.answer(name, address, 24, 1.0) == s.decide(name, address, 24, 1.0)


def test_cached_answers_equal_the_reference_path_on_the_bundled_database() -> None:
    from gslb.geoip import DEFAULT_DATABASE, MaxMindLocator

    if not DEFAULT_DATABASE.exists():
        pytest.skip("no bundled GeoIP database")
    rng = random.Random(7)
    with MaxMindLocator(DEFAULT_DATABASE) as locator:
        s = make(locator=locator)
        clients = [ipaddress.IPv4Address(rng.randrange(1 << 24) << 8) for _ in range(150)]
        for states in ({}, {"us-east": DOWN}):
            s.update_region_states(states)
            for _ in range(2):          # cold memos, then warm ones
                for client in clients:
                    assert s.answer("geo.test", client, 24, 1.0) == s.decide("geo.test", client, 24, 1.0)
        assert s._siblings                  # the widening memo was used
