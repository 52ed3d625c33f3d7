"""Policy `failover`: the configured order; the first eligible region wins  [pure]."""

from __future__ import annotations

from collections.abc import Sequence


def rank(regions: Sequence[str]) -> list[str]:
    return list(regions)
