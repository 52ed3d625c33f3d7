"""Policy `weighted`: weighted random order among the eligible regions  [pure; rng injected].

Each query draws afresh (no hashing on the client network), so the answer is not cached
(`cache_for` 0) and its ECS scope is 0: the split then holds per query, whatever the mix of
resolvers. Weighted sampling without replacement gives the order for `count` > 1.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


def order(candidates: Sequence[str], weights: Mapping[str, float], rng: random.Random) -> list[str]:
    """`candidates` in a random order where each pick is proportional to its weight.

    Zero-weight candidates come last (in the given order): they are used only when nothing
    with weight is left, so `count` can still be met.
    """
    pool = [c for c in candidates if weights.get(c, 0.0) > 0]
    out: list[str] = []
    while pool:
        total = sum(weights[c] for c in pool)
        x = rng.random() * total
        for i, c in enumerate(pool):
            x -= weights[c]
            if x < 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return out + [c for c in candidates if weights.get(c, 0.0) <= 0]
