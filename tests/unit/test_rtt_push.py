"""LatencyPusher against a fake GSLB admin API on loopback, and with the GSLB unreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gslb.common.configload import ConfigError, Section
from regional_lb.latency_push import LatencyPusher, LatencyPushSettings, ingest_url, load_latency_push
from regional_lb.rtt import RttAggregator
from tests.redis_helpers import free_port


@dataclass
class FakeGslb:
    url: str
    batches: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    status: int = 200
    got: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def gslb() -> AsyncIterator[FakeGslb]:
    port = free_port()
    fake = FakeGslb(url=f"http://127.0.0.1:{port}")

    async def ingest(request: web.Request) -> web.Response:
        fake.auth.append(request.headers.get("Authorization"))
        if fake.status != 200:
            return web.json_response({"error": "nope"}, status=fake.status)
        fake.batches.append(await request.json())
        fake.got.set()
        return web.json_response({"accepted": len(fake.batches[-1]["measurements"])})

    app = web.Application()
    app.router.add_post("/api/latency", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield fake
    await runner.cleanup()


class FakeTransport:
    """Stands for a client connection; the fake RTT source reads `rtt` from it."""

    def __init__(self, rtt: float | None) -> None:
        self.rtt = rtt


def fake_rtt(transport: FakeTransport) -> float | None:
    return transport.rtt


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


def test_ingest_url() -> None:
    assert ingest_url("http://127.0.0.1:8053") == "http://127.0.0.1:8053/api/latency"
    assert ingest_url("http://127.0.0.1:8053/") == "http://127.0.0.1:8053/api/latency"
    assert ingest_url("https://gslb/x/api/latency") == "https://gslb/x/api/latency"
    with pytest.raises(ValueError, match="not a URL"):
        ingest_url("gslb:8053")


async def test_pushes_medians_with_token_in_chunks(gslb: FakeGslb) -> None:
    pusher = LatencyPusher(RttAggregator(), region="ap-northeast", urls=[gslb.url], token="demo-token",
                           rtt_source=fake_rtt, clock=Clock(), max_batch=2)
    try:
        for rtt in (20.0, 30.0, 25.0):
            pusher.observe(FakeTransport(rtt), "175.45.176.9")
        pusher.observe(FakeTransport(None), "175.45.176.10")          # no estimate: ignored
        pusher.observe(FakeTransport(80.0), "2001:db8::1")
        pusher.observe(FakeTransport(5.0), "10.1.1.1")
        assert await pusher.push_once() == 1
        assert await pusher.push_once() == 0                          # nothing new: nothing sent
    finally:
        await pusher.close()
    assert gslb.auth == ["Bearer demo-token", "Bearer demo-token"]
    assert [len(b["measurements"]) for b in gslb.batches] == [2, 1]
    assert all(set(b) == {"measurements"} for b in gslb.batches)     # what gslb's ingest_batch accepts
    sent = {m["network"]: m for b in gslb.batches for m in b["measurements"]}
    assert sent["175.45.176.0/24"] == {"network": "175.45.176.0/24", "region": "ap-northeast", "rtt_ms": 25.0}
    assert sent["2001:db8::/48"]["rtt_ms"] == 80.0
    assert pusher.stats["measurements_sent"] == 3
    assert pusher.stats["observations"] == 5


async def test_counts_on_request(gslb: FakeGslb) -> None:
    pusher = LatencyPusher(RttAggregator(), region="us-east", urls=[gslb.url], token="t",
                           rtt_source=fake_rtt, clock=Clock(), send_counts=True)
    try:
        for rtt in (10.0, 12.0):
            pusher.observe(FakeTransport(rtt), "1.2.3.4")
        assert await pusher.push_once() == 1
    finally:
        await pusher.close()
    assert gslb.batches == [{"region": "us-east", "measurements": [
        {"network": "1.2.3.0/24", "region": "us-east", "rtt_ms": 11.0, "count": 2}]}]


def test_batches_are_what_the_gslb_ingests() -> None:
    """The payload passes the GSLB's own validation (gslb/latency_table.py), when it exists."""
    latency_table = pytest.importorskip("gslb.latency_table")
    pusher = LatencyPusher(RttAggregator(), region="eu-central", urls=["http://127.0.0.1:1"], token=None,
                           rtt_source=fake_rtt, clock=Clock())
    for i in range(5):
        pusher.observe(FakeTransport(10.0 + i), f"81.169.{i}.7")
    pusher.observe(FakeTransport(3.0), "2001:db8:5::1")
    (chunk,) = pusher._payload_chunks(pusher.aggregator.drain_batch(Clock.now))
    table = latency_table.LatencyTable(max_networks=100, max_age=600)
    assert table.ingest_batch(chunk, 0.0, {"eu-central"}) == 6


async def test_unreachable_gslb_is_logged_once_and_never_raises(gslb: FakeGslb,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pusher = LatencyPusher(RttAggregator(), region="us-east", urls=[dead, gslb.url], token="t",
                           rtt_source=fake_rtt, clock=Clock(), timeout=1.0)
    caplog.set_level(logging.WARNING, logger="regional_lb.latency_push")
    try:
        for _ in range(3):
            pusher.observe(FakeTransport(12.0), "1.2.3.4")
            assert await pusher.push_once() == 1                      # the live GSLB still gets it
        assert pusher.unreachable == {dead + "/api/latency"}
        assert pusher.stats["push_errors"] == 3
        assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
        assert len(gslb.batches) == 3
        # a GSLB that refuses the batch counts as failing too, then recovers
        gslb.status = 401
        pusher.observe(FakeTransport(12.0), "1.2.3.4")
        assert await pusher.push_once() == 0
        assert len(pusher.unreachable) == 2
        gslb.status = 200
        pusher.observe(FakeTransport(12.0), "1.2.3.4")
        assert await pusher.push_once() == 1
        assert pusher.unreachable == {dead + "/api/latency"}
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        await pusher.close()


async def test_rtt_source_errors_are_swallowed() -> None:
    def broken(_transport: object) -> float | None:
        raise OSError("socket gone")

    pusher = LatencyPusher(RttAggregator(), region="x", urls=["http://127.0.0.1:1"], token=None,
                           rtt_source=broken)
    pusher.observe(object(), "1.2.3.4")
    assert len(pusher.aggregator) == 0
    await pusher.close()


async def test_background_loop_pushes_and_stops_with_the_app(gslb: FakeGslb) -> None:
    pusher = LatencyPusher(RttAggregator(), region="eu-central", urls=[gslb.url], token="t",
                           rtt_source=fake_rtt, interval=0.05)
    app = web.Application()
    app.cleanup_ctx.append(pusher.cleanup_ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        pusher.observe(FakeTransport(33.0), "8.8.8.8")
        await asyncio.wait_for(gslb.got.wait(), timeout=5)
    finally:
        await runner.cleanup()
    assert gslb.batches[0]["measurements"][0]["network"] == "8.8.8.0/24"
    assert pusher._task is None


def test_load_latency_push_settings(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    root = Section.from_yaml_text(
        "latency_push:\n  urls: ['http://10.0.0.53:8053', 'https://g2/x/api/latency']\n  token_file: token\n"
        "  interval: 5s\n  window: 2m\n", file=str(tmp_path / "edge.yaml"))
    settings = load_latency_push(root.section("latency_push"))
    assert settings == LatencyPushSettings(urls=("http://10.0.0.53:8053/api/latency", "https://g2/x/api/latency"),
                                           token="s3cret", interval=5.0, window=120.0)
    pusher = LatencyPusher.from_settings(settings, region="eu-central", rtt_source=fake_rtt)
    assert (pusher.urls, pusher.token, pusher.aggregator.window) == (settings.urls, "s3cret", 120.0)
    assert load_latency_push(Section({}, file="x.yaml").section("latency_push")) is None


@pytest.mark.parametrize(("body", "reason"), [
    ("urls: []", "at least one"),
    ("urls: ['gslb:8053']", "http"),
    ("urls: ['http://g']\ntoken: a\ntoken_file: b", "not both"),
    ("urls: ['http://g']\nintervl: 5s", "did you mean 'interval'"),
    ("urls: ['http://g']\ntoken_file: missing", "cannot read"),
])
def test_load_latency_push_rejects(tmp_path: Path, body: str, reason: str) -> None:
    text = "latency_push:\n" + "\n".join("  " + line for line in body.splitlines()) + "\n"
    root = Section.from_yaml_text(text, file=str(tmp_path / "edge.yaml"))
    with pytest.raises(ConfigError, match=reason) as err:
        load_latency_push(root.section("latency_push"))
    assert "latency_push" in str(err.value)


async def test_default_rtt_source_reads_aiohttp_request_transports() -> None:
    """The hook the proxy uses: observe(request.transport, peer) with the real TCP_INFO source."""
    import sys

    import aiohttp

    pusher = LatencyPusher(RttAggregator(), region="us-east", urls=["http://127.0.0.1:1"], token=None,
                           clock=Clock())

    async def handler(request: web.Request) -> web.Response:
        pusher.observe(request.transport, request.remote or "")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
    finally:
        await runner.cleanup()
        await pusher.close()
    batch = pusher.aggregator.drain_batch(Clock.now)
    if not sys.platform.startswith("linux"):
        assert batch == []
        return
    assert len(batch) == 1
    assert batch[0]["network"] == "127.0.0.0/24"
    assert batch[0]["count"] == 1
    assert 0 <= batch[0]["rtt_ms"] < 100
