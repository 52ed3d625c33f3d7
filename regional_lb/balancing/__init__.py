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
from regional_lb.balancing.bounded_load import BoundedLoad
from regional_lb.balancing.hashing import HashPolicy, KeyFn, cookie_key, header_key, ip_key, uri_key
from regional_lb.balancing.least_conn import LeastConnections
from regional_lb.balancing.least_time import LeastResponseTime
from regional_lb.balancing.random_choice import WeightedRandom
from regional_lb.balancing.ring import DEFAULT_VNODES
from regional_lb.balancing.round_robin import RoundRobin
from regional_lb.balancing.sticky_cookie import StickyCookie, StickyCookieSettings
from regional_lb.balancing.sticky_learn import StickyLearn
from regional_lb.cookies import valid_cookie_name

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


def _bounded_load(options: Section, tls: bool) -> Policy:
    spec = options.take("key", str, "ip")
    kind, _, arg = spec.partition(":")
    key_fn: KeyFn
    if kind == "ip" and not arg:
        key_fn = ip_key
    elif kind == "uri" and not arg:
        key_fn = uri_key()
    elif kind == "header" and arg.strip():
        key_fn = header_key(arg.strip())
    elif kind == "cookie" and arg.strip():
        key_fn = cookie_key(arg.strip())
    else:
        raise options.error("key", f"must be ip, uri, header:<name> or cookie:<name>, got {spec!r}")
    c = options.take_number("c", 1.25, minimum=1.0, maximum=100.0)
    fallback = options.take_choice("fallback", ("ring", "least_connections"), "ring")
    return BoundedLoad(key_fn, c=c, fallback=fallback, vnodes=_vnodes(options))


def _cookie_name(options: Section, default: str) -> str:
    return str(options.take("cookie", str, default,
                            check=lambda v: None if valid_cookie_name(v) else "not a valid cookie name"))


_FIRST_POLICIES = ("round_robin", "random", "least_connections", "least_response_time", "ip_hash", "uri_hash")


def _first(options: Section, tls: bool) -> Policy:
    name = options.take_choice("first", _FIRST_POLICIES, "least_connections")
    return _FACTORIES[name](Section({}, file=options.file, path=options.key_path("first")), tls)


def _sticky_cookie(options: Section, tls: bool) -> Policy:
    cookie = _cookie_name(options, "LBSESSIONID")
    secrets = options.take("secrets", list, None)
    if secrets is None and "secret" in options:
        secrets = [options.take("secret", str)]
    if not secrets:
        raise options.error("secrets", "at least one secret is required to sign sticky cookies")
    for i, secret in enumerate(secrets):
        if not isinstance(secret, str) or not secret.strip():
            raise options.error("secrets", f"secret [{i}] must be a non-empty string")
    max_idle = options.take_duration("max_idle", 1800.0, minimum=1.0)
    max_life = options.take_duration("max_life", 43200.0, minimum=1.0)
    if max_life < max_idle:
        raise options.error("max_life", f"must be >= max_idle ({max_idle}s)")
    samesite = options.take_choice("samesite", ("Lax", "Strict", "None", "off"), "Lax")
    secure = options.take("secure", (bool, str), "auto")
    if isinstance(secure, bool):
        secure = "true" if secure else "false"
    if secure not in ("auto", "true", "false"):
        raise options.error("secure", f"must be auto, true or false, got {secure!r}")
    if samesite == "None" and secure == "false":
        raise options.error("samesite", "SameSite=None needs Secure (browsers drop it otherwise)")
    path = options.take("path", str, "/", check=lambda p: None if p.startswith("/") else "must start with /")
    settings = StickyCookieSettings(
        cookie=cookie, secrets=tuple(secrets), max_idle=max_idle, max_life=max_life,
        strict=options.take("strict", bool, False), samesite=None if samesite == "off" else samesite,
        path=path, secure=secure, httponly=options.take("httponly", bool, True),
        refresh=options.take_number("refresh", 0.25, minimum=0.0, maximum=1.0),
        domain=options.take("domain", str, None))
    return StickyCookie(settings, _first(options, tls), tls=tls)


def _sticky_learn(options: Section, tls: bool) -> Policy:
    cookie = _cookie_name(options, "JSESSIONID")
    ttl = options.take_duration("ttl", 1800.0, minimum=1.0)
    return StickyLearn(_first(options, tls), cookie=cookie, ttl=ttl)


_FACTORIES: dict[str, Callable[[Section, bool], Policy]] = {
    "round_robin": _round_robin,
    "random": _random,
    "least_connections": _least_connections,
    "least_response_time": _least_response_time,
    "ip_hash": _ip_hash,
    "uri_hash": _uri_hash,
    "header_hash": _header_hash,
    "cookie_hash": _cookie_hash,
    "bounded_load": _bounded_load,
    "sticky_cookie": _sticky_cookie,
    "sticky_learn": _sticky_learn,
}

POLICY_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_policy(name: str, options: Section, *, tls: bool) -> Policy:
    """Build the policy `name` from its `options` section; ConfigError on a bad name or option.

    `tls`: some listener serves TLS (informational; sticky_cookie `secure: auto` decides per
    request from RequestInfo.tls, so a plain-HTTP listener never gets a Secure cookie).
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise options.error(None, f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")
    policy = factory(options, tls)
    options.done()
    return policy
