"""A pool that follows its backends: a backend that is DOWN when its health checker is restarted
(reload, discovery change) comes back as soon as its probes pass; real loopback backends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from gslb.common.checker import CheckTarget, HealthChecker
from gslb.common.health import Health, Status, Thresholds
from gslb.common.probe import ProbeResult, ProbeSpec
from regional_lb.config import parse_config
from regional_lb.discovery import FakeResolver
from tests.rlb_helpers import TestBackend, backend_servers, lb_config, lb_config_dict, lb_url, running_lb

HEALTH = {"type": "http", "path": "/healthz", "interval": "50ms", "timeout": "1s", "rise": 2, "fall": 3}


async def probed_until(backend: TestBackend, cond: Callable[[], bool]) -> None:
    """Wait, probe by probe (each one is a request to `backend`), until `cond()` holds (10 s at most)."""
    async with asyncio.timeout(10.0):
        while not cond():
            backend.hit.clear()
            await backend.hit.wait()
            await asyncio.sleep(0)                  # let the checker hand the result to the pool


async def stays(backend: TestBackend, cond: Callable[[], bool], probes: int = 4) -> None:
    """`cond()` holds after each of the next `probes` probes of `backend`."""
    async with asyncio.timeout(10.0):
        for _ in range(probes):
            backend.hit.clear()
            await backend.hit.wait()
            await asyncio.sleep(0)
            assert cond()


def health_of(lb: Any, backend_id: str, pool: str = "app") -> str:
    rows = lb.rt.pools[pool].status_rows()
    return str(next(r for r in rows if r["id"] == backend_id)["health"])


# -- the checker seam ------------------------------------------------------------------------------------

async def test_a_checker_started_from_a_known_down_target_reports_its_recovery() -> None:
    async def passing(spec: ProbeSpec, session: Any) -> ProbeResult:
        return ProbeResult(True, 0.001, "ok")

    target = CheckTarget("a", ProbeSpec("tcp", "127.0.0.1", 1, "/", "http", (200,), 1.0), 1.0,
                         Thresholds(rise=2, fall=1), assume_up=True)
    changes: list[str] = []
    fresh = HealthChecker([target], on_change=lambda n, h, r: changes.append(h.status.value), probe=passing)
    await fresh.check_once("a")
    await fresh.check_once("a")
    assert changes == []                           # assumed up, probes agree: nothing to report (the bug)
    down = Health(Status.DOWN, 0, True)
    restarted = HealthChecker([target], on_change=lambda n, h, r: changes.append(h.status.value),
                              probe=passing, initial={"a": down, "gone": down})
    assert restarted.states == {"a": down}
    await restarted.check_once("a")
    assert changes == []                           # one pass of rise=2
    await restarted.check_once("a")
    assert changes == ["up"]


# -- reload ----------------------------------------------------------------------------------------------

async def test_a_backend_down_across_a_reload_comes_back_when_its_probes_pass() -> None:
    async with backend_servers(["a", "b", "c"]) as (a, b, c):
        cfg = lb_config([a, b], health=HEALTH)
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            b.set_healthy(False)
            await probed_until(b, lambda: health_of(lb, "b") == "down")
            # a reload that changes the pool's backends restarts its checker
            ok, message = await lb.reload(lb_config([a, b, c], health=HEALTH))
            assert ok, message
            # what the pool knew survives the restart: a new checker assuming b up would report it
            # up (streak toward down) after its first failing probe
            await stays(b, lambda: health_of(lb, "b") == "down")
            b.set_healthy(True)
            await probed_until(b, lambda: health_of(lb, "b") == "up")
            seen = set()
            for _ in range(9):
                async with s.get(lb_url(lb, "/x")) as r:
                    assert r.status == 200
                    seen.add(r.headers["X-Backend"])
            assert seen == {"a", "b", "c"}


async def test_a_pool_rebuilt_by_a_reload_keeps_the_health_it_knew() -> None:
    async with backend_servers(["a", "b"]) as (a, b):
        cfg = lb_config([a, b], health=HEALTH)
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            b.set_healthy(False)
            await probed_until(b, lambda: health_of(lb, "b") == "down")
            old_pool = lb.rt.pools["app"].pool
            ok, message = await lb.reload(lb_config([a, b], health=HEALTH, pool_extra={"slow_start": "5s"}))
            assert ok, message
            assert lb.rt.pools["app"].pool is not old_pool  # other settings: a new pool ...
            await stays(b, lambda: health_of(lb, "b") == "down")   # ... which does not assume b up again
            for _ in range(4):
                async with s.get(lb_url(lb, "/x")) as r:
                    assert r.headers["X-Backend"] == "a"
            b.set_healthy(True)
            await probed_until(b, lambda: health_of(lb, "b") == "up")


# -- discovery -------------------------------------------------------------------------------------------

async def test_a_backend_down_across_a_discovery_change_comes_back_when_its_probes_pass() -> None:
    async with backend_servers(["a", "b"]) as (a, b):
        name = "_http._tcp.app.test"
        resolver = FakeResolver({(name, "SRV"): [("127.0.0.1", a.port, 1)]})
        doc = lb_config_dict([], health=HEALTH)
        doc["pools"]["app"]["backends"] = [{"dns": name, "type": "SRV", "interval": "1h"}]
        cfg = parse_config(__import__("yaml").safe_dump(doc), file="test.yaml")
        async with running_lb(cfg, resolver=resolver) as lb:
            a_id = f"127.0.0.1:{a.port}"
            assert [x.id for x in lb.rt.pools["app"].pool.backends] == [a_id]
            a.set_healthy(False)
            await probed_until(a, lambda: health_of(lb, a_id) == "down")
            resolver.answers[(name, "SRV")] = [("127.0.0.1", a.port, 1), ("127.0.0.1", b.port, 1)]
            assert lb.discovery is not None
            spec = lb.config.pools["app"].dns[0]
            await lb.discovery.resolve_once("app", spec)      # the change restarts the checker
            assert len(lb.rt.pools["app"].pool.backends) == 2
            await stays(a, lambda: health_of(lb, a_id) == "down")
            a.set_healthy(True)
            await probed_until(a, lambda: health_of(lb, a_id) == "up")
