"""RedisStore against a real redis-server: TTL, atomic counters, replicas sharing state, outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.state.redis import RedisStore, RedisUrlError, make_client, parse_redis_url
from tests.redis_helpers import CuttableClient, RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(**kwargs: object) -> RedisStore:
        store = RedisStore(redis_server.url, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def wait_until(predicate: Callable[[], object], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[misc]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_sticky_roundtrip_and_ttl_expiry(stores: Callable[..., RedisStore]) -> None:
    store = stores()
    await store.set_sticky("auth", "sess-1", "app-1", ttl=0.3)
    await store.set_sticky("auth", "sess-2", "app-1", ttl=60)
    assert await store.get_sticky("auth", "sess-1") == "app-1"
    assert await store.get_sticky("other-table", "sess-1") is None
    assert await store.count_sticky("auth", "app-1") == 2

    async def expired() -> bool:
        return await store.get_sticky("auth", "sess-1") is None

    await wait_until(expired)
    assert await store.count_sticky("auth", "app-1") == 1   # the expired entry no longer counts
    assert await store.get_sticky("auth", "sess-2") == "app-1"
    assert store.available
    assert store.stats["redis_errors"] == 0


async def test_moving_and_deleting_keys_keeps_counts_right(stores: Callable[..., RedisStore]) -> None:
    store = stores()
    for i in range(5):
        await store.set_sticky("t", f"k{i}", "a", ttl=60)
    await store.set_sticky("t", "k0", "b", ttl=60)        # moved
    await store.set_sticky("t", "k1", "a", ttl=60)        # refreshed, same backend
    await store.delete_sticky("t", "k2")
    await store.delete_sticky("t", "never-set")
    assert await store.count_sticky("t", "a") == 3
    assert await store.count_sticky("t", "b") == 1
    assert await store.count_sticky("t", "c") == 0
    assert await store.get_sticky("t", "k2") is None


async def test_keys_carry_prefix_and_table_hash_tag(stores: Callable[..., RedisStore],
                                                    redis_server: RedisServer) -> None:
    store = stores(key_prefix="blue:")
    await store.set_sticky("auth", "s", "app-1", ttl=60)
    await store.incr_inflight("app", "app-1")
    raw = redis.asyncio.from_url(redis_server.url, decode_responses=True)
    try:
        keys = sorted(await raw.keys("*"))
    finally:
        await raw.aclose()
    assert keys == ["blue:inflight:{app}", "blue:stick:{auth}:b:app-1", "blue:stick:{auth}:k:s"]
    other = stores(key_prefix="green:")
    assert await other.get_sticky("auth", "s") is None     # prefixes isolate deployments


async def test_concurrent_counters_across_two_replicas_are_atomic(stores: Callable[..., RedisStore]) -> None:
    a, b = stores(), stores()
    await asyncio.gather(*(s.incr_inflight("app", f"be{i % 3}") for i in range(150) for s in (a, b)))
    counts = await b.inflight("app", ["be0", "be1", "be2", "missing"])
    assert counts == {"be0": 100, "be1": 100, "be2": 100, "missing": 0}
    await asyncio.gather(*(s.decr_inflight("app", f"be{i % 3}") for i in range(150) for s in (a, b)))
    assert await a.inflight("app", ["be0", "be1", "be2"]) == {"be0": 0, "be1": 0, "be2": 0}
    # never below zero: a decrement with no matching increment does not go negative
    assert await a.decr_inflight("app", "be0") == 0
    assert await b.inflight("app", ["be0"]) == {"be0": 0}
    assert await a.inflight("app", []) == {}


async def test_two_replicas_share_the_stick_table(stores: Callable[..., RedisStore],
                                                  redis_server: RedisServer) -> None:
    a = stores()
    b = RedisStore.from_url(redis_server.url, key_prefix="lb:")
    await a.set_sticky("auth", "JSESSIONID=x", "app-2", ttl=60)
    assert await b.get_sticky("auth", "JSESSIONID=x") == "app-2"
    assert await b.count_sticky("auth", "app-2") == 1
    await b.delete_sticky("auth", "JSESSIONID=x")
    assert await a.get_sticky("auth", "JSESSIONID=x") is None
    assert await a.count_sticky("auth", "app-2") == 0
    await b.close()


async def test_outage_falls_back_fast_then_recovers(
        stores: Callable[..., RedisStore], redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    a = stores(clock=clock, backoff_initial=1.0, backoff_max=4.0)
    b = stores()
    await a.set_sticky("auth", "before", "app-1", ttl=60)

    redis_server.stop()
    caplog.set_level(logging.DEBUG, logger="regional_lb.state.redis")
    started = time.monotonic()
    await a.set_sticky("auth", "during", "app-2", ttl=60)          # fails, falls back
    for _ in range(50):                                            # skipped: back-off not expired
        assert await a.get_sticky("auth", "during") == "app-2"
        await a.incr_inflight("app", "app-1")
    assert time.monotonic() - started < 1.0
    assert not a.available
    assert a.stats["redis_errors"] == 1
    assert a.stats["outages"] == 1
    assert a.stats["fallback_calls"] == 101
    assert await a.inflight("app", ["app-1"]) == {"app-1": 50}       # local counts during the outage

    clock.now += 1.5                                                # back-off expired: try again, fail again
    assert await a.count_sticky("auth", "app-2") == 1
    assert a.stats["redis_errors"] == 2
    clock.now += 1.5                                                # back-off doubled to 2 s: skipped
    await a.get_sticky("auth", "x")
    assert a.stats["redis_errors"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()

    redis_server.start()                                            # empty: no persistence
    clock.now += 1.0
    await a.set_sticky("auth", "after", "app-3", ttl=60)
    assert a.available
    assert await b.get_sticky("auth", "after") == "app-3"           # shared again
    assert await a.get_sticky("auth", "during") == "app-2"          # learnt during the outage, kept locally
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "reachable again" in warnings[1].getMessage()
    for _ in range(50):                                             # outage-time requests end locally
        await a.decr_inflight("app", "app-1")
    assert await a.inflight("app", ["app-1"]) == {"app-1": 0}


async def test_backoff_grows_to_its_cap(stores: Callable[..., RedisStore], redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = stores(clock=clock, backoff_initial=1.0, backoff_max=4.0)
    redis_server.stop()
    tries = []
    for _step in range(40):                                        # 20 s in 0.5 s steps
        before = store.stats["redis_errors"]
        await store.get_sticky("t", "k")
        if store.stats["redis_errors"] > before:
            tries.append(clock.now - 1000.0)
        clock.now += 0.5
    assert tries == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0]


async def test_a_burst_of_failures_counts_as_one_outage(stores: Callable[..., RedisStore],
                                                        redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = stores(clock=clock, backoff_initial=1.0, backoff_max=30.0)
    await store.get_sticky("t", "warm-up")                          # a pooled connection exists
    redis_server.stop()
    await asyncio.gather(*(store.incr_inflight("p", "a") for _ in range(40)))
    assert store.stats["outages"] == 1
    assert store.stats["redis_errors"] >= 1
    assert await store.inflight("p", ["a"]) == {"a": 40}
    errors = store.stats["redis_errors"]
    clock.now += 0.9                                                # still inside the first back-off
    await store.get_sticky("t", "k")
    assert store.stats["redis_errors"] == errors
    clock.now += 0.2                                                # the 1 s back-off was not inflated
    await asyncio.gather(*(store.get_sticky("t", "k") for _ in range(10)))
    assert store.stats["redis_errors"] > errors
    clock.now += 1.5                                                # next back-off is 2 s, not 2**10 s
    errors = store.stats["redis_errors"]
    await store.get_sticky("t", "k")
    assert store.stats["redis_errors"] == errors
    clock.now += 0.6
    await store.get_sticky("t", "k")
    assert store.stats["redis_errors"] == errors + 1


async def test_decrements_owed_during_an_outage_are_paid_on_recovery(redis_server: RedisServer) -> None:
    clock = FakeClock()
    link = CuttableClient(make_client(redis_server.url))
    a = RedisStore(redis_server.url, client=link, clock=clock, backoff_initial=1.0)
    b = RedisStore(redis_server.url)
    try:
        await a.incr_inflight("app", "x")
        await a.incr_inflight("app", "x")
        assert await b.inflight("app", ["x"]) == {"x": 2}
        link.cut = True
        assert await a.decr_inflight("app", "x") == 0               # owed to Redis
        assert not a.available
        assert await b.inflight("app", ["x"]) == {"x": 2}           # Redis has not heard yet
        link.cut = False
        clock.now += 2
        await a.get_sticky("t", "k")                                # recovery pays the debt
        assert a.available
        assert await b.inflight("app", ["x"]) == {"x": 1}
        await a.decr_inflight("app", "x")
        assert await b.inflight("app", ["x"]) == {"x": 0}
    finally:
        await a.close()
        await link._client.aclose()  # type: ignore[attr-defined]
        await b.close()


async def test_unreachable_from_the_start_never_raises() -> None:
    from tests.redis_helpers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        await store.set_sticky("t", "k", "a", ttl=10)
        assert await store.get_sticky("t", "k") == "a"
        assert await store.incr_inflight("p", "a") == 1
        assert await store.inflight("p", ["a"]) == {"a": 1}
        assert await store.decr_inflight("p", "a") == 0
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
