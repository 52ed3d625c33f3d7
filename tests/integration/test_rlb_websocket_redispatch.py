"""WebSocket upgrades follow a GET's re-dispatch rules: a sticky backend that refuses the connection
or is down is replaced by a new pick, and the 101 carries the re-issued cookie. Raw client sockets
(the 101's headers are read as sent), real loopback backends, both server kinds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct

import aiohttp
import pytest

from tests.rlb_helpers import backend_servers, lb_config, lb_url, running_lb

ROUTES = [{"pool": "app", "policy": "sticky_cookie", "options": {"secrets": ["k"]}}]
SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])


async def session_on(lb, s: aiohttp.ClientSession) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A new sticky session: (backend name, cookie value)."""
    async with s.get(lb_url(lb, "/x")) as r:
        assert r.status == 200
        return r.headers["X-Backend"], r.cookies["LBSESSIONID"].value


async def upgrade(lb, cookie: str, path: str = "/ws"):  # type: ignore[no-untyped-def]
    """Raw WebSocket handshake with the session cookie: (status, headers, reader, writer)."""
    host, port = lb.listen_addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n"
                  f"Cookie: LBSESSIONID={cookie}\r\n\r\n").encode())
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, reader, writer


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> str:
    """Send one masked text frame, read one unmasked text frame back."""
    data = text.encode()
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    async with asyncio.timeout(10):
        first, length = await reader.readexactly(2)
        assert first == 0x81
        if length == 126:
            (length,) = struct.unpack(">H", await reader.readexactly(2))
        return (await reader.readexactly(length)).decode()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@SERVERS
async def test_upgrade_whose_sticky_backend_refuses_is_re_dispatched_with_a_new_cookie(server: str) -> None:
    async with backend_servers(["a", "b"]) as backends:
        by_name = {x.name: x for x in backends}
        async with running_lb(lb_config(backends, routes=ROUTES), server=server) as lb, \
                aiohttp.ClientSession() as s:
            sticky, cookie = await session_on(lb, s)
            other = "b" if sticky == "a" else "a"
            await by_name[sticky].stop()                    # dead: its port refuses connections
            status, headers, reader, writer = await upgrade(lb, cookie)
            try:
                assert status == 101
                assert headers["x-lb-backend"] == [other]
                assert headers["sec-websocket-protocol"] == ["chat"]
                (set_cookie,) = headers["set-cookie"]        # the session re-issued to the new backend
                new_cookie = set_cookie.split(";", 1)[0].split("=", 1)[1]
                assert new_cookie != cookie
                assert await echo(reader, writer, "hi") == f"{other}:hi"
            finally:
                await close(writer)
            # the new cookie now sticks to the new backend, for a GET and for an upgrade
            async with s.get(lb_url(lb, "/x"), headers={"Cookie": f"LBSESSIONID={new_cookie}"}) as r:
                assert r.headers["X-Backend"] == other
                assert "Set-Cookie" not in r.headers
            status, headers, reader, writer = await upgrade(lb, new_cookie)
            try:
                assert status == 101
                assert "set-cookie" not in headers
                assert await echo(reader, writer, "again") == f"{other}:again"
            finally:
                await close(writer)
            rows = {r["id"]: r for r in lb.rt.pools["app"].status_rows()}
            assert rows[sticky]["consecutive_failures"] >= 1     # the refusal counted against it


@SERVERS
async def test_upgrade_whose_sticky_backend_is_down_moves_like_a_get(server: str) -> None:
    async with backend_servers(["a", "b"]) as backends:
        cfg = lb_config(backends, routes=ROUTES,
                        health={"type": "http", "interval": "50ms", "rise": 1, "fall": 1})
        by_name = {x.name: x for x in backends}
        async with running_lb(cfg, server=server) as lb, aiohttp.ClientSession() as s:
            sticky, cookie = await session_on(lb, s)
            other = "b" if sticky == "a" else "a"
            by_name[sticky].set_healthy(False)
            async with asyncio.timeout(10):
                while next(r for r in lb.rt.pools["app"].status_rows() if r["id"] == sticky)["health"] != "down":
                    by_name[sticky].hit.clear()
                    await by_name[sticky].hit.wait()
                    await asyncio.sleep(0)
            ws_hits = by_name[sticky].hits["/ws"]
            status, headers, reader, writer = await upgrade(lb, cookie)
            try:
                assert status == 101
                assert headers["x-lb-backend"] == [other]
                assert len(headers["set-cookie"]) == 1
                assert await echo(reader, writer, "hi") == f"{other}:hi"
            finally:
                await close(writer)
            assert by_name[sticky].hits["/ws"] == ws_hits       # never tried: not a candidate


@SERVERS
async def test_a_backend_that_answers_the_handshake_without_101_is_not_retried(server: str) -> None:
    async with backend_servers(["a", "b"]) as backends:
        by_name = {x.name: x for x in backends}
        async with running_lb(lb_config(backends, routes=ROUTES), server=server) as lb, \
                aiohttp.ClientSession() as s:
            sticky, cookie = await session_on(lb, s)
            other = "b" if sticky == "a" else "a"
            before = by_name[other].hits["/plain"]
            status, _headers, _reader, writer = await upgrade(lb, cookie, "/plain")   # a JSON 200, not 101
            await close(writer)
            assert status == 502
            assert by_name[sticky].hits["/plain"] == 1
            assert by_name[other].hits["/plain"] == before          # a response is not re-dispatched


@SERVERS
async def test_every_backend_refusing_gets_502(server: str) -> None:
    async with backend_servers(["a", "b"]) as backends, \
            running_lb(lb_config(backends, routes=ROUTES), server=server) as lb, aiohttp.ClientSession() as s:
        _sticky, cookie = await session_on(lb, s)
        for b in backends:
            await b.stop()
        status, _headers, _reader, writer = await upgrade(lb, cookie)
        await close(writer)
        assert status == 502


@SERVERS
async def test_a_learnt_session_whose_backend_refuses_the_upgrade_is_learnt_anew(server: str) -> None:
    routes = [{"pool": "app", "policy": "sticky_learn", "options": {"cookie": "APPSESSION"}}]
    async with backend_servers(["a", "b"]) as backends, \
            running_lb(lb_config(backends, routes=routes), server=server) as lb, aiohttp.ClientSession() as s:
        by_name = {x.name: x for x in backends}
        async with s.get(lb_url(lb, "/set-cookie?name=APPSESSION&value=s1")) as r:
            sticky = r.headers["X-Backend"]                  # learnt: s1 -> sticky
        other = "b" if sticky == "a" else "a"
        (route,) = lb.rt.routes
        assert await lb.store.get_sticky(route, "s1") == sticky
        await by_name[sticky].stop()
        host, port = lb.listen_addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Cookie: APPSESSION=s1\r\n\r\n").encode())
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert f"X-LB-Backend: {other}".encode() in head
            assert await echo(reader, writer, "hi") == f"{other}:hi"
        finally:
            await close(writer)
        assert await lb.store.get_sticky(route, "s1") == other     # the stick table moved with it
        async with s.get(lb_url(lb, "/x"), headers={"Cookie": "APPSESSION=s1"}) as r:
            assert r.headers["X-Backend"] == other
            assert by_name[other].hits["/x"] == 1
