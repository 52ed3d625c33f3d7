"""The typed seams between the regional LB's parts  [pure: protocols only].

`regional_lb.app.LoadBalancer` is the wiring; the parts it wires see it only through these
protocols, so none of them imports `regional_lb.app` (no import cycle; .importlinter says so):

    ProxyContext     what a request handler reads (proxy/handler.py, proxy/fast.py,
                     proxy/websocket.py, proxy/connect.py): the current Runtime, config,
                     clocks, rng, the state store, the upstream client, metrics
    DiscoveryTarget  what DNS discovery (discovery.py) tells: the backends a name resolved to
    AdminTarget      what the admin API (admin_api.py) reads and asks: reports, reload,
                     metrics (AdminMetrics: the registry to scrape, per-backend counts)

A worker process (regional_lb/worker.py) and the single-process LoadBalancer both satisfy
ProxyContext; the supervisor (regional_lb/supervisor.py) satisfies AdminTarget.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from regional_lb.balancing.base import Backend
from regional_lb.config import Config, DnsBackends
from regional_lb.runtime import Runtime
from regional_lb.state.base import StateStore


class ProxyMetrics(Protocol):
    """The request path's metrics (regional_lb.metrics.Metrics)."""

    retries: Counter
    errors: Counter
    invalid_responses: Counter
    tunnels_closed: Counter                # CONNECT / WebSocket tunnels the proxy closed (idle)

    def observe(self, route: str, pool: str, backend: str, status: int, seconds: float) -> None: ...

    def pick_reason(self, route: str, reason: str) -> None: ...


class AdminMetrics(Protocol):
    """What the admin API reads of metrics (regional_lb.metrics.Metrics, or the supervisor's
    WorkersMetrics with the workers' counters summed in)."""

    @property
    def registry(self) -> CollectorRegistry: ...

    def backend_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(pool, backend) -> (requests, 5xx answers) (the stats page)."""
        ...


class UpstreamClient(Protocol):
    """The HTTP client to backends (regional_lb.proxy.upstream.Upstream)."""

    # headers, body, interim and the response are the proxy's own types (proxy/upstream.py); this
    # [pure] module may not import aiohttp or regional_lb.proxy, so they stay Any here
    async def send(self, backend: Backend, method: str, path: str, headers: Any, body: Any,
                   interim: Any = None) -> Any: ...

    @property
    def session(self) -> Any: ...           # an aiohttp.ClientSession (the WebSocket path; aiohttp: see above)

    async def close(self) -> None: ...


class ProxyContext(Protocol):
    """What serving a request needs. `store` and `upstream` are there from construction (the
    store is connected by `start()`; neither is None)."""

    rt: Runtime
    config: Config
    clock: Callable[[], float]             # monotonic
    wall: Callable[[], float]              # wall clock: sticky cookie times
    rng: random.Random
    store: StateStore
    upstream: UpstreamClient
    shared_inflight: bool                  # in-flight counts from the store (state: redis)

    @property
    def metrics(self) -> ProxyMetrics: ...

    def healthz_body(self) -> tuple[int, bytes]: ...


class DiscoveryTarget(Protocol):
    """Where discovery reports what a DNS name resolved to."""

    config: Config

    async def set_discovered(self, pool_name: str, key: DnsBackends, backends: tuple[Backend, ...]) -> None: ...


class AdminTarget(Protocol):
    """What the admin API reads and asks (LoadBalancer, or the Supervisor of its workers)."""

    clock: Callable[[], float]
    @property
    def metrics(self) -> AdminMetrics: ...

    @property
    def rt(self) -> Runtime: ...

    @property
    def config(self) -> Config: ...

    async def pools_report(self) -> dict[str, Any]: ...

    async def reload(self, config: Config | None = None) -> tuple[bool, str]: ...

    def healthz_body(self) -> tuple[int, bytes]: ...

    async def set_admin(self, pool: str, backend_id: str, state: str, deadline: float | None) -> None:
        """READY / DRAIN / MAINTENANCE; `deadline` absolute, monotonic (`clock`)."""

    async def refresh_metrics(self) -> None:
        """Bring `metrics.registry` up to date before a scrape (collect workers' counters)."""

    async def workers_report(self) -> list[dict[str, Any]]:
        """One row per worker process (id, pid, ready, restarts, requests); [] for one process."""
