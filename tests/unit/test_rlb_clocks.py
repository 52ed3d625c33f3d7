"""Two injected clocks: monotonic for every timer, wall only for sticky cookie times.

A LoadBalancer on loopback with a fake monotonic clock and a fake wall clock: stepping the wall
clock by an hour (forward and back) moves no timer -- ejection end, slow start, drain deadline,
health check intervals -- while sticky cookies expire by the wall clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from regional_lb.app import LoadBalancer
from tests.rlb_helpers import TestBackend, admin_url, backend_servers, lb_config, lb_url, running_lb

HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def row(lb: LoadBalancer, backend_id: str) -> dict[str, Any]:
    return next(r for r in lb.rt.pools["app"].status_rows() if r["id"] == backend_id)


def test_the_default_clocks_are_monotonic_and_wall() -> None:
    lb = LoadBalancer(lb_config(["127.0.0.1:1"]))
    assert lb.clock is time.monotonic
    assert lb.wall is time.time
    assert lb.rt.pools["app"].clock is time.monotonic


async def cookie_for(lb: LoadBalancer, s: aiohttp.ClientSession, name: str) -> str:
    for _ in range(50):
        async with s.get(lb_url(lb, "/x")) as r:
            if r.headers["X-Backend"] == name:
                return r.cookies["LBSESSIONID"].value
    raise AssertionError(f"no session landed on {name}")


async def get(lb: LoadBalancer, s: aiohttp.ClientSession, cookie: str, path: str = "/x") -> tuple[str, bool]:
    """(backend, whether a new cookie was set) for a request with that session cookie."""
    async with s.get(lb_url(lb, path), headers={"Cookie": f"LBSESSIONID={cookie}"}) as r:
        return r.headers["X-Backend"], "Set-Cookie" in r.headers


async def test_a_wall_clock_step_moves_no_timer_but_expires_cookies() -> None:
    mono, wall = Clock(5000.0), Clock(1_700_000_000.0)
    routes = [{"pool": "app", "policy": "sticky_cookie",
               "options": {"secrets": ["k"], "max_idle": "30m", "max_life": "12h"}}]
    pool_extra = {"slow_start": "20s",
                  "outlier": {"consecutive_failures": 1, "base_ejection": "30s", "max_ejected_fraction": 0.5}}
    async with backend_servers(["a", "b", "c"]) as backends:
        cfg = lb_config(backends, routes=routes, pool_extra=pool_extra)
        async with running_lb(cfg, clock=mono, wall=wall) as lb, aiohttp.ClientSession() as s:
            on_a = await cookie_for(lb, s, "a")
            on_b = await cookie_for(lb, s, "b")
            assert await get(lb, s, on_b) == ("b", False)
            # eject a (one 5xx), drain c with a 10 s deadline
            assert (await get(lb, s, on_a, "/status/500"))[0] == "a"
            assert row(lb, "a")["ejected"]
            async with s.post(admin_url(lb, "/api/pools/app/backends/c/drain"), json={"deadline": 10},
                              headers={"Authorization": "Bearer test-token"}) as r:
                assert r.status == 200
                shown = (await r.json())["backend"]["drain_deadline"]
                assert shown == wall.now + 10                     # shown as wall-clock time

            for step in (HOUR, -HOUR, -HOUR):                    # an hour forward, then back past the start
                wall.now += step
                assert row(lb, "a")["ejected"]                    # the ejection did not end
                assert row(lb, "c")["admin"] == "drain"           # nor did the drain deadline pass
            wall.now += HOUR                                      # back to the start

            # the cookie follows the wall clock: an hour later, b's session is past max_idle (30 min)
            wall.now += HOUR
            _backend, new_cookie = await get(lb, s, on_b)
            assert new_cookie                                     # expired: a fresh session, a new cookie
            wall.now -= HOUR
            assert await get(lb, s, on_b) == ("b", False)         # back in time: valid again

            mono.now += 10.0
            assert row(lb, "c")["admin"] == "drained"             # the drain deadline, on the monotonic clock
            mono.now += 20.0                                      # 30 s: the ejection ends
            assert not row(lb, "a")["ejected"]
            assert row(lb, "a")["effective_weight"] == 0.1        # the ramp starts now ...
            wall.now += HOUR
            mono.now += 10.0
            assert row(lb, "a")["effective_weight"] == 0.5        # ... and runs on the monotonic clock only
            wall.now -= 2 * HOUR
            assert row(lb, "a")["effective_weight"] == 0.5
            mono.now += 10.0
            assert row(lb, "a")["effective_weight"] == 1.0


async def probes(backend: TestBackend, n: int, between: Any) -> None:
    async with asyncio.timeout(10.0):
        for _ in range(n):
            backend.hit.clear()
            await backend.hit.wait()
            between()


async def test_health_checks_keep_their_interval_across_wall_clock_steps() -> None:
    mono, wall = Clock(5000.0), Clock(1_700_000_000.0)
    health = {"type": "http", "interval": "50ms", "rise": 1, "fall": 1}
    async with backend_servers(["a"]) as (a,), \
            running_lb(lb_config([a], health=health), clock=mono, wall=wall) as lb:
        steps = iter([HOUR, -HOUR, -HOUR, HOUR, HOUR, -HOUR] * 2)

        def step() -> None:
            wall.now += next(steps)

        started = time.monotonic()
        await probes(a, 10, step)                     # ten probes while the wall clock jumps around
        assert time.monotonic() - started < 5.0       # ~0.5 s at 50 ms: none was put off by an hour
        assert row(lb, "a")["health"] == "up"


async def test_client_rtt_samples_are_stamped_by_the_monotonic_clock() -> None:
    mono, wall = Clock(5000.0), Clock(1_700_000_000.0)
    push = {"urls": ["http://127.0.0.1:1"], "token": "t", "interval": "1h"}
    async with backend_servers(["a"]) as (a,), \
            running_lb(lb_config([a], latency_push=push), clock=mono, wall=wall, rtt_source=lambda _t: 20.0) as lb, \
            aiohttp.ClientSession() as s:
        aggregator = lb.pusher.aggregator
        async with s.get(lb_url(lb, "/x")) as r:
            assert r.status == 200
        assert [b["rtt_ms"] for b in aggregator.drain_batch(mono.now)] == [20.0]
        async with s.get(lb_url(lb, "/x")) as r:
            assert r.status == 200
        wall.now += HOUR
        assert aggregator.drain_batch(mono.now + aggregator.window + 1) == []   # sampled at mono time, now stale
