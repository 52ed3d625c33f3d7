"""Consistent hashing with bounded loads  [pure].

Mirrokni, Thorup and Zadimoghaddam (2018), as in HAProxy `hash-balance-factor` and
Envoy's ring-hash `hash_balance_factor`: a key goes to its ring owner unless that
backend already has its share of the in-flight requests. With T requests in flight on
the n eligible backends, backend i may take this request only while

    inflight_i + 1 <= ceil(c x (T + 1) x w_i / W)        (w = effective weight; equal
                                                           weights: ceil(c x (T+1) / n))

An overloaded owner makes the request *spill*: walk the ring to the next backend under
its bound (`fallback: ring`, the paper's rule, keeps spilled keys together), or take the
least loaded one (`fallback: least_connections`). Since the bounds add up to at least
c x (T + 1) > T, some backend is always under its bound. Every spill is counted
(stats["spills"]) and marked Pick.spilled. A request without the key goes to the least
loaded backend.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase, eligible
from regional_lb.balancing.base import Candidate, Pick, RequestInfo
from regional_lb.balancing.hashing import KeyFn
from regional_lb.balancing.least_conn import least_loaded
from regional_lb.balancing.ring import DEFAULT_VNODES, RingCache, stable_hash


def capacities(cands: Sequence[Candidate], c: float) -> dict[str, int]:
    """Each eligible backend's bound for the next request."""
    total = sum(x.inflight for x in cands)
    weight = sum(x.weight for x in cands)
    return {x.backend.id: math.ceil(c * (total + 1) * x.weight / weight - 1e-9) for x in cands}


class BoundedLoad(PolicyBase):
    name = "bounded_load"

    def __init__(self, key_fn: KeyFn, *, c: float = 1.25, fallback: str = "ring",
                 vnodes: int = DEFAULT_VNODES) -> None:
        super().__init__()
        if c < 1.0:
            raise ValueError("c must be >= 1")
        if fallback not in ("ring", "least_connections"):
            raise ValueError("fallback must be ring or least_connections")
        self.key_fn = key_fn
        self.c = c
        self.fallback = fallback
        self.rings = RingCache(vnodes=vnodes)
        self.stats.update(hits=0, spills=0, nokey=0)

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        elig = eligible(candidates, exclude)
        if not elig:
            self.count("none")
            return None
        self.count("picks")
        key = self.key_fn(request)
        if key is None:
            self.count("nokey")
            return Pick(least_loaded(elig, rng).backend, "least-conn")
        caps = capacities(elig, self.c)
        by_id = {x.backend.id: x for x in elig}
        ring = self.rings.get((x.backend.id, x.backend.weight) for x in candidates)
        home: Candidate | None = None
        for backend_id in ring.walk(stable_hash(key)):
            cand = by_id.get(backend_id)
            if cand is None:
                continue                            # draining, excluded: not an owner for this key
            if home is None:
                home = cand
                if cand.inflight + 1 <= caps[backend_id]:
                    self.count("hits")
                    return Pick(cand.backend, "hash")
                if self.fallback == "least_connections":
                    break
            elif cand.inflight + 1 <= caps[backend_id]:
                self.count("spills")
                return Pick(cand.backend, "spill", spilled=True)
        self.count("spills")
        return Pick(least_loaded(elig, rng).backend, "spill", spilled=True)
