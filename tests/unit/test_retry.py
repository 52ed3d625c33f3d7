"""may_retry and the retry budget."""

from __future__ import annotations

import pytest

from regional_lb.retry import RetryBudget, RetrySettings, may_retry


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "put", "CONNECT"])
def test_connect_failure_is_always_retryable(method: str) -> None:
    assert may_retry(method, sent=False, body_streamed=True)


@pytest.mark.parametrize(("method", "streamed", "ok"), [
    ("GET", False, True), ("HEAD", False, True), ("PUT", False, True), ("DELETE", False, True),
    ("OPTIONS", False, True), ("get", False, True), ("PUT", True, False), ("POST", False, False),
    ("PATCH", False, False), ("CONNECT", False, False)])
def test_after_sending_only_replayable_idempotent_requests(method: str, streamed: bool, ok: bool) -> None:
    assert may_retry(method, sent=True, body_streamed=streamed) is ok


def test_budget_allows_min_retries_when_quiet() -> None:
    b = RetryBudget(ratio=0.2, min_retries=3)
    for _ in range(3):
        assert b.can_retry(inflight=1)
        b.retry_started()
    assert not b.can_retry(inflight=1)
    assert b.denied == 1
    b.retry_finished()
    assert b.can_retry(inflight=1)


def test_budget_scales_with_inflight() -> None:
    b = RetryBudget(ratio=0.2, min_retries=0)
    for _ in range(20):
        b.retry_started()
    assert not b.can_retry(inflight=100)
    assert b.can_retry(inflight=105)
    for _ in range(50):
        b.retry_finished()
    assert b.active == 0
    assert "0 active" in repr(b)


def test_retry_settings() -> None:
    s = RetrySettings()
    assert (s.attempts, s.budget_ratio, s.min_retries) == (2, 0.2, 3)
    assert s.budget().limit(100) == 20
    with pytest.raises(ValueError, match="attempts"):
        RetrySettings(attempts=0)
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=-1)
