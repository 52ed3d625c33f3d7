"""The GSLB's typed seams (issue 11): metrics read typed counters, a reload closes the locator it
replaces through GeoLocator.close, and a worker's "ready" names the UDP listeners it bound, which
the supervisor's /api/status counts (gslb/feed.py)."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from gslb import feed
from gslb.app import GslbServer
from gslb.config import load_config
from gslb.geoip import FakeLocator, Location, MaxMindLocator, Place
from gslb.metrics import GslbCollector
from tests.gslb_helpers import gslb_config


def _config_file(tmp: Path, **dns: Any) -> Path:
    doc = gslb_config(tmp, dns_port=5300, admin_port=8000, lbs=None)
    doc["dns"].update(dns)
    path = tmp / "gslb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _scrape(server: GslbServer) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GslbCollector(server))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("rrl", [False, True])
def test_dns_families_are_always_there_and_read_the_typed_counters(tmp_path: Path, rrl: bool) -> None:
    server = GslbServer(load_config(_config_file(tmp_path, rrl={"enabled": rrl})), locator=FakeLocator())
    fresh = _scrape(server)
    for sample in ('gslb_dns_dropped_total{reason="rate_limited"}', 'gslb_dns_cookies_total{result="valid"}',
                   'gslb_dns_cookies_total{result="other"}', "gslb_dns_nsid_total", "gslb_dns_cache_entries",
                   "gslb_dns_cache_bytes", "gslb_dns_cache_clears_total",
                   'gslb_dns_rrl_limited_total{action="dropped"}', "gslb_dns_rrl_buckets"):
        assert fresh[sample] == 0.0, sample
    stats = server.responder.stats
    stats.cookies, stats.cookies_valid, stats.nsid = 7, 3, 2
    stats.cache_entries, stats.cache_bytes, stats.cache_clears = 5, 4096, 1
    server.rrl_stats.dropped = 9
    counted = _scrape(server)
    assert counted['gslb_dns_cookies_total{result="valid"}'] == 3
    assert counted['gslb_dns_cookies_total{result="other"}'] == 4
    assert counted["gslb_dns_nsid_total"] == 2
    assert counted["gslb_dns_cache_entries"] == 5
    assert counted["gslb_dns_cache_bytes"] == 4096
    assert counted["gslb_dns_cache_clears_total"] == 1
    assert counted['gslb_dns_dropped_total{reason="rate_limited"}'] == 9
    assert counted['gslb_dns_rrl_limited_total{action="dropped"}'] == 9


class ClosingLocator(FakeLocator):
    def __init__(self) -> None:
        super().__init__({"10.0.0.0/8": Place(50.0, 8.0, "DE", "EU")})
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


async def test_a_reload_to_another_database_closes_the_locator_it_replaces(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    old = ClosingLocator()
    server = GslbServer(load_config(path), locator=old)
    await server.reload()                               # the same database: the same locator, open
    assert server.locator is old
    assert old.closed == 0
    doc = yaml.safe_load(path.read_text())
    moved = tmp_path / "moved.mmdb"
    shutil.copy(doc["geoip"]["database"], moved)
    doc["geoip"]["database"] = str(moved)
    path.write_text(yaml.safe_dump(doc))
    await server.reload()
    assert old.closed == 1
    assert isinstance(server.locator, MaxMindLocator)
    assert server.locator.path == moved
    server.locator.close()


def test_locators_that_hold_nothing_close_as_a_no_op() -> None:
    locator = FakeLocator({"10.0.0.0/8": Place(1.0, 2.0)})
    locator.close()
    found = locator.locate(ipaddress.ip_address("10.1.2.3"))
    assert isinstance(found, Location)
    assert found.lat == 1.0


def test_a_ready_message_names_the_udp_listeners_and_they_are_checked() -> None:
    rows = [{"address": ["127.0.0.1", 53], "reply_source": "bound"},
            {"address": ["::", 53, 0, 0], "reply_source": "pktinfo"}]
    message = feed.ready_message(1, 4242, rows)
    assert message == {"t": "ready", "worker": 1, "pid": 4242, "udp": rows}
    assert feed.udp_listeners_of(message) == rows
    assert feed.udp_listeners_of(feed.ready_message(0, 1, [])) == []
    for bad in ({"t": "ready"}, {"udp": {}}, {"udp": ["127.0.0.1"]},
                {"udp": [{"address": ["127.0.0.1", 53], "reply_source": "elsewhere"}]},
                {"udp": [{"address": ["127.0.0.1"], "reply_source": "bound"}]},
                {"udp": [{"address": ["127.0.0.1", "53"], "reply_source": "bound"}]},
                {"udp": [{"address": ["127.0.0.1", True], "reply_source": "bound"}]},
                {"udp": [{"address": [1, 53], "reply_source": "bound"}]},
                {"udp": [{"address": ["::1", 53, 0, 0, 0], "reply_source": "bound"}]},
                {"udp": [{"reply_source": "bound"}]},
                {"udp": [{"address": ["127.0.0.1", 53], "reply_source": "bound"}] * (feed.MAX_LISTENERS + 1)}):
        with pytest.raises(feed.FeedError, match="ready"):
            feed.udp_listeners_of(bad)


def test_listeners_are_counted_once_per_worker_that_serves_them() -> None:
    v4 = {"address": ["127.0.0.1", 53], "reply_source": "bound"}
    any6 = {"address": ["::", 53, 0, 0], "reply_source": "pktinfo"}
    assert feed.count_listeners([]) == []
    assert feed.count_listeners([[v4, any6], [v4, any6, v4], [any6]]) == [
        {"address": ["127.0.0.1", 53], "reply_source": "bound", "workers": 2},
        {"address": ["::", 53, 0, 0], "reply_source": "pktinfo", "workers": 3}]
    # the same address with another reply source is another row
    bound6 = {"address": ["::", 53, 0, 0], "reply_source": "bound"}
    assert [r["workers"] for r in feed.count_listeners([[any6], [bound6]])] == [1, 1]
