"""The compiled decision table: client network -> ordered regions and ECS widening chain  [pure].

    spec = table_spec(service, regions)              # None: the policy is not compiled
    tables = compile_tables(read_tree(path), [spec, ...])   # {spec: GeoTable}; numpy, seconds
    table.find(version, value) -> (chain id, record prefix)  # per query: a bisect, no GeoIP decoding
    write_tables(path, tables); map_tables(path) -> {spec: GeoTable}   # one file, mapped by every worker

Why: most queries a GSLB sees carry a client network it has not answered recently (public
resolvers send each client's /24 or /56 in ECS and cache our answer for the scope we return),
so the cache-miss path is the common one. Like gdnsd, we compute at load time, for every record
network of the GeoIP database, what the steering would need from it: here the *ordered* region
list (geo: nearest first by great-circle distance, ties by name; geo_map: country > continent >
default, or the CIDR entry that holds the record) and the *widening chain*: the order of each
sibling that the reference ECS widening (core.py `_widen`) would merge with, up to MAX_WIDEN
steps, stopping where the sibling is not one record of exactly that size. Health, drain, capacity
spill and the all-down rule are applied at query time to those short lists (core.py), so a health
change needs no recompilation, and the scope comes out exactly as the reference computes it: it
compares the *choices* (regions, TTL, all-down) that the chain's orders give under the current
region states, not the orders.

Table key (`TableSpec`): the policy, the service's regions with their coordinates, the default
order, and for geo_map the map. Services with the same key share one table; every table of a
database shares the record starts and prefixes (`RecordIndex`).

Special chain ids: UNLOCATED (no record, or a record without a usable place: the reference
answers the default order with the client's own SOURCE prefix as scope) and SLOW (the query takes
the reference path: the IPv4 subtree seen from IPv6 (::/96 and the builder's aliases), and for
geo_map a record that a CIDR entry splits). Real chains are CHAIN_BASE and up.

Memory: per record network 4 (start) + 1 (prefix) bytes shared (IPv6: 16 + 1), plus 2 or 4 bytes
of chain id per table; the bundled database has 3.0 M IPv4 and 0.24 M IPv6 record networks:
one table is 26 MB of arrays (the size of its table file; bench/gslb_table_memory.py), each
further distinct map about 6 MB (bench/dns_bench.py measures the RSS; bench/README.md: its 33 MB
for the first table predates the IPv6 starts as two uint64 arrays, which were a list of ints).
Compiling reads only the tree (geoip.read_tree) and ranks each distinct place once; the chains
are computed for all records at once with numpy (imported here only), IPv4 in 32-bit arithmetic:
~3 s of CPU and ~420 MB peak in the compiling process.

The table file (write_tables / map_tables): with workers, the supervisor compiles once and writes
every table of its configuration to one file; each worker maps it read-only, so the arrays sit
once in the page cache whatever the number of workers (a worker's RSS counts the pages it
touched, its PSS its share of them). Layout: a fixed header (magic b"GSLBTBL\0", version,
JSON header length, data length, CRC-32 of header and data), a JSON header (the database
source; each table's spec, orders and chains; each array's type code, offset and length), then
the arrays' native bytes, each 8-byte aligned: IPv4 starts ('I'), the /16 index ('I'), IPv4
prefixes ('B'), IPv6 starts' high and low words ('Q', 'Q'), IPv6 prefixes ('B'), and per table
its IPv4 and IPv6 chain ids ('H' or 'I'). A mapped table's arrays are memoryviews of the mapping
(bisect and indexing read them as they read array.array: about as fast, measured in
bench/README.md); the mapping goes when the last table using it does. The file is written under a
temporary name and renamed. A file that is missing, truncated, padded, of another version, or
whose CRC-32 does not match is refused (TableFileError, naming the file and the reason); the
CRC covers every byte, so a chain id is not range-checked one by one. JSON, not pickle: reading
a file runs no code.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gslb.geoip import ALIAS, NO_PLACE, TreeRecords
from gslb.steering import geo
from gslb.steering.base import Region
from gslb.steering.config import GeoMap, ServiceConfig

MAX_WIDEN = 8               # the same bound as core.py's widening
UNLOCATED = 0
SLOW = 1
CHAIN_BASE = 2
_LOW64 = (1 << 64) - 1
_NO_ORDER = -1              # (compile time) the record is UNLOCATED
_SLOW_ORDER = -2            # (compile time) the record is SLOW


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What a table depends on (hashable; services with equal specs share one table)."""

    policy: str                                         # geo | geo_map
    regions: tuple[tuple[str, float, float], ...]       # the service's regions, in its order
    default_order: tuple[str, ...]                      # geo: clients without coordinates
    cidr: tuple[tuple[str, tuple[str, ...]], ...] = ()  # geo_map: longest prefix first
    country: tuple[tuple[str, tuple[str, ...]], ...] = ()
    continent: tuple[tuple[str, tuple[str, ...]], ...] = ()
    default: tuple[str, ...] = ()


def table_spec(svc: ServiceConfig, regions: Mapping[str, Region]) -> TableSpec | None:
    """The table a service's misses can be answered from; None for policies that are not compiled
    (failover, weighted, and one-region services, whose answer ignores the client). A latency
    service shares the geo table of its regions (its order while no RTT is known)."""
    if svc.policy not in ("geo", "geo_map", "latency") or len(svc.regions) <= 1:
        return None
    coords = tuple((r, regions[r].lat, regions[r].lon) for r in svc.regions)
    if svc.policy != "geo_map":         # latency without RTTs orders like geo: the same table
        return TableSpec("geo", coords, tuple(svc.default_order))
    gmap = svc.geo_map if svc.geo_map is not None else GeoMap()
    return TableSpec("geo_map", coords, (), tuple((str(net), order) for net, order in gmap.cidr),
                     tuple(sorted(gmap.country.items())), tuple(sorted(gmap.continent.items())), gmap.default)


class RecordIndex:
    """The record networks of one family, sorted: starts, prefix lengths and (IPv4) a /16 index.

    IPv4 starts are 32-bit words; IPv6 starts are two 64-bit words (`starts`: the high words,
    `low`: the low words), found by a bisect on the high word, then (only when records longer
    than /64 share it) on the low word among the records sharing it. Each array is an array.array
    or a memoryview of a mapped table file (map_tables): indexing and bisect read both the same
    way. The IPv6 bisect costs more than it did on one sorted list of Python ints (each probe of
    a 'Q' array makes an int; bench/gslb_table_memory.py --lookups: about 0.75 against 0.45 µs),
    the price of 4 MB of shared words instead of about 12 MB of ints in every process."""

    __slots__ = ("bits", "idx16", "low", "prefix", "starts")

    def __init__(self, bits: int, starts: Sequence[int], prefix: Sequence[int],
                 idx16: Sequence[int] | None, low: Sequence[int] | None = None) -> None:
        self.bits = bits
        self.starts = starts            # IPv4: the starts ('I'); IPv6: their high 64 bits ('Q')
        self.low = low                  # IPv6: the low 64 bits of the starts ('Q'); IPv4: None
        self.prefix = prefix            # ('B')
        self.idx16 = idx16              # IPv4: idx16[h] = first record starting at or after h << 16

    def find(self, value: int) -> int:
        """The index of the record holding address `value`, or -1."""
        idx16, low, starts = self.idx16, self.low, self.starts
        if idx16 is not None:
            h = value >> 16
            i = bisect.bisect_right(starts, value, idx16[h], idx16[h + 1]) - 1
            if i < 0 or value - starts[i] >> (self.bits - self.prefix[i]):
                return -1
            return i
        if low is None:
            i = bisect.bisect_right(starts, value) - 1
            if i < 0 or value - starts[i] >> (self.bits - self.prefix[i]):
                return -1
            return i
        high = value >> 64
        i = bisect.bisect_right(starts, high) - 1           # the last record whose high word <= high
        if i < 0:
            return -1
        word = starts[i]
        if word == high and low[i] > value & _LOW64:
            # it starts after value within the same high word (records longer than /64): the last
            # of that run starting at or before value, or the record before the run
            first = i if i == 0 or starts[i - 1] != high else bisect.bisect_left(starts, high, 0, i)
            i = bisect.bisect_right(low, value & _LOW64, first, i) - 1
            if i < 0:
                return -1
            word = starts[i]
        if value - ((word << 64) | low[i]) >> (128 - self.prefix[i]):
            return -1
        return i

    def start(self, i: int) -> int:
        """The first address of record `i`."""
        low = self.low
        return self.starts[i] if low is None else (self.starts[i] << 64) | low[i]

    def __len__(self) -> int:
        return len(self.prefix)


class GeoTable:
    """One TableSpec compiled against one database (see the module docstring)."""

    __slots__ = ("chain_ids4", "chain_ids6", "chains", "orders", "records4", "records6", "source", "spec")

    def __init__(self, spec: TableSpec, source: tuple[str, int, int], records4: RecordIndex,
                 records6: RecordIndex, chain_ids4: Sequence[int], chain_ids6: Sequence[int],
                 chains: tuple[tuple[int, ...], ...], orders: tuple[tuple[tuple[str, ...], bool], ...]) -> None:
        self.spec = spec
        self.source = source
        self.records4 = records4
        self.records6 = records6
        self.chain_ids4 = chain_ids4
        self.chain_ids6 = chain_ids6
        self.chains = chains            # chain id -> (own order id, merged siblings' order ids...)
        self.orders = orders            # order id -> (regions best first, spills by capacity)

    def find(self, version: int, value: int) -> tuple[int, int]:
        """(chain id, prefix length of the record) for an address; (UNLOCATED, 0) in a gap."""
        if version == 4:
            records, ids = self.records4, self.chain_ids4
        else:
            records, ids = self.records6, self.chain_ids6
        i = records.find(value)
        if i < 0:
            return UNLOCATED, 0
        return ids[i], records.prefix[i]

    def __repr__(self) -> str:
        return (f"<GeoTable {self.spec.policy} {[r for r, _, _ in self.spec.regions]}: "
                f"{len(self.records4):,} IPv4 + {len(self.records6):,} IPv6 networks, "
                f"{len(self.chains) - CHAIN_BASE:,} chains, {len(self.orders)} orders>")


# -- the table file: one compile, mapped by every worker ----------------------------------------

TABLE_MAGIC = b"GSLBTBL\x00"
TABLE_VERSION = 1
_FIXED = struct.Struct("<8sIIQII")      # magic, version, header bytes, data bytes, crc32, (pad)
_ALIGN = 8
_CODES = {"B": 1, "H": 2, "I": 4, "Q": 8}
MAX_HEADER = 256 * 1024 * 1024          # a header longer than this is refused before it is read


class TableFileError(ValueError):
    """a steering table file that cannot be used (missing, truncated, corrupt or another version)"""


def _spec_wire(spec: TableSpec) -> dict[str, Any]:
    return {"policy": spec.policy, "regions": [list(r) for r in spec.regions],
            "default_order": list(spec.default_order),
            **{key: [[k, list(v)] for k, v in getattr(spec, key)] for key in ("cidr", "country", "continent")},
            "default": list(spec.default)}


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r:.60}")
    return tuple(value)


def _spec_of(wire: Any) -> TableSpec:
    pairs = {key: tuple((str(k), _strs(v)) for k, v in wire[key]) for key in ("cidr", "country", "continent")}
    return TableSpec(str(wire["policy"]), tuple((str(n), float(lat), float(lon)) for n, lat, lon in wire["regions"]),
                     _strs(wire["default_order"]), pairs["cidr"], pairs["country"], pairs["continent"],
                     _strs(wire["default"]))


def write_tables(path: str | os.PathLike[str], tables: Mapping[TableSpec, GeoTable]) -> None:
    """Write `tables` (all compiled from one database: they share its record index) to `path`,
    atomically: a temporary file in the same directory, then a rename. Format: a fixed header
    (magic, version, JSON header length, data length, CRC-32 of header and data), the JSON header
    (the database source, each table's spec, orders and chains, and where each array lies), then
    the arrays' native bytes, each 8-byte aligned."""
    if not tables:
        raise TableFileError("no tables to write")
    first = next(iter(tables.values()))
    source, records4, records6 = first.source, first.records4, first.records6
    if records6.low is None or records4.idx16 is None:
        raise TableFileError("the tables' record index has no IPv6 low words or no IPv4 /16 index")
    arrays: list[tuple[str, Sequence[int]]] = [
        ("starts4", records4.starts), ("idx16", records4.idx16), ("prefix4", records4.prefix),
        ("high6", records6.starts), ("low6", records6.low), ("prefix6", records6.prefix)]
    described = []
    for n, table in enumerate(tables.values()):
        if table.source != source or len(table.records4) != len(records4) or len(table.records6) != len(records6):
            raise TableFileError("the tables were not all compiled from the same database")
        arrays += [(f"ids4.{n}", table.chain_ids4), (f"ids6.{n}", table.chain_ids6)]
        described.append({"spec": _spec_wire(table.spec), "orders": [[list(o), s] for o, s in table.orders],
                          "chains": [list(c) for c in table.chains], "ids4": f"ids4.{n}", "ids6": f"ids6.{n}"})
    blobs: list[bytes | memoryview] = []
    layout: dict[str, list[Any]] = {}
    offset = 0
    for name, values in arrays:
        raw = memoryview(values)  # type: ignore[arg-type]  # an array.array or a mapped memoryview
        code = raw.format
        if code not in _CODES or raw.itemsize != _CODES[code]:
            raise TableFileError(f"{name}: unexpected array type {code!r}")
        layout[name] = [code, offset, len(raw)]
        data = raw.cast("B")
        blobs.append(data)
        offset += len(data)
        pad = -offset % _ALIGN
        blobs.append(b"\0" * pad)
        offset += pad
    header = json.dumps({"source": list(source), "arrays": layout, "tables": described},
                        separators=(",", ":")).encode()
    header += b" " * (-(_FIXED.size + len(header)) % _ALIGN)        # the data starts 8-byte aligned
    crc = zlib.crc32(header)
    for blob in blobs:
        crc = zlib.crc32(blob, crc)
    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(_FIXED.pack(TABLE_MAGIC, TABLE_VERSION, len(header), offset, crc, 0))
            f.write(header)
            for blob in blobs:
                f.write(blob)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def map_tables(path: str | os.PathLike[str]) -> dict[TableSpec, GeoTable]:
    """The tables of a file write_tables wrote, their arrays memoryviews of one read-only mapping
    (shared with every process that maps the file: the page cache holds them once). The mapping
    is released when the last table of it is gone. TableFileError if the file is missing,
    truncated, corrupt (CRC-32) or of another version: nothing of it is then used."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _FIXED.size:
                raise TableFileError(f"{path}: truncated ({size} bytes): not a steering table file")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise TableFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    magic, version, header_len, data_len, crc, _ = _FIXED.unpack_from(mm, 0)
    if magic != TABLE_MAGIC:
        raise TableFileError(f"{path}: not a steering table file (bad magic)")
    if version != TABLE_VERSION:
        raise TableFileError(f"{path}: table file version {version}, this program reads {TABLE_VERSION}")
    data_start = _FIXED.size + header_len
    if header_len > MAX_HEADER or data_start + data_len != size:
        raise TableFileError(f"{path}: truncated or padded: {size} bytes, the header says "
                             f"{_FIXED.size + header_len + data_len}")
    view = memoryview(mm)
    if zlib.crc32(view[data_start:], zlib.crc32(view[_FIXED.size:data_start])) != crc:
        raise TableFileError(f"{path}: corrupt (CRC-32 mismatch)")
    try:
        header = json.loads(bytes(view[_FIXED.size:data_start]))
        source = header["source"]
        source = (str(source[0]), int(source[1]), int(source[2]))

        def array_of(name: str, code: str | None = None) -> memoryview:
            kind, offset, count = header["arrays"][name]
            if kind not in _CODES or (code is not None and kind != code) or not isinstance(offset, int) \
                    or not isinstance(count, int) or offset < 0 or count < 0 or offset % _ALIGN \
                    or offset + count * _CODES[kind] > data_len:
                raise TableFileError(f"{path}: array {name}: bad layout {header['arrays'][name]!r:.80}")
            start = data_start + offset
            return view[start:start + count * _CODES[kind]].cast(kind)

        starts4, idx16, prefix4 = array_of("starts4", "I"), array_of("idx16", "I"), array_of("prefix4", "B")
        high6, low6, prefix6 = array_of("high6", "Q"), array_of("low6", "Q"), array_of("prefix6", "B")
        if len(starts4) != len(prefix4) or len(idx16) != 65537 or not len(high6) == len(low6) == len(prefix6):
            raise TableFileError(f"{path}: the record arrays' lengths disagree")
        records4 = RecordIndex(32, starts4, prefix4, idx16)
        records6 = RecordIndex(128, high6, prefix6, None, low6)
        out: dict[TableSpec, GeoTable] = {}
        for entry in header["tables"]:
            ids4, ids6 = array_of(entry["ids4"]), array_of(entry["ids6"])
            if len(ids4) != len(starts4) or len(ids6) != len(high6):
                raise TableFileError(f"{path}: a table's chain ids do not match its records")
            orders = tuple((_strs(o), bool(s)) for o, s in entry["orders"])
            chains = tuple(tuple(int(i) for i in c) for c in entry["chains"])
            if len(chains) < CHAIN_BASE or any(not 0 <= i < len(orders) for c in chains for i in c):
                raise TableFileError(f"{path}: a table's chains name orders it does not have")
            spec = _spec_of(entry["spec"])
            out[spec] = GeoTable(spec, source, records4, records6, ids4, ids6, chains, orders)
    except TableFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:    # (json's errors are ValueErrors)
        raise TableFileError(f"{path}: malformed header: {type(exc).__name__}: {exc}") from None
    return out


# -- compiling (numpy) -------------------------------------------------------------------------


def _place_orders(spec: TableSpec, places: Sequence[Any]) -> tuple[list[int], list[tuple[tuple[str, ...], bool]]]:
    """Order id per place, and the distinct orders (regions, spillable): ranked once per place."""
    orders: list[tuple[tuple[str, ...], bool]] = []
    ids: dict[tuple[tuple[str, ...], bool], int] = {}

    def intern(order: tuple[str, ...], spillable: bool) -> int:
        key = (order, spillable)
        found = ids.get(key)
        if found is None:
            found = ids[key] = len(orders)
            orders.append(key)
        return found

    result = []
    if spec.policy == "geo":
        models = [Region(name, lat, lon) for name, lat, lon in spec.regions]
        names = [name for name, _, _ in spec.regions]
        fallback = list(spec.default_order) + [r for r in names if r not in spec.default_order]
        for place in places:
            if place.lat is not None and place.lon is not None:
                result.append(intern(tuple(r for r, _ in geo.rank(models, place.lat, place.lon)), True))
            else:
                result.append(intern(tuple(fallback), False))
    else:
        country, continent = dict(spec.country), dict(spec.continent)
        for place in places:
            if place.country and place.country in country:
                order = country[place.country]
            elif place.continent and place.continent in continent:
                order = continent[place.continent]
            else:
                order = spec.default
            result.append(intern(tuple(order), False))
    return result, orders


def _intern_order(orders: list[tuple[tuple[str, ...], bool]], order: tuple[str, ...]) -> int:
    key = (order, False)
    if key in orders:
        return orders.index(key)
    orders.append(key)
    return len(orders) - 1


def _apply_cidr(np: Any, spec: TableSpec, version: int, hi: Any, lo: Any, prefix: Any, rec: Any,
                orders: list[tuple[tuple[str, ...], bool]]) -> None:
    """geo_map CIDR entries: a record inside an entry takes the longest such entry's order; a record
    that an entry splits is SLOW (its key network is not the record: the reference path answers)."""
    import ipaddress

    bits = 32 if version == 4 else 128
    for text, order in reversed(spec.cidr):         # shortest first: longer entries override
        net = ipaddress.ip_network(text)
        if net.version != version:
            continue
        first, p = int(net.network_address), net.prefixlen
        last = first + (1 << (bits - p)) - 1
        f_hi, f_lo = np.uint64(first >> 64), np.uint64(first & 0xFFFFFFFFFFFFFFFF)
        l_hi, l_lo = np.uint64(last >> 64), np.uint64(last & 0xFFFFFFFFFFFFFFFF)
        ge_first = (hi > f_hi) | ((hi == f_hi) & (lo >= f_lo))
        le_last = (hi < l_hi) | ((hi == l_hi) & (lo <= l_lo))
        inside = ge_first & le_last & (prefix >= p)
        located = rec != _NO_ORDER
        rec[inside & located & (rec != _SLOW_ORDER)] = _intern_order(orders, order)
        # records holding the entry's first address with a shorter prefix: split by it
        shift = bits - prefix.astype(np.int64)
        size_hi = np.where(shift >= 64, np.left_shift(np.uint64(1), np.clip(shift - 64, 0, 63).astype(np.uint64)),
                           np.uint64(0))
        size_lo = np.where(shift >= 64, np.uint64(0),
                           np.left_shift(np.uint64(1), np.clip(shift, 0, 63).astype(np.uint64)))
        end_lo = lo + size_lo
        end_hi = hi + size_hi + (end_lo < lo)         # carry
        starts_before = (hi < f_hi) | ((hi == f_hi) & (lo <= f_lo))
        ends_after = (end_hi > f_hi) | ((end_hi == f_hi) & (end_lo > f_lo))
        ends_after |= (end_hi == 0) & (end_lo == 0) & (prefix == 0)     # a /0 record wraps around
        split = starts_before & ends_after & (prefix < p)
        rec[split & located] = _SLOW_ORDER


def _chains(np: Any, bits: int, hi: Any, lo: Any, prefix: Any, rec: Any) -> Any:
    """(n, 1 + MAX_WIDEN) order ids: own order, then each merged sibling's (-1 after the last).

    The reference widening merges the key network with its sibling while the sibling is exactly
    one record of that size; the records covering the block merged so far are consecutive, so the
    sibling can only be the record just after (block in the low half) or just before (high half).
    """
    n = len(rec)
    small = n == 0 or int(rec.max()) < 0x7FFF           # order ids fit 16 bits: half the memory
    out = np.full((n, 1 + MAX_WIDEN), -1, np.int16 if small else np.int32)
    out[:, 0] = rec
    mergeable = rec >= 0
    # the records still widening (shrinks every step), with their merged block so far
    idx = np.nonzero(mergeable & (prefix > 0))[0]
    if bits == 32:          # IPv4: the high word is 0; 32-bit arithmetic (3 M records: memory matters)
        starts = lo.astype(np.uint32)
        prefix16 = prefix.astype(np.int16)
        idx = idx.astype(np.int32)
        first, last, q = idx.copy(), idx.copy(), prefix16[idx]
        value = starts[idx]
        for k in range(1, 1 + MAX_WIDEN):
            if not len(idx):
                break
            bit = np.left_shift(np.uint32(1), (32 - q).astype(np.uint32))
            upper = (value & bit) != 0
            sibling = value ^ bit
            j = np.where(upper, first - 1, last + 1)
            jj = np.clip(j, 0, max(n - 1, 0))
            ok = (j >= 0) & (j < n) & (starts[jj] == sibling) & (prefix16[jj] == q) & mergeable[jj]
            idx, jj, upper = idx[ok], jj[ok], upper[ok]
            out[idx, k] = rec[jj]
            first = np.where(upper, jj, first[ok])
            last = np.where(upper, last[ok], jj)
            value = np.where(upper, sibling[ok], value[ok])
            q = q[ok] - 1
            keep = q > 0
            idx, first, last, q, value = idx[keep], first[keep], last[keep], q[keep], value[keep]
        return out
    prefix64 = prefix.astype(np.int64)
    first, last, q = idx.copy(), idx.copy(), prefix64[idx]
    v_hi, v_lo = hi[idx], lo[idx]
    one = np.uint64(1)
    for k in range(1, 1 + MAX_WIDEN):
        if not len(idx):
            break
        shift = bits - q
        high = shift >= 64
        bit_hi = np.where(high, np.left_shift(one, np.clip(shift - 64, 0, 63).astype(np.uint64)), np.uint64(0))
        bit_lo = np.where(high, np.uint64(0), np.left_shift(one, np.clip(shift, 0, 63).astype(np.uint64)))
        upper = ((v_hi & bit_hi) | (v_lo & bit_lo)) != 0
        s_hi, s_lo = v_hi ^ bit_hi, v_lo ^ bit_lo
        j = np.where(upper, first - 1, last + 1)
        jj = np.clip(j, 0, max(n - 1, 0))
        ok = (j >= 0) & (j < n) & (hi[jj] == s_hi) & (lo[jj] == s_lo) & (prefix64[jj] == q) & mergeable[jj]
        idx, jj, upper = idx[ok], jj[ok], upper[ok]
        out[idx, k] = rec[jj]
        first = np.where(upper, jj, first[ok])
        last = np.where(upper, last[ok], jj)
        v_hi = np.where(upper, s_hi[ok], v_hi[ok])
        v_lo = np.where(upper, s_lo[ok], v_lo[ok])
        q = q[ok] - 1
        keep = q > 0
        idx, first, last, q, v_hi, v_lo = idx[keep], first[keep], last[keep], q[keep], v_hi[keep], v_lo[keep]
    return out


def _chain_ids(np: Any, rows: Any, n_orders: int, chains: dict[tuple[int, ...], int],
               chain_list: list[tuple[int, ...]]) -> Any:
    """Chain id per row (rows with own order < 0 get UNLOCATED / SLOW); new chains appended.

    Rows are folded into one int64 code per record (radix n_orders + 1, re-numbered with np.unique
    whenever the next digit could overflow), then each distinct code is decoded once."""
    n = len(rows)
    ids = np.zeros(n, np.int64)
    own = rows[:, 0]
    ids[own == _NO_ORDER] = UNLOCATED
    ids[own == _SLOW_ORDER] = SLOW
    real = np.nonzero(own >= 0)[0]
    if len(real):
        radix = n_orders + 1
        code = rows[real, 0].astype(np.int64)
        for k in range(1, rows.shape[1]):
            if int(code.max()) >= (1 << 62) // radix:
                code = np.unique(code, return_inverse=True)[1].reshape(-1).astype(np.int64)
            code = code * radix + (rows[real, k].astype(np.int64) + 1)
        uniq, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        del code
        mapped = np.empty(len(uniq), np.int64)
        for i, row in enumerate(rows[real[first]].tolist()):
            key = tuple(o for o in row if o >= 0)
            found = chains.get(key)
            if found is None:
                found = chains[key] = len(chain_list)
                chain_list.append(key)
            mapped[i] = found
        ids[real] = mapped[inverse.reshape(-1)]
    return ids


def _record_orders(np: Any, places: Any, place_order: Any, alias_slow: bool) -> Any:
    rec = np.where(places >= 0, place_order[np.clip(places, 0, None)] if len(place_order) else _NO_ORDER,
                   _NO_ORDER).astype(np.int32)
    if alias_slow:
        rec[places == ALIAS] = _SLOW_ORDER
    assert NO_PLACE == _NO_ORDER
    return rec


def compile_tables(tree: TreeRecords, specs: Iterable[TableSpec]) -> dict[TableSpec, GeoTable]:
    """One GeoTable per distinct spec, sharing the record index."""
    import numpy as np

    v4_start = tree.v4_start.astype(np.uint64)
    v4_prefix = tree.v4_prefix.astype(np.uint8)
    v6_hi, v6_lo = tree.v6_start.astype(np.uint64), tree.v6_start_low.astype(np.uint64)
    v6_prefix = tree.v6_prefix.astype(np.uint8)
    starts4 = array.array("I", v4_start.astype(np.uint32).tobytes())
    idx16 = array.array("I", np.searchsorted(v4_start, np.arange(65537, dtype=np.uint64) << np.uint64(16))
                        .astype(np.uint32).tobytes())
    records4 = RecordIndex(32, starts4, array.array("B", v4_prefix.tobytes()), idx16)
    records6 = RecordIndex(128, array.array("Q", v6_hi.tobytes()), array.array("B", v6_prefix.tobytes()), None,
                           array.array("Q", v6_lo.tobytes()))
    zeros4 = np.zeros(1, np.uint64)         # the high words of IPv4 starts (broadcast)
    out: dict[TableSpec, GeoTable] = {}
    for spec in dict.fromkeys(specs):
        per_place, orders = _place_orders(spec, tree.places)
        place_order = np.array(per_place, np.int32)
        rec4 = _record_orders(np, tree.v4_place, place_order, False)
        rec6 = _record_orders(np, tree.v6_place, place_order, True)
        if spec.cidr:
            _apply_cidr(np, spec, 4, zeros4, v4_start, v4_prefix, rec4, orders)
            _apply_cidr(np, spec, 6, v6_hi, v6_lo, v6_prefix, rec6, orders)
        chains: dict[tuple[int, ...], int] = {}
        chain_list: list[tuple[int, ...]] = [(), ()]        # UNLOCATED, SLOW
        ids4 = _chain_ids(np, _chains(np, 32, zeros4, v4_start, v4_prefix, rec4), len(orders), chains, chain_list)
        ids6 = _chain_ids(np, _chains(np, 128, v6_hi, v6_lo, v6_prefix, rec6), len(orders), chains, chain_list)
        code = "H" if len(chain_list) <= 0xFFFF else "I"
        dtype = np.uint16 if code == "H" else np.uint32
        out[spec] = GeoTable(spec, tree.source, records4, records6,
                             array.array(code, ids4.astype(dtype).tobytes()),
                             array.array(code, ids6.astype(dtype).tobytes()),
                             tuple(chain_list), tuple(orders))
    return out


def compile_database(path: str, specs: Sequence[TableSpec]) -> dict[TableSpec, GeoTable]:
    """read_tree + compile_tables: what the server runs in the background (a picklable call)."""
    from gslb.geoip import read_tree

    return compile_tables(read_tree(path), specs)
