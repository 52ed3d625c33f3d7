"""Sticky sessions by an LB-issued, signed cookie  [pure].

Like HAProxy `cookie SRV insert indirect nocache` with `dynamic-cookie-key`, and
nginx-plus `sticky cookie`, but with the session's times signed into the value so the
server itself enforces `max_idle` and `max_life` (cookies.py has the format):

  * no cookie, or a garbage / tampered / expired / unknown-backend one -> a fresh pick
    by the `first` policy (default least_connections) and a new cookie; never an error;
  * a valid cookie whose backend is a candidate -> that backend, even when it is
    draining (accepting_new False: existing sessions keep going, as HAProxy `drain`);
  * a valid cookie whose backend is known but not a candidate (down, ejected,
    maintenance, drain deadline passed) or was excluded by a retry -> moved to a new
    pick and the cookie rewritten ("resticks"), or None with `strict: true` (503);
  * the cookie is refreshed (new last_seen, same issued) once it is older than
    `refresh` x max_idle, and re-signed when an older secret verified it, so idle
    tracking works without a Set-Cookie on every response.

Stats: hits, new (no cookie), invalid, expired, resticks, strict_refused.

A new session's Set-Cookie is a pure function of (backend id, the whole second of `now`,
Secure): `_fresh` keeps the last one per (backend, Secure) and reuses it within the second, so
new clients arriving faster than one per second per backend cost a dict lookup, not an HMAC,
base64 and formatting (`_new_session_cookie` is the reference it must equal; a test compares).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from regional_lb.balancing._common import PolicyBase
from regional_lb.balancing.base import Candidate, Pick, Policy, RequestInfo
from regional_lb.cookies import MAX_TIME, CookieCodec, SessionCookie, SetCookieTemplate, whole_seconds

CLOCK_SKEW = 60.0               # seconds a cookie may claim to come from the future (replica clocks)


@dataclass(frozen=True, slots=True)
class StickyCookieSettings:
    cookie: str = "LBSESSIONID"
    secrets: tuple[str, ...] = ()
    max_idle: float = 1800.0
    max_life: float = 43200.0
    strict: bool = False
    samesite: str | None = "Lax"
    path: str = "/"
    secure: str = "auto"                # "auto" | "true" | "false"
    httponly: bool = True
    refresh: float = 0.25               # refresh after this fraction of max_idle
    domain: str | None = None


class StickyCookie(PolicyBase):
    name = "sticky_cookie"

    def __init__(self, settings: StickyCookieSettings, first: Policy, *, tls: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.codec = CookieCodec(settings.secrets)      # ValueError on an empty secret
        self.first = first
        self.uses_load = first.uses_load                # candidates go to `first` for new sessions
        self.tls = tls                                  # informational: some listener has TLS
        self._known: dict[str, None] = {}               # backend ids seen (ordered, bounded)
        self._last_seen: Sequence[Candidate] = ()       # the candidates _remember last went through
        self._template = SetCookieTemplate(settings.cookie, path=settings.path, httponly=settings.httponly,
                                           samesite=settings.samesite, domain=settings.domain)
        self._refresh_after = settings.refresh * settings.max_idle
        self._max_life = settings.max_life
        self._new_max_age = max(1, int(settings.max_life))      # a new cookie's Max-Age (issued == now)
        # (backend id, Secure) -> (second, Set-Cookie) of the last new session: see the docstring
        self._issued: dict[tuple[str, bool], tuple[int, Pick]] = {}
        self._hits: dict[str, Pick] = {}                # backend id -> a sticky hit's Pick (no Set-Cookie)
        self.stats.update(hits=0, new=0, invalid=0, expired=0, resticks=0, strict_refused=0)

    @property
    def cookie_name(self) -> str:
        return self.settings.cookie

    @property
    def max_idle(self) -> float:
        return self.settings.max_idle

    # -- helpers -------------------------------------------------------------------------------
    def _secure(self, request: RequestInfo) -> bool:
        mode = self.settings.secure
        if mode == "auto":             # per request: a plain-HTTP listener must not get Secure cookies
            return request.tls or self.settings.samesite == "None"
        return mode == "true"

    def _set_cookie(self, request: RequestInfo, backend_id: str, issued: float, now: float) -> str:
        value = self.codec.encode(backend_id, issued=issued, last_seen=now)
        max_age = int(issued + self.settings.max_life - now)
        return self._template.render(value, max(1, max_age), self._secure(request))

    def _remember(self, candidates: Sequence[Candidate]) -> None:
        if candidates is self._last_seen:               # the pool's same tuple (Pool.candidates(load=False))
            return
        self._last_seen = candidates
        known = self._known
        for c in candidates:
            backend_id = c.backend.id
            if backend_id not in known:
                known[backend_id] = None
                self.codec.token(backend_id)            # so codec.lookup finds it
                if len(known) > 4096:
                    del known[next(iter(known))]

    def _fresh(self, request: RequestInfo, candidates: Sequence[Candidate], now: float,
               rng: random.Random, exclude: frozenset[str], reason: str) -> Pick | None:
        chosen = self.first.pick(request, candidates, now=now, rng=rng, exclude=exclude)
        if chosen is None:
            self.stats["none"] += 1
            return None
        self.stats["picks"] += 1
        backend = chosen.backend
        secure = self._secure(request)
        second = int(now) if 0.0 <= now <= MAX_TIME else whole_seconds(now)     # what the cookie carries
        key = (backend.id, secure)
        last = self._issued.get(key)
        if last is not None and last[0] == second:
            pick = last[1]                     # a value: the same Pick serves the second's new sessions
            if pick.backend is backend and pick.reason == reason:
                return pick
            return Pick(backend, reason, set_cookie=pick.set_cookie)
        pick = Pick(backend, reason, set_cookie=self._new_session_cookie(backend.id, second, secure))
        if len(self._issued) >= 4096:          # bounded like _known (ids come from config and discovery)
            self._issued.clear()
        self._issued[key] = (second, pick)
        return pick

    def _new_session_cookie(self, backend_id: str, second: int, secure: bool) -> str:
        """The Set-Cookie of a session issued (and last seen) at `second` (the reference for _fresh)."""
        value = self.codec.encode(backend_id, issued=second, last_seen=second)
        return self._template.render(value, self._new_max_age, secure)

    def _candidate(self, cookie: SessionCookie, candidates: Sequence[Candidate]) -> Candidate | None:
        """The candidate whose backend token the cookie carries: the token -> id map first
        (one dict lookup and a scan of ids), the exhaustive HMAC comparison only if that fails."""
        backend_id = self.codec.lookup(cookie)
        if backend_id is not None:
            for c in candidates:
                if c.backend.id == backend_id:
                    return c
        by_id = {c.backend.id: c for c in candidates}
        resolved = self.codec.resolve(cookie, by_id)
        return by_id[resolved] if resolved is not None else None

    # -- the policy ----------------------------------------------------------------------------
    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        s = self.settings
        self._remember(candidates)
        raw = request.cookies.get(s.cookie)
        if raw is None:
            self.stats["new"] += 1
            return self._fresh(request, candidates, now, rng, exclude, "new-session")
        cookie = self.codec.decode(raw)
        if cookie is None or cookie.issued > now + CLOCK_SKEW or cookie.last_seen < cookie.issued:
            self.count("invalid")
            return self._fresh(request, candidates, now, rng, exclude, "new-session")
        if now - cookie.issued > s.max_life or now - cookie.last_seen > s.max_idle:
            self.count("expired")
            return self._fresh(request, candidates, now, rng, exclude, "new-session")
        found = self._candidate(cookie, candidates)
        backend_id = found.backend.id if found is not None else None
        if found is not None and backend_id not in exclude:
            backend = found.backend
            stats = self.stats
            stats["hits"] += 1
            stats["picks"] += 1
            stale = now - cookie.last_seen >= self._refresh_after or cookie.secret_index != 0
            if stale:
                return Pick(backend, "cookie", set_cookie=self._set_cookie(request, backend.id, cookie.issued, now))
            hit = self._hits.get(backend.id)
            if hit is None or hit.backend is not backend:   # a Pick is a value: one per backend serves all
                if len(self._hits) >= 4096:
                    self._hits.clear()
                hit = self._hits[backend.id] = Pick(backend, "cookie")
            return hit
        known = backend_id is not None or self.codec.resolve(cookie, self._known) is not None
        if not known:                   # a backend this LB never had: like garbage
            self.count("invalid")
            return self._fresh(request, candidates, now, rng, exclude, "new-session")
        if s.strict:
            self.count("strict_refused")
            self.count("none")
            return None
        self.count("resticks")
        return self._fresh(request, candidates, now, rng, exclude, "moved")
