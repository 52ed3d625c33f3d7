"""A pool of backends and everything known about each: the candidates a policy sees  [pure].

Per backend the pool keeps
  * health (gslb.common.health.Health, set by the edge's active checker),
  * an admin state -- READY, DRAIN (optional deadline), DRAINED (deadline passed),
    MAINTENANCE -- driven by the table ADMIN_TRANSITIONS,
  * passive outlier ejection (regional_lb/outlier.py, Envoy rules),
  * a slow-start ramp: weight grows linearly over `slow_start` seconds from the moment
    traffic can reach the backend again (nginx `slow_start`, Envoy slow start; starting at
    10 % like Envoy's min_weight_percent),
  * in-flight requests and a peak-EWMA of response times (regional_lb/load.py).

Health and ejection (Envoy's model): active health and outlier ejection are independent
signals, and a backend takes traffic only while it is healthy AND not ejected. The table
TRAFFIC_TRANSITIONS is that product -- SERVING, DOWN, EJECTED, DOWN_EJECTED -- over the events
HEALTH_UP / HEALTH_DOWN (the checker's verdict changed), EJECT and RETURN (an ejection ended);
its second column says when a slow-start ramp starts: on entering SERVING, and only then. So a
backend that turns healthy while still ejected ramps from the end of its ejection, not from
its recovery (the ramp no longer runs out during the ejection), and one that is ejected while
healthy ramps again when it returns. Un-ejection by active health is the pool's
`outlier.uneject` setting:
    recovery (default)  a DOWN -> UP transition (`rise` passing probes in a row) ends an
                        ejection: the backend proved it is back, and waits no longer.
    success             any passing probe ends it (Envoy's
                        `successful_active_health_check_uneject_host: true`); with a health
                        endpoint that passes while requests fail, ejections then last one
                        check interval at most.
    never               ejections always run their full time.
An admin return to READY (from MAINTENANCE or DRAINED) starts a ramp if the backend is
SERVING; otherwise the ramp starts when it becomes SERVING.

`candidates(now)` turns that into the list a policy picks from:

    health down / ejected -> left out      MAINTENANCE / DRAINED -> left out
    DRAIN -> accepting_new=False (existing sticky sessions only)
    healthy fraction < panic_threshold -> every non-admin-removed backend, panic=True
    (Envoy's panic mode: better to spread over all than to crush the few left)

Nothing here reads a clock or does I/O; `now` is passed in by the edge and is MONOTONIC
seconds (`time.monotonic()`, LoadBalancer's `clock`) for every timer here: drain deadlines,
ejections, slow start, EWMA decay. A wall-clock step must move none of them. (Sticky cookie
times are wall-clock, but they live in the policy and cookies.py, not here.)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gslb.common.configload import Section
from gslb.common.health import Health, Thresholds
from regional_lb.balancing.base import Backend, Candidate
from regional_lb.load import PeakEwma
from regional_lb.outlier import UNEJECT_MODES, OEvent, OState, Outlier, OutlierSettings
from regional_lb.retry import RetrySettings

SLOW_START_MIN = 0.1           # a warming backend starts at 10 % of its weight


class UnknownBackend(KeyError):
    """no such backend in this pool"""


# -- settings -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Active check settings, read by the edge's checker. type "none": no checks, always up."""

    type: Literal["http", "tcp", "none"] = "tcp"
    path: str = "/healthz"
    expect_status: tuple[int, ...] = (200,)
    interval: float = 2.0
    timeout: float = 1.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    host_header: str | None = None
    assume_up: bool = True              # health before the first probe result


@dataclass(frozen=True, slots=True)
class LoadSettings:
    decay: float = 10.0                 # peak-EWMA time constant, seconds
    default_rtt: float = 0.05           # estimate for a backend with no samples yet


@dataclass(frozen=True, slots=True)
class PoolSettings:
    health: HealthSettings = field(default_factory=HealthSettings)
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    slow_start: float = 0.0
    panic_threshold: float = 0.5
    retries: RetrySettings = field(default_factory=RetrySettings)
    load: LoadSettings = field(default_factory=LoadSettings)

    def __post_init__(self) -> None:
        if self.slow_start < 0 or not 0.0 <= self.panic_threshold <= 1.0:
            raise ValueError("need slow_start >= 0 and panic_threshold within 0..1")


def load_pool_settings(section: Section) -> PoolSettings:
    """Read health, outlier, slow_start, panic_threshold, retries and load from a pool's section.

    Takes only those keys (the caller reads `backends` and calls `section.done()`); each
    sub-section refuses unknown keys.
    """
    health = _load_health(section.section("health"))
    out = section.section("outlier")
    base = out.take_duration("base_ejection", 30.0, minimum=0.001)
    outlier = OutlierSettings(
        consecutive_failures=out.take_number("consecutive_failures", 5, minimum=0, integer=True),
        base_ejection=base,
        max_ejection=out.take_duration("max_ejection", max(300.0, base), minimum=base),
        max_ejected_fraction=out.take_number("max_ejected_fraction", 0.1, minimum=0.0, maximum=1.0),
        uneject=out.take_choice("uneject", UNEJECT_MODES, "recovery"))
    out.done()
    slow_start = section.take_duration("slow_start", 0.0)
    panic = section.take_number("panic_threshold", 0.5, minimum=0.0, maximum=1.0)
    ret = section.section("retries")
    retries = RetrySettings(
        attempts=ret.take_number("attempts", 2, minimum=1, maximum=10, integer=True),
        budget_ratio=ret.take_number("budget_ratio", 0.2, minimum=0.0, maximum=10.0),
        min_retries=ret.take_number("min_retries", 3, minimum=0, integer=True))
    ret.done()
    ld = section.section("load")
    load = LoadSettings(decay=ld.take_duration("decay", 10.0, minimum=0.001),
                        default_rtt=ld.take_duration("default_rtt", 0.05))
    ld.done()
    return PoolSettings(health, outlier, slow_start, panic, retries, load)


def _load_health(sect: Section) -> HealthSettings:
    kind = sect.take_choice("type", ("http", "tcp", "none"), "tcp")
    path = sect.take("path", str, "/healthz", check=lambda p: None if p.startswith("/") else "must start with /")
    codes = sect.take("expect_status", (int, list), 200)
    codes_t = tuple(codes) if isinstance(codes, list) else (codes,)
    if not codes_t or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599
                              for c in codes_t):
        raise sect.error("expect_status", f"expected HTTP status codes, got {codes!r}")
    interval = sect.take_duration("interval", 2.0, minimum=0.05)
    timeout = sect.take_duration("timeout", 1.0, minimum=0.01)
    rise = sect.take_number("rise", 2, minimum=1, integer=True)
    fall = sect.take_number("fall", 3, minimum=1, integer=True)
    host_header = sect.take("host_header", str, None)
    assume = sect.take_choice("assume", ("up", "down"), "up")
    sect.done()
    return HealthSettings(kind, path, codes_t, interval, timeout, Thresholds(rise, fall),  # type: ignore[arg-type]
                          host_header, assume == "up")


# -- the admin state machine ---------------------------------------------------------------------------

class AdminState(enum.Enum):
    READY = "ready"
    DRAIN = "drain"                     # existing sessions only
    DRAINED = "drained"                 # drain deadline passed: out, sticky users move
    MAINTENANCE = "maintenance"


class AdminEvent(enum.Enum):
    READY = "ready"
    DRAIN = "drain"
    MAINTENANCE = "maintenance"
    DEADLINE = "deadline"               # the drain deadline passed


# (state, event) -> (next state, start a slow-start ramp)
ADMIN_TRANSITIONS: dict[tuple[AdminState, AdminEvent], tuple[AdminState, bool]] = {
    (AdminState.READY, AdminEvent.READY): (AdminState.READY, False),
    (AdminState.READY, AdminEvent.DRAIN): (AdminState.DRAIN, False),
    (AdminState.READY, AdminEvent.MAINTENANCE): (AdminState.MAINTENANCE, False),
    (AdminState.READY, AdminEvent.DEADLINE): (AdminState.READY, False),
    (AdminState.DRAIN, AdminEvent.READY): (AdminState.READY, False),
    (AdminState.DRAIN, AdminEvent.DRAIN): (AdminState.DRAIN, False),
    (AdminState.DRAIN, AdminEvent.MAINTENANCE): (AdminState.MAINTENANCE, False),
    (AdminState.DRAIN, AdminEvent.DEADLINE): (AdminState.DRAINED, False),
    (AdminState.DRAINED, AdminEvent.READY): (AdminState.READY, True),
    (AdminState.DRAINED, AdminEvent.DRAIN): (AdminState.DRAIN, False),
    (AdminState.DRAINED, AdminEvent.MAINTENANCE): (AdminState.MAINTENANCE, False),
    (AdminState.DRAINED, AdminEvent.DEADLINE): (AdminState.DRAINED, False),
    (AdminState.MAINTENANCE, AdminEvent.READY): (AdminState.READY, True),
    (AdminState.MAINTENANCE, AdminEvent.DRAIN): (AdminState.DRAIN, False),
    (AdminState.MAINTENANCE, AdminEvent.MAINTENANCE): (AdminState.MAINTENANCE, False),
    (AdminState.MAINTENANCE, AdminEvent.DEADLINE): (AdminState.MAINTENANCE, False),
}


# -- the traffic state machine: active health x outlier ejection --------------------------------------

class Traffic(enum.Enum):
    SERVING = "serving"                 # healthy and not ejected: traffic can reach it
    DOWN = "down"                       # active health down
    EJECTED = "ejected"                 # healthy, ejected by outlier detection
    DOWN_EJECTED = "down_ejected"       # both


class TrafficEvent(enum.Enum):
    HEALTH_UP = "health_up"             # the checker's verdict turned UP
    HEALTH_DOWN = "health_down"         # ... turned DOWN
    EJECT = "eject"                     # outlier detection ejected it
    RETURN = "return"                   # the ejection ended (expired, or un-ejected by health)


# (state, event) -> (next state, start a slow-start ramp): a ramp starts on entering SERVING
TRAFFIC_TRANSITIONS: dict[tuple[Traffic, TrafficEvent], tuple[Traffic, bool]] = {
    (Traffic.SERVING, TrafficEvent.HEALTH_UP): (Traffic.SERVING, False),
    (Traffic.SERVING, TrafficEvent.HEALTH_DOWN): (Traffic.DOWN, False),
    (Traffic.SERVING, TrafficEvent.EJECT): (Traffic.EJECTED, False),
    (Traffic.SERVING, TrafficEvent.RETURN): (Traffic.SERVING, False),
    (Traffic.DOWN, TrafficEvent.HEALTH_UP): (Traffic.SERVING, True),
    (Traffic.DOWN, TrafficEvent.HEALTH_DOWN): (Traffic.DOWN, False),
    (Traffic.DOWN, TrafficEvent.EJECT): (Traffic.DOWN_EJECTED, False),
    (Traffic.DOWN, TrafficEvent.RETURN): (Traffic.DOWN, False),
    (Traffic.EJECTED, TrafficEvent.HEALTH_UP): (Traffic.EJECTED, False),
    (Traffic.EJECTED, TrafficEvent.HEALTH_DOWN): (Traffic.DOWN_EJECTED, False),
    (Traffic.EJECTED, TrafficEvent.EJECT): (Traffic.EJECTED, False),
    (Traffic.EJECTED, TrafficEvent.RETURN): (Traffic.SERVING, True),
    (Traffic.DOWN_EJECTED, TrafficEvent.HEALTH_UP): (Traffic.EJECTED, False),
    (Traffic.DOWN_EJECTED, TrafficEvent.HEALTH_DOWN): (Traffic.DOWN_EJECTED, False),
    (Traffic.DOWN_EJECTED, TrafficEvent.EJECT): (Traffic.DOWN_EJECTED, False),
    (Traffic.DOWN_EJECTED, TrafficEvent.RETURN): (Traffic.DOWN, False),
}


def traffic_state(health_up: bool, ejected: bool) -> Traffic:
    if health_up:
        return Traffic.EJECTED if ejected else Traffic.SERVING
    return Traffic.DOWN_EJECTED if ejected else Traffic.DOWN


def _removed(state: AdminState) -> bool:
    """Taken out by an operator (maintenance, or a drain whose deadline passed)."""
    return state is AdminState.MAINTENANCE or state is AdminState.DRAINED


def slow_start_factor(ramp_from: float | None, now: float, duration: float) -> float:
    """Weight multiplier: SLOW_START_MIN at `ramp_from`, rising linearly to 1 after `duration`."""
    if ramp_from is None or duration <= 0:
        return 1.0
    progress = (now - ramp_from) / duration
    if progress >= 1.0:
        return 1.0
    return max(SLOW_START_MIN, min(1.0, progress))


# -- the pool -----------------------------------------------------------------------------------------

@dataclass(slots=True, unsafe_hash=True)
class Candidates:
    """What candidates() returns, once per request: not frozen, like Candidate (cheaper to build);
    read-only by convention."""

    list: tuple[Candidate, ...]
    panic: bool = False


@dataclass(frozen=True, slots=True)
class _Selection:
    """Which members candidates() returns, valid for `since <= now < until` as long as no event
    changes health, admin state, membership or ejections (those drop it). What changes per
    request -- in-flight counts and the decayed EWMA -- is not part of it."""

    members: tuple[tuple[_Member, float, bool], ...]     # (member, effective weight, accepting_new)
    panic: bool
    since: float
    until: float
    bare: Candidates                    # the same candidates with inflight 0, ewma 0 (load=False)


@dataclass
class PoolStats:
    panics: int = 0                     # candidates() calls answered in panic mode
    ejections: int = 0
    ejections_refused: int = 0          # over max_ejected_fraction
    drains_expired: int = 0


@dataclass
class _Member:
    backend: Backend
    health: Health
    outlier: Outlier
    load: PeakEwma
    admin: AdminState = AdminState.READY
    deadline: float | None = None
    ramp_from: float | None = None
    inflight: int = 0


class Pool:
    """`health`: the health to start from per backend id (a pool rebuilt by a reload keeps what the
    old one knew); others start from the settings' `assume`."""

    def __init__(self, name: str, backends: Sequence[Backend], settings: PoolSettings, *, now: float,
                 health: Mapping[str, Health] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.stats: PoolStats = PoolStats()    # read at scrape time (rlb_pool_panics): typed, never probed
        self._members: dict[str, _Member] = {}
        self._now = now
        self._selection: _Selection | None = None
        for b in backends:
            m = self._members[b.id] = self._new_member(b, now, ramp=False)
            if health and b.id in health and self.settings.health.type != "none":
                m.health = health[b.id]

    def _new_member(self, backend: Backend, now: float, *, ramp: bool) -> _Member:
        hs = self.settings.health
        health = Health.initial(assume_up=hs.assume_up or hs.type == "none")
        ld = self.settings.load
        return _Member(backend, health, Outlier(self.settings.outlier),
                       PeakEwma(decay=ld.decay, default_rtt=ld.default_rtt, now=now),
                       ramp_from=now if ramp and health.up else None)

    def _member(self, backend_id: str) -> _Member:
        try:
            return self._members[backend_id]
        except KeyError:
            raise UnknownBackend(backend_id) from None

    # -- the traffic machine -----------------------------------------------------------------------
    @staticmethod
    def _traffic(m: _Member) -> Traffic:
        return traffic_state(m.health.up, m.outlier.state is OState.EJECTED)

    def _settle(self, m: _Member, now: float) -> None:
        """Apply what time alone does by `now`: a drain deadline passing, an ejection ending
        (a ramp from the moment it ended, if the backend is healthy)."""
        if m.admin is AdminState.DRAIN and m.deadline is not None and now >= m.deadline:
            self._apply_admin(m, AdminEvent.DEADLINE, now)
            self.stats.drains_expired += 1
        o = m.outlier
        if o.state is OState.EJECTED and o.ejected_until is not None and now >= o.ejected_until:
            before = self._traffic(m)
            ended = o.expire(now)
            self._ramp_if(m, before, TrafficEvent.RETURN, ended if ended is not None else now)

    def _ramp_if(self, m: _Member, before: Traffic, event: TrafficEvent, at: float) -> None:
        _after, ramp = TRAFFIC_TRANSITIONS[(before, event)]
        if ramp:
            m.ramp_from = at
        self._selection = None

    # -- events from the edge ----------------------------------------------------------------------
    def health(self, backend_id: str) -> Health | None:
        """The backend's current health (what a restarted checker starts from); None if unknown."""
        m = self._members.get(backend_id)
        return m.health if m is not None else None

    def set_health(self, backend_id: str, health: Health, now: float, *, probe_ok: bool | None = None) -> None:
        """The checker's state after a probe (every result, or only changes). `probe_ok`: that
        probe passed (for `outlier.uneject: success`); None when not known."""
        m = self._members.get(backend_id)
        if m is None:               # removed by discovery while a check was running
            return
        self._settle(m, now)
        was_up = m.health.up
        m.health = health
        uneject = self.settings.outlier.uneject
        if m.outlier.state is OState.EJECTED and (
                (uneject == "success" and (probe_ok or (probe_ok is None and health.up and not was_up)))
                or (uneject == "recovery" and health.up and not was_up)):
            before = traffic_state(was_up, True)
            m.outlier.event(OEvent.UNEJECT, now, may_eject=False)
            self._ramp_if(m, before, TrafficEvent.RETURN, now)
        if health.up is not was_up:
            before = traffic_state(was_up, m.outlier.state is OState.EJECTED)
            self._ramp_if(m, before, TrafficEvent.HEALTH_UP if health.up else TrafficEvent.HEALTH_DOWN, now)

    def request_started(self, backend_id: str) -> None:
        m = self._members.get(backend_id)
        if m is not None:
            m.inflight += 1

    def request_finished(self, backend_id: str, *, ok: bool, latency: float | None, now: float) -> None:
        m = self._members.get(backend_id)
        if m is None:
            return
        m.inflight = max(0, m.inflight - 1)
        if latency is not None:
            m.load.observe(latency, now)
        if ok:
            if m.outlier.failures:      # a success resets a streak (no ejection change); none: nothing to do
                m.outlier.event(OEvent.SUCCESS, now, may_eject=False)
            return
        self._settle(m, now)
        self._selection = None
        allowed = self.settings.outlier.max_ejected(self._size()) > self._ejected_count(now)
        before = self._traffic(m)
        if m.outlier.event(OEvent.FAILURE, now, may_eject=allowed):
            self.stats.ejections += 1
            self._ramp_if(m, before, TrafficEvent.EJECT, now)
        elif self.settings.outlier.consecutive_failures and \
                m.outlier.failures >= self.settings.outlier.consecutive_failures:
            self.stats.ejections_refused += 1

    def set_admin(self, backend_id: str, state: str | AdminState, now: float,
                  deadline: float | None = None) -> None:
        """Set READY / DRAIN (with an optional absolute deadline, monotonic) / MAINTENANCE."""
        m = self._member(backend_id)
        event = AdminEvent(state.value if isinstance(state, AdminState) else state)
        if event is AdminEvent.DEADLINE:
            raise ValueError("the deadline event is the pool's own")
        self._settle(m, now)
        self._apply_admin(m, event, now)
        m.deadline = deadline if m.admin is AdminState.DRAIN else None
        self._settle(m, now)
        self._selection = None

    def _apply_admin(self, m: _Member, event: AdminEvent, now: float) -> None:
        m.admin, ramp = ADMIN_TRANSITIONS[(m.admin, event)]
        if ramp and self._traffic(m) is Traffic.SERVING:    # else the ramp starts on entering SERVING
            m.ramp_from = now

    def update_backends(self, backends: Sequence[Backend], now: float) -> None:
        """Discovery: keep the state of ids still present, add new ones (slow start), drop the rest."""
        fresh: dict[str, _Member] = {}
        for b in backends:
            old = self._members.get(b.id)
            if old is not None:
                old.backend = b
                fresh[b.id] = old
            else:
                fresh[b.id] = self._new_member(b, now, ramp=True)
        self._members = fresh
        self._selection = None

    # -- reading ---------------------------------------------------------------------------------
    def backend(self, backend_id: str) -> Backend | None:
        m = self._members.get(backend_id)
        return m.backend if m else None

    @property
    def backends(self) -> tuple[Backend, ...]:
        return tuple(m.backend for m in self._members.values())

    def _available(self, m: _Member, now: float) -> bool:
        return not _removed(m.admin) and m.health.up and not m.outlier.ejected(now)

    def _size(self) -> int:
        return sum(1 for m in self._members.values() if not _removed(m.admin))

    def _ejected_count(self, now: float) -> int:
        return sum(1 for m in self._members.values() if not _removed(m.admin) and m.outlier.ejected(now))

    def healthy_fraction(self, now: float | None = None) -> float:
        """Available backends / backends not removed by an admin (0.0 for an empty pool)."""
        now = self._now if now is None else now
        size = self._size()
        if size == 0:
            return 0.0
        return sum(1 for m in self._members.values() if self._available(m, now)) / size

    def candidates(self, now: float, inflight: Mapping[str, int] | None = None, *,
                   load: bool = True) -> Candidates:
        """The candidates at `now`. `load=False` (a policy whose `uses_load` is False): their
        inflight and ewma are left at 0, and the same Candidates serve every request while
        the selection holds (nothing built per request)."""
        if now > self._now:
            self._now = now
        sel = self._selection
        if sel is None or not sel.since <= now < sel.until:
            sel = self._selection = self._select(now)
        if sel.panic:
            self.stats.panics += 1
        if not load:
            return sel.bare
        out = []
        exp = math.exp
        for m, weight, accepting in sel.members:
            # m.load.value(now) inlined (this runs for every candidate of every request):
            # the estimate decayed by exp(-elapsed / decay), undecayed for elapsed <= 0
            ld = m.load
            elapsed = now - ld.stamp
            ewma = ld.estimate * exp(-elapsed / ld.decay) if elapsed > 0 else ld.estimate
            out.append(Candidate(m.backend, inflight.get(m.backend.id, m.inflight) if inflight else m.inflight,
                                 ewma, weight, accepting))
        return Candidates(tuple(out), sel.panic)

    def _select(self, now: float) -> _Selection:
        """The members candidates() returns at `now`, and until when that holds (the next drain
        deadline, ejection expiry or slow-start step; a ramp in progress holds for this `now` only)."""
        for m in self._members.values():
            self._settle(m, now)
        live = [m for m in self._members.values() if not _removed(m.admin)]
        available = [m for m in live if self._available(m, now)]
        panic = bool(live) and len(available) / len(live) < self.settings.panic_threshold
        until = float("inf")
        slow = self.settings.slow_start
        for m in self._members.values():
            if m.admin is AdminState.DRAIN and m.deadline is not None:
                until = min(until, m.deadline)
            if m.outlier.ejected_until is not None and m.outlier.ejected_until > now:
                until = min(until, m.outlier.ejected_until)
            if slow > 0 and m.ramp_from is not None and now - m.ramp_from < slow:
                until = now                     # the weight changes with every `now`: no reuse
        members = tuple((m, m.backend.weight * slow_start_factor(m.ramp_from, now, slow),
                         m.admin is AdminState.READY) for m in (live if panic else available))
        bare = Candidates(tuple(Candidate(m.backend, 0, 0.0, weight, accepting)
                                for m, weight, accepting in members), panic)
        return _Selection(members, panic, now, until, bare)

    def _settled_view(self, m: _Member, now: float) -> tuple[AdminState, float | None]:
        """(admin state, ramp start) as `_settle` would leave them at `now`, changing nothing."""
        admin, ramp_from = m.admin, m.ramp_from
        if admin is AdminState.DRAIN and m.deadline is not None and now >= m.deadline:
            admin = ADMIN_TRANSITIONS[(admin, AdminEvent.DEADLINE)][0]
        o = m.outlier
        if (o.state is OState.EJECTED and o.ejected_until is not None and now >= o.ejected_until
                and TRAFFIC_TRANSITIONS[(self._traffic(m), TrafficEvent.RETURN)][1]):
            ramp_from = o.ejected_until
        return admin, ramp_from

    def status(self, now: float) -> list[dict[str, Any]]:
        """A row per backend as it is at `now`. A query: it changes nothing (a Prometheus scrape
        or an admin report reads it), so what time alone does by `now` -- a drain deadline
        passing, an ejection ending -- is shown as `_settle` would apply it, not applied."""
        out = []
        for m in self._members.values():
            admin, ramp_from = self._settled_view(m, now)
            ejected = m.outlier.ejected(now)
            removed = _removed(admin)
            out.append({
                "id": m.backend.id,
                "address": f"[{m.backend.host}]:{m.backend.port}" if ":" in m.backend.host
                           else f"{m.backend.host}:{m.backend.port}",
                "weight": m.backend.weight,
                "effective_weight": round(m.backend.weight * slow_start_factor(
                    ramp_from, now, self.settings.slow_start), 3),
                "health": m.health.status.value,
                "health_probed": m.health.probed,
                "admin": admin.value,
                "drain_deadline": m.deadline,
                "available": not removed and m.health.up and not ejected,
                "inflight": m.inflight,
                "ewma_ms": round(m.load.value(now) * 1000, 3),
                "ejected": ejected,
                "ejected_until": m.outlier.ejected_until if ejected else None,
                "times_ejected": m.outlier.times_ejected,
                "consecutive_failures": m.outlier.failures,
            })
        return out

    def __repr__(self) -> str:
        up = draining = down = 0
        for m in self._members.values():
            if m.admin is AdminState.DRAIN:
                draining += 1
            elif m.admin is AdminState.READY and self._available(m, self._now):
                up += 1
            else:
                down += 1
        return f"<Pool {self.name} [{up} up, {draining} draining, {down} down]>"
