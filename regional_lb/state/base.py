"""Where the regional LB keeps state that several replicas may share  [interface].

Two kinds of state, behind one small async interface:
  * the stick table: key -> backend id, with a TTL (sticky_learn, drain accounting);
  * in-flight counters per (pool, backend) used by least_connections and bounded_load.
`memory.MemoryStore` is the default (one replica); `redis.RedisStore` shares state
between replicas and falls back to local state while Redis is unreachable.
Policies never call a store: the proxy reads before `Policy.pick` and writes after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StateStore(Protocol):
    async def get_sticky(self, table: str, key: str) -> str | None: ...

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None: ...

    async def delete_sticky(self, table: str, key: str) -> None: ...

    async def count_sticky(self, table: str, backend_id: str) -> int:
        """How many live stick-table entries point at `backend_id` (drain reporting)."""
        ...

    async def incr_inflight(self, pool: str, backend_id: str) -> int: ...

    async def decr_inflight(self, pool: str, backend_id: str) -> int: ...

    async def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]: ...

    async def close(self) -> None: ...
