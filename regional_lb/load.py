"""Load measurement: peak-EWMA response time  [pure].

As tower's `PeakEwma`, Finagle's and linkerd's: the estimate jumps straight up to a
latency above it (the *peak*), and otherwise moves toward each new sample, and decays
toward zero while no samples arrive, with weight exp(-elapsed / decay). Reading it
decays it too, so a backend that was slow a minute ago is tried again. The estimate
starts at `default_rtt` (a new backend is neither free nor shunned). `now` is passed in.
"""

from __future__ import annotations

import math


class PeakEwma:
    __slots__ = ("decay", "estimate", "stamp")

    def __init__(self, *, decay: float = 10.0, default_rtt: float = 0.05, now: float = 0.0) -> None:
        if decay <= 0:
            raise ValueError("decay must be > 0")
        self.decay = decay
        self.estimate = default_rtt
        self.stamp = now

    def _decayed(self, now: float, sample: float) -> float:
        elapsed = max(0.0, now - self.stamp)
        w = math.exp(-elapsed / self.decay)
        return self.estimate * w + sample * (1.0 - w)

    def observe(self, rtt: float, now: float) -> float:
        """Fold in one response time (seconds). (Once per proxied request: `_decayed` inlined.)"""
        if not rtt >= 0.0:             # negative or NaN: 0, as max(0.0, rtt)
            rtt = 0.0
        estimate = self.estimate
        stamp = self.stamp
        if rtt > estimate:
            estimate = rtt
        else:
            elapsed = now - stamp
            w = math.exp(-elapsed / self.decay) if elapsed > 0.0 else 1.0
            estimate = estimate * w + rtt * (1.0 - w)
        self.estimate = estimate
        if now > stamp:
            self.stamp = now
        return estimate

    def value(self, now: float) -> float:
        """The estimate decayed to `now` (what a picker should see)."""
        return self._decayed(now, 0.0)

    def __repr__(self) -> str:
        return f"<PeakEwma {self.estimate * 1000:.1f}ms decay={self.decay}s>"
