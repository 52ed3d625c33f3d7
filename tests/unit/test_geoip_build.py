"""geo_data/build.py: the pure folding, merging and CIDR cutting steps (the download is not run)."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location(
    "geo_build", Path(__file__).resolve().parents[2] / "geo_data" / "build.py")
assert _spec is not None
assert _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

A = (1.0, 2.0, "FR", "EU")
B = (3.0, 4.0, "DE", "EU")


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def test_snap_rounds_to_the_grid() -> None:
    assert build.snap(48.85) == 49.0
    assert build.snap(-0.4) == 0.0
    assert build.snap(None) is None


def test_fold_takes_the_majority_of_addresses() -> None:
    rows = [(4, v4("1.2.3.0"), v4("1.2.3.127"), A),      # 128 addresses
            (4, v4("1.2.3.128"), v4("1.2.3.191"), B),    # 64
            (4, v4("1.2.3.192"), v4("1.2.3.255"), B),    # 64: a tie, the lowest address wins
            (4, v4("1.2.4.0"), v4("1.2.5.255"), B)]      # already /23: kept
    assert build.fold(rows) == [(4, v4("1.2.3.0"), v4("1.2.3.255"), A),
                                (4, v4("1.2.4.0"), v4("1.2.5.255"), B)]


def test_merge_joins_adjacent_identical_ranges_only() -> None:
    rows = [(4, 0, 9, A), (4, 10, 19, A), (4, 20, 29, B), (4, 31, 40, B), (6, 41, 50, B)]
    assert build.merge(rows) == [(4, 0, 19, A), (4, 20, 29, B), (4, 31, 40, B), (6, 41, 50, B)]


def test_cidrs_known_case() -> None:
    cut = build.cidrs(v4("1.2.3.4"), v4("1.2.3.11"), 32)
    assert [str(ipaddress.ip_network((n, p))) for n, p in cut] == ["1.2.3.4/30", "1.2.3.8/30"]
    assert build.cidrs(0, 2**32 - 1, 32) == [(0, 0)]


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**20))
def test_cidrs_cover_the_range_exactly(first: int, length: int) -> None:
    last = min(first + length, 2**32 - 1)
    cut = build.cidrs(first, last, 32)
    position = first
    for net, prefix in cut:
        assert net == position
        assert net % (1 << (32 - prefix)) == 0
        position = net + (1 << (32 - prefix))
    assert position == last + 1


def test_record_shape() -> None:
    assert build.record(A) == {"location": {"latitude": 1.0, "longitude": 2.0},
                               "country": {"iso_code": "FR"}, "continent": {"code": "EU"}}
    assert build.record((None, None, "FR", None)) == {"country": {"iso_code": "FR"}}
