"""PeakEwma.observe (inlined for the per-request path) against the obvious formulation."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from regional_lb.load import PeakEwma

times = st.one_of(st.floats(-1.0, 1e6), st.just(math.nan))


def reference(ewma: PeakEwma, rtt: float, now: float) -> float:
    """observe as first written: peak jump, else decay toward the sample; the stamp never goes back."""
    rtt = max(0.0, rtt)
    if rtt > ewma.estimate:
        ewma.estimate = rtt
    else:
        w = math.exp(-max(0.0, now - ewma.stamp) / ewma.decay)
        ewma.estimate = ewma.estimate * w + rtt * (1.0 - w)
    ewma.stamp = max(ewma.stamp, now)
    return ewma.estimate


@given(st.lists(st.tuples(st.one_of(st.floats(-1.0, 5.0), st.just(math.nan)), times), max_size=30),
       st.floats(0.1, 100.0), st.floats(0.0, 1.0))
def test_observe_matches_the_reference(samples: list[tuple[float, float]], decay: float, start: float) -> None:
    fast, slow = PeakEwma(decay=decay, default_rtt=start), PeakEwma(decay=decay, default_rtt=start)
    for rtt, now in samples:
        got, want = fast.observe(rtt, now), reference(slow, rtt, now)
        assert (got, fast.estimate, fast.stamp) == (want, slow.estimate, slow.stamp)
