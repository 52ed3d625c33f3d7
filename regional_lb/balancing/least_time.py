"""Least response time: peak-EWMA cost with power-of-two-choices  [pure].

As Finagle's `Balancers.p2cPeakEwma`, linkerd and tower's `PeakEwma`: each backend's
cost is its decayed *peak* latency estimate (Candidate.ewma, kept by
regional_lb/load.py on the pool, decayed with `now`) x (in-flight + 1), divided by
weight. Two distinct backends are drawn by weight and the cheaper one wins. A
latency spike is felt at once (peak), and forgotten with the decay time constant.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase, eligible, weighted_pair
from regional_lb.balancing.base import Candidate, Pick, RequestInfo


def ewma_cost(c: Candidate) -> float:
    return c.ewma * (c.inflight + 1) / c.weight


class LeastResponseTime(PolicyBase):
    name = "least_response_time"

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        cands = eligible(candidates, exclude)
        if not cands:
            self.count("none")
            return None
        self.count("picks")
        if len(cands) == 1:
            return Pick(cands[0].backend, "ewma")
        a, b = weighted_pair(cands, rng)
        ca, cb = ewma_cost(a), ewma_cost(b)
        winner = a if ca < cb or (ca == cb and rng.random() < 0.5) else b
        return Pick(winner.backend, "ewma")
