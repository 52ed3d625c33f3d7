"""The regional LB process: wiring of its parts  [edge].

    lb = LoadBalancer(config)            # seams: store, resolver, clock, wall, rng, upstream, probe;
                                         # server="aiohttp" to serve every request through aiohttp
                                         # (default: the config's `server` option, "fast")
    await lb.start()                     # connects the store, binds listeners (port 0 allowed) and the admin API
    lb.listen_addresses / lb.admin_address
    await lb.reload(new_config)          # validated config in; keeps pool state of pools it keeps
    await lb.stop()                      # stops accepting, lets in-flight requests finish
                                         # (a LoadBalancer runs once: start, then stop)

LoadBalancer owns the current config generation (`rt`) and wires the parts, each with one job.
Its state store (`store`: regional_lb.state.base.StateStore, built from the config's `state:`
section unless one is passed in) and upstream client (`upstream`: regional_lb.seams.UpstreamClient)
are built with it, so they are always there and typed; `start()` connects the store (Redis: before
the first request), `stop()` closes what it built (a store passed in is the caller's to close).

    regional_lb/runtime.py     Runtime: one config generation (routes, pools, policies) [pure]
    regional_lb/listeners.py   Listeners: the HTTP listeners, either server kind
    regional_lb/proxy/         a request, seen through regional_lb.seams.ProxyContext
    regional_lb/checks.py      PoolChecks: active health checks per pool
    regional_lb/discovery.py   DNS discovery (regional_lb.seams.DiscoveryTarget)
    regional_lb/admin_api.py   the admin API (regional_lb.seams.AdminTarget)
    regional_lb/feed.py        state changes for worker processes (`feed` hook)

`role` (ROLES): "all" (one process does everything: `workers: 1`, and most tests),
"supervisor" (checks, discovery, admin API, reloads; no listeners) or "worker" (listeners only;
health, drains and discovery are applied from its supervisor's feed): regional_lb/supervisor.py
and regional_lb/worker.py run the last two.

A request reads `lb.rt` once when it starts, so a reload never changes the rules under a
request in flight (regional_lb/runtime.py says what a reload carries over). A restarted health
checker (reload, discovery change) starts from the pool's current health, so a backend known
DOWN comes back as soon as `rise` probes pass.

Two clocks, both injected: `clock` (default `time.monotonic`) for every interval, timeout and
timer -- pool drain deadlines, ejections, slow start, EWMA decay, health check intervals, the
stick table, latency batches, request durations -- so a wall-clock step moves none of them;
`wall` (default `time.time`) only for what must survive restarts and agree across replicas:
sticky cookie issue and expiry times (the `now` a policy's `pick` gets), and the absolute
times the admin API shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gslb.common.configload import ConfigError
from gslb.common.health import Health
from gslb.common.probe import ProbeResult
from regional_lb import feed as state_feed
from regional_lb.balancing.base import Backend
from regional_lb.checks import PoolChecks
from regional_lb.config import Config, DnsBackends, load_config
from regional_lb.discovery import Discovery, Resolver
from regional_lb.listeners import SERVER_KINDS, Listeners
from regional_lb.metrics import Metrics
from regional_lb.proxy.upstream import Upstream
from regional_lb.runtime import PoolRuntime, Runtime, build_runtime
from regional_lb.seams import AdminTarget, UpstreamClient
from regional_lb.state.base import StateStore
from regional_lb.state.memory import MemoryStore

if TYPE_CHECKING:
    from regional_lb.latency_push import LatencyPusher

log = logging.getLogger("regional_lb")

# "all": one process does everything (workers: 1, and most tests); "supervisor": health checks,
# discovery, the admin API and reloads, no listeners; "worker": the listeners only, told health,
# drains and discovery by its supervisor (regional_lb/supervisor.py, regional_lb/worker.py).
ROLES = ("all", "supervisor", "worker")


class LoadBalancer:
    """The whole regional LB (see the module docstring)."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None, store: StateStore | None = None,
                 resolver: Resolver | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 upstream: UpstreamClient | None = None,
                 probe: Any = None, rtt_source: Callable[[Any], float | None] | None = None,
                 server: str | None = None, role: str = "all", reuse_port: bool = False,
                 worker_id: int | None = None, feed: Callable[[dict[str, Any]], None] | None = None,
                 admin_target: AdminTarget | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.clock = clock                     # monotonic: every interval and timer
        self.wall = wall                       # wall clock: sticky cookie times, admin display only
        self.rng = rng or random.Random()
        self.metrics = Metrics()
        self.rt: Runtime = build_runtime(config, previous=None, now=clock(), clock=clock)
        self._owns_store = store is None
        self.store: StateStore = store if store is not None else _default_store(config, clock)
        self.upstream: UpstreamClient = upstream if upstream is not None else Upstream(
            connect_timeout=config.timeouts.connect, read_timeout=config.timeouts.backend_read,
            max_header_size=max(config.limits.max_header_size, 65536))    # opens nothing until used
        self.metrics.add_core(lambda: self.rt)
        self.metrics.add_store(lambda: self.store)
        self._resolver = resolver
        self.discovery: Discovery | None = None
        self._runners: list[web.BaseRunner] = []
        self.listen_addresses: list[tuple[str, int]] = []
        self.admin_address: tuple[str, int] | None = None
        self._reload_lock = asyncio.Lock()
        self.started = False
        self._opened = False                   # start() began: stop() closes the store and upstream once
        self.shared_inflight = config.state.backend == "redis"   # in-flight counts from the store
        self._rtt_source = rtt_source          # seam: loopback RTTs are all ~0, tests inject their own
        self.pusher: LatencyPusher | None = None   # when `latency_push` is configured
        # "fast": plain keep-alive requests on a raw asyncio.Protocol, the rest handed to aiohttp
        # (regional_lb/proxy/fast.py); "aiohttp": every request through aiohttp's server.
        # None: the config's `server` option (default "fast"); read at start, not on reload.
        if server is None:
            server = config.server
        if server not in SERVER_KINDS:
            raise ValueError(f"server must be 'fast' or 'aiohttp', not {server!r}")
        self.server_kind = server
        self.listeners: Listeners | None = None      # the HTTP listeners (not in the supervisor)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.role = role                       # see ROLES
        self.reuse_port = reuse_port           # SO_REUSEPORT on the listeners (workers share the ports)
        self.worker_id = worker_id             # shown in /lb/healthz (which worker answered)
        self._feed = feed                      # supervisor: state changes for the workers (regional_lb/feed.py)
        self._admin_target = admin_target      # supervisor: the admin API's view of all the workers
        # active health checks: run where health is owned (one process, or the supervisor), not in a worker
        self.checks = None if role == "worker" else PoolChecks(clock=clock, probe=probe, on_result=self._on_probe,
                                                               on_change=self._on_health_change)

    def __repr__(self) -> str:
        return f"<LoadBalancer {self.config.region} {self.rt!r}>"

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        from regional_lb.admin_api import make_admin_app

        cfg = self.config
        self._opened = True
        await self.store.start()              # connected before the first request (RedisStore)
        serves = self.role != "supervisor"     # the supervisor proxies nothing: its upstream stays unused, no RTTs
        if cfg.latency_push is not None and serves:
            from regional_lb.latency_push import LatencyPusher
            seams: dict[str, Any] = {"clock": self.clock}
            if self._rtt_source is not None:
                seams["rtt_source"] = self._rtt_source
            self.pusher = LatencyPusher.from_settings(cfg.latency_push, region=cfg.region, **seams)
            self.pusher.start()
        observe = self.pusher.observe if self.pusher is not None else None
        try:
            if serves:
                self.listeners = Listeners(self, cfg, server_kind=self.server_kind, reuse_port=self.reuse_port,
                                           observe_rtt=observe)
                await self.listeners.start()
                self.listen_addresses = self.listeners.addresses
            if cfg.admin.enabled and self.role != "worker":
                admin = web.AppRunner(make_admin_app(self._admin_target or self), handle_signals=False,
                                      access_log=None)
                await admin.setup()
                self._runners.append(admin)
                site = web.TCPSite(admin, cfg.admin.host, cfg.admin.port, reuse_address=True)
                await site.start()
                self.admin_address = _bound(admin)
            if self.checks is not None:         # a worker is told health and discovery by its supervisor
                await self.checks.start_all(self.rt)
                self.discovery = Discovery(self, resolver=self._resolver)
                await self.discovery.start()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        log.info("regional LB %s (%s) listening on %s", cfg.region, cfg.role,
                 ", ".join(f"{h}:{p}" for h, p in self.listen_addresses))

    async def stop(self) -> None:
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        if self.checks is not None:
            await self.checks.stop_all(self.rt)
        if self.listeners is not None:
            await self.listeners.stop(5.0)  # stops accepting; in-flight requests finish
            self.listeners = None
        for runner in reversed(self._runners):
            await runner.cleanup()          # stops accepting, waits for in-flight handlers
        self._runners = []
        if self.pusher is not None:
            await self.pusher.close()
            self.pusher = None
        if self._opened:                    # once, however often stop() is called
            self._opened = False
            await self.upstream.close()
            if self._owns_store:
                await self.store.close()
        self.started = False

    async def _restart_checker(self, pr: PoolRuntime) -> None:
        if self.checks is not None:
            await self.checks.restart(pr)

    async def _stop_checker(self, pr: PoolRuntime) -> None:
        if self.checks is not None:
            await self.checks.stop(pr)

    def _on_probe(self, pool: str, backend_id: str, health: Health, result: ProbeResult) -> None:
        if self._feed is not None:
            self._feed(state_feed.health_message(pool, backend_id, health, result.ok))

    def _on_health_change(self, pool: str, backend_id: str, health: Health, _result: ProbeResult) -> None:
        self.metrics.health_transitions.labels(pool, backend_id, health.status.value).inc()

    async def set_discovered(self, pool_name: str, key: DnsBackends, backends: tuple[Backend, ...]) -> None:
        """Discovery found `backends` for `key` of `pool_name`."""
        pr = self.rt.pools.get(pool_name)
        if pr is None or pr.discovered.get(key) == backends:
            return
        pr.discovered[key] = backends
        if self._feed is not None:
            self._feed(state_feed.discovered_message(pool_name, key, backends))
        pr.pool.update_backends(pr.backends(), self.clock())
        log.info("pool %s: %s now resolves to %s", pool_name, key, ", ".join(b.id for b in backends) or "nothing")
        await self._restart_checker(pr)

    # -- reload ------------------------------------------------------------------------
    async def reload(self, config: Config | None = None) -> tuple[bool, str]:
        """Switch to `config` (or re-read config_path). On any error keep the running config."""
        async with self._reload_lock:
            try:
                if config is None:
                    if self.config_path is None:
                        raise ConfigError("<none>", "", "no config file to reload from")
                    config = load_config(self.config_path)
                new_rt = build_runtime(config, previous=self.rt, now=self.clock(), clock=self.clock)
            except ConfigError as exc:
                log.error("reload refused, keeping the running config: %s", exc)
                self.metrics.reloads.labels("error").inc()
                return False, str(exc)
            except Exception as exc:
                log.exception("reload failed, keeping the running config")
                self.metrics.reloads.labels("error").inc()
                return False, f"{type(exc).__name__}: {exc}"
            old_rt = self.rt
            if (config.listeners != self.config.listeners or config.admin != self.config.admin):
                log.warning("reload: listener/admin changes take effect at the next restart")
            self.config = config
            self.rt = new_rt
            for name, pr in old_rt.pools.items():
                if new_rt.pools.get(name) is None or new_rt.pools[name].pool is not pr.pool:
                    await self._stop_checker(pr)
            for pr in new_rt.pools.values():
                old = old_rt.pools.get(pr.name)
                if old is not None and old.pool is pr.pool:
                    pr.checker = old.checker
                    if old.backends() != pr.backends():
                        await self._restart_checker(pr)
                else:
                    await self._restart_checker(pr)
            if self.discovery is not None:
                await self.discovery.restart()
            self.metrics.reloads.labels("ok").inc()
            log.info("reloaded config: %r", new_rt)
            return True, "reloaded"

    # -- admin ---------------------------------------------------------------------------
    async def set_admin(self, pool: str, backend_id: str, state: str, deadline: float | None) -> None:
        """READY / DRAIN / MAINTENANCE for a backend; `deadline` absolute, monotonic."""
        self.rt.pools[pool].pool.set_admin(backend_id, state, self.clock(), deadline)
        if self._feed is not None:
            self._feed(state_feed.admin_message(pool, backend_id, state, deadline))

    async def refresh_metrics(self) -> None:
        """One process: the registry reads live counters at scrape time already."""

    async def workers_report(self) -> list[dict[str, Any]]:
        """One process, no workers."""
        return []

    # -- reports -----------------------------------------------------------------------
    async def pools_report(self) -> dict[str, Any]:
        """Pools as the admin API shows them; deadlines as wall-clock epoch seconds."""
        now = self.clock()
        wall_now = self.wall()
        out: dict[str, Any] = {}
        for name, pr in self.rt.pools.items():
            rows = []
            for row in pr.status_rows(now):
                row = dict(row)
                for k in ("drain_deadline", "ejected_until"):      # monotonic in the pool
                    if row.get(k) is not None:
                        row[k] = round(wall_now + (float(row[k]) - now), 3)
                bid = str(row["id"])
                sticky: dict[str, int] = {}
                for rr in self.rt.routes.values():
                    if rr.pool is not pr:
                        continue
                    if rr.sessions is not None:
                        sticky[rr.route.name] = rr.sessions.count(bid, now)
                    elif rr.learns:
                        sticky[rr.route.name] = await self.store.count_sticky(rr.route.name, bid)
                row["sticky_sessions"] = sticky
                rows.append(row)
            h, t = pr.healthy_total(now)
            out[name] = {"backends": rows, "healthy": h, "total": t, "repr": repr(pr.pool)}
        return out

    def healthz_body(self) -> tuple[int, bytes]:
        status, body = self.rt.healthz(self.clock())
        if self.worker_id is not None:
            body["worker"] = self.worker_id
            body["pid"] = os.getpid()
        return status, json.dumps(body).encode()


def _default_store(config: Config, clock: Callable[[], float]) -> StateStore:
    """The config's `state:` backend; RedisStore connects nothing until `start()`."""
    if config.state.backend == "redis":
        from regional_lb.state.redis import RedisStore
        return RedisStore.from_settings(config.state, clock=clock)
    return MemoryStore(clock=clock)


def _bound(runner: web.BaseRunner) -> tuple[str, int]:
    addr = runner.addresses[-1]
    return str(addr[0]), int(addr[1])
