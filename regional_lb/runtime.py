"""One config generation of the regional LB: routes, pools, policies  [pure].

    rt = build_runtime(config, previous=old_rt, now=clock(), clock=clock)
    rt.table / rt.pools[name] (PoolRuntime) / rt.routes[name] (RouteRuntime) / rt.healthz(now)

A request reads the LoadBalancer's `rt` once when it starts, so a reload never changes the
rules under a request in flight; pools and policies whose definition did not change are
carried over from `previous` (their health, load, outlier state and round-robin position
survive a reload); a pool rebuilt because its settings changed starts from the old one's
health when its health check settings are the same.

Nothing here does I/O or reads a clock itself: `now` is passed in, and `clock` (monotonic) is
only kept by PoolRuntime for status rows read without a `now`. The active health checker the
edge runs beside a pool is seen through the `Checker` protocol, so this module imports no I/O
module (the import contract in .importlinter says so).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from regional_lb.balancing import make_policy
from regional_lb.balancing.base import Backend, Policy
from regional_lb.balancing.sticky_cookie import StickyCookie
from regional_lb.balancing.sticky_learn import StickyLearn
from regional_lb.config import Config, PoolConfig, policy_options
from regional_lb.headers import ForwardingSettings, TrustedProxies
from regional_lb.pool import Pool
from regional_lb.retry import RetryBudget
from regional_lb.routing import Route, RouteTable

DEFAULT_TTL = 1800.0                # a stick-table entry's life when the policy sets none


class Checker(Protocol):
    """What the runtime needs of an active health checker (gslb.common.checker.HealthChecker)."""

    async def stop(self) -> None: ...

    async def first_round(self) -> None: ...


class SessionTracker:
    """Sticky-cookie sessions seen per backend (for the drain report): token -> last seen.

    Bounded: at most `cap` tokens per backend (the oldest are forgotten)."""

    def __init__(self, max_idle: float = 1800.0, cap: int = 100_000) -> None:
        self.max_idle = max_idle
        self.cap = cap
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def touch(self, backend_id: str, token: str, now: float) -> None:
        seen = self._seen.get(backend_id)
        if seen is None:
            seen = self._seen[backend_id] = OrderedDict()
        seen[token] = now
        seen.move_to_end(token)
        if len(seen) > self.cap:
            seen.popitem(last=False)

    def forget(self, backend_id: str, token: str) -> None:
        seen = self._seen.get(backend_id)
        if seen is not None:
            seen.pop(token, None)

    def count(self, backend_id: str, now: float) -> int:
        seen = self._seen.get(backend_id)
        if not seen:
            return 0
        while seen:
            _token, t = next(iter(seen.items()))
            if now - t <= self.max_idle:
                break
            seen.popitem(last=False)
        return len(seen)


@dataclass(eq=False)
class PoolRuntime:
    """A pool with what the edge keeps beside it: retry budget, checker, discovered backends."""

    name: str
    config: PoolConfig
    pool: Pool
    budget: RetryBudget
    attempts: int
    discovered: dict[Any, tuple[Backend, ...]] = field(default_factory=dict)
    checker: Checker | None = None              # the edge's active health checker (supervisor side)
    active: int = 0                             # requests in flight through this pool (budget input)
    clock: Callable[[], float] = field(default=lambda: 0.0)  # monotonic: status rows read without a `now`

    def backends(self) -> tuple[Backend, ...]:
        found = list(self.config.backends)
        seen = {b.id for b in found}
        for group in self.discovered.values():
            for b in group:
                if b.id not in seen:
                    seen.add(b.id)
                    found.append(b)
        return tuple(found)

    def status_rows(self, now: float | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.pool.status(self.clock() if now is None else now)
        return rows

    def inflight_counts(self) -> dict[str, int]:
        return {str(r["id"]): int(r.get("inflight", 0)) for r in self.status_rows()}

    def healthy_total(self, now: float) -> tuple[int, int]:
        rows = self.status_rows(now)
        healthy = sum(1 for r in rows if r.get("available"))
        return healthy, len(rows)


@dataclass(eq=False)
class RouteRuntime:
    route: Route
    pool: PoolRuntime
    policy: Policy
    learns: bool                                # sticky_learn: learn from Set-Cookie / pick.learn
    ttl: float
    sessions: SessionTracker | None             # sticky_cookie routes: sessions per backend
    cookie_name: str | None

    bookkeeping: bool = False                   # responses update stick tables / session counts / metrics

    def __post_init__(self) -> None:
        self.bookkeeping = self.sessions is not None or self.learns or self.route.policy.startswith("sticky")


class Runtime:
    """One config generation (see the module docstring)."""

    def __init__(self, config: Config, pools: Mapping[str, PoolRuntime],
                 routes: Mapping[str, RouteRuntime]) -> None:
        self.config = config
        self.pools = dict(pools)
        self.routes = dict(routes)
        self.table = RouteTable(config.routes)
        self.forwarding = ForwardingSettings(TrustedProxies(config.trusted_proxies), via=config.via)
        self.health_path = config.health_endpoint.path
        self.region = config.region

    def healthz(self, now: float) -> tuple[int, dict[str, Any]]:
        pools: dict[str, dict[str, int]] = {}
        healthy = total = 0
        for name, pr in self.pools.items():
            h, t = pr.healthy_total(now)
            pools[name] = {"healthy": h, "total": t}
            healthy += h
            total += t
        fraction = healthy / total if total else 0.0
        ok = fraction >= self.config.health_endpoint.min_healthy_fraction and total > 0
        body = {"region": self.region, "role": self.config.role, "pools": pools,
                "healthy_fraction": round(fraction, 4), "status": "ok" if ok else "unhealthy"}
        return (200 if ok else 503), body

    def __repr__(self) -> str:
        return f"<Runtime {self.region} [{len(self.routes)} routes, {len(self.pools)} pools]>"


def _pool_settings_equal(a: PoolConfig, b: PoolConfig) -> bool:
    return bool(a.settings == b.settings)


def build_runtime(config: Config, *, previous: Runtime | None, now: float,
                  clock: Callable[[], float]) -> Runtime:
    """The Runtime for `config`, carrying over unchanged pools and policies from `previous`.
    `now` and `clock` are monotonic (see the module docstring)."""
    pools: dict[str, PoolRuntime] = {}
    for name, pc in config.pools.items():
        old = previous.pools.get(name) if previous else None
        retries = pc.settings.retries
        if old is not None and _pool_settings_equal(old.config, pc):
            pr = PoolRuntime(name, pc, old.pool, old.budget, retries.attempts,
                             discovered={k: v for k, v in old.discovered.items() if k in pc.dns}, clock=clock)
            pr.pool.update_backends(pr.backends(), now)
        else:
            known = None
            if old is not None and old.config.settings.health == pc.settings.health:
                known = {b.id: h for b in pc.backends if (h := old.pool.health(b.id)) is not None}
            pool = Pool(name, pc.backends, pc.settings, now=now, health=known)
            pr = PoolRuntime(name, pc, pool, retries.budget(), retries.attempts, clock=clock)
        pools[name] = pr
    routes: dict[str, RouteRuntime] = {}
    for route in config.routes:
        old_rr = previous.routes.get(route.name) if previous else None
        if (old_rr is not None and old_rr.route == route and old_rr.pool.pool is pools[route.pool].pool):
            policy = old_rr.policy
            sessions = old_rr.sessions
        else:
            policy = make_policy(route.policy, policy_options(config, route), tls=config.any_tls)
            sessions = None
        ttl = float(policy.ttl or DEFAULT_TTL) if isinstance(policy, StickyLearn) else DEFAULT_TTL
        cookie_name = None
        if isinstance(policy, StickyCookie):
            cookie_name = policy.cookie_name
            if sessions is None:
                sessions = SessionTracker(float(policy.max_idle))
        routes[route.name] = RouteRuntime(route, pools[route.pool], policy,
                                          learns=route.policy == "sticky_learn", ttl=ttl,
                                          sessions=sessions, cookie_name=cookie_name)
    return Runtime(config, pools, routes)
