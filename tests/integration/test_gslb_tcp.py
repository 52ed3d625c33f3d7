"""The GSLB's TCP edge (RFC 7766 §6.2.3, §10) over real loopback sockets.

Most tests drive `DnsTcpServer` with a fake responder whose reply size they choose;
one holds the connection limit of the real GSLB and asks it with dnspython.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import yaml

from gslb.app import GslbServer
from gslb.server.tcp import DnsTcpServer, client_key
from tests.gslb_helpers import free_dns_port, free_port, gslb_config, serving, wait_for

OTHER = "127.0.0.2"     # a second client address: every 127/8 address is local on Linux


class FakeResponder:
    """Replies `size` bytes (the query's ID first); b"\\0\\0drop" is dropped."""

    def __init__(self, size: int = 40) -> None:
        self.size = size
        self.seen = 0
        self.lengths: list[int] = []

    def respond(self, message: bytes, client: Any, now: float, *, tcp: bool = False) -> bytes | None:
        assert tcp
        self.seen += 1
        self.lengths.append(len(message))
        if message.endswith(b"drop"):
            return None
        return message[:2] + b"r" * (self.size - 2)


@contextlib.asynccontextmanager
async def tcp_server(reply_size: int = 40, **kwargs: Any) -> AsyncIterator[tuple[DnsTcpServer, FakeResponder, int]]:
    responder = FakeResponder(reply_size)
    server = DnsTcpServer(lambda: responder, **kwargs)
    listening = await server.listen("127.0.0.1", 0)
    try:
        yield server, responder, listening.sockets[0].getsockname()[1]
    finally:
        await server.close()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, source: str = "127.0.0.1") -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def ask(conn: Conn, ident: int = 0x1234) -> bytes:
    reader, writer = conn
    payload = ident.to_bytes(2, "big") + b"query"
    writer.write(len(payload).to_bytes(2, "big") + payload)
    await writer.drain()
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    reply = await reader.readexactly(size)
    assert reply[:2] == payload[:2]
    return reply


async def closed_by_server(conn: Conn) -> bool:
    """True once the server closed `conn` (EOF or reset); waits for it."""
    try:
        return await asyncio.wait_for(conn[0].read(65536), 5) == b""
    except ConnectionResetError:
        return True


def close(*conns: Conn) -> None:
    for _, writer in conns:
        writer.close()


async def test_at_the_limit_the_longest_idle_connection_is_evicted_first():
    async with tcp_server(max_connections=4, max_per_client=100) as (server, _, port):
        held = [await connect(port) for _ in range(4)]
        for i, conn in enumerate(held):
            await ask(conn, i)                     # registered in this order
        await ask(held[0], 9)                      # held[0] is now the most recently active
        assert len(server) == 4
        newcomer = await connect(port, OTHER)
        await ask(newcomer)
        assert await closed_by_server(held[1])     # the longest idle
        assert server.stats.evicted == 1
        second = await connect(port, OTHER)
        await ask(second)
        assert await closed_by_server(held[2])
        assert server.stats.evicted == 2
        for conn in (held[3], held[0], newcomer, second):
            await ask(conn)                        # the others are still served
        assert len(server) == 4
        assert server.stats.accepted == 6
        close(*held, newcomer, second)


async def test_per_client_cap_refuses_the_extra_connection_only():
    async with tcp_server(max_connections=100, max_per_client=3) as (server, _, port):
        mine = [await connect(port) for _ in range(3)]
        for conn in mine:
            await ask(conn)
        extra = await connect(port)
        assert await closed_by_server(extra)
        assert server.stats.refused == 1
        assert server.per_client("127.0.0.1") == 3
        other = await connect(port, OTHER)          # another address is not affected
        await ask(other)
        close(mine[0])
        await wait_for(lambda: server.per_client("127.0.0.1") == 2)
        again = await connect(port)
        await ask(again)
        assert server.stats.refused == 1
        close(*mine[1:], extra, other, again)


async def test_silent_connection_is_closed_after_the_idle_timeout():
    async with tcp_server(idle_timeout=0.2) as (server, _, port):
        loop = asyncio.get_running_loop()
        started = loop.time()           # before connecting: the server's idle clock starts at its accept
        conn = await connect(port)
        conn[1].write(b"\x00\x20half a query")       # an incomplete message is not activity
        assert await closed_by_server(conn)
        assert loop.time() - started >= 0.2 - loop._clock_resolution   # a timer may fire that early
        assert server.stats.idle_closed == 1
        assert len(server) == 0
        close(conn)


async def test_pipelining_client_that_never_reads_is_closed_after_the_idle_timeout():
    async with tcp_server(idle_timeout=0.3) as (server, responder, port):
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            started = loop.time()
            sock.sendall(b"".join(b"\x00\x07" + i.to_bytes(2, "big") + b"query" for i in range(50)))
            await wait_for(lambda: server.stats.idle_closed == 1, within=5, interval=0.01)
            assert loop.time() - started >= 0.3
            assert responder.seen == 50
            assert len(server) == 0
        finally:
            sock.close()


async def test_unread_replies_over_the_cap_stop_reading_and_close_at_the_timeout():
    async with tcp_server(reply_size=4000, idle_timeout=0.5, max_unsent=4096) as (server, responder, port):
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # before connect: a small window
        sock.connect(("127.0.0.1", port))
        try:
            started = loop.time()
            sock.setblocking(False)
            queries = b"".join(b"\x00\x07" + (i % 65536).to_bytes(2, "big") + b"query" for i in range(100_000))
            sent = 0
            with contextlib.suppress(BlockingIOError):      # as much as the kernels take: ~1 MB of queries
                while sent < len(queries):
                    sent += sock.send(queries[sent:sent + 65536])
            await wait_for(lambda: server.stats.paused >= 1, within=5, interval=0.01)
            (conn,) = server._connections
            assert len(conn.buffer) <= 2 + 65535            # unread queries stay in the kernel
            await wait_for(lambda: server.stats.unsent_closed == 1, within=5, interval=0.01)
            assert loop.time() - started >= 0.5
            # replies of 4 KB never fit: the server stopped answering long before the end.
            assert sent > 200_000                           # far more than the server holds
            assert responder.seen < 100
            assert server.stats.idle_closed == 0
            assert len(server) == 0
        finally:
            sock.close()


async def test_a_reader_that_catches_up_is_served_to_the_end():
    async with tcp_server(reply_size=4000, idle_timeout=5, max_unsent=4096) as (server, responder, port):
        reader, writer = await connect(port)
        writer.write(b"".join(b"\x00\x07" + i.to_bytes(2, "big") + b"query" for i in range(200)))
        for i in range(200):
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            reply = await reader.readexactly(size)
            assert reply[:2] == i.to_bytes(2, "big")
        assert responder.seen == 200
        assert server.stats.paused >= 1
        assert server.stats.unsent_closed == 0
        close((reader, writer))


async def test_messages_of_any_length_and_any_split_are_framed():
    async with tcp_server() as (server, responder, port):
        reader, writer = await connect(port)
        sizes = [12, 65535, 3000, 12, 40000, 2047, 2048, 2049]
        stream = b"".join(len(m).to_bytes(2, "big") + m
                          for i, size in enumerate(sizes) for m in [i.to_bytes(2, "big") + b"x" * (size - 2)])
        for start in range(0, len(stream), 997):            # odd-sized pieces, each one a separate read
            writer.write(stream[start:start + 997])
            await writer.drain()
        for i in range(len(sizes)):
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            assert (await reader.readexactly(size))[:2] == i.to_bytes(2, "big")
        assert responder.lengths == sizes
        assert server.stats.queries == len(sizes)
        (conn,) = server._connections
        assert len(conn.buffer) == 2048                      # back to the small read buffer
        close((reader, writer))


async def test_a_responder_failure_is_logged_counted_and_closes_only_that_connection(caplog):
    async with tcp_server() as (server, responder, port):
        other = await connect(port)
        await ask(other)
        responder.size = 70_000                      # a reply no TCP frame can carry: a bug
        conn = await connect(port)
        conn[1].write(b"\x00\x07\x00\x01query")
        assert await closed_by_server(conn)
        assert server.stats.errors == 1
        assert [r.getMessage()[:30] for r in caplog.records] == ["responder failed on a 7-byte T"]
        responder.size = 40
        await ask(other)                             # the others are still served
        close(conn, other)


async def test_dropped_message_closes_the_connection():
    async with tcp_server() as (server, _, port):
        conn = await connect(port)
        await ask(conn)
        conn[1].write(b"\x00\x06\x00\x00drop")
        assert await closed_by_server(conn)
        assert server.stats.dropped_closed == 1
        close(conn)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_resets_are_counted_and_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    async with tcp_server(max_connections=1024, max_per_client=1024) as (server, _, port):
        # 200 connections reset before the server handled them: some silent, some mid-query,
        # some with a whole query whose reply meets the reset.
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 3 == 1:
                sock.send(b"\x00\x20partial")
            elif i % 3 == 2:
                sock.send(b"\x00\x07\x00\x01query")
            reset(sock)
        await wait_for(lambda: server.stats.resets == 200, within=10, interval=0.01)
        # 20 connections reset while open and known to the server.
        socks = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            socks.append(sock)
        await wait_for(lambda: len(server) == 20, within=5, interval=0.01)
        for sock in socks:
            reset(sock)
        await wait_for(lambda: server.stats.resets == 220, within=5, interval=0.01)
        assert len(server) == 0
        assert server.per_client("127.0.0.1") == 0
        conn = await connect(port)
        await ask(conn)                              # still serving
        close(conn)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == []


# -- the real GSLB --------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running(tmp_path: Path, **dns_keys: Any) -> AsyncIterator[tuple[GslbServer, int]]:
    port = free_dns_port()
    data = gslb_config(tmp_path, dns_port=port, admin_port=free_port(), lbs=None)
    data["dns"].update(dns_keys)
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    async with serving(path) as server:
        yield server, port


async def test_client_holding_every_connection_does_not_keep_others_out(tmp_path):
    async with running(tmp_path, tcp_max_connections=16,          # tcp_max_per_client: 64 by default
                       tcp_idle_timeout="30s") as (server, port):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
        try:
            await wait_for(lambda: len(server.tcp) == 16, interval=0.01)
            for i in range(5):
                q = dns.message.make_query("ns1.example.test", "A", id=i)
                reply = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, source=OTHER, timeout=2)
                assert reply.rcode() == dns.rcode.NOERROR
                assert reply.answer[0][0].address == "127.0.0.1"
            # the first query evicted the oldest held connection; it closed its own after the answer
            assert server.tcp.stats.evicted == 1
            await wait_for(lambda: len(server.tcp) == 15, interval=0.01)
            # the attacker reopens more than it lost: the oldest of its own go, newcomers are still answered
            held += [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
            try:
                await wait_for(lambda: server.tcp.stats.evicted == 5 and len(server.tcp) == 16, interval=0.01)
            except TimeoutError:
                raise AssertionError(repr((server.tcp, server.tcp.stats))) from None
            q = dns.message.make_query("ns1.example.test", "A")
            reply = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, source=OTHER, timeout=2)
            assert reply.rcode() == dns.rcode.NOERROR
            assert server.tcp.stats.evicted == 6
            assert server.tcp.stats.refused == 0
        finally:
            for sock in held:
                sock.close()


async def test_tcp_limits_follow_a_config_reload(tmp_path):
    async with running(tmp_path) as (server, port):
        assert (server.tcp.max_per_client, server.tcp.max_unsent) == (64, 65536)
        data = yaml.safe_load((tmp_path / "gslb.yaml").read_text())
        data["dns"].update(tcp_max_per_client=2, tcp_max_unsent=8192, tcp_max_connections=100)
        (tmp_path / "gslb.yaml").write_text(yaml.safe_dump(data))
        await server.reload()
        assert (server.tcp.max_per_client, server.tcp.max_unsent, server.tcp.max_connections) == (2, 8192, 100)
        mine = [await connect(port) for _ in range(3)]
        q = dns.message.make_query("ns1.example.test", "A").to_wire()
        for reader, writer in mine[:2]:
            writer.write(len(q).to_bytes(2, "big") + q)
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            assert dns.message.from_wire(await reader.readexactly(size)).rcode() == dns.rcode.NOERROR
        assert await closed_by_server(mine[2])
        assert server.tcp.stats.refused == 1
        close(*mine)


def test_per_client_cap_counts_an_ipv4_address_or_an_ipv6_64():
    v6 = client_key(ipaddress.ip_address("2001:db8:1:2:aaaa::1"))
    assert v6 == client_key(ipaddress.ip_address("2001:db8:1:2::99")) == "2001:db8:1:2::/64"
    assert client_key(ipaddress.ip_address("2001:db8:1:3::1")) != v6
    assert client_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert client_key(ipaddress.ip_address("192.0.2.2")) == "192.0.2.2"
