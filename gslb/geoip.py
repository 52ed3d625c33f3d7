"""Where is a client? The GeoIP seam  [edge].

    GeoLocator (protocol)   locate(address) -> Location | None; close() (a no-op where nothing is held)
        MaxMindLocator      a GeoIP2/GeoLite2 City or DB-IP City (Lite) .mmdb, via maxminddb;
                            also locate_exact(address, prefix_len): None unless the record is
                            exactly that size (ECS scope widening; no Location built otherwise)
        FakeLocator         a dict of CIDR -> Place, for tests

    read_tree(path) -> TreeRecords   every record network of an .mmdb and its place, read from the
                            search tree with numpy (for the compiled steering tables, gslb/tables.py)

    GeoIPError              the database cannot be opened or read (the only exception raised here)

A `Location` carries the coordinates, the country and continent codes, the city name and
the *network of the database record* that matched (its prefix length is where ECS scope
computation starts, and the network is what steering caches decisions on). The locator builds
it from integers (version, value, prefix_len) and the ipaddress network only on first use;
Locations are memoised per record network, in a bounded memo (MEMO_SIZE entries; place strings
shared), since ECS lets clients choose the addresses looked up.

IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are located as the IPv4 address.

The bundled database (geo_data/, built by geo_data/build.py) is `DEFAULT_DATABASE`; its
licence requires `ATTRIBUTION` to be shown (the server prints it in --version and status).
"""

from __future__ import annotations

import importlib.resources
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The bundled database is package data of `geo_data` (an installed wheel carries it too).
DEFAULT_DATABASE = Path(str(importlib.resources.files("geo_data") / "dbip-city-lite-compact.mmdb"))
ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), licensed under CC BY 4.0"


class GeoIPError(Exception):
    """The GeoIP database cannot be used."""


@dataclass(frozen=True, slots=True)
class Place:
    """What a database record says about a network (the content of a City record)."""

    lat: float | None
    lon: float | None
    country: str = ""       # ISO 3166-1 alpha-2, upper case; "" if unknown
    continent: str = ""     # AF AN AS EU NA OC SA; "" if unknown
    city: str = ""


class Location:
    """A located client: the record's place and the record's network (immutable).

    Built from a network (`Location(lat, lon, country, continent, city, network)`) or, by the
    locator's hot path, from integers (`network=None, version=4, value=..., prefix_len=24`):
    then the ipaddress network is only built when `network` is first read.
    """

    __slots__ = ("_network", "city", "continent", "country", "lat", "lon", "prefix_len", "value", "version")
    lat: float | None
    lon: float | None
    country: str
    continent: str
    city: str
    version: int            # of the record network
    value: int              # its network address as an integer
    prefix_len: int         # its prefix length
    _network: IPNetwork | None

    def __init__(self, lat: float | None, lon: float | None, country: str, continent: str, city: str,
                 network: IPNetwork | None = None, *, version: int = 4, value: int = 0,
                 prefix_len: int = 0) -> None:
        init = object.__setattr__
        if network is not None:
            version, value, prefix_len = network.version, int(network.network_address), network.prefixlen
        elif not 0 <= prefix_len <= (32 if version == 4 else 128) or version not in (4, 6):
            raise ValueError(f"bad record network: IPv{version} /{prefix_len}")
        init(self, "lat", lat)
        init(self, "lon", lon)
        init(self, "country", country)
        init(self, "continent", continent)
        init(self, "city", city)
        init(self, "version", version)
        init(self, "value", value)
        init(self, "prefix_len", prefix_len)
        init(self, "_network", network)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Location is immutable (tried to set {name})")

    @property
    def network(self) -> IPNetwork:
        """The database record that matched (prefix_len = network.prefixlen)."""
        net = self._network
        if net is None:
            net = network_from_int(self.version, self.value, self.prefix_len)
            object.__setattr__(self, "_network", net)
        return net

    def _fields(self) -> tuple[object, ...]:
        return (self.lat, self.lon, self.country, self.continent, self.city, self.version, self.value,
                self.prefix_len)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Location(lat={self.lat!r}, lon={self.lon!r}, country={self.country!r}, "
                f"continent={self.continent!r}, city={self.city!r}, network={self.network!r})")

    @property
    def has_coordinates(self) -> bool:
        return self.lat is not None and self.lon is not None

    def network_text(self) -> str:
        """"1.2.0.0/16" (IPv4 formatted from the integers: no ipaddress object needed)."""
        if self.version == 4:
            v = self.value
            return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}/{self.prefix_len}"
        return str(self.network)

    def describe(self) -> str:
        """"KR Seoul (1.2.0.0/16)"-style, for `gslb explain`."""
        where = " ".join(p for p in (self.country or "??", self.city) if p)
        if self.has_coordinates:
            where += f" [{self.lat:.1f},{self.lon:.1f}]"
        return f"{where} ({self.network_text()})"


class GeoLocator(Protocol):
    def locate(self, address: IPAddress) -> Location | None:
        """The record for `address`, or None when the database has none."""
        ...

    def locate_exact(self, address: IPAddress, prefix_len: int | None) -> Location | None:
        """`locate(address)`, but None unless its record network is exactly /prefix_len (None: any);
        ECS scope widening asks this of sibling networks, so a locator may skip building them."""
        ...

    def close(self) -> None:
        """Let go of the database (GslbServer calls it on the locator a reload replaces); a locator
        holding nothing does nothing."""
        ...


@runtime_checkable
class DatabaseFile(Protocol):
    """A locator that reads a database file (MaxMindLocator): the steering's tables are compiled
    from `path` and used only while the file is still `source` (path, size, mtime when opened)."""

    path: Path
    source: tuple[str, int, int]


def exactly(location: Location | None, prefix_len: int | None) -> Location | None:
    """`location` if its record network is /prefix_len (or prefix_len is None), else None: a
    `locate_exact` for locators that have nothing cheaper."""
    if location is None or (prefix_len is not None and location.prefix_len != prefix_len):
        return None
    return location


def unmap(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d -> a.b.c.d; everything else unchanged."""
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def network_from_int(version: int, value: int, prefix: int) -> IPNetwork:
    """The /prefix network holding the address with integer value `value`, built from integers
    (passing an address object to ipaddress makes it format and re-parse the address as text)."""
    bits = 32 if version == 4 else 128
    masked = value >> (bits - prefix) << (bits - prefix)
    if version == 4:
        return ipaddress.IPv4Network((masked, prefix))
    return ipaddress.IPv6Network((masked, prefix))


def _place_fast(record: dict[str, Any]) -> tuple[float, float, str, str, str] | None:
    """place_from_record's fields for the usual, complete shape (None: take the tolerant path)."""
    try:
        loc = record["location"]
        lat, lon = loc["latitude"], loc["longitude"]
        country = record["country"]["iso_code"]
        continent = record["continent"]["code"]
        city = record.get("city")
    except (KeyError, TypeError):
        return None
    if type(lat) is not float or type(lon) is not float or type(country) is not str or not country \
            or type(continent) is not str:
        return None
    city_name: Any = ""
    if city is not None:
        names = city.get("names") if type(city) is dict else None
        city_name = names.get("en") if type(names) is dict else None
        if type(city_name) is not str:
            return None
    return lat, lon, country.upper(), continent.upper(), city_name


def place_from_record(record: Any) -> Place | None:
    """A Place from a GeoIP2-City-shaped record (tolerant of missing or odd fields)."""
    if not isinstance(record, dict):
        return None
    fast = _place_fast(record)
    if fast is not None:
        return Place(*fast)
    return _place_tolerant(record)


def _place_tolerant(record: dict[str, Any]) -> Place | None:
    loc = record.get("location")
    loc = loc if isinstance(loc, dict) else {}
    country = record.get("country")
    country = country if isinstance(country, dict) else {}
    if not country:     # GeoIP2 falls back to the registered country
        reg = record.get("registered_country")
        country = reg if isinstance(reg, dict) else {}
    continent = record.get("continent")
    continent = continent if isinstance(continent, dict) else {}
    city = record.get("city")
    names = city.get("names") if isinstance(city, dict) else None
    city_name = _str(names.get("en")) if isinstance(names, dict) else ""
    lat, lon = _float(loc.get("latitude")), _float(loc.get("longitude"))
    if lat is None or lon is None:
        lat = lon = None
    place = Place(lat, lon, _str(country.get("iso_code")).upper(), _str(continent.get("code")).upper(),
                  city_name)
    if place == Place(None, None):
        return None
    return place


MEMO_SIZE = 16_384          # Locations kept, one per record network (~250 bytes each)
PLACES_MEMO = 10_000        # distinct place fields shared by them


class MaxMindLocator:
    """Reads a GeoIP2/GeoLite2 City or DB-IP City (Lite) database with maxminddb."""

    def __init__(self, path: str | Path = DEFAULT_DATABASE, *, mode: int | None = None,
                 memo_size: int = MEMO_SIZE) -> None:
        import maxminddb

        from gslb.common.memo import Memo

        self.path = Path(path)
        try:
            self.source = database_source(self.path)    # what a compiled table must have been built from
            self._reader = maxminddb.open_database(
                str(self.path), maxminddb.MODE_AUTO if mode is None else mode)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
            raise GeoIPError(f"cannot open GeoIP database {self.path}: {reason}") from None
        meta = self._reader.metadata()
        self.database_type: str = meta.database_type
        self.build_epoch: int = meta.build_epoch
        self.ip_version: int = meta.ip_version
        self._invalid = maxminddb.InvalidDatabaseError
        # Both memos are bounded (ECS lets clients pick the address looked up): Locations per
        # record network, and the place fields they share (a city's strings are kept once, not
        # once per record network).
        self._memo: Memo[tuple[int, int, int], Location] = Memo(memo_size)
        self._places: Memo[tuple[object, ...], tuple[float | None, float | None, str, str, str]] = \
            Memo(PLACES_MEMO)

    def locate(self, address: IPAddress) -> Location | None:
        return self.locate_exact(address, None)

    def locate_exact(self, address: IPAddress, prefix_len: int | None) -> Location | None:
        """`locate(address)`, but None when its record network is not exactly /prefix_len (then no
        Location is built: ECS scope widening asks this of sibling networks). None: any size."""
        version = address.version
        if version == 6:
            address = unmap(address)
            version = address.version
            if version == 6 and self.ip_version == 4:
                return None
        try:
            record, found_len = self._reader.get_with_prefix_len(address)
        except self._invalid as exc:
            raise GeoIPError(f"cannot read GeoIP database {self.path}: {exc}") from None
        if record is None or (prefix_len is not None and found_len != prefix_len):
            return None
        # Location objects are memoised per record network (a hit skips building the
        # network and the dataclass: most of the cost of a lookup).
        shift = (32 if version == 4 else 128) - found_len
        top = int(address) >> shift
        key = (version, top, found_len)
        found = self._memo.get(key)
        if found is not None:
            return found
        fields: tuple[float | None, float | None, str, str, str] | None = \
            _place_fast(record) if type(record) is dict else None
        if fields is None:
            place = place_from_record(record)
            if place is None:
                return None
            fields = (place.lat, place.lon, place.country, place.continent, place.city)
        shared = self._places.get(fields)
        if shared is None:
            self._places.put(fields, fields)
        else:
            fields = shared
        found = Location(*fields, version=version, value=top << shift, prefix_len=found_len)
        self._memo.put(key, found)
        return found

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> MaxMindLocator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MaxMindLocator {self.path.name} [{self.database_type}, IPv{self.ip_version}]>"


class FakeLocator:
    """A locator over a dict of CIDR -> Place (longest prefix wins), for tests."""

    def __init__(self, places: Mapping[str, Place] | None = None) -> None:
        self._nets: list[tuple[IPNetwork, Place]] = sorted(
            ((ipaddress.ip_network(cidr), place) for cidr, place in (places or {}).items()),
            key=lambda item: -item[0].prefixlen)
        self.calls = 0

    def locate(self, address: IPAddress) -> Location | None:
        self.calls += 1
        address = unmap(address)
        for net, place in self._nets:
            if address.version == net.version and address in net:
                return Location(place.lat, place.lon, place.country, place.continent, place.city, net)
        return None

    def locate_exact(self, address: IPAddress, prefix_len: int | None) -> Location | None:
        return exactly(self.locate(address), prefix_len)

    def close(self) -> None:
        """Nothing to let go of."""

    def __repr__(self) -> str:
        return f"<FakeLocator {len(self._nets)} networks>"


@dataclass(frozen=True, slots=True)
class TreeRecords:
    """Every record network of a database, read from its search tree (`read_tree`).

    IPv4 and IPv6 each as parallel sequences sorted by network start: the start (an int), the prefix
    length and an index into `places` (NO_PLACE: the record has no usable place, like a gap for
    `locate`; ALIAS, IPv6 only: the subtree that IPv4 lives in, reached from ::/96 and the aliases
    a database builder adds, e.g. ::ffff:0:0/96 and 2002::/16). Gaps (no record) are not listed.
    `source` identifies the file (path, size, mtime) so that a table is only used with its database.
    """

    v4_start: Any           # numpy arrays: uint32 starts (numpy is imported only to read and compile)
    v4_prefix: Any
    v4_place: Any
    v6_start: Any           # numpy uint64 arrays: the high and low 64 bits
    v6_start_low: Any
    v6_prefix: Any
    v6_place: Any
    places: tuple[Place, ...]
    source: tuple[str, int, int]


NO_PLACE = -1
ALIAS = -2


def database_source(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): what a compiled table remembers of its database."""
    path = Path(path).resolve()
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def read_tree(path: str | Path) -> TreeRecords:
    """Walk the search tree of an .mmdb file: every record network and its place (no per-address lookups).

    The IPv4 subtree (3 M networks in the bundled database) is walked a level at a time with numpy;
    the IPv6 part (a few hundred thousand nodes) node by node. Each distinct record is decoded once,
    through the reader, at the first network that points at it. Raises GeoIPError.
    """
    import maxminddb
    import numpy as np

    path = Path(path)
    try:
        source = database_source(path)
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        data = path.read_bytes()
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
        raise GeoIPError(f"cannot open GeoIP database {path}: {reason}") from None
    try:
        meta = reader.metadata()
        n, size, ip_version = int(meta.node_count), int(meta.record_size), int(meta.ip_version)
        width = size // 4                       # bytes per node (two records)
        if size not in (24, 28, 32) or len(data) < n * width:
            raise GeoIPError(f"cannot read GeoIP database {path}: record size {size}, {n} nodes")
        raw = np.frombuffer(data, dtype=np.uint8, count=n * width).reshape(n, width)

        def col(k: int) -> Any:
            return raw[:, k].astype(np.uint32)

        if size == 24:
            left = (col(0) << 16) | (col(1) << 8) | col(2)
            right = (col(3) << 16) | (col(4) << 8) | col(5)
        elif size == 28:
            left = ((col(3) >> 4) << 24) | (col(0) << 16) | (col(1) << 8) | col(2)
            right = ((col(3) & 0x0F) << 24) | (col(4) << 16) | (col(5) << 8) | col(6)
        else:
            left = (col(0) << 24) | (col(1) << 16) | (col(2) << 8) | col(3)
            right = (col(4) << 24) | (col(5) << 16) | (col(6) << 8) | col(7)

        v4_root = 0
        if ip_version == 6:
            for _ in range(96):
                if v4_root >= n:
                    break
                v4_root = int(left[v4_root])
        # IPv4: level by level
        starts, prefixes, pointers = [], [], []
        if v4_root > n:
            starts.append(np.zeros(1, np.uint32))
            prefixes.append(np.zeros(1, np.uint8))
            pointers.append(np.array([v4_root], np.uint32))
        nodes = np.array([v4_root] if v4_root < n else [], np.uint32)
        values = np.zeros(len(nodes), np.uint32)
        one = np.uint32(1)
        for depth in range(1, 33):
            if not len(nodes):
                break
            child = np.concatenate([left[nodes], right[nodes]])
            vals = np.concatenate([values << one, (values << one) | one])
            found = child > n
            starts.append(vals[found] << np.uint32(32 - depth))
            prefixes.append(np.full(int(found.sum()), depth, np.uint8))
            pointers.append(child[found])
            inner = child < n
            nodes, values = child[inner], vals[inner]
        if len(nodes):
            raise GeoIPError(f"cannot read GeoIP database {path}: the IPv4 tree is deeper than 32 bits")
        v4_start = np.concatenate(starts) if starts else np.zeros(0, np.uint32)
        order = np.argsort(v4_start, kind="stable")
        v4_start = v4_start[order]
        v4_prefix = (np.concatenate(prefixes) if prefixes else np.zeros(0, np.uint8))[order]
        v4_ptr = (np.concatenate(pointers) if pointers else np.zeros(0, np.uint32))[order]
        del starts, prefixes, pointers, order
        # IPv6: node by node (depth first, low half first: sorted by start), the IPv4 subtree as ALIAS
        v6: list[tuple[int, int, int]] = []         # (start, prefix, pointer or ALIAS)
        if ip_version == 6:
            left_l, right_l = left, right
            stack: list[tuple[int, int, int]] = [(0, 0, 0)]     # (node, value, depth)
            while stack:
                node, value, depth = stack.pop()
                if node == v4_root and depth:
                    v6.append((value << (128 - depth), depth, ALIAS))
                    continue
                if node >= n:
                    if node > n:
                        v6.append((value << (128 - depth) if depth else 0, depth, node))
                    continue
                if depth == 128:
                    raise GeoIPError(f"cannot read GeoIP database {path}: the IPv6 tree is deeper than 128 bits")
                stack.append((int(right_l[node]), (value << 1) | 1, depth + 1))
                stack.append((int(left_l[node]), value << 1, depth + 1))
        del left, right
        # places: each distinct record decoded once, at a network that points at it
        example: dict[int, IPAddress] = {}
        unique, first = np.unique(v4_ptr, return_index=True)
        for ptr, i in zip(unique.tolist(), first.tolist(), strict=True):
            example[ptr] = ipaddress.IPv4Address(int(v4_start[i]))
        for start, _, ptr in v6:
            if ptr != ALIAS and ptr not in example:
                example[ptr] = ipaddress.IPv6Address(start)
        place_of: dict[int, int] = {}
        places: list[Place] = []
        index: dict[Place, int] = {}
        for ptr, address in example.items():
            place = place_from_record(reader.get(address))
            if place is None:
                place_of[ptr] = NO_PLACE
                continue
            found_index = index.get(place)
            if found_index is None:
                found_index = index[place] = len(places)
                places.append(place)
            place_of[ptr] = found_index
        lookup = np.array([place_of[p] for p in unique.tolist()], np.int64)
        v4_place = lookup[np.searchsorted(unique, v4_ptr)] if len(v4_ptr) else np.zeros(0, np.int64)
        v6_place = np.array([ALIAS if p == ALIAS else place_of[p] for _, _, p in v6], np.int64)
        return TreeRecords(
            v4_start, v4_prefix, v4_place.astype(np.int32),
            np.array([s >> 64 for s, _, _ in v6], np.uint64),
            np.array([s & 0xFFFFFFFFFFFFFFFF for s, _, _ in v6], np.uint64),
            np.array([p for _, p, _ in v6], np.uint8), v6_place.astype(np.int32), tuple(places), source)
    except maxminddb.InvalidDatabaseError as exc:
        raise GeoIPError(f"cannot read GeoIP database {path}: {exc}") from None
    finally:
        reader.close()
