"""Consistent hashing with bounded loads: the bound holds under adversarial keys; spills are counted."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import ConfigError, Section
from regional_lb.balancing import make_policy
from regional_lb.balancing.base import Candidate
from regional_lb.balancing.bounded_load import BoundedLoad, capacities
from regional_lb.balancing.hashing import HashPolicy, header_key, ip_key
from tests.unit.test_balancing_helpers import backend, cands, request


def opts(**data: object) -> Section:
    return Section(dict(data), file="lb.yaml", path="routes[0].options")


class Sim:
    """In-flight bookkeeping around a policy, checking the MTZ bound on every pick."""

    def __init__(self, policy: BoundedLoad, n: int) -> None:
        self.policy = policy
        self.load = dict.fromkeys((f"b{i}" for i in range(n)), 0)
        self.rng = random.Random(0)
        self.worst = 0.0

    def candidates(self) -> list[Candidate]:
        return [Candidate(backend(int(k[1:])), inflight=v) for k, v in self.load.items()]

    def arrive(self, key: str) -> str:
        total, n = sum(self.load.values()), len(self.load)
        bound = math.ceil(self.policy.c * (total + 1) / n)
        pick = self.policy.pick(request(ip=key), self.candidates(), now=0.0, rng=self.rng)
        assert pick is not None
        self.load[pick.backend.id] += 1
        assert self.load[pick.backend.id] <= bound
        if total >= 200:
            self.worst = max(self.worst, self.load[pick.backend.id] / ((total + 1) / n))
        return pick.backend.id

    def finish(self, index: int) -> None:
        busy = [k for k, v in self.load.items() if v]
        if busy:
            self.load[busy[index % len(busy)]] -= 1


@pytest.mark.parametrize("fallback", ["ring", "least_connections"])
@pytest.mark.parametrize("c", [1.0, 1.25, 2.0])
def test_single_hot_key_is_bounded(fallback: str, c: float) -> None:
    policy = BoundedLoad(ip_key, c=c, fallback=fallback)
    sim = Sim(policy, 10)
    for _ in range(2000):
        sim.arrive("10.9.9.9")
    assert max(sim.load.values()) <= math.ceil(c * 2000 / 10)
    assert policy.stats["spills"] > 0
    assert policy.stats["hits"] + policy.stats["spills"] == 2000


def test_zipf_keys_stay_within_the_bound_with_completions() -> None:
    rng = random.Random(42)
    keys = [f"user-{i}" for i in range(2000)]
    weights = [1 / (k + 1) ** 1.1 for k in range(len(keys))]
    policy = BoundedLoad(ip_key, c=1.25)
    sim = Sim(policy, 10)
    for _ in range(6000):
        sim.arrive(rng.choices(keys, weights)[0])
        if rng.random() < 0.45:
            sim.finish(rng.randrange(1000))
    assert sum(sim.load.values()) > 1000
    assert 1.0 < sim.worst <= 1.25 + 10 / 200          # c plus the ceil() slack


@given(ops=st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=300),
       n=st.integers(1, 8), c=st.sampled_from([1.0, 1.1, 1.5, 3.0]),
       fallback=st.sampled_from(["ring", "least_connections"]))
@settings(max_examples=60, deadline=None)
def test_bound_holds_for_any_arrival_sequence(ops: list[tuple[int, bool]], n: int, c: float,
                                              fallback: str) -> None:
    sim = Sim(BoundedLoad(ip_key, c=c, fallback=fallback, vnodes=20), n)
    for key, done in ops:
        sim.arrive(f"k{key}")                      # asserts the bound
        if done:
            sim.finish(key)


def test_light_load_is_plain_consistent_hashing() -> None:
    bounded = BoundedLoad(ip_key, c=1.25)
    plain = HashPolicy("ip_hash", ip_key)
    cs = cands(6)
    for i in range(300):
        req = request(ip=f"172.16.0.{i}")
        a = bounded.pick(req, cs, now=0, rng=random.Random())
        b = plain.pick(req, cs, now=0, rng=random.Random())
        assert a is not None
        assert b is not None
        assert a.backend == b.backend
        assert not a.spilled
    assert bounded.stats["spills"] == 0


def test_ring_fallback_spills_to_the_next_backend_on_the_ring() -> None:
    policy = BoundedLoad(ip_key, c=1.0)
    cs = cands(4)
    req = request(ip="1.2.3.4")
    home = policy.pick(req, cs, now=0, rng=random.Random())
    assert home is not None
    ring = policy.rings.get((c.backend.id, 1) for c in cs)
    from regional_lb.balancing.ring import stable_hash

    order = list(ring.walk(stable_hash("1.2.3.4")))
    assert order[0] == home.backend.id
    loaded = [replace(c, inflight=5) if c.backend.id == home.backend.id else c for c in cs]
    spill = policy.pick(req, loaded, now=0, rng=random.Random())
    assert spill is not None
    assert spill.spilled
    assert spill.reason == "spill"
    assert spill.backend.id == order[1]
    assert policy.stats["spills"] == 1


def test_least_connections_fallback_takes_the_least_loaded() -> None:
    policy = BoundedLoad(ip_key, c=1.0, fallback="least_connections")
    cs = [Candidate(backend(i), inflight=[9, 9, 9, 0][i]) for i in range(4)]
    got = {policy.pick(request(ip=f"10.0.0.{i}"), cs, now=0, rng=random.Random()).backend.id  # type: ignore[union-attr]
           for i in range(50)}
    assert got == {"b3"}


def test_weighted_capacities() -> None:
    cs = [Candidate(backend("a", 3), weight=3, inflight=2), Candidate(backend("b"), weight=1, inflight=1)]
    assert capacities(cs, 1.0) == {"a": 3, "b": 1}


def test_draining_excluded_missing_key_and_empty() -> None:
    policy = BoundedLoad(header_key("X-K"))
    cs = cands(3)
    drained = [replace(c, accepting_new=False) for c in cs[:2]] + cs[2:]
    for i in range(20):
        p = policy.pick(request(headers={"X-K": str(i)}), drained, now=0, rng=random.Random())
        assert p is not None
        assert p.backend.id == "b2"
    nokey = policy.pick(request(), [Candidate(backend(0), inflight=3), Candidate(backend(1))], now=0,
                        rng=random.Random())
    assert nokey is not None
    assert nokey.backend.id == "b1"
    assert policy.stats["nokey"] == 1
    assert policy.pick(request(), cs, now=0, rng=random.Random(), exclude=frozenset({"b0", "b1", "b2"})) is None


def test_make_policy_bounded_load_options() -> None:
    p = make_policy("bounded_load", opts(key="header:X-User", c=1.5, fallback="least_connections"), tls=False)
    assert isinstance(p, BoundedLoad)
    assert (p.c, p.fallback) == (1.5, "least_connections")
    for key in ("ip", "uri", "cookie:sid"):
        assert isinstance(make_policy("bounded_load", opts(key=key), tls=False), BoundedLoad)
    got = Counter(make_policy("bounded_load", opts(key="uri"), tls=False).pick(  # type: ignore[union-attr]
        request(path="/a?x"), cands(3), now=0, rng=random.Random()).backend.id for _ in range(3))
    assert len(got) == 1


@pytest.mark.parametrize(("options", "message"), [
    ({"key": "header:"}, "key: must be ip, uri"), ({"key": "body"}, "key: must be ip, uri"),
    ({"c": 0.5}, "c: must be >= 1.0"), ({"fallback": "random"}, "fallback: must be one of")])
def test_make_policy_bounded_load_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_policy("bounded_load", opts(**options), tls=False)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="c must"):
        BoundedLoad(ip_key, c=0.9)
    with pytest.raises(ValueError, match="fallback"):
        BoundedLoad(ip_key, fallback="x")
