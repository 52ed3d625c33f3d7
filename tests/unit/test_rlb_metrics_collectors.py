"""The scrape-time collectors (regional_lb/metrics.py) read typed seams and export exactly the
families they always did: names, types, help texts, label sets and values are pinned here for a
runtime with pools and several policies, for a memory store, for a store with a Redis edge and a
local copy (a RedisStore that never connects: the collector reads counters, it does no I/O), and
for no store at all.  A collection changes nothing it reads."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from typing import Any

from gslb.common.health import Health, Status
from regional_lb.balancing.base import Candidate, RequestInfo
from regional_lb.metrics import CoreCollector, Metrics, StoreCollector
from regional_lb.runtime import Runtime, build_runtime
from regional_lb.state.memory import MemoryStore
from regional_lb.state.redis import RedisStore
from tests.rlb_helpers import lb_config

Family = tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]

ROUTES = [
    {"name": "auth", "match": {"path": "/auth/**"}, "pool": "app", "policy": "sticky_cookie",
     "options": {"cookie": "LBSESSIONID", "secrets": ["s3cret"], "first": "round_robin"}},
    {"name": "learn", "match": {"path": "/learn/**"}, "pool": "app", "policy": "sticky_learn",
     "options": {"cookie": "JSESSIONID", "first": "round_robin"}},
    {"name": "bl", "match": {"path": "/bl/**"}, "pool": "app", "policy": "bounded_load"},
    {"name": "rest", "pool": "app", "policy": "round_robin"},
]


def families(collected: Iterable[Any]) -> list[Family]:
    return [(m.name, m.type, m.documentation,
             [(s.name, tuple(sorted(s.labels.items())), s.value) for s in m.samples]) for m in collected]


def request(path: str) -> RequestInfo:
    return RequestInfo("192.0.2.7", "GET", "example.test", path, {}, {})


def busy_runtime() -> Runtime:
    """Three backends, two of them down (panic mode), a retry denied, a pick on every route."""
    cfg = lb_config(["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"], routes=ROUTES)
    rt = build_runtime(cfg, previous=None, now=100.0, clock=lambda: 100.0)
    pr = rt.pools["app"]
    for bid in ("127.0.0.1:9001", "127.0.0.1:9002"):
        pr.pool.set_health(bid, Health(Status.DOWN, 0, True), 100.0)
    pr.pool.request_started("127.0.0.1:9003")
    for _ in range(3):
        pr.budget.retry_started()
    assert not pr.budget.can_retry(0)                       # denied: 3 active, limit 3
    rng = random.Random(1)
    for name in ("auth", "learn", "bl", "rest"):
        cands: tuple[Candidate, ...] = pr.pool.candidates(101.0).list
        assert rt.routes[name].policy.pick(request(f"/{name}/x"), cands, now=1000.0, rng=rng) is not None
    return rt


LABELS_APP = (("pool", "app"),)

CORE_BEFORE: list[Family] = [
    ("rlb_backend_inflight", "gauge", "Requests in flight per backend", [
        ("rlb_backend_inflight", (("backend", "127.0.0.1:9001"), ("pool", "app")), 0.0),
        ("rlb_backend_inflight", (("backend", "127.0.0.1:9002"), ("pool", "app")), 0.0),
        ("rlb_backend_inflight", (("backend", "127.0.0.1:9003"), ("pool", "app")), 1.0)]),
    ("rlb_backend_up", "gauge", "1 if the backend is available (health up, not ejected, not removed by an admin)", [
        ("rlb_backend_up", (("admin", "ready"), ("backend", "127.0.0.1:9001"), ("pool", "app")), 0.0),
        ("rlb_backend_up", (("admin", "ready"), ("backend", "127.0.0.1:9002"), ("pool", "app")), 0.0),
        ("rlb_backend_up", (("admin", "ready"), ("backend", "127.0.0.1:9003"), ("pool", "app")), 1.0)]),
    ("rlb_pool_panics", "counter", "Times a pool entered panic mode", [
        ("rlb_pool_panics_total", LABELS_APP, 4.0)]),
    ("rlb_retry_budget_denied", "counter", "Retries refused by the pool's retry budget", [
        ("rlb_retry_budget_denied_total", LABELS_APP, 1.0)]),
    ("rlb_policy_events", "counter", "Policy decisions by kind: sticky hits, misses, resticks, bounded-load "
     "spills, ...", [
        ("rlb_policy_events_total", (("event", e), ("policy", p), ("route", r)), v)
        for r, p, events in (
            ("auth", "sticky_cookie", {"picks": 1, "none": 0, "hits": 0, "new": 1, "invalid": 0, "expired": 0,
                                       "resticks": 0, "strict_refused": 0}),
            ("learn", "sticky_learn", {"picks": 1, "none": 0, "hits": 0, "misses": 0, "resticks": 0,
                                       "learned": 0}),
            ("bl", "bounded_load", {"picks": 1, "none": 0, "hits": 1, "spills": 0, "nokey": 0}),
            ("rest", "round_robin", {"picks": 1, "none": 0}))
        for e, v in ((e, float(v)) for e, v in events.items())]),
]


def test_core_collector_exports_the_same_families_as_before() -> None:
    rt = busy_runtime()
    assert families(CoreCollector(lambda: rt).collect()) == CORE_BEFORE


def test_core_collector_without_a_runtime_exports_empty_families() -> None:
    got = families(CoreCollector(lambda: None).collect())
    assert [(name, kind, samples) for name, kind, _doc, samples in got] == [
        ("rlb_backend_inflight", "gauge", []), ("rlb_backend_up", "gauge", []),
        ("rlb_pool_panics", "counter", []), ("rlb_retry_budget_denied", "counter", []),
        ("rlb_policy_events", "counter", [])]


def test_a_core_collection_changes_nothing_it_reads() -> None:
    rt = busy_runtime()
    pr = rt.pools["app"]
    before = (copy.copy(pr.pool.stats), pr.budget.denied, pr.budget.active,
              {n: dict(rr.policy.stats) for n, rr in rt.routes.items()})
    first = families(CoreCollector(lambda: rt).collect())
    assert families(CoreCollector(lambda: rt).collect()) == first
    assert (copy.copy(pr.pool.stats), pr.budget.denied, pr.budget.active,
            {n: dict(rr.policy.stats) for n, rr in rt.routes.items()}) == before


async def test_store_collector_over_a_memory_store() -> None:
    store = MemoryStore(clock=lambda: 10.0)
    await store.set_sticky("learn", "s1", "a", ttl=60)
    await store.set_sticky("learn", "s2", "b", ttl=60)
    assert families(StoreCollector(lambda: store).collect()) == [
        ("rlb_state_local_entries", "gauge", "Stick-table entries in this process's local copy", [
            ("rlb_state_local_entries", (), 2.0)])]


def test_store_collector_without_a_store_exports_nothing() -> None:
    assert families(StoreCollector(lambda: None).collect()) == []


def _counter(name: str, doc: str, value: float) -> Family:
    return (name, "counter", doc, [(name + "_total", (), value)])


async def test_store_collector_over_a_store_with_a_redis_edge_and_a_local_copy() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", clock=lambda: 10.0)      # never connects
    try:
        store.local.put("learn", "s1", "a", deadline=70.0, now=10.0)
        store.available = False
        store.stats.update(fallbacks=5, redis_errors=4, outages=1, busy=3, conflicts=2, written_back=6)
        store.edge.rtt_buckets[0] += 2
        store.edge.rtt_buckets[-1] += 1
        store.edge.rtt_sum += 3.5
        bounds = store.edge.rtt_bounds
        got = families(StoreCollector(lambda: store).collect())
        assert got == [
            ("rlb_state_local_entries", "gauge", "Stick-table entries in this process's local copy", [
                ("rlb_state_local_entries", (), 1.0)]),
            ("rlb_state_redis_up", "gauge", "1 while Redis answers within its budget, 0 while the local copy "
             "answers", [("rlb_state_redis_up", (), 0.0)]),
            _counter("rlb_state_fallbacks", "Stick-table reads answered by the local copy (Redis down or over "
                     "budget)", 5.0),
            _counter("rlb_state_redis_errors", "Redis calls that failed or overran their budget", 4.0),
            _counter("rlb_state_outages", "Times Redis became unavailable", 1.0),
            _counter("rlb_state_busy", "Stick-table calls answered locally because every pooled Redis "
                     "connection stayed busy for the whole budget", 3.0),
            _counter("rlb_state_writeback_conflicts", "Entries learnt during an outage that Redis held "
                     "differently when it returned (Redis won)", 2.0),
            _counter("rlb_state_written_back", "Entries learnt during an outage written back to Redis", 6.0),
            ("rlb_state_redis_roundtrip_seconds", "histogram", "Redis round trips (commands and pipelines), "
             "failed ones included", [
                *(("rlb_state_redis_roundtrip_seconds_bucket", (("le", repr(b)),), 2.0) for b in bounds),
                ("rlb_state_redis_roundtrip_seconds_bucket", (("le", "+Inf"),), 3.0),
                ("rlb_state_redis_roundtrip_seconds_count", (), 3.0),
                ("rlb_state_redis_roundtrip_seconds_sum", (), 3.5)]),
        ]
        assert families(StoreCollector(lambda: store).collect()) == got          # reading changes nothing
        assert store.stats["fallbacks"] == 5
        assert len(store.local) == 1
    finally:
        await store.close()


def test_metrics_registers_both_collectors_once() -> None:
    rt = busy_runtime()
    store = MemoryStore(clock=lambda: 10.0)
    metrics = Metrics()
    metrics.add_core(lambda: rt)
    metrics.add_store(lambda: store)
    names = [m.name for m in metrics.registry.collect()]
    for name in ("rlb_backend_inflight", "rlb_pool_panics", "rlb_policy_events", "rlb_state_local_entries"):
        assert names.count(name) == 1, names
