"""`workers: 2` on a real Redis: each worker process is a replica of the shared state with its own
replica id; sessions learnt by one worker are followed by the other, and both workers' in-flight
counts are published (requests on fresh connections: the kernel picks a worker per connection)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio

from tests.integration.test_rlb_workers import fresh_connections, supervised, url, write_config
from tests.redis_helpers import RedisServer, redis_server
from tests.rlb_helpers import backend_servers

__all__ = ["redis_server"]
pytestmark = pytest.mark.timeout(90)

ROUTES = [{"name": "lc", "match": {"path": "/slow"}, "pool": "app", "policy": "least_connections"},
          {"name": "learn", "pool": "app", "policy": "sticky_learn",
           "options": {"cookie": "JSESSIONID", "first": "round_robin"}}]


async def test_two_workers_share_sessions_and_publish_their_own_counts(redis_server: RedisServer,
                                                                       tmp_path: Path) -> None:
    state = {"backend": "redis", "url": redis_server.url, "key_prefix": "rlb:w:", "budget": "500ms",
             "publish_interval": "50ms"}
    async with backend_servers(["a", "b", "c"]) as bs:
        path = write_config(tmp_path / "lb.yaml", bs, routes=ROUTES, state=state)
        async with supervised(path) as sup, fresh_connections() as http:
            owners = {}
            for i in range(6):
                async with http.get(url(sup, f"/set-cookie?name=JSESSIONID&value=w{i}")) as resp:
                    assert resp.status == 200
                    owners[f"w{i}"] = resp.headers["X-Backend"]
            for sid, owner in owners.items():
                for _ in range(6):                  # new connections: either worker answers
                    async with http.get(url(sup, "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as resp:
                        assert resp.status == 200
                        assert resp.headers["X-Backend"] == owner, sid

            async def hold() -> None:
                async with http.get(url(sup, "/slow?s=2")) as resp:
                    await resp.read()

            held = [asyncio.create_task(hold()) for _ in range(10)]
            raw = redis.asyncio.from_url(redis_server.url, decode_responses=True)
            try:
                deadline = time.monotonic() + 5
                while True:
                    replicas: set[str] = set()
                    total = 0
                    for key in await raw.keys("rlb:w:c:*"):
                        for rid, value in (await raw.hgetall(key)).items():
                            replicas.add(rid)
                            total += int(value.split(":")[0])
                    if total == 10:
                        break
                    assert time.monotonic() < deadline, (replicas, total)
                    await asyncio.sleep(0.02)
                assert len(replicas) == 2, replicas         # one replica id per worker process
            finally:
                await asyncio.gather(*held)
                await raw.aclose()
