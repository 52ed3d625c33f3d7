"""The latency table carried to a starting peer (gslb/latency_table.py export_rows / merge_rows)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from gslb.latency_table import LatencyTable

NET = ipaddress.ip_network("198.51.100.0/24")
NET6 = ipaddress.ip_network("2001:db8:5::/48")


def test_rows_round_trip_with_ages_and_newer_measurements_win() -> None:
    source = LatencyTable(max_age=60)
    source.ingest(NET, "eu", 10.0, now=100.0)
    source.ingest(NET, "us", 80.0, now=130.0)
    source.ingest(NET6, "eu", 5.0, now=50.0)          # 90 s old at 140: not exported
    rows = json.loads(json.dumps(list(source.export_rows(140.0))))
    assert rows == [["198.51.100.0/24", [["eu", 10.0, 40.0], ["us", 80.0, 10.0]]]]
    target = LatencyTable(max_age=60)
    target.ingest(NET, "us", 70.0, now=1005.0)        # pushed by an edge after the peer's measurement
    assert target.merge_rows(rows, 1010.0, {"eu", "us"}) == 1
    assert target.lookup(ipaddress.ip_address("198.51.100.7"), 1010.0) == {"eu": 10.0, "us": 70.0}
    assert target.lookup_detail(ipaddress.ip_address("198.51.100.7"), 1010.0)[1] == 1010.0 - 40.0 + 60.0
    assert target.merge_rows(rows, 1010.0, {"us"}) == 0        # eu unknown here, us older than held


def test_rows_are_lazy_over_a_snapshot() -> None:
    table = LatencyTable()
    table.ingest(NET, "eu", 1.0, now=0.0)
    rows = table.export_rows(0.0)
    table.ingest(NET6, "eu", 2.0, now=0.0)            # after the export started: not in it
    assert [r[0] for r in rows] == ["198.51.100.0/24"]


@pytest.mark.parametrize(("rows", "message"), [
    ({"x": 1}, "networks: expected a list"),
    ([["198.51.100.0/24"]], r"networks\[3\]: expected \[network"),
    ([[5, []]], r"networks\[3\]: expected \[network"),
    ([["198.51.0.0/16", []]], r"networks\[3\]\[0\]: network 198.51.0.0/16 is wider than /24"),
    ([["nonsense", []]], r"networks\[3\]\[0\]"),
    ([["198.51.100.0/24", [["eu", -1, 0]]]], r"networks\[3\]\[1\]\[0\]: expected \[region, rtt_ms >= 0"),
    ([["198.51.100.0/24", [["eu", 1, float("nan")]]]], r"networks\[3\]\[1\]\[0\]"),
    ([["198.51.100.0/24", [["", 1, 0]]]], r"networks\[3\]\[1\]\[0\]"),
    ([["198.51.100.0/24", [["eu", True, 0]]]], r"networks\[3\]\[1\]\[0\]"),
])
def test_bad_rows_are_refused_naming_the_row_and_nothing_is_taken(rows: Any, message: str) -> None:
    table = LatencyTable()
    good = ["203.0.113.0/24", [["eu", 1.0, 0.0]]]
    with pytest.raises(ValueError, match=message):
        table.merge_rows([good, *rows] if isinstance(rows, list) else rows, 0.0, offset=2)
    assert len(table) == 0


def test_a_row_reads_at_most_max_regions_measurements() -> None:
    table = LatencyTable(max_regions=2)
    row = ["198.51.100.0/24", [[f"r{i}", 1.0, 0.0] for i in range(1000)] + ["junk past the limit"]]
    assert table.merge_rows([row], 0.0) == 2
