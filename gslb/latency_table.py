"""Measured round-trip times from client networks to regions  [pure].

Regions (or RUM beacons) report RTTs per client network through the admin API; the
`latency` steering policy sends a client to the region with the lowest fresh RTT.

    table = LatencyTable(max_networks=100_000, max_age=600.0)
    table.ingest(ip_network("1.2.3.0/24"), "us-east", 23.5, now)
    table.lookup(ip_address("1.2.3.77"), now)      # {"us-east": 23.5}

Networks are normalised to /24 (IPv4) and /48 (IPv6) (`network_of`); a longer prefix is
folded into its /24 or /48, a shorter one is refused (it would claim RTTs for networks that
never reported). Entries older than `max_age` are not returned and are dropped by `expire`.
`export_rows(now)` / `merge_rows(rows, now)` carry the table to another GSLB server (a server that
starts pulls its peers' tables once: gslb/peers/sync.py), a row per network, each measurement
with its age; both sides work through the rows in chunks, yielding to the event loop between.
Memory is bounded: at most `max_networks` networks (the least recently *reported* is
evicted first) and at most `max_regions` regions per network. `generation` counts changes.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Container, Iterator
from typing import Any, TypeGuard

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

V4_PREFIX = 24
V6_PREFIX = 48


def network_of(address: IPAddress) -> IPNetwork:
    """The /24 (IPv4, including v4-mapped IPv6) or /48 (IPv6) holding `address`."""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = V4_PREFIX if address.version == 4 else V6_PREFIX
    return ipaddress.ip_network((address, prefix), strict=False)


def normalise(network: IPNetwork) -> IPNetwork:
    """`network` as the /24 or /48 table key; ValueError for a network shorter than that."""
    if network.version == 6 and network.network_address.ipv4_mapped is not None \
            and network.prefixlen >= 96:
        network = ipaddress.ip_network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96))
    prefix = V4_PREFIX if network.version == 4 else V6_PREFIX
    if network.prefixlen < prefix:
        raise ValueError(f"network {network} is wider than /{prefix}: report per /{prefix}")
    return network.supernet(new_prefix=prefix) if network.prefixlen > prefix else network


class LatencyTable:
    """RTTs by client network and region, bounded in size and age."""

    def __init__(self, max_networks: int = 100_000, max_age: float = 600.0, max_regions: int = 64) -> None:
        if max_networks < 1 or max_regions < 1 or not max_age > 0:
            raise ValueError("max_networks and max_regions must be >= 1 and max_age > 0")
        self.max_networks = max_networks
        self.max_age = max_age
        self.max_regions = max_regions
        # network -> {region: (rtt_ms, measured_at)}; order = least recently reported first
        self._nets: OrderedDict[IPNetwork, dict[str, tuple[float, float]]] = OrderedDict()
        self.generation = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._nets)

    def __repr__(self) -> str:
        return (f"<LatencyTable {len(self._nets)} networks (max {self.max_networks}), "
                f"max_age {self.max_age:g}s, generation {self.generation}>")

    def ingest(self, network: IPNetwork, region: str, rtt_ms: float, now: float) -> None:
        """Record one measurement (ValueError for a bad network or RTT)."""
        if isinstance(rtt_ms, bool) or not isinstance(rtt_ms, int | float) \
                or not math.isfinite(rtt_ms) or rtt_ms < 0:
            raise ValueError(f"rtt_ms must be a finite number >= 0, got {rtt_ms!r}")
        key = normalise(network)
        regions = self._nets.get(key)
        if regions is None:
            regions = self._nets[key] = {}
            while len(self._nets) > self.max_networks:
                self._nets.popitem(last=False)
                self.evicted += 1
        else:
            self._nets.move_to_end(key)
        regions[region] = (float(rtt_ms), now)
        if len(regions) > self.max_regions:
            oldest = min(regions, key=lambda r: regions[r][1])
            del regions[oldest]
        self.generation += 1

    def ingest_batch(self, payload: Any, now: float, known_regions: Container[str] | None = None) -> int:
        """Validate then ingest `{"measurements": [{"network", "region", "rtt_ms"}, ...]}`.

        All items are checked before any is ingested; a ValueError names the bad item.
        `known_regions`, if given, is the set of known region names. Returns the number ingested.
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("measurements"), list):
            raise ValueError('expected an object {"measurements": [...]}')
        unknown_keys = set(payload) - {"measurements"}
        if unknown_keys:
            raise ValueError(f"unknown key {sorted(unknown_keys)[0]!r}; expected only 'measurements'")
        items = [_parse_item(item, f"measurements[{i}]", known_regions, ("network", "region", "rtt_ms"))[:3]
                 for i, item in enumerate(payload["measurements"])]
        for network, region, rtt in items:
            self.ingest(network, region, rtt, now)
        return len(items)

    def export_rows(self, now: float) -> Iterator[list[Any]]:
        """The fresh measurements, one row per network: `[network, [[region, rtt_ms, age_s], ...]]`, what
        a starting peer pulls (`merge_rows` takes them in). Lazy over a snapshot of the network list, so
        the caller can send them in chunks and let other work run between (the table may change
        meanwhile: a network added since is not in it; one dropped since is still sent)."""
        snapshot = list(self._nets.items())         # taken now, not at the first next()
        max_age = self.max_age

        def rows() -> Iterator[list[Any]]:
            for net, regions in snapshot:
                fresh = [[region, rtt, round(max(0.0, now - at), 3)] for region, (rtt, at) in list(regions.items())
                         if now - at <= max_age]
                if fresh:
                    yield [str(net), fresh]

        return rows()

    def merge_rows(self, rows: Any, now: float, known_regions: Container[str] | None = None, *,
                   offset: int = 0) -> int:
        """Take in rows of another server's `export_rows`: each measurement dated `now - age_s`, kept
        only when fresh and newer than the one held (so edges' pushes that arrived meanwhile win).
        The rows are validated together first (ValueError naming the bad one, counted from `offset`),
        then taken; measurements for regions not in `known_regions` are skipped. Returns how many
        were taken. At most `max_regions` measurements per row are looked at."""
        if not isinstance(rows, list):
            raise ValueError("networks: expected a list of [network, [[region, rtt_ms, age_s], ...]]")
        items: list[tuple[IPNetwork, str, float, float]] = []
        for i, row in enumerate(rows, offset):
            where = f"networks[{i}]"
            if not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str) \
                    or not isinstance(row[1], list):
                raise ValueError(f"{where}: expected [network, [[region, rtt_ms, age_s], ...]]")
            try:
                network = normalise(ipaddress.ip_network(row[0], strict=False))
            except ValueError as exc:
                raise ValueError(f"{where}[0]: {exc}") from None
            for j, m in enumerate(row[1][: self.max_regions]):
                if not isinstance(m, list) or len(m) != 3 or not isinstance(m[0], str) or not m[0] \
                        or not _non_negative(m[1]) or not _non_negative(m[2]):
                    raise ValueError(f"{where}[1][{j}]: expected [region, rtt_ms >= 0, age_s >= 0], got {m!r:.80}")
                items.append((network, m[0], float(m[1]), float(m[2])))
        taken = 0
        for network, region, rtt, age in items:
            at = now - age
            if (known_regions is not None and region not in known_regions) or age > self.max_age:
                continue
            held = self._nets.get(network, {}).get(region)
            if held is not None and held[1] >= at:
                continue
            self.ingest(network, region, rtt, at)
            taken += 1
        return taken

    def lookup(self, address: IPAddress, now: float, max_age: float | None = None) -> dict[str, float]:
        """Fresh RTTs (ms) by region for the network holding `address`."""
        return self.lookup_detail(address, now, max_age)[0]

    def lookup_detail(self, address: IPAddress, now: float,
                      max_age: float | None = None) -> tuple[dict[str, float], float]:
        """(fresh RTTs by region, the time the first of them goes stale; inf if none)."""
        regions = self._nets.get(network_of(address))
        if not regions:
            return {}, math.inf
        age = self.max_age if max_age is None else min(max_age, self.max_age)
        fresh: dict[str, float] = {}
        until = math.inf
        for region, (rtt, at) in regions.items():
            if now - at <= age:
                fresh[region] = rtt
                until = min(until, at + age)
        return fresh, until

    def expire(self, now: float) -> int:
        """Drop measurements older than max_age; returns how many were dropped."""
        dropped = 0
        for key in list(self._nets):
            regions = self._nets[key]
            for region in [r for r, (_, at) in regions.items() if now - at > self.max_age]:
                del regions[region]
                dropped += 1
            if not regions:
                del self._nets[key]
        if dropped:
            self.generation += 1
        return dropped


def _parse_item(item: Any, where: str, known_regions: Container[str] | None,
                keys: tuple[str, ...]) -> tuple[IPNetwork, str, float, float]:
    """(network, region, rtt_ms, age_s or 0) of one measurement; ValueError naming `where`."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {item!r}")
    extra = set(item) - set(keys)
    if extra:
        raise ValueError(f"{where}: unknown key {sorted(extra)[0]!r}")
    net, region, rtt = item.get("network"), item.get("region"), item.get("rtt_ms")
    if not isinstance(net, str):
        raise ValueError(f"{where}.network: expected a CIDR string, got {net!r}")
    try:
        network = normalise(ipaddress.ip_network(net, strict=False))
    except ValueError as exc:
        raise ValueError(f"{where}.network: {exc}") from None
    if not isinstance(region, str) or not region:
        raise ValueError(f"{where}.region: expected a region name, got {region!r}")
    if known_regions is not None and region not in known_regions:
        raise ValueError(f"{where}.region: unknown region {region!r}")
    if not _non_negative(rtt):
        raise ValueError(f"{where}.rtt_ms: expected a finite number >= 0, got {rtt!r}")
    age = item.get("age_s", 0.0)
    if "age_s" in keys and not _non_negative(age):
        raise ValueError(f"{where}.age_s: expected a finite number >= 0, got {age!r}")
    return network, region, float(rtt), float(age)


def _non_negative(value: Any) -> TypeGuard[float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value >= 0
