"""Replies leave from the address the query reached, behind one wildcard listener (IP_PKTINFO)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import dns.rcode
import pytest
import yaml

from gslb.app import GslbServer
from gslb.server.udp import UdpStats, open_udp
from tests.gslb_helpers import free_port, gslb_config, serving


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Echo:
    """Replies with the query itself, so the test sees what came back and from where."""

    def __init__(self) -> None:
        self.clients: list[str] = []

    def respond(self, data: bytes, client: Any, now: float, *, tcp: bool = False) -> bytes | None:
        assert not tcp
        self.clients.append(str(client))
        return None if data == b"drop" else b"re:" + data


async def exchange(destination: str, port: int, payload: bytes, *, source: str | None = None
                   ) -> tuple[bytes, tuple[Any, ...]]:
    """Send from an unconnected socket and return the reply and the address it came from."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
        sock.sendto(payload, (destination, port))
        future: asyncio.Future[tuple[bytes, tuple[Any, ...]]] = loop.create_future()

        def readable() -> None:
            if not future.done():
                future.set_result(sock.recvfrom(65535))

        loop.add_reader(sock.fileno(), readable)
        try:
            return await asyncio.wait_for(future, 5)
        finally:
            loop.remove_reader(sock.fileno())


async def test_wildcard_v4_listener_replies_from_each_address_asked():
    echo = Echo()
    stats = UdpStats()
    listener = await open_udp("0.0.0.0", 0, lambda: echo, stats=stats)
    try:
        assert listener.pktinfo
        port = listener.sockname[1]
        for destination in ("127.0.0.1", "127.0.0.2", "127.0.0.53"):
            # the client's own address is 127.0.0.1: a route-chosen source would be 127.0.0.1 every time
            reply, source = await exchange(destination, port, destination.encode(), source="127.0.0.1")
            assert reply == b"re:" + destination.encode()
            assert source[0] == destination
        assert echo.clients == ["127.0.0.1"] * 3
        assert stats.received == stats.replied == 3
    finally:
        listener.close()


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this host")
async def test_wildcard_v6_listener_replies_from_the_address_asked():
    echo = Echo()
    listener = await open_udp("::", 0, lambda: echo)
    try:
        assert listener.pktinfo
        reply, source = await exchange("::1", listener.sockname[1], b"six")
        assert reply == b"re:six"
        assert source[0] == "::1"
    finally:
        listener.close()


async def test_a_listener_on_one_address_answers_plainly_and_drops_what_the_responder_drops():
    echo = Echo()
    stats = UdpStats()
    listener = await open_udp("127.0.0.2", 0, lambda: echo, stats=stats)
    try:
        assert not listener.pktinfo
        port = listener.sockname[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"drop", ("127.0.0.2", port))      # no reply; the next one still comes
        reply, source = await exchange("127.0.0.2", port, b"after")
        assert (reply, source[0]) == (b"re:after", "127.0.0.2")
        assert (stats.received, stats.replied) == (2, 1)
        assert (stats.dropped_short, stats.dropped_response) == (1, 0)     # b"drop" is shorter than a header
    finally:
        listener.close()


async def test_a_burst_is_answered_in_batches():
    echo = Echo()
    stats = UdpStats()
    listener = await open_udp("0.0.0.0", 0, lambda: echo, stats=stats)
    loop = asyncio.get_running_loop()
    try:
        port = listener.sockname[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setblocking(False)
            for i in range(200):          # several batches are waiting when the listener wakes
                sock.sendto(i.to_bytes(2, "big"), ("127.0.0.2", port))
            replies: list[bytes] = []
            done = loop.create_future()

            def readable() -> None:
                while True:
                    try:
                        data, source = sock.recvfrom(100)
                    except BlockingIOError:
                        return
                    assert source[0] == "127.0.0.2"
                    replies.append(data)
                    if len(replies) == 200 and not done.done():
                        done.set_result(None)

            loop.add_reader(sock.fileno(), readable)
            try:
                await asyncio.wait_for(done, 10)
            finally:
                loop.remove_reader(sock.fileno())
        assert sorted(replies) == sorted(b"re:" + i.to_bytes(2, "big") for i in range(200))
        assert stats.replied == 200
    finally:
        listener.close()


# -- the real GSLB on wildcard addresses ------------------------------------------------

@contextlib.asynccontextmanager
async def running_on(tmp_path: Any, listen: list[str], port: int) -> AsyncIterator[GslbServer]:
    data = gslb_config(tmp_path, dns_port=port, admin_port=free_port(), lbs=None)
    data["dns"]["listen"] = listen
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    async with serving(path) as server:
        yield server


def free_wildcard_port() -> int:
    for _ in range(50):
        port = free_port("0.0.0.0", socket.SOCK_DGRAM)
        try:
            for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(family, kind) as s:
                        if family == socket.AF_INET6:
                            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free wildcard port")


async def test_gslb_on_wildcard_binds_answers_from_the_address_asked(tmp_path):
    port = free_wildcard_port()
    listen = [f"0.0.0.0:{port}"] + ([f"[::]:{port}"] if _has_ipv6() else [])
    async with running_on(tmp_path, listen, port):
        destinations = ["127.0.0.1", "127.0.0.2"] + (["::1"] if _has_ipv6() else [])
        for destination in destinations:
            query = dns.message.make_query("ns1.example.test", "A")
            wire, source = await exchange(destination, port, query.to_wire())
            reply = dns.message.from_wire(wire)
            assert reply.id == query.id
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer[0][0].address == "127.0.0.1"
            assert source[0] == destination
