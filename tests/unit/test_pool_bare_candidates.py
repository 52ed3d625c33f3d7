"""Candidates without per-request load (Pool.candidates(load=False)) for policies that never read
it (`uses_load` False): the same backends, weights and drain flags, and the same picks."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import Section
from regional_lb.balancing import POLICY_NAMES, make_policy
from regional_lb.balancing.base import Backend, Candidate, Policy
from regional_lb.pool import Pool, PoolSettings
from tests.unit.test_balancing_helpers import backend, request

OPTIONS: dict[str, dict[str, object]] = {
    "header_hash": {"header": "X-User"},
    "cookie_hash": {"cookie": "uid"},
    "sticky_cookie": {"secrets": ["s3cret"], "first": "round_robin"},
    "sticky_learn": {"first": "random"},
}
LOAD_BLIND = ["round_robin", "random", "ip_hash", "uri_hash", "header_hash", "cookie_hash", "sticky_cookie",
              "sticky_learn"]


def policy(name: str, **extra: object) -> Policy:
    return make_policy(name, Section({**OPTIONS.get(name, {}), **extra}, file="lb.yaml", path="routes[0].options"),
                       tls=False)


def test_which_policies_read_load() -> None:
    assert sorted(n for n in POLICY_NAMES if not policy(n).uses_load) == sorted(LOAD_BLIND)
    assert policy("sticky_cookie", first="least_connections").uses_load
    assert policy("sticky_learn", first="least_response_time").uses_load


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0.0, 0.5), st.booleans()), min_size=1, max_size=40),
       st.sampled_from(LOAD_BLIND), st.integers(1, 3), st.booleans())
def test_load_blind_policies_pick_the_same_from_bare_candidates(
        steps: list[tuple[int, float, bool]], name: str, weight: int, draining: bool) -> None:
    pool = Pool("app", [backend(0), backend(1, weight=weight), backend(2), backend(3)],
                PoolSettings(slow_start=0.0), now=0.0)
    if draining:
        pool.set_admin("b2", "drain", 0.0)
    loaded_policy, bare_policy = policy(name), policy(name)
    rng_a, rng_b = random.Random(7), random.Random(7)
    cookies: dict[str, str] = {}
    for i, (who, latency, finish) in enumerate(steps):
        now = float(i)
        loaded = pool.candidates(now)
        bare = pool.candidates(now, load=False)
        assert bare.panic == loaded.panic
        assert bare.list == tuple(replace(c, inflight=0, ewma=0.0) for c in loaded.list)
        req = request(ip=f"192.0.2.{who}", path=f"/p{who}", headers={"X-User": str(who)},
                      cookies={"uid": str(who), **cookies})
        a = loaded_policy.pick(req, loaded.list, now=1e9 + now, rng=rng_a)
        b = bare_policy.pick(req, bare.list, now=1e9 + now, rng=rng_b)
        assert a == b
        if a is None:
            continue
        if a.set_cookie:
            cookies = {"LBSESSIONID": a.set_cookie.split(";")[0].split("=", 1)[1]}
        pool.request_started(a.backend.id)              # load that the bare candidates leave out
        if finish:
            pool.request_finished(a.backend.id, ok=True, latency=latency, now=now)


def test_bare_candidates_are_built_once_per_selection() -> None:
    pool = Pool("app", [backend(0), backend(1)], PoolSettings(), now=0.0)
    first = pool.candidates(1.0, load=False)
    pool.request_started("b0")
    assert pool.candidates(2.0, load=False) is first
    assert pool.candidates(2.0).list[0].inflight == 1
    pool.set_admin("b1", "maintenance", 3.0)             # a change of selection: rebuilt
    assert [c.backend.id for c in pool.candidates(3.0, load=False).list] == ["b0"]


@pytest.mark.parametrize("name", ["least_connections", "least_response_time", "bounded_load"])
def test_load_reading_policies_say_so(name: str) -> None:
    assert policy(name).uses_load


@pytest.mark.parametrize("name", ["round_robin", "sticky_cookie"])
def test_a_reused_pick_follows_a_backend_replaced_under_the_same_id(name: str) -> None:
    """Picks are reused per backend id (a value); a backend re-addressed by a reload gets a new one."""
    p = policy(name)
    old = [Candidate(backend(0))]
    moved = [Candidate(Backend("b0", "127.0.0.2", 9100))]
    first = p.pick(request(), old, now=1e9, rng=random.Random(1))
    assert first is not None
    cookies = {"LBSESSIONID": first.set_cookie.split(";")[0].split("=", 1)[1]} if first.set_cookie else {}
    again = p.pick(request(cookies=cookies), old, now=1e9 + 1, rng=random.Random(1))
    assert again is not None
    assert again.backend is old[0].backend
    later = p.pick(request(cookies=cookies), moved, now=1e9 + 2, rng=random.Random(1))
    assert later is not None
    assert later.backend is moved[0].backend
    assert (later.backend.host, later.backend.port) == ("127.0.0.2", 9100)
    fresh = p.pick(request(), moved, now=1e9, rng=random.Random(1))      # a new session, same second
    assert fresh is not None
    assert fresh.backend is moved[0].backend
