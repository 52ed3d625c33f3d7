"""Helpers shared by the policies  [pure]."""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing.base import Backend, Candidate, RequestInfo


class PolicyBase:
    """Defaults for the parts of the `Policy` protocol most policies do not use.

    `stats` is a plain dict of counters the edge exports as metrics.
    """

    name = "base"
    ttl: float | None = None            # stick-table TTL (sticky_learn only)
    uses_load = True                    # pick reads inflight / ewma (balancing/base.py Policy)

    def __init__(self) -> None:
        self.stats: dict[str, int] = {"picks": 0, "none": 0}

    def sticky_key(self, request: RequestInfo) -> str | None:
        return None

    def learn_from_response(self, request: RequestInfo, backend: Backend,
                            set_cookie_headers: Sequence[str]) -> tuple[str, str] | None:
        return None

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.stats.items())
        return f"<{type(self).__name__} {self.name} [{counts}]>"


def eligible(candidates: Sequence[Candidate], exclude: frozenset[str]) -> list[Candidate]:
    """Candidates that may take a *new* request: accepting new sessions and not already tried."""
    return [c for c in candidates if c.accepting_new and c.backend.id not in exclude and c.weight > 0]


def weighted_choice(cands: Sequence[Candidate], rng: random.Random) -> Candidate:
    """One candidate with probability proportional to its effective weight."""
    if len(cands) == 1:
        return cands[0]
    return rng.choices(cands, weights=[c.weight for c in cands], k=1)[0]


def weighted_pair(cands: Sequence[Candidate], rng: random.Random) -> tuple[Candidate, Candidate]:
    """Two distinct candidates, each drawn with probability proportional to weight."""
    first = weighted_choice(cands, rng)
    rest = [c for c in cands if c is not first]
    return first, weighted_choice(rest, rng)


def conn_score(c: Candidate) -> float:
    """Weighted least-connections score: (in-flight + 1) / weight, lower is better."""
    return (c.inflight + 1) / c.weight
