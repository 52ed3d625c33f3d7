"""The in-process state store: stick table with TTLs and in-flight counters  [edge-ish, tiny].

One replica's state, in dicts. Expiry uses an injected clock (default time.monotonic):
an entry is live while clock() < its deadline; expired entries are dropped when read
and swept every `sweep_every` writes, so the table does not grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


class MemoryStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sweep_every: int = 1024,
                 max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._sticky: dict[tuple[str, str], tuple[str, float]] = {}     # (table, key) -> (id, deadline)
        self._inflight: dict[tuple[str, str], int] = {}
        self._writes = 0
        self.sweep_every = sweep_every
        self.max_entries = max_entries

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._sticky)} sticky, {sum(self._inflight.values())} in flight>"

    # -- stick table -----------------------------------------------------------------------------
    async def get_sticky(self, table: str, key: str) -> str | None:
        entry = self._sticky.get((table, key))
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._sticky[(table, key)]
            return None
        return entry[0]

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None:
        self._writes += 1
        if self._writes % self.sweep_every == 0 or len(self._sticky) >= self.max_entries:
            self.sweep()
        if len(self._sticky) >= self.max_entries and (table, key) not in self._sticky:
            del self._sticky[next(iter(self._sticky))]                # oldest first
        self._sticky.pop((table, key), None)                          # re-insert: keeps age order
        self._sticky[(table, key)] = (backend_id, self._clock() + ttl)

    async def delete_sticky(self, table: str, key: str) -> None:
        self._sticky.pop((table, key), None)

    async def count_sticky(self, table: str, backend_id: str) -> int:
        now = self._clock()
        return sum(1 for (t, _), (b, deadline) in self._sticky.items()
                   if t == table and b == backend_id and now < deadline)

    def sweep(self) -> int:
        """Drop expired entries; returns how many."""
        now = self._clock()
        dead = [k for k, (_, deadline) in self._sticky.items() if now >= deadline]
        for k in dead:
            del self._sticky[k]
        return len(dead)

    # -- in-flight counters -------------------------------------------------------------------------
    async def incr_inflight(self, pool: str, backend_id: str) -> int:
        value = self._inflight.get((pool, backend_id), 0) + 1
        self._inflight[(pool, backend_id)] = value
        return value

    async def decr_inflight(self, pool: str, backend_id: str) -> int:
        value = max(0, self._inflight.get((pool, backend_id), 0) - 1)
        if value:
            self._inflight[(pool, backend_id)] = value
        else:
            self._inflight.pop((pool, backend_id), None)
        return value

    async def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]:
        return {b: self._inflight.get((pool, b), 0) for b in backend_ids}

    async def close(self) -> None:
        self._sticky.clear()
        self._inflight.clear()
