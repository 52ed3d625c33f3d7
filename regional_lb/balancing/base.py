"""The balancing contract: backends, what a picker sees, and what it returns  [pure].

Balancing is split as in tower / HAProxy lb_ops:
  * discovery and health produce the *candidates* of a pool (regional_lb/pool.py),
  * load (in-flight, EWMA response time) is measured by the proxy and carried on candidates,
  * a `Policy` picks among candidates and returns a `Pick` -- a decision with its reason.
The proxy (regional_lb/proxy) does what the Pick says (connect, set the cookie, learn).

Stateful policies (sticky_learn, the shared stick table, Redis in-flight counters) work
through `regional_lb/state`: the proxy fetches what a policy asks for (`Policy.sticky_key`)
from the store *before* calling `pick`, and writes what the Pick says to learn afterwards,
so policies never await and never touch I/O. Time (`now`) and chance (`rng`) are passed in.
A policy counts its own decisions in `Policy.stats` (event -> count); the edge reads them when
Prometheus scrapes (regional_lb/metrics.py), so counting costs a dict increment per request.
`pick`'s `now` is WALL-clock seconds (`time.time()`, LoadBalancer's `wall`): the only policy
time that outlives a request is a sticky cookie's issue and last-seen stamps, which must survive
restarts and agree across replicas. Load on candidates (EWMA, slow-start weight) was already
computed by the pool on the monotonic clock.

RequestInfo, Candidate and Pick are built for every request (several Candidates each; a pool
hands load-blind policies -- `uses_load` False -- the same Candidates while its selection holds,
and some policies reuse one Pick per backend: they are values), so
they are slotted dataclasses that are *not* frozen: a frozen dataclass's __init__ goes
through object.__setattr__ per field (~0.8 µs per Candidate against ~0.3 µs). They are
still treated as values -- nothing assigns to their fields after construction; derive a
changed copy with dataclasses.replace -- and stay hashable (unsafe_hash) and comparable.
Backend stays frozen: it is built once per configuration, not per request.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Backend:
    """A server in a pool. `id` is its stable identity ("host:port" unless named in the config);
    hash rings are built from ids, never from positions in the config."""

    id: str
    host: str
    port: int
    weight: int = 1


@dataclass(slots=True, unsafe_hash=True)
class RequestInfo:
    """The parts of a request that policies may key on. Built once per request and treated as
    read-only (not frozen: a frozen dataclass costs ~1 µs more to build; see the note above)."""

    client_ip: str
    method: str
    host: str
    path: str                           # path with query string, as received
    headers: Mapping[str, str]          # case-insensitive (CIMultiDictProxy in the proxy)
    cookies: Mapping[str, str]
    tls: bool = False


@dataclass(slots=True, unsafe_hash=True)
class Candidate:
    """A backend as a picker sees it, with its current load. Read-only by convention (pool and
    policies never assign to one; use dataclasses.replace)."""

    backend: Backend
    inflight: int = 0
    ewma: float = 0.0                   # decayed response time, seconds (peak-EWMA)
    weight: float = 1.0                 # effective weight (configured x slow-start ramp)
    accepting_new: bool = True          # False while draining: only existing sessions may use it


@dataclass(slots=True, unsafe_hash=True)
class Pick:
    """A policy's decision. The proxy carries it out. Read-only by convention."""

    backend: Backend
    reason: str                         # e.g. "cookie", "new-session", "hash", "spill", "rr", "moved"
    set_cookie: str | None = None       # a Set-Cookie value the proxy adds to the response
    learn: tuple[str, str] | None = None  # (stick-table key, backend id) the proxy stores
    spilled: bool = False               # bounded-load gave up affinity for this request


class Policy(Protocol):
    name: str
    # event -> count (sticky hits / misses / resticks, bounded-load spills, hash moves, picks, ...),
    # counted by the policy itself and read by the edge at scrape time (the `rlb_policy_events`
    # metric); every policy has one (balancing/_common.PolicyBase starts it with picks and none;
    # a policy that counted nothing would leave it empty)
    stats: dict[str, int]
    # whether `pick` reads Candidate.inflight / ewma (or hands the candidates to a policy that
    # does): when False the pool may hand over candidates whose load fields are left at 0
    # (Pool.candidates(load=False): built once, not per request)
    uses_load: bool

    def sticky_key(self, request: RequestInfo) -> str | None:
        """The stick-table key to fetch before `pick` (sticky_learn), or None."""
        ...

    def pick(self, request: RequestInfo, candidates: Sequence[Candidate], *, now: float,
             rng: random.Random, stuck_to: str | None = None,
             exclude: frozenset[str] = frozenset()) -> Pick | None:
        """Choose a backend among `candidates` (never one whose id is in `exclude`: a retry).
        `stuck_to` is the backend id the stick table had for `sticky_key`; `now` is wall-clock
        seconds. None: nothing to pick."""
        ...

    def learn_from_response(self, request: RequestInfo, backend: Backend,
                            set_cookie_headers: Sequence[str]) -> tuple[str, str] | None:
        """sticky_learn: a (key, backend id) to store, learnt from the backend's Set-Cookie."""
        ...
