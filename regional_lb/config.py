"""The regional LB config: YAML -> frozen dataclasses  [pure].

One loader, `load_config(path)` / `parse_config(text, file=...)`, walks the document with
gslb.common.configload.Section: unknown keys are refused and every error names the file, the
key path and the reason (`ConfigError`). Pool tuning (health, outlier, slow start, panic,
retries) is parsed by `regional_lb.pool.load_pool_settings` and policy options by
`regional_lb.balancing.make_policy`, so a config that loads here is one the proxy can run.

The document shape: deploy/example/edge.yaml and internal.yaml (every key, with comments), and README.md.

Listener keys beside `address` and `tls` (defaults as nginx / Envoy users expect them; the
reading itself is regional_lb/target.py, shared by both server kinds):

    backlog                 listen backlog; default None = the kernel's net.core.somaxconn
                            (read when the listener starts; 4096 if unreadable)
    escaped_slashes         reject (default): %2F, %5C or a raw '\\' in a path -> 400;
                            keep: passed on undecoded (Envoy's KEEP_UNCHANGED)
    merge_slashes           true (default): '//' in a path becomes '/' before routing
    underscores_in_headers  false (default): header names with '_' are dropped

A route may set `allow_connect: true` (default false: CONNECT gets 405): CONNECT requests for
its host are then tunnelled to a backend of its pool (regional_lb/proxy/connect.py).

`timeouts.tunnel` (default 1h, HAProxy's `timeout tunnel`) closes an established CONNECT tunnel or
WebSocket relay that carried nothing either way for that long (see `Timeouts`).

`workers: auto | N` (default 1): how many processes serve the listeners. 1 runs everything in
one process (LoadBalancer, as before). N > 1 or `auto` (the CPUs this process may run on,
len(os.sched_getaffinity(0))) runs a supervisor -- config, reloads, health checks, discovery,
the admin API -- and N workers that bind the listeners with SO_REUSEPORT and serve
(regional_lb/supervisor.py). Policies that keep per-process state a session depends on --
`sticky_learn` (stick table), `bounded_load` and `least_connections` (in-flight counts) --
need `state: backend: redis` when `workers` is `auto` or above 1: with `state: memory` each
worker would keep its own table and counts, and check-config refuses the config (whatever
the machine's CPU count, so a config valid on one host is valid on another).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gslb.common.configload import ConfigError, Section
from regional_lb.balancing.base import Backend
from regional_lb.routing import Route
from regional_lb.target import DEFAULT_OPTIONS, ESCAPED_SLASH_ACTIONS, RequestOptions

ROLES = ("edge", "internal")
DNS_TYPES = ("A", "AAAA", "SRV")
STATE_BACKENDS = ("memory", "redis")
SERVERS = ("fast", "aiohttp")      # which HTTP server front end LoadBalancer runs
MAX_WORKERS = 1024
# policies whose per-session decisions rest on state one process keeps (see the docstring)
PER_PROCESS_POLICIES = {"sticky_learn": "stick table", "bounded_load": "in-flight counts",
                        "least_connections": "in-flight counts"}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or a string like "8k", "100m", "1g" (binary units); None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_address(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """("127.0.0.1", 8080) from "127.0.0.1:8080"; ("::1", 8080) from "[::1]:8080". Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("missing ']'")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError("expected ':' after ']'")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        raise ValueError("IPv6 addresses need brackets: [::1]:8080")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError("missing host")
    if not port_text:
        if default_port is None:
            raise ValueError("missing port (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Listener:
    """One client-facing socket. `backlog` None: the system's somaxconn (regional_lb.proxy.server.
    default_backlog); `requests`: how request targets and header names are read (regional_lb/target.py)."""

    host: str
    port: int
    tls: TLSConfig | None = None
    backlog: int | None = None
    requests: RequestOptions = DEFAULT_OPTIONS

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def __str__(self) -> str:
        return f"{self.scheme}://{format_address(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 9080
    token: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class HealthEndpoint:
    path: str = "/lb/healthz"
    min_healthy_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`timeouts:` -- durations ("2s", "500ms", "1h"; each at least 1ms).

    connect       2s: opening a connection to a backend
    backend_read  30s: a backend that sends no response byte for this long: 504
    client_idle   60s: a keep-alive client connection with no request
    header_read   10s: from a request's first byte until its head is read (slow-loris): 408
    tunnel        1h: an established CONNECT tunnel or WebSocket relay with no byte (CONNECT) or
                  no message (WebSocket: data, ping or pong) either way is closed, both sides
                  (WebSocket: close code 1001); any traffic either way starts the wait again.
                  HAProxy's `timeout tunnel` (its documented example is 1h); client_idle does
                  not apply once a connection is a tunnel. Must be finite. Read when a tunnel
                  starts: a reload changes the timeout of tunnels opened after it.
    """

    connect: float = 2.0
    backend_read: float = 30.0
    client_idle: float = 60.0
    header_read: float = 10.0
    tunnel: float = 3600.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_size: int = 8190
    max_body_size: int = 100 * 1024**2
    max_headers: int = 100


@dataclass(frozen=True, slots=True)
class StateConfig:
    """`state:` -- where the stick table and shared in-flight counts live (regional_lb/state).

    backend           memory (default: this process only) | redis (shared by replicas)
    url               redis://, rediss://, unix://, redis+sentinel://h1,h2/SERVICE[/db], redis+cluster://h1,h2
    key_prefix        "rlb:"
    budget            20ms: the longest a request waits for Redis; past it the local copy answers
    pool_size         64: Redis connections (a blocking pool: a burst waits, within the budget)
    lease             3s: how long a replica's published in-flight counts outlive its last renewal
    publish_interval  100ms: how often a replica publishes its counts and reads the others'
    local_entries     100000: stick-table entries each replica keeps in its local copy
    local_fresh       0s: trust a local entry Redis confirmed less than this long ago without asking
                      again (0: one GET per sticky request; 1s: one per session per second per replica)
    """

    backend: str = "memory"
    url: str | None = None
    key_prefix: str = "rlb:"
    budget: float = 0.02
    pool_size: int = 64
    lease: float = 3.0
    publish_interval: float = 0.1
    local_entries: int = 100_000
    local_fresh: float = 0.0


@dataclass(frozen=True, slots=True)
class DnsBackends:
    """Backends found by resolving `name` (A/AAAA: port from the config; SRV: port from the record)."""

    name: str
    port: int | None
    type: str = "A"
    weight: int = 1
    interval: float = 30.0

    def __str__(self) -> str:
        return f"{self.type} {self.name}" + (f":{self.port}" if self.port else "")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    backends: tuple[Backend, ...]
    dns: tuple[DnsBackends, ...]
    settings: Any                      # regional_lb.pool.PoolSettings (CORE)


@dataclass(frozen=True, slots=True)
class Config:
    region: str
    role: str
    listeners: tuple[Listener, ...]
    admin: AdminConfig
    health_endpoint: HealthEndpoint
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    timeouts: Timeouts
    limits: Limits
    state: StateConfig
    pools: Mapping[str, PoolConfig]
    routes: tuple[Route, ...]
    lb_headers: bool = True            # X-LB-Region / X-LB-Backend on proxied responses
    via: str = "1.1 regional-lb"
    file: str = "<config>"
    any_tls: bool = field(default=False)
    latency_push: Any = None           # regional_lb.latency_push.LatencyPushSettings: client RTTs -> GSLBs
    server: str = "fast"               # "fast": raw-protocol fast path for plain keep-alive requests,
                                       # the rest through aiohttp; "aiohttp": everything through aiohttp
    workers: int = 1                   # processes serving the listeners (`auto` resolved); see the docstring


def load_config(path: str | Path) -> Config:
    return Section.load(Section.from_file(path), lambda root: _build(root, Path(path).parent))


def parse_config(text: str, *, file: str = "<config>", base_dir: Path | None = None) -> Config:
    return Section.load(Section.from_yaml_text(text, file=file), lambda root: _build(root, base_dir or Path.cwd()))


def _take_address(sect: Section, key: str, default: Any = None) -> tuple[str, int]:
    text = sect.take(key, str, default)
    try:
        return parse_address(text)
    except ValueError as exc:
        raise sect.error(key, f"bad address {text!r}: {exc}") from None


def _take_size(sect: Section, key: str, default: int) -> int:
    sect._taken.add(key)
    if key not in sect.data or sect.data[key] is None:
        return default
    size = parse_size(sect.data[key])
    if size is None:        # recorded, the default used: check-config goes on to the next problem
        sect.record(sect.error(key, f"expected a size such as 8190, '8k', '100m', got {sect.data[key]!r}"))
        return default
    return size


def _listeners(root: Section, base_dir: Path) -> tuple[Listener, ...]:
    out: list[Listener] = []
    for item in root.sections("listen", required=True):
        host, port = _take_address(item, "address")
        tls = None
        if "tls" in item:
            t = item.section("tls")
            cert = base_dir / t.take("cert", str)
            key = base_dir / t.take("key", str)
            for name, p in (("cert", cert), ("key", key)):
                if not p.is_file():
                    raise t.error(name, f"no such file: {p}")
            t.done()
            tls = TLSConfig(cert, key)
        backlog = item.take_number("backlog", None, minimum=1, maximum=65535, integer=True)
        requests = RequestOptions(
            escaped_slashes=item.take_choice("escaped_slashes", ESCAPED_SLASH_ACTIONS, "reject"),
            merge_slashes=item.take("merge_slashes", bool, True),
            underscores_in_headers=item.take("underscores_in_headers", bool, False))
        item.done()
        out.append(Listener(host, port, tls, backlog, requests))
    if not out:
        raise root.error("listen", "needs at least one listener")
    seen = set()
    for i, lst in enumerate(out):
        if lst.port and (lst.host, lst.port) in seen:
            raise root.error("listen", f"[{i}] {format_address(lst.host, lst.port)} is listed twice")
        seen.add((lst.host, lst.port))
    return tuple(out)


def _backends(pool_sect: Section) -> tuple[tuple[Backend, ...], tuple[DnsBackends, ...]]:
    static: list[Backend] = []
    dns: list[DnsBackends] = []
    for item in pool_sect.sections("backends", required=True):
        weight = item.take_number("weight", 1, minimum=0, integer=True)
        if "dns" in item:
            name = item.take("dns", str)
            kind = item.take_choice("type", DNS_TYPES, "A")
            port = item.take_number("port", None, minimum=1, maximum=65535, integer=True)
            if port is None and kind != "SRV":
                raise item.error("port", "is required for A/AAAA discovery")
            interval = item.take_duration("interval", 30.0, minimum=1.0)
            dns.append(DnsBackends(name, port, kind, weight, interval))
        else:
            host, port = _take_address(item, "address")
            if port == 0:
                raise item.error("address", "a backend needs a port other than 0")
            bid = item.take("id", str, format_address(host, port))
            static.append(Backend(bid, host, port, weight))
        item.done()
    ids = [b.id for b in static]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise pool_sect.error("backends", f"duplicate backend id {sorted(dup)[0]!r}")
    if not static and not dns:
        raise pool_sect.error("backends", "needs at least one backend")
    return tuple(static), tuple(dns)


def _pools(root: Section) -> dict[str, PoolConfig]:
    from regional_lb.pool import load_pool_settings

    pools: dict[str, PoolConfig] = {}
    for name, sect in root.named_sections("pools", required=True):
        static, dns = _backends(sect)
        settings = load_pool_settings(sect)
        sect.done()
        pools[name] = PoolConfig(name, static, dns, settings)
    return pools


def _routes(root: Section, pools: Mapping[str, PoolConfig], tls: bool) -> tuple[Route, ...]:
    from regional_lb.balancing import make_policy

    routes: list[Route] = []
    names: set[str] = set()
    for i, item in enumerate(root.sections("routes", required=True)):
        match = item.section("match")
        host = match.take("host", str, "*")
        path = match.take("path", str, "/")
        match.done()
        pool = item.take("pool", str)
        if pool not in pools:
            raise item.error("pool", f"unknown pool {pool!r}; pools: {', '.join(pools)}")
        policy = item.take("policy", str, "round_robin")
        allow_connect = item.take("allow_connect", bool, False)
        name = item.take("name", str, f"{pool}#{i}")
        if name in names:
            raise item.error("name", f"route name {name!r} is used twice")
        names.add(name)
        options = item.section("options")
        make_policy(policy, options, tls=tls)    # validates (raises ConfigError naming the key)
        options.done()
        item.done()
        try:
            route = Route(name=name, pool=pool, policy=policy, host=host, path=path,
                          options=MappingProxyType(dict(options.data)), allow_connect=allow_connect)
        except ValueError as exc:
            raise match.error(None, str(exc)) from None
        routes.append(route)
    if not routes:
        raise root.error("routes", "needs at least one route")
    return tuple(routes)


def _take_workers(root: Section) -> tuple[int, bool]:
    """(worker count, whether the config asks for more than one process: `auto` or N > 1)."""
    value = root.take("workers", (int, str), 1)
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0))), True
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        root.record(root.error("workers", f"expected auto or a number from 1 to {MAX_WORKERS}, got {value!r}"))
        return 1, False
    return value, value > 1


def policy_options(config: Config, route: Route) -> Section:
    """The Section to hand to make_policy for `route` at run time (errors still name the file)."""
    index = config.routes.index(route)
    return Section(dict(route.options), file=config.file, path=f"routes[{index}].options")


def _build(root: Section, base_dir: Path) -> Config:
    file = root.file
    region = root.take("region", str)
    role = root.take_choice("role", ROLES, "edge")
    listeners = _listeners(root, base_dir)
    any_tls = any(lst.tls for lst in listeners)

    adm = root.section("admin")
    if "listen" in adm or adm.data:
        host, port = _take_address(adm, "listen", "127.0.0.1:9080")
        admin = AdminConfig(host, port, adm.take_token(), adm.take("enabled", bool, True))
    else:
        admin = AdminConfig()
    adm.done()

    he = root.section("health_endpoint")
    path = he.take("path", str, "/lb/healthz",
                   check=lambda p: None if p.startswith("/") else "must start with '/'")
    frac = he.take_number("min_healthy_fraction", 0.5, minimum=0.0, maximum=1.0)
    he.done()

    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, text in enumerate(root.take_list("trusted_proxies", [])):
        try:
            nets.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            raise root.error("trusted_proxies", f"[{i}] not a network: {text!r}") from None

    to = root.section("timeouts")
    timeouts = Timeouts(
        connect=to.take_duration("connect", 2.0, minimum=0.001),
        backend_read=to.take_duration("backend_read", 30.0, minimum=0.001),
        client_idle=to.take_duration("client_idle", 60.0, minimum=0.001),
        header_read=to.take_duration("header_read", 10.0, minimum=0.001),
        tunnel=to.take_duration("tunnel", 3600.0, minimum=0.001))
    to.done()

    li = root.section("limits")
    limits = Limits(max_header_size=_take_size(li, "max_header_size", 8190),
                    max_body_size=_take_size(li, "max_body_size", 100 * 1024**2),
                    max_headers=li.take_number("max_headers", 100, minimum=1, integer=True))
    if limits.max_header_size < 256:
        raise li.error("max_header_size", "must be at least 256 bytes")
    li.done()

    st = root.section("state")
    backend = st.take_choice("backend", STATE_BACKENDS, "memory")
    state = StateConfig(backend, st.take("url", str, None), st.take("key_prefix", str, "rlb:"),
                        budget=st.take_duration("budget", 0.02, minimum=0.001),
                        pool_size=st.take_number("pool_size", 64, minimum=1, maximum=10_000, integer=True),
                        lease=st.take_duration("lease", 3.0, minimum=0.2),
                        publish_interval=st.take_duration("publish_interval", 0.1, minimum=0.01),
                        local_entries=st.take_number("local_entries", 100_000, minimum=1, maximum=100_000_000,
                                                     integer=True),
                        local_fresh=st.take_duration("local_fresh", 0.0, minimum=0.0))
    if backend == "redis" and not state.url:
        raise st.error("url", "is required for the redis state backend")
    if state.url:
        from regional_lb.state.urls import RedisUrlError, parse_redis_url
        try:
            parse_redis_url(state.url)
        except RedisUrlError as exc:
            raise st.error("url", str(exc)) from None
    if state.publish_interval * 3 > state.lease:
        raise st.error("lease", f"must be at least 3 x publish_interval ({state.publish_interval}s): "
                       "a live replica renews its lease every publish_interval")
    st.done()

    lb_headers = root.take("lb_headers", bool, True)
    server = root.take_choice("server", SERVERS, "fast")
    workers, many_workers = _take_workers(root)
    via = root.take("via", str, "1.1 regional-lb")
    pools = _pools(root)
    routes = _routes(root, pools, any_tls)
    if many_workers and backend == "memory":
        for item, route in zip(root.sections("routes"), routes, strict=True):
            if route.policy in PER_PROCESS_POLICIES:
                item.record(item.error("policy", f"{route.policy} with workers: {root.data.get('workers')} needs "
                                       "state: {backend: redis, url: ...}: with state: memory every worker "
                                       f"keeps its own {PER_PROCESS_POLICIES[route.policy]}"))
    from regional_lb.latency_settings import load_latency_push
    latency_push = load_latency_push(root.section("latency_push"))
    root.done()
    return Config(region=region, role=role, listeners=listeners, admin=admin,
                  health_endpoint=HealthEndpoint(path, frac), trusted_proxies=tuple(nets),
                  timeouts=timeouts, limits=limits, state=state, pools=MappingProxyType(pools),
                  routes=routes, lb_headers=lb_headers, via=via, file=file, any_tls=any_tls,
                  latency_push=latency_push, server=server, workers=workers)


__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "DnsBackends",
    "HealthEndpoint",
    "Limits",
    "Listener",
    "PoolConfig",
    "StateConfig",
    "TLSConfig",
    "Timeouts",
    "load_config",
    "parse_address",
    "parse_config",
    "parse_size",
    "policy_options",
]
