"""Outlier ejection: the table pair by pair, Envoy's multiplier, cap and forgiveness; peak-EWMA."""

from __future__ import annotations

import math

import pytest

from regional_lb.load import PeakEwma
from regional_lb.outlier import TRANSITIONS, OEvent, OState, Outlier, OutlierSettings

S = OutlierSettings(consecutive_failures=3, base_ejection=10.0, max_ejection=25.0, max_ejected_fraction=0.1)


def at_state(state: OState, failures: int = 1) -> Outlier:
    o = Outlier(S)
    o.failures = failures
    if state is OState.EJECTED:
        o.state, o.ejected_until, o.times_ejected = OState.EJECTED, 100.0, 1
    return o


def test_table_covers_every_pair() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in OState for e in OEvent}


@pytest.mark.parametrize(("state", "event", "now", "want_state", "want_failures"), [
    (OState.ACTIVE, OEvent.SUCCESS, 0.0, OState.ACTIVE, 0),
    (OState.ACTIVE, OEvent.FAILURE, 0.0, OState.ACTIVE, 2),
    (OState.ACTIVE, OEvent.EXPIRE, 0.0, OState.ACTIVE, 1),
    (OState.EJECTED, OEvent.SUCCESS, 0.0, OState.EJECTED, 1),
    (OState.EJECTED, OEvent.FAILURE, 0.0, OState.EJECTED, 1),
    (OState.EJECTED, OEvent.EXPIRE, 50.0, OState.EJECTED, 1),     # not yet
    (OState.EJECTED, OEvent.EXPIRE, 100.0, OState.ACTIVE, 0),     # due
    (OState.ACTIVE, OEvent.UNEJECT, 0.0, OState.ACTIVE, 1),       # not ejected: the streak stays
    (OState.EJECTED, OEvent.UNEJECT, 50.0, OState.ACTIVE, 0),     # health vouches: back early
])
def test_each_pair(state: OState, event: OEvent, now: float, want_state: OState, want_failures: int) -> None:
    o = at_state(state)
    o.event(event, now, may_eject=True)
    assert (o.state, o.failures) == (want_state, want_failures)


def test_threshold_ejects_with_growing_capped_duration() -> None:
    o = Outlier(S)
    durations = []
    now = 0.0
    for _ in range(4):
        assert not o.event(OEvent.FAILURE, now, may_eject=True)
        assert not o.event(OEvent.FAILURE, now, may_eject=True)
        assert o.event(OEvent.FAILURE, now, may_eject=True)
        assert o.ejected(now)
        assert o.ejected_until is not None
        durations.append(o.ejected_until - now)
        now = o.ejected_until
        assert not o.ejected(now)                            # a query: the return is expire()
        assert o.state is OState.EJECTED
        assert o.expire(now) == now
        assert o.expire(now) is None
    assert durations == [10.0, 20.0, 25.0, 25.0]
    assert "active" in repr(o)


def test_uneject_ends_the_ejection_at_that_time() -> None:
    o = at_state(OState.EJECTED)
    o.event(OEvent.UNEJECT, 40.0, may_eject=False)
    assert not o.ejected(41.0)
    assert o.ejected_until == 40.0                           # forgiveness counts from the un-ejection
    assert o.expire(200.0) is None


def test_success_resets_the_streak() -> None:
    o = Outlier(S)
    for _ in range(10):
        o.event(OEvent.FAILURE, 0, may_eject=True)
        o.event(OEvent.FAILURE, 0, may_eject=True)
        o.event(OEvent.SUCCESS, 0, may_eject=True)
    assert o.state is OState.ACTIVE
    assert o.times_ejected == 0


def test_refused_ejection_retries_on_next_failure() -> None:
    o = Outlier(S)
    for _ in range(3):
        assert not o.event(OEvent.FAILURE, 0, may_eject=False)
    assert o.event(OEvent.FAILURE, 0, may_eject=True)
    assert "ejected until 10.0" in repr(o)


def test_time_un_ejected_forgives_multiplier_steps() -> None:
    o = Outlier(S)
    o.times_ejected, o.ejected_until = 2, 0.0
    for _ in range(3):
        o.event(OEvent.FAILURE, 15.0, may_eject=True)     # 15 s clean = one base_ejection forgiven
    assert o.times_ejected == 2
    assert o.ejected_until == 15.0 + 20.0


def test_disabled_detection_never_ejects() -> None:
    o = Outlier(OutlierSettings(consecutive_failures=0))
    for _ in range(100):
        assert not o.event(OEvent.FAILURE, 0, may_eject=True)
    assert OutlierSettings(consecutive_failures=0).max_ejected(10) == 0


@pytest.mark.parametrize(("fraction", "size", "allowed"), [
    (0.1, 3, 1), (0.1, 10, 1), (0.1, 25, 2), (0.5, 4, 2), (0.0, 5, 1), (1.0, 4, 4), (0.1, 0, 0)])
def test_max_ejected_is_the_fraction_but_at_least_one(fraction: float, size: int, allowed: int) -> None:
    assert OutlierSettings(max_ejected_fraction=fraction).max_ejected(size) == allowed


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="base_ejection"):
        OutlierSettings(base_ejection=10, max_ejection=5)
    with pytest.raises(ValueError, match="fraction"):
        OutlierSettings(max_ejected_fraction=1.5)


# -- peak EWMA -------------------------------------------------------------------------------------

def test_peak_ewma_jumps_to_peaks_and_decays() -> None:
    e = PeakEwma(decay=10.0, default_rtt=0.05, now=0.0)
    assert e.value(0.0) == pytest.approx(0.05)
    assert e.observe(0.5, 1.0) == 0.5                        # a peak is taken at once
    after = e.observe(0.1, 11.0)                             # one time constant later
    assert after == pytest.approx(0.5 / math.e + 0.1 * (1 - 1 / math.e))
    assert e.value(11.0 + 30) < after * 0.06                 # forgotten while idle
    assert e.value(5.0) == pytest.approx(after)              # a clock going back does not inflate
    assert "ms" in repr(e)


def test_peak_ewma_needs_positive_decay() -> None:
    with pytest.raises(ValueError, match="decay"):
        PeakEwma(decay=0)
