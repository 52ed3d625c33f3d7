"""DNS over UDP: the edge reads its socket itself and answers from the address asked  [edge].

Each datagram goes to `Responder.respond(data, client, now, tcp=False)`; a reply is
sent back, `None` means drop. The responder is read through a getter once per batch,
so a reload swaps it without touching the socket.

The socket is read with `loop.add_reader` and a loop of non-blocking receives until
the kernel has nothing more (at most `BATCH` per wake-up, so TCP and the admin API
get their turn), instead of asyncio's datagram transport, which receives one datagram
per wake-up and buffers replies without bound: here a reply the kernel cannot take at
once (send buffer full) is dropped and counted, as a lost datagram would be.

Source address: on a wildcard bind (0.0.0.0 or ::) the kernel picks a reply's
source address by the route back, which on a host with several addresses may not
be the address the query reached, and resolvers drop such replies. So a wildcard
socket asks for the destination of every datagram (IP_PKTINFO / IPV6_RECVPKTINFO,
read with recvmsg) and sends the reply with that address as its source (sendmsg
with IP_PKTINFO / IPV6_PKTINFO; the interface index is kept only for IPv6
link-local destinations, so the route still chooses the interface). A socket bound
to one address needs none of this and uses recvfrom / sendto.

    listener = await open_udp("0.0.0.0", 53, get_responder, clock, stats=UdpStats())
    listener.close()
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gslb.dns")

BATCH = 64                 # datagrams handled per wake-up before the loop runs other work
MAX_DATAGRAM = 65535
_MAX_CACHED_ADDRESSES = 4096
# Linux values; Python 3.11 does not export IP_PKTINFO.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANCILLARY_SPACE = socket.CMSG_SPACE(20)      # one in_pktinfo (12 bytes) or in6_pktinfo (20 bytes)
_NO_IFINDEX = b"\x00\x00\x00\x00"


@dataclass(eq=False, slots=True)
class UdpStats:
    """Plain counters of the UDP edge (all listeners); the server exports them."""

    received: int = 0           # datagrams read
    replied: int = 0            # replies handed to the kernel
    send_failed: int = 0        # the kernel refused a reply (buffer full, unreachable, ...): dropped
    receive_errors: int = 0     # recv* failed for another reason than "nothing more to read"
    errors: int = 0             # the responder raised (it promises not to): logged, datagram dropped
    dropped_short: int = 0      # no reply: shorter than a DNS header
    dropped_response: int = 0   # no reply: a response (QR=1), never answered


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_unspecified
    except ValueError:
        return False


class UdpListener:
    """One UDP socket, read and answered by the edge itself."""

    def __init__(self, sock: socket.socket, get_responder: Callable[[], Any],
                 clock: Callable[[], float] = time.monotonic, *, stats: UdpStats | None = None,
                 pktinfo: bool | None = None) -> None:
        self._sock = sock
        self._get_responder = get_responder
        self._clock = clock
        self.stats = stats if stats is not None else UdpStats()
        self.family = sock.family
        host = sock.getsockname()[0]
        self.pktinfo = is_wildcard(host) if pktinfo is None else pktinfo
        if self.pktinfo:
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._addresses: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = "closed" if self._loop is None else "open"
        return (f"<UdpListener {self.sockname} {'pktinfo' if self.pktinfo else 'bound'} {state} "
                f"[{self.stats.received} received, {self.stats.replied} replied]>")

    @property
    def sockname(self) -> tuple[Any, ...]:
        return tuple(self._sock.getsockname()) if self._sock.fileno() >= 0 else ()

    def start(self) -> None:
        self._sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._read)

    def close(self) -> None:
        if self._loop is not None and self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = None
        self._sock.close()

    # -- the hot path -----------------------------------------------------------------
    def _client(self, host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        # Resolvers are few and repeat: cache their parsed addresses (bounded).
        if len(self._addresses) >= _MAX_CACHED_ADDRESSES:
            self._addresses.clear()
        client = self._addresses[host] = ipaddress.ip_address(host.partition("%")[0])
        return client

    def _read(self) -> None:
        """Up to BATCH datagrams: receive, respond, send (from the address asked, with pktinfo)."""
        sock = self._sock
        pktinfo = self.pktinfo
        recvfrom, recvmsg, sendto = sock.recvfrom, sock.recvmsg, sock.sendto
        addresses = self._addresses
        respond = self._get_responder().respond
        now = self._clock()
        v6 = self.family == socket.AF_INET6
        ancillary: list[tuple[int, int, bytes]] = []
        received = replied = 0              # counted here, added to the stats once per wake-up
        try:
            for _ in range(BATCH):
                try:
                    if pktinfo:
                        data, ancillary, _flags, addr = recvmsg(MAX_DATAGRAM, _ANCILLARY_SPACE)
                    else:
                        data, addr = recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self.stats.receive_errors += 1
                    continue
                received += 1
                host = addr[0]
                client = addresses.get(host)
                if client is None:
                    client = self._client(host)
                try:
                    reply = respond(data, client, now, tcp=False)
                except Exception:  # the responder promises never to raise; keep serving if it does
                    self._responder_failed(data, host)
                    continue
                if reply is None:
                    self._dropped(data)
                    continue
                source = _reply_source(ancillary, v6) if pktinfo else None
                try:
                    if source is None:
                        sendto(reply, addr)
                    else:
                        sock.sendmsg((reply,), source, 0, addr)
                except OSError:
                    self.stats.send_failed += 1
                    continue
                replied += 1
        finally:
            stats = self.stats
            stats.received += received
            stats.replied += replied

    def _dropped(self, data: bytes) -> None:
        """The responder chose not to answer: counted by why (it counts its own reasons too)."""
        if len(data) < 12:
            self.stats.dropped_short += 1
        elif data[2] & 0x80:
            self.stats.dropped_response += 1

    def _responder_failed(self, data: bytes, host: str) -> None:
        self.stats.errors += 1
        if self.stats.errors & (self.stats.errors - 1) == 0:     # the 1st, 2nd, 4th, 8th, ... only
            log.exception("responder failed on a %d-byte datagram from %s (%d failures so far): %s",
                          len(data), host, self.stats.errors, data[:512].hex())


def _reply_source(ancillary: list[tuple[int, int, bytes]], v6: bool) -> list[tuple[int, int, bytes]] | None:
    """The ancillary data that makes a reply leave from the address the query reached."""
    for level, kind, data in ancillary:
        if not v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            # struct in_pktinfo {ifindex; spec_dst; addr}: the source is spec_dst := the query's destination
            return [(socket.IPPROTO_IP, IP_PKTINFO, _NO_IFINDEX + data[8:12] + _NO_IFINDEX)]
        if v6 and level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            # struct in6_pktinfo {addr; ifindex}: the interface matters only for a link-local address
            link_local = data[0] == 0xFE and data[1] & 0xC0 == 0x80
            return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, data[:20] if link_local else data[:16] + _NO_IFINDEX)]
    return None


async def open_udp(host: str, port: int, get_responder: Callable[[], Any],
                   clock: Callable[[], float] = time.monotonic, *, stats: UdpStats | None = None,
                   pktinfo: bool | None = None, reuse_port: bool = False) -> UdpListener:
    """Bind `host:port` and start answering; `pktinfo` defaults to on for a wildcard host. `reuse_port`:
    SO_REUSEPORT, so that worker processes bind the same address and the kernel spreads datagrams over
    them (by a hash of the client's address and port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        listener = UdpListener(sock, get_responder, clock, stats=stats, pktinfo=pktinfo)
        listener.start()
    except OSError:
        sock.close()
        raise
    return listener
