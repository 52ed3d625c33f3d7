"""Prometheus metrics of the regional LB  [edge].

Per-request metrics (requests, latency, sticky pick reasons) are plain int counters on the
request path, turned into Prometheus families at scrape time by `_RequestCollector`; the rare
ones (retries, proxy errors, invalid backend responses, tunnels closed for idleness:
`rlb_tunnels_closed_total{route, kind="connect"|"websocket", reason="idle"}`) are prometheus_client Counters. Counts
the pure core keeps itself and in-flight counts are read at scrape time by `CoreCollector` over
the current `Runtime` (typed attributes, no probing: every `Policy.stats` -- sticky hits, misses,
resticks, bounded-load spills, ... -> `rlb_policy_events`; `Pool.stats.panics` -> `rlb_pool_panics`;
`RetryBudget.denied` -> `rlb_retry_budget_denied`), so they cost nothing per request; the state
store's by `StoreCollector` over the `StateStore` protocol (state/base.py): `local` ->
`rlb_state_local_entries` (every store); a store with an `edge` (Redis) adds `available` ->
`rlb_state_redis_up`, its `stats` -> the `rlb_state_*` counters and the edge's round trips ->
`rlb_state_redis_roundtrip_seconds`. A collection only reads (tests/unit/test_rlb_metrics_collectors.py
pins the families; tests/integration/test_rlb_metrics_read_only.py: a scrape changes no pool state).
Each `Metrics` has its own CollectorRegistry (tests build as many as they like).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from regional_lb.runtime import Runtime
from regional_lb.state.base import StateStore

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def status_class(status: int) -> str:
    return _CLASSES[min(max(status // 100, 1), 5) - 1]


class CoreCollector(Collector):
    """Reads counters kept by pools and policies when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], Runtime | None]) -> None:
        self._snapshot = snapshot      # () -> the LoadBalancer's current Runtime (or None)

    def collect(self) -> Iterator[Metric]:
        rt = self._snapshot()
        inflight = GaugeMetricFamily("rlb_backend_inflight", "Requests in flight per backend",
                                     labels=["pool", "backend"])
        healthy = GaugeMetricFamily("rlb_backend_up", "1 if the backend is available (health up, not ejected, "
                                    "not removed by an admin)",
                                    labels=["pool", "backend", "admin"])
        denied = CounterMetricFamily("rlb_retry_budget_denied", "Retries refused by the pool's retry budget",
                                     labels=["pool"])
        panics = CounterMetricFamily("rlb_pool_panics", "Times a pool entered panic mode", labels=["pool"])
        policy = CounterMetricFamily("rlb_policy_events", "Policy decisions by kind: sticky hits, misses, "
                                     "resticks, bounded-load spills, ...", labels=["route", "policy", "event"])
        if rt is not None:
            for pr in rt.pools.values():
                for name, value in pr.inflight_counts().items():
                    inflight.add_metric([pr.name, name], value)
                for st in pr.status_rows():
                    healthy.add_metric([pr.name, str(st.get("id")), str(st.get("admin", "ready"))],
                                       1.0 if st.get("available") else 0.0)
                denied.add_metric([pr.name], float(pr.budget.denied))
                panics.add_metric([pr.name], float(pr.pool.stats.panics))
            for rr in rt.routes.values():
                for event, value in list(rr.policy.stats.items()):
                    policy.add_metric([rr.route.name, rr.route.policy, event], float(value))
        yield inflight
        yield healthy
        yield panics
        yield denied
        yield policy


class StoreCollector(Collector):
    """The state store's health when Prometheus scrapes (regional_lb/state): Redis up or down,
    requests answered from the local copy, Redis round-trip times, write-back conflicts, the
    local copy's size.  Reads counters the store keeps; changes nothing."""

    def __init__(self, snapshot: Callable[[], StateStore | None]) -> None:
        self._snapshot = snapshot      # () -> the LoadBalancer's store (or None: nothing exported)

    def collect(self) -> Iterator[Metric]:
        store = self._snapshot()
        if store is None:
            return
        size = GaugeMetricFamily("rlb_state_local_entries", "Stick-table entries in this process's "
                                 "local copy")
        size.add_metric([], float(len(store.local)))
        yield size
        edge = store.edge
        if edge is None:                # in memory: no backing service, nothing more to say
            return
        stats = store.stats
        up = GaugeMetricFamily("rlb_state_redis_up", "1 while Redis answers within its budget, 0 while the "
                               "local copy answers")
        up.add_metric([], 1.0 if store.available else 0.0)
        yield up
        for name, key, text in (
                ("rlb_state_fallbacks", "fallbacks", "Stick-table reads answered by the local copy (Redis "
                 "down or over budget)"),
                ("rlb_state_redis_errors", "redis_errors", "Redis calls that failed or overran their budget"),
                ("rlb_state_outages", "outages", "Times Redis became unavailable"),
                ("rlb_state_busy", "busy", "Stick-table calls answered locally because every pooled Redis "
                 "connection stayed busy for the whole budget"),
                ("rlb_state_writeback_conflicts", "conflicts", "Entries learnt during an outage that Redis "
                 "held differently when it returned (Redis won)"),
                ("rlb_state_written_back", "written_back", "Entries learnt during an outage written back to "
                 "Redis")):
            family = CounterMetricFamily(name, text)
            family.add_metric([], float(stats.get(key, 0)))
            yield family
        hist = HistogramMetricFamily("rlb_state_redis_roundtrip_seconds", "Redis round trips (commands and "
                                     "pipelines), failed ones included")
        cumulative = 0.0
        buckets = []
        for bound, count in zip((*edge.rtt_bounds, float("inf")), edge.rtt_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        hist.add_metric([], buckets, edge.rtt_sum)
        yield hist


class _RequestCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily("rlb_requests", "Proxied requests by route, pool, backend and status class",
                                  labels=["route", "pool", "backend", "code"])
        for (route, pool, backend, cls), n in list(self._m._req.items()):
            req.add_metric([route, pool, backend, status_class(cls * 100)], float(n))
        yield req
        hist = HistogramMetricFamily("rlb_request_duration_seconds", "Time to the end of the response",
                                     labels=["route"])
        for route, lat in list(self._m._lat.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip((*_BUCKETS, float("inf")), lat[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist.add_metric([route], buckets, lat[-1])
        yield hist
        sticky = CounterMetricFamily("rlb_sticky_decisions", "Pick reasons on sticky routes (cookie hit, "
                                     "new-session, moved, ...)", labels=["route", "reason"])
        for (route, reason), n in list(self._m._sticky.items()):
            sticky.add_metric([route, reason], float(n))
        yield sticky


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.retries = Counter("rlb_retries", "Requests retried on another backend", ["route", "reason"],
                               registry=r)
        self.errors = Counter("rlb_proxy_errors", "Requests answered by the proxy itself",
                              ["route", "status"], registry=r)
        self.health_transitions = Counter("rlb_health_transitions", "Active health check status changes",
                                          ["pool", "backend", "to"], registry=r)
        self.reloads = Counter("rlb_config_reloads", "Config reloads by result", ["result"], registry=r)
        self.invalid_responses = Counter("rlb_upstream_invalid_responses",
                                         "Backend responses refused for invalid framing (502 to the client, or "
                                         "the client connection aborted mid-body); the connection is dropped",
                                         ["pool", "backend"], registry=r)
        # kind: connect | websocket; reason: idle (nothing either way for timeouts.tunnel); bounded labels
        self.tunnels_closed = Counter("rlb_tunnels_closed", "Established tunnels (CONNECT, WebSocket) the "
                                      "proxy closed itself, by reason (idle: no traffic either way for "
                                      "timeouts.tunnel)", ["route", "kind", "reason"], registry=r)
        # the two per-request metrics are plain counters, exported by `_collect_requests`
        self._req: dict[tuple[str, str, str, int], int] = {}
        self._lat: dict[str, list[float]] = {}    # route -> [count per bucket..., +Inf count, sum]
        self._sticky: dict[tuple[str, str], int] = {}   # (route, pick reason) -> count
        r.register(_RequestCollector(self))

    def add_core(self, snapshot: Callable[[], Runtime | None]) -> None:
        self.registry.register(CoreCollector(snapshot))

    def add_store(self, snapshot: Callable[[], StateStore | None]) -> None:
        self.registry.register(StoreCollector(snapshot))

    def observe(self, route: str, pool: str, backend: str, status: int, seconds: float) -> None:
        key = (route, pool, backend, status // 100)
        req = self._req
        if key in req:
            req[key] += 1
        elif len(req) < 50_000:                 # bounded: ids come from config and discovery
            req[key] = 1
        lat = self._lat.get(route)
        if lat is None:
            lat = self._lat[route] = [0.0] * (len(_BUCKETS) + 2)
        lat[bisect_left(_BUCKETS, seconds)] += 1
        lat[-1] += seconds

    def backend_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(pool, backend) -> (requests, 5xx answers), summed over routes from the per-request
        counters when asked (the stats page): nothing more is counted per request."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for (_route, pool, backend, cls), n in list(self._req.items()):
            requests, errors = out.get((pool, backend), (0, 0))
            out[(pool, backend)] = (requests + n, errors + (n if cls >= 5 else 0))
        return out

    def pick_reason(self, route: str, reason: str) -> None:
        key = (route, reason)
        sticky = self._sticky
        if key in sticky:
            sticky[key] += 1
        elif len(sticky) < 10_000:               # bounded: reasons are a policy's fixed words
            sticky[key] = 1

