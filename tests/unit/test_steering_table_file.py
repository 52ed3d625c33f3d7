"""The steering table file (gslb/steering/table.py write_tables / map_tables).

The supervisor compiles once and writes the tables; every worker maps the file read-only. A
mapped table must find exactly what the compiled one finds (IPv4 through the /16 index, IPv6
through the high/low word bisect), a steering given mapped tables must answer as the reference
path does, and a file that is truncated, corrupt, of another version or missing must be refused
with a TableFileError that names it, never half used.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import Section
from gslb.geoip import MaxMindLocator, read_tree
from gslb.latency_table import LatencyTable
from gslb.steering import Steering
from gslb.steering.config import load_services
from gslb.steering.table import (
    TABLE_MAGIC,
    GeoTable,
    RecordIndex,
    TableFileError,
    TableSpec,
    compile_tables,
    map_tables,
    write_tables,
)
from tests.geo_fixtures import write_city_db
from tests.unit.test_steering_table import REGIONS, SERVICES, STATES, V4_BLOCK, V6_BLOCK, _fields, _layout


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_db(tmp_path_factory.mktemp("geo") / "dense.mmdb", _layout())


@pytest.fixture(scope="module")
def services(database: Path) -> dict[str, object]:
    return dict(load_services(Section.from_yaml_text(SERVICES, file="t.yaml").section("services"), REGIONS))


@pytest.fixture(scope="module")
def compiled(database: Path, services: dict[str, object]) -> dict[TableSpec, GeoTable]:
    s = Steering(REGIONS, services, MaxMindLocator(database), LatencyTable())  # type: ignore[arg-type]
    return compile_tables(read_tree(database), s.table_specs())


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory, compiled: dict[TableSpec, GeoTable]) -> Path:
    path = tmp_path_factory.mktemp("tables") / "tables.bin"
    write_tables(path, compiled)
    return path


def _addresses(rng: random.Random, n: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(n):
        kind = rng.randrange(5)
        if kind == 0:
            out.append((4, int(V4_BLOCK.network_address) + rng.randrange(V4_BLOCK.num_addresses)))
        elif kind == 1:
            out.append((4, rng.getrandbits(32)))
        elif kind == 2:
            out.append((6, int(V6_BLOCK.network_address) + rng.randrange(V6_BLOCK.num_addresses)))
        elif kind == 3:
            out.append((6, rng.getrandbits(128)))
        else:
            out.append((6, rng.getrandbits(16) << 112))
    return out


def test_a_mapped_table_finds_what_the_compiled_one_finds(compiled: dict[TableSpec, GeoTable],
                                                          table_file: Path) -> None:
    mapped = map_tables(table_file)
    assert set(mapped) == set(compiled)         # the specs come back equal (they key install_tables)
    rng = random.Random(7)
    addresses = _addresses(rng, 20_000)
    # and every record's own first and last address, and the address after it
    first = next(iter(compiled.values()))
    for version, records in ((4, first.records4), (6, first.records6)):
        bits = 32 if version == 4 else 128
        for i in range(0, len(records), 3):
            start = records.start(i)
            end = start + (1 << (bits - records.prefix[i])) - 1
            addresses += [(version, start), (version, end), (version, (end + 1) % (1 << bits))]
    for spec, table in compiled.items():
        other = mapped[spec]
        assert isinstance(other.chain_ids4, memoryview)
        assert isinstance(other.records6.low, memoryview)
        assert other.chains == table.chains
        assert other.orders == table.orders
        assert other.source == table.source
        for version, value in addresses:
            assert other.find(version, value) == table.find(version, value), (spec.policy, version, hex(value))


def test_a_steering_with_mapped_tables_answers_as_the_reference_path(database: Path, services: dict[str, object],
                                                                     table_file: Path) -> None:
    s = Steering(REGIONS, services, MaxMindLocator(database), LatencyTable())  # type: ignore[arg-type]
    assert s.install_tables(map_tables(table_file)) == len(services)
    rng = random.Random(11)
    for round_ in range(20):
        s.update_region_states({name: rng.choice(STATES) for name in REGIONS})
        for version, value in _addresses(rng, 40):
            client = ipaddress.ip_address(value) if version == 6 else ipaddress.IPv4Address(value)
            prefix = rng.choice((None, 24, 56))
            if prefix is not None:
                prefix = min(prefix, client.max_prefixlen)
                client = ipaddress.ip_network(f"{client}/{prefix}", strict=False).network_address
            for name in s.services:
                fast = s.answer(name, client, prefix, 1.0)
                assert _fields(fast) == _fields(s.decide(name, client, prefix, 1.0)), (round_, name, client)
            fast_v4 = s.fast_answer("geo.test", 4, int(V4_BLOCK.network_address) + 5, None)
            assert fast_v4 is not None
    assert s.compiled_answers > 0


def test_a_table_file_written_again_from_mapped_tables_is_the_same(compiled: dict[TableSpec, GeoTable],
                                                                   table_file: Path, tmp_path: Path) -> None:
    """(The supervisor could rewrite a file from what it mapped: the arrays are copied as they are.)"""
    write_tables(tmp_path / "again.bin", map_tables(table_file))
    assert (tmp_path / "again.bin").read_bytes() == table_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.bin"]        # no temporary file left behind


def _refused(path: Path, match: str) -> None:
    with pytest.raises(TableFileError, match=match) as info:
        map_tables(path)
    assert str(path) in str(info.value)


def test_a_truncated_corrupt_or_foreign_file_is_refused_with_a_clear_error(table_file: Path, tmp_path: Path) -> None:
    data = table_file.read_bytes()
    bad = tmp_path / "bad.bin"
    for cut in (0, 10, 31, 32, 1000, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        _refused(bad, "truncated|not a steering table file")
    bad.write_bytes(data + b"\0" * 8)
    _refused(bad, "truncated or padded")
    for at in (40, len(data) // 3, len(data) - 3):      # a flipped byte in the header or the arrays
        flipped = bytearray(data)
        flipped[at] ^= 0x41
        bad.write_bytes(bytes(flipped))
        _refused(bad, "CRC-32")
    bad.write_bytes(b"NOTATABL" + data[8:])
    _refused(bad, "bad magic")
    bad.write_bytes(TABLE_MAGIC + struct.pack("<I", 99) + data[12:])
    _refused(bad, "version 99")
    bad.write_bytes(data[:12] + struct.pack("<I", 2**31) + data[16:])       # a huge header length
    _refused(bad, "truncated or padded")
    _refused(tmp_path / "missing.bin", "cannot be read")


def test_an_empty_set_of_tables_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(TableFileError, match="no tables"):
        write_tables(tmp_path / "t.bin", {})
    assert not list(tmp_path.iterdir())


# -- the IPv6 two-word bisect against the one-list version it replaced --------------------------

def _reference_find(starts: list[int], prefix: list[int], value: int) -> int:
    i = bisect.bisect_right(starts, value) - 1
    if i < 0 or value - starts[i] >> (128 - prefix[i]):
        return -1
    return i


@st.composite
def _v6_records(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Sorted, non-overlapping IPv6 record networks; several share each high word (the case the
    second bisect is for), some sit at the edges of the space."""
    highs = draw(st.lists(st.sampled_from([0, 1, 2**63, 2**64 - 2, 2**64 - 1, 0x20010DB8 << 32]), min_size=1,
                          max_size=4, unique=True))
    nets: set[tuple[int, int]] = set()
    for high in highs:
        for plen in draw(st.lists(st.integers(64, 128), min_size=1, max_size=6)):
            low = draw(st.integers(0, 2**64 - 1)) >> (128 - plen) << (128 - plen)
            nets.add(((high << 64) | low, plen))
    if draw(st.booleans()):
        nets.add((0, draw(st.integers(1, 63))))
    out: list[tuple[int, int]] = []
    for start, plen in sorted(nets):
        if out and start <= out[-1][0] + (1 << (128 - out[-1][1])) - 1:
            continue                    # overlaps the previous: a tree has no such pair
        out.append((start, plen))
    return [s for s, _ in out], [p for _, p in out]


@settings(max_examples=300, deadline=None)
@given(records=_v6_records(), probes=st.lists(st.integers(0, 2**128 - 1), max_size=20))
def test_the_ipv6_high_low_bisect_finds_what_one_sorted_list_finds(
        records: tuple[list[int], list[int]], probes: list[int]) -> None:
    import array

    starts, prefix = records
    index = RecordIndex(128, array.array("Q", [s >> 64 for s in starts]), array.array("B", prefix), None,
                        array.array("Q", [s & (2**64 - 1) for s in starts]))
    near = [s + d for s in starts for d in (-1, 0, 1, (1 << (128 - prefix[starts.index(s)])) - 1,
                                            1 << (128 - prefix[starts.index(s)]))]
    for value in probes + [v for v in near if 0 <= v < 2**128]:
        assert index.find(value) == _reference_find(starts, prefix, value), hex(value)
    assert [index.start(i) for i in range(len(starts))] == starts
