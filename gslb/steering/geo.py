"""Policy `geo`: nearest region first, by great-circle distance from the client  [pure]."""

from __future__ import annotations

from collections.abc import Sequence

from gslb.steering.base import Region
from gslb.steering.distance import great_circle_km


def rank(regions: Sequence[Region], lat: float, lon: float) -> list[tuple[str, float]]:
    """(region, km) nearest first; ties by name so the order is total."""
    return sorted(((r.name, great_circle_km(lat, lon, r.lat, r.lon)) for r in regions),
                  key=lambda item: (item[1], item[0]))
