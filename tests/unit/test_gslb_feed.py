"""The GSLB's state feed (gslb/feed.py) and `workers:` in its config."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
import yaml

from gslb import feed
from gslb.common.configload import ConfigError
from gslb.config import load_config, parse_config, read_config
from gslb.latency_table import LatencyTable
from gslb.steering.base import RegionState
from tests.gslb_helpers import gslb_config


def test_region_states_travel_and_bad_ones_are_refused() -> None:
    states = {"eu": RegionState(up=False, drained=True), "us": RegionState(degraded=True)}
    message = feed.regions_message(states)
    assert feed.regions_of(message) == states
    config = feed.config_message(3, "text", "/etc/gslb.yaml", [("127.0.0.1", 53)], states)
    assert feed.regions_of(config) == states
    assert config["listen"] == [["127.0.0.1", 53]]
    for bad in ({"t": "regions"}, {"t": "regions", "states": {"eu": [True, False]}},
                {"t": "regions", "states": {"eu": [1, 0, 0]}}, {"t": "regions", "states": []}):
        with pytest.raises(feed.FeedError):
            feed.regions_of(bad)


def test_the_latency_table_travels_in_chunks_and_merges_whole() -> None:
    src = LatencyTable(max_networks=1000, max_age=60)
    for i in range(25):
        src.ingest(ipaddress.ip_network(f"10.0.{i}.0/24"), "eu", float(i), 100.0)
    chunks = list(feed.latency_snapshot(src, 110.0, per_message=10))
    assert [len(c["rows"]) for c in chunks] == [10, 10, 5]
    dst = LatencyTable(max_networks=1000, max_age=60)
    for c in chunks:
        dst.merge_rows(c["rows"], 210.0, {"eu"})
    assert len(dst) == 25
    assert dst.lookup(ipaddress.ip_address("10.0.7.9"), 215.0) == {"eu": 7.0}
    pushed = feed.pushed_rows({"measurements": [{"network": "10.1.0.0/24", "region": "eu", "rtt_ms": 3}]})
    assert dst.merge_rows(pushed, 300.0, {"eu"}) == 1


def _write(tmp_path: Path, workers: object) -> Path:
    doc = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    doc["workers"] = workers
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_workers_in_the_config(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, 3)).workers == 3
    assert load_config(_write(tmp_path, "auto")).workers == len(os.sched_getaffinity(0))
    doc = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(doc))
    assert load_config(tmp_path / "one.yaml").workers == 1
    for bad in (0, -1, "many", True, 5000):
        with pytest.raises(ConfigError, match="workers: expected"):
            load_config(_write(tmp_path, bad))


def test_a_worker_builds_the_very_text_its_supervisor_read(tmp_path: Path) -> None:
    path = _write(tmp_path, 2)
    config, text = read_config(path)
    path.write_text("changed: [")                       # the file changes after the supervisor read it
    again = parse_config(text, path)
    assert again.workers == 2
    assert again.geoip_database == config.geoip_database
    assert again.file == str(path)
    with pytest.raises(ConfigError, match="cannot read file"):
        read_config(tmp_path / "missing.yaml")


def test_a_tables_message_round_trips_and_a_malformed_one_is_refused() -> None:
    """(The workers no longer compile in turn: the supervisor compiles once and sends the file.)"""
    message = feed.tables_message("/run/gslb/tables-1.bin", ("/db.mmdb", 123, 1_733_000_000_000_000_000))
    assert feed.tables_of(json.loads(json.dumps(message))) == (
        "/run/gslb/tables-1.bin", ("/db.mmdb", 123, 1_733_000_000_000_000_000))
    for bad in ({"path": "", "source": ["/db", 1, 2]}, {"path": 7, "source": ["/db", 1, 2]},
                {"path": "a\0b", "source": ["/db", 1, 2]}, {"path": "x" * 5000, "source": ["/db", 1, 2]},
                {"path": "/t", "source": ["/db", 1]}, {"path": "/t", "source": ["/db", 1, True]},
                {"path": "/t", "source": [1, 1, 2]}, {"path": "/t", "source": "db"}, {"path": "/t"}):
        with pytest.raises(feed.FeedError, match="tables"):
            feed.tables_of({"t": "tables", **bad})


def test_the_workers_answers_merge_into_one_sample_and_bad_replies_are_refused() -> None:
    from gslb.status import AnswerSampler

    a, b = AnswerSampler(every=1, size=10), AnswerSampler(every=1, size=10)
    for i in range(6):
        (a if i % 2 else b).add(ipaddress.ip_address(f"10.0.0.{i}"), ("eu",), float(i))
    replies = [feed.answers_payload(a, {"eu": 3}, {}), feed.answers_payload(b, {"eu": 3, "us": 1}, {"www": 2})]
    sample, by_region, all_down = feed.merge_answers(replies, every=1, size=4)
    assert [str(c) for c, _r, _t in sample.samples] == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
    assert sample.seen == 6
    assert by_region == {"eu": 6, "us": 1}
    assert all_down == {"www": 2}
    for bad in ({"samples": [["not an address", [], 1.0]], "seen": 0, "by_region": {}, "all_down": {}},
                {"samples": [], "seen": 0, "by_region": {"eu": "x"}, "all_down": {}}, {"samples": []}):
        with pytest.raises(feed.FeedError):
            feed.merge_answers([bad], every=1, size=4)
