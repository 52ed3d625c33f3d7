"""The supervisor of `workers: N` (N > 1 or auto): one process that owns state, N that serve  [edge].

    sup = Supervisor(config, config_path="edge.yaml")     # config.workers worker processes
    await sup.start()        # admin API, health checks, discovery; then the workers, each "ready"
    await sup.reload()       # re-read the file; every worker reloads to it (SIGHUP in `serve`)
    await sup.stop()         # SIGTERM to every worker (they finish what is in flight), then itself

What runs where:

    supervisor   config loading and reload, health checks (once, not once per worker), DNS
                 discovery, the admin API (drains, maintenance, reload, /metrics, stats page),
                 worker restarts. A LoadBalancer(role="supervisor"): no listeners.
    worker       the HTTP listeners, bound with SO_REUSEPORT (regional_lb/worker.py), either
                 server kind (fast or aiohttp). A LoadBalancer(role="worker").

State flows one way, supervisor -> workers, over a socketpair per worker (regional_lb/feed.py;
the worker pool, channel and framing are shared with the GSLB: gslb/common/workers.py): every
health check result, admin change and discovery change is sent to every worker the moment it
happens (applied within milliseconds; the test asks for 100 ms), and a reload sends the config
text the supervisor validated with a new generation number. A worker (re)started later first
gets the config and a snapshot of the pools' state, then serves.

Listener ports: a `listen` port of 0 is resolved once, by the supervisor binding (not
listening on) an SO_REUSEPORT socket that it keeps for its lifetime: every worker, restarted
ones included, then binds the same port. As with nginx's `reuseport`, the kernel lets any
process of the same user that also sets SO_REUSEPORT join a port: a second instance started
on the same address by mistake shares the traffic instead of failing to bind.

Worker death: a worker that exits without being asked is started again after a back-off
(RESTART_BACKOFF: 0.1 s doubling to 5 s; back to 0.1 s once a worker has run 10 s); the
others keep serving meanwhile. Connections accepted by the dead worker are lost with it (the
requests in flight on it, and any still in its accept queue); new ones go to the others.

/metrics: the supervisor asks every worker for its counters and sums them with its own
(gslb/common/metrics_merge.py); `rlb_workers` and `rlb_worker_restarts` are its own. The pool
report (/api/pools, `ctl pools`) is the supervisor's health and admin state with each backend's
requests in flight and sticky-cookie sessions summed over the workers, and the workers whose
passive outlier detection has it ejected (`ejected_in_workers`): each worker ejects on its own.

Signals (regional_lb/cli.py `serve`): SIGTERM/SIGINT stop (workers drain, then exit); SIGHUP
reloads; listener changes, as in one process, need a restart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gslb.common.configload import ConfigError
from gslb.common.metrics_merge import MergedCollector, Wire, WorkersCollector, families_to_wire
from gslb.common.workers import WorkerPool, WorkerProcess, WorkerStartError
from regional_lb import feed
from regional_lb.app import LoadBalancer
from regional_lb.config import Config, Listener, parse_config
from regional_lb.runtime import Runtime

log = logging.getLogger("regional_lb.supervisor")

# families whose value is the supervisor's own (health and admin state, checks, reloads), not a sum
SUPERVISOR_ONLY = frozenset({"rlb_backend_up", "rlb_health_transitions", "rlb_config_reloads"})

__all__ = ["SUPERVISOR_ONLY", "Supervisor", "WorkerStartError", "request_counts", "resolve_listeners"]


def request_counts(wire: Wire) -> dict[tuple[str, str], tuple[int, int]]:
    """(pool, backend) -> (requests, 5xx answers) from `rlb_requests` samples (the stats page)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for name, _typ, _doc, samples in wire:
        if name != "rlb_requests":
            continue
        for sample_name, labels, value in samples:
            if not str(sample_name).endswith("_total"):
                continue
            key = (str(labels.get("pool")), str(labels.get("backend")))
            requests, errors = out.get(key, (0, 0))
            n = int(value)
            out[key] = (requests + n, errors + (n if labels.get("code") == "5xx" else 0))
    return out


class WorkersMetrics:
    """The admin API's metrics with workers: the supervisor's registry with the workers' summed in."""

    def __init__(self, sup: Supervisor, own: CollectorRegistry) -> None:
        self.snapshots: list[Wire] = []       # each ready worker's families at the last refresh
        self.by_worker: dict[int, Wire] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MergedCollector(own, lambda: self.snapshots, SUPERVISOR_ONLY))
        self.registry.register(WorkersCollector("rlb", "Worker processes serving (ready)", lambda: sup.workers))

    def update(self, snapshots: list[Wire], workers: list[Any]) -> None:
        self.snapshots = snapshots
        self.by_worker = {w: s for w, s in zip(workers, snapshots, strict=True) if isinstance(w, int)}

    def backend_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        return request_counts(families_to_wire(self.registry))


def resolve_listeners(listeners: tuple[Listener, ...]) -> tuple[list[tuple[str, int]], list[socket.socket]]:
    """Each listener's (host, port), a port 0 resolved by binding an SO_REUSEPORT socket that the
    caller keeps open (not listening: it takes no connections) so every worker gets that port."""
    ports: list[tuple[str, int]] = []
    holders: list[socket.socket] = []
    try:
        for lst in listeners:
            if lst.port:
                ports.append((lst.host, lst.port))
                continue
            family = socket.getaddrinfo(lst.host, 0, type=socket.SOCK_STREAM)[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            holders.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((lst.host, 0))
            ports.append((lst.host, int(sock.getsockname()[1])))
    except BaseException:
        for sock in holders:
            sock.close()
        raise
    return ports, holders


class Supervisor:
    """See the module docstring. Satisfies regional_lb.seams.AdminTarget (the admin API's view)."""

    def __init__(self, config: Config, *, config_path: str | Path, workers: int | None = None,
                 clock: Callable[[], float] = time.monotonic, log_level: str = "info",
                 access_log: bool = False, **seams: Any) -> None:
        self.config_path = Path(config_path)
        self.count = workers if workers is not None else config.workers
        self.clock = clock
        self.lb = LoadBalancer(config, config_path=config_path, role="supervisor", clock=clock,
                               feed=self._broadcast, admin_target=self, **seams)
        self.metrics = WorkersMetrics(self, self.lb.metrics.registry)
        self.pool = WorkerPool(self.count, module="regional_lb.worker", hello=self._hello,
                               name=f"regional LB {config.region}", clock=clock,
                               args=["--log-level", log_level, *(["--access-log"] if access_log else [])])
        self._text = self.config_path.read_text()
        self._ports: list[tuple[str, int]] = []
        self._holders: list[socket.socket] = []
        self._reload_lock = asyncio.Lock()
        self.listen_addresses: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        return f"<Supervisor {self.config.region} {self.pool!r}>"

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.pool.workers

    @property
    def generation(self) -> int:
        return self.pool.generation

    # -- the AdminTarget view ----------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self.lb.config

    @property
    def rt(self) -> Runtime:
        return self.lb.rt

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return self.lb.admin_address

    async def pools_report(self) -> dict[str, Any]:
        """The supervisor's pools (health, admin state) with what the workers know added: requests in
        flight and sticky-cookie sessions summed over the workers (a session that reached two
        workers counts twice), and the workers that have the backend ejected (passive outlier
        detection runs in each worker)."""
        report = await self.lb.pools_report()
        views = [(r.get("worker"), r["pools"]) for r in await self.pool.ask_all({"t": "pools"}, reply="pools_reply")
                 if isinstance(r.get("pools"), dict)]
        for name, pool in report.items():
            for row in pool["backends"]:
                bid = str(row["id"])
                seen = [(w, s) for w, v in views if isinstance(s := v.get(name, {}).get(bid), dict)]
                row["inflight"] = int(row.get("inflight", 0)) + sum(int(s.get("inflight", 0)) for _, s in seen)
                sticky = dict(row.get("sticky_sessions") or {})
                for _, s in seen:
                    for route, n in (s.get("sessions") or {}).items():
                        sticky[route] = sticky.get(route, 0) + int(n)
                row["sticky_sessions"] = sticky
                row["ejected_in_workers"] = [i for i, s in seen if s.get("ejected")]
        return report

    def healthz_body(self) -> tuple[int, bytes]:
        return self.lb.healthz_body()

    async def set_admin(self, pool: str, backend_id: str, state: str, deadline: float | None) -> None:
        await self.lb.set_admin(pool, backend_id, state, deadline)      # broadcast by the feed hook

    async def refresh_metrics(self) -> None:
        replies = await self.pool.ask_all({"t": "metrics"}, reply="metrics_reply")
        self.metrics.update([r["families"] for r in replies if isinstance(r.get("families"), list)],
                            [r.get("worker") for r in replies])

    async def workers_report(self) -> list[dict[str, Any]]:
        """GET /api/workers: each worker's process, restarts and proxied requests (fresh counts)."""
        await self.refresh_metrics()
        rows = []
        for w in self.workers:
            wire = self.metrics.by_worker.get(w.id)
            requests = sum(r for r, _errors in request_counts(wire).values()) if wire is not None else None
            rows.append({"id": w.id, "pid": w.pid, "ready": w.ready, "restarts": w.restarts,
                         "generation": w.generation, "requests": requests})
        return rows

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._ports, self._holders = resolve_listeners(self.config.listeners)
        self.listen_addresses = list(self._ports)
        try:
            await self.lb.start()
            await self.pool.start()             # WorkerStartError when one cannot start
        except BaseException:
            await self.stop()
            raise
        log.info("regional LB %s: %d workers serving %s", self.config.region, self.count,
                 ", ".join(f"{h}:{p}" for h, p in self._ports))

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests in flight), wait, then stop the rest."""
        await self.pool.stop()
        await self.lb.stop()
        for sock in self._holders:
            sock.close()
        self._holders = []

    async def reload(self, config: Config | None = None) -> tuple[bool, str]:
        """Re-read the config file; if it is valid, the supervisor and then every worker switch to it.
        One at a time (SIGHUP and the admin API may ask at once): generations reach workers in order."""
        async with self._reload_lock:
            return await self._reload(config)

    async def _reload(self, config: Config | None) -> tuple[bool, str]:
        try:
            text = self.config_path.read_text()
            if config is None:
                config = parse_config(text, file=str(self.config_path), base_dir=self.config_path.parent)
        except (OSError, ConfigError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.lb.metrics.reloads.labels("error").inc()
            return False, str(exc)
        ok, message = await self.lb.reload(config)
        if not ok:
            return ok, message
        if config.workers != self.count:
            log.warning("reload: workers: %d takes effect at the next restart (%d running)", config.workers,
                        self.count)
        self.pool.generation += 1
        self._text = text
        replies = await self.pool.ask_all(self._config_message(), reply="reloaded")
        failed = [r for r in replies if not r.get("ok")]
        if failed:
            return False, f"supervisor reloaded; {len(failed)} worker(s) refused: {failed[0].get('message')}"
        return True, f"reloaded (generation {self.generation}, {len(replies)} workers)"

    # -- workers -----------------------------------------------------------------------------------
    def _config_message(self) -> dict[str, Any]:
        return {"t": "config", "generation": self.generation, "text": self._text, "file": str(self.config_path),
                "listen": [list(p) for p in self._ports]}

    def _hello(self, _worker: WorkerProcess) -> list[dict[str, Any]]:
        """What a starting worker gets before "go": the config, then the pools' state."""
        return [self._config_message(), *feed.snapshot(self.lb.rt, self.clock())]

    def _broadcast(self, message: dict[str, Any]) -> None:
        self.pool.broadcast(message)
