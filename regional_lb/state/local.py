"""One replica's copy of the stick table: entries with their TTL, bounded  [pure].

    table = LocalStickTable(max_entries=100_000)
    table.put("auth", "sess-1", "app-2", deadline=now + 1800, now=now)            # learnt, Redis has it
    table.put("auth", "sess-2", "app-1", deadline=now + 1800, now=now, pending=True)  # learnt in an outage
    table.get("auth", "sess-1", now)            # -> StickEntry(backend="app-2", ...) or None once expired

Used alone by `MemoryStore` (the whole stick table of a single replica) and by `RedisStore` as
its write-through copy: every entry read from or written to Redis is kept here, so when Redis
is unreachable or slower than the request's budget every session this replica knows stays on
its backend.

An entry is live while `now < deadline`; expired entries are dropped when read and swept every
`sweep_every` writes. At `max_entries` the entry written longest ago is evicted (a write
re-inserts, so the order is by last write). `pending` marks an entry learnt while Redis was
unreachable: the store writes it back when Redis returns unless Redis holds another backend
for that key (Redis wins). `written` is when this value last reached Redis (the store skips
re-writing an unchanged entry more often than its refresh interval); `checked` when Redis last
confirmed it (the store trusts a recently confirmed entry without asking). Time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class StickEntry:
    backend: str
    deadline: float                     # live while now < deadline
    pending: bool = False               # learnt while Redis was unreachable: to write back
    written: float = float("-inf")      # when this value last reached Redis (-inf: never)
    checked: float = float("-inf")      # when Redis last confirmed this value (read or written)


class LocalStickTable:
    def __init__(self, *, max_entries: int = 100_000, sweep_every: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.sweep_every = sweep_every
        self._entries: dict[tuple[str, str], StickEntry] = {}
        self._writes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        pending = sum(1 for e in self._entries.values() if e.pending)
        return f"<LocalStickTable {len(self._entries)} entries, {pending} to write back>"

    def get(self, table: str, key: str, now: float) -> StickEntry | None:
        entry = self._entries.get((table, key))
        if entry is None:
            return None
        if now >= entry.deadline:
            del self._entries[(table, key)]
            return None
        return entry

    def put(self, table: str, key: str, backend: str, *, deadline: float, now: float, pending: bool = False,
            written: float = float("-inf"), checked: float = float("-inf")) -> StickEntry:
        """Store (or replace) an entry; returns it."""
        self._writes += 1
        entries = self._entries
        if self._writes % self.sweep_every == 0 or len(entries) >= self.max_entries:
            self.sweep(now)
        k = (table, key)
        if entries.pop(k, None) is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]                     # written longest ago
            self.evicted += 1
        entry = entries[k] = StickEntry(backend, deadline, pending, written, checked)
        return entry

    def delete(self, table: str, key: str) -> None:
        self._entries.pop((table, key), None)

    def count(self, table: str, backend: str, now: float) -> int:
        return sum(1 for (t, _), e in self._entries.items() if t == table and e.backend == backend and now < e.deadline)

    def sweep(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        dead = [k for k, e in self._entries.items() if now >= e.deadline]
        for k in dead:
            del self._entries[k]
        return len(dead)

    def pending(self) -> Iterator[tuple[str, str, StickEntry]]:
        """(table, key, entry) of the entries to write back, oldest write first (a snapshot)."""
        return iter([(t, k, e) for (t, k), e in self._entries.items() if e.pending])

    def pending_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.pending)

    def clear(self) -> None:
        self._entries.clear()
