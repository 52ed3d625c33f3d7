"""Authoritative zone data and its config loader  [pure].

A `Zone` is built once per config and never changes: an origin, the SOA and NS
of the apex, and the static records by owner name. Service names (answered by
steering) are not in a zone; the responder asks the steering about names the
zone does not hold.

    zones:
      example.test:
        ttl: 3600                    # default TTL of the static records
        soa: {mname: ns1.example.test, rname: hostmaster.example.test, serial: 2026112401,
              refresh: 3600, retry: 600, expire: 1209600, minimum: 60}
        ns: [ns1.example.test, ns2.example.test]
        records:                     # owner -> type -> value(s); "@" is the apex
          ns1:   {A: [127.0.0.1], AAAA: ["::1"]}
          app:   {CNAME: www}        # relative names are in the zone, "x." is absolute
          sub:   {NS: [ns.sub.example.test.]}     # delegation (glue below it)
          ns.sub: {A: [127.0.0.53]}
          "*.wild": {A: [127.0.0.9]}              # wildcard
          ttl-override: {ttl: 60, A: [127.0.0.7]}

Names in `ns:` and `soa:` are absolute host names (the trailing dot is
optional); in `records:` they follow zone-file rules. Every problem is a
ConfigError naming the key path (`zones.example.test.records.ns1.A[0]`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gslb.common.configload import ConfigError, Section
from gslb.dns.records import (
    AAAA,
    CNAME,
    CONFIG_TYPES,
    NS,
    SOA,
    TYPE_CODES,
    A,
    RdataError,
    RRset,
    absolute_name,
    check_name,
    in_zone,
    parse_rdata,
    soa_rdata,
    type_name,
)

MAX_TTL = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int = 3600
    retry: int = 600
    expire: int = 1209600
    minimum: int = 60      # negative-caching TTL (RFC 2308)


@dataclass(frozen=True, slots=True, eq=False)
class Zone:
    """One zone: `nodes[name][rtype]` holds the static RRsets, including SOA and NS at the apex."""

    origin: str
    ttl: int
    soa: Soa
    ns: tuple[str, ...]
    nodes: Mapping[str, Mapping[int, RRset]]
    cuts: frozenset[str]       # delegation points (non-apex names with NS)
    names: frozenset[str]      # every name that exists: nodes and empty non-terminals

    def __repr__(self) -> str:
        return f"<Zone {self.origin} [{len(self.nodes)} names, {len(self.cuts)} delegations]>"

    @property
    def negative_ttl(self) -> int:
        """TTL of the SOA in negative answers: min(SOA TTL, SOA minimum) (RFC 2308 §3)."""
        return min(self.ttl, self.soa.minimum)

    @property
    def soa_rrset(self) -> RRset:
        return self.nodes[self.origin][SOA]

    def find_cut(self, name: str) -> str | None:
        """The highest delegation point at or above `name` (which is in this zone), if any."""
        if not self.cuts or name == self.origin:
            return None
        relative = name[: -len(self.origin) - 1] if self.origin else name
        labels = relative.split(".")
        suffix = "." + self.origin if self.origin else ""
        for i in range(len(labels) - 1, -1, -1):
            candidate = ".".join(labels[i:]) + suffix
            if candidate in self.cuts:
                return candidate
        return None

    def wildcard(self, name: str) -> str | None:
        """The wildcard node that synthesizes `name` (which does not exist), if any (RFC 4592)."""
        encloser = name
        while encloser != self.origin:
            encloser = encloser.partition(".")[2]
            if encloser in self.names:
                break
        source = "*." + encloser if encloser else "*"
        return source if source in self.nodes else None

    def addresses(self, name: str) -> list[tuple[str, RRset]]:
        """A and AAAA RRsets at `name` (glue / additional data), in that order."""
        node = self.nodes.get(name)
        if not node:
            return []
        return [(name, node[t]) for t in (A, AAAA) if t in node]


# -- loading ------------------------------------------------------------------------

def _host_name(sect: Section, key: str | int, text: object) -> str:
    """An absolute host name from `ns:` / `soa:` (trailing dot optional)."""
    if not isinstance(text, str) or not text.strip():
        raise sect.error(key, f"expected a host name, got {text!r}")
    name = text.strip().rstrip(".").lower()
    reason = check_name(name)
    if reason:
        raise sect.error(key, reason)
    if "." not in name:
        raise sect.error(key, f"write the full host name (e.g. {name}.example.com), got {text!r}")
    return name


def _load_soa(zs: Section, origin: str, ns: tuple[str, ...]) -> Soa:
    soa = zs.section("soa")
    mname = _host_name(soa, "mname", soa.take("mname", str, ns[0] if ns else origin))
    raw_rname = soa.take("rname", str, f"hostmaster.{origin}")
    if "@" in raw_rname:
        local, _, domain = raw_rname.partition("@")
        if "." in local or not local:
            raise soa.error("rname", f"mailbox local part must be one label, got {raw_rname!r}")
        raw_rname = f"{local}.{domain}"
    rname = _host_name(soa, "rname", raw_rname)
    result = Soa(
        mname=mname,
        rname=rname,
        serial=soa.take_number("serial", 1, minimum=0, maximum=2**32 - 1, integer=True),
        refresh=soa.take_number("refresh", 3600, minimum=0, maximum=MAX_TTL, integer=True),
        retry=soa.take_number("retry", 600, minimum=0, maximum=MAX_TTL, integer=True),
        expire=soa.take_number("expire", 1209600, minimum=0, maximum=MAX_TTL, integer=True),
        minimum=soa.take_number("minimum", 60, minimum=0, maximum=MAX_TTL, integer=True),
    )
    soa.done()
    return result


def _values(node: Section, key: str) -> list[str]:
    raw = node.take(key, (list, str))
    values = [raw] if isinstance(raw, str) else raw
    if not values:
        raise node.error(key, "needs at least one value")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise node.error(f"{key}[{i}]", f"expected a string, got {value!r}")
    return values


def _load_node(node: Section, owner: str, origin: str, default_ttl: int) -> dict[int, RRset]:
    ttl = node.take_number("ttl", default_ttl, minimum=0, maximum=MAX_TTL, integer=True)
    rrsets: dict[int, RRset] = {}
    for key in list(node.data):
        if key == "ttl":
            continue
        upper = key.upper()
        if upper == "SOA":
            raise node.error(key, "the SOA is set by the zone's `soa:` key")
        if upper == "NS" and owner == origin:
            raise node.error(key, "the apex NS records are set by the zone's `ns:` key")
        if upper not in CONFIG_TYPES:
            hint = difflib.get_close_matches(upper, CONFIG_TYPES, n=1)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise node.error(key, f"unknown record type{suffix}; supported: {', '.join(CONFIG_TYPES)}")
        rtype = TYPE_CODES[upper]
        if rtype in rrsets:
            raise node.error(key, f"{upper} given twice")
        values = _values(node, key)
        rdatas = []
        for i, value in enumerate(values):
            try:
                rdata = parse_rdata(rtype, value, origin)
            except RdataError as exc:
                raise node.error(f"{key}[{i}]" if len(values) > 1 or isinstance(node.data[key], list)
                                 else key, str(exc)) from None
            if rdata in rdatas:
                raise node.error(f"{key}[{i}]", f"duplicate value {value!r}")
            rdatas.append(rdata)
        if rtype == CNAME and len(rdatas) != 1:
            raise node.error(key, "a name has at most one CNAME")
        rrsets[rtype] = RRset(rtype, ttl, tuple(rdatas))
    if not rrsets:
        raise node.error(None, "no records")
    if CNAME in rrsets and len(rrsets) > 1:
        others = ", ".join(type_name(t) for t in rrsets if t != CNAME)
        raise node.error(None, f"CNAME cannot be beside other data ({others}) (RFC 1034 §3.6.2)")
    if CNAME in rrsets and owner == origin:
        raise node.error(None, "CNAME at the zone apex is not allowed (the apex has SOA and NS)")
    return rrsets


def _ancestors(name: str, origin: str) -> list[str]:
    out = []
    while name != origin:
        name = name.partition(".")[2]
        out.append(name)
    return out


def load_zone(origin_key: str, zs: Section) -> Zone:
    origin = origin_key.strip().rstrip(".").lower()
    reason = check_name(origin)
    if reason or not origin:
        raise ConfigError(zs.file, zs.path, reason or "the root zone is not supported")
    ttl = zs.take_number("ttl", 3600, minimum=0, maximum=MAX_TTL, integer=True)
    ns_list = zs.take_list("ns")
    if not ns_list:
        raise zs.error("ns", "needs at least one name server")
    ns_sect = Section({}, file=zs.file, path=zs.key_path("ns"))
    ns = tuple(_host_name(ns_sect, i, text) for i, text in enumerate(ns_list))
    if len(set(ns)) != len(ns):
        raise zs.error("ns", "duplicate name server")
    soa = _load_soa(zs, origin, ns)

    nodes: dict[str, dict[int, RRset]] = {}
    owners_sect = zs.section("records")
    where: dict[str, str] = {}
    for owner_key in list(owners_sect.data):
        try:
            owner = absolute_name(owner_key, origin, wildcard=True)
        except RdataError as exc:
            raise owners_sect.error(owner_key, str(exc)) from None
        if not in_zone(owner, origin):
            raise owners_sect.error(owner_key, f"{owner} is not in the zone {origin}")
        if owner in nodes:
            raise owners_sect.error(owner_key, f"same name as {where[owner]!r} ({owner})")
        where[owner] = owner_key
        nodes[owner] = _load_node(owners_sect.section(owner_key), owner, origin, ttl)

    apex = nodes.setdefault(origin, {})
    apex[SOA] = RRset(SOA, ttl, (soa_rdata(soa.mname, soa.rname, soa.serial, soa.refresh, soa.retry,
                                            soa.expire, soa.minimum),))
    apex[NS] = RRset(NS, ttl, tuple((name,) for name in ns))

    cuts = frozenset(name for name, node in nodes.items() if NS in node and name != origin)
    zone_for_checks = Zone(origin, ttl, soa, ns, nodes, cuts, frozenset())
    for owner, node in nodes.items():
        key = where.get(owner, "@")
        cut = zone_for_checks.find_cut(owner)
        if cut == owner and set(node) != {NS}:
            others = ", ".join(type_name(t) for t in node if t != NS)
            raise owners_sect.error(key, f"a delegation point holds only NS records, not {others}")
        if cut is not None and cut != owner:
            if owner.startswith("*."):
                raise owners_sect.error(key, f"wildcard below the delegation at {cut}")
            if set(node) - {A, AAAA}:
                raise owners_sect.error(key, f"below the delegation at {cut}: only A/AAAA glue allowed")

    for owner, node in nodes.items():
        if NS not in node:
            continue
        for target in node[NS].names():
            if not in_zone(target, origin):
                continue
            target_node = nodes.get(target, {})
            if A not in target_node and AAAA not in target_node:
                path = zs.key_path("ns") if owner == origin else owners_sect.key_path(where[owner])
                raise ConfigError(zs.file, path, f"name server {target} is in the zone but has no "
                                  f"A/AAAA record (add it under records)")

    names: set[str] = set()
    for owner in nodes:
        names.add(owner)
        names.update(_ancestors(owner, origin))
    zs.done()
    return Zone(
        origin=origin, ttl=ttl, soa=soa, ns=ns,
        nodes=MappingProxyType({k: MappingProxyType(v) for k, v in nodes.items()}),
        cuts=cuts, names=frozenset(names),
    )


def load_zones(section: Section) -> tuple[Zone, ...]:
    """All zones of the `zones:` section (may be empty), longest origin first."""
    zones: dict[str, Zone] = {}
    for key in list(section.data):
        zone = load_zone(key, section.section(key))
        if zone.origin in zones:
            raise section.error(key, f"zone {zone.origin} given twice")
        zones[zone.origin] = zone
    section.done()
    return tuple(sorted(zones.values(), key=lambda z: (-len(z.origin), z.origin)))
