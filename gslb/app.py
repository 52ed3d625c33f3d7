"""The GSLB's server object: wires config, steering, responder, probes, listeners, peers  [edge].

    GslbServer(config, *, locator=None, clock=..., wall=..., probe=None, tables=None)
      .locator    GeoLocator      (gslb/geoip.py; a reload naming another geoip.database opens it and
                  closes the one it replaces: GeoLocator.close)
      .steering   Steering        (pure; rebuilt on reload)
      .responder  Responder       (pure; rebuilt on reload; the listeners read it per query)
      .rate_limiter RateLimiter | None  (RRL in front of UDP replies only, dns.rrl; kept across
                  reloads while its settings are unchanged; counters in .rrl_stats)
      .udp_listeners, .udp_stats   the UDP edge (gslb/server/udp.py: replies from the address asked;
                  udp_listener_rows(): them as /api/status shows them, and a worker's "ready" names them)
      .tcp        DnsTcpServer    (gslb/server/tcp.py; its limits follow reloads, its counters in .tcp.stats)
      .checker    HealthChecker   (region probes; started with the server, restarted on reload)
      .latency    LatencyTable    (kept across reloads)
      .tables     TableCompiler   (gslb/tables.py: the steering's compiled GeoIP decision tables, built in
                  the background at start and reload, swapped in while queries flow; kept per spec)
      .regions    name -> RegionRuntime (health, drain, degraded; kept across reloads by name)
      .answer_sample AnswerSampler (gslb/status.py: 1 in 16 cache-miss answers, the last 2,000;
                  installed as each responder's `on_answer`; kept across reloads)
      .shares     ShareHistory    (answers per region every 10 s for 10 min; `serve` snapshots
                  dns_stats.by_region into it)
      .admin_states AdminStates   (drain / maintenance per region: gslb/peers/admin_state.py; loaded
                  from admin.state_file at start, saved on every change, shared with the peers)
      .peer_node  PeerNode        (gslb/peers/node.py, pure: the peers' last reports and the vote
                  that decides each region's up/down from every server's verdicts)
      .peer_sync  PeerSync | None (gslb/peers/sync.py: pulls the peers' verdicts every
                  peers.interval; None without peers)
      .state_sink StateSink | None (gslb/feed.py: told every change of the region states as
                  answered, every latency measurement taken in, every reload's config text; the
                  supervisor of `workers` > 1 sends them to its workers)

    await server.start()          # tables, DNS listeners, then start_control(): probes and peers
    await server.start_dns(reuse_port=True)   # a worker: the listeners only (gslb/worker.py)
    await server.start_control()  # a supervisor: probes and peers only (gslb/supervisor.py)
    await server.reload()         # the config file again (ConfigError: the old one keeps serving)

A region's state as answered: up when the vote says up (alone: our own probes) and not in
maintenance; drained when its admin state is drain.

The admin API (gslb/admin_api.py), metrics (gslb/metrics.py), `serve` (gslb/serve.py: one
process) and the supervisor (gslb/supervisor.py) import this module; it imports none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gslb.common.checker import HealthChecker
from gslb.common.configload import ConfigError
from gslb.common.health import Health
from gslb.common.probe import ProbeResult
from gslb.config import GslbConfig, healthy_fraction, parse_config, read_config
from gslb.dns.responder import Responder, ResponderStats
from gslb.dns.rrl import RateLimitedResponder, RateLimiter, RrlStats
from gslb.feed import StateSink, pushed_rows
from gslb.geoip import GeoIPError, GeoLocator, MaxMindLocator
from gslb.latency_table import LatencyTable
from gslb.peers import admin_state
from gslb.peers.admin_state import AdminEntry, AdminState, AdminStates
from gslb.peers.config import Peer
from gslb.peers.node import PeerNode
from gslb.peers.sync import PeerSync
from gslb.peers.vote import Verdict
from gslb.server.tcp import DnsTcpServer
from gslb.server.udp import UdpListener, UdpStats, open_udp
from gslb.status import AnswerSampler, ShareHistory
from gslb.steering import Steering
from gslb.steering.base import RegionState
from gslb.tables import TableCompiler

log = logging.getLogger("gslb")


@dataclass(slots=True)
class RegionRuntime:
    """What the server knows about one region now."""

    health: Health
    drained_since: float | None = None      # monotonic time of the drain, None when not drained
    drained_wall: float | None = None       # wall-clock time of the drain (for the API)
    degraded: bool = False
    last_result: ProbeResult | None = None
    last_probe_at: float | None = None
    transitions: int = 0
    probe_rtts: list[float] = field(default_factory=list)
    since_wall: float = 0.0                 # wall-clock time of the last own up/down change (or the start)
    probes: int = 0                         # own probe results
    voted_up: bool | None = None            # the peers' vote (None: not voted yet, own view)
    maintenance: bool = False               # admin state maintenance: down whatever the probes say

    @property
    def answer_up(self) -> bool:
        """Up as answered: the vote (or our own view before it), and not in maintenance."""
        return (self.health.up if self.voted_up is None else self.voted_up) and not self.maintenance

    def state(self) -> RegionState:
        return RegionState(up=self.answer_up, drained=self.drained_since is not None, degraded=self.degraded)


TABLE_WAIT = 60.0    # seconds `start` waits for the steering tables before listening (then: background)


class GslbServer:
    def __init__(self, config: GslbConfig, *, locator: GeoLocator | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 probe: Any = None, tables: TableCompiler | None = None) -> None:
        self.clock = clock
        self.wall = wall
        self._probe = probe
        self.latency = LatencyTable(max_networks=config.latency.max_networks, max_age=config.latency.max_age)
        self.locator: GeoLocator = locator if locator is not None else MaxMindLocator(config.geoip_database)
        self.regions: dict[str, RegionRuntime] = {}
        self.udp_listeners: list[UdpListener] = []
        self.udp_stats = UdpStats()         # all UDP listeners; TCP's counters are in self.tcp.stats
        self.tcp = DnsTcpServer(self._current_responder, clock=clock)     # limits set by _install
        self.all_down_events = 0
        self.reloads = {"ok": 0, "failed": 0}
        self.probe_counts: dict[tuple[str, bool], int] = {}
        self.dns_stats = ResponderStats()   # kept across reloads so counters never go back
        self._checking = False              # the health checker was started (and not stopped)
        self.rrl_stats = RrlStats()
        self.rate_limiter: RateLimiter | None = None
        self.answer_sample = AnswerSampler()    # the status page's client networks
        self.shares = ShareHistory()            # the status page's share of answers
        state_file = config.admin.state_file
        self.admin_states = admin_state.load(state_file, config.regions) if state_file else AdminStates()
        self.admin_saves = {"ok": 0, "failed": 0}
        self.peer_node = PeerNode(config.peers, self.admin_states)
        self.peer_sync: PeerSync | None = None
        self._peer_tasks: list[asyncio.Task[None]] = []
        self.tables = tables if tables is not None else TableCompiler()     # gslb/tables.py
        self.state_sink: StateSink | None = None    # told every state change (gslb/supervisor.py)
        self._install(config)

    # -- building from a config --------------------------------------------------
    def _install(self, config: GslbConfig) -> None:
        old = self.regions
        self.regions = {}
        for name, rc in config.regions.items():
            keep = old.get(name)
            assume_up = rc.probe.assume_up if rc.probe else True
            self.regions[name] = keep if keep is not None else \
                RegionRuntime(Health.initial(assume_up=assume_up), since_wall=self.wall())
        self.config = config
        self.admin_states.keep_only(config.regions)
        for name in self.regions:
            self._apply_admin(name)
        self.peer_node.configure(config.peers)
        if self.peer_sync is not None:
            self.peer_sync.configure(config.peers)
        self._vote()
        self.tcp.configure(idle_timeout=config.dns.tcp_idle_timeout, max_connections=config.dns.tcp_max_connections,
                           max_per_client=config.dns.tcp_max_per_client, max_unsent=config.dns.tcp_max_unsent)
        self.steering = Steering(config.region_models(), config.services, self.locator, self.latency)
        self.steering.update_region_states(self.region_states())
        self.tables.install(self.steering, self.locator)    # known tables now, a compile for the rest
        self.responder = Responder(config.zones, self.steering, max_udp_size=config.dns.max_udp_size,
                                   stats=self.dns_stats, wall=self.wall, **config.dns.responder_options())
        self.responder.on_answer = self.answer_sample
        self._install_rrl(config)
        targets = [rc.probe.target(name) for name, rc in config.regions.items() if rc.probe is not None]
        self.checker = HealthChecker(targets, on_change=self._on_health_change, on_result=self._on_probe,
                                     probe=self._probe, clock=self.clock)
        self.checker.states.update({n: self.regions[n].health for n in self.checker.states})

    def _current_responder(self) -> Responder:
        return self.responder

    def _install_rrl(self, config: GslbConfig) -> None:
        rrl = config.dns.rrl
        if not rrl.enabled:
            self.rate_limiter = None
        elif self.rate_limiter is None or self.rate_limiter.settings != rrl \
                or self.rate_limiter.share != config.workers:
            # under workers, each enforces 1/workers of the rates (gslb/dns/rrl.py RateLimiter)
            self.rate_limiter = RateLimiter(rrl, stats=self.rrl_stats, share=config.workers)
        self.udp_responder: Responder | RateLimitedResponder = self.responder
        if self.rate_limiter is not None:
            self.udp_responder = RateLimitedResponder(self.responder, self.rate_limiter,
                                                      exempt=self.responder.cookie_valid)

    def _current_udp_responder(self) -> Responder | RateLimitedResponder:
        return self.udp_responder

    def udp_listener_rows(self) -> list[dict[str, Any]]:
        """This process's UDP listeners as /api/status shows them: the address bound and where a
        reply leaves from ("pktinfo": the address the query reached, a wildcard listener; "bound")."""
        return [{"address": list(listener.sockname), "reply_source": "pktinfo" if listener.pktinfo else "bound"}
                for listener in self.udp_listeners]

    def region_states(self) -> dict[str, RegionState]:
        return {name: rt.state() for name, rt in self.regions.items()}

    def _publish(self) -> None:
        states = self.region_states()
        self.steering.update_region_states(states)
        if self.state_sink is not None:
            self.state_sink.regions(states)

    def ingest_latency(self, payload: Any) -> int:
        """An edge's push {"measurements": [...]} into the latency table (ValueError naming a bad item)."""
        accepted = self.latency.ingest_batch(payload, self.clock(), known_regions=set(self.regions))
        if self.state_sink is not None and accepted:
            self.state_sink.latency(pushed_rows(payload))
        return accepted

    # -- probe results -------------------------------------------------------------
    def _on_probe(self, name: str, health: Health, result: ProbeResult) -> None:
        rt = self.regions.get(name)
        if rt is None:
            return
        rt.health = health                   # every result: streaks and `probed` stay current
        rt.last_result = result
        rt.last_probe_at = self.clock()
        key = (name, result.ok)
        self.probe_counts[key] = self.probe_counts.get(key, 0) + 1
        rt.probes += 1
        if result.rtt is not None:
            rt.probe_rtts = [*rt.probe_rtts[-9:], result.rtt]
        fraction = healthy_fraction(result)
        degraded = result.ok and fraction is not None and fraction < 1.0
        if degraded != rt.degraded:
            rt.degraded = degraded
            self._publish()

    def _on_health_change(self, name: str, health: Health, result: ProbeResult) -> None:
        rt = self.regions.get(name)
        if rt is None:
            return
        rt.health = health
        rt.transitions += 1
        rt.since_wall = self.wall()
        self._vote()
        self._publish()

    # -- the vote among peers (gslb/peers) ---------------------------------------------
    def own_verdicts(self, now: float) -> dict[str, Verdict]:
        """Our probes' verdict on every region; fresh when probed within three probe intervals."""
        out: dict[str, Verdict] = {}
        for name, rt in self.regions.items():
            probe = self.config.regions[name].probe
            fresh = probe is not None and rt.health.probed and rt.last_probe_at is not None \
                and now - rt.last_probe_at <= 3 * max(probe.interval, probe.spec.timeout)
            rtt = rt.last_result.rtt if rt.last_result is not None else None
            out[name] = Verdict(rt.health.up, rt.since_wall, None if rtt is None else round(rtt * 1000, 3),
                                rt.probes, fresh)
        return out

    def _vote(self) -> bool:
        """Decide every region's state from the fresh verdicts; True if one changed (not yet published)."""
        now = self.clock()
        changed = self.peer_node.revote(self.own_verdicts(now), now)
        for name, rt in self.regions.items():
            rt.voted_up = self.peer_node.voted_up(name)
        return changed

    def revote(self) -> None:
        """After a round of peer pulls: vote again and publish a change."""
        if self._vote():
            log.warning("voted region states now %s",
                        {n: "up" if b.up else "down" for n, b in self.peer_node.ballots.items()})
            self._publish()

    def on_peer_report(self, peer: Peer, payload: Any, received_at: float) -> None:
        """A peer's verdicts reply (PeerSync): kept for the vote; its newer admin entries taken."""
        self._admin_changed(self.peer_node.take_report(peer.name, payload, received_at, self.regions,
                                                       self.wall() + admin_state.MAX_AHEAD))

    def merge_admin(self, entries: dict[str, AdminEntry]) -> list[str]:
        """Admin entries pushed by a peer: the later ones win (gslb/peers/admin_state.py)."""
        changed = self.admin_states.merge_all(entries, self.regions, self.wall() + admin_state.MAX_AHEAD)
        self._admin_changed(changed)
        return changed

    def _admin_changed(self, regions: list[str]) -> None:
        if not regions:
            return
        for name in regions:
            self._apply_admin(name)
            log.warning("region %s is now %s (from a peer)", name, self.admin_states.state(name).value)
        self.save_admin()
        self._publish()

    def _apply_admin(self, name: str) -> None:
        """The runtime fields that follow the region's admin entry."""
        rt = self.regions[name]
        entry = self.admin_states.get(name)
        state = AdminState.READY if entry is None else entry.state
        rt.maintenance = state is AdminState.MAINTENANCE
        if state is AdminState.DRAIN and entry is not None:
            if rt.drained_since is None:
                rt.drained_wall = entry.at
                rt.drained_since = self.clock() - max(0.0, self.wall() - entry.at)
        else:
            rt.drained_since = rt.drained_wall = None

    def save_admin(self) -> bool:
        """Write the admin state file; a failure is logged and counted (the change still holds here)."""
        path = self.config.admin.state_file
        if path is None:
            return False
        try:
            admin_state.save(path, self.admin_states)
        except OSError as exc:
            self.admin_saves["failed"] += 1
            log.error("cannot write the admin state file %s: %s: drains will not survive a restart",
                      path, exc.strerror or exc)
            return False
        self.admin_saves["ok"] += 1
        return True

    # -- operator actions ------------------------------------------------------------
    def set_admin(self, name: str, state: AdminState) -> AdminEntry:
        """An operator's drain / undrain (ready) / maintenance on this server: applied, saved, and
        returned for the caller to push to the peers."""
        before = self.admin_states.state(name)
        entry = self.admin_states.set(name, state, self.wall(), self.config.peers.name)
        self._apply_admin(name)
        self.save_admin()
        if before is not state:
            log.warning("region %s: %s -> %s", name, before.value, state.value)
            self._publish()
        return entry

    def drain(self, name: str) -> dict[str, Any]:
        self.set_admin(name, AdminState.DRAIN)
        return self.region_info(name)

    def undrain(self, name: str) -> dict[str, Any]:
        self.set_admin(name, AdminState.READY)
        return self.region_info(name)

    def maintenance(self, name: str) -> dict[str, Any]:
        self.set_admin(name, AdminState.MAINTENANCE)
        return self.region_info(name)

    def region_info(self, name: str) -> dict[str, Any]:
        rt = self.regions[name]
        rc = self.config.regions[name]
        now = self.clock()
        ballot = self.peer_node.ballots.get(name)
        info: dict[str, Any] = {
            "name": name,
            "state": "up" if rt.answer_up else "down",       # as answered: vote, maintenance
            "own_state": rt.health.status.value,             # our own probes
            "probed": rt.health.probed,
            "eligible": rt.answer_up and rt.drained_since is None,
            "degraded": rt.degraded,
            "drained": rt.drained_since is not None,
            "admin": self.admin_states.state(name).value,
            "vote": None if ballot is None else ballot.to_json(),
            "location": [rc.region.lat, rc.region.lon],
            "addresses": [*rc.region.v4, *rc.region.v6],
            "capacity": rc.region.capacity,
            "probe": str(rc.probe.spec) if rc.probe else None,
            "transitions": rt.transitions,
        }
        if rt.last_result is not None and rt.last_probe_at is not None:
            info["last_probe"] = {
                "ok": rt.last_result.ok,
                "detail": rt.last_result.detail,
                "rtt_ms": None if rt.last_result.rtt is None else round(rt.last_result.rtt * 1000, 3),
                "seconds_ago": round(now - rt.last_probe_at, 3),
            }
        if rt.probe_rtts:
            info["probe_rtt_ms_avg"] = round(sum(rt.probe_rtts) / len(rt.probe_rtts) * 1000, 3)
        if rt.drained_since is not None and rt.drained_wall is not None:
            ttl = self.config.longest_ttl(name)
            info["drained_at"] = rt.drained_wall
            info["longest_ttl"] = ttl
            info["safe_to_stop_at"] = rt.drained_wall + ttl
            info["safe_to_stop_in"] = max(0.0, round(rt.drained_since + ttl - now, 3))
        return info

    # -- reload ---------------------------------------------------------------------
    async def reload(self, path: str | None = None, *, text: str | None = None) -> None:
        """Load the config file again (`text`: the file's text as read earlier, as a worker is sent it);
        on any error keep serving the old one and raise ConfigError."""
        path = path or self.config.file
        try:
            if text is None:
                new, text = read_config(path)
            else:
                new = parse_config(text, path)
            locator = self.locator
            if new.geoip_database != self.config.geoip_database:
                try:
                    locator = MaxMindLocator(new.geoip_database)
                except GeoIPError as exc:
                    raise ConfigError(new.file, "geoip.database", str(exc)) from None
        except ConfigError as exc:
            self.reloads["failed"] += 1
            log.error("reload refused, still serving the old config: %s", exc)
            raise
        if new.dns.listen != self.config.dns.listen or new.admin.listen != self.config.admin.listen:
            log.warning("listen addresses changed in %s: they take effect at the next restart", path)
        if locator is not self.locator:
            old_locator, self.locator = self.locator, locator
            old_locator.close()
        running = self._checking        # not checker._tasks: a checker with no targets has none, yet holds a session
        if running:
            await self.checker.stop()
        self._install(new)
        if running:
            await self.checker.start()
            if not new.peers.servers and self.peer_sync is not None:
                await self.peer_sync.stop()
                self.peer_sync = None
            await self._start_peers()
        self.reloads["ok"] += 1
        log.warning("config reloaded from %s", path)
        if self.state_sink is not None:
            await self.state_sink.reloaded(text)

    # -- lifecycle ----------------------------------------------------------------------
    async def start_dns(self, *, reuse_port: bool = False) -> None:
        """Bind every dns.listen address, UDP and TCP (`reuse_port`: SO_REUSEPORT, as workers do)."""
        _raise_fd_limit(self.config.dns.tcp_max_connections + 256)
        for listen in self.config.dns.listen:
            self.udp_listeners.append(await open_udp(listen.host, listen.port, self._current_udp_responder,
                                                     self.clock, stats=self.udp_stats, reuse_port=reuse_port))
            await self.tcp.listen(listen.host, listen.port, reuse_port=reuse_port)
            log.info("dns listening on %s (udp+tcp)", listen)

    async def start(self) -> None:
        self.tables.start()
        await self.tables.ready_within(TABLE_WAIT)      # the first misses use the tables (reloads do not wait)
        await self.start_dns()
        await self.start_control()

    async def start_control(self) -> None:
        """The probes and the peers (what a supervisor runs without the DNS listeners)."""
        await self.checker.start()
        self._checking = True
        await self._start_peers()

    async def _start_peers(self) -> None:
        """Pull the peers' verdicts every peers.interval and their latency tables once."""
        if self.peer_sync is not None or not self.config.peers.servers:
            return
        self.peer_sync = PeerSync(self.config.peers, on_report=self.on_peer_report, on_round=self.revote,
                                  clock=self.clock)
        await self.peer_sync.start()
        self._peer_tasks.append(asyncio.create_task(self._pull_latency(self.peer_sync), name="latency pull"))

    async def _pull_latency(self, sync: PeerSync) -> None:
        """The peers' latency tables, once: retried each peer interval until one answers (LATENCY_PULL_TRIES)."""
        for _ in range(LATENCY_PULL_TRIES):
            taken = answered = 0
            for peer, payload in await sync.pull_latency():
                try:
                    taken += await self._merge_latency(payload)
                    answered += 1
                except ValueError as exc:
                    log.warning("latency table from peer %s refused from there on: %s", peer.name, exc)
            if answered:
                log.info("latency table: %d measurements from %d peers", taken, answered)
                return
            await asyncio.sleep(self.config.peers.interval)

    async def _merge_latency(self, payload: Any) -> int:
        """A peer's latency table, LATENCY_CHUNK networks at a time with the loop free between
        (ValueError at the first bad chunk: the chunks before it are kept)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("networks"), list):
            raise ValueError('expected {"networks": [...]}')
        rows = payload["networks"]
        taken = 0
        for start in range(0, len(rows), LATENCY_CHUNK):
            chunk = rows[start:start + LATENCY_CHUNK]
            taken += self.latency.merge_rows(chunk, self.clock(), self.regions, offset=start)
            if self.state_sink is not None:
                self.state_sink.latency(chunk)
            await asyncio.sleep(0)
        return taken

    async def stop(self) -> None:
        self._checking = False
        await self.tables.stop()
        for task in self._peer_tasks:
            task.cancel()
        for task in self._peer_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._peer_tasks = []
        if self.peer_sync is not None:
            await self.peer_sync.stop()
            self.peer_sync = None
        await self.checker.stop()
        for listener in self.udp_listeners:
            listener.close()
        self.udp_listeners = []
        await self.tcp.close()


def _raise_fd_limit(needed: int) -> None:
    """Let the process hold `needed` descriptors if the hard limit allows: a full TCP table must not
    make accept() fail (EMFILE) instead of evicting the longest-idle connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("open-file limit %d is below the %d that dns.tcp_max_connections needs", target, needed)


LATENCY_PULL_TRIES = 10      # peer intervals a starting server tries to pull a peer's latency table
LATENCY_CHUNK = 500          # networks of a peer's latency table merged between yields to the loop
