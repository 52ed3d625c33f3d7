"""The Redis store's pure parts and its config keys: the local stick-table copy, the per-replica
counters with their lease, `state:` parsing."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gslb.common.configload import ConfigError
from regional_lb.config import parse_config
from regional_lb.state.counters import ReplicaCounters
from regional_lb.state.local import LocalStickTable

BASE = {"region": "r1", "listen": [{"address": "127.0.0.1:8080"}],
        "pools": {"app": {"backends": [{"address": "127.0.0.1:9001"}]}},
        "routes": [{"pool": "app", "policy": "round_robin"}]}


def _state(state: dict[str, object]) -> object:
    return parse_config(yaml.safe_dump({**BASE, "state": state}), file="t.yaml")


def test_state_defaults_and_keys() -> None:
    cfg = _state({"backend": "redis", "url": "redis+sentinel://s1,s2/lb"})
    st_ = cfg.state  # type: ignore[attr-defined]
    assert (st_.budget, st_.pool_size, st_.lease, st_.publish_interval, st_.local_entries) == (
        0.02, 64, 3.0, 0.1, 100_000)
    cfg = _state({"backend": "redis", "url": "redis+cluster://c1:7000", "budget": "50ms", "pool_size": 8,
                  "lease": "1s", "publish_interval": "200ms", "local_entries": 10})
    st_ = cfg.state  # type: ignore[attr-defined]
    assert (st_.budget, st_.pool_size, st_.lease, st_.publish_interval, st_.local_entries) == (
        0.05, 8, 1.0, 0.2, 10)


@pytest.mark.parametrize(("state", "path", "reason"), [
    ({"backend": "redis", "url": "redis+sentinel://s1"}, "state.url", "SERVICE"),
    ({"backend": "redis", "url": "http://x"}, "state.url", "scheme"),
    ({"backend": "redis", "url": "redis://r", "lease": "200ms"}, "state.lease", "publish_interval"),
    ({"backend": "redis", "url": "redis://r", "pool_size": 0}, "state.pool_size", ""),
    ({"backend": "redis", "url": "redis://r", "budgett": "1ms"}, "state.budgett", "did you mean"),
])
def test_bad_state_keys_name_the_key(state: dict[str, object], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _state(state)
    assert info.value.path == path
    assert reason in info.value.reason


def test_local_copy_ttl_eviction_and_pending() -> None:
    table = LocalStickTable(max_entries=3, sweep_every=100)
    table.put("t", "a", "b1", deadline=10, now=0)
    table.put("t", "b", "b1", deadline=20, now=0, pending=True)
    table.put("u", "a", "b2", deadline=20, now=0)
    assert table.get("t", "a", 9.9).backend == "b1"  # type: ignore[union-attr]
    assert table.get("t", "a", 10) is None                       # expired: dropped when read
    assert len(table) == 2
    table.put("t", "c", "b3", deadline=30, now=11)
    table.put("t", "d", "b3", deadline=30, now=11)               # full: the oldest write goes
    assert table.get("t", "b", 11) is None
    assert table.evicted == 1
    assert [k for _, k, _ in table.pending()] == []
    table.put("t", "c", "b3", deadline=30, now=12, pending=True)
    assert [(t, k) for t, k, _ in table.pending()] == [("t", "c")]
    assert table.pending_count() == 1
    assert table.count("t", "b3", 12) == 2
    assert table.sweep(31) == 3
    assert "0 entries" in repr(table)


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100), st.floats(0, 50)), max_size=60))
def test_local_copy_never_exceeds_its_bound_and_never_answers_expired(ops: list[tuple[str, float, float]]) -> None:
    table = LocalStickTable(max_entries=4, sweep_every=3)
    now = 0.0
    for key, ttl, step in ops:
        now += step
        table.put("t", key, "b", deadline=now + ttl, now=now)
        assert len(table) <= 4
        for k in "abcdef":
            entry = table.get("t", k, now)
            assert entry is None or entry.deadline > now


def test_counters_own_at_once_others_as_published_and_dropped_after_the_lease() -> None:
    c = ReplicaCounters(lease=3.0)
    c.incr("p", "a")
    c.incr("p", "a")
    c.incr("p", "b")
    assert c.totals("p", ["a", "b", "c"], now=0) == {"a": 2, "b": 1, "c": 0}
    assert sorted(c.to_publish()) == [("p", "a", 2), ("p", "b", 1), ("p", "c", 0)]
    c.published([("p", "a", 2, 5), ("p", "b", 1, 0), ("p", "c", 0, 4)], now=10)
    assert c.totals("p", ["a", "b", "c"], now=12) == {"a": 7, "b": 1, "c": 4}
    assert c.totals("p", ["a", "b", "c"], now=13.5) == {"a": 2, "b": 1, "c": 0}   # stale: own only
    c.decr("p", "b")
    c.decr("p", "b")                                             # never below zero
    assert c.own("p", "b") == 0
    # b went to 0: published once more (removing our field), then no longer renewed
    assert ("p", "b", 0) in c.to_publish()
    c.published([("p", "b", 0, 0)], now=14)
    c._interest.clear()
    assert ("p", "b", 0) not in c.to_publish()
    assert "own 2 in flight" in repr(c)
