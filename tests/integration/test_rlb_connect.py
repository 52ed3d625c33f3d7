"""CONNECT: 405 unless the route allows it; then a tunnel to a backend of the route's pool, on both server kinds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from regional_lb.app import LoadBalancer
from regional_lb.config import parse_config


class ForwardProxy:
    """A backend that answers CONNECT: 403 for deny.test, else 200 and an upper-casing echo."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.conns: set[asyncio.StreamWriter] = set()

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
            while data := await reader.read(65536):
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


def config(port: int) -> Any:
    doc = {
        "region": "r",
        "listen": [{"address": "127.0.0.1:0"}],
        "admin": {"enabled": False},
        "pools": {"proxies": {"backends": [{"address": f"127.0.0.1:{port}", "id": "fp"}], "health": {"type": "none"}},
                  "web": {"backends": [{"address": "127.0.0.1:1", "id": "web"}], "health": {"type": "none"}}},
        "routes": [{"name": "tunnels", "match": {"host": "*.test"}, "pool": "proxies", "allow_connect": True},
                   {"name": "web", "match": {"path": "/"}, "pool": "web"}],
    }
    return parse_config(yaml.safe_dump(doc))


@contextlib.asynccontextmanager
async def setup(kind: str) -> AsyncIterator[tuple[ForwardProxy, int]]:
    fp = ForwardProxy()
    await fp.start()
    lb = LoadBalancer(config(fp.port), server=kind)
    await lb.start()
    try:
        yield fp, lb.listen_addresses[0][1]
    finally:
        await lb.stop()
        await fp.close()


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
