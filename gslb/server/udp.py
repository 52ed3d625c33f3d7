"""DNS over UDP: a thin asyncio protocol around the responder  [edge].

Each datagram goes to `Responder.respond(data, client, now, tcp=False)`; a reply is
sent back, `None` means drop. The responder is read through a getter on every
datagram, so a reload swaps it without touching the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gslb.dns")

_MAX_CACHED_ADDRESSES = 4096


class DnsUdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, get_responder: Callable[[], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self._get_responder = get_responder
        self._clock = clock
        self._addresses: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # Resolvers are few and repeat: cache their parsed addresses (bounded).
        host = addr[0]
        client = self._addresses.get(host)
        if client is None:
            if len(self._addresses) >= _MAX_CACHED_ADDRESSES:
                self._addresses.clear()
            client = self._addresses[host] = ipaddress.ip_address(host.partition("%")[0])
        try:
            reply = self._get_responder().respond(data, client, self._clock(), tcp=False)
        except Exception:  # the responder promises never to raise; keep serving if it does
            self.errors += 1
            log.exception("responder failed on a %d-byte datagram from %s", len(data), host)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors from earlier sends
        log.debug("udp error: %s", exc)


async def open_udp(host: str, port: int, get_responder: Callable[[], Any],
                   clock: Callable[[], float] = time.monotonic) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    transport, _ = await loop.create_datagram_endpoint(lambda: DnsUdpProtocol(get_responder, clock), sock=sock)
    return transport
