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

State flows one way, supervisor -> workers, over a socketpair per worker (regional_lb/feed.py,
regional_lb/channel.py): every health check result, admin change and discovery change is sent
to every worker the moment it happens (applied within milliseconds; the test asks for 100 ms),
and a reload sends the config text the supervisor validated with a new generation number. A
worker (re)started later first gets the config and a snapshot of the pools' state, then serves.

Listener ports: a `listen` port of 0 is resolved once, by the supervisor binding (not
listening on) an SO_REUSEPORT socket that it keeps for its lifetime: every worker, restarted
ones included, then binds the same port.

Worker death: a worker that exits without being asked is started again after a back-off
(RESTART_BACKOFF: 0.1 s doubling to 5 s; back to 0.1 s once a worker has run 10 s); the
others keep serving meanwhile. Connections accepted by the dead worker are lost with it (the
requests in flight on it, and any still in its accept queue); new ones go to the others.

/metrics: the supervisor asks every worker for its counters and sums them with its own
(regional_lb/metrics_merge.py); `rlb_workers` and `rlb_worker_restarts` are its own. The pool
report (/api/pools, `ctl pools`) is the supervisor's health and admin state with each backend's
requests in flight and sticky-cookie sessions summed over the workers, and the workers whose
passive outlier detection has it ejected (`ejected_in_workers`): each worker ejects on its own.

Signals (regional_lb/cli.py `serve`): SIGTERM/SIGINT stop (workers drain, then exit); SIGHUP
reloads; listener changes, as in one process, need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gslb.common.configload import ConfigError
from regional_lb import feed
from regional_lb.app import LoadBalancer
from regional_lb.channel import Channel
from regional_lb.config import Config, Listener, parse_config
from regional_lb.metrics_merge import MergedCollector, Wire, families_to_wire, request_counts
from regional_lb.runtime import Runtime

log = logging.getLogger("regional_lb.supervisor")

RESTART_BACKOFF = (0.1, 5.0)        # first delay, longest delay (doubling between)
STABLE_AFTER = 10.0                 # a worker up this long resets the back-off
READY_TIMEOUT = 30.0                # a worker that is not ready by then is killed and restarted
STOP_TIMEOUT = 30.0                 # SIGTERM -> SIGKILL for a worker still draining
REPLY_TIMEOUT = 5.0                 # reload acknowledgements and metrics replies


class WorkerStartError(RuntimeError):
    """a worker process could not start (bind failed, crashed): the supervisor does not start either"""


class WorkerProcess:
    """One worker slot: its current process, channel and what it has answered."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.ready = False
        self.restarts = 0
        self.started_at = 0.0
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ready_event = asyncio.Event()          # set at the first "ready" (start() waits for it)
        self.run_ready = asyncio.Event()            # this run's "ready"
        self.generation = 0                         # the config generation this run was given

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __repr__(self) -> str:
        state = "ready" if self.ready else "starting" if self.proc is not None else "down"
        return f"<Worker {self.id} pid={self.pid} {state}, {self.restarts} restarts>"


class _SupervisorCollector(Collector):
    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("rlb_workers", "Worker processes serving (ready)")
        up.add_metric([], float(sum(1 for w in self._sup.workers if w.ready)))
        yield up
        restarts = CounterMetricFamily("rlb_worker_restarts", "Worker processes started again after dying",
                                       labels=["worker"])
        for w in self._sup.workers:
            restarts.add_metric([str(w.id)], float(w.restarts))
        yield restarts


class WorkersMetrics:
    """The admin API's metrics with workers: the supervisor's registry with the workers' summed in."""

    def __init__(self, sup: Supervisor, own: CollectorRegistry) -> None:
        self.snapshots: list[Wire] = []       # each ready worker's families at the last refresh
        self.by_worker: dict[int, Wire] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MergedCollector(own, lambda: self.snapshots))
        self.registry.register(_SupervisorCollector(sup))

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
        if self.count < 1:
            raise ValueError("workers must be at least 1")
        self.clock = clock
        self.log_level = log_level
        self.access_log = access_log
        self.lb = LoadBalancer(config, config_path=config_path, role="supervisor", clock=clock,
                               feed=self._broadcast, admin_target=self, **seams)
        self.metrics = WorkersMetrics(self, self.lb.metrics.registry)
        self.workers = [WorkerProcess(i) for i in range(self.count)]
        self.generation = 1
        self._text = self.config_path.read_text()
        self._ports: list[tuple[str, int]] = []
        self._holders: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ids = itertools.count(1)
        self._first_exit = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.listen_addresses: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        ready = sum(1 for w in self.workers if w.ready)
        return f"<Supervisor {self.config.region} [{ready}/{self.count} workers ready, generation {self.generation}]>"

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
        views = [(r.get("worker"), r["pools"]) for r in await self._ask_all({"t": "pools"}, reply="pools_reply")
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
        replies = await self._ask_all({"t": "metrics"})
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
            for w in self.workers:
                self._tasks.append(asyncio.get_running_loop().create_task(self._keep_running(w)))
            self._first_exit = asyncio.Event()
            waits = [asyncio.ensure_future(self._all_ready()), asyncio.ensure_future(self._first_exit.wait())]
            _done, pending = await asyncio.wait(waits, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if not all(w.ready_event.is_set() for w in self.workers):
                dead = [w.id for w in self.workers if w.restarts or (w.proc and w.proc.returncode is not None)]
                why = f"worker {dead[0]} exited before it was ready (its log says why)" if dead else \
                    f"the workers were not ready after {READY_TIMEOUT:.0f} s"
                raise WorkerStartError(f"regional LB {self.config.region}: {why}")
        except BaseException:
            await self.stop()
            raise
        log.info("regional LB %s: %d workers serving %s", self.config.region, self.count,
                 ", ".join(f"{h}:{p}" for h, p in self._ports))

    async def _all_ready(self) -> None:
        for w in self.workers:
            await w.ready_event.wait()

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests in flight), wait, then stop the rest."""
        self._stopping = True
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                try:
                    await asyncio.wait_for(w.proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("worker %d still draining after %.0f s: killed", w.id, STOP_TIMEOUT)
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
                    await w.proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
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
        self.generation += 1
        self._text = text
        replies = await self._ask_all(self._config_message(), reply="reloaded")
        failed = [r for r in replies if not r.get("ok")]
        if failed:
            return False, f"supervisor reloaded; {len(failed)} worker(s) refused: {failed[0].get('message')}"
        return True, f"reloaded (generation {self.generation}, {len(replies)} workers)"

    # -- workers -----------------------------------------------------------------------------------
    def _config_message(self) -> dict[str, Any]:
        return {"t": "config", "generation": self.generation, "text": self._text, "file": str(self.config_path),
                "listen": [list(p) for p in self._ports]}

    def _broadcast(self, message: dict[str, Any]) -> None:
        for w in self.workers:
            if w.channel is not None:           # a starting worker too: it applies it after its snapshot
                w.channel.send(message)

    async def _ask_all(self, message: dict[str, Any], *, reply: str = "metrics_reply") -> list[dict[str, Any]]:
        """Send `message` (with a fresh id) to every ready worker and gather the answers that come
        within REPLY_TIMEOUT (a worker that dies meanwhile is left out)."""
        waits = []
        for w in self.workers:
            if w.channel is None or not w.ready:
                continue
            rid = next(self._ids)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            w.replies[rid] = fut
            w.channel.send({**message, "id": rid})
            waits.append((w, rid, fut))
        out = []
        for w, rid, fut in waits:
            try:
                out.append(await asyncio.wait_for(fut, REPLY_TIMEOUT))
            except (TimeoutError, asyncio.CancelledError):
                log.warning("worker %d did not answer a %r in %.0f s", w.id, reply, REPLY_TIMEOUT)
            finally:
                w.replies.pop(rid, None)
        return out

    async def _keep_running(self, w: WorkerProcess) -> None:
        delay = RESTART_BACKOFF[0]
        while not self._stopping:
            w.started_at = self.clock()
            try:
                code = await self._run_once(w)
            except OSError as exc:
                log.error("worker %d could not be started: %s", w.id, exc)
                code = None
            if self._stopping:
                return
            if not w.ready_event.is_set():
                self._first_exit.set()          # start() gives up: a worker that cannot start once won't later
            if self.clock() - w.started_at >= STABLE_AFTER:
                delay = RESTART_BACKOFF[0]
            log.error("worker %d (pid %s) exited with %s; starting it again in %.1f s", w.id, w.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF[1])
            w.restarts += 1

    async def _run_once(self, w: WorkerProcess) -> int | None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            args = [sys.executable, "-m", "regional_lb.worker", "--fd", str(child.fileno()), "--id", str(w.id),
                    "--log-level", self.log_level]
            if self.access_log:
                args.append("--access-log")
            w.proc = await asyncio.create_subprocess_exec(*args, pass_fds=(child.fileno(),))
        finally:
            child.close()
        w.run_ready = asyncio.Event()
        w.generation = self.generation
        # from here to "go" nothing awaits: a state change broadcast meanwhile (the channel is
        # set) is queued after the snapshot, so the worker misses none
        channel = w.channel = await Channel.open(parent)
        channel.send(self._config_message())
        for message in feed.snapshot(self.lb.rt, self.clock()):
            channel.send(message)
        channel.send({"t": "go"})
        reader = asyncio.get_running_loop().create_task(self._read(w, channel))
        try:
            exited = asyncio.ensure_future(w.proc.wait())
            ready = asyncio.ensure_future(w.run_ready.wait())
            await asyncio.wait((exited, ready), timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not exited.done() and not w.run_ready.is_set():
                log.error("worker %d not ready after %.0f s: killed", w.id, READY_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
            return await exited
        finally:
            w.ready = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            channel.close()
            w.channel = None
            for fut in w.replies.values():
                fut.cancel()
            w.replies.clear()

    async def _read(self, w: WorkerProcess, channel: Channel) -> None:
        while (message := await channel.recv()) is not None:
            kind = message.get("t")
            if kind == "ready":
                if w.generation != self.generation:      # a reload happened while it started
                    w.generation = self.generation
                    channel.send(self._config_message())
                w.ready = True
                w.run_ready.set()
                w.ready_event.set()
                log.info("worker %d ready (pid %s)", w.id, message.get("pid"))
            elif kind in ("metrics_reply", "pools_reply", "reloaded"):
                rid = message.get("id")
                fut = w.replies.get(rid) if isinstance(rid, int) else None
                if fut is not None and not fut.done():
                    fut.set_result(message)
        if w.proc is not None and w.proc.returncode is None and not self._stopping:
            log.error("worker %d closed its channel: stopping it", w.id)
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)

