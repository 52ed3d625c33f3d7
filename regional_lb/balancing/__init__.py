"""Balancing policies and their factory  [pure].

    make_policy(name, options, tls=...) -> Policy

Names: round_robin, random, least_connections, least_response_time, ip_hash, uri_hash,
header_hash, cookie_hash, bounded_load, sticky_cookie, sticky_learn. Options come as a
`Section` (gslb.common.configload); bad or unknown options raise its ConfigError with
the file, key path and reason. Each policy module's docstring says how it behaves and
which HAProxy / nginx / Envoy behaviour it mirrors.
"""

from __future__ import annotations

from collections.abc import Callable

from gslb.common.configload import ConfigError, Section
from regional_lb.balancing.base import Backend, Candidate, Pick, Policy, RequestInfo
from regional_lb.balancing.hashing import HashPolicy, cookie_key, header_key, ip_key, uri_key
from regional_lb.balancing.least_conn import LeastConnections
from regional_lb.balancing.least_time import LeastResponseTime
from regional_lb.balancing.random_choice import WeightedRandom
from regional_lb.balancing.ring import DEFAULT_VNODES
from regional_lb.balancing.round_robin import RoundRobin

__all__ = ["POLICY_NAMES", "Backend", "Candidate", "ConfigError", "Pick", "Policy", "RequestInfo",
           "make_policy"]


def _vnodes(options: Section) -> int:
    return int(options.take_number("vnodes", DEFAULT_VNODES, minimum=1, maximum=10_000, integer=True))


def _round_robin(options: Section, tls: bool) -> Policy:
    return RoundRobin()


def _random(options: Section, tls: bool) -> Policy:
    return WeightedRandom()


def _least_connections(options: Section, tls: bool) -> Policy:
    choices = options.take("choices", (int, str), 0)
    if choices == "all":
        choices = 0
    if choices not in (0, 2):
        raise options.error("choices", f"must be 2 (power of two choices) or 'all', got {choices!r}")
    return LeastConnections(choices=int(choices))


def _least_response_time(options: Section, tls: bool) -> Policy:
    return LeastResponseTime()


def _ip_hash(options: Section, tls: bool) -> Policy:
    return HashPolicy("ip_hash", ip_key, vnodes=_vnodes(options))


def _uri_hash(options: Section, tls: bool) -> Policy:
    whole = options.take("whole", bool, False)
    return HashPolicy("uri_hash", uri_key(whole=whole), vnodes=_vnodes(options))


def _header_hash(options: Section, tls: bool) -> Policy:
    header = options.take("header", str, check=lambda v: None if v.strip() else "must not be empty")
    return HashPolicy("header_hash", header_key(header), vnodes=_vnodes(options))


def _cookie_hash(options: Section, tls: bool) -> Policy:
    cookie = options.take("cookie", str, check=lambda v: None if v.strip() else "must not be empty")
    return HashPolicy("cookie_hash", cookie_key(cookie), vnodes=_vnodes(options))


_FACTORIES: dict[str, Callable[[Section, bool], Policy]] = {
    "round_robin": _round_robin,
    "random": _random,
    "least_connections": _least_connections,
    "least_response_time": _least_response_time,
    "ip_hash": _ip_hash,
    "uri_hash": _uri_hash,
    "header_hash": _header_hash,
    "cookie_hash": _cookie_hash,
}

POLICY_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_policy(name: str, options: Section, *, tls: bool) -> Policy:
    """Build the policy `name` from its `options` section; ConfigError on a bad name or option.

    `tls`: the route is served only over TLS (sticky_cookie `secure: auto` then always sets Secure).
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise options.error(None, f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    policy = factory(options, tls)
    options.done()
    return policy
