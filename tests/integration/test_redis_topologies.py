"""LB replicas on real Redis topologies: Sentinel (1 master, 2 replicas, 3 sentinels) and Cluster
(3 masters, 3 replicas, made by `redis-cli --cluster create`), both on loopback.

Each topology is started once for the module (the tests run in order on it: the fail-over test
leaves a new master behind, the next ones use whatever is master then).  Two LB replicas serve one
pool of three backends; sessions alternate between the replicas under concurrent load.
  * a burst of 300 concurrent requests on freshly started replicas (pools of 16): nothing fails,
    every GET waits for a pooled connection instead of erroring, and cluster keys land on every master;
  * kill the master: no request fails and >= 99 % of the requests of established sessions stay on
    their backend (the local copies answer while Redis fails over; entries learnt meanwhile are
    written back);
  * SIGSTOP the master: the added p99 latency is at most the store's budget + 5 ms (plus the worst
    stall of this process's event loop during the pause, measured by `LoopLag`: the machine's other
    load, which awaiting Redis does not cause);
  * SIGKILL a process holding in-flight counts: the other replicas see them released within the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from regional_lb.app import LoadBalancer
from tests.redis_helpers import ClusterTopology, LoopLag, SentinelTopology, cluster_topology, sentinel_topology
from tests.rlb_helpers import TestBackend, backend_servers, lb_config, lb_url, running_lb

BUDGET = 0.02
SESSIONS = 40
ROUTES = [{"name": "learn", "match": {"path": "/"}, "pool": "app", "policy": "sticky_learn",
           "options": {"cookie": "JSESSIONID", "first": "round_robin"}}]

Topology = SentinelTopology | ClusterTopology


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    starter = sentinel_topology if request.param == "sentinel" else cluster_topology
    with starter() as topo:
        yield topo


def master_node(topo: Topology, key_hint: str = "") -> Any:
    """The node to kill / stop: Sentinel's current master, or the cluster master holding most
    sessions (any master serves a third of the slots)."""
    if isinstance(topo, SentinelTopology):
        return topo.node(topo.current_master()[1])
    return topo.masters()[0]


def replica_config(backends: list[TestBackend], topo: Topology, prefix: str, budget: float = BUDGET) -> Any:
    return lb_config(backends, routes=ROUTES, state={"backend": "redis", "url": topo.url, "key_prefix": prefix,
                                                      "budget": f"{int(budget * 1000)}ms", "pool_size": 16})


@contextlib.asynccontextmanager
async def two_replicas(topo: Topology, prefix: str, budget: float = BUDGET
                       ) -> AsyncIterator[tuple[list[TestBackend], list[LoadBalancer]]]:
    async with backend_servers(["a", "b", "c"]) as bs, \
            running_lb(replica_config(bs, topo, prefix, budget)) as one, \
            running_lb(replica_config(bs, topo, prefix, budget)) as two:
        yield bs, [one, two]


@dataclass
class Load:
    """Requests of established sessions, alternating across replicas, from `workers` tasks."""

    http: aiohttp.ClientSession
    replicas: list[LoadBalancer]
    owners: dict[str, str]
    ok: int = 0
    stayed: int = 0
    failed: list[str] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)     # (start, duration)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    moved: list[tuple[float, str, int, str, str]] = field(default_factory=list)

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        sids = list(self.owners)
        n = seed
        while not self.stop.is_set():
            sid = rng.choice(sids)
            n += 1
            lb = self.replicas[n % len(self.replicas)]
            t0 = time.monotonic()
            try:
                async with self.http.get(lb_url(lb, "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as resp:
                    await resp.read()
                    status, backend = resp.status, resp.headers.get("X-Backend", "")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
                continue
            self.latencies.append((t0, time.monotonic() - t0))
            if status != 200:
                self.failed.append(f"status {status}")
                continue
            self.ok += 1
            if backend == self.owners[sid]:
                self.stayed += 1
            else:
                self.moved.append((t0, sid, n % len(self.replicas), backend, self.owners[sid]))

    def run(self, workers: int) -> list[asyncio.Task[None]]:
        return [asyncio.get_running_loop().create_task(self.worker(i)) for i in range(workers)]


async def establish(http: aiohttp.ClientSession, replicas: list[LoadBalancer], prefix: str,
                    count: int = SESSIONS) -> dict[str, str]:
    """Sessions learnt by alternating replicas, then used once through each replica: established
    means both replicas have served it (and agree) before the fault."""
    owners = {}
    for i in range(count):
        sid = f"{prefix}{i}"
        async with http.get(lb_url(replicas[i % 2], f"/set-cookie?name=JSESSIONID&value={sid}")) as resp:
            assert resp.status == 200
            owners[sid] = resp.headers["X-Backend"]
    assert len(set(owners.values())) == 3
    await wait_for(lambda: all(lb.store.available for lb in replicas), 10)
    for sid in owners:
        seen = set()
        for lb in replicas:
            async with http.get(lb_url(lb, "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as resp:
                assert resp.status == 200
                seen.add(resp.headers["X-Backend"])
        if len(seen) > 1:          # learnt twice while Redis flapped: converges on what Redis holds
            seen = await agreed(http, replicas, sid)
        owners[sid] = seen.pop()
    return owners


async def agreed(http: aiohttp.ClientSession, replicas: list[LoadBalancer], sid: str) -> set[str]:
    deadline = time.monotonic() + 10
    while True:
        seen = set()
        for lb in replicas:
            async with http.get(lb_url(lb, "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as resp:
                assert resp.status == 200
                seen.add(resp.headers["X-Backend"])
        if len(seen) == 1:
            return seen
        assert time.monotonic() < deadline, (sid, seen)     # the replicas must come to agree
        await asyncio.sleep(0.1)


async def settle(topology: Topology) -> None:
    if isinstance(topology, SentinelTopology):
        await asyncio.to_thread(topology.wait_stable)
    else:
        await asyncio.to_thread(topology.wait_ok, replicas=False)


async def wait_for(predicate: Any, within: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(step)


async def test_a_burst_on_fresh_replicas_fails_nothing_and_keys_spread(topology: Topology) -> None:
    # a budget the whole burst fits in: every GET must wait for a pooled connection, none may fail
    async with two_replicas(topology, "rlb:burst:", budget=2.0) as (_bs, replicas), \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                  connector=aiohttp.TCPConnector(limit=0)) as http:
        owners = await establish(http, replicas, "b")
        sids = list(owners)

        async def one(i: int) -> tuple[int, str, str]:
            sid = sids[i % len(sids)]
            async with http.get(lb_url(replicas[i % 2], "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-Backend", ""), owners[sid]

        results = await asyncio.gather(*(one(i) for i in range(300)))     # 300 at once, pools of 16
        assert [r for r in results if r[0] != 200] == []
        stayed = sum(1 for _, backend, owner in results if backend == owner)
        assert stayed >= 297, stayed
        assert [lb.store.stats["redis_errors"] for lb in replicas] == [0, 0], [lb.store.stats for lb in replicas]
    if isinstance(topology, ClusterTopology):          # sessions spread over every master's slots
        from tests.redis_helpers import _sync_client
        sizes = [_sync_client(m.host, m.port).dbsize() for m in topology.masters()]
        assert len(sizes) == 3
        assert all(size > 0 for size in sizes), sizes


async def test_killing_the_master_fails_no_request_and_sessions_stay(topology: Topology) -> None:
    async with two_replicas(topology, "rlb:kill:") as (_bs, replicas), \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        owners = await establish(http, replicas, "s")
        load = Load(http, replicas, owners)
        tasks = load.run(6)
        await asyncio.sleep(0.5)
        victim = master_node(topology)
        await asyncio.to_thread(victim.stop)
        killed = time.monotonic()
        # new sessions while Redis fails over: learnt locally, written back afterwards
        during = {}
        for i in range(6):
            async with http.get(lb_url(replicas[i % 2], f"/set-cookie?name=JSESSIONID&value=d{i}")) as resp:
                assert resp.status == 200
                during[f"d{i}"] = resp.headers["X-Backend"]
        if isinstance(topology, SentinelTopology):
            await asyncio.to_thread(topology.wait_failover, ("127.0.0.1", victim.port))
        else:
            await asyncio.to_thread(topology.wait_ok, replicas=False)
        await wait_for(lambda: all(lb.store.available for lb in replicas), 15)
        await asyncio.sleep(0.5)                                   # more load on the new master
        load.stop.set()
        await asyncio.gather(*tasks)
        outage = time.monotonic() - killed
        assert load.failed == [], load.failed[:5]
        assert load.ok > 200, load.ok
        moved = [(round(t - killed, 2), *rest) for t, *rest in load.moved]
        assert load.stayed / load.ok >= 0.99, (load.stayed, load.ok, outage, moved[:10], moved[-10:],
                                               [lb.store.stats for lb in replicas])
        assert any(lb.store.stats["outages"] for lb in replicas)
        # sessions learnt during the fail-over: both replicas agree on each once Redis is back.  Not
        # necessarily on the backend that first served it: the other replica may have served (and
        # stored) it first while Redis answered it and not the learner -- Redis wins then.
        for sid in during:
            await agreed(http, replicas, sid)
        assert sum(lb.store.stats["written_back"] + lb.store.stats["conflicts"] for lb in replicas) >= 1


async def test_a_hung_master_adds_at_most_the_budget(topology: Topology) -> None:
    async with two_replicas(topology, "rlb:hang:") as (_bs, replicas), \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        owners = await establish(http, replicas, "h")
        load = Load(http, replicas, owners)
        lag = LoopLag()
        lag.start()
        tasks = load.run(4)
        await asyncio.sleep(1.0)
        victim = master_node(topology)
        paused_at = time.monotonic()
        victim.pause()
        try:
            await asyncio.sleep(1.0)
        finally:
            victim.resume()
        resumed_at = time.monotonic()
        load.stop.set()
        await asyncio.gather(*tasks)
        await lag.stop()
        assert load.failed == []
        before = sorted(d for t, d in load.latencies if t < paused_at)
        during = sorted(d for t, d in load.latencies if paused_at <= t < resumed_at)
        assert len(before) > 50, len(before)
        assert len(during) > 50, len(during)
        p99 = [xs[int(len(xs) * 0.99)] for xs in (before, during)]
        # allowance: how much later than usual the event loop ran its timers during the pause (the
        # machine's other load stalls every task of this process, store or not): a 1 % tail of a
        # few hundred requests is a handful of them, so the worst stall counts
        extra_lag = max(0.0, lag.worst(paused_at, resumed_at) - lag.quantile(0.99, 0, paused_at))
        assert p99[1] - p99[0] <= BUDGET + 0.005 + extra_lag, (p99, extra_lag)
        assert load.stayed == load.ok
        assert any(lb.store.stats["fallbacks"] for lb in replicas)
        await settle(topology)                                 # the pause may have started a fail-over


LEASE_HOLDER = """
import asyncio, sys
from regional_lb.state.redis import RedisStore
async def main():
    store = RedisStore(sys.argv[1], lease=float(sys.argv[2]), publish_interval=0.05, budget=1.0,
                       key_prefix="rlb:lease:")
    for i in range(9):
        store.incr_inflight("app", "be" + str(i % 3))
    while not await store.publish_now():
        await asyncio.sleep(0.1)
    print("published", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_killed_replica_s_in_flight_counts_are_released_within_the_lease(topology: Topology) -> None:
    from regional_lb.state.redis import RedisStore

    lease = 1.0
    await settle(topology)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", LEASE_HOLDER, topology.url, str(lease),
                                                stdout=subprocess.PIPE, cwd=os.getcwd())
    watcher = RedisStore(topology.url, lease=lease, publish_interval=0.05, budget=1.0, key_prefix="rlb:lease:")
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"published"
        ids = ["be0", "be1", "be2"]
        watcher.inflight("app", ids)
        await wait_for(lambda: watcher.inflight("app", ids) == {"be0": 3, "be1": 3, "be2": 3}, 10)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await proc.wait()
        await wait_for(lambda: watcher.inflight("app", ids) == {"be0": 0, "be1": 0, "be2": 0}, 10, 0.01)
        assert time.monotonic() - killed <= lease + 0.3
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await watcher.close()
