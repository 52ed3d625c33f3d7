"""A Prometheus scrape and the admin API's reports read the pools and change nothing in them.

The clock is injected: a drain's deadline passes while nothing but the scrapes and reports run.
Before the fix, the scrape applied it itself (the backend's stored admin state became "drained",
`drains_expired` counted; an ejection's end likewise), so how often Prometheus scraped changed
the proxy's state. The pool-level property test is tests/unit/test_pool_status_reads_only.py.
"""

from __future__ import annotations

import copy

import aiohttp

from tests.rlb_helpers import admin_url, backend_servers, lb_config, running_lb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def internal_state(lb) -> list[tuple]:  # type: ignore[no-untyped-def]
    pool = lb.rt.pools["app"].pool
    return [(m.backend.id, m.admin, m.deadline, m.outlier.state, m.outlier.ejected_until, m.ramp_from)
            for m in pool._members.values()] + [copy.copy(pool.stats)]


async def test_scrapes_and_reports_change_no_pool_state() -> None:
    clock = Clock()
    async with backend_servers(["a", "b"]) as (a, b), \
            running_lb(lb_config([a, b], pool_extra={"slow_start": "10s"}), clock=clock) as lb:
        lb.rt.pools["app"].pool.set_admin("a", "drain", clock(), clock() + 5.0)
        clock.now += 60.0                               # the deadline has passed; nobody asked the pool
        before = internal_state(lb)
        async with aiohttp.ClientSession() as s:
            for path in ("/metrics", "/api/pools", "/api/status/pools", "/metrics"):
                async with s.get(admin_url(lb, path)) as r:
                    assert r.status == 200
                    text = await r.text()
                    if path == "/metrics":
                        assert 'rlb_backend_up{admin="drained",backend="a",pool="app"} 0.0' in text
        assert internal_state(lb) == before
