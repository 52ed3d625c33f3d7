"""A WebSocket relay with no message either way (data, ping or pong) for `timeouts.tunnel` is closed with 1001
(going away) to the client and to the backend, counted and logged; any message either way restarts the wait.
Real proxy, a real aiohttp WebSocket backend and client on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from regional_lb.app import LoadBalancer
from tests.proc_sockets import holds_tcp_socket
from tests.rlb_helpers import lb_config, lb_url, request_finished, running_lb

FLOOD = 32 * 1024 * 1024


class WsBackend:
    """/quiet: never sends, counts what it receives (pings too: autoping off, so it answers none);
    /tick: sends `ticks` texts, one every `tick` seconds (loop time of the last in `last_tick`), then is silent;
/flood: sends FLOOD bytes at once (far more than the sockets between it and a client that does not read hold).
    Both record the close code the proxy sent them in `close_codes`."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.address = ""
        self.received: list[WSMsgType] = []
        self.got = asyncio.Event()
        self.close_codes: list[int | None] = []
        self.closed = asyncio.Event()
        self.tick, self.ticks, self.last_tick = 0.0, 0, 0.0
        self.flooded = asyncio.Event()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        if request.path == "/flood":
            block = b"x" * 262144
            for _ in range(FLOOD // len(block)):
                await ws.send_bytes(block)
            self.flooded.set()
        if request.path == "/tick":
            for i in range(self.ticks):
                await asyncio.sleep(self.tick)
                await ws.send_str(f"tick {i}")
                self.last_tick = asyncio.get_running_loop().time()
        async for msg in ws:
            self.received.append(msg.type)
            self.got.set()
        self.close_codes.append(ws.close_code)
        self.closed.set()
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._ws)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.address = f"127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def running(tunnel: float, server: str = "fast") -> AsyncIterator[tuple[WsBackend, LoadBalancer]]:
    backend = WsBackend()
    await backend.start()
    try:
        async with running_lb(lb_config([backend.address], timeouts={"tunnel": tunnel}), server=server) as lb:
            yield backend, lb
    finally:
        await backend.stop()


def relay_finished(lb: LoadBalancer) -> asyncio.Event:
    return request_finished(lb, "app")


def idle_closes(lb: LoadBalancer) -> float | None:
    (route,) = lb.rt.routes
    return lb.metrics.registry.get_sample_value("rlb_tunnels_closed_total",
                                                {"route": route, "kind": "websocket", "reason": "idle"})


async def closed_by_proxy(ws: aiohttp.ClientWebSocketResponse) -> list[WSMsgType]:
    """Read until the proxy's close frame (answered, as a client does); what came before it, by type."""
    before = []
    async with asyncio.timeout(5):
        while (msg := await ws.receive()).type != WSMsgType.CLOSE:
            before.append(msg.type)
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
    await ws.close()
    return before


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_an_idle_websocket_is_closed_with_1001_both_ways(server: str, caplog: pytest.LogCaptureFixture) -> None:
    tunnel = 0.2
    caplog.set_level(logging.INFO, logger="regional_lb.proxy")
    async with running(tunnel, server) as (backend, lb), aiohttp.ClientSession() as s:
        finished = relay_finished(lb)
        loop = asyncio.get_running_loop()
        start = loop.time()                               # before the proxy's timer starts: a lower bound
        ws = await s.ws_connect(lb_url(lb, "/quiet"), autoclose=False, autoping=False)
        await ws.send_str("hello")
        async with asyncio.timeout(5):
            await backend.got.wait()
        assert lb.rt.pools["app"].inflight_counts() == {backend.address: 1}
        assert await closed_by_proxy(ws) == []
        assert loop.time() - start >= tunnel
        async with asyncio.timeout(5):
            await backend.closed.wait()
            await finished.wait()
        assert backend.close_codes == [aiohttp.WSCloseCode.GOING_AWAY]
        assert backend.received == [WSMsgType.TEXT]
        assert lb.rt.pools["app"].inflight_counts() == {backend.address: 0}
        assert idle_closes(lb) == 1.0
        idle_logs = [r for r in caplog.records if "no message either way" in r.getMessage()]
        assert len(idle_logs) == 1
        assert idle_logs[0].levelno == logging.INFO


@pytest.mark.parametrize("what", ["client text", "client ping", "backend text"])
async def test_any_message_either_way_restarts_the_wait(what: str) -> None:
    tunnel, ticks = 0.4, 7                                # a message every tunnel/3 for more than 2 x tunnel
    async with running(tunnel) as (backend, lb), aiohttp.ClientSession() as s:
        finished = relay_finished(lb)
        loop = asyncio.get_running_loop()
        backend.tick, backend.ticks = tunnel / 3, ticks
        start = loop.time()
        ws = await s.ws_connect(lb_url(lb, "/tick" if what == "backend text" else "/quiet"),
                                autoclose=False, autoping=False)
        if what == "backend text":                        # the backend talks, the client never does
            for i in range(ticks):
                async with asyncio.timeout(5):
                    assert await ws.receive_str() == f"tick {i}"
            last = backend.last_tick
            expect_client: list[WSMsgType] = []
            expect_backend: list[WSMsgType] = []
        else:                                             # the client talks, the backend never answers
            for _ in range(ticks):
                await asyncio.sleep(tunnel / 3)
                if what == "client text":
                    await ws.send_str(".")
                else:
                    await ws.ping(b".")
            last = loop.time()
            kind = WSMsgType.TEXT if what == "client text" else WSMsgType.PING
            while len(backend.received) < ticks:          # every message reached the backend: still open
                backend.got.clear()
                async with asyncio.timeout(5):
                    await backend.got.wait()
            expect_client = []
            expect_backend = [kind] * ticks
        assert loop.time() - start > 2 * tunnel
        assert idle_closes(lb) is None
        assert not backend.closed.is_set()
        assert await closed_by_proxy(ws) == expect_client  # then silence: closed with 1001
        assert loop.time() - last >= tunnel
        async with asyncio.timeout(5):
            await backend.closed.wait()
            await finished.wait()
        assert backend.close_codes == [aiohttp.WSCloseCode.GOING_AWAY]
        assert backend.received == expect_backend
        assert idle_closes(lb) == 1.0
        assert lb.rt.pools["app"].inflight_counts() == {backend.address: 0}


async def test_a_clients_close_code_is_passed_on_and_not_counted_as_idle() -> None:
    async with running(5.0) as (backend, lb), aiohttp.ClientSession() as s:
        finished = relay_finished(lb)
        ws = await s.ws_connect(lb_url(lb, "/quiet"), autoclose=False, autoping=False)
        await ws.close(code=4005)
        async with asyncio.timeout(5):
            await backend.closed.wait()
            await finished.wait()
        assert backend.close_codes == [4005]
        assert idle_closes(lb) is None


async def test_a_client_that_stops_reading_is_dropped_once_idle() -> None:
    """The backend floods, the client reads nothing: the relay blocks on the client's socket, no message moves,
    and `tunnel` later the client is dropped (no closing handshake to wait for: its socket is released though
    bytes are still queued for it) and the backend gets 1001."""
    async with running(0.2) as (backend, lb):
        finished = relay_finished(lb)
        host, port = lb.listen_addresses[0]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the flood stops soon
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        client_port = sock.getsockname()[1]
        writer.write(f"GET /flood HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        try:
            async with asyncio.timeout(10):
                await finished.wait()                     # ... and nothing read meanwhile
                await backend.closed.wait()
            assert backend.close_codes == [aiohttp.WSCloseCode.GOING_AWAY]
            assert idle_closes(lb) == 1.0
            assert lb.rt.pools["app"].inflight_counts() == {backend.address: 0}
            assert not holds_tcp_socket(port, client_port)    # released, not left to drain for ever
            got = 0
            async with asyncio.timeout(5):                # what reached the client's socket, then the end
                with contextlib.suppress(ConnectionError):
                    while data := await reader.read(1 << 20):
                        got += len(data)
            assert got < FLOOD                            # it was cut short, not delivered
        finally:
            writer.close()
