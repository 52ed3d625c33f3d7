"""The regional LB process: listeners, admin, health checks, discovery, reload  [edge].

    lb = LoadBalancer(config)            # seams: store, resolver, clock, wall, rng, upstream;
                                         # server="aiohttp" to serve every request through aiohttp
                                         # (default: the config's `server` option, "fast")
    await lb.start()                     # binds listeners (port 0 allowed) and the admin API
    lb.listen_addresses / lb.admin_address
    await lb.reload(new_config)          # validated config in; keeps pool state of pools it keeps
    await lb.stop()                      # stops accepting, lets in-flight requests finish

`Runtime` is one config generation: the route table, pools, policies and forwarding
settings. A request reads `lb.rt` once when it starts, so a reload never changes the rules
under a request in flight; pools and policies whose definition did not change are carried
over (their health, load, outlier state and round-robin position survive a reload); a pool
rebuilt because its settings changed starts from the old one's health when its health check
settings are the same. A restarted health checker (reload, discovery change) starts from the
pool's current health, so a backend known DOWN comes back as soon as `rise` probes pass.

Two clocks, both injected: `clock` (default `time.monotonic`) for every interval, timeout and
timer -- pool drain deadlines, ejections, slow start, EWMA decay, health check intervals, the
stick table, latency batches, request durations -- so a wall-clock step moves none of them;
`wall` (default `time.time`) only for what must survive restarts and agree across replicas:
sticky cookie issue and expiry times (the `now` a policy's `pick` gets), and the absolute
times the admin API shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gslb.common.checker import CheckTarget, HealthChecker
from gslb.common.configload import ConfigError
from gslb.common.health import Health
from gslb.common.probe import ProbeResult, ProbeSpec
from regional_lb import feed as state_feed
from regional_lb.balancing.base import Backend
from regional_lb.config import Config, Listener, load_config
from regional_lb.discovery import Discovery, Resolver
from regional_lb.metrics import Metrics
from regional_lb.runtime import PoolRuntime, Runtime, build_runtime
from regional_lb.seams import AdminTarget

log = logging.getLogger("regional_lb")

# "all": one process does everything (workers: 1, and most tests); "supervisor": health checks,
# discovery, the admin API and reloads, no listeners; "worker": the listeners only, told health,
# drains and discovery by its supervisor (regional_lb/supervisor.py, regional_lb/worker.py).
ROLES = ("all", "supervisor", "worker")


def ssl_context(listener: Listener) -> ssl.SSLContext | None:
    if listener.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(listener.tls.cert), str(listener.tls.key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class LoadBalancer:
    """The whole regional LB (see the module docstring)."""

    def __init__(self, config: Config, *, config_path: str | Path | None = None, store: Any = None,
                 resolver: Resolver | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None, upstream: Any = None,
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
        self.metrics.add_core(lambda: self.rt)
        self._store = store
        self._resolver = resolver
        self._upstream = upstream
        self._probe = probe
        self.store: Any = None
        self.upstream: Any = None
        self.discovery: Discovery | None = None
        self._runners: list[web.BaseRunner] = []
        self.listen_addresses: list[tuple[str, int]] = []
        self.admin_address: tuple[str, int] | None = None
        self._reload_lock = asyncio.Lock()
        self.started = False
        self.shared_inflight = config.state.backend == "redis"   # in-flight counts from the store
        self._rtt_source = rtt_source          # seam: loopback RTTs are all ~0, tests inject their own
        self.pusher: Any = None                # LatencyPusher when `latency_push` is configured
        # "fast": plain keep-alive requests on a raw asyncio.Protocol, the rest handed to aiohttp
        # (regional_lb/proxy/fast.py); "aiohttp": every request through aiohttp's server.
        # None: the config's `server` option (default "fast"); read at start, not on reload.
        if server is None:
            server = config.server
        if server not in ("fast", "aiohttp"):
            raise ValueError(f"server must be 'fast' or 'aiohttp', not {server!r}")
        self.server_kind = server
        self._fast: list[tuple[asyncio.AbstractServer, Any]] = []
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.role = role                       # see ROLES
        self.reuse_port = reuse_port           # SO_REUSEPORT on the listeners (workers share the ports)
        self.worker_id = worker_id             # shown in /lb/healthz (which worker answered)
        self._feed = feed                      # supervisor: state changes for the workers (regional_lb/feed.py)
        self._admin_target = admin_target      # supervisor: the admin API's view of all the workers

    def __repr__(self) -> str:
        return f"<LoadBalancer {self.config.region} {self.rt!r}>"

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        from regional_lb.admin_api import make_admin_app
        from regional_lb.proxy.handler import ProxyHandler
        from regional_lb.proxy.server import ProxyServer, listen_backlog
        from regional_lb.proxy.upstream import Upstream

        cfg = self.config
        self.store = self._store if self._store is not None else _default_store(cfg, self.clock)
        self.upstream = self._upstream or Upstream(connect_timeout=cfg.timeouts.connect,
                                                   read_timeout=cfg.timeouts.backend_read,
                                                   max_header_size=max(cfg.limits.max_header_size, 65536))
        if cfg.latency_push is not None:
            from regional_lb.latency_push import LatencyPusher
            seams: dict[str, Any] = {"clock": self.clock}
            if self._rtt_source is not None:
                seams["rtt_source"] = self._rtt_source
            self.pusher = LatencyPusher.from_settings(cfg.latency_push, region=cfg.region, **seams)
            self.pusher.start()
        observe = self.pusher.observe if self.pusher is not None else None
        try:
            for listener in (cfg.listeners if self.role != "supervisor" else ()):
                server = ProxyServer(ProxyHandler(self, listener), header_timeout=cfg.timeouts.header_read,
                                     observe_rtt=observe,
                                     keepalive_timeout=cfg.timeouts.client_idle,
                                     max_line_size=cfg.limits.max_header_size,
                                     max_field_size=cfg.limits.max_header_size,
                                     max_headers=cfg.limits.max_headers, access_log=None,
                                     auto_decompress=False)
                if self.server_kind == "fast":
                    await self._start_fast(listener, server, observe)
                    continue
                runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
                await runner.setup()
                self._runners.append(runner)
                site = web.TCPSite(runner, listener.host, listener.port, ssl_context=ssl_context(listener),
                                   reuse_address=True, reuse_port=self.reuse_port or None,
                                   backlog=listen_backlog(listener.backlog))
                await site.start()
                self.listen_addresses.append(_bound(runner))
            if cfg.admin.enabled and self.role != "worker":
                admin = web.AppRunner(make_admin_app(self._admin_target or self), handle_signals=False,
                                      access_log=None)
                await admin.setup()
                self._runners.append(admin)
                site = web.TCPSite(admin, cfg.admin.host, cfg.admin.port, reuse_address=True)
                await site.start()
                self.admin_address = _bound(admin)
            if self.role != "worker":           # a worker is told health and discovery by its supervisor
                await self._start_checkers(self.rt)
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
        for pr in self.rt.pools.values():
            await self._stop_checker(pr)
        for srv, _ in self._fast:
            srv.close()                     # stop accepting
        for srv, fast in self._fast:
            await fast.shutdown(5.0)        # in-flight requests finish, then connections close
            await srv.wait_closed()
        self._fast = []
        for runner in reversed(self._runners):
            await runner.cleanup()          # stops accepting, waits for in-flight handlers
        self._runners = []
        if self.upstream is not None:
            await self.upstream.close()
            self.upstream = None
        if self.pusher is not None:
            await self.pusher.close()
            self.pusher = None
        if self.store is not None and self._store is None:
            await self.store.close()
        self.store = None
        self.started = False

    async def _start_fast(self, listener: Listener, server: Any, observe: Any) -> None:
        from regional_lb.proxy.fast import FastHandler, FastServer
        from regional_lb.proxy.server import listen_backlog

        cfg = self.config
        fast = FastServer(FastHandler(self, listener), server, header_timeout=cfg.timeouts.header_read,
                          idle_timeout=cfg.timeouts.client_idle, max_line=cfg.limits.max_header_size,
                          max_headers=cfg.limits.max_headers, observe_rtt=observe)
        srv = await asyncio.get_running_loop().create_server(
            fast, listener.host, listener.port, ssl=ssl_context(listener), reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=listen_backlog(listener.backlog))
        self._fast.append((srv, fast))
        addr = srv.sockets[-1].getsockname()
        self.listen_addresses.append((str(addr[0]), int(addr[1])))

    # -- health checks -------------------------------------------------------------------
    def _targets(self, pr: PoolRuntime) -> list[CheckTarget]:
        hc = pr.config.settings.health
        if hc.type == "none":
            return []
        targets = []
        for b in pr.backends():
            spec = ProbeSpec(hc.type, b.host, b.port, hc.path, "http", tuple(hc.expect_status), hc.timeout,
                             host_header=hc.host_header)
            targets.append(CheckTarget(b.id, spec, hc.interval, hc.thresholds, assume_up=hc.assume_up))
        return targets

    async def _start_checkers(self, rt: Runtime) -> None:
        for pr in rt.pools.values():
            await self._restart_checker(pr)

    async def _restart_checker(self, pr: PoolRuntime) -> None:
        await self._stop_checker(pr)
        if self.role == "worker":
            return
        targets = self._targets(pr)
        if not targets:
            return

        pool = pr.pool

        def on_result(backend_id: str, health: Health, result: ProbeResult) -> None:
            pool.set_health(backend_id, health, self.clock(), probe_ok=result.ok)
            if self._feed is not None:
                self._feed(state_feed.health_message(pr.name, backend_id, health, result.ok))

        def on_change(backend_id: str, health: Health, result: ProbeResult, name: str = pr.name) -> None:
            self.metrics.health_transitions.labels(name, backend_id, health.status.value).inc()

        # start from what the pool knows, not from `assume`: a backend known DOWN must come back
        # through `rise` passing probes, which the new checker then reports
        initial = {t.name: h for t in targets if (h := pool.health(t.name)) is not None}
        pr.checker = HealthChecker(targets, on_change=on_change, on_result=on_result, probe=self._probe,
                                   clock=self.clock, initial=initial)
        await pr.checker.start()

    async def _stop_checker(self, pr: PoolRuntime) -> None:
        if pr.checker is not None:
            await pr.checker.stop()
            pr.checker = None

    async def set_discovered(self, pool_name: str, key: Any, backends: tuple[Backend, ...]) -> None:
        """Discovery found `backends` for `key` (a DnsBackends) of `pool_name`."""
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
                    elif rr.learns and self.store is not None:
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


def _default_store(config: Config, clock: Callable[[], float]) -> Any:
    if config.state.backend == "redis":
        from regional_lb.state.redis import RedisStore
        assert config.state.url is not None             # the config loader requires it for redis
        return RedisStore.from_url(config.state.url, key_prefix=config.state.key_prefix, clock=clock)
    try:
        from regional_lb.state.memory import MemoryStore
    except ImportError:                      # CORE's module not there yet
        return None
    return MemoryStore(clock=clock) if _accepts_clock(MemoryStore) else MemoryStore()


def _accepts_clock(cls: Any) -> bool:
    import inspect
    with contextlib.suppress(TypeError, ValueError):
        return "clock" in inspect.signature(cls).parameters
    return False


def _bound(runner: web.BaseRunner) -> tuple[str, int]:
    addr = runner.addresses[-1]
    return str(addr[0]), int(addr[1])
