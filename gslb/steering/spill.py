"""Capacity spill: where the clients of a region that is not eligible go  [pure].

When a client's first-choice region is down or drained, its clients are spread over the
eligible regions in proportion to their capacity, stably: weighted rendezvous hashing on the
client network (score = -ln(u) / capacity, u from a hash of network and region; lowest
wins). A given network always gets the same second choice, and when one more region fails
only the clients that were on it move.

The hash input is the client network's text as `ipaddress` writes it ("198.51.100.0/24",
"2001:db8::/48"); `network_text` writes the same from integers (the compiled miss path).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Mapping, Sequence


def network_text(version: int, value: int, prefix: int) -> str:
    """str(ip_network) of the /prefix network holding the address `value` (an int)."""
    bits = 32 if version == 4 else 128
    value = value >> (bits - prefix) << (bits - prefix)
    if version == 4:
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}/{prefix}"
    return f"{ipaddress.IPv6Address(value)}/{prefix}"


def _unit(key: str, region: str) -> float:
    digest = hashlib.blake2b(f"{key}|{region}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)      # in (0, 1)


def spread(key: str, candidates: Sequence[str], capacity: Mapping[str, float]) -> list[str]:
    """`candidates` ordered for the client network `key`; zero-capacity ones last, in order."""
    weighted = [c for c in candidates if capacity.get(c, 0.0) > 0]
    scored = sorted(weighted, key=lambda c: (-math.log(_unit(key, c)) / capacity[c], c))
    return scored + [c for c in candidates if capacity.get(c, 0.0) <= 0]


class Spreader:
    """`spread(key, candidates, capacity)[:count]` for fixed candidates and capacities, the same
    floats in the same order (the compiled miss path: the suffixes are encoded once, and one
    candidate is a `min`, not a sort)."""

    __slots__ = ("count", "rest", "weighted")

    def __init__(self, candidates: Sequence[str], capacity: Mapping[str, float], count: int) -> None:
        self.weighted = [(c, f"|{c}".encode(), capacity[c]) for c in candidates if capacity.get(c, 0.0) > 0]
        self.rest = tuple(c for c in candidates if capacity.get(c, 0.0) <= 0)
        self.count = count

    def first(self, key: str) -> tuple[str, ...]:
        data = key.encode()
        blake2b, log, from_bytes = hashlib.blake2b, math.log, int.from_bytes
        scored = [(-log((from_bytes(blake2b(data + suffix, digest_size=8).digest(), "big") + 1) / (2**64 + 1))
                   / weight, c) for c, suffix, weight in self.weighted]
        if self.count == 1 and scored:
            return (min(scored)[1],)
        scored.sort()
        return (tuple(c for _, c in scored) + self.rest)[: self.count]
