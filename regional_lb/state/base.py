"""Where the regional LB keeps state that several replicas may share  [interface].

Two kinds of state, behind one small interface:
  * the stick table: key -> backend id, with a TTL (sticky_learn, drain accounting);
  * in-flight counters per (pool, backend) used by least_connections and bounded_load.
`memory.MemoryStore` is the default (one replica); `redis.RedisStore` shares state between
replicas through Redis (plain, Sentinel or Cluster), keeps a warm local copy of the stick
table (`local.LocalStickTable`) and answers from it when Redis is unreachable or slower than
its per-request budget.  Policies never call a store: the proxy reads before `Policy.pick`
and writes after.

The hot path is designed, not hoped for: the stick-table calls are awaited (Redis: at most
one round trip, bounded by the budget); the in-flight calls are plain method calls that do
no I/O (Redis: each replica's own counts, published in the background with a lease --
`counters.ReplicaCounters`).  A store never raises because its backing service failed:
failures are `regional_lb.errors.StoreError` inside the store and end in a local answer.

    StateStore
        get_sticky(table, key)                      awaited, <= 1 round trip
        set_sticky(table, key, backend_id, ttl)     awaited; a refresh of an unchanged entry: none
        delete_sticky(table, key), count_sticky(table, backend_id)    rare (admin, drain report)
        incr_inflight / decr_inflight / inflight    synchronous, no I/O
        start(), close()                            connect before the first request; release
        local       this process's copy of the stick table (LocalStickTable)      read at scrape
        available   False while the backing service is unreachable (local answers) time by
        stats       event -> count (fallbacks, errors, outages, ...); {} in memory regional_lb/
        edge        the backing service's round-trip histogram; None in memory    metrics.py

The last four are what a Prometheus scrape reads (`rlb_state_*`); reading them changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from regional_lb.state.local import LocalStickTable


class RoundTrips(Protocol):
    """Round-trip times to a store's backing service, as a histogram (state/redis_client.RedisEdge)."""

    @property
    def rtt_bounds(self) -> Sequence[float]:
        """Bucket upper bounds, seconds, ascending (a last +Inf bucket follows them)."""
        ...

    @property
    def rtt_buckets(self) -> Sequence[int]:
        """Round trips per bucket (not cumulative): one per bound, then the +Inf one."""
        ...

    @property
    def rtt_sum(self) -> float:
        """Seconds, summed over every round trip counted."""
        ...


class StateStore(Protocol):
    @property
    def local(self) -> LocalStickTable:
        """This process's stick-table entries (the whole table in memory; Redis' warm copy)."""
        ...

    @property
    def available(self) -> bool:
        """False while the backing service is unreachable and the local copy answers."""
        ...

    @property
    def stats(self) -> dict[str, int]:
        """Counts the store keeps (event -> count); empty when it has no backing service."""
        ...

    @property
    def edge(self) -> RoundTrips | None:
        """The backing service's round trips; None for a store that has none (in memory)."""
        ...

    async def start(self) -> None:
        """Connect before the first request (a store that needs no connection: nothing)."""
        ...

    async def get_sticky(self, table: str, key: str) -> str | None: ...

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None: ...

    async def delete_sticky(self, table: str, key: str) -> None: ...

    async def count_sticky(self, table: str, backend_id: str) -> int:
        """How many live stick-table entries point at `backend_id` (drain reporting)."""
        ...

    def incr_inflight(self, pool: str, backend_id: str) -> None: ...

    def decr_inflight(self, pool: str, backend_id: str) -> None: ...

    def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]:
        """In-flight requests per backend id over every replica sharing the store."""
        ...

    async def close(self) -> None: ...
