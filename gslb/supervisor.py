"""The GSLB with `workers: N` (N > 1 or auto): one process that owns state, N that answer DNS  [edge].

    sup = Supervisor(config)            # config.workers worker processes (gslb/worker.py)
    await sup.start()                   # probes and peers, then the workers, each "ready"
    await sup.server.reload()           # re-read the file; every worker reloads to it (SIGHUP)
    await sup.stop()                    # SIGTERM to every worker, then its own parts
    await serve_supervised(config)      # all that, the admin API, signals (gslb/cli.py `serve`)

What runs where:

    supervisor   config loading and reload, the GeoIP database (for the admin API's explain
                 and status page, and the steering tables: compiled once, at start and at each
                 reload that needs a new table, for all workers), the probes (once, not once per
                 worker), the peers and their vote, the admin API (drains, maintenance, latency
                 pushes, reload, /metrics, the status page), the latency table, the admin state
                 file, worker restarts. A GslbServer whose DNS listeners are never started.
    worker       every dns.listen address, UDP and TCP, bound with SO_REUSEPORT; a GslbServer
                 with its own steering, response cache and RRL table, and the supervisor's
                 compiled geo tables mapped read-only (shared pages: bench/README.md gives the
                 RSS and PSS per worker).

Steering tables (gslb/tables.py SharedTables, MappedTables): the supervisor compiles every table
its services need in one compile process (the peak memory, a few hundred MB for the bundled
database, is paid once, not once per worker) into a file in its private temporary directory
(mode 0700, removed at stop; gslb/steering/table.py write_tables: temporary name, then rename),
maps it once to check it, and sends every worker a "tables" message naming it; each worker maps
it and installs its tables. A reload that needs a table the file lacks compiles a new file with
all of them and sends it; the workers swap to it (the old mapping goes with the last steering
that used it). A worker (re)started later gets the current file in its start-up messages. Until
the first file comes (a few seconds after start), the workers answer misses from the reference
path (the same answers, slower). The compile count is gslb_steering_table_compiles; each worker's
maps gslb_steering_table_maps, and its answers from a table gslb_steering_compiled_answers
(summed on /metrics, per worker on /api/workers).

State flows one way, supervisor -> workers, over a socketpair per worker (gslb/feed.py,
gslb/common/channel.py, gslb/common/workers.py): GslbServer tells its `state_sink` (this
class) every change of the region states as answered (a probe's verdict, the vote, a drain,
maintenance, a peer's admin entry) and every latency measurement it takes in (an edge's push,
a peer's table), and they are sent to every worker the moment they happen (applied in a few
milliseconds; the test asks for 100 ms). A reload sends the text the supervisor validated with
a new generation number and the region states; a worker (re)started later first gets the
config, the latency table, then serves.

The supervisor binds no DNS socket (a UDP socket in the SO_REUSEPORT group would be handed a
share of the datagrams); a restarted worker joins its siblings' port.

Worker death: restarted after a back-off (0.1 s doubling to 5 s) while the others keep
answering (gslb/common/workers.py). Queries the dead worker had read, and those queued on its
socket, are lost with it (a resolver retries); the kernel sends new ones to the others.

/metrics: the supervisor asks every worker for its counters and sums them with its own
(gslb/common/metrics_merge.py); the families of state the supervisor owns (SUPERVISOR_ONLY:
region states, probes, peers, reloads, the latency table, state file saves) are its own.
`gslb_workers` (gauge: ready) and `gslb_worker_restarts` come from the supervisor. Per worker:
GET /api/workers (pid, ready, restarts, generation, queries answered, answers from a compiled
table, table files mapped, RSS). GET /api/status
shows the DNS listeners the workers serve: each ready worker names the UDP listeners it bound
in its "ready" message (gslb/feed.py), and `dns.udp` lists each address and reply source once
with "workers": how many ready workers serve it; `dns.tcp.open` is the workers' open TCP
connections, asked at the request. The status page's
answers per region, all-down answers and client sample are the workers', asked at each poll
(`answers`) and every SHARES_EVERY seconds for the share history. Each worker keeps
its own RRL table and enforces 1/N of each configured rate (gslb/dns/rrl.py `share`): the
kernel spreads a network's source ports over the workers, so together they send the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gslb import feed
from gslb.app import GslbServer
from gslb.common.configload import ConfigError
from gslb.common.metrics_merge import MergedCollector, Wire, WorkersCollector, sample_total
from gslb.common.sdnotify import Notifier
from gslb.common.workers import WorkerPool, WorkerProcess
from gslb.config import GslbConfig
from gslb.geoip import GeoLocator
from gslb.metrics import GslbCollector
from gslb.seams import Answers
from gslb.steering.base import RegionState
from gslb.tables import SharedTables, TableFile, TablesCollector

log = logging.getLogger("gslb.supervisor")

SUPERVISOR_ONLY = frozenset({
    "gslb_region_up", "gslb_region_drained", "gslb_region_degraded", "gslb_probe_rtt_seconds",
    "gslb_probe_results", "gslb_region_transitions", "gslb_peers_configured", "gslb_peers_reachable",
    "gslb_peers_alone", "gslb_regions_disagreeing", "gslb_region_vote_disagrees", "gslb_region_own_up",
    "gslb_peer_pulls", "gslb_admin_state_saves", "gslb_latency_networks", "gslb_config_reloads",
    "gslb_steering_table_compiles", "gslb_steering_table_compile_failures"})
SHARES_EVERY = 10.0         # seconds between the status page's share snapshots (its ring's interval)


def rss_bytes(pid: int | None) -> int | None:
    """A process's resident set size (Linux /proc), None if it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Supervisor:
    """See the module docstring. `server` is the GslbServer the admin API serves; this object is its
    state sink (gslb.feed.StateSink) and the admin API's view of the workers."""

    def __init__(self, config: GslbConfig, *, locator: GeoLocator | None = None, workers: int | None = None,
                 clock: Callable[[], float] = time.monotonic, log_level: str = "info", probe: Any = None) -> None:
        self.config_path = Path(config.file)
        self.clock = clock
        self._text = self.config_path.read_text(encoding="utf-8")
        self._dir = tempfile.mkdtemp(prefix="gslb-supervisor-")        # the compiled table files
        self.tables = SharedTables(self._dir, self._publish_tables)
        self.server = GslbServer(config, locator=locator, clock=clock, probe=probe, tables=self.tables)
        self.server.state_sink = self
        self.pool = WorkerPool(workers if workers is not None else config.workers, module="gslb.worker",
                               hello=self._hello, name="gslb", clock=clock, args=["--log-level", log_level])
        self.snapshots: list[Wire] = []             # each ready worker's families at the last refresh
        self.by_worker: dict[int, Wire] = {}
        own = CollectorRegistry(auto_describe=False)
        own.register(GslbCollector(self.server))
        own.register(TablesCollector(self.tables))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MergedCollector(own, lambda: self.snapshots, SUPERVISOR_ONLY))
        self.registry.register(WorkersCollector("gslb", "Worker processes answering DNS (ready)",
                                                 lambda: self.pool.workers))
        self.ports: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        return f"<gslb Supervisor [{self.pool.ready_count}/{len(self.pool.workers)} workers ready, " \
               f"generation {self.pool.generation}]>"

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.pool.workers

    # -- StateSink ---------------------------------------------------------------------------------
    def regions(self, states: Mapping[str, RegionState]) -> None:
        self.pool.broadcast(feed.regions_message(states))

    def latency(self, rows: list[list[Any]]) -> None:
        self.pool.broadcast(feed.latency_message(rows))

    async def reloaded(self, text: str) -> None:
        """The supervisor's server switched to `text`: every worker follows (waits for their answers)."""
        self.pool.generation += 1
        self._text = text
        replies = await self.pool.ask_all(self._config_message(), reply="reloaded")
        for r in replies:
            if r.get("ok") and isinstance(r.get("generation"), int):
                self.pool.workers[r["worker"]].generation = r["generation"]
        failed = [r for r in replies if not r.get("ok")]
        if failed:
            log.error("%d worker(s) refused generation %d: %s", len(failed), self.pool.generation,
                      failed[0].get("message"))

    def _config_message(self) -> dict[str, Any]:
        return feed.config_message(self.pool.generation, self._text, str(self.config_path), self.ports,
                                   self.server.region_states())

    def _hello(self, _w: WorkerProcess) -> list[dict[str, Any]]:
        current = self.tables.current
        tables = [] if current is None else [feed.tables_message(current.path, current.source)]
        return [self._config_message(), *feed.latency_snapshot(self.server.latency, self.clock()), *tables]

    def _publish_tables(self, file: TableFile) -> None:
        """A table file was compiled: every worker (a starting one too) maps it."""
        self.pool.broadcast(feed.tables_message(file.path, file.source))

    # -- the admin API's view ----------------------------------------------------------------------
    async def refresh_metrics(self) -> None:
        replies = await self.pool.ask_all({"t": "metrics"}, reply="metrics_reply")
        good = [r for r in replies if isinstance(r.get("families"), list)]
        self.snapshots = [r["families"] for r in good]
        self.by_worker = {int(r["worker"]): r["families"] for r in good}

    async def answers(self) -> Answers:
        """The status page's sample and answer counts: every ready worker's, asked now and merged
        (a worker that does not answer in time is left out)."""
        replies = await self.pool.ask_all({"t": "answers"}, reply="answers_reply")
        own = self.server.answer_sample
        try:
            sample, by_region, all_down = feed.merge_answers(replies, own.every, own.samples.maxlen or 2000)
        except feed.FeedError as exc:
            log.error("a worker's answers could not be read: %s", exc)
            sample, by_region, all_down = own, {}, {}
        return Answers(sample, by_region, all_down)

    def udp_listeners(self) -> list[dict[str, Any]]:
        """/api/status's dns.udp: the UDP listeners the ready workers said they bound ("ready"), one
        row per address and reply source with how many workers serve it (a worker being restarted
        is not counted until it is ready again)."""
        per_worker = []
        for w in self.pool.workers:
            if not w.ready:
                continue
            try:
                per_worker.append(feed.udp_listeners_of(w.ready_info))
            except feed.FeedError as exc:
                log.error("worker %d: its listeners could not be read: %s", w.id, exc)
        return feed.count_listeners(per_worker)

    async def tcp_open(self) -> int:
        """TCP connections open in the workers now (their gslb_dns_tcp_open_connections, asked now)."""
        await self.refresh_metrics()
        return int(sum(sample_total(wire, "gslb_dns_tcp_open_connections", "") for wire in self.snapshots))

    async def workers_report(self) -> list[dict[str, Any]]:
        """GET /api/workers: each worker's process, restarts, queries answered (fresh counts), RSS."""
        await self.refresh_metrics()
        rows = []
        for w in self.pool.workers:
            wire = self.by_worker.get(w.id)
            rows.append({"id": w.id, "pid": w.pid, "ready": w.ready, "restarts": w.restarts,
                         "generation": w.generation, "rss_bytes": rss_bytes(w.pid),
                         "queries": None if wire is None else int(sample_total(wire, "gslb_dns_queries")),
                         "compiled_answers": None if wire is None
                         else int(sample_total(wire, "gslb_steering_compiled_answers")),
                         "table_maps": None if wire is None else int(sample_total(wire, "gslb_steering_table_maps"))})
        return rows

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.ports = [(lst.host, lst.port) for lst in self.server.config.dns.listen]
        try:
            await self.server.start_control()
            self.tables.start()             # compiles in the background; the workers start meanwhile
            await self.pool.start()
        except BaseException:
            await self.server.stop()
            raise
        log.info("gslb: %d workers answering on %s", len(self.pool.workers),
                 ", ".join(f"{h}:{p}" for h, p in self.ports))

    async def stop(self) -> None:
        await self.pool.stop()
        await self.server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def snapshot_shares(self) -> None:
        """Every SHARES_EVERY seconds, the workers' answers per region into the status page's ring."""
        while True:
            answers = await self.answers()
            self.server.shares.snapshot(answers.by_region, self.clock(), self.server.wall())
            await asyncio.sleep(SHARES_EVERY)


async def serve_supervised(config: GslbConfig, *, shutdown_trigger: asyncio.Event | None = None,
                           locator: GeoLocator | None = None, log_level: str = "info",
                           ready: Callable[[Supervisor], None] | None = None,
                           notifier: Notifier | None = None) -> None:
    """`gslb serve` with workers: until `shutdown_trigger` (default: SIGINT / SIGTERM); SIGHUP reloads
    the supervisor and then every worker. systemd notifications as gslb.serve.serve sends them."""
    from gslb.admin_api import start_admin

    sup = Supervisor(config, locator=locator, log_level=log_level)
    loop = asyncio.get_running_loop()
    stop = shutdown_trigger if shutdown_trigger is not None else asyncio.Event()
    if shutdown_trigger is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    notify = notifier if notifier is not None else Notifier(None)
    tasks: set[asyncio.Task[None]] = set()

    async def reload_and_notify() -> None:
        notify.reloading()
        with contextlib.suppress(ConfigError):      # logged by reload; the old config keeps serving
            await sup.server.reload()
        notify.ready()

    def on_hup() -> None:
        task = loop.create_task(reload_and_notify())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    runner: web.AppRunner | None = None
    try:
        await sup.start()
        runner = await start_admin(sup.server, workers=sup)
        if ready is not None:
            ready(sup)
        if notify.enabled:
            from gslb.serve import _announce
            tasks.add(loop.create_task(_announce(sup.server, notify)))
        tasks.add(loop.create_task(sup.snapshot_shares()))
        await stop.wait()
    finally:
        notify.stopping()
        for task in tasks:
            task.cancel()
        loop.remove_signal_handler(signal.SIGHUP)
        if shutdown_trigger is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        await sup.stop()

