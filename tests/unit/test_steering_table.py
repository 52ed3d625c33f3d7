"""The compiled decision table (gslb/steering/table.py) against the reference path.

A fixture database with a dense, seeded layout of record networks (sizes /16 to /26 and /40 to /64,
gaps, records without a place, country-only places, identical neighbours) is read by the tree walk
and compiled; `Steering.answer` (compiled path) must then equal `Steering.decide` (the reference:
GeoIP lookup, ranking, ECS widening record by record) for random clients and random region states:
same addresses, TTL, regions, all-down, and exactly the same ECS scope. The region states include
down and drained nearest regions, so clients spill by capacity (a hash of their network, per
sibling when widening): those are answered from the table too, and the tests check that they were.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.common.configload import Section
from gslb.geoip import ALIAS, NO_PLACE, GeoIPError, MaxMindLocator, Place, read_tree
from gslb.latency_table import LatencyTable
from gslb.steering import Steering
from gslb.steering.base import Region, RegionState
from gslb.steering.config import load_services
from gslb.steering.table import SLOW, UNLOCATED, compile_tables, table_spec
from tests.geo_fixtures import write_city_db

REGIONS = {
    "us-east": Region("us-east", 39.04, -77.49, ("127.0.1.1",), ("::1:1",)),
    "eu-central": Region("eu-central", 50.11, 8.68, ("127.0.2.1",), ("::2:1",), capacity=3.0),
    "ap-northeast": Region("ap-northeast", 37.57, 126.98, ("127.0.3.1",), ("::3:1",)),
    "sa-east": Region("sa-east", -23.55, -46.63, ("127.0.4.1",), ("::4:1",), capacity=0.0),
}
STATES = (RegionState(), RegionState(up=False), RegionState(drained=True), RegionState(degraded=True))

CITIES = (
    Place(40.71, -74.01, "US", "NA", "New York"),
    Place(41.88, -87.63, "US", "NA", "Chicago"),
    Place(48.85, 2.35, "FR", "EU", "Paris"),
    Place(52.52, 13.40, "DE", "EU", "Berlin"),
    Place(37.57, 126.98, "KR", "AS", "Seoul"),
    Place(35.68, 139.69, "JP", "AS", "Tokyo"),
    Place(-33.87, 151.21, "AU", "OC", "Sydney"),
    Place(-23.55, -46.63, "BR", "SA", "Sao Paulo"),
    Place(None, None, "BR", "SA", ""),           # country only: default order, never spills
    Place(None, None, "", "", ""),               # an empty record: not located
)

V4_BLOCK = ipaddress.ip_network("198.18.0.0/15")
V6_BLOCK = ipaddress.ip_network("2001:db8::/32")

SERVICES = """
services:
  geo.test: {policy: geo, regions: [us-east, eu-central, ap-northeast], ttl: 30, degraded_ttl: 5}
  geo2.test: {policy: geo, regions: [us-east, eu-central, ap-northeast]}
  four.test: {policy: geo, count: 2, default_order: [sa-east, ap-northeast]}
  addr.test: {policy: geo, all_down: {action: address, addresses: [192.0.2.99, "2001:db8::99"]}}
  nodata.test: {policy: geo, regions: [us-east, eu-central], all_down: {action: nodata, negative_ttl: 7}}
  lat.test: {policy: latency, regions: [us-east, eu-central, ap-northeast], latency_max_age: 100}
  lat4.test: {policy: latency, count: 2, default_order: [sa-east, ap-northeast]}
  map.test:
    policy: geo_map
    regions: [us-east, eu-central, ap-northeast]
    map:
      country: {KR: [ap-northeast, us-east], BR: [us-east, eu-central]}
      continent: {EU: [eu-central, us-east], AS: [ap-northeast, eu-central]}
      default: [us-east, eu-central, ap-northeast]
  cidrmap.test:
    policy: geo_map
    regions: [us-east, eu-central, ap-northeast]
    count: 2
    map:
      cidr: {"198.18.0.0/20": [ap-northeast, eu-central], "198.18.64.96/27": [eu-central],
             "2001:db8:8000::/33": [eu-central, us-east]}
      continent: {EU: [eu-central, us-east]}
      default: [us-east, ap-northeast]
"""


def _layout(seed: int = 10) -> dict[str, Place]:
    """A dense random partition of V4_BLOCK and V6_BLOCK into records (and gaps)."""
    rng = random.Random(seed)
    places: dict[str, Place] = {}

    def split(net: ipaddress.IPv4Network | ipaddress.IPv6Network, shortest: int, longest: int) -> None:
        if net.prefixlen < shortest or (net.prefixlen < longest and rng.random() < 0.6):
            for half in net.subnets(1):
                split(half, shortest, longest)
            return
        roll = rng.random()
        if roll < 0.08:
            return                                      # a gap
        places[str(net)] = rng.choice(CITIES[:3]) if roll < 0.5 else rng.choice(CITIES)

    split(V4_BLOCK, 16, 26)
    split(ipaddress.ip_network("2001:db8::/33"), 40, 64)
    places["2001:db8:8000::/33"] = CITIES[3]
    places["10.0.0.0/8"] = CITIES[6]
    return places


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_db(tmp_path_factory.mktemp("geo") / "dense.mmdb", _layout())


@pytest.fixture(scope="module")
def steering(database: Path) -> Steering:
    services = load_services(Section.from_yaml_text(SERVICES, file="t.yaml").section("services"), REGIONS)
    s = Steering(REGIONS, services, MaxMindLocator(database), LatencyTable())
    tables = compile_tables(read_tree(database), s.table_specs())
    assert s.install_tables(tables) == len(services)
    return s


def _fields(a: object) -> tuple[object, ...]:
    return (a.v4, a.v6, a.ttl, a.scope_prefix, a.decision.regions, a.decision.all_down,  # type: ignore[attr-defined]
            a.cname, a.negative_ttl, a.cache_for, a.data_generation)  # type: ignore[attr-defined]


def _client(kind: int, bits: int, source: int | None) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                               int | None]:
    if kind == 0:
        value = int(V4_BLOCK.network_address) + bits % V4_BLOCK.num_addresses
    elif kind == 1:
        value = bits % (1 << 32)
    elif kind == 2:
        value = int(V6_BLOCK.network_address) + bits % V6_BLOCK.num_addresses
    elif kind == 3:
        value = (0xFFFF << 32) | (int(V4_BLOCK.network_address) + bits % V4_BLOCK.num_addresses)
    else:
        value = bits % (1 << 128)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = \
        ipaddress.IPv4Address(value) if kind in (0, 1) else ipaddress.IPv6Address(value)
    if source is not None:
        source = min(source, address.max_prefixlen)
        address = ipaddress.ip_network(f"{address}/{source}", strict=False).network_address
    return address, source


clients = st.tuples(st.integers(0, 4), st.integers(0, 2**128 - 1),
                    st.one_of(st.none(), st.integers(1, 32), st.integers(33, 64)))
region_states = st.fixed_dictionaries({name: st.sampled_from(STATES) for name in REGIONS})


def _spilled(answer: object) -> bool:
    """The reference path's reasoning says the client's nearest region spilled its clients."""
    return any("spill over" in line for line in answer.decision.lines)  # type: ignore[attr-defined]


_V4_SEEN_FROM_V6 = ipaddress.ip_network("::/96")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=region_states, batch=st.lists(clients, min_size=1, max_size=25))
def test_compiled_answers_equal_the_reference_path(steering: Steering, states: dict[str, RegionState],
                                                   batch: list[tuple[int, int, int | None]]) -> None:
    """Half the sampled region states are down or drained: many clients' nearest region is not
    eligible and they spill by capacity; those are answered from the table too (the counter moves)."""
    steering.update_region_states(states)
    for kind, bits, source in batch:
        client, prefix = _client(kind, bits, source)
        for name in steering.services:
            before = steering.compiled_answers
            fast = steering.answer(name, client, prefix, 1.0)
            compiled = steering.compiled_answers - before
            reference = steering.decide(name, client, prefix, 1.0)
            assert _fields(fast) == _fields(reference), (name, client, prefix, states)
            if _spilled(reference) and not (client.version == 6 and client in _V4_SEEN_FROM_V6):
                assert compiled == 1, (name, client, prefix, states)


def _spill_states(rng: random.Random) -> dict[str, RegionState]:
    """Random states where at least one of the three main regions is not eligible and one is."""
    main = ["us-east", "eu-central", "ap-northeast"]
    rng.shuffle(main)
    states = {name: rng.choice(STATES) for name in REGIONS}
    states[main[0]] = rng.choice(STATES[1:3])
    states[main[1]] = rng.choice(STATES[1:3]) if rng.random() < 0.5 else rng.choice(STATES)
    states[main[2]] = rng.choice((STATES[0], STATES[3]))
    return states


def test_spilled_answers_come_from_the_table_and_equal_the_reference_path(steering: Steering) -> None:
    """Seeded: 40 state sets that make spills likely, 50 clients each (IPv4 and IPv6, records of the
    fixture and outside it, several SOURCE prefixes); every answer equals the reference's, a good
    share of them spilled, and none of those took the path below the table."""
    rng = random.Random(42)
    total = spilled = compiled = 0
    for _ in range(40):
        states = _spill_states(rng)
        steering.update_region_states(states)
        for _ in range(50):
            kind = rng.choice((0, 0, 0, 0, 2, 2, 2, 3, 1))
            source = rng.choice((None, 16, 20, 24, 26, 32, 40, 48, 56, 64))
            client, prefix = _client(kind, rng.getrandbits(128), source)
            for name in ("geo.test", "geo2.test", "four.test", "addr.test", "nodata.test", "lat.test", "lat4.test"):
                before, misses = steering.compiled_answers, steering.cache_misses
                fast = steering.answer(name, client, prefix, 1.0)
                reference = steering.decide(name, client, prefix, 1.0)
                assert _fields(fast) == _fields(reference), (name, client, prefix, states)
                total += 1
                if _spilled(reference):
                    spilled += 1
                    compiled += steering.compiled_answers - before
                    assert steering.cache_misses == misses         # not the reference path's cache
    assert spilled >= total * 0.25, (spilled, total)
    assert compiled == spilled
    steering.update_region_states({})


def test_with_the_nearest_region_drained_misses_take_the_compiled_path(steering: Steering) -> None:
    """eu-central drained: the clients of the fixture's Paris and Berlin records spill; each distinct
    network is answered from the table (compiled_answers moves, the reference's cache does not)."""
    paris = [ipaddress.IPv4Network((start, prefix)) for start, prefix, place in _records(4)
             if place in (CITIES[2], CITIES[3])]
    assert len(paris) > 20
    steering.update_region_states({"eu-central": RegionState(drained=True)})
    before, misses = steering.compiled_answers, steering.cache_misses
    answers = [steering.answer("geo.test", net.network_address, 24, 2.0) for net in paris]
    assert steering.compiled_answers - before == len(paris)
    assert steering.cache_misses == misses
    assert all(a.decision.regions != ("eu-central",) and a.ttl == 5 for a in answers)    # drained: degraded_ttl
    assert {a.decision.regions for a in answers} == {("us-east",), ("ap-northeast",)}    # spread by the hash
    for net, answer in zip(paris, answers, strict=True):
        reference = steering.decide("geo.test", net.network_address, 24, 2.0)
        assert _spilled(reference)
        assert _fields(answer) == _fields(reference)
    again = steering.answer("geo.test", paris[0].network_address, 24, 2.0)     # the memo per key network
    assert again is answers[0]
    distinct = {id(a) for a in answers}
    assert len(distinct) <= 2 * 27          # interned by content: (regions, scope) pairs, not per network
    steering.update_region_states({})


def _records(version: int) -> list[tuple[int, int, Place | None]]:
    layout = _layout()
    out = []
    for text, place in layout.items():
        net = ipaddress.ip_network(text)
        if net.version == version:
            out.append((int(net.network_address), net.prefixlen, place))
    return out


@given(st.sampled_from((4, 6)), st.integers(0, 2**128 - 1), st.integers(0, 128))
def test_the_spill_hash_input_is_the_network_text(version: int, value: int, prefix: int) -> None:
    from gslb.geoip import network_from_int
    from gslb.steering.spill import network_text

    bits = 32 if version == 4 else 128
    value, prefix = value % (1 << bits), min(prefix, bits)
    expected = (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)((value, prefix), strict=False)
    assert network_text(version, value, prefix) == str(expected) == str(network_from_int(version, value, prefix))


def test_every_record_and_its_neighbours_agree_under_a_few_state_sets(steering: Steering, database: Path) -> None:
    """At record edges: the first, middle and last address of 300 of the fixture's records per family."""
    tree = read_tree(database)
    rng = random.Random(3)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    v4 = list(zip(tree.v4_start.tolist(), tree.v4_prefix.tolist(), strict=True))
    for start, prefix in rng.sample(v4, min(300, len(v4))):
        size = 1 << (32 - prefix)
        addresses += [ipaddress.IPv4Address(v) for v in {start, start + size // 2, start + size - 1}]
    starts6 = [(h << 64) | lo for h, lo in zip(tree.v6_start.tolist(), tree.v6_start_low.tolist(), strict=True)]
    v6 = list(zip(starts6, tree.v6_prefix.tolist(), strict=True))
    for start, prefix in rng.sample(v6, min(300, len(v6))):
        addresses += [ipaddress.IPv6Address(start), ipaddress.IPv6Address(start + (1 << (128 - prefix)) - 1)]
    before = steering.compiled_answers
    for states in ({}, {"us-east": STATES[1]}, {"eu-central": STATES[2], "ap-northeast": STATES[3]},
                   dict.fromkeys(REGIONS, STATES[1])):
        steering.update_region_states(states)
        for address in addresses:
            for source in (None, 24 if address.version == 4 else 48):
                client = address if source is None else \
                    ipaddress.ip_network(f"{address}/{source}", strict=False).network_address
                for name in steering.services:
                    assert _fields(steering.answer(name, client, source, 1.0)) == \
                        _fields(steering.decide(name, client, source, 1.0)), (name, client, source, states)
    # most of these came from the tables (CIDR-split records and ::/96 take the reference path)
    assert steering.compiled_answers - before > len(addresses) * 4 * 2 * len(steering.services) // 2


def test_the_tree_walk_lists_every_record_the_reader_iterates(database: Path) -> None:
    import maxminddb

    from gslb.geoip import place_from_record

    tree = read_tree(database)
    walked = {}
    for start, prefix, place in zip(tree.v4_start.tolist(), tree.v4_prefix.tolist(), tree.v4_place.tolist(),
                                    strict=True):
        walked[ipaddress.ip_network((start, prefix))] = None if place == NO_PLACE else tree.places[place]
    starts6 = [(h << 64) | lo for h, lo in zip(tree.v6_start.tolist(), tree.v6_start_low.tolist(), strict=True)]
    aliases = []
    for start, prefix, place in zip(starts6, tree.v6_prefix.tolist(), tree.v6_place.tolist(), strict=True):
        network = ipaddress.ip_network((start, prefix))
        if place == ALIAS:
            aliases.append(network)
        else:
            walked[network] = None if place == NO_PLACE else tree.places[place]
    assert aliases == [ipaddress.ip_network("::/96")]
    expected = {}
    with maxminddb.open_database(str(database)) as reader:
        for network, record in reader:
            if network.version == 6 and network.subnet_of(ipaddress.ip_network("::/96")):   # type: ignore[arg-type]
                network = ipaddress.ip_network((int(network.network_address), network.prefixlen - 96))
            expected[network] = place_from_record(record)
    assert walked == expected
    assert sorted(tree.v4_start.tolist()) == tree.v4_start.tolist()
    assert sorted(starts6) == starts6


def test_services_with_the_same_regions_and_map_share_one_table(database: Path, steering: Steering) -> None:
    specs = {name: table_spec(svc, REGIONS) for name, svc in steering.services.items()}
    # geo.test and geo2.test: same regions, different TTLs; a latency service orders like geo without RTTs
    assert specs["geo.test"] == specs["geo2.test"] == specs["lat.test"]
    assert specs["four.test"] == specs["lat4.test"]
    tables = compile_tables(read_tree(database), specs.values())
    assert len(tables) == len(set(specs.values())) == len(specs) - 3
    assert tables[specs["geo.test"]].records4 is tables[specs["map.test"]].records4     # the record index too


def test_special_chains_gap_alias_and_split_record(database: Path, steering: Steering) -> None:
    tables = compile_tables(read_tree(database), steering.table_specs())
    geo_table = next(t for spec, t in tables.items() if spec.policy == "geo")
    cidr_table = next(t for spec, t in tables.items() if spec.cidr)
    assert geo_table.find(4, int(ipaddress.IPv4Address("203.0.113.1")))[0] == UNLOCATED   # not in the database
    assert geo_table.find(6, int(ipaddress.IPv6Address("::198.18.0.1")))[0] == SLOW       # IPv4 seen from ::/96
    # the record holding 198.18.64.96/27 is split by that CIDR entry: the reference path answers
    chain, prefix = cidr_table.find(4, int(ipaddress.IPv4Address("198.18.64.100")))
    assert chain == SLOW or prefix >= 27
    assert "IPv4" in repr(geo_table)
    assert repr(steering).endswith(f"{len(steering.services)} compiled>")
    assert "chains" in repr(geo_table)


def test_a_health_change_needs_no_recompilation(steering: Steering) -> None:
    client = ipaddress.IPv4Address("10.1.2.0")      # Sydney: nearest is ap-northeast
    steering.update_region_states({})
    assert steering.answer("geo.test", client, 24, 0.0).decision.regions == ("ap-northeast",)
    steering.update_region_states({"ap-northeast": RegionState(up=False)})
    moved = steering.answer("geo.test", client, 24, 0.0)       # a spill: per network, from the table too
    assert moved.decision.regions != ("ap-northeast",)
    assert _fields(moved) == _fields(steering.decide("geo.test", client, 24, 0.0))
    steering.update_region_states({"ap-northeast": RegionState(drained=True), "us-east": RegionState(up=False)})
    assert steering.answer("geo.test", client, 24, 0.0).decision.regions == ("eu-central",)
    steering.update_region_states({})


def test_read_tree_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(GeoIPError, match="cannot"):
        read_tree(bad)
    with pytest.raises(GeoIPError, match="cannot"):
        read_tree(tmp_path / "missing.mmdb")


def test_latency_services_use_the_table_only_while_no_rtt_is_known(database: Path) -> None:
    services = load_services(Section.from_yaml_text(SERVICES, file="t.yaml").section("services"), REGIONS)
    latency = LatencyTable()
    s = Steering(REGIONS, services, MaxMindLocator(database), latency)
    s.install_tables(compile_tables(read_tree(database), s.table_specs()))
    clients = [ipaddress.IPv4Address(int(V4_BLOCK.network_address) + (n << 8)) for n in range(0, 512, 7)]
    clients += [ipaddress.IPv6Address(int(V6_BLOCK.network_address) + (n << 80)) for n in range(0, 1 << 16, 997)]

    def check() -> int:
        before = s.compiled_answers
        for client in clients:
            source = 24 if client.version == 4 else 56
            for name in ("lat.test", "lat4.test"):
                assert _fields(s.answer(name, client, source, 5.0)) == _fields(s.decide(name, client, source, 5.0))
        return s.compiled_answers - before

    assert check() > len(clients)                       # no RTT anywhere: the table answers
    latency.ingest(ipaddress.ip_network("198.18.7.0/24"), "eu-central", 12.0, 5.0)
    assert check() == 0                                  # RTTs known: the reference path (widening reads them)
    assert latency.expire(1000.0)
    assert check() > len(clients)                       # and back once they are gone


@given(st.text(max_size=40), st.lists(st.sampled_from(("a", "b", "c", "d", "e")), unique=True, max_size=5),
       st.lists(st.sampled_from((0.0, 0.5, 1.0, 3.0)), min_size=5, max_size=5), st.integers(1, 6))
def test_the_compiled_paths_spreader_orders_as_spread(key: str, candidates: list[str], weights: list[float],
                                                      count: int) -> None:
    from gslb.steering.spill import Spreader, spread

    capacity = dict(zip("abcde", weights, strict=True))
    assert Spreader(candidates, capacity, count).first(key) == tuple(spread(key, candidates, capacity)[:count])
