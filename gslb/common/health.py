"""The health state machine shared by GSLB region probes and regional-LB backend checks  [pure].

A target is UP or DOWN. It changes state only after `rise` successes in a row
(DOWN -> UP) or `fall` failures in a row (UP -> DOWN): hysteresis, as in
HAProxy's `rise`/`fall`. The state before the first probe result is explicit
(`Health.initial(assume_up=...)`).

The machine is the table `TRANSITIONS`: for each (status, probe result) it says
whether the result *agrees* with the status (the streak of disagreeing results
is reset) or *disagrees* (the streak grows, and at the threshold the status
flips). Nothing here reads a clock or a socket; callers pass results in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    UP = "up"
    DOWN = "down"


class _Effect(enum.Enum):
    AGREE = "agree"        # the result confirms the current status: streak back to 0
    DISAGREE = "disagree"  # the result argues for the other status: streak + 1


TRANSITIONS: dict[tuple[Status, bool], tuple[_Effect, Status]] = {
    # (status, probe ok) -> (effect, status the streak leads to)
    (Status.UP, True): (_Effect.AGREE, Status.UP),
    (Status.UP, False): (_Effect.DISAGREE, Status.DOWN),
    (Status.DOWN, True): (_Effect.DISAGREE, Status.UP),
    (Status.DOWN, False): (_Effect.AGREE, Status.DOWN),
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    rise: int = 2
    fall: int = 3

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be >= 1")

    def needed(self, target: Status) -> int:
        return self.rise if target is Status.UP else self.fall


@dataclass(frozen=True, slots=True)
class Health:
    """Current status plus the number of consecutive results that argue against it."""

    status: Status
    streak: int = 0
    probed: bool = False  # False until the first result: the status is the assumed one

    @classmethod
    def initial(cls, *, assume_up: bool = True) -> Health:
        return cls(Status.UP if assume_up else Status.DOWN)

    @property
    def up(self) -> bool:
        return self.status is Status.UP

    def observe(self, ok: bool, thresholds: Thresholds) -> Health:
        """The state after one probe result."""
        effect, target = TRANSITIONS[(self.status, ok)]
        if effect is _Effect.AGREE:
            return Health(self.status, 0, True)
        streak = self.streak + 1
        if streak >= thresholds.needed(target):
            return Health(target, 0, True)
        return Health(self.status, streak, True)

    def __repr__(self) -> str:
        extra = f", {self.streak} toward flip" if self.streak else ""
        assumed = "" if self.probed else ", assumed"
        return f"<Health {self.status.value}{extra}{assumed}>"
