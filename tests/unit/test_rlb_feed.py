"""The supervisor -> worker state feed (regional_lb/feed.py) and the /metrics merge with regional LB families.

Framing and the channel are gslb/common's, tested with the GSLB's workers."""

from __future__ import annotations

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge

from gslb.common.health import Health, Status
from gslb.common.metrics_merge import families_to_wire, merge
from regional_lb import feed
from regional_lb.balancing.base import Backend
from regional_lb.config import DnsBackends, parse_config
from regional_lb.runtime import build_runtime
from regional_lb.supervisor import SUPERVISOR_ONLY, request_counts

DOC = {
    "region": "r1",
    "listen": [{"address": "127.0.0.1:8080"}],
    "pools": {"app": {"backends": [{"address": "127.0.0.1:9001", "id": "a"}, {"address": "127.0.0.1:9002", "id": "b"}],
                      "health": {"type": "http", "path": "/healthz"}}},
    "routes": [{"pool": "app", "policy": "round_robin"}],
}


def _rt():  # type: ignore[no-untyped-def]
    return build_runtime(parse_config(yaml.safe_dump(DOC)), previous=None, now=0.0, clock=lambda: 0.0)


def test_health_and_admin_messages_apply_to_a_worker_runtime() -> None:
    rt = _rt()
    assert feed.apply(rt, feed.health_message("app", "b", Health(Status.DOWN, 0, True), False), 1.0)
    assert feed.apply(rt, feed.admin_message("app", "a", "drain", 50.0), 1.0)
    rows = {r["id"]: r for r in rt.pools["app"].pool.status(1.0)}
    assert rows["b"]["health"] == "down"
    assert rows["a"]["admin"] == "drain"
    assert rows["a"]["drain_deadline"] == 50.0


def test_messages_for_unknown_pools_or_backends_are_ignored() -> None:
    rt = _rt()
    assert not feed.apply(rt, feed.admin_message("nope", "a", "drain", None), 1.0)
    assert not feed.apply(rt, feed.admin_message("app", "zz", "drain", None), 1.0)


@pytest.mark.parametrize("message", [
    {"t": "admin", "pool": "app", "id": "a", "state": "explode", "deadline": None},
    {"t": "health", "pool": "app", "id": "a", "status": "sideways", "streak": 0, "probed": True},
    {"t": "health", "pool": "app", "id": "a"},
    {"t": "discovered", "pool": "app", "id": "a"},
])
def test_malformed_messages_are_feed_errors(message: dict) -> None:
    with pytest.raises(feed.FeedError):
        feed.apply(_rt(), message, 1.0)


def test_a_snapshot_makes_a_fresh_runtime_serve_like_the_supervisor() -> None:
    sup, worker = _rt(), _rt()
    key = DnsBackends("app.svc", 80)
    sup.pools["app"].discovered[key] = (Backend("10.0.0.1:80", "10.0.0.1", 80),)
    sup.pools["app"].pool.update_backends(sup.pools["app"].backends(), 1.0)
    sup.pools["app"].pool.set_health("b", Health(Status.DOWN, 0, True), 1.0)
    sup.pools["app"].pool.set_admin("a", "drain", 1.0, 2.0)          # drained by the time of the snapshot
    sup.pools["app"].pool.set_admin("10.0.0.1:80", "maintenance", 1.0)
    for message in feed.snapshot(sup, 5.0):
        if message["t"] == "discovered":
            pool, k, backends = feed.discovered_of(message)
            pr = worker.pools[pool]
            pr.discovered[k] = backends
            pr.pool.update_backends(pr.backends(), 5.0)
        else:
            assert feed.apply(worker, message, 5.0)

    def view(rt):  # type: ignore[no-untyped-def]
        return [(r["id"], r["health"], r["admin"], r["available"]) for r in rt.pools["app"].pool.status(6.0)]

    assert view(worker) == view(sup)
    assert [r[2] for r in view(worker)] == ["drained", "ready", "maintenance"]


def test_metrics_merge_sums_workers_and_keeps_supervisor_only_families() -> None:
    def registry(requests: float, up: float) -> CollectorRegistry:
        reg = CollectorRegistry()
        c = Counter("rlb_requests", "r", ["route", "pool", "backend", "code"], registry=reg)
        c.labels("r", "app", "a", "2xx").inc(requests)
        c.labels("r", "app", "a", "5xx").inc(1)
        g = Gauge("rlb_backend_up", "u", ["pool", "backend"], registry=reg)
        g.labels("app", "a").set(up)
        return reg

    own = families_to_wire(registry(0, 1))
    workers = [families_to_wire(registry(3, 0)), families_to_wire(registry(4, 0))]
    merged = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for m in merge(own, workers, SUPERVISOR_ONLY) for s in m.samples}
    assert merged[("rlb_requests_total", (("backend", "a"), ("code", "2xx"), ("pool", "app"), ("route", "r")))] == 7
    assert merged[("rlb_backend_up", (("backend", "a"), ("pool", "app")))] == 1     # the supervisor's, not a sum
    assert not any(name.endswith("_created") for name, _ in merged)
    counts = request_counts(families_to_wire(registry(3, 0)))
    assert counts[("app", "a")] == (4, 1)
