"""The rise/fall table, pair by pair, and its invariants."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.common.health import TRANSITIONS, Health, Status, Thresholds


def test_table_covers_every_state_and_input():
    assert set(TRANSITIONS) == {(s, ok) for s in Status for ok in (True, False)}


@pytest.mark.parametrize(
    ("status", "ok", "streak", "expected_status", "expected_streak"),
    [
        (Status.UP, True, 0, Status.UP, 0),
        (Status.UP, True, 2, Status.UP, 0),        # a success resets a failing streak
        (Status.UP, False, 0, Status.UP, 1),
        (Status.UP, False, 2, Status.DOWN, 0),      # third failure in a row: down (fall=3)
        (Status.DOWN, False, 1, Status.DOWN, 0),    # a failure resets a rising streak
        (Status.DOWN, True, 0, Status.DOWN, 1),
        (Status.DOWN, True, 1, Status.UP, 0),       # second success: up (rise=2)
    ],
)
def test_each_pair(status, ok, streak, expected_status, expected_streak):
    after = Health(status, streak).observe(ok, Thresholds(rise=2, fall=3))
    assert (after.status, after.streak) == (expected_status, expected_streak)
    assert after.probed


def test_initial_state_is_explicit():
    assert Health.initial().up
    assert not Health.initial().probed
    assert not Health.initial(assume_up=False).up
    assert "assumed" in repr(Health.initial())


def test_thresholds_reject_zero():
    with pytest.raises(ValueError, match="rise and fall"):
        Thresholds(rise=0)


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_status_changes_only_after_enough_agreeing_results(results, rise, fall):
    th = Thresholds(rise=rise, fall=fall)
    health = Health.initial()
    history = []
    for ok in results:
        new = health.observe(ok, th)
        if new.status is not health.status:
            needed = rise if new.status is Status.UP else fall
            assert len(history) + 1 >= needed
            assert all(r == ok for r in [*history[len(history) - needed + 1:], ok])
            history = []
        else:
            history.append(ok)
        health = new
