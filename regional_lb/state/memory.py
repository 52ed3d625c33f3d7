"""The in-process state store: stick table with TTLs and in-flight counters  [edge-ish, tiny].

One replica's state, in memory: the stick table is a `LocalStickTable` (regional_lb/state/local.py:
entries live while clock() < their deadline, swept every `sweep_every` writes, at most
`max_entries`, the entry written longest ago evicted first); counters are a dict.  Expiry uses
an injected clock (default time.monotonic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from regional_lb.state.base import RoundTrips
from regional_lb.state.local import LocalStickTable


class MemoryStore:
    """A StateStore (state/base.py) for one replica; no backing service, so it is always
    `available`, keeps no `stats` and has no `edge` (round trips)."""

    available = True
    edge: RoundTrips | None = None

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 1024,
                 max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self.local = LocalStickTable(max_entries=max_entries, sweep_every=sweep_every)
        self.stats: dict[str, int] = {}
        self._inflight: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self.local)} sticky, {sum(self._inflight.values())} in flight>"

    async def start(self) -> None:
        """Nothing to connect."""

    # -- stick table -----------------------------------------------------------------------------
    async def get_sticky(self, table: str, key: str) -> str | None:
        entry = self.local.get(table, key, self._clock())
        return entry.backend if entry is not None else None

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None:
        now = self._clock()
        self.local.put(table, key, backend_id, deadline=now + ttl, now=now)

    async def delete_sticky(self, table: str, key: str) -> None:
        self.local.delete(table, key)

    async def count_sticky(self, table: str, backend_id: str) -> int:
        return self.local.count(table, backend_id, self._clock())

    def sweep(self) -> int:
        """Drop expired entries; returns how many."""
        return self.local.sweep(self._clock())

    # -- in-flight counters -------------------------------------------------------------------------
    def incr_inflight(self, pool: str, backend_id: str) -> None:
        self._inflight[(pool, backend_id)] = self._inflight.get((pool, backend_id), 0) + 1

    def decr_inflight(self, pool: str, backend_id: str) -> None:
        value = self._inflight.get((pool, backend_id), 0) - 1
        if value > 0:
            self._inflight[(pool, backend_id)] = value
        else:
            self._inflight.pop((pool, backend_id), None)

    def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]:
        return {b: self._inflight.get((pool, b), 0) for b in backend_ids}

    async def close(self) -> None:
        self.local.clear()
        self._inflight.clear()
