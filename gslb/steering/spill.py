"""Capacity spill: where the clients of a region that is not eligible go  [pure].

When a client's first-choice region is down or drained, its clients are spread over the
eligible regions in proportion to their capacity, stably: weighted rendezvous hashing on the
client network (score = -ln(u) / capacity, u from a hash of network and region; lowest
wins). A given network always gets the same second choice, and when one more region fails
only the clients that were on it move.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence


def _unit(key: str, region: str) -> float:
    digest = hashlib.blake2b(f"{key}|{region}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)      # in (0, 1)


def spread(key: str, candidates: Sequence[str], capacity: Mapping[str, float]) -> list[str]:
    """`candidates` ordered for the client network `key`; zero-capacity ones last, in order."""
    weighted = [c for c in candidates if capacity.get(c, 0.0) > 0]
    scored = sorted(weighted, key=lambda c: (-math.log(_unit(key, c)) / capacity[c], c))
    return scored + [c for c in candidates if capacity.get(c, 0.0) <= 0]
