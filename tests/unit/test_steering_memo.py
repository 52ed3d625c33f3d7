"""gslb.steering.memo.Memo: bounded, returns what was put, keeps what is in use."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.steering.memo import Memo

OPS = st.lists(st.tuples(st.sampled_from(["put", "get", "clear"]), st.integers(0, 40), st.integers()),
               max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), OPS)
def test_never_holds_more_than_its_limit_and_never_returns_a_stale_value(limit, ops) -> None:
    memo: Memo[int, int] = Memo(limit)
    last: dict[int, int] = {}               # the reference: what was put last under each key
    for op, key, value in ops:
        if op == "put":
            memo.put(key, value)
            last[key] = value
        elif op == "get":
            got = memo.get(key)
            assert got is None or got == last[key]
        else:
            memo.clear()
            assert not memo
        assert len(memo) <= limit
        assert (key in memo) == (memo.get(key) is not None)


def test_an_entry_in_use_survives_a_flood_of_new_keys() -> None:
    memo: Memo[int, str] = Memo(100)
    memo.put(-1, "hot")
    for key in range(10_000):
        memo.put(key, "cold")
        if key % 40 == 0:                   # used more often than the memo turns over (every 50 puts)
            assert memo.get(-1) == "hot"
    assert memo.get(-1) == "hot"
    assert len(memo) <= 100
    assert memo.turnovers > 100


def test_an_entry_not_used_for_two_turnovers_is_gone() -> None:
    memo: Memo[int, str] = Memo(10)
    memo.put(-1, "x")
    for key in range(10):
        memo.put(key, "y")
    assert memo.get(-1) is None
    assert "turn-overs" in repr(memo)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Memo(0)
