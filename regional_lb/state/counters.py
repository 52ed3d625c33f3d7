"""In-flight counts shared by replicas: each replica's own counts, published with a lease  [pure].

Per request a replica only changes its own counts (`incr` / `decr`: dict arithmetic, no I/O).
Every `interval` (about 100 ms) the store publishes them to Redis and reads back what the
*other* replicas published (regional_lb/state/redis.py, one pipeline per period); `totals`
answers a policy with own (live) + others' (as of the last publication). Each published count
carries a lease: a replica that stops renewing it (crashed, partitioned) drops out of every
other replica's totals when the lease runs out -- Redis does that (the publish script ignores
and removes fields whose lease has passed). While publications fail, others' counts are kept
until `lease` has passed since the last success, then treated as 0 (unknown, not infinite).

The publication set: every (pool, backend) a policy asked about (`totals`) plus every one this
replica has or had requests in flight on; a count that drops to 0 is published once more
(removing the replica's field) and then no longer needs renewing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class ReplicaCounters:
    def __init__(self, *, lease: float = 3.0) -> None:
        self.lease = lease
        self._own: dict[tuple[str, str], int] = {}
        self._others: dict[tuple[str, str], int] = {}
        self._interest: dict[str, tuple[str, ...]] = {}      # pool -> backend ids asked about
        self._published: dict[tuple[str, str], int] = {}     # what Redis holds for us (as we last wrote)
        self._fresh_at: float | None = None                  # `now` of the last successful publication

    def __repr__(self) -> str:
        return (f"<ReplicaCounters own {sum(self._own.values())} in flight, "
                f"others {sum(self._others.values())}>")

    def incr(self, pool: str, backend: str) -> None:
        k = (pool, backend)
        self._own[k] = self._own.get(k, 0) + 1

    def decr(self, pool: str, backend: str) -> None:
        k = (pool, backend)
        v = self._own.get(k, 0) - 1
        if v > 0:
            self._own[k] = v
        else:
            self._own.pop(k, None)

    def own(self, pool: str, backend: str) -> int:
        return self._own.get((pool, backend), 0)

    def totals(self, pool: str, backend_ids: Sequence[str], now: float) -> dict[str, int]:
        """Own + others' in-flight requests per backend id (others' as last published)."""
        ids = tuple(backend_ids)
        if self._interest.get(pool) != ids:
            self._interest[pool] = ids
        own = self._own
        if self._fresh_at is None or now - self._fresh_at > self.lease:
            return {b: own.get((pool, b), 0) for b in ids}
        others = self._others
        return {b: own.get((pool, b), 0) + others.get((pool, b), 0) for b in ids}

    def to_publish(self) -> list[tuple[str, str, int]]:
        """(pool, backend, own count) for every counter to publish this period."""
        keys: dict[tuple[str, str], None] = {}
        for pool, ids in self._interest.items():
            for b in ids:
                keys[(pool, b)] = None
        for k in self._own:
            keys[k] = None
        for k, v in self._published.items():
            if v:
                keys[k] = None                   # a count that went to 0 is published once more
        return [(p, b, self._own.get((p, b), 0)) for p, b in keys]

    def published(self, results: Iterable[tuple[str, str, int, int]], now: float) -> None:
        """Record a successful publication: (pool, backend, own count sent, others' total)."""
        for pool, backend, sent, others in results:
            k = (pool, backend)
            if sent:
                self._published[k] = sent
            else:
                self._published.pop(k, None)
            if others:
                self._others[k] = others
            else:
                self._others.pop(k, None)
        self._fresh_at = now

    def others(self, pool: str, backend: str) -> int:
        return self._others.get((pool, backend), 0)
