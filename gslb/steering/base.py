"""The contract between the DNS core, the steering policies and the server  [pure].

The DNS core (gslb/dns) parses a query, finds that the name is a *service*, and
asks a `ServiceSteering` for a `ServiceAnswer`. The steering side locates the
client (GeoIP), reads region state and the latency table, runs the service's
policy, and returns the addresses plus the `Decision` that explains them.

    client address (ECS or resolver) --locate--> Location
    Location + RegionState per region + latency --policy--> Decision
    Decision + region addresses --> ServiceAnswer (A/AAAA rdata, TTL, ECS scope)

Nothing here does I/O; `now` is passed in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Region:
    """A region as steering sees it: where it is and what to answer for it (from the config)."""

    name: str
    lat: float
    lon: float
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    capacity: float = 1.0               # spreads a down region's clients over the next ones


@dataclass(frozen=True, slots=True)
class RegionState:
    """What the server knows about a region right now (from probes and the admin API)."""

    up: bool = True
    drained: bool = False
    degraded: bool = False  # e.g. the region's LB reports some unhealthy backends: shorter TTL


@dataclass(frozen=True, slots=True)
class Decision:
    """Which regions the answer holds, and why (printed by `gslb explain`, counted in metrics)."""

    service: str
    policy: str
    regions: tuple[str, ...]            # chosen, best first
    ttl: int
    scope_prefix: int                   # ECS SCOPE PREFIX-LENGTH to echo; 0 = same answer for all
    all_down: bool = False              # no region was eligible; the all-down rule applied
    location: str = ""                  # how the client was located, e.g. "ecs 1.2.3.0/24 -> KR Seoul"
    lines: tuple[str, ...] = field(default_factory=tuple)  # per-region reasoning, human readable


@dataclass(frozen=True, slots=True)
class ServiceAnswer:
    """What the DNS core needs to answer A / AAAA for a service name."""

    v4: tuple[str, ...]                 # rdata for A
    v6: tuple[str, ...]                 # rdata for AAAA
    ttl: int
    scope_prefix: int
    decision: Decision
    cname: str | None = None            # all-down rule `cname`: answer with this CNAME instead
    negative_ttl: int | None = None     # all-down rule `nodata`: NODATA with this SOA TTL
    cache_for: float = 0.0              # seconds the DNS core may reuse the packed answer for the
                                        # same query and client network; 0 = never (e.g. weighted)
    data_generation: int | None = None  # the answer used measured data (latency policy): reuse it only
                                        # while the steering's `data_generation` still equals this;
                                        # None = it does not depend on that data


class ServiceSteering(Protocol):
    """Implemented by gslb/steering; called by the DNS core for every service query."""

    @property
    def generation(self) -> int:
        """Bumped whenever any answer may change (health, drain, reload): caches key on it. Changes of
        measured data (latency) bump the steering's `data_generation` instead, which only the answers
        carrying a `ServiceAnswer.data_generation` depend on."""
        ...

    @property
    def data_generation(self) -> int | None:
        """Bumped when measured data (the latency table) changes: an answer that carries a
        `ServiceAnswer.data_generation` is reused only while this still equals it."""
        ...

    @property
    def services(self) -> Mapping[str, object]:
        """The service names (keys). The responder treats their ancestors as existing names."""
        ...

    def is_service(self, name: str) -> bool:
        """`name` is lower-case, absolute without the trailing dot ("www.example.test")."""
        ...

    def answer(self, name: str, client: IPAddress | None, source_prefix: int | None,
               now: float) -> ServiceAnswer:
        """Answer for `name`. `client` is the ECS address (when ECS with SOURCE > 0 came) else the
        resolver's address; `source_prefix` is the ECS SOURCE PREFIX-LENGTH (None without ECS)."""
        ...

    def fast_answer(self, name: str, version: int, value: int, source_prefix: int | None) -> ServiceAnswer | None:
        """`answer` for a client given as integers (IP version, address masked to its SOURCE prefix)
        when a compiled table can give it cheaply; None: the caller uses `answer`. The same answer
        object comes back for every client with the same decision (the DNS core keeps a reply
        template per object)."""
        ...
