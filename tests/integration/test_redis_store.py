"""RedisStore against a real redis-server: TTL, the local copy, write-back and conflicts, per-replica
counters with a lease, the time budget, the exception edge, bursts on a small pool.

Topologies (Sentinel, Cluster) and whole LB replicas: tests/integration/test_redis_topologies.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.errors import StoreError
from regional_lb.state.redis import RedisStore, RedisUrlError, make_client, parse_redis_url
from regional_lb.state.redis_client import RedisEdge
from tests.redis_helpers import CuttableClient, LoopLag, RedisServer, free_port, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(**kwargs: Any) -> RedisStore:
        kwargs.setdefault("budget", 0.5)             # generous: a loaded CI machine is not an outage
        store = RedisStore(redis_server.url, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def eventually(predicate: Callable[[], Any], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def raw_keys(url: str) -> list[str]:
    raw = redis.asyncio.from_url(url, decode_responses=True)
    try:
        return sorted(await raw.keys("*"))
    finally:
        await raw.aclose()


async def test_sticky_roundtrip_and_ttl_expiry(stores: Callable[..., RedisStore]) -> None:
    store = stores()
    other = stores()
    await store.set_sticky("auth", "sess-1", "app-1", ttl=0.3)
    await store.set_sticky("auth", "sess-2", "app-1", ttl=60)
    assert await other.get_sticky("auth", "sess-1") == "app-1"
    assert await other.get_sticky("other-table", "sess-1") is None
    await eventually(lambda: store._dirty == {})                     # index written behind
    await eventually(lambda: other.count_sticky("auth", "app-1"), 2)
    assert await other.count_sticky("auth", "app-1") == 2

    async def expired() -> bool:
        return await other.get_sticky("auth", "sess-1") is None

    await eventually(expired)
    assert await other.count_sticky("auth", "app-1") == 1            # the expired entry no longer counts
    assert await other.get_sticky("auth", "sess-2") == "app-1"
    assert store.available
    assert other.available
    assert store.stats["redis_errors"] == other.stats["redis_errors"] == 0


async def test_moving_and_deleting_keys_keeps_counts_right(stores: Callable[..., RedisStore]) -> None:
    store = stores()
    for i in range(5):
        await store.set_sticky("t", f"k{i}", "a", ttl=60)
    await store.set_sticky("t", "k0", "b", ttl=60)        # moved
    await store.set_sticky("t", "k1", "a", ttl=60)        # refreshed, same backend
    await eventually(lambda: store._dirty == {})
    await store.delete_sticky("t", "k2")
    await store.delete_sticky("t", "never-set")
    assert await store.count_sticky("t", "a") == 3
    assert await store.count_sticky("t", "b") == 1
    assert await store.count_sticky("t", "c") == 0
    assert await store.get_sticky("t", "k2") is None


async def test_keys_spread_over_slots_per_session_and_counter(stores: Callable[..., RedisStore],
                                                              redis_server: RedisServer) -> None:
    store = stores(key_prefix="blue:")
    await store.set_sticky("auth", "s1", "app-1", ttl=60)
    await store.set_sticky("auth", "s2", "app-1", ttl=60)
    store.incr_inflight("app", "app-1")
    assert await store.publish_now()
    long_key = "x" * 5000
    await store.set_sticky("auth", long_key, "app-2", ttl=60)        # stored under its digest
    await eventually(lambda: store._dirty == {})
    keys = await raw_keys(redis_server.url)
    assert "blue:s:auth:{s1}" in keys
    assert "blue:s:auth:{s2}" in keys
    assert "blue:c:{app/app-1}" in keys                                # one per counter
    assert "blue:i:{auth/app-1}" in keys
    assert all(len(k) < 300 for k in keys)
    raw = redis.asyncio.from_url(redis_server.url, decode_responses=True)
    try:
        members = await raw.zrange("blue:i:{auth/app-2}", 0, -1)
    finally:
        await raw.aclose()
    assert len(members) == 1
    assert len(members[0]) < 100                                        # the index holds the digest too
    assert await stores(key_prefix="blue:").get_sticky("auth", long_key) == "app-2"
    other = stores(key_prefix="green:")
    assert await other.get_sticky("auth", "s1") is None     # prefixes isolate deployments


async def test_replicas_share_in_flight_counts_through_published_leases(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(replica_id="a"), stores(replica_id="b")
    for i in range(150):
        a.incr_inflight("app", f"be{i % 3}")
        b.incr_inflight("app", f"be{i % 3}")
    assert a.inflight("app", ["be0", "missing"]) == {"be0": 50, "missing": 0}     # own, at once
    assert await a.publish_now()
    assert await b.publish_now()
    assert await a.publish_now()
    assert a.inflight("app", ["be0", "be1", "be2", "missing"]) == {"be0": 100, "be1": 100, "be2": 100,
                                                                  "missing": 0}
    for i in range(150):
        b.decr_inflight("app", f"be{i % 3}")
    b.decr_inflight("app", "be0")                                     # never below zero
    assert b.inflight("app", ["be0", "be1", "be2"]) == {"be0": 50, "be1": 50, "be2": 50}
    assert await b.publish_now()
    assert await a.publish_now()
    assert a.inflight("app", ["be0", "be1", "be2"]) == {"be0": 50, "be1": 50, "be2": 50}
    await a.close()                                                   # a clean close zeroes a's counts
    assert await b.publish_now()
    assert b.inflight("app", ["be0", "be1"]) == {"be0": 0, "be1": 0}
    assert b.inflight("app", []) == {}


async def test_the_background_task_publishes_every_period(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(publish_interval=0.05), stores(publish_interval=0.05)
    a.incr_inflight("p", "x")
    b.inflight("p", ["x"])                                            # b asks: it starts publishing too
    await eventually(lambda: b.inflight("p", ["x"]) == {"x": 1}, 3)
    a.decr_inflight("p", "x")
    await eventually(lambda: b.inflight("p", ["x"]) == {"x": 0}, 3)


LEASE_HOLDER = """
import asyncio, sys
from regional_lb.state.redis import RedisStore
async def main():
    store = RedisStore(sys.argv[1], lease=float(sys.argv[2]), publish_interval=0.05, budget=1.0)
    for _ in range(7):
        store.incr_inflight("app", "be1")
    assert await store.publish_now()
    print("published", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_killed_replica_s_counts_are_released_within_the_lease(stores: Callable[..., RedisStore],
                                                                      redis_server: RedisServer) -> None:
    lease = 1.0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LEASE_HOLDER, redis_server.url, str(lease), stdout=subprocess.PIPE,
        cwd=os.getcwd())
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"published"
        watcher = stores(lease=lease, publish_interval=0.05)
        watcher.inflight("app", ["be1"])
        await eventually(lambda: watcher.inflight("app", ["be1"]) == {"be1": 7}, 3)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await proc.wait()
        await eventually(lambda: watcher.inflight("app", ["be1"]) == {"be1": 0}, 5)
        released = time.monotonic() - killed
        assert released <= lease + 0.3, released
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_outage_uses_the_local_copy_then_writes_back(redis_server: RedisServer) -> None:
    clock = FakeClock()
    link = CuttableClient(make_client(redis_server.url))
    a = RedisStore(redis_server.url, client=link, clock=clock, budget=0.5, backoff_initial=1.0, backoff_max=4.0)
    b = RedisStore(redis_server.url, budget=0.5)
    try:
        await a.set_sticky("auth", "before", "app-1", ttl=60)
        await a.tick()                                                   # its index written behind
        link.cut = True
        assert await a.get_sticky("auth", "before") == "app-1"          # fails: the local copy answers
        assert not a.available
        assert a.stats["outages"] == 1
        calls = link.calls
        await a.set_sticky("auth", "during", "app-2", ttl=60)
        await a.set_sticky("auth", "contested", "app-2", ttl=60)
        for _ in range(50):
            assert await a.get_sticky("auth", "before") == "app-1"
            assert await a.get_sticky("auth", "during") == "app-2"
        assert link.calls == calls                                       # no request touches Redis while down
        assert a.stats["fallbacks"] >= 101
        await b.set_sticky("auth", "contested", "app-3", ttl=60)        # another replica, meanwhile
        await a.tick()                                                   # inside the back-off: no probe
        assert link.calls == calls
        clock.now += 1.5
        await a.tick()                                                   # probe fails: back-off doubles
        assert link.calls == calls + 1
        assert not a.available
        clock.now += 1.5
        await a.tick()
        assert link.calls == calls + 1
        link.cut = False
        clock.now += 1.0
        await a.tick()                                                   # probe answers: write back
        assert a.available
        assert a.stats["written_back"] == 1
        assert a.stats["conflicts"] == 1
        assert await b.get_sticky("auth", "during") == "app-2"           # learnt during the outage, shared now
        assert await b.get_sticky("auth", "contested") == "app-3"        # Redis wins ...
        assert await a.get_sticky("auth", "contested") == "app-3"        # ... and a takes its value
    finally:
        await a.close()
        await link._client.aclose()
        await b.close()


async def test_a_redis_that_forgot_gets_the_local_copy_back(stores: Callable[..., RedisStore],
                                                            redis_server: RedisServer) -> None:
    a, b = stores(), stores()
    await a.set_sticky("auth", "s", "app-1", ttl=60)
    redis_server.stop()
    redis_server.start()                                                 # empty: no persistence
    assert await a.get_sticky("auth", "s") == "app-1"                    # the local copy keeps the session
    await eventually(lambda: b.get_sticky("auth", "s"), 3)               # and writes it back
    assert await b.get_sticky("auth", "s") == "app-1"


async def test_a_hung_redis_costs_a_request_at_most_the_budget(redis_server: RedisServer) -> None:
    budget = 0.02
    store = RedisStore(redis_server.url, budget=budget, backoff_initial=0.2)
    lag = LoopLag()
    try:
        await store.set_sticky("auth", "s", "app-1", ttl=60)
        lag.start()
        redis_server.pause()
        worst = 0.0
        for _ in range(30):
            t0 = time.perf_counter()
            assert await store.get_sticky("auth", "s") == "app-1"
            worst = max(worst, time.perf_counter() - t0)
        concurrent = await asyncio.gather(*(store.get_sticky("auth", "s") for _ in range(50)))
        assert concurrent == ["app-1"] * 50
        # the event loop's own lateness (other processes on the machine) is not Redis' doing
        assert worst <= budget + 0.005 + lag.worst(), (worst, lag.worst())
        assert not store.available
        redis_server.resume()
        await eventually(lambda: store.available, 5)                     # the background probe finds it back
        assert await store.get_sticky("auth", "s") == "app-1"
    finally:
        await lag.stop()
        if redis_server.paused:
            redis_server.resume()
        await store.close()


@pytest.mark.parametrize("error", [RuntimeError("no running cluster"), AttributeError("'NoneType' has no 'x'"),
                                   IndexError("pop from empty deque"), KeyError("slot"), OSError("reset"),
                                   TypeError("bad"), ValueError("bad")])
async def test_whatever_redis_py_raises_ends_as_a_local_answer(redis_server: RedisServer,
                                                               error: Exception) -> None:
    link = CuttableClient(make_client(redis_server.url), error=lambda: error)
    store = RedisStore(redis_server.url, client=link, budget=0.5)
    try:
        await store.set_sticky("t", "k", "a", ttl=10)
        link.cut = True
        assert await store.get_sticky("t", "k") == "a"
        await store.set_sticky("t", "k2", "b", ttl=10)
        assert await store.count_sticky("t", "b") == 1
        await store.delete_sticky("t", "k2")
        store.incr_inflight("p", "a")
        assert store.inflight("p", ["a"]) == {"a": 1}
        await store.tick()
        assert not store.available
        assert store.stats["outages"] == 1
        edge = RedisEdge(link)
        with pytest.raises(StoreError, match=type(error).__name__):
            await edge.call(1.0, link.get, "k")
    finally:
        await store.close()
        await link._client.aclose()


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(stores: Callable[..., RedisStore]) -> None:
    store = stores(pool_size=4, budget=2.0)
    await store.set_sticky("t", "k", "a", ttl=60)
    results = await asyncio.gather(*(store.get_sticky("t", "k") for _ in range(300)))
    assert results == ["a"] * 300
    assert store.stats["redis_errors"] == 0
    assert store.available
    assert sum(store.edge.rtt_buckets) >= 301


async def test_unreachable_from_the_start_never_raises() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", op_timeout=0.2)
    try:
        await store.set_sticky("t", "k", "a", ttl=10)
        assert await store.get_sticky("t", "k") == "a"
        store.incr_inflight("p", "a")
        assert store.inflight("p", ["a"]) == {"a": 1}
        store.decr_inflight("p", "a")
        assert await store.count_sticky("t", "a") == 1
        await store.delete_sticky("t", "k")
        assert not store.available
        assert store.stats["redis_errors"] == 1
        assert "down" in repr(store)
    finally:
        await store.close()


@pytest.mark.parametrize(("url", "kind", "nodes", "service", "db"), [
    ("redis://127.0.0.1:6379/0", "url", (), "", 0),
    ("rediss://user:pw@redis.example:6380/2", "url", (), "", 0),
    ("unix:///run/redis/redis.sock?db=1", "url", (), "", 0),
    ("redis+sentinel://s1:26379,s2,[::1]:26380/mymaster/3", "sentinel",
     (("s1", 26379), ("s2", 26379), ("::1", 26380)), "mymaster", 3),
    ("redis+cluster://c1:7000,c2:7001", "cluster", (("c1", 7000), ("c2", 7001)), "", 0),
])
def test_parse_redis_url(url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str,
                         db: int) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.nodes, target.service, target.db) == (kind, nodes, service, db)


def test_parse_sentinel_credentials() -> None:
    target = parse_redis_url("rediss+sentinel://me:p%40ss@s1/svc")
    assert (target.username, target.password, target.tls) == ("me", "p@ss", True)


@pytest.mark.parametrize("url", ["http://x", "redis+sentinel://s1", "redis+sentinel://s1/a/b/c",
                                 "redis+sentinel://s1/svc/notanumber", "redis+cluster://c1/0",
                                 "redis+sentinel://s1:port/svc", "redis+cluster://",
                                 "redis+cluster://c1:70000", "redis+sentinel://[::1/svc"])
def test_parse_redis_url_rejects(url: str) -> None:
    with pytest.raises(RedisUrlError):
        parse_redis_url(url)


@given(st.text(max_size=80) | st.builds(lambda s, rest: s + "://" + rest,
                                         st.sampled_from(["redis", "rediss", "redis+sentinel", "redis+cluster",
                                                          "rediss+sentinel", "http"]),
                                         st.text(max_size=60)))
def test_parse_redis_url_never_fails_otherwise(url: str) -> None:
    try:
        target = parse_redis_url(url)
    except RedisUrlError:
        return
    assert target.kind in ("url", "sentinel", "cluster")
    assert target.kind == "url" or target.nodes


async def test_metrics_show_redis_state(stores: Callable[..., RedisStore]) -> None:
    from prometheus_client import generate_latest

    from regional_lb.metrics import Metrics

    store = stores()
    metrics = Metrics()
    metrics.add_store(lambda: store)
    await store.set_sticky("t", "k", "a", ttl=60)
    assert await store.get_sticky("t", "k") == "a"
    text = generate_latest(metrics.registry).decode()
    assert "rlb_state_redis_up 1.0" in text
    assert "rlb_state_local_entries 1.0" in text
    assert 'rlb_state_redis_roundtrip_seconds_bucket{le="+Inf"}' in text
    assert "rlb_state_writeback_conflicts_total 0.0" in text
    store.available = False                                          # as after a failure
    assert await store.get_sticky("t", "k") == "a"
    text = generate_latest(metrics.registry).decode()
    assert "rlb_state_redis_up 0.0" in text
    assert "rlb_state_fallbacks_total 1.0" in text


async def test_a_recently_confirmed_entry_is_trusted_without_a_round_trip(redis_server: RedisServer) -> None:
    clock = FakeClock()
    link = CuttableClient(make_client(redis_server.url))
    a = RedisStore(redis_server.url, client=link, clock=clock, budget=0.5, fresh=1.0)
    b = RedisStore(redis_server.url, budget=0.5)
    try:
        await b.set_sticky("t", "k", "app-1", ttl=60)
        assert await a.get_sticky("t", "k") == "app-1"               # asks Redis
        calls = link.calls
        clock.now += 0.5
        assert await a.get_sticky("t", "k") == "app-1"               # confirmed 0.5 s ago: no round trip
        assert link.calls == calls
        await b.set_sticky("t", "k", "app-2", ttl=60)                # re-stuck by another replica
        clock.now += 0.6
        assert await a.get_sticky("t", "k") == "app-2"               # followed once the window has passed
        assert link.calls == calls + 1
        assert a.stats["fresh_hits"] == 1
    finally:
        await a.close()
        await link._client.aclose()
        await b.close()


async def test_waiting_for_a_busy_pool_is_not_an_outage(stores: Callable[..., RedisStore]) -> None:
    from regional_lb.errors import StoreBusy

    store = stores(pool_size=1, budget=0.05)
    await store.set_sticky("t", "k", "a", ttl=60)
    release = asyncio.Event()

    async def hog() -> None:
        await release.wait()

    holder = asyncio.create_task(store.edge.call(5.0, hog))         # the only connection stays busy
    await asyncio.sleep(0.01)
    with pytest.raises(StoreBusy):
        await store.edge.call(0.05, store.client.get, "x")
    for _ in range(5):
        assert await store.get_sticky("t", "k") == "a"               # answered locally ...
    assert store.available                                           # ... without calling it an outage
    assert store.stats["busy"] == 5
    assert store.stats["outages"] == 0
    release.set()
    await holder
    assert await store.get_sticky("t", "k") == "a"
    assert store.stats["busy"] == 5
