"""The GSLB's configuration: one YAML file, loaded into frozen dataclasses.

    dns:      listen (host:port list, UDP and TCP on each), max_udp_size,
              tcp_idle_timeout (10s: a connection without a complete query for this long is closed,
                replies still unsent or not), tcp_max_connections (1024: at the limit the
                longest-idle connection is closed to admit a new one, RFC 7766 §6.2.3),
              tcp_max_per_client (64: open connections per client address, per /64 for IPv6;
                more are refused),
              tcp_max_unsent (65536 bytes of replies a connection may leave unread; over it its
                queries are no longer read, and it is closed if still over at the idle timeout)
              rrl: response rate limiting of UDP replies (gslb/dns/rrl.py says how and why these
                defaults): enabled (true), responses_per_second (100), nxdomains_per_second (25),
                errors_per_second (10) (per client network and response; 0: unlimited),
                window (15s), slip (2: every 2nd limited reply is sent truncated, 0: never,
                1: always), ipv4_prefix (24), ipv6_prefix (56), max_table_size (100000 buckets)
              cookies: DNS Cookies (RFC 7873, server cookies as RFC 9018 makes them):
                enabled (true), secrets (list of 32-hex-digit / 16-byte SipHash keys: the first signs,
                all verify, so servers given the same list agree and a new secret can be rolled in
                second, then first; or secrets_file: one per line, relative to this file; default: a
                random secret made at each load, fine for one server), require (false: answer queries
                with a missing or invalid server cookie; true: BADCOOKIE to such UDP queries that
                carry a client cookie; TCP and cookie-less queries are answered either way)
              nsid (string echoed in the NSID option, RFC 5001, to queries that ask; default off),
              identity (CHAOS TXT id.server / hostname.bind; default off: REFUSED),
              version (CHAOS TXT version.bind / version.server; default off: REFUSED)
              cache_max_entries (50000) and cache_max_bytes (64 MiB, estimated): the response cache,
                emptied when either is reached
    admin:    listen (host:port, loopback by default), token (bearer token for mutating calls),
              state_file (admin_state.json, relative to this file: drains and maintenance kept
                across restarts and shared with peers; gslb/peers/admin_state.py)
    peers:    the other GSLB servers of the NS set: name, servers {name: admin URL}, token,
              interval (2s), timeout, policy (quorum | any_up | all_up), policies {region: policy},
              max_response_bytes (gslb/peers/config.py; the vote: gslb/peers/vote.py)
    geoip:    database (path, relative to the config file; default: the bundled DB-IP database)
    latency:  max_age, max_networks (the client-network latency table)
    workers:  auto | N (default 1): processes answering DNS. 1: one process does everything
              (gslb/app.py). N > 1 or auto (the CPUs this process may run on,
              len(os.sched_getaffinity(0))): a supervisor -- config and reloads, GeoIP database,
              probes, peers and the vote, the admin API, the latency table, drains, the state
              file -- and N worker processes that bind every dns.listen address (UDP and TCP)
              with SO_REUSEPORT and answer (gslb/supervisor.py, gslb/worker.py)
    regions:  name -> location [lat, lon], addresses, capacity, probe {...}
    zones:    see gslb/dns/zone.py
    services: see gslb/steering/config.py

Every error is a `ConfigError` naming the file, the key path and the reason; unknown
keys are refused. `load_config(path)` is the entry point (`parse_config(text, file)`: the same
for a text read earlier from `file`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gslb.common.checker import CheckTarget
from gslb.common.configload import ConfigError, Section
from gslb.common.health import Thresholds
from gslb.common.probe import ProbeResult, ProbeSpec
from gslb.dns.cookies import SECRET_SIZE, ServerCookies, parse_secrets
from gslb.dns.records import AAAA, CNAME, A
from gslb.dns.rrl import RrlSettings
from gslb.dns.zone import Zone, load_zones
from gslb.peers.config import PeerSettings, load_peers
from gslb.steering.base import Region
from gslb.steering.config import ServiceConfig, load_services

__all__ = ["ConfigError", "GslbConfig", "load_config", "parse_hostport"]


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_RRL = RrlSettings()


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[Listen, ...]
    max_udp_size: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1024
    rrl: RrlSettings = DEFAULT_RRL
    tcp_max_per_client: int = 64
    tcp_max_unsent: int = 65536
    cookies_enabled: bool = True
    cookie_secrets: tuple[bytes, ...] = field(default=(), repr=False)   # empty: a random one per responder
    cookie_require: bool = False
    nsid: bytes | None = None
    identity: str | None = None
    version: str | None = None
    cache_max_entries: int = 50_000
    cache_max_bytes: int = 64 * 1024 * 1024

    def responder_options(self) -> dict[str, Any]:
        """The Responder's keyword arguments for cookies, NSID, CHAOS identity and the cache."""
        cookies = None
        if self.cookies_enabled:
            cookies = ServerCookies(self.cookie_secrets or (os.urandom(SECRET_SIZE),))
        return {"cookies": cookies, "require_cookies": self.cookie_require, "nsid": self.nsid,
                "identity": self.identity, "version": self.version, "cache_size": self.cache_max_entries,
                "cache_max_bytes": self.cache_max_bytes}


@dataclass(frozen=True, slots=True)
class AdminSettings:
    listen: Listen
    token: str | None
    state_file: Path | None = None      # drains and maintenance kept across restarts (gslb/peers/admin_state.py)


@dataclass(frozen=True, slots=True)
class LatencySettings:
    max_age: float = 600.0
    max_networks: int = 100_000


@dataclass(frozen=True, slots=True)
class RegionProbe:
    spec: ProbeSpec
    interval: float
    thresholds: Thresholds
    assume_up: bool
    min_healthy_fraction: float     # from the regional LB's health JSON: below it the region is down

    def target(self, name: str) -> CheckTarget:
        return CheckTarget(name, self.spec, self.interval, self.thresholds, self.assume_up, self.judge)

    def judge(self, result: ProbeResult) -> tuple[bool, str]:
        """A regional LB health body reporting too few healthy backends makes the region down."""
        fraction = healthy_fraction(result)
        if fraction is not None and fraction < self.min_healthy_fraction:
            return False, f"only {fraction:.0%} of backends healthy (< {self.min_healthy_fraction:.0%})"
        return True, result.detail


def healthy_fraction(result: ProbeResult) -> float | None:
    """The `healthy_fraction` a regional LB's /lb/healthz reports, if the body is that JSON."""
    if not result.body or not result.body.lstrip().startswith(b"{"):
        return None
    try:
        value = json.loads(result.body).get("healthy_fraction")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class RegionConfig:
    region: Region
    probe: RegionProbe | None


@dataclass(frozen=True, slots=True)
class GslbConfig:
    file: str
    dns: DnsSettings
    admin: AdminSettings
    geoip_database: Path
    latency: LatencySettings
    regions: dict[str, RegionConfig]
    zones: tuple[Zone, ...]
    services: dict[str, ServiceConfig]
    peers: PeerSettings = field(default_factory=lambda: PeerSettings("self"))
    workers: int = 1                    # DNS worker processes (`auto` resolved); see the module docstring

    def region_models(self) -> dict[str, Region]:
        return {name: rc.region for name, rc in self.regions.items()}

    def longest_ttl(self, region: str) -> int:
        """The longest TTL any answer naming `region` can carry: how long resolvers may keep it."""
        ttls = [max(s.ttl, s.degraded_ttl) for s in self.services.values() if region in s.regions]
        return max(ttls, default=0)


def parse_hostport(text: str, default_port: int | None = None) -> Listen:
    """ "127.0.0.1:53", "[::1]:53", "::1" (with a default port) -> Listen; ValueError otherwise."""
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is None:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port (host:port or [v6]:port)")
        port_num = default_port
    else:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in {text!r}")
        port_num = int(port)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or host != host.strip():
            raise ValueError(f"bad host in {text!r}") from None
    return Listen(host, port_num)


def _listen(sect: Section, key: str, default: str | list[str], *, many: bool) -> tuple[Listen, ...]:
    raw = sect.take(key, (str, list), default)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise sect.error(key, "must name at least one address")
    if not many and len(items) != 1:
        raise sect.error(key, "takes one address")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse_hostport(str(item)))
        except ValueError as exc:
            raise sect.error(f"{key}[{i}]" if isinstance(raw, list) else key, str(exc)) from None
    return tuple(out)


def _load_dns(sect: Section) -> DnsSettings:
    dns = DnsSettings(
        listen=_listen(sect, "listen", ["127.0.0.1:53", "[::1]:53"], many=True),
        max_udp_size=sect.take_number("max_udp_size", 1232, minimum=512, maximum=65535, integer=True),
        tcp_idle_timeout=sect.take_duration("tcp_idle_timeout", 10.0, minimum=0.1),
        tcp_max_connections=sect.take_number("tcp_max_connections", 1024, minimum=1, integer=True),
        rrl=_load_rrl(sect.section("rrl")),
        tcp_max_per_client=sect.take_number("tcp_max_per_client", 64, minimum=1, integer=True),
        tcp_max_unsent=sect.take_number("tcp_max_unsent", 65536, minimum=1024, maximum=16 * 1024 * 1024,
                                        integer=True),
        **_load_responder_options(sect),
    )
    sect.done()
    return dns


def _load_responder_options(sect: Section) -> dict[str, Any]:
    """dns.cookies, dns.nsid, dns.identity, dns.version, dns.cache_max_entries / cache_max_bytes."""
    cookies = sect.section("cookies")
    enabled = cookies.take("enabled", bool, True)
    texts = cookies.take_list("secrets", None)
    secrets_file = cookies.take("secrets_file", str, None)
    if texts is not None and secrets_file is not None:
        raise cookies.error("secrets_file", "give secrets or secrets_file, not both")
    key = "secrets"
    if secrets_file is not None:
        key = "secrets_file"
        path = Path(sect.file).parent / secrets_file
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise cookies.error(key, f"cannot read {path}: {exc.strerror}") from None
    secrets: tuple[bytes, ...] = ()
    if texts is not None:
        if not texts:
            raise cookies.error(key, "must hold at least one secret (omit it for a random one)")
        try:
            secrets = parse_secrets([str(text) for text in texts])
        except ValueError as exc:
            raise cookies.error(key, str(exc)) from None
    require = cookies.take("require", bool, False)
    if require and not enabled:
        raise cookies.error("require", "cookies are not enabled")
    cookies.done()

    def text(key: str, limit: int) -> str | None:
        value = sect.take(key, str, None)
        if value is None:
            return None
        if not value or len(value.encode()) > limit or not value.isprintable():
            raise sect.error(key, f"must be 1..{limit} bytes of printable text (omit it to turn it off)")
        return str(value)

    nsid = text("nsid", 128)
    return {
        "cookies_enabled": enabled, "cookie_secrets": secrets, "cookie_require": require,
        "nsid": nsid.encode() if nsid is not None else None,
        "identity": text("identity", 255), "version": text("version", 255),
        "cache_max_entries": sect.take_number("cache_max_entries", 50_000, minimum=0, maximum=10_000_000,
                                              integer=True),
        "cache_max_bytes": sect.take_number("cache_max_bytes", 64 * 1024 * 1024, minimum=0,
                                            maximum=1 << 40, integer=True),
    }


def _load_rrl(sect: Section) -> RrlSettings:
    default = DEFAULT_RRL
    rates = {key: sect.take_number(key, getattr(default, key), minimum=0, maximum=1_000_000, integer=True)
             for key in ("responses_per_second", "nxdomains_per_second", "errors_per_second")}
    window = sect.take_duration("window", default.window, minimum=1.0)
    if window > 3600:
        raise sect.error("window", f"must be <= 3600s, got {window}s")
    settings = RrlSettings(
        enabled=sect.take("enabled", bool, default.enabled),
        window=window,
        slip=sect.take_number("slip", default.slip, minimum=0, maximum=10, integer=True),
        ipv4_prefix=sect.take_number("ipv4_prefix", default.ipv4_prefix, minimum=0, maximum=32, integer=True),
        ipv6_prefix=sect.take_number("ipv6_prefix", default.ipv6_prefix, minimum=0, maximum=128, integer=True),
        max_table_size=sect.take_number("max_table_size", default.max_table_size, minimum=1,
                                        maximum=10_000_000, integer=True),
        **rates,
    )
    sect.done()
    return settings


def _load_admin(sect: Section) -> AdminSettings:
    (listen,) = _listen(sect, "listen", "127.0.0.1:8053", many=False)
    token = sect.take_token()        # None: mutating admin calls are refused
    state_file = Path(sect.file).parent / sect.take("state_file", str, "admin_state.json")
    sect.done()
    return AdminSettings(listen, token, state_file)


def _load_probe(sect: Section, region: str) -> RegionProbe | None:
    if not sect.data:
        return None
    kind = sect.take_choice("type", ("http", "tcp"), "http")
    timeout = sect.take_duration("timeout", 1.0, minimum=0.01)
    if kind == "http":
        url = sect.take("url", str)
        codes = sect.take("expect_status", (int, list), 200)
        codes_t = tuple(codes) if isinstance(codes, list) else (codes,)
        if not codes_t or not all(isinstance(c, int) and 100 <= c <= 599 for c in codes_t):
            raise sect.error("expect_status", f"expected HTTP status codes, got {codes!r}")
        try:
            spec = ProbeSpec.from_url(url, expect_status=codes_t, timeout=timeout,
                                      verify_tls=sect.take("verify_tls", bool, True))
        except ValueError as exc:
            raise sect.error("url", str(exc)) from None
        host_header = sect.take("host_header", str, None)
        if host_header:
            spec = ProbeSpec(spec.kind, spec.host, spec.port, spec.path, spec.scheme, spec.expect_status,
                             spec.timeout, host_header, spec.verify_tls)
    else:
        try:
            target = parse_hostport(sect.take("target", str))
        except ValueError as exc:
            raise sect.error("target", str(exc)) from None
        spec = ProbeSpec("tcp", target.host, target.port, timeout=timeout)
    interval = sect.take_duration("interval", 2.0, minimum=0.05)
    rise = sect.take_number("rise", 2, minimum=1, integer=True)
    fall = sect.take_number("fall", 3, minimum=1, integer=True)
    assume = sect.take_choice("assume", ("up", "down"), "up")
    fraction = sect.take_number("min_healthy_fraction", 0.5, minimum=0.0, maximum=1.0)
    sect.done()
    return RegionProbe(spec, interval, Thresholds(rise, fall), assume == "up", fraction)


def _load_region(name: str, sect: Section) -> RegionConfig:
    loc = sect.take("location", list)
    if len(loc) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in loc):
        raise sect.error("location", f"expected [latitude, longitude], got {loc!r}")
    lat, lon = float(loc[0]), float(loc[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise sect.error("location", f"latitude must be in [-90, 90] and longitude in [-180, 180], got {loc!r}")
    v4: list[str] = []
    v6: list[str] = []
    for i, text in enumerate(sect.take_list("addresses")):
        try:
            addr = ipaddress.ip_address(str(text))
        except ValueError:
            raise sect.error("addresses", f"item {i}: not an IP address: {text!r}") from None
        (v4 if addr.version == 4 else v6).append(str(addr))
    if not v4 and not v6:
        raise sect.error("addresses", "must list at least one address")
    capacity = sect.take_number("capacity", 1.0, minimum=0.0)
    probe = _load_probe(sect.section("probe"), name)
    sect.done()
    return RegionConfig(Region(name, lat, lon, tuple(v4), tuple(v6), capacity), probe)


def load_config_section(root: Section, *, base_dir: Path) -> GslbConfig:
    dns = _load_dns(root.section("dns"))
    admin = _load_admin(root.section("admin"))
    geo = root.section("geoip")
    db_text = geo.take("database", str, None)
    if db_text is None:
        from gslb.geoip import DEFAULT_DATABASE
        database = Path(DEFAULT_DATABASE)
    else:
        database = (base_dir / db_text).resolve()
    geo.done()
    lat = root.section("latency")
    latency = LatencySettings(lat.take_duration("max_age", 600.0, minimum=1.0),
                              lat.take_number("max_networks", 100_000, minimum=1, integer=True))
    lat.done()
    regions = {name: _load_region(name, sect) for name, sect in root.named_sections("regions", required=True)}
    zones = load_zones(root.section("zones", required=True))
    services = load_services(root.section("services"), {n: r.region for n, r in regions.items()})
    peers = load_peers(root.section("peers"), default_name=str(admin.listen), default_token=admin.token,
                       regions=regions)
    workers = _take_workers(root)
    root.done()
    _check_services_in_zones(root, zones, services)
    return GslbConfig(root.file, dns, admin, database, latency, regions, zones, services, peers, workers)


MAX_WORKERS = 1024


def _take_workers(root: Section) -> int:
    """`workers: auto | N`: auto is the CPUs this process may run on."""
    value = root.take("workers", (int, str), 1)
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        root.record(root.error("workers", f"expected auto or a number from 1 to {MAX_WORKERS}, got {value!r}"))
        return 1
    return value


def _check_services_in_zones(root: Section, zones: tuple[Zone, ...], services: dict[str, ServiceConfig]) -> None:
    origins = [zone_origin(z) for z in zones]
    for name in services:
        if not any(name == o or name.endswith("." + o) for o in origins):
            raise root.error("services", f"{name!r} is not inside any configured zone ({', '.join(origins)})")
        for zone in zones:
            static = zone.nodes.get(name, {})
            clash = [t for t, label in ((A, "A"), (AAAA, "AAAA"), (CNAME, "CNAME")) if t in static]
            if clash:
                kinds = "/".join(label for t, label in ((A, "A"), (AAAA, "AAAA"), (CNAME, "CNAME")) if t in clash)
                raise root.error("services", f"{name!r} also has static {kinds} records in zone "
                                             f"{zone_origin(zone)!r}: a name is either steered or static")


def zone_origin(zone: Zone) -> str:
    return str(zone.origin).rstrip(".").lower()


def load_config(path: str | Path) -> GslbConfig:
    path = Path(path)
    return Section.load(Section.from_file(path), lambda root: load_config_section(root, base_dir=path.parent))


def read_config(path: str | Path) -> tuple[GslbConfig, str]:
    """`load_config(path)` and the text it was built from (what a supervisor sends its workers)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror or exc}") from None
    return parse_config(text, path), text


def parse_config(text: str, file: str | Path) -> GslbConfig:
    """The config in `text`, as if read from `file` (relative paths resolve beside it): how a worker
    builds the very text its supervisor validated (gslb/feed.py)."""
    path = Path(file)
    return Section.load(Section.from_yaml_text(text, file=str(path)),
                        lambda root: load_config_section(root, base_dir=path.parent))
