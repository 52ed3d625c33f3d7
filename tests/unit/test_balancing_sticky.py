"""sticky_cookie and sticky_learn: sessions stick, expire, move, refresh, survive draining and garbage."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import ConfigError, Section
from regional_lb.balancing import make_policy
from regional_lb.balancing.base import Candidate, Pick, Policy
from regional_lb.balancing.sticky_cookie import StickyCookie
from regional_lb.balancing.sticky_learn import StickyLearn
from regional_lb.cookies import CookieCodec, format_set_cookie
from tests.unit.test_balancing_helpers import backend, cands, request

T0 = 1_700_000_000.0
RNG = random.Random(5)


def opts(**data: object) -> Section:
    return Section(dict(data), file="lb.yaml", path="routes[0].options")


def sticky(**options: object) -> StickyCookie:
    base: dict[str, object] = {"secrets": ["s3cret", "old-secret"], "max_idle": "30m", "max_life": "12h"}
    base.update(options)
    policy = make_policy("sticky_cookie", opts(**base), tls=False)
    assert isinstance(policy, StickyCookie)
    return policy


def cookie_value(pick: Pick) -> str:
    assert pick.set_cookie is not None
    return pick.set_cookie.split(";", 1)[0].split("=", 1)[1]


def follow(policy: Policy, pick: Pick, candidates, now: float, **kw):  # type: ignore[no-untyped-def]
    req = request(cookies={"LBSESSIONID": cookie_value(pick)}, **kw)
    return policy.pick(req, candidates, now=now, rng=RNG)


# -- sticky_cookie -----------------------------------------------------------------------------------

def test_first_request_gets_a_cookie_and_later_ones_stick() -> None:
    p = sticky()
    cs = cands(5)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    assert first.reason == "new-session"
    assert first.set_cookie is not None
    assert first.set_cookie.startswith("LBSESSIONID=")
    assert "; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax" in first.set_cookie
    assert "Secure" not in first.set_cookie
    for i in range(20):
        nxt = follow(p, first, cs, T0 + i)
        assert nxt is not None
        assert nxt.backend == first.backend
        assert nxt.reason == "cookie"
        assert nxt.set_cookie is None                  # no Set-Cookie on every response
    assert p.stats["hits"] == 20
    assert p.stats["new"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=-5.0, max_value=2.0**32 + 5, allow_nan=False),
                          st.integers(0, 2), st.booleans()), min_size=1, max_size=12),
       st.integers(0, 3))
def test_new_session_cookies_reused_within_a_second_equal_freshly_signed_ones(
        steps: list[tuple[float, int, bool]], spread: int) -> None:
    """_fresh reuses a backend's last new-session Set-Cookie within the same second: every reuse is
    byte for byte what signing anew gives (the codec and format_set_cookie, the obvious path)."""
    p = sticky(max_life="12h")
    for now, offset, tls in steps:
        for at in (now, now + spread * 0.3):         # repeats within and across whole seconds
            cs = cands(3)[offset:] or cands(1)
            pick = p.pick(request(tls=tls), cs, now=at, rng=RNG)
            assert pick is not None
            value = p.codec.encode(pick.backend.id, issued=at, last_seen=at)
            assert pick.set_cookie == format_set_cookie("LBSESSIONID", value, max_age=43200, secure=tls)
            decoded = p.codec.decode(value)
            assert decoded is not None
            assert decoded.issued == decoded.last_seen == int(min(max(at, 0.0), 2**32 - 1))


def test_cookie_is_refreshed_after_a_fraction_of_max_idle_and_keeps_issued() -> None:
    p = sticky()
    cs = cands(3)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    later = follow(p, first, cs, T0 + 0.25 * 1800)
    assert later is not None
    assert later.backend == first.backend
    assert later.set_cookie is not None
    assert "Max-Age=42750" in later.set_cookie            # remaining life, issued unchanged
    refreshed = p.codec.decode(cookie_value(later))
    assert refreshed is not None
    assert (refreshed.issued, refreshed.last_seen) == (int(T0), int(T0 + 450))
    # idle tracking works: follow the refreshed cookie 25 min later (55 min after issue)
    again = follow(p, later, cs, T0 + 450 + 1500)
    assert again is not None
    assert again.backend == first.backend


def test_idle_and_life_limits_are_enforced_by_the_server() -> None:
    p = sticky()
    cs = cands(3)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    idle = follow(p, first, cs, T0 + 1801)
    assert idle is not None
    assert idle.reason == "new-session"
    assert idle.set_cookie is not None
    assert p.stats["expired"] == 1
    # keep it fresh every 10 min: still dies at max_life
    pick, now = first, T0
    while now < T0 + 43200 - 600:
        now += 600
        nxt = follow(p, pick, cs, now)
        assert nxt is not None
        assert nxt.reason == "cookie"
        pick = nxt if nxt.set_cookie else pick
    dead = follow(p, pick, cs, T0 + 43201)
    assert dead is not None
    assert dead.reason == "new-session"


def test_future_cookie_is_invalid() -> None:
    p = sticky()
    value = p.codec.encode("b0", issued=T0 + 3600, last_seen=T0 + 3600)
    pick = p.pick(request(cookies={"LBSESSIONID": value}), cands(2), now=T0, rng=RNG)
    assert pick is not None
    assert pick.reason == "new-session"
    assert p.stats["invalid"] == 1


def test_down_backend_moves_the_session_and_rewrites_the_cookie() -> None:
    p = sticky()
    cs = cands(4)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    without = [c for c in cs if c.backend != first.backend]
    moved = follow(p, first, without, T0 + 5)
    assert moved is not None
    assert moved.reason == "moved"
    assert moved.backend != first.backend
    assert p.stats["resticks"] == 1
    back = follow(p, moved, cs, T0 + 6)             # the old backend is back: the session stays moved
    assert back is not None
    assert back.backend == moved.backend


def test_strict_refuses_to_move() -> None:
    p = sticky(strict=True)
    cs = cands(3)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    assert follow(p, first, [c for c in cs if c.backend != first.backend], T0 + 5) is None
    assert p.stats["strict_refused"] == 1
    # a retry that excluded the session's backend: strict still refuses
    req = request(cookies={"LBSESSIONID": cookie_value(first)})
    assert p.pick(req, cs, now=T0, rng=RNG, exclude=frozenset({first.backend.id})) is None


def test_retry_exclusion_moves_a_non_strict_session() -> None:
    p = sticky()
    cs = cands(3)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    req = request(cookies={"LBSESSIONID": cookie_value(first)})
    retry = p.pick(req, cs, now=T0, rng=RNG, exclude=frozenset({first.backend.id}))
    assert retry is not None
    assert retry.backend != first.backend
    assert retry.reason == "moved"


def test_draining_backend_keeps_its_sessions_but_takes_no_new_ones() -> None:
    p = sticky()
    cs = cands(2)
    first = p.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    draining = [replace(c, accepting_new=c.backend != first.backend) for c in cs]
    kept = follow(p, first, draining, T0 + 1)
    assert kept is not None
    assert kept.backend == first.backend
    for _ in range(10):
        fresh = p.pick(request(), draining, now=T0, rng=RNG)
        assert fresh is not None
        assert fresh.backend != first.backend


def test_unknown_backend_is_a_new_session_even_when_strict() -> None:
    p = sticky(strict=True)
    value = p.codec.encode("never-seen", issued=T0, last_seen=T0)
    pick = p.pick(request(cookies={"LBSESSIONID": value}), cands(2), now=T0, rng=RNG)
    assert pick is not None
    assert pick.reason == "new-session"


def test_old_secret_still_sticks_and_is_re_signed() -> None:
    p = sticky()
    cs = cands(3)
    old = CookieCodec(["old-secret"]).encode("b2", issued=T0, last_seen=T0)
    pick = p.pick(request(cookies={"LBSESSIONID": old}), cs, now=T0 + 1, rng=RNG)
    assert pick is not None
    assert pick.backend.id == "b2"
    assert pick.set_cookie is not None
    renewed = p.codec.decode(cookie_value(pick))
    assert renewed is not None
    assert renewed.secret_index == 0


@pytest.mark.parametrize(("secure", "tls", "samesite", "expect"), [
    ("auto", False, "Lax", False), ("auto", True, "Lax", True), (True, False, "Lax", True),
    (False, True, "Lax", False), ("auto", False, "None", True)])
def test_secure_attribute(secure: object, tls: bool, samesite: str, expect: bool) -> None:
    p = sticky(secure=secure, samesite=samesite)
    pick = p.pick(request(tls=tls), cands(1), now=T0, rng=RNG)
    assert pick is not None
    assert pick.set_cookie is not None
    assert ("; Secure" in pick.set_cookie) is expect
    assert f"SameSite={samesite}" in pick.set_cookie


def test_custom_cookie_name_path_and_no_candidates() -> None:
    p = sticky(cookie="SRV", path="/app", httponly=False, samesite="off", first="round_robin")
    pick = p.pick(request(), cands(2), now=T0, rng=RNG)
    assert pick is not None
    assert pick.set_cookie is not None
    assert pick.set_cookie.startswith("SRV=")
    assert pick.set_cookie.endswith("; Path=/app; Max-Age=43200")
    assert p.pick(request(), [], now=T0, rng=RNG) is None
    assert p.cookie_name == "SRV"
    assert p.max_idle == 1800.0


@pytest.mark.parametrize(("options", "message"), [
    ({"secrets": []}, "at least one secret"),
    ({"secrets": None}, "at least one secret"),
    ({"secrets": [""]}, "secret \\[0\\] must be a non-empty string"),
    ({"secrets": ["ok", 5]}, "secret \\[1\\]"),
    ({"max_idle": "2h", "max_life": "1h"}, "max_life: must be >= max_idle"),
    ({"samesite": "lax"}, "samesite: must be one of"),
    ({"samesite": "None", "secure": False}, "SameSite=None needs Secure"),
    ({"secure": "maybe"}, "secure: must be auto, true or false"),
    ({"cookie": "bad name"}, "not a valid cookie name"),
    ({"first": "sticky_cookie"}, "first: must be one of"),
    ({"path": "app"}, "must start with /"),
    ({"stric": True}, "did you mean 'strict'"),
])
def test_sticky_cookie_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sticky(**options)


def test_single_secret_key_is_accepted() -> None:
    policy = make_policy("sticky_cookie", opts(secret="only"), tls=True)
    assert isinstance(policy, StickyCookie)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_cookie_string_gives_a_pick_never_an_error(value: str) -> None:
    p = sticky()
    pick = p.pick(request(cookies={"LBSESSIONID": value}), cands(3), now=T0, rng=random.Random(0))
    assert pick is not None
    assert pick.backend.id in {"b0", "b1", "b2"}
    assert pick.set_cookie is not None


@given(st.text(max_size=80), st.booleans())
@settings(max_examples=100, deadline=None)
def test_any_cookie_string_strict_gives_a_pick_or_none(value: str, empty: bool) -> None:
    p = sticky(strict=True)
    result = p.pick(request(cookies={"LBSESSIONID": value}), [] if empty else cands(2), now=T0,
                    rng=random.Random(0))
    assert result is None or isinstance(result, Pick)


# -- sticky_learn ------------------------------------------------------------------------------------------

def learn(**options: object) -> StickyLearn:
    policy = make_policy("sticky_learn", opts(**options), tls=False)
    assert isinstance(policy, StickyLearn)
    return policy


def test_learn_flow_like_haproxy_stick_store_response() -> None:
    p = learn(ttl="10m")
    assert p.ttl == 600.0
    cs = cands(3)
    anon = request()
    assert p.sticky_key(anon) is None
    first = p.pick(anon, cs, now=T0, rng=RNG)
    assert first is not None
    assert first.learn is None
    learnt = p.learn_from_response(anon, first.backend, ["other=1", "JSESSIONID=abc; Path=/; HttpOnly"])
    assert learnt == ("abc", first.backend.id)
    req = request(cookies={"JSESSIONID": "abc"})
    assert p.sticky_key(req) == "abc"
    hit = p.pick(req, cs, now=T0, rng=RNG, stuck_to=learnt[1])
    assert hit is not None
    assert hit.backend == first.backend
    assert hit.reason == "learned"
    assert hit.learn == ("abc", first.backend.id)       # refreshes the entry's TTL
    assert p.stats["hits"] == 1
    assert p.stats["learned"] == 1


def test_learn_restick_when_the_backend_is_gone_or_excluded() -> None:
    p = learn()
    cs = cands(3)
    req = request(cookies={"JSESSIONID": "abc"})
    moved = p.pick(req, cs[1:], now=T0, rng=RNG, stuck_to="b0")
    assert moved is not None
    assert moved.backend.id != "b0"
    assert moved.reason == "moved"
    assert moved.learn == ("abc", moved.backend.id)
    retry = p.pick(req, cs, now=T0, rng=RNG, stuck_to="b1", exclude=frozenset({"b1"}))
    assert retry is not None
    assert retry.backend.id != "b1"
    assert p.stats["resticks"] == 2
    miss = p.pick(req, cs, now=T0, rng=RNG, stuck_to=None)
    assert miss is not None
    assert miss.learn == ("abc", miss.backend.id)
    assert p.stats["misses"] == 1
    assert p.pick(req, [], now=T0, rng=RNG) is None


def test_learn_sticks_to_a_draining_backend() -> None:
    p = learn()
    cs = [replace(c, accepting_new=False) if c.backend.id == "b0" else c for c in cands(2)]
    hit = p.pick(request(cookies={"JSESSIONID": "k"}), cs, now=T0, rng=RNG, stuck_to="b0")
    assert hit is not None
    assert hit.backend.id == "b0"


def test_learn_ignores_deletions_and_other_cookies_and_takes_the_last() -> None:
    p = learn(cookie="SID")
    b = backend(1)
    assert p.learn_from_response(request(), b, ["SID=; Max-Age=0"]) is None
    assert p.learn_from_response(request(), b, ["JSESSIONID=x", "garbage"]) is None
    assert p.learn_from_response(request(), b, ["SID=a", "SID=b"]) == ("b", "b1")


@given(st.lists(st.text(max_size=60), max_size=4))
def test_learn_from_any_headers_never_raises(headers: list[str]) -> None:
    got = learn().learn_from_response(request(), backend(0), headers)
    assert got is None or got[1] == "b0"


def test_sticky_learn_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"ttl: must be >= 1\.0s"):
        learn(ttl=0)
    with pytest.raises(ConfigError, match="cookie: not a valid cookie name"):
        learn(cookie="a b")


def test_known_backend_memory_is_bounded() -> None:
    p = sticky()
    for i in range(4100):
        p._remember([Candidate(backend(f"n{i}"))])
    assert len(p._known) == 4096
    assert "n0" not in p._known


def test_learn_cookie_name_property() -> None:
    assert learn(cookie="SID").cookie_name == "SID"


def test_a_replica_with_cold_caches_honours_the_cookie_and_matches_the_reference() -> None:
    """Another LB (same secrets, nothing cached: no token computed, no cookie verified) sticks
    the session like the issuer, and the fast token lookup agrees with exhaustive resolve."""
    issuer, replica = sticky(), sticky()
    cs = cands(6)
    first = issuer.pick(request(), cs, now=T0, rng=RNG)
    assert first is not None
    value = cookie_value(first)
    again = follow(replica, first, list(reversed(cs)), T0 + 5)
    assert again is not None
    assert again.backend == first.backend
    assert again.reason == "cookie"
    decoded = replica.codec.decode(value)
    assert decoded is not None
    ids = [c.backend.id for c in cs]
    assert replica.codec.lookup(decoded) == replica.codec.resolve(decoded, ids) == first.backend.id
    # the backend left the candidates: moved (it is known), with a fresh cookie for another backend
    rest = [c for c in cs if c.backend != first.backend]
    moved = follow(replica, first, rest, T0 + 6)
    assert moved is not None
    assert moved.reason == "moved"
    assert moved.backend != first.backend
    assert moved.set_cookie is not None
