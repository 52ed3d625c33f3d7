"""Policy `latency`: lowest fresh measured RTT from the client network first  [pure].

Regions without a fresh measurement follow, nearest first (or in the default order when the
client has no location); with no measurement at all this is the `geo` policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def rank(rtts: Mapping[str, float], fallback: Sequence[str]) -> list[str]:
    """Measured regions by RTT (ties by name), then the others in `fallback` order."""
    measured = sorted((r for r in fallback if r in rtts), key=lambda r: (rtts[r], r))
    return measured + [r for r in fallback if r not in rtts]
