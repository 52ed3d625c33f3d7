"""Passive outlier detection: consecutive failures eject a backend  [pure].

Mirrors Envoy's `consecutive_5xx` outlier detection with its defaults
(5 failures / 30 s base ejection / 10 % max ejected):
  * `consecutive_failures` failed requests in a row (connect error or 5xx) eject;
  * the ejection lasts base_ejection x (number of times ejected), capped at max_ejection;
  * each base_ejection spent un-ejected forgives one step of that multiplier
    (Envoy decrements it every interval while the host is healthy);
  * the pool never ejects more than max_ejected_fraction of its backends -- except
    that, as in Envoy, one backend may always be ejected (else a 10 % cap would
    disable detection in every pool smaller than ten);
  * an ejection ends when its time is up (EXPIRE, applied by the pool with `expire(now)`)
    or when active health checks vouch for the backend (UNEJECT; when, is the pool's
    `outlier.uneject` setting -- regional_lb/pool.py explains the choice).

The machine is the table TRANSITIONS over (state, event); the pool applies it. `now` is
monotonic seconds, passed in: nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class OState(enum.Enum):
    ACTIVE = "active"
    EJECTED = "ejected"


class OEvent(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    EXPIRE = "expire"           # now >= ejected_until
    UNEJECT = "uneject"         # active health checks vouch for the backend


class OAction(enum.Enum):
    RESET = "reset"             # failure streak back to 0
    COUNT = "count"             # streak + 1; eject at the threshold if the pool allows
    IGNORE = "ignore"           # late results of requests sent before the ejection
    RETURN = "return"           # back to ACTIVE, streak 0


TRANSITIONS: dict[tuple[OState, OEvent], OAction] = {
    (OState.ACTIVE, OEvent.SUCCESS): OAction.RESET,
    (OState.ACTIVE, OEvent.FAILURE): OAction.COUNT,
    (OState.ACTIVE, OEvent.EXPIRE): OAction.IGNORE,
    (OState.ACTIVE, OEvent.UNEJECT): OAction.IGNORE,
    (OState.EJECTED, OEvent.SUCCESS): OAction.IGNORE,
    (OState.EJECTED, OEvent.FAILURE): OAction.IGNORE,
    (OState.EJECTED, OEvent.EXPIRE): OAction.RETURN,
    (OState.EJECTED, OEvent.UNEJECT): OAction.RETURN,
}


UNEJECT_MODES = ("recovery", "success", "never")


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive_failures: int = 5       # 0 disables detection
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_fraction: float = 0.1
    uneject: str = "recovery"           # active health un-ejects: "recovery" | "success" | "never"

    def __post_init__(self) -> None:
        if self.uneject not in UNEJECT_MODES:
            raise ValueError(f"uneject must be one of {', '.join(UNEJECT_MODES)}")
        if self.consecutive_failures < 0 or self.base_ejection <= 0 or self.max_ejection < self.base_ejection:
            raise ValueError("need consecutive_failures >= 0 and 0 < base_ejection <= max_ejection")
        if not 0.0 <= self.max_ejected_fraction <= 1.0:
            raise ValueError("max_ejected_fraction must be within 0..1")

    def max_ejected(self, pool_size: int) -> int:
        """How many backends of a pool of `pool_size` may be ejected at once (at least one)."""
        if self.consecutive_failures == 0 or pool_size == 0:
            return 0
        return max(1, math.floor(self.max_ejected_fraction * pool_size + 1e-9))


class Outlier:
    """One backend's outlier state. `event()` returns True when the backend was just ejected."""

    __slots__ = ("ejected_until", "failures", "settings", "state", "times_ejected")

    def __init__(self, settings: OutlierSettings) -> None:
        self.settings = settings
        self.state = OState.ACTIVE
        self.failures = 0
        self.times_ejected = 0
        self.ejected_until: float | None = None     # when it ended, after a return (to forgive later)

    def ejected(self, now: float) -> bool:
        """Out of rotation at `now` (a query: the return itself is `expire`)."""
        return self.state is OState.EJECTED and self.ejected_until is not None and now < self.ejected_until

    def expire(self, now: float) -> float | None:
        """Apply EXPIRE if the ejection is over by `now`: the time it ended, else None."""
        if self.state is OState.EJECTED and self.ejected_until is not None and now >= self.ejected_until:
            ended = self.ejected_until
            self.event(OEvent.EXPIRE, now, may_eject=False)
            return ended
        return None

    def event(self, event: OEvent, now: float, *, may_eject: bool) -> bool:
        if event is OEvent.EXPIRE and (self.ejected_until is None or now < self.ejected_until):
            return False
        action = TRANSITIONS[(self.state, event)]
        if action is OAction.RESET:
            self.failures = 0
        elif action is OAction.RETURN:
            self.state, self.failures = OState.ACTIVE, 0
            if self.ejected_until is not None:      # cut short by UNEJECT: forgiveness counts from now
                self.ejected_until = min(self.ejected_until, now)
        elif action is OAction.COUNT:
            self.failures += 1
            threshold = self.settings.consecutive_failures
            if threshold and self.failures >= threshold and may_eject:
                self._eject(now)
                return True
        return False

    def _eject(self, now: float) -> None:
        s = self.settings
        if self.ejected_until is not None and self.times_ejected:
            forgiven = int(max(0.0, now - self.ejected_until) // s.base_ejection)
            self.times_ejected = max(0, self.times_ejected - forgiven)
        self.times_ejected += 1
        self.state = OState.EJECTED
        self.failures = 0
        self.ejected_until = now + min(s.max_ejection, s.base_ejection * self.times_ejected)

    def __repr__(self) -> str:
        if self.state is OState.EJECTED:
            return f"<Outlier ejected until {self.ejected_until} (x{self.times_ejected})>"
        return f"<Outlier active, {self.failures} failures>"
