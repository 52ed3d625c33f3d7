"""Probes against real loopback servers, and the checker's rise/fall over them."""

import asyncio
import socket

from aiohttp import web

from gslb.common.checker import CheckTarget, HealthChecker
from gslb.common.health import Thresholds
from gslb.common.probe import ProbeSpec, run_probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_app(status: dict) -> tuple[web.AppRunner, int]:
    async def health(_request):
        return web.Response(status=status["code"], text='{"healthy_fraction": 1.0}')

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_http_probe_ok_and_bad_status():
    status = {"code": 200}
    runner, port = await start_app(status)
    try:
        spec = ProbeSpec.from_url(f"http://127.0.0.1:{port}/health", timeout=2)
        ok = await run_probe(spec)
        assert ok.ok
        assert ok.status == 200
        assert ok.rtt is not None
        assert b"healthy_fraction" in ok.body
        status["code"] = 503
        bad = await run_probe(spec)
        assert not bad.ok
        assert bad.detail == "503"
    finally:
        await runner.cleanup()


async def test_unreachable_targets_fail_cleanly():
    port = free_port()  # nothing listens here
    refused = await run_probe(ProbeSpec("tcp", "127.0.0.1", port, timeout=1))
    assert not refused.ok
    assert "refused" in refused.detail
    http_refused = await run_probe(ProbeSpec.from_url(f"http://127.0.0.1:{port}/", timeout=1))
    assert not http_refused.ok


async def test_timeout_is_reported():
    writers = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)  # never answers
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_probe(ProbeSpec.from_url(f"http://127.0.0.1:{port}/", timeout=0.2))
        assert not result.ok
        assert result.detail.startswith("timeout")
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_tcp_probe_connects():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await run_probe(ProbeSpec("tcp", "127.0.0.1", port))).ok
    finally:
        server.close()
        await server.wait_closed()


async def test_checker_rise_fall_and_judge():
    status = {"code": 200}
    runner, port = await start_app(status)
    changes = []
    target = CheckTarget("r1", ProbeSpec.from_url(f"http://127.0.0.1:{port}/health", timeout=2),
                         thresholds=Thresholds(rise=2, fall=2))
    judged = CheckTarget("r2", target.spec, judge=lambda res: (False, "judged unhealthy"),
                         thresholds=Thresholds(rise=1, fall=1))
    checker = HealthChecker([target, judged], on_change=lambda n, h, r: changes.append((n, h.status.value)))
    try:  # rounds driven by hand: no loops started
        assert (await checker.check_once("r1")).up
        status["code"] = 500
        assert (await checker.check_once("r1")).up          # one failure: still up (fall=2)
        assert not (await checker.check_once("r1")).up      # second: down
        status["code"] = 200
        assert not (await checker.check_once("r1")).up
        assert (await checker.check_once("r1")).up
        assert not (await checker.check_once("r2")).up
        assert checker.last["r2"].detail == "judged unhealthy"
        assert changes == [("r1", "down"), ("r1", "up"), ("r2", "down")]
    finally:
        await runner.cleanup()


async def test_checker_loops_probe_from_start():
    seen = asyncio.Event()

    async def fake_probe(spec, session):
        from gslb.common.probe import ProbeResult
        seen.set()
        return ProbeResult(False, None, "fake down")

    checker = HealthChecker([CheckTarget("x", ProbeSpec("tcp", "127.0.0.1", 1), interval=0.01,
                                         thresholds=Thresholds(1, 1))], probe=fake_probe)
    await checker.start()
    try:
        await asyncio.wait_for(seen.wait(), 2)
    finally:
        await checker.stop()
    assert not checker.states["x"].up
