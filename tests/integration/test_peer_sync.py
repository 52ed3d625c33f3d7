"""PeerSync (gslb/peers/sync.py) against hostile and broken peers on loopback: each costs bounded
work (a timeout, a size limit while reading), is reported with a reason, and never stops the others."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gslb.peers.admin_state import AdminStates
from gslb.peers.config import Peer, PeerSettings
from gslb.peers.node import PeerNode
from gslb.peers.sync import PeerSync
from tests.gslb_helpers import free_port

GOOD = {"server": "good", "interval": 0.2, "regions": {
    "eu": {"up": True, "since": 1.0, "rtt_ms": 1.0, "probes": 4, "fresh": True}}, "admin": {}}
LIMIT = 64 * 1024
TIMEOUT = 0.3


@pytest.fixture
async def peers() -> AsyncIterator[dict[str, str]]:
    never = asyncio.Event()
    seen: list[str] = []

    def handler(make: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            seen.append(request.headers.get("Authorization", ""))
            return await make(request)
        return wrapped

    async def good(_r: web.Request) -> web.StreamResponse:
        return web.json_response(GOOD)

    async def slow_headers(_r: web.Request) -> web.StreamResponse:
        await never.wait()
        raise AssertionError

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"server": ')          # then nothing more, ever
        await never.wait()
        return resp

    async def huge_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()               # no Content-Length: refused while reading
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b" " * 16384)
        await resp.write_eof()
        return resp

    async def huge_declared(_r: web.Request) -> web.StreamResponse:
        return web.Response(body=b" " * (LIMIT + 1), content_type="application/json")

    async def deep(_r: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" * 60000, content_type="application/json")

    async def error(_r: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "missing or wrong peer token"}, status=401)

    async def malformed(_r: web.Request) -> web.StreamResponse:
        return web.json_response({"server": "m", "regions": {"eu": {"up": "maybe"}}})

    routes = {"good": good, "slow_headers": slow_headers, "slow_body": slow_body, "huge_chunked": huge_chunked,
              "huge_declared": huge_declared, "deep": deep, "error": error, "malformed": malformed}
    app = web.Application()
    for name, fn in routes.items():
        app.router.add_get(f"/{name}/api/peers/verdicts", handler(fn))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    urls = {name: f"http://127.0.0.1:{port}/{name}" for name in routes}
    urls["closed"] = f"http://127.0.0.1:{free_port()}"
    urls["_seen"] = seen  # type: ignore[assignment]
    yield urls
    never.set()
    await runner.cleanup()


async def test_hostile_and_broken_peers_cost_a_bounded_round_and_say_why(peers: dict[str, Any]) -> None:
    names = [n for n in peers if not n.startswith("_")]
    settings = PeerSettings("me", tuple(Peer(n, peers[n]) for n in names), "peer-token", 0.2, TIMEOUT,
                            max_response_bytes=LIMIT)
    node = PeerNode(settings, AdminStates())
    rounds = 0

    def on_round() -> None:
        nonlocal rounds
        rounds += 1

    sync = PeerSync(settings, on_report=lambda p, payload, at: node.take_report(p.name, payload, at, ["eu"]),
                    on_round=on_round)
    started = time.monotonic()
    try:
        await sync.pull_once()
    finally:
        await sync.stop()
    took = time.monotonic() - started
    assert rounds == 1
    assert took < TIMEOUT + 1.0, took             # every peer at once, each within the timeout
    assert list(node.reports) == ["good"]
    assert node.reports["good"].verdicts["eu"].up is True
    status = sync.status
    assert status["good"].pulls_ok == 1
    assert status["good"].last_error is None
    reasons = {n: status[n].last_error for n in names if n != "good"}
    assert all(status[n].pulls_failed == 1 for n in reasons)
    assert "within 0.3s" in reasons["slow_headers"]
    assert "within 0.3s" in reasons["slow_body"]
    assert "over the 65536-byte limit" in reasons["huge_chunked"]
    assert "over the 65536-byte limit" in reasons["huge_declared"]
    assert "nested too deeply" in reasons["deep"]
    assert "HTTP 401" in reasons["error"]
    assert "regions.eu: 'up'" in reasons["malformed"]
    assert "ClientConnectorError" in reasons["closed"]
    assert set(peers["_seen"]) == {"Bearer peer-token"}
    assert "1 of 9 peers answering" in repr(sync)


async def test_push_admin_reports_each_peer_and_pull_latency_skips_the_silent(peers: dict[str, Any]) -> None:
    settings = PeerSettings("me", (Peer("closed", peers["closed"]), Peer("good", peers["good"])), "t", 0.2, TIMEOUT)
    sync = PeerSync(settings, on_report=lambda *_: None, on_round=lambda: None)
    try:
        pushed = await sync.push_admin({"server": "me", "admin": {}})
        assert set(pushed) == {"closed", "good"}
        assert pushed["closed"].startswith("ClientConnectorError")
        assert "HTTP 405" in pushed["good"] or "HTTP 404" in pushed["good"]   # no such POST route here
        assert await sync.pull_latency() == []
    finally:
        await sync.stop()
    assert json.dumps(pushed)
