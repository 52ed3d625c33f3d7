"""CONNECT: 405 unless the route allows it; then a tunnel to a backend of the route's pool, on both server kinds;
a tunnel with no byte either way for `timeouts.tunnel` is closed (both sides), any byte either way resets the wait."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from regional_lb.app import LoadBalancer
from regional_lb.config import parse_config
from tests.proc_sockets import holds_tcp_socket
from tests.rlb_helpers import request_finished

FLOOD = 32 * 1024 * 1024


class ForwardProxy:
    """A backend that answers CONNECT: 403 for deny.test, else 200 and an upper-casing echo; for quiet.test
    it answers nothing (counts the bytes in `received`); for tick.test it sends `ticks` bytes, one every
    `tick` seconds (noting the loop time of the last in `last_tick`), and then says nothing; for flood.test it
    sends FLOOD bytes at once (more than the sockets to a client that does not read hold)."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.conns: set[asyncio.StreamWriter] = set()
        self.received = 0
        self.got_bytes = asyncio.Event()
        self.tick, self.ticks, self.last_tick = 0.0, 0, 0.0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if b"deny.test" in head.split(b"\r\n", 1)[0]:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
            target = head.split(b"\r\n", 1)[0]
            if b"flood.test" in target:
                block = b"x" * 262144
                for _ in range(FLOOD // len(block)):
                    writer.write(block)
                    await writer.drain()
            if b"tick.test" in target:
                for _ in range(self.ticks):
                    await asyncio.sleep(self.tick)
                    writer.write(b".")
                    self.last_tick = asyncio.get_running_loop().time()
            while data := await reader.read(65536):
                if b"quiet.test" in target:
                    self.received += len(data)
                    self.got_bytes.set()
                    continue
                writer.write(data.upper())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.conns.discard(writer)
            self.closed.set()
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.conns):
            w.close()
        await self.server.wait_closed()


def config(port: int, tunnel: float | None = None) -> Any:
    doc: dict[str, Any] = {
        "region": "r",
        "listen": [{"address": "127.0.0.1:0"}],
        "admin": {"enabled": False},
        "pools": {"proxies": {"backends": [{"address": f"127.0.0.1:{port}", "id": "fp"}], "health": {"type": "none"}},
                  "web": {"backends": [{"address": "127.0.0.1:1", "id": "web"}], "health": {"type": "none"}}},
        "routes": [{"name": "tunnels", "match": {"host": "*.test"}, "pool": "proxies", "allow_connect": True},
                   {"name": "web", "match": {"path": "/"}, "pool": "web"}],
    }
    if tunnel is not None:
        doc["timeouts"] = {"tunnel": tunnel}
    return parse_config(yaml.safe_dump(doc))


@contextlib.asynccontextmanager
async def running(kind: str, tunnel: float | None = None) -> AsyncIterator[tuple[ForwardProxy, LoadBalancer]]:
    fp = ForwardProxy()
    await fp.start()
    lb = LoadBalancer(config(fp.port, tunnel), server=kind)
    await lb.start()
    try:
        yield fp, lb
    finally:
        await lb.stop()
        await fp.close()


@contextlib.asynccontextmanager
async def setup(kind: str) -> AsyncIterator[tuple[ForwardProxy, int]]:
    async with running(kind) as (fp, lb):
        yield fp, lb.listen_addresses[0][1]


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    async with asyncio.timeout(5):
        while marker not in data:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_a_tunnel_relays_both_ways_until_the_client_closes(kind: str) -> None:
    async with setup(kind) as (fp, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # bytes right behind the CONNECT head (a TLS ClientHello, typically) are relayed too
        writer.write(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\nhello")
        got = await read_until(reader, b"HELLO")
        assert got == b"HTTP/1.1 200 Connection Established\r\n\r\nHELLO"
        writer.write(b"x" * 300_000)                               # more than one buffer's worth
        got = await read_until(reader, b"X" * 300_000)
        assert got == b"X" * 300_000
        head = fp.heads[0].decode()
        assert head.startswith("CONNECT a.test:443 HTTP/1.1\r\n")
        assert "\r\nHost: a.test:443\r\n" in head
        assert "\r\nX-Forwarded-For: 127.0.0.1\r\n" in head
        writer.close()
        async with asyncio.timeout(5):
            await fp.closed.wait()                                 # the backend side closed too


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_the_backend_closing_closes_the_client(kind: str) -> None:
    async with setup(kind) as (fp, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        assert await read_until(reader, b"\r\n\r\n") == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        for w in list(fp.conns):
            w.close()
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_refusals(kind: str) -> None:
    async with setup(kind) as (_fp, port):
        for request, status in ((b"CONNECT deny.test:443 HTTP/1.1\r\nHost: deny.test:443\r\n\r\n", b"403"),
                                (b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n", b"405"),
                                (b"CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n", b"400")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await read_until(reader, b"\r\n\r\n")
            assert answer.split(b" ")[1] == status, request
            async with asyncio.timeout(5):
                await reader.read()                                 # then closed
            writer.close()


def tunnel_finished(lb: LoadBalancer) -> asyncio.Event:
    return request_finished(lb, "proxies")


def idle_closes(lb: LoadBalancer) -> float | None:
    return lb.metrics.registry.get_sample_value("rlb_tunnels_closed_total",
                                                {"route": "tunnels", "kind": "connect", "reason": "idle"})


async def open_tunnel(port: int, host: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    assert await read_until(reader, b"\r\n\r\n") == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    return reader, writer


@pytest.mark.parametrize("kind", ["fast", "aiohttp"])
async def test_an_idle_tunnel_is_closed_after_the_tunnel_timeout(kind: str) -> None:
    tunnel = 0.2
    async with running(kind, tunnel) as (fp, lb):
        finished = tunnel_finished(lb)
        loop = asyncio.get_running_loop()
        start = loop.time()                         # before the proxy's timer starts: a lower bound
        reader, writer = await open_tunnel(lb.listen_addresses[0][1], "a.test")
        writer.write(b"ping")
        assert await read_until(reader, b"PING") == b"PING"
        last = loop.time()                          # the proxy touched its timer before we saw the echo
        assert lb.rt.pools["proxies"].inflight_counts() == {"fp": 1}
        async with asyncio.timeout(5):
            assert await reader.read() == b""       # the proxy closed the client side
            await fp.closed.wait()                  # ... and the backend side (it read EOF)
            await finished.wait()
        assert loop.time() - start >= tunnel
        assert loop.time() - last < tunnel + 4
        assert lb.rt.pools["proxies"].inflight_counts() == {"fp": 0}
        assert idle_closes(lb) == 1.0
        writer.close()


@pytest.mark.parametrize("direction", ["client", "backend"])
async def test_any_byte_either_way_restarts_the_wait(direction: str) -> None:
    tunnel, ticks = 0.4, 7                          # a byte every tunnel/3 for more than 2 x tunnel
    async with running("fast", tunnel) as (fp, lb):
        finished = tunnel_finished(lb)
        loop = asyncio.get_running_loop()
        fp.tick, fp.ticks = tunnel / 3, ticks
        start = loop.time()
        reader, writer = await open_tunnel(lb.listen_addresses[0][1],
                                           "quiet.test" if direction == "client" else "tick.test")
        if direction == "client":                   # the client talks, the backend never answers
            for _ in range(ticks):
                await asyncio.sleep(tunnel / 3)
                writer.write(b".")
            last = loop.time()
            while fp.received < ticks:              # every byte reached the backend: still open
                fp.got_bytes.clear()
                async with asyncio.timeout(5):
                    await fp.got_bytes.wait()
        else:                                       # the backend talks, the client never does
            assert await read_until(reader, b"." * ticks) == b"." * ticks
            last = fp.last_tick
        assert loop.time() - start > 2 * tunnel
        assert idle_closes(lb) is None
        assert not fp.closed.is_set()
        async with asyncio.timeout(5):
            assert await reader.read() == b""       # then silence: closed
            await fp.closed.wait()
            await finished.wait()
        assert loop.time() - last >= tunnel
        assert idle_closes(lb) == 1.0
        assert lb.rt.pools["proxies"].inflight_counts() == {"fp": 0}
        writer.close()


async def test_a_client_that_stops_reading_is_dropped_once_idle() -> None:
    """The backend floods, the client reads nothing: the relay waits for the client's socket to drain, no byte
    moves, and `tunnel` later both sides are closed, the client's socket released though bytes are queued."""
    async with running("fast", 0.2) as (fp, lb):
        finished = tunnel_finished(lb)
        port = lb.listen_addresses[0][1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)      # a small window: the flood stops soon
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        client_port = sock.getsockname()[1]
        writer.write(b"CONNECT flood.test:443 HTTP/1.1\r\nHost: flood.test:443\r\n\r\n")
        try:
            async with asyncio.timeout(10):
                await finished.wait()                   # nothing read meanwhile
                await fp.closed.wait()
            assert idle_closes(lb) == 1.0
            assert lb.rt.pools["proxies"].inflight_counts() == {"fp": 0}
            assert not holds_tcp_socket(port, client_port)
            got = 0
            async with asyncio.timeout(5):              # what reached the client's socket, then the end
                with contextlib.suppress(ConnectionError):
                    while data := await reader.read(1 << 20):
                        got += len(data)
            assert got < FLOOD
        finally:
            writer.close()
