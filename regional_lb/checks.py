"""Active health checks of the pools: one HealthChecker per pool, restarted when its backends change  [edge].

    checks = PoolChecks(clock=time.monotonic, probe=None, on_change=count, on_result=broadcast)
    await checks.restart(pr)         # (re)start pool `pr`'s checker (reload, discovery change)
    await checks.stop(pr)            # and checks.start_all(rt) / checks.stop_all(rt)

Every probe result is applied to the pool (`Pool.set_health`) and then handed to `on_result`
(the supervisor sends it to its workers: regional_lb/feed.py); every status change to
`on_change` (a metric). A restarted checker starts from the pool's current health, not from
`assume`, so a backend known DOWN comes back as soon as `rise` probes pass.

Run by the process that owns health: the single process (`workers: 1`) or the supervisor;
a worker has none (it is told).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gslb.common.checker import CheckTarget, HealthChecker
from gslb.common.health import Health
from gslb.common.probe import ProbeResult, ProbeSpec
from regional_lb.runtime import PoolRuntime, Runtime

OnResult = Callable[[str, str, Health, ProbeResult], None]       # (pool, backend id, health, result)


def check_targets(pr: PoolRuntime) -> list[CheckTarget]:
    """What to probe for pool `pr` (nothing for `health: {type: none}`)."""
    hc = pr.config.settings.health
    if hc.type == "none":
        return []
    targets = []
    for b in pr.backends():
        spec = ProbeSpec(hc.type, b.host, b.port, hc.path, "http", tuple(hc.expect_status), hc.timeout,
                         host_header=hc.host_header)
        targets.append(CheckTarget(b.id, spec, hc.interval, hc.thresholds, assume_up=hc.assume_up))
    return targets


class PoolChecks:
    def __init__(self, *, clock: Callable[[], float], probe: Any = None, on_result: OnResult | None = None,
                 on_change: OnResult | None = None) -> None:
        self.clock = clock
        self._probe = probe              # seam: gslb.common.probe's prober, or a fake
        self._on_result = on_result
        self._on_change = on_change

    async def start_all(self, rt: Runtime) -> None:
        for pr in rt.pools.values():
            await self.restart(pr)

    async def stop_all(self, rt: Runtime) -> None:
        for pr in rt.pools.values():
            await self.stop(pr)

    async def restart(self, pr: PoolRuntime) -> None:
        await self.stop(pr)
        targets = check_targets(pr)
        if not targets:
            return
        pool, name = pr.pool, pr.name

        def on_result(backend_id: str, health: Health, result: ProbeResult) -> None:
            pool.set_health(backend_id, health, self.clock(), probe_ok=result.ok)
            if self._on_result is not None:
                self._on_result(name, backend_id, health, result)

        def on_change(backend_id: str, health: Health, result: ProbeResult) -> None:
            if self._on_change is not None:
                self._on_change(name, backend_id, health, result)

        initial = {t.name: h for t in targets if (h := pool.health(t.name)) is not None}
        checker = HealthChecker(targets, on_change=on_change, on_result=on_result, probe=self._probe,
                                clock=self.clock, initial=initial)
        pr.checker = checker
        await checker.start()

    async def stop(self, pr: PoolRuntime) -> None:
        if pr.checker is not None:
            await pr.checker.stop()
            pr.checker = None
