"""MemoryStore: stick table TTLs with a fake clock, counters, bounds."""

from __future__ import annotations

from regional_lb.state.base import StateStore
from regional_lb.state.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_sticky_entries_live_for_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.set_sticky("route", "abc", "b1", ttl=30)
    assert await store.get_sticky("route", "abc") == "b1"
    assert await store.get_sticky("other", "abc") is None
    clock.now += 29.9
    assert await store.get_sticky("route", "abc") == "b1"
    await store.set_sticky("route", "abc", "b2", ttl=30)        # a write refreshes the TTL
    clock.now += 29.9
    assert await store.get_sticky("route", "abc") == "b2"
    clock.now += 0.1
    assert await store.get_sticky("route", "abc") is None


async def test_count_and_delete() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for i in range(5):
        await store.set_sticky("r", f"k{i}", "b1" if i < 3 else "b2", ttl=10 + i)
    assert await store.count_sticky("r", "b1") == 3
    assert await store.count_sticky("x", "b1") == 0
    await store.delete_sticky("r", "k0")
    await store.delete_sticky("r", "missing")
    assert await store.count_sticky("r", "b1") == 2
    clock.now += 12
    assert await store.count_sticky("r", "b1") == 0
    assert await store.count_sticky("r", "b2") == 2
    assert store.sweep() == 2
    assert "2 sticky" in repr(store)


async def test_sweep_on_writes_and_size_cap() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, sweep_every=4, max_entries=3)
    for i in range(3):
        await store.set_sticky("r", f"old{i}", "b", ttl=1)
    clock.now += 2
    await store.set_sticky("r", "new", "b", ttl=100)           # full: sweeps the expired ones
    assert len(store.local) == 1
    for i in range(5):
        await store.set_sticky("r", f"k{i}", "b", ttl=100)
    assert len(store.local) == 3
    assert await store.get_sticky("r", "k4") == "b"
    assert await store.get_sticky("r", "new") is None           # the oldest went first


def test_inflight_counters() -> None:
    store: StateStore = MemoryStore()
    store.incr_inflight("app", "b1")
    store.incr_inflight("app", "b1")
    store.incr_inflight("web", "b1")
    store.decr_inflight("app", "b1")
    assert store.inflight("app", ["b1", "b2"]) == {"b1": 1, "b2": 0}
    store.decr_inflight("app", "b1")
    store.decr_inflight("app", "b1")                            # never negative
    assert store.inflight("app", ["b1"]) == {"b1": 0}
    store.incr_inflight("app", "b1")
    assert store.inflight("app", ["b1"]) == {"b1": 1}
    assert store.inflight("web", ["b1"]) == {"b1": 1}


async def test_close_forgets_everything() -> None:
    store = MemoryStore()
    store.incr_inflight("web", "b1")
    await store.set_sticky("r", "k", "b1", ttl=10)
    await store.close()
    assert store.inflight("web", ["b1"]) == {"b1": 0}
    assert await store.get_sticky("r", "k") is None


def test_default_clock_is_monotonic() -> None:
    import time

    assert MemoryStore()._clock is time.monotonic
