"""Health x ejection: the traffic table pair by pair through the pool, un-ejection by active health,
and slow start that starts when traffic can reach the backend again (injected monotonic time)."""

from __future__ import annotations

import pytest

from gslb.common.configload import ConfigError, Section
from gslb.common.health import Health, Status
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import (
    TRAFFIC_TRANSITIONS,
    Pool,
    PoolSettings,
    Traffic,
    TrafficEvent,
    load_pool_settings,
    slow_start_factor,
    traffic_state,
)
from tests.unit.test_balancing_helpers import backend

UP = Health(Status.UP, 0, True)
DOWN = Health(Status.DOWN, 0, True)
EJECTION = 1000.0            # base ejection in the pair tests: nothing expires unless a test waits for it
RAMP = 10.0


def one(uneject: str = "never", base: float = EJECTION, slow: float = RAMP, n: int = 1) -> Pool:
    settings = PoolSettings(outlier=OutlierSettings(consecutive_failures=1, base_ejection=base,
                                                    max_ejection=max(base, 300.0), max_ejected_fraction=1.0,
                                                    uneject=uneject),
                            slow_start=slow, panic_threshold=0.0)
    return Pool("p", [backend(i) for i in range(n)], settings, now=0.0)


def fail(pool: Pool, bid: str, now: float) -> None:
    pool.request_started(bid)
    pool.request_finished(bid, ok=False, latency=None, now=now)


def state_of(pool: Pool, now: float, bid: str = "b0") -> Traffic:
    row = next(r for r in pool.status(now) if r["id"] == bid)
    return traffic_state(row["health"] == "up", row["ejected"])


def weight(pool: Pool, now: float, bid: str = "b0") -> float:
    return float(next(r for r in pool.status(now) if r["id"] == bid)["effective_weight"])


# -- the table ------------------------------------------------------------------------------------------

def test_traffic_table_covers_every_pair() -> None:
    assert set(TRAFFIC_TRANSITIONS) == {(s, e) for s in Traffic for e in TrafficEvent}


def test_a_ramp_starts_exactly_on_entering_serving() -> None:
    for (state, _event), (after, ramp) in TRAFFIC_TRANSITIONS.items():
        assert ramp is (after is Traffic.SERVING and state is not Traffic.SERVING)


def reach(pool: Pool, state: Traffic) -> None:
    """Bring b0 to `state` at t=0..1 through the public API."""
    if state in (Traffic.EJECTED, Traffic.DOWN_EJECTED):
        fail(pool, "b0", 0.0)
    if state in (Traffic.DOWN, Traffic.DOWN_EJECTED):
        pool.set_health("b0", DOWN, 1.0)


def apply(pool: Pool, event: TrafficEvent) -> float:
    """Apply `event` to b0 through the public API; the time it happened."""
    if event is TrafficEvent.HEALTH_UP:
        pool.set_health("b0", UP, 100.0, probe_ok=True)
        return 100.0
    if event is TrafficEvent.HEALTH_DOWN:
        pool.set_health("b0", DOWN, 100.0, probe_ok=False)
        return 100.0
    if event is TrafficEvent.EJECT:
        fail(pool, "b0", 100.0)
        return 100.0
    pool.candidates(EJECTION + 5.0)            # RETURN: the ejection (from t=0) ran out at EJECTION
    return EJECTION


@pytest.mark.parametrize("start", list(Traffic))
@pytest.mark.parametrize("event", list(TrafficEvent))
def test_each_pair_through_the_pool(start: Traffic, event: TrafficEvent) -> None:
    pool = one(uneject="never")
    reach(pool, start)
    assert state_of(pool, 2.0) is start
    at = apply(pool, event)
    want, ramp = TRAFFIC_TRANSITIONS[(start, event)]
    later = EJECTION + 5.0 if event is TrafficEvent.RETURN else at
    assert state_of(pool, later) is want
    # a ramp starts at the moment of the event (10 % there), else the weight is whole
    expected = slow_start_factor(at, later, RAMP) if ramp else 1.0
    assert weight(pool, later) == pytest.approx(expected, abs=1e-3)


# -- the scenario: recovered while ejected -------------------------------------------------------

def down_and_ejected(uneject: str) -> Pool:
    pool = one(uneject=uneject, base=30.0, n=2)
    fail(pool, "b0", 0.0)                         # ejected until 30
    pool.set_health("b0", DOWN, 1.0)
    return pool


def test_recovery_during_an_ejection_waits_for_its_end_then_ramps_from_there() -> None:
    pool = down_and_ejected("never")
    pool.set_health("b0", UP, 10.0)              # healthy again, still ejected
    assert [c.backend.id for c in pool.candidates(20.0).list] == ["b1"]
    assert [c.backend.id for c in pool.candidates(29.9).list] == ["b1"]
    cands = {c.backend.id: c.weight for c in pool.candidates(30.0).list}
    assert cands == {"b0": pytest.approx(0.1), "b1": 1.0}          # the ramp starts at the ejection's end
    assert {c.backend.id: c.weight for c in pool.candidates(35.0).list}["b0"] == pytest.approx(0.5)
    assert {c.backend.id: c.weight for c in pool.candidates(40.0).list}["b0"] == 1.0


def test_recovery_ends_the_ejection_by_default_and_ramps_from_the_recovery() -> None:
    pool = down_and_ejected("recovery")
    pool.set_health("b0", Health(Status.DOWN, 1, True), 8.0, probe_ok=True)   # one pass of two: not yet
    assert [c.backend.id for c in pool.candidates(9.0).list] == ["b1"]
    pool.set_health("b0", UP, 10.0, probe_ok=True)                           # rise reached: back now
    assert {c.backend.id: c.weight for c in pool.candidates(10.0).list} == {"b0": pytest.approx(0.1), "b1": 1.0}
    assert {c.backend.id: c.weight for c in pool.candidates(15.0).list}["b0"] == pytest.approx(0.5)
    assert pool.status(15.0)[0]["ejected"] is False
    # the ejection was cut short at 10: forgiveness counts from there, the next one is 2 x base
    fail(pool, "b0", 12.0)
    assert pool.status(12.0)[0]["ejected_until"] == 12.0 + 60.0


def test_recovery_mode_does_not_un_eject_a_backend_that_passes_probes_while_failing_requests() -> None:
    pool = one(uneject="recovery", base=30.0, n=2)
    fail(pool, "b0", 0.0)
    for t in (2.0, 4.0, 6.0):
        pool.set_health("b0", UP, t, probe_ok=True)
    assert [c.backend.id for c in pool.candidates(7.0).list] == ["b1"]


def test_success_mode_un_ejects_on_any_passing_probe_as_envoy() -> None:
    pool = one(uneject="success", base=30.0, n=2)
    fail(pool, "b0", 0.0)
    pool.set_health("b0", Health(Status.UP, 1, True), 2.0, probe_ok=False)   # a failed probe: still out
    assert [c.backend.id for c in pool.candidates(3.0).list] == ["b1"]
    pool.set_health("b0", UP, 4.0, probe_ok=True)
    assert {c.backend.id: c.weight for c in pool.candidates(4.0).list} == {"b0": pytest.approx(0.1), "b1": 1.0}


def test_an_ejection_of_a_healthy_backend_ramps_again_when_it_returns() -> None:
    pool = one(base=30.0, n=2)
    fail(pool, "b0", 100.0)
    assert [c.backend.id for c in pool.candidates(129.0).list] == ["b1"]
    assert {c.backend.id: c.weight for c in pool.candidates(132.0).list}["b0"] == pytest.approx(0.2)


def test_leaving_maintenance_while_down_ramps_when_health_comes_back() -> None:
    pool = one(n=2)
    pool.set_admin("b0", "maintenance", 0.0)
    pool.set_health("b0", DOWN, 1.0)
    pool.set_admin("b0", "ready", 50.0)          # not reachable yet: no ramp now
    assert [c.backend.id for c in pool.candidates(55.0).list] == ["b1"]
    pool.set_health("b0", UP, 70.0)
    assert {c.backend.id: c.weight for c in pool.candidates(70.0).list}["b0"] == pytest.approx(0.1)


def test_leaving_maintenance_while_ejected_ramps_from_the_ejection_end() -> None:
    pool = one(base=30.0, n=2)
    fail(pool, "b0", 0.0)
    pool.set_admin("b0", "maintenance", 1.0)
    pool.set_admin("b0", "ready", 10.0)
    assert [c.backend.id for c in pool.candidates(20.0).list] == ["b1"]
    assert {c.backend.id: c.weight for c in pool.candidates(30.0).list}["b0"] == pytest.approx(0.1)


def test_a_late_health_report_for_an_unknown_backend_is_ignored() -> None:
    pool = one()
    pool.set_health("ghost", UP, 1.0, probe_ok=True)
    assert pool.health("ghost") is None
    assert pool.health("b0") == Health.initial()


def test_a_rebuilt_pool_starts_from_the_health_it_is_given() -> None:
    settings = PoolSettings(slow_start=RAMP)
    pool = Pool("p", [backend(0), backend(1)], settings, now=0.0, health={"b0": DOWN, "gone": UP})
    assert pool.health("b0") == DOWN
    assert pool.health("b1") == Health.initial()
    assert [c.backend.id for c in pool.candidates(0.0).list] == ["b1"]
    none = load_pool_settings(Section({"health": {"type": "none"}}, file="lb.yaml", path="pools.p"))
    assert Pool("q", [backend(0)], none, now=0.0, health={"b0": DOWN}).health("b0") == Health.initial()


# -- settings -------------------------------------------------------------------------------------------

def test_uneject_setting_is_read_and_checked() -> None:
    def load(value: object) -> PoolSettings:
        return load_pool_settings(Section({"outlier": {"uneject": value}}, file="lb.yaml", path="pools.p"))

    assert load_pool_settings(Section({}, file="lb.yaml", path="pools.p")).outlier.uneject == "recovery"
    assert load("success").outlier.uneject == "success"
    assert load("never").outlier.uneject == "never"
    with pytest.raises(ConfigError, match=r"pools\.p\.outlier\.uneject: must be one of"):
        load("sometimes")
    with pytest.raises(ValueError, match="uneject"):
        OutlierSettings(uneject="always")
