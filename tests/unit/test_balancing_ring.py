"""The consistent-hash ring: stability, minimal movement, order independence, walking."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from regional_lb.balancing.ring import HashRing, RingCache, stable_hash

KEYS = [f"key-{i}" for i in range(3000)]


def mapping(ring: HashRing) -> dict[str, str | None]:
    return {k: ring.lookup(stable_hash(k)) for k in KEYS}


def test_stable_hash_is_not_salted_per_process() -> None:
    code = "from regional_lb.balancing.ring import stable_hash; print(stable_hash('hello'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "random", "PATH": ""}).stdout
    assert int(out) == stable_hash("hello") == stable_hash(b"hello")


def test_empty_ring_has_no_owner() -> None:
    ring = HashRing([])
    assert ring.lookup(123) is None
    assert list(ring.walk(5)) == []


def test_walk_yields_each_backend_once_starting_with_the_owner() -> None:
    ring = HashRing([(f"b{i}", 1) for i in range(5)], vnodes=20)
    for k in KEYS[:200]:
        order = list(ring.walk(stable_hash(k)))
        assert sorted(order) == [f"b{i}" for i in range(5)]
        assert order[0] == ring.lookup(stable_hash(k))


def test_walk_wraps_past_the_last_point() -> None:
    ring = HashRing([("a", 1), ("b", 1)], vnodes=3)
    assert ring.lookup(2**64 - 1) == ring.lookup(0)


@given(st.permutations([(f"backend-{i}", 1 + i % 3) for i in range(7)]))
@settings(max_examples=20, deadline=None)
def test_ring_does_not_depend_on_backend_order(members: list[tuple[str, int]]) -> None:
    reference = HashRing(sorted(members), vnodes=40)
    ring = HashRing(members, vnodes=40)
    for k in KEYS[:300]:
        assert ring.lookup(stable_hash(k)) == reference.lookup(stable_hash(k))


@given(n=st.integers(min_value=2, max_value=12), victim=st.integers(min_value=0, max_value=11),
       salt=st.text(max_size=4))
@settings(max_examples=25, deadline=None)
def test_removing_one_backend_moves_only_its_keys(n: int, victim: int, salt: str) -> None:
    ids = [f"{salt}srv{i}" for i in range(n)]
    gone = ids[victim % n]
    before = mapping(HashRing([(i, 1) for i in ids], vnodes=100))
    after = mapping(HashRing([(i, 1) for i in ids if i != gone], vnodes=100))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)          # nobody else's keys move
    assert len(moved) == sum(1 for k in KEYS if before[k] == gone)
    assert len(moved) / len(KEYS) < 2.2 / n               # ~1/n of the keys


@given(n=st.integers(min_value=1, max_value=12), salt=st.text(max_size=4))
@settings(max_examples=25, deadline=None)
def test_adding_one_backend_moves_about_one_nth_to_it(n: int, salt: str) -> None:
    ids = [f"{salt}srv{i}" for i in range(n)]
    before = mapping(HashRing([(i, 1) for i in ids], vnodes=100))
    after = mapping(HashRing([(i, 1) for i in [*ids, "newcomer"]], vnodes=100))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "newcomer" for k in moved)
    assert 0.3 / (n + 1) < len(moved) / len(KEYS) < 2.2 / (n + 1)


def test_walking_past_a_backend_equals_the_ring_without_it() -> None:
    full = HashRing([(f"b{i}", 1) for i in range(6)])
    without = HashRing([(f"b{i}", 1) for i in range(6) if i != 2])
    for k in KEYS[:500]:
        walked = next(b for b in full.walk(stable_hash(k)) if b != "b2")
        assert walked == without.lookup(stable_hash(k))


def test_weights_scale_the_share_of_keys() -> None:
    ring = HashRing([("heavy", 3), ("light", 1)])
    share = sum(1 for k in KEYS if ring.lookup(stable_hash(k)) == "heavy") / len(KEYS)
    assert 0.65 < share < 0.85


def test_ring_cache_reuses_rings_and_evicts_the_oldest() -> None:
    cache = RingCache(vnodes=4, size=2)
    a = cache.get([("x", 1), ("y", 1)])
    assert cache.get([("y", 1), ("x", 1)]) is a
    cache.get([("p", 1)])
    cache.get([("q", 1)])
    assert cache.get([("x", 1), ("y", 1)]) is not a
    assert cache.builds == 4
    assert "2 backends" in repr(a)


def reference_lookup(members: list[tuple[str, int]], vnodes: int, key_hash: int) -> str:
    """The slow, obvious ring: scan every point for the first one >= key_hash (else wrap)."""
    points = sorted((stable_hash(f"{b}#{i}"), b) for b, w in members for i in range(w * vnodes))
    return next((b for p, b in points if p >= key_hash), points[0][1])


@given(st.lists(st.tuples(st.text(min_size=1, max_size=6), st.integers(1, 3)), min_size=1, max_size=5,
                unique_by=lambda m: m[0]),
       st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_ring_matches_the_reference_scan(members: list[tuple[str, int]], hashes: list[int]) -> None:
    ring = HashRing(members, vnodes=5)
    for h in hashes:
        assert ring.lookup(h) == reference_lookup(members, 5, h)


def test_ring_validation_and_size() -> None:
    import pytest

    with pytest.raises(ValueError, match="vnodes"):
        HashRing([("a", 1)], vnodes=0)
    assert len(HashRing([("a", 1), ("b", 2), ("a", 1)])) == 2


def test_cache_reuses_a_superset_ring_and_walking_it_equals_the_exact_ring() -> None:
    cache = RingCache(vnodes=50)
    full = [(f"b{i}", 1) for i in range(6)]
    big = cache.get(full)
    smaller = [m for m in full if m[0] != "b3"]
    assert cache.get(smaller) is big                  # a backend went down: no rebuild
    assert cache.builds == 1
    exact = HashRing(smaller, vnodes=50)
    live = {b for b, _ in smaller}
    for k in KEYS[:500]:
        walked = next(b for b in big.walk(stable_hash(k)) if b in live)
        assert walked == exact.lookup(stable_hash(k))
    assert cache.get([("b0", 1)]) is not big          # too many extra backends: build the exact ring
    assert cache.get([*full, ("new", 1)]) is not big  # a new backend: rebuild
    assert cache.builds == 3
