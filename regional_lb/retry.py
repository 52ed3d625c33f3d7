"""When the proxy may try another backend  [pure].

* `may_retry`: a connect failure (nothing sent) is always safe to retry; once the
  request was sent, only an idempotent method (RFC 9110 9.2.2) whose body was buffered
  (so it can be replayed) may be retried -- as Envoy's `connect-failure` /
  `reset` + idempotent rules, and HAProxy's `retry-on` + `retries` defaults.
* `RetryBudget`: Envoy's retry budget. Retries in flight may not exceed
  max(min_retries, ratio x requests in flight), so a sick pool does not get its load
  multiplied by retries (a retry storm) while a quiet pool can still retry.
"""

from __future__ import annotations

from dataclasses import dataclass

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def may_retry(method: str, *, sent: bool, body_streamed: bool) -> bool:
    """Whether a failed try may be repeated on another backend.

    sent: any byte of the request reached the backend (False: connect failure).
    body_streamed: the body was streamed through, not buffered, so it cannot be replayed.
    """
    if not sent:
        return True
    return method.upper() in IDEMPOTENT_METHODS and not body_streamed


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """`attempts`: total tries per request including the first (2 = at most one retry; 1 = none)."""

    attempts: int = 2
    budget_ratio: float = 0.2
    min_retries: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.budget_ratio < 0 or self.min_retries < 0:
            raise ValueError("need attempts >= 1, budget_ratio >= 0, min_retries >= 0")

    def budget(self) -> RetryBudget:
        return RetryBudget(self.budget_ratio, self.min_retries)


class RetryBudget:
    """Counts retries in flight; `can_retry(inflight)` says whether one more fits the budget."""

    def __init__(self, ratio: float = 0.2, min_retries: int = 3) -> None:
        if ratio < 0 or min_retries < 0:
            raise ValueError("ratio and min_retries must be >= 0")
        self.ratio = ratio
        self.min_retries = min_retries
        self.active = 0
        self.denied: int = 0        # retries refused by the budget (rlb_retry_budget_denied, read at scrape time)
        self.started = 0

    def limit(self, inflight: int) -> float:
        return max(float(self.min_retries), self.ratio * max(0, inflight))

    def can_retry(self, inflight: int) -> bool:
        """inflight: requests in flight to the pool (first tries and retries)."""
        ok = self.active < self.limit(inflight)
        if not ok:
            self.denied += 1
        return ok

    def retry_started(self) -> None:
        self.active += 1
        self.started += 1

    def retry_finished(self) -> None:
        self.active = max(0, self.active - 1)

    def __repr__(self) -> str:
        return (f"<RetryBudget {self.active} active, ratio={self.ratio}, min={self.min_retries}, "
                f"denied={self.denied}>")
