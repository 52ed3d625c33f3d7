"""Consistent-hash policies: ip_hash, uri_hash, header_hash, cookie_hash  [pure].

A request key (client IP, path, a header, a cookie) is hashed onto a weighted ring of
the candidates' ids (ring.py); the first eligible backend clockwise wins, so a
backend going down, draining or being excluded for a retry moves only its own keys
(HAProxy `hash-type consistent` with `balance source|uri|hdr()|rdp-cookie`, nginx
`hash $key consistent`). A request without the key (no such header or cookie) falls
back to smooth weighted round robin, as HAProxy does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from regional_lb.balancing._common import PolicyBase
from regional_lb.balancing.base import Candidate, Pick, RequestInfo
from regional_lb.balancing.ring import DEFAULT_VNODES, HashRing, RingCache, stable_hash
from regional_lb.balancing.round_robin import RoundRobin

KeyFn = Callable[[RequestInfo], str | None]


def ip_key(request: RequestInfo) -> str | None:
    return request.client_ip or None


def uri_key(*, whole: bool = False) -> KeyFn:
    """The path (without the query string unless `whole`), as HAProxy `balance uri [whole]`."""
    def key(request: RequestInfo) -> str | None:
        return request.path if whole else request.path.split("?", 1)[0]
    return key


def header_key(name: str) -> KeyFn:
    def key(request: RequestInfo) -> str | None:
        return request.headers.get(name) or None
    return key


def cookie_key(name: str) -> KeyFn:
    def key(request: RequestInfo) -> str | None:
        return request.cookies.get(name) or None
    return key


def ring_walk(ring: HashRing, key: str, by_id: dict[str, Candidate],
              exclude: frozenset[str]) -> tuple[Candidate | None, bool]:
    """The first candidate clockwise from `key` that accepts new requests and is not excluded,
    and whether it is the key's owner (the first *candidate* on the ring)."""
    first = True
    for backend_id in ring.walk(stable_hash(key)):
        c = by_id.get(backend_id)
        if c is None:                   # on a cached superset ring but not a candidate now
            continue
        if c.accepting_new and c.backend.id not in exclude and c.weight > 0:
            return c, first
        first = False
    return None, False


class HashPolicy(PolicyBase):
    """Consistent hashing on `key_fn(request)`; stats: hits (on the key's home backend), moved, nokey."""

    uses_load = False                   # the ring and the round-robin fallback: weights only

    def __init__(self, name: str, key_fn: KeyFn, *, vnodes: int = DEFAULT_VNODES) -> None:
        super().__init__()
        self.name = name
        self.key_fn = key_fn
        self.rings = RingCache(vnodes=vnodes)
        self._fallback = RoundRobin()
        self.stats.update(hits=0, moved=0, nokey=0)

    def ring_for(self, candidates: Sequence[Candidate]) -> HashRing:
        return self.rings.get((c.backend.id, c.backend.weight) for c in candidates)

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        key = self.key_fn(request)
        if key is None:
            self.count("nokey")
            fallback = self._fallback.pick(request, candidates, now=now, rng=rng, exclude=exclude)
            self.count("picks" if fallback else "none")
            return fallback
        ring = self.ring_for(candidates)
        by_id = {c.backend.id: c for c in candidates}
        chosen, home = ring_walk(ring, key, by_id, exclude)
        if chosen is None:
            self.count("none")
            return None
        self.count("picks")
        if home:
            self.count("hits")
            return Pick(chosen.backend, "hash")
        self.count("moved")
        return Pick(chosen.backend, "hash-moved")
