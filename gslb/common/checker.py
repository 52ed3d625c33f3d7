"""Periodic active health checks feeding the rise/fall state machine  [edge].

`HealthChecker` runs one loop per target: probe, judge, `Health.observe`, and on a
change of status call `on_change(name, health, result)`. Probing starts when
`start()` is called (at config load), not at the first request. The probe and
the clock (monotonic: it only measures intervals) are constructor seams;
`check_once(name)` runs a single round so tests drive the checker without waiting
for intervals.

A checker that replaces another (a reload, a discovery change) must start from the
health its owner already knows -- `initial={name: Health}` -- not from `assume_up`:
otherwise a target known DOWN is assumed UP by the new checker, its passing probes
agree with that, no change is ever reported, and the owner keeps it DOWN forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp

from gslb.common.health import Health, Thresholds
from gslb.common.probe import ProbeResult, ProbeSpec, run_probe

log = logging.getLogger("gslb.health")

Judge = Callable[[ProbeResult], tuple[bool, str]]
ProbeFn = Callable[[ProbeSpec, aiohttp.ClientSession | None], Awaitable[ProbeResult]]
OnChange = Callable[[str, Health, ProbeResult], None]


@dataclass(frozen=True, slots=True)
class CheckTarget:
    name: str
    spec: ProbeSpec
    interval: float = 2.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    assume_up: bool = True
    judge: Judge | None = None        # extra verdict on a probe that passed (e.g. parse a JSON body)


class HealthChecker:
    def __init__(self, targets: Iterable[CheckTarget], *, on_change: OnChange | None = None,
                 on_result: OnChange | None = None, probe: ProbeFn | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 initial: Mapping[str, Health] | None = None) -> None:
        self.targets = {t.name: t for t in targets}
        known = initial or {}
        self.states: dict[str, Health] = {n: known.get(n) or Health.initial(assume_up=t.assume_up)
                                          for n, t in self.targets.items()}
        self.last: dict[str, ProbeResult] = {}
        self.last_time: dict[str, float] = {}
        self.transitions = 0
        self._on_change = on_change
        self._on_result = on_result
        self._probe = probe
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._first_round = asyncio.Event()      # every target has had a result (systemd READY=1 waits)
        if not self.targets:
            self._first_round.set()

    def __repr__(self) -> str:
        up = sum(h.up for h in self.states.values())
        return f"<HealthChecker [{up} up, {len(self.states) - up} down]>"

    async def _run_probe(self, spec: ProbeSpec) -> ProbeResult:
        if self._probe is not None:
            return await self._probe(spec, self._session)
        return await run_probe(spec, self._session, self._clock)

    async def check_once(self, name: str) -> Health:
        """Probe `name` once and feed the result to its state machine."""
        target = self.targets[name]
        result = await self._run_probe(target.spec)
        if result.ok and target.judge is not None:
            ok, detail = target.judge(result)
            if not ok:
                result = ProbeResult(False, result.rtt, detail, result.status, result.body)
        before = self.states[name]
        after = before.observe(result.ok, target.thresholds)
        self.states[name] = after
        self.last[name] = result
        if not self._first_round.is_set() and len(self.last) >= len(self.targets):
            self._first_round.set()
        self.last_time[name] = self._clock()
        if self._on_result is not None:
            self._on_result(name, after, result)
        if after.status is not before.status:
            self.transitions += 1
            log.warning("%s is now %s (%s)", name, after.status.value, result.detail)
            if self._on_change is not None:
                self._on_change(name, after, result)
        return after

    async def _loop(self, name: str) -> None:
        interval = self.targets[name].interval
        while True:
            started = self._clock()
            try:
                await self.check_once(name)
            except Exception:  # a bug in a judge or callback must not stop probing
                log.exception("health check of %s failed", name)
            await asyncio.sleep(max(0.0, interval - (self._clock() - started)))

    async def first_round(self) -> None:
        """Return once every target has had one probe result (at once when there are none)."""
        await self._first_round.wait()

    async def start(self) -> None:
        if self._session is None and self._probe is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self._tasks = [asyncio.create_task(self._loop(n), name=f"check {n}") for n in self.targets]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
