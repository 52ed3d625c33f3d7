"""Weighted random  [pure].

Each eligible backend is chosen with probability weight / total weight, using the
`rng` passed in (HAProxy `balance random` with draws=1, nginx `random`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase, eligible, weighted_choice
from regional_lb.balancing.base import Candidate, Pick, RequestInfo


class WeightedRandom(PolicyBase):
    name = "random"
    uses_load = False                   # weights only

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        cands = eligible(candidates, exclude)
        if not cands:
            self.count("none")
            return None
        self.count("picks")
        return Pick(weighted_choice(cands, rng).backend, "random")
