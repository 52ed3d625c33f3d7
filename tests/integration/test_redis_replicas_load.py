"""bounded_load and least_connections across LB replicas sharing a real Redis: the in-flight counts
each replica publishes (every 100 ms, with a lease) make the bound hold over all replicas, not per
replica."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from tests.redis_helpers import RedisServer, redis_server
from tests.rlb_helpers import backend_servers, lb_config, lb_url, running_lb

__all__ = ["redis_server"]

HOLD = 2.5          # seconds each request stays in flight at its backend


async def wait_total(lb: object, ids: list[str], total: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while sum(lb.store.inflight("app", ids).values()) != total:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, lb.store.inflight("app", ids)  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


async def test_bounded_load_holds_its_bound_over_two_replicas(redis_server: RedisServer) -> None:
    c = 1.25
    routes = [{"name": "bl", "match": {"path": "/"}, "pool": "app", "policy": "bounded_load",
               "options": {"key": "header:X-Key", "c": c}}]
    state = {"backend": "redis", "url": redis_server.url, "key_prefix": "rlb:bl:", "budget": "500ms",
             "lease": "1s", "publish_interval": "50ms"}
    async with backend_servers(["a", "b", "c"]) as bs, \
            running_lb(lb_config(bs, routes=routes, state=state)) as one, \
            running_lb(lb_config(bs, routes=routes, state=state)) as two, \
            aiohttp.ClientSession() as http:
        replicas = (one, two)
        ids = ["a", "b", "c"]

        async def hold(lb: object) -> int:
            async with http.get(lb_url(lb, f"/slow?s={HOLD}"), headers={"X-Key": "same-key"}) as resp:  # type: ignore[arg-type]
                await resp.read()
                return resp.status

        tasks = []
        n = 9
        for i in range(n):
            tasks.append(asyncio.create_task(hold(replicas[i % 2])))
            # each replica has published the new request and read the other's before the next one
            for lb in replicas:
                await wait_total(lb, ids, i + 1)
        placed = {b.name: b.hits["/slow"] for b in bs}
        assert sum(placed.values()) == n
        bound = math.ceil(c * n / len(ids) - 1e-9)          # the bound for the last request placed
        assert max(placed.values()) <= bound, placed
        assert await asyncio.gather(*tasks) == [200] * n
        for lb in replicas:
            await wait_total(lb, ids, 0)                    # released everywhere when they finish
        assert one.rt.routes["bl"].policy.stats["spills"] > 0


async def test_least_connections_sees_the_other_replica_s_requests(redis_server: RedisServer) -> None:
    routes = [{"name": "lc", "match": {"path": "/"}, "pool": "app", "policy": "least_connections"}]
    state = {"backend": "redis", "url": redis_server.url, "key_prefix": "rlb:lc:", "budget": "500ms",
             "publish_interval": "50ms"}
    async with backend_servers(["a", "b"]) as bs, \
            running_lb(lb_config(bs, routes=routes, state=state)) as one, \
            running_lb(lb_config(bs, routes=routes, state=state)) as two, \
            aiohttp.ClientSession() as http:
        ids = ["a", "b"]

        async def hold() -> None:
            async with http.get(lb_url(one, f"/slow?s={HOLD}")) as resp:
                await resp.read()

        first = asyncio.create_task(hold())                 # one request in flight through replica one
        await wait_total(two, ids, 1)
        busy = next(b.name for b in bs if b.hits["/slow"])
        for _ in range(4):                                  # replica two sends its requests elsewhere
            async with http.get(lb_url(two, "/page")) as resp:
                assert resp.headers["X-Backend"] != busy
        await first
