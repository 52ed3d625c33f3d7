"""The pure parts wired together as the edge wires them: pool -> candidates -> policy -> pool events."""

from __future__ import annotations

import random
from collections import Counter

from gslb.common.configload import Section
from gslb.common.health import Health, Status
from regional_lb.balancing import make_policy
from regional_lb.balancing.base import Pick, Policy
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import Pool, PoolSettings
from tests.unit.test_balancing_helpers import backend, request

T0 = 1_700_000_000.0


def policy(name: str, **options: object) -> Policy:
    return make_policy(name, Section(dict(options), file="lb.yaml", path="options"), tls=False)


def serve(pool: Pool, pol: Policy, req, now: float, rng: random.Random,  # type: ignore[no-untyped-def]
          *, ok: bool = True, latency: float = 0.01, finish: bool = True) -> Pick | None:
    pick = pol.pick(req, pool.candidates(now).list, now=now, rng=rng)
    if pick is not None:
        pool.request_started(pick.backend.id)
        if finish:
            pool.request_finished(pick.backend.id, ok=ok, latency=latency, now=now)
    return pick


def cookie_of(pick: Pick) -> dict[str, str]:
    assert pick.set_cookie is not None
    name, _, rest = pick.set_cookie.partition("=")
    return {name: rest.split(";", 1)[0]}


def test_drain_keeps_sessions_until_the_deadline_then_they_move() -> None:
    pool = Pool("app", [backend(i) for i in range(3)], PoolSettings(), now=T0)
    sticky = policy("sticky_cookie", secrets=["k"])
    rng = random.Random(1)
    sessions = []
    for _ in range(30):
        pick = serve(pool, sticky, request(), T0, rng)
        assert pick is not None
        sessions.append((pick.backend.id, cookie_of(pick)))
    victim = Counter(b for b, _ in sessions).most_common(1)[0][0]
    pool.set_admin(victim, "drain", T0 + 10, deadline=T0 + 100)
    for b, cookies in sessions:                               # during the drain: nobody moves
        pick = serve(pool, sticky, request(cookies=cookies), T0 + 50, rng)
        assert pick is not None
        assert pick.backend.id == b
    for _ in range(20):                                       # and no new session lands there
        pick = serve(pool, sticky, request(), T0 + 50, rng)
        assert pick is not None
        assert pick.backend.id != victim
    for b, cookies in sessions:                               # after the deadline: victims move
        pick = serve(pool, sticky, request(cookies=cookies), T0 + 100, rng)
        assert pick is not None
        assert (pick.backend.id != victim) if b == victim else (pick.backend.id == b)
    assert sticky.stats["resticks"] == sum(1 for b, _ in sessions if b == victim)  # type: ignore[attr-defined]


def test_failures_eject_a_backend_and_hash_keys_walk_past_it() -> None:
    pool = Pool("app", [backend(i) for i in range(10)],
                PoolSettings(outlier=OutlierSettings(consecutive_failures=3, base_ejection=30)), now=0.0)
    iphash = policy("ip_hash")
    rng = random.Random(2)
    req = request(ip="203.0.113.50")
    home = serve(pool, iphash, req, 0.0, rng)
    assert home is not None
    for _ in range(3):
        serve(pool, iphash, req, 1.0, rng, ok=False)
    moved = serve(pool, iphash, req, 2.0, rng)
    assert moved is not None
    assert moved.backend != home.backend
    back = serve(pool, iphash, req, 31.0, rng)
    assert back is not None
    assert back.backend == home.backend


def test_least_response_time_follows_the_pools_ewma() -> None:
    pool = Pool("app", [backend(i) for i in range(3)], PoolSettings(), now=0.0)
    lrt = policy("least_response_time")
    rng = random.Random(3)
    latency = {"b0": 0.005, "b1": 0.050, "b2": 0.400}
    got: Counter[str] = Counter()
    for i in range(600):
        now = i * 0.01
        pick = lrt.pick(request(), pool.candidates(now).list, now=now, rng=rng)
        assert pick is not None
        got[pick.backend.id] += 1
        pool.request_started(pick.backend.id)
        pool.request_finished(pick.backend.id, ok=True, latency=latency[pick.backend.id], now=now)
    assert got["b0"] > got["b1"] > got["b2"]
    assert got["b0"] > 300


def test_panic_mode_still_serves_when_most_backends_are_down() -> None:
    pool = Pool("app", [backend(i) for i in range(4)], PoolSettings(panic_threshold=0.5), now=0.0)
    for i in range(3):
        pool.set_health(f"b{i}", Health(Status.DOWN, 0, True), 0.0)
    rr = policy("round_robin")
    got = {serve(pool, rr, request(), 0.0, random.Random()).backend.id for _ in range(8)}  # type: ignore[union-attr]
    assert got == {"b0", "b1", "b2", "b3"}
    assert pool.stats.panics == 8


def test_least_connections_uses_pool_inflight() -> None:
    pool = Pool("app", [backend(i) for i in range(3)], PoolSettings(), now=0.0)
    lc = policy("least_connections")
    rng = random.Random(4)
    for _ in range(9):
        serve(pool, lc, request(), 0.0, rng, finish=False)
    assert [s["inflight"] for s in pool.status(0.0)] == [3, 3, 3]
