"""A memo bounded by entry count that keeps what is in use: two generations  [pure].

    memo = Memo(100_000)
    memo.get(key)            # value or None; a hit in the old generation moves it to the young one
    memo.put(key, value)
    memo.clear(); len(memo)

Steering memoises per client network (decisions, ECS widening steps) and the locator per record
network: keys an attacker chooses with every ECS option. Emptying a full dict at once (what these
memos did) bounds memory, but under a working set close to the limit it throws away the hot
entries with the cold ones. Here new entries go to the young generation; when it holds half the
limit, the old generation is dropped and the young one becomes old. An entry used since the last
turn-over survives the next one. Both generations together never hold more than `limit` entries,
and every operation is O(1) (no per-entry bookkeeping, unlike an LRU list).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    __slots__ = ("_half", "_old", "_young", "limit", "turnovers")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a memo holds at least one entry, not {limit}")
        self.limit = limit
        self._half = max(1, limit // 2)
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self.turnovers = 0

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        young = self._young
        if key not in young:
            self._old.pop(key, None)
            if len(young) >= self._half:
                self._old = young
                self._young = young = {}
                self.turnovers += 1
        young[key] = value
        if len(young) + len(self._old) > self.limit:    # limit 1: the old generation goes too
            self._old = {}

    def clear(self) -> None:
        self._young = {}
        self._old = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def __bool__(self) -> bool:
        return bool(self._young) or bool(self._old)

    def __contains__(self, key: object) -> bool:
        return key in self._young or key in self._old

    def __repr__(self) -> str:
        return f"<Memo {len(self)}/{self.limit} entries, {self.turnovers} turn-overs>"
