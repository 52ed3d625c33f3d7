"""The `services` section of the gslb config -> ServiceConfig  [pure].

    services:
      www.example.test:
        policy: geo                 # geo | geo_map | latency | failover | weighted
        regions: [us-east, eu-central]      # default: all regions, in config order
        count: 1                    # answer with the N best eligible regions
        ttl: 30
        degraded_ttl: 10            # while a chosen region is degraded, or a drained one is skipped
        all_down: {action: fail_open}       # fail_open | address (addresses) | cname (cname) | nodata (negative_ttl)
        default_order: [us-east, eu-central]  # clients without a GeoIP location
        map: {cidr: {...}, country: {...}, continent: {...}, default: [...]}   # geo_map only
        weights: {us-east: 3, eu-central: 1}                                 # weighted only
        latency_max_age: 300                                                 # latency only

Every problem raises gslb.common.configload.ConfigError naming the key path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gslb.common.configload import Section
from gslb.steering.base import Region

POLICIES = ("geo", "geo_map", "latency", "failover", "weighted")
ALL_DOWN_ACTIONS = ("fail_open", "address", "cname", "nodata")
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
MAX_TTL = 2**31 - 1

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AllDownRule:
    """What to answer when no region of the service is eligible."""

    action: str = "fail_open"
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    cname: str | None = None
    negative_ttl: int = 10


@dataclass(frozen=True, slots=True)
class GeoMap:
    """gdnsd-style ordered region lists: CIDR (longest match) > country > continent > default."""

    cidr: tuple[tuple[IPNetwork, tuple[str, ...]], ...] = ()    # longest prefix first
    country: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    continent: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    policy: str
    regions: tuple[str, ...]
    count: int = 1
    ttl: int = 30
    degraded_ttl: int = 10
    all_down: AllDownRule = AllDownRule()
    default_order: tuple[str, ...] = ()
    geo_map: GeoMap | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    latency_max_age: float | None = None

    def __repr__(self) -> str:
        return f"<Service {self.name} {self.policy} {list(self.regions)} count={self.count} ttl={self.ttl}>"


def _region_list(sect: Section, key: str, value: Any, known: tuple[str, ...], *, allowed: tuple[str, ...] | None
                 = None, empty_ok: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise sect.error(key, f"expected a list of region names, got {value!r}")
    if not value and not empty_ok:
        raise sect.error(key, "must not be empty")
    pool = allowed if allowed is not None else known
    for name in value:
        if name not in pool:
            where = "this service's regions" if allowed is not None else "regions"
            raise sect.error(key, f"unknown region {name!r} (not in {where}: {', '.join(pool)})")
    if len(set(value)) != len(value):
        raise sect.error(key, "lists a region twice")
    return tuple(value)


def _ttl(sect: Section, key: str, default: int) -> int:
    return int(sect.take_number(key, default, minimum=0, maximum=MAX_TTL, integer=True))


def _load_all_down(sect: Section) -> AllDownRule:
    action = sect.take_choice("action", ALL_DOWN_ACTIONS, "fail_open")
    rule = AllDownRule(action)
    if action == "address":
        texts = sect.take_list("addresses")
        v4: list[str] = []
        v6: list[str] = []
        if not texts:
            raise sect.error("addresses", "must list at least one address")
        for i, text in enumerate(texts):
            try:
                addr = ipaddress.ip_address(str(text))
            except ValueError:
                raise sect.error("addresses", f"item {i}: not an IP address: {text!r}") from None
            (v4 if addr.version == 4 else v6).append(str(addr))
        rule = AllDownRule(action, v4=tuple(v4), v6=tuple(v6))
    elif action == "cname":
        target = sect.take("cname", str).strip().lower()
        labels = target.rstrip(".").split(".")
        if not target.rstrip(".") or any(not label or len(label) > 63 for label in labels) or len(target) > 253:
            raise sect.error("cname", f"not a domain name: {target!r}")
        rule = AllDownRule(action, cname=target.rstrip(".") + ".")
    elif action == "nodata":
        rule = AllDownRule(action, negative_ttl=_ttl(sect, "negative_ttl", 10))
    sect.done()
    return rule


def _load_map(sect: Section, allowed: tuple[str, ...]) -> GeoMap:
    cidrs: list[tuple[IPNetwork, tuple[str, ...]]] = []
    cs = sect.section("cidr")
    for text in list(cs.data):
        cs.take(text, list)
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise cs.error(text, f"not a CIDR network: {exc}") from None
        if net.version == 6 and net.network_address.ipv4_mapped is not None:
            raise cs.error(text, "use the IPv4 form for IPv4-mapped networks")
        cidrs.append((net, _region_list(cs, text, cs.data[text], allowed, allowed=allowed)))
    cs.done()
    cidrs.sort(key=lambda item: (-item[0].prefixlen, item[0].version, int(item[0].network_address)))
    countries: dict[str, tuple[str, ...]] = {}
    co = sect.section("country")
    for code in list(co.data):
        co.take(code, list)
        if len(code) != 2 or not code.isalpha():
            raise co.error(code, "not an ISO 3166-1 alpha-2 country code")
        countries[code.upper()] = _region_list(co, code, co.data[code], allowed, allowed=allowed)
    co.done()
    continents: dict[str, tuple[str, ...]] = {}
    cn = sect.section("continent")
    for code in list(cn.data):
        cn.take(code, list)
        if code.upper() not in CONTINENTS:
            raise cn.error(code, f"not a continent code ({', '.join(CONTINENTS)})")
        continents[code.upper()] = _region_list(cn, code, cn.data[code], allowed, allowed=allowed)
    cn.done()
    default = sect.take("default", list, None)
    default_order = _region_list(sect, "default", default, allowed, allowed=allowed) if default is not None \
        else allowed
    sect.done()
    return GeoMap(tuple(cidrs), countries, continents, default_order)


def _load_service(name: str, sect: Section, regions: Mapping[str, Region]) -> ServiceConfig:
    known = tuple(regions)
    policy = sect.take_choice("policy", POLICIES, "geo")
    raw = sect.take("regions", list, None)
    names = _region_list(sect, "regions", raw, known) if raw is not None else known
    count = int(sect.take_number("count", 1, minimum=1, integer=True))
    ttl = _ttl(sect, "ttl", 30)
    degraded_ttl = _ttl(sect, "degraded_ttl", min(10, ttl))
    all_down = _load_all_down(sect.section("all_down"))
    raw_order = sect.take("default_order", list, None)
    default_order = _region_list(sect, "default_order", raw_order, known, allowed=names) \
        if raw_order is not None else names
    geo_map = None
    if "map" in sect:
        if policy != "geo_map":
            raise sect.error("map", f"only for policy geo_map (this service's policy is {policy})")
        geo_map = _load_map(sect.section("map"), names)
    elif policy == "geo_map":
        raise sect.error("map", "is required for policy geo_map")
    weights: dict[str, float] = {}
    if "weights" in sect:
        if policy != "weighted":
            raise sect.error("weights", f"only for policy weighted (this service's policy is {policy})")
        ws = sect.section("weights")
        for region in list(ws.data):
            if region not in names:
                raise ws.error(region, f"unknown region {region!r} (not in this service's regions)")
            weights[region] = float(ws.take_number(region, minimum=0.0))
        ws.done()
        if not any(w > 0 for w in weights.values()):
            raise sect.error("weights", "at least one weight must be > 0")
    elif policy == "weighted":
        weights = {r: 1.0 for r in names}
    latency_max_age = None
    if "latency_max_age" in sect:
        if policy != "latency":
            raise sect.error("latency_max_age", f"only for policy latency (this service's policy is {policy})")
        latency_max_age = float(sect.take_duration("latency_max_age", minimum=1.0))
    sect.done()
    return ServiceConfig(name, policy, names, count, ttl, degraded_ttl, all_down, default_order, geo_map,
                         weights, latency_max_age)


def service_name(text: str) -> str | None:
    """The canonical service name (lower case, no trailing dot), or None if not a domain name."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or any(not label or len(label) > 63 for label in labels):
        return None
    return name


def load_services(section: Section, regions: Mapping[str, Region]) -> dict[str, ServiceConfig]:
    """ServiceConfig by canonical name from the `services` section."""
    services: dict[str, ServiceConfig] = {}
    for raw_name, sect in _named(section):
        name = service_name(raw_name)
        if name is None:
            raise section.error(raw_name, "not a domain name")
        if name in services:
            raise section.error(raw_name, f"service {name!r} is listed twice")
        services[name] = _load_service(name, sect, regions)
    return services


def _named(section: Section) -> list[tuple[str, Section]]:
    """Each key of `section` as a Section (every value must be a mapping)."""
    out = []
    for key in list(section.data):
        body = section.take(key, dict, {})
        out.append((key, Section(body, file=section.file, path=section.key_path(key))))
    section.done()
    return out
