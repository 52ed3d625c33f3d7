"""Weighted least connections, optionally as power-of-two-choices  [pure].

`choices: 0` (default, "all"): the lowest (in-flight + 1) / weight among all eligible
backends wins, ties broken at random -- HAProxy `balance leastconn`, nginx
`least_conn`. `choices: 2`: draw two distinct backends by weight and keep the less
loaded one (Mitzenmacher's p2c, HAProxy `balance random(2)`, Envoy LEAST_REQUEST):
O(1) per pick and less herding when several balancers share stale load counts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase, conn_score, eligible, weighted_pair
from regional_lb.balancing.base import Candidate, Pick, RequestInfo


def least_loaded(cands: Sequence[Candidate], rng: random.Random) -> Candidate:
    """Lowest (in-flight + 1) / weight; ties broken by `rng` (cands must not be empty)."""
    best_score = min(conn_score(c) for c in cands)
    best = [c for c in cands if conn_score(c) == best_score]
    return best[0] if len(best) == 1 else rng.choice(best)


class LeastConnections(PolicyBase):
    name = "least_connections"

    def __init__(self, *, choices: int = 0) -> None:
        super().__init__()
        if choices not in (0, 2):
            raise ValueError("choices must be 0 (all) or 2")
        self.choices = choices

    def choose(self, cands: Sequence[Candidate], rng: random.Random) -> Candidate | None:
        if not cands:
            return None
        if self.choices == 2 and len(cands) > 2:
            a, b = weighted_pair(cands, rng)
            sa, sb = conn_score(a), conn_score(b)
            return a if sa < sb or (sa == sb and rng.random() < 0.5) else b
        return least_loaded(cands, rng)

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        chosen = self.choose(eligible(candidates, exclude), rng)
        if chosen is None:
            self.count("none")
            return None
        self.count("picks")
        return Pick(chosen.backend, "least-conn")
