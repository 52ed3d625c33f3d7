"""Which route a request takes: host and path matching, first match wins  [pure].

Host patterns: an exact name (``api.example.com``, compared without port and case),
``*.example.com`` (one or more labels before the suffix, never the bare suffix) or
``*`` (any host). Path patterns: a prefix (``/api/``: no ``*`` in it) or a glob where
``*`` matches within one segment and ``**`` matches anything, including ``/``; a
trailing ``/**`` also matches the bare directory (``/static/**`` matches ``/static``).

`RouteTable.match(host, path)` returns the first route whose host and path both match,
or None (the proxy answers 404). Answers are cached per (Host header, path) -- a repeat
costs one dict lookup -- and the per-host filtering is cached, so a new path costs one dict
lookup plus the path checks of the routes for that host. Both caches are bounded (cleared
when full), so hostile Host headers or unique paths cost recomputation, not memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_HOST_CACHE_MAX = 4096
_ANSWER_CACHE_MAX = 8192


def normalize_host(host: str) -> str:
    """Lower-cased host name without the port ("Example.COM:8080" -> "example.com", "[::1]:80" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate over normalized host names for `pattern` (exact, ``*.suffix`` or ``*``)."""
    pattern = pattern.strip().lower().rstrip(".")
    if pattern == "*":
        return lambda host: True
    if pattern.startswith("*."):
        suffix = pattern[1:]                  # ".example.com"
        return lambda host: host.endswith(suffix) and len(host) > len(suffix)
    if "*" in pattern:
        raise ValueError(f"host pattern {pattern!r}: '*' is allowed only as '*' or a leading '*.'")
    exact = normalize_host(pattern)
    return lambda host: host == exact


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regex for a path glob: ``*`` one segment's worth, ``**`` anything."""
    out: list[str] = []
    i = 0
    if pattern.endswith("/**"):
        body, tail = pattern[:-3], "(?:/.*)?"
    else:
        body, tail = pattern, ""
    while i < len(body):
        if body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    return re.compile("".join(out) + tail + r"\Z")


def path_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate over request paths (without the query string) for `pattern`."""
    if not pattern.startswith("/"):
        raise ValueError(f"path pattern {pattern!r} must start with '/'")
    if "*" not in pattern:
        if pattern == "/":
            return lambda path: True
        return lambda path: path.startswith(pattern)
    return glob_regex(pattern).match  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Route:
    """One routing rule: where matching requests go and how the backend is picked."""

    name: str
    pool: str
    policy: str = "round_robin"
    host: str = "*"
    path: str = "/"
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    allow_connect: bool = False        # CONNECT requests may take this route (else 405)

    def __post_init__(self) -> None:
        host_matcher(self.host)        # validate now: a Route is valid once built
        path_matcher(self.path)

    def __repr__(self) -> str:
        return f"<Route {self.name} {self.host}{self.path} -> {self.pool} ({self.policy})>"


class RouteTable:
    """Routes in order; `match` returns the first whose host and path match."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._compiled = tuple((host_matcher(r.host), path_matcher(r.path), r) for r in self.routes)
        self._by_host: dict[str, tuple[tuple[Callable[[str], bool], Route], ...]] = {}
        # (Host header as received, path) -> the answer: clients repeat a few hosts and, mostly,
        # a few paths; a miss costs one tuple and one dict probe more than no cache.
        self._answers: dict[tuple[str, str], Route | None] = {}

    def _for_host(self, host: str) -> tuple[tuple[Callable[[str], bool], Route], ...]:
        found = self._by_host.get(host)
        if found is None:
            found = tuple((pm, r) for hm, pm, r in self._compiled if hm(host))
            if len(self._by_host) >= _HOST_CACHE_MAX:
                self._by_host.clear()      # hostile Host headers must not grow the cache unbounded
            self._by_host[host] = found
        return found

    def match(self, host: str, path: str) -> Route | None:
        """`host` as received (port and case are ignored), `path` without the query string."""
        key = (host, path)
        answers = self._answers
        try:
            return answers[key]
        except KeyError:
            pass
        found = None
        for pm, route in self._for_host(normalize_host(host)):
            if pm(path):
                found = route
                break
        if len(answers) >= _ANSWER_CACHE_MAX:
            answers.clear()                # unique paths (ids in URLs, scans) must not grow it unbounded
        answers[key] = found
        return found

    def match_reference(self, host: str, path: str) -> Route | None:
        """The slow, obvious version of `match` (no cache), for property tests."""
        h = normalize_host(host)
        for route in self.routes:
            if host_matcher(route.host)(h) and path_matcher(route.path)(path):
                return route
        return None

    def __len__(self) -> int:
        return len(self.routes)

    def __repr__(self) -> str:
        return f"<RouteTable [{len(self.routes)} routes]>"
