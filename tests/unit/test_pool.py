"""The pool: admin table pair by pair, candidates (health, drain, ejection, slow start, panic), settings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.common.configload import ConfigError, Section
from gslb.common.health import Health, Status
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import (
    ADMIN_TRANSITIONS,
    AdminEvent,
    AdminState,
    HealthSettings,
    Pool,
    PoolSettings,
    UnknownBackend,
    load_pool_settings,
    slow_start_factor,
)
from regional_lb.retry import RetrySettings
from tests.unit.test_balancing_helpers import backend

UP = Health(Status.UP, 0, True)
DOWN = Health(Status.DOWN, 0, True)


def make_pool(n: int = 4, **settings: object) -> Pool:
    return Pool("app", [backend(i) for i in range(n)], PoolSettings(**settings), now=0.0)  # type: ignore[arg-type]


def ids(pool: Pool, now: float = 0.0) -> list[str]:
    return [c.backend.id for c in pool.candidates(now).list]


# -- admin state machine ---------------------------------------------------------------------------

def test_admin_table_covers_every_pair() -> None:
    assert set(ADMIN_TRANSITIONS) == {(s, e) for s in AdminState for e in AdminEvent}


EXPECTED = {  # state -> (after ready, after drain, after maintenance, after deadline)
    AdminState.READY: ("ready", "drain", "maintenance", "ready"),
    AdminState.DRAIN: ("ready", "drain", "maintenance", "drained"),
    AdminState.DRAINED: ("ready", "drain", "maintenance", "drained"),
    AdminState.MAINTENANCE: ("ready", "drain", "maintenance", "maintenance"),
}


@pytest.mark.parametrize("start", list(AdminState))
@pytest.mark.parametrize("event", list(AdminEvent))
def test_admin_each_pair_through_the_pool(start: AdminState, event: AdminEvent) -> None:
    pool = make_pool(1, slow_start=10.0)
    # reach `start` through the public API
    if start is AdminState.DRAIN:
        pool.set_admin("b0", "drain", 0.0, deadline=100.0)
    elif start is AdminState.DRAINED:
        pool.set_admin("b0", "drain", 0.0, deadline=1.0)
        pool.candidates(1.0)
    elif start is AdminState.MAINTENANCE:
        pool.set_admin("b0", AdminState.MAINTENANCE, 0.0)
    assert pool.status(1.0)[0]["admin"] == start.value
    at = 200.0 if event is AdminEvent.DEADLINE or start is not AdminState.DRAIN else 50.0  # DRAIN: before its deadline
    if event is AdminEvent.DEADLINE:
        pool.candidates(at)
    else:
        pool.set_admin("b0", event.value, at)
    want = EXPECTED[start][list(AdminEvent).index(event)]
    assert pool.status(at)[0]["admin"] == want
    ramped = ADMIN_TRANSITIONS[(start, event)][1]
    assert (pool.status(at)[0]["effective_weight"] < 1) is ramped


def test_admin_refuses_unknown_backend_and_the_internal_event() -> None:
    pool = make_pool(1)
    with pytest.raises(UnknownBackend):
        pool.set_admin("nope", "drain", 0.0)
    with pytest.raises(ValueError, match="deadline"):
        pool.set_admin("b0", "deadline", 0.0)
    with pytest.raises(ValueError, match="bogus"):
        pool.set_admin("b0", "bogus", 0.0)


def test_draining_backend_is_a_candidate_for_existing_sessions_only_until_its_deadline() -> None:
    pool = make_pool(3)
    pool.set_admin("b1", "drain", 10.0, deadline=70.0)
    by_id = {c.backend.id: c for c in pool.candidates(20.0).list}
    assert by_id["b1"].accepting_new is False
    assert by_id["b0"].accepting_new is True
    assert repr(pool) == "<Pool app [2 up, 1 draining, 0 down]>"
    assert ids(pool, 70.0) == ["b0", "b2"]
    assert pool.stats.drains_expired == 1
    assert repr(pool) == "<Pool app [2 up, 0 draining, 1 down]>"


def test_drain_without_deadline_stays() -> None:
    pool = make_pool(2)
    pool.set_admin("b0", "drain", 0.0)
    assert ids(pool, 1e9) == ["b0", "b1"]


def test_maintenance_and_health_down_are_left_out() -> None:
    pool = make_pool(4)
    pool.set_admin("b0", "maintenance", 0.0)
    pool.set_health("b1", DOWN, 0.0)
    pool.set_health("ghost", DOWN, 0.0)            # unknown ids are ignored (discovery race)
    assert ids(pool) == ["b2", "b3"]
    assert pool.healthy_fraction() == pytest.approx(2 / 3)   # maintenance is not counted
    assert repr(pool) == "<Pool app [2 up, 0 draining, 2 down]>"


# -- panic -----------------------------------------------------------------------------------------

def test_panic_mode_returns_all_but_admin_removed_and_counts() -> None:
    pool = make_pool(4, panic_threshold=0.5)
    pool.set_admin("b3", "maintenance", 0.0)
    pool.set_health("b0", DOWN, 0.0)
    pool.set_health("b1", DOWN, 0.0)              # 1 of 3 healthy < 0.5
    c = pool.candidates(0.0)
    assert c.panic
    assert [x.backend.id for x in c.list] == ["b0", "b1", "b2"]
    assert pool.stats.panics == 1
    pool.set_health("b1", UP, 0.0)                # 2 of 3 healthy: normal again
    c = pool.candidates(0.0)
    assert not c.panic
    assert [x.backend.id for x in c.list] == ["b1", "b2"]


def test_panic_threshold_zero_disables_panic() -> None:
    pool = make_pool(2, panic_threshold=0.0)
    pool.set_health("b0", DOWN, 0.0)
    pool.set_health("b1", DOWN, 0.0)
    c = pool.candidates(0.0)
    assert c.list == ()
    assert not c.panic


def test_empty_pool() -> None:
    pool = make_pool(0)
    assert pool.candidates(0.0).list == ()
    assert pool.healthy_fraction() == 0.0


# -- slow start ------------------------------------------------------------------------------------

def test_slow_start_factor_ramps_linearly_from_ten_percent() -> None:
    assert slow_start_factor(None, 5.0, 10.0) == 1.0
    assert slow_start_factor(0.0, 5.0, 0.0) == 1.0
    assert slow_start_factor(0.0, 0.0, 10.0) == 0.1
    assert slow_start_factor(0.0, 5.0, 10.0) == 0.5
    assert slow_start_factor(0.0, 10.0, 10.0) == 1.0


def test_slow_start_after_turning_healthy_and_not_at_startup() -> None:
    pool = make_pool(2, slow_start=20.0)
    assert [c.weight for c in pool.candidates(0.0).list] == [1.0, 1.0]
    pool.set_health("b0", DOWN, 0.0)
    pool.set_health("b0", UP, 100.0)
    w = {c.backend.id: c.weight for c in pool.candidates(110.0).list}
    assert w == {"b0": 0.5, "b1": 1.0}
    assert {c.backend.id: c.weight for c in pool.candidates(120.0).list}["b0"] == 1.0


def test_new_backends_from_discovery_warm_up_and_old_ones_keep_state() -> None:
    pool = make_pool(2, slow_start=10.0)
    pool.set_admin("b1", "drain", 0.0)
    pool.request_started("b1")
    pool.update_backends([backend(1, weight=3), backend(2)], now=50.0)
    c = {x.backend.id: x for x in pool.candidates(55.0).list}
    assert set(c) == {"b1", "b2"}
    assert c["b1"].accepting_new is False
    assert c["b1"].inflight == 1
    assert c["b1"].weight == 3
    assert c["b2"].weight == 0.5
    assert pool.backend("b0") is None
    assert pool.backend("b2") == backend(2)
    assert pool.backends == (backend(1, weight=3), backend(2))


# -- load and outlier ----------------------------------------------------------------------------------

def test_inflight_counts_and_shared_override() -> None:
    pool = make_pool(2)
    pool.request_started("b0")
    pool.request_started("b0")
    pool.request_started("gone")
    pool.request_finished("b0", ok=True, latency=0.2, now=1.0)
    pool.request_finished("gone", ok=True, latency=0.2, now=1.0)
    c = {x.backend.id: x for x in pool.candidates(1.0).list}
    assert c["b0"].inflight == 1
    assert c["b1"].inflight == 0
    assert c["b0"].ewma == pytest.approx(0.2)
    assert c["b1"].ewma == pytest.approx(0.05 * math.exp(-1.0 / 10.0))
    shared = {x.backend.id: x.inflight for x in pool.candidates(1.0, inflight={"b0": 7, "b1": 3}).list}
    assert shared == {"b0": 7, "b1": 3}
    pool.request_finished("b1", ok=True, latency=None, now=1.0)
    assert pool.status(1.0)[1]["inflight"] == 0


def test_consecutive_failures_eject_then_return() -> None:
    pool = make_pool(10, outlier=OutlierSettings(consecutive_failures=3, base_ejection=30.0))
    for _ in range(3):
        pool.request_started("b0")
        pool.request_finished("b0", ok=False, latency=0.01, now=5.0)
    assert "b0" not in ids(pool, 6.0)
    st = pool.status(6.0)[0]
    assert st["ejected"]
    assert st["ejected_until"] == 35.0
    assert st["times_ejected"] == 1
    assert pool.stats.ejections == 1
    assert "b0" in ids(pool, 35.0)


def test_ejection_cap_never_ejects_more_than_allowed() -> None:
    pool = make_pool(10, outlier=OutlierSettings(consecutive_failures=1, max_ejected_fraction=0.2))
    for i in range(10):
        pool.request_finished(f"b{i}", ok=False, latency=None, now=0.0)
    assert len(ids(pool, 1.0)) == 8
    assert pool.stats.ejections == 2
    assert pool.stats.ejections_refused == 8


def test_success_between_failures_prevents_ejection() -> None:
    pool = make_pool(2, outlier=OutlierSettings(consecutive_failures=2))
    for _ in range(5):
        pool.request_finished("b0", ok=False, latency=None, now=0.0)
        pool.request_finished("b0", ok=True, latency=None, now=0.0)
    assert ids(pool) == ["b0", "b1"]


def test_status_is_json_friendly() -> None:
    import json

    pool = Pool("v6", [backend(0), type(backend(0))("six", "::1", 80)], PoolSettings(), now=0.0)
    st = pool.status(0.0)
    json.dumps(st)
    assert st[1]["address"] == "[::1]:80"
    assert st[0]["address"] == "127.0.0.1:9000"
    assert {"id", "address", "health", "admin", "inflight", "ewma_ms", "ejected_until"} <= set(st[0])


# -- settings ------------------------------------------------------------------------------------------

def sect(data: dict[str, object]) -> Section:
    return Section(data, file="lb.yaml", path="pools.app")


def test_load_pool_settings_defaults_and_leaves_other_keys() -> None:
    s = sect({"backends": []})
    settings = load_pool_settings(s)
    assert settings == PoolSettings()
    assert settings.health.type == "tcp"
    assert settings.outlier.consecutive_failures == 5
    assert settings.retries == RetrySettings()
    with pytest.raises(ConfigError, match="backends: unknown key"):
        s.done()                                  # the caller takes `backends`


def test_load_pool_settings_contract_example() -> None:
    settings = load_pool_settings(sect({
        "health": {"type": "http", "path": "/healthz", "expect_status": 200, "interval": "2s",
                   "timeout": "1s", "rise": 2, "fall": 3},
        "outlier": {"consecutive_failures": 5, "base_ejection": "30s", "max_ejection": "300s",
                    "max_ejected_fraction": 0.1},
        "slow_start": "0s", "panic_threshold": 0.5,
        "retries": {"attempts": 2, "budget_ratio": 0.2, "min_retries": 3},
        "load": {"decay": "5s", "default_rtt": "20ms"}}))
    assert settings.health == HealthSettings(type="http", interval=2.0, timeout=1.0)
    assert settings.load.decay == 5.0
    assert settings.load.default_rtt == pytest.approx(0.02)


@pytest.mark.parametrize(("data", "message"), [
    ({"health": {"type": "udp"}}, "pools.app.health.type: must be one of"),
    ({"health": {"intervall": 2}}, "did you mean 'interval'"),
    ({"health": {"expect_status": [200, 999]}}, "expect_status: expected HTTP status codes"),
    ({"health": {"path": "healthz"}}, "must start with /"),
    ({"outlier": {"max_ejected_fraction": 2}}, "must be <= 1.0"),
    ({"outlier": {"base_ejection": "60s", "max_ejection": "10s"}}, "max_ejection: must be >="),
    ({"panic_threshold": -0.1}, "panic_threshold: must be >= 0.0"),
    ({"retries": {"attempts": 0}}, "attempts: must be >= 1"),
    ({"slow_start": "soon"}, "slow_start: expected a duration"),
])
def test_load_pool_settings_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pool_settings(sect(data))


def test_health_type_none_is_always_up() -> None:
    settings = load_pool_settings(sect({"health": {"type": "none", "assume": "down"}}))
    pool = Pool("x", [backend(0)], settings, now=0.0)
    assert ids(pool) == ["b0"]
    down_first = Pool("y", [backend(0)], load_pool_settings(sect({"health": {"assume": "down"}})), now=0.0)
    assert down_first.healthy_fraction() == 0.0


def test_pool_settings_validation() -> None:
    with pytest.raises(ValueError, match="panic_threshold"):
        PoolSettings(panic_threshold=2.0)
    with pytest.raises(ValueError, match="slow_start"):
        PoolSettings(slow_start=-1)


@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 100.0)), max_size=8), st.floats(0.0, 200.0))
def test_candidate_ewma_is_the_decayed_peak_ewma(samples: list[tuple[float, float]], later: float) -> None:
    from regional_lb.load import PeakEwma

    pool = Pool("p", [backend("a")], PoolSettings(), now=0.0)
    ref = PeakEwma(decay=PoolSettings().load.decay, default_rtt=PoolSettings().load.default_rtt, now=0.0)
    for latency, at in samples:
        pool.request_started("a")
        pool.request_finished("a", ok=True, latency=latency, now=at)
        ref.observe(latency, at)
    assert pool.candidates(later).list[0].ewma == ref.value(later)      # before, at and after the last sample
