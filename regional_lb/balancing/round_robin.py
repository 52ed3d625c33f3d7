"""Smooth weighted round robin  [pure].

Mirrors nginx's default upstream balancing (ngx_http_upstream_round_robin.c): on
each pick every eligible backend's `current` grows by its effective weight, the
largest `current` wins and is lowered by the total. Weights 5/1/1 give
a a b a c a a -- interleaved, never a burst of five. Effective weight is the
candidate's (slow start lowers it). Draining and excluded backends are skipped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase, eligible
from regional_lb.balancing.base import Candidate, Pick, RequestInfo


class RoundRobin(PolicyBase):
    name = "round_robin"
    uses_load = False                   # weights only

    def __init__(self) -> None:
        super().__init__()
        self._current: dict[str, float] = {}
        # eligible() of the last candidates seen with nothing excluded: the pool hands over the
        # same tuple while its selection holds (Pool.candidates(load=False)), so filter it once
        self._seen: Sequence[Candidate] = ()
        self._eligible: list[Candidate] = []
        self._picks: dict[str, Pick] = {}       # backend id -> its Pick: a value, one serves all (bounded)

    def choose(self, cands: Sequence[Candidate]) -> Candidate | None:
        """The next candidate in smooth weighted order (cands already filtered)."""
        if not cands:
            return None
        total = 0.0
        best: Candidate | None = None
        best_current = 0.0
        state = self._current
        for c in cands:
            backend_id = c.backend.id
            weight = c.weight
            current = state.get(backend_id, 0.0) + weight
            state[backend_id] = current
            total += weight
            if best is None or current > best_current:
                best, best_current = c, current
        assert best is not None
        state[best.backend.id] = best_current - total
        if len(self._current) > 4 * len(cands) + 16:    # forget backends long gone
            live = {c.backend.id for c in cands}
            self._current = {k: v for k, v in self._current.items() if k in live}
        return best

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        if exclude:
            cands = eligible(candidates, exclude)
        elif candidates is self._seen:
            cands = self._eligible
        else:
            cands = self._eligible = eligible(candidates, exclude)
            self._seen = candidates
        chosen = self.choose(cands)
        if chosen is None:
            self.count("none")
            return None
        self.count("picks")
        backend = chosen.backend
        pick = self._picks.get(backend.id)
        if pick is None or pick.backend is not backend:
            if len(self._picks) >= 4096:
                self._picks.clear()
            pick = self._picks[backend.id] = Pick(backend, "rr")
        return pick
