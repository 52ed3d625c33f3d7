"""A weighted consistent-hash ring over backend ids  [pure].

Design choice: a classic ring with virtual nodes (ketama-style, as HAProxy's
`hash-type consistent` and nginx's `hash ... consistent`), not a Maglev table,
because walking the ring past an unavailable backend gives exactly the mapping the
ring would have without it -- so skipping down/draining/excluded backends needs no
rebuild and moves only the keys of the skipped backend.

* Points are `stable_hash(f"{id}#{i}")` for i < vnodes x weight: built from backend
  *ids* (never positions), so two rings of the same backends in any order are equal.
* `stable_hash` is a 64-bit BLAKE2b digest, identical in every process (Python's
  `hash()` is salted per process and would remap every key on restart).
* `walk(key)` yields distinct backend ids clockwise from the key's point.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator

DEFAULT_VNODES = 160        # points per unit of weight (ketama uses 160 per server)


def stable_hash(key: str | bytes) -> int:
    """A 64-bit hash that is the same in every process and on every machine."""
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Immutable ring built from (backend id, weight) pairs."""

    __slots__ = ("_ids", "_owners", "_points", "member_set", "members")

    def __init__(self, members: Iterable[tuple[str, int]], *, vnodes: int = DEFAULT_VNODES) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.members: tuple[tuple[str, int], ...] = tuple(sorted(set(members)))
        self.member_set = frozenset(self.members)
        pairs: list[tuple[int, str]] = []
        for backend_id, weight in self.members:
            for i in range(max(1, int(weight)) * vnodes):
                pairs.append((stable_hash(f"{backend_id}#{i}"), backend_id))
        pairs.sort()                    # ties (astronomically rare) broken by id: still order-free
        self._points = [p for p, _ in pairs]
        self._owners = [o for _, o in pairs]
        self._ids = frozenset(i for i, _ in self.members)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<HashRing {len(self._ids)} backends, {len(self._points)} points>"

    def walk(self, key_hash: int) -> Iterator[str]:
        """Distinct backend ids in ring order, starting at the first point >= key_hash."""
        n = len(self._points)
        if n == 0:
            return
        start = bisect.bisect_left(self._points, key_hash)
        seen: set[str] = set()
        for k in range(n):
            owner = self._owners[(start + k) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self._ids):
                    return

    def lookup(self, key_hash: int) -> str | None:
        """The owner of `key_hash` (first backend on the ring), or None for an empty ring."""
        return next(self.walk(key_hash), None)


class RingCache:
    """A few rings keyed by their member set, so a policy rebuilds only when the pool changes.

    `get` also returns a cached ring built from a *superset* of the members (a backend
    went down, was ejected or drained): callers walk past ids that are not candidates,
    which gives exactly the mapping of the smaller ring, so health flaps cost no rebuild.
    A superset with more than `slack` extra backends is not reused (walks stay short).
    """

    def __init__(self, *, vnodes: int = DEFAULT_VNODES, size: int = 8) -> None:
        self.vnodes = vnodes
        self.size = size
        self._rings: OrderedDict[tuple[tuple[str, int], ...], HashRing] = OrderedDict()
        self.builds = 0

    def get(self, members: Iterable[tuple[str, int]]) -> HashRing:
        key = tuple(sorted(set(members)))
        ring = self._rings.get(key) or self._superset(key)
        if ring is None:
            ring = HashRing(key, vnodes=self.vnodes)
            self.builds += 1
            self._rings[key] = ring
            while len(self._rings) > self.size:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(ring.members)
        return ring

    def _superset(self, key: tuple[tuple[str, int], ...]) -> HashRing | None:
        wanted = set(key)
        slack = max(2, len(key) // 2)
        for ring in reversed(self._rings.values()):
            if len(ring.members) - len(key) <= slack and wanted <= ring.member_set:
                return ring
        return None
