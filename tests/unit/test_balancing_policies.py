"""round_robin, random, least_connections, least_response_time, the hash policies and make_policy."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from gslb.common.configload import ConfigError, Section
from regional_lb.balancing import POLICY_NAMES, make_policy
from regional_lb.balancing.base import Candidate
from regional_lb.balancing.hashing import HashPolicy, ip_key
from regional_lb.balancing.least_conn import LeastConnections
from regional_lb.balancing.least_time import LeastResponseTime
from regional_lb.balancing.random_choice import WeightedRandom
from regional_lb.balancing.round_robin import RoundRobin
from tests.unit.test_balancing_helpers import backend, cands, request

REQ = request()


def picks(policy, candidates, n, rng=None, **kw):  # type: ignore[no-untyped-def]
    rng = rng or random.Random(1)
    out = []
    for _ in range(n):
        p = policy.pick(REQ, candidates, now=0.0, rng=rng, **kw)
        out.append(p.backend.id if p else None)
    return out


def opts(**data: object) -> Section:
    return Section(dict(data), file="lb.yaml", path="routes[0].options")


# -- round robin -----------------------------------------------------------------------------------

def test_smooth_weighted_round_robin_interleaves_like_nginx() -> None:
    cs = [Candidate(backend("a", 5), weight=5), Candidate(backend("b")), Candidate(backend("c"))]
    assert picks(RoundRobin(), cs, 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_round_robin_equal_weights_cycle() -> None:
    assert picks(RoundRobin(), cands(3), 6) == ["b0", "b1", "b2", "b0", "b1", "b2"]


def test_round_robin_skips_draining_and_excluded() -> None:
    cs = cands(3)
    cs[1] = replace(cs[1], accepting_new=False)
    assert set(picks(RoundRobin(), cs, 6, exclude=frozenset({"b0"}))) == {"b2"}


def test_round_robin_nothing_eligible_is_none_and_counted() -> None:
    rr = RoundRobin()
    assert rr.pick(REQ, [], now=0, rng=random.Random()) is None
    assert rr.stats["none"] == 1


def test_round_robin_respects_slow_start_weight() -> None:
    cs = [Candidate(backend("a"), weight=1.0), Candidate(backend("b"), weight=0.25)]
    counts = Counter(picks(RoundRobin(), cs, 500))
    assert counts["a"] == 400
    assert counts["b"] == 100


def test_round_robin_forgets_removed_backends() -> None:
    rr = RoundRobin()
    for i in range(40):
        picks(rr, [Candidate(backend(f"gone{i}"))], 1)
    assert len(rr._current) <= 4 + 16 + 1


# -- random ------------------------------------------------------------------------------------------

def test_weighted_random_follows_weights_and_rng() -> None:
    cs = [Candidate(backend("a", 3), weight=3), Candidate(backend("b"))]
    counts = Counter(picks(WeightedRandom(), cs, 4000))
    assert 0.72 < counts["a"] / 4000 < 0.78
    assert picks(WeightedRandom(), cs, 20, rng=random.Random(7)) == picks(
        WeightedRandom(), cs, 20, rng=random.Random(7))


def test_random_none_when_all_excluded() -> None:
    assert picks(WeightedRandom(), cands(2), 1, exclude=frozenset({"b0", "b1"})) == [None]


# -- least connections ----------------------------------------------------------------------------------

def test_least_connections_picks_the_least_loaded_per_weight() -> None:
    cs = [Candidate(backend("a", 2), inflight=3, weight=2), Candidate(backend("b"), inflight=2),
          Candidate(backend("c"), inflight=4)]
    # scores: a=(3+1)/2=2, b=3, c=5
    assert set(picks(LeastConnections(), cs, 20)) == {"a"}


def test_least_connections_breaks_ties_at_random() -> None:
    assert set(picks(LeastConnections(), cands(3), 60)) == {"b0", "b1", "b2"}


def test_power_of_two_choices_never_picks_the_most_loaded() -> None:
    cs = [Candidate(backend(i), inflight=i) for i in range(5)]
    got = Counter(picks(LeastConnections(choices=2), cs, 2000))
    assert "b4" not in got
    assert got["b0"] > got["b1"] > got["b2"] > got["b3"] > 0


def test_p2c_with_two_candidates_compares_both() -> None:
    cs = [Candidate(backend("a"), inflight=9), Candidate(backend("b"), inflight=1)]
    assert set(picks(LeastConnections(choices=2), cs, 30)) == {"b"}


def test_least_connections_rejects_other_choice_counts() -> None:
    with pytest.raises(ValueError, match="choices"):
        LeastConnections(choices=3)


# -- least response time -----------------------------------------------------------------------------------

def test_least_response_time_prefers_low_peak_ewma_times_load() -> None:
    cs = [Candidate(backend("fast"), ewma=0.010, inflight=0), Candidate(backend("slow"), ewma=0.200),
          Candidate(backend("busy"), ewma=0.010, inflight=50)]
    got = Counter(picks(LeastResponseTime(), cs, 3000))
    assert got["slow"] == 0 or got["busy"] == 0
    assert got["fast"] > 1500
    # fast (cost .01) always beats the others when drawn; slow (.2) beats busy (.51)
    assert got["busy"] == 0


def test_least_response_time_single_and_empty() -> None:
    assert picks(LeastResponseTime(), cands(1), 1) == ["b0"]
    assert picks(LeastResponseTime(), [], 1) == [None]


# -- consistent hashing policies ------------------------------------------------------------------------------

def test_ip_hash_is_stable_and_spreads() -> None:
    policy = HashPolicy("ip_hash", ip_key)
    cs = cands(4)
    owners = {}
    for i in range(400):
        req = request(ip=f"10.0.{i // 256}.{i % 256}")
        first = policy.pick(req, cs, now=0, rng=random.Random(i))
        again = policy.pick(req, list(reversed(cs)), now=0, rng=random.Random(i + 1))
        assert first
        assert again
        assert first.backend == again.backend
        owners[req.client_ip] = first.backend.id
    assert set(Counter(owners.values())) == {"b0", "b1", "b2", "b3"}
    assert policy.stats["hits"] == 800
    assert policy.rings.builds == 1


def test_hash_skips_unavailable_by_walking_and_comes_back() -> None:
    policy = HashPolicy("ip_hash", ip_key)
    cs = cands(5)
    reqs = [request(ip=f"198.51.100.{i}") for i in range(200)]
    home = {r.client_ip: policy.pick(r, cs, now=0, rng=random.Random()).backend.id for r in reqs}
    victim = Counter(home.values()).most_common(1)[0][0]
    draining = [replace(c, accepting_new=c.backend.id != victim) for c in cs]
    for r in reqs:
        p = policy.pick(r, draining, now=0, rng=random.Random())
        assert p is not None
        if home[r.client_ip] == victim:
            assert p.backend.id != victim
            assert p.reason == "hash-moved"
        else:
            assert p.backend.id == home[r.client_ip]
    # a retry excludes the home backend; other keys stay
    r = reqs[0]
    p = policy.pick(r, cs, now=0, rng=random.Random(), exclude=frozenset({home[r.client_ip]}))
    assert p is not None
    assert p.backend.id != home[r.client_ip]
    assert policy.pick(r, cs, now=0, rng=random.Random(),
                       exclude=frozenset(c.backend.id for c in cs)) is None


def test_hash_policies_from_options_key_on_their_input() -> None:
    cs = cands(8)
    rng = random.Random(3)
    uri = make_policy("uri_hash", opts(), tls=False)
    a = uri.pick(request(path="/x?1"), cs, now=0, rng=rng)
    b = uri.pick(request(path="/x?2", ip="203.0.113.9"), cs, now=0, rng=rng)
    assert a
    assert b
    assert a.backend == b.backend
    whole = make_policy("uri_hash", opts(whole=True), tls=False)
    got = {whole.pick(request(path=f"/x?{i}"), cs, now=0, rng=rng).backend.id for i in range(40)}
    assert len(got) > 1
    hdr = make_policy("header_hash", opts(header="X-User"), tls=False)
    ids = {hdr.pick(request(ip=f"10.1.1.{i}", headers={"X-User": "alice"}), cs, now=0, rng=rng).backend.id
           for i in range(20)}
    assert len(ids) == 1
    ck = make_policy("cookie_hash", opts(cookie="uid"), tls=False)
    ids = {ck.pick(request(ip=f"10.1.1.{i}", cookies={"uid": "bob"}), cs, now=0, rng=rng).backend.id
           for i in range(20)}
    assert len(ids) == 1


def test_hash_without_key_falls_back_to_round_robin() -> None:
    hdr = make_policy("header_hash", opts(header="X-User"), tls=False)
    got = [hdr.pick(request(), cands(3), now=0, rng=random.Random()).backend.id for _ in range(3)]
    assert sorted(got) == ["b0", "b1", "b2"]
    assert hdr.stats["nokey"] == 3  # type: ignore[attr-defined]


# -- factory -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["round_robin", "random", "least_connections", "least_response_time",
                                  "ip_hash", "uri_hash"])
def test_make_policy_builds_each_simple_policy(name: str) -> None:
    policy = make_policy(name, opts(), tls=False)
    assert policy.name == name
    assert policy.pick(REQ, cands(2), now=0, rng=random.Random()) is not None
    assert policy.sticky_key(REQ) is None
    assert policy.learn_from_response(REQ, backend(0), ["a=b"]) is None
    assert name in repr(policy)


def test_make_policy_least_connections_choices() -> None:
    assert make_policy("least_connections", opts(choices=2), tls=False).choices == 2  # type: ignore[attr-defined]
    assert make_policy("least_connections", opts(choices="all"), tls=False).choices == 0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"routes\[0\].options.choices: must be 2"):
        make_policy("least_connections", opts(choices=3), tls=False)


def test_make_policy_refuses_unknown_names_and_options() -> None:
    with pytest.raises(ConfigError, match="unknown policy 'roundrobin'"):
        make_policy("roundrobin", opts(), tls=False)
    with pytest.raises(ConfigError, match="unknown key"):
        make_policy("round_robin", opts(weight=3), tls=False)
    with pytest.raises(ConfigError, match="header: is required"):
        make_policy("header_hash", opts(), tls=False)
    with pytest.raises(ConfigError, match="must not be empty"):
        make_policy("cookie_hash", opts(cookie=" "), tls=False)
    assert "round_robin" in POLICY_NAMES


def test_hash_policy_does_not_rebuild_when_a_backend_goes_down() -> None:
    policy = HashPolicy("ip_hash", ip_key)
    cs = cands(6)
    reqs = [request(ip=f"192.0.2.{i}") for i in range(100)]
    home = {r.client_ip: policy.pick(r, cs, now=0, rng=random.Random()) for r in reqs}
    fresh = HashPolicy("ip_hash", ip_key)
    for r in reqs:
        a = policy.pick(r, cs[1:], now=0, rng=random.Random())
        b = fresh.pick(r, cs[1:], now=0, rng=random.Random())
        assert a is not None
        assert b is not None
        assert a.backend == b.backend                  # superset ring walked == exact ring
        assert (a.reason == "hash") is (b.reason == "hash")
        if home[r.client_ip].backend.id != "b0":  # type: ignore[union-attr]
            assert a.backend == home[r.client_ip].backend  # type: ignore[union-attr]
    assert policy.rings.builds == 1
