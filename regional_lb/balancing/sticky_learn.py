"""Sticky sessions learnt from the application's own cookie  [pure].

As HAProxy `stick on req.cook(JSESSIONID)` + `stick store-response res.cook(JSESSIONID)`
(appsession): the backend sets its session cookie; the proxy stores
(cookie value -> backend id) in the stick table (regional_lb/state) with `ttl`; later
requests carrying that cookie go to the same backend while it is a candidate
(draining included). The table is read by the proxy before `pick` (`sticky_key`), and
written after (Pick.learn / learn_from_response), so this policy does no I/O.

A request whose key is unknown or whose backend is gone gets a `first` pick and, if it
carries a key, that pick is learnt (a re-stick). Hits are learnt again so that the
entry's TTL runs from the last use, as a stick table's expiry does.
Stats: hits, misses (key, no entry), resticks (entry's backend gone), learned.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from regional_lb.balancing._common import PolicyBase
from regional_lb.balancing.base import Backend, Candidate, Pick, Policy, RequestInfo
from regional_lb.cookies import parse_set_cookie


class StickyLearn(PolicyBase):
    name = "sticky_learn"

    def __init__(self, first: Policy, *, cookie: str = "JSESSIONID", ttl: float = 1800.0) -> None:
        super().__init__()
        self.first = first
        self.uses_load = first.uses_load                # candidates go to `first` for new sessions
        self.cookie = cookie
        self.ttl = ttl
        self.stats.update(hits=0, misses=0, resticks=0, learned=0)

    @property
    def cookie_name(self) -> str:
        return self.cookie

    def sticky_key(self, request: RequestInfo) -> str | None:
        return request.cookies.get(self.cookie) or None

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        key = self.sticky_key(request)
        if key is not None and stuck_to is not None and stuck_to not in exclude:
            for c in candidates:
                if c.backend.id == stuck_to:
                    self.count("hits")
                    self.count("picks")
                    return Pick(c.backend, "learned", learn=(key, c.backend.id))
        if key is not None:
            self.count("resticks" if stuck_to is not None else "misses")
        chosen = self.first.pick(request, candidates, now=now, rng=rng, exclude=exclude)
        if chosen is None:
            self.count("none")
            return None
        self.count("picks")
        if key is None:
            return Pick(chosen.backend, "new-session")
        return Pick(chosen.backend, "moved" if stuck_to is not None else "new-session",
                    learn=(key, chosen.backend.id))

    def learn_from_response(self, request: RequestInfo, backend: Backend,
                            set_cookie_headers: Sequence[str]) -> tuple[str, str] | None:
        learnt = None
        for header in set_cookie_headers:
            parsed = parse_set_cookie(header)
            if parsed is not None and parsed.name == self.cookie and not parsed.deletes:
                learnt = (parsed.value, backend.id)         # the last one wins, as in a browser
        if learnt is not None:
            self.count("learned")
        return learnt
