"""DNS over TCP (RFC 7766): length-framed messages, several per connection, bounded per client  [edge].

One `asyncio.Protocol` per connection (no task, no StreamReader): bytes are framed
in `data_received` and each message goes to the same responder as UDP with
`tcp=True` (no truncation). What a connection may hold is bounded (RFC 7766 §6.2.3,
§10; the shape follows gdnsd):

* `max_connections` open at once: at the limit the connection idle the longest
  (the one whose last complete query is oldest) is closed to admit the new one, so
  a client holding silent connections cannot keep others out (`evicted`).
* `max_per_client` open connections per client: an IPv4 address, or an IPv6 /64
  (one host may hold a whole /64, RFC 7934); more are closed at once (`refused`).
* `idle_timeout`: a connection that has not delivered a complete query for that
  long is closed, whether or not replies are still unsent to it (`idle_closed`);
  a half-sent query does not count as activity.
* `max_unsent` bytes of replies the client has not read: over it the
  connection's queries are no longer read (the rest stays in the kernel), and if
  it is still over when the idle timeout comes it is closed (`unsent_closed`).
  The kernel send buffer of each connection is set to the same size, so unread
  replies cost at most about 3 x `max_unsent` per connection (the kernel doubles
  it) plus one reply; unread queries stay in the kernel, and the connection's read
  buffer holds at most one message (64 KiB).
* a message the responder drops (garbage, a response) closes the connection.
* a connection reset by the peer, before it was handled or while it was, is
  counted (`resets`) and never logged as an error.

Server-side closes abort the connection (unsent replies are discarded): a client
that does not read cannot hold a closing connection open either.

    server = DnsTcpServer(get_responder, idle_timeout=10, max_connections=1024,
                          max_per_client=64, max_unsent=65536)
    await server.listen("0.0.0.0", 53); ...; await server.close()
    server.stats      TcpStats (counters)       len(server) connections open now
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gslb.dns")

@dataclass(eq=False, slots=True)
class TcpStats:
    """Plain counters of the TCP edge; the server exports them (with the open count)."""

    accepted: int = 0           # connections admitted
    evicted: int = 0            # closed, longest idle first, to admit a new one at the limit
    refused: int = 0            # closed at once: the client address had max_per_client open
    resets: int = 0             # reset (or failed) by the peer before or while handled
    idle_closed: int = 0        # no complete query within the idle timeout
    unsent_closed: int = 0      # still over max_unsent unread reply bytes at the idle timeout
    dropped_closed: int = 0     # the responder dropped a message (garbage, a response)
    queries: int = 0            # messages handed to the responder
    paused: int = 0             # times reading stopped because replies went unread
    errors: int = 0             # the responder raised (it promises not to): logged, connection closed


_READ_START = 2048                # a connection's first read buffer; it grows only for a longer message
_MESSAGE_MAX = 2 + 65535          # the longest framed message: the read buffer never needs more


def client_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What the per-client cap counts by: the IPv4 address, or the IPv6 address's /64."""
    if address.version == 4:
        return str(address)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class _Connection(asyncio.BufferedProtocol):
    """One client connection: framing, its idle timer, and its unread-reply state.

    The kernel reads into the connection's own buffer (`get_buffer`), which holds at most
    one message in progress once the complete ones are answered: `_READ_START` bytes,
    grown by doubling for a longer message, never beyond `_MESSAGE_MAX`.
    """

    __slots__ = ("buffer", "client", "closed", "filled", "host", "key", "last_active", "over", "server", "timer",
                 "transport")

    def __init__(self, server: DnsTcpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray(_READ_START)
        self.filled = 0
        self.host = ""
        self.client: Any = None
        self.key = ""               # what the per-client cap counts by (client_key)
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.over = False           # unread replies above max_unsent: reading paused
        self.closed = False         # closed by us (or forgotten): connection_lost counts nothing

    def __repr__(self) -> str:
        return f"<_Connection {self.host} {'closed' if self.closed else 'open'}>"

    # -- asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._admit(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self.buffer
        if self.filled == len(buf):
            # Full: it holds the start of one message longer than the buffer (the complete ones were
            # answered, or reading would be paused). Double it, up to the longest message.
            buf.extend(bytes(max(min(len(buf), _MESSAGE_MAX - len(buf)), 1024)))
        return memoryview(buf)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if not self.over and not self.closed:
            self._answer()

    def eof_received(self) -> bool:
        # The client half-closed: what was answered is flushed, then the transport closes.
        return False

    def pause_writing(self) -> None:
        if not self.over and not self.closed and self.transport is not None:
            self.over = True
            self.server.stats.paused += 1
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.over and not self.closed and self.transport is not None:
            self.over = False
            self.transport.resume_reading()
            self._answer()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            if exc is not None:
                self.server.stats.resets += 1
            self.server._forget(self)
        self.buffer = bytearray()
        self.filled = 0

    # -- work -----------------------------------------------------------------------
    def _answer(self) -> None:
        """Answer every complete message in the buffer, until the unread replies go over the cap."""
        buf = self.buffer
        n = self.filled
        if n < 2:
            return
        server = self.server
        transport = self.transport
        assert transport is not None
        responder = server._get_responder()
        now = server._clock()
        pos = 0
        answered = 0
        while n - pos >= 2:
            end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if end > n:
                break
            message = bytes(memoryview(buf)[pos + 2:end])
            pos = end
            answered += 1
            try:
                reply = responder.respond(message, self.client, now, tcp=True)
                if reply is not None and len(reply) > 65535:
                    raise ValueError(f"a {len(reply)}-byte reply does not fit a TCP frame")
            except Exception:  # the responder promises never to raise; keep serving if it does
                server._responder_failed(message, self.host)
                reply = None
            if reply is None:
                server.stats.queries += answered
                server.stats.dropped_closed += 1
                self.close()
                return
            transport.write(len(reply).to_bytes(2, "big") + reply)
            if self.over or transport.is_closing():   # pause_writing ran inside write(), or it failed
                break
        if pos:
            rest = n - pos       # the start of the next message moves to the front (no resize)
            if rest:
                buf[:rest] = buf[pos:n]
            elif len(buf) > _READ_START:
                self.buffer = bytearray(_READ_START)     # a long message is done: back to the small buffer
            self.filled = rest
        if answered:
            server.stats.queries += answered
            if not self.closed:
                server._touch(self)

    def _check_idle(self) -> None:
        """The idle timer: close if no complete query came for `idle_timeout`, else wait for the rest."""
        self.timer = None
        if self.closed:
            return
        server = self.server
        due = self.last_active + server.idle_timeout
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self.timer = loop.call_at(due, self._check_idle)
            return
        transport = self.transport
        if self.over or (transport is not None and transport.get_write_buffer_size() >= server.max_unsent):
            server.stats.unsent_closed += 1
        else:
            server.stats.idle_closed += 1
        self.close()

    def close(self) -> None:
        """Close from our side at once (unsent replies are discarded)."""
        if self.closed:
            return
        self.server._forget(self)
        if self.transport is not None:
            self.transport.abort()


class DnsTcpServer:
    def __init__(self, get_responder: Callable[[], Any], *, idle_timeout: float = 10.0,
                 max_connections: int = 1024, max_per_client: int = 64, max_unsent: int = 65536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._get_responder = get_responder
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.max_unsent = max_unsent
        self._clock = clock
        self.stats = TcpStats()
        # Open connections, least recently active first: the eviction order.
        self._connections: OrderedDict[_Connection, None] = OrderedDict()
        self._per_client: Counter[str] = Counter()
        self._addresses: dict[str, tuple[Any, str]] = {}
        self._servers: list[asyncio.Server] = []

    def configure(self, *, idle_timeout: float, max_connections: int, max_per_client: int,
                  max_unsent: int) -> None:
        """New limits (a config reload): they apply to connections from now on."""
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.max_unsent = max_unsent

    def __repr__(self) -> str:
        return (f"<DnsTcpServer [{len(self._connections)}/{self.max_connections} connections, "
                f"{len(self._per_client)} clients]>")

    def __len__(self) -> int:
        return len(self._connections)

    def per_client(self, host: str) -> int:
        """Connections open now counted against the cap of the client address `host`."""
        return self._per_client.get(self._client(host)[1], 0)

    def _client(self, host: str) -> tuple[Any, str]:
        """(the parsed address, what the per-client cap counts by), cached for the few repeat clients."""
        known = self._addresses.get(host)
        if known is None:
            if len(self._addresses) >= 4096:
                self._addresses.clear()
            address = ipaddress.ip_address(host.partition("%")[0])
            known = self._addresses[host] = (address, client_key(address))
        return known

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        """`reuse_port`: SO_REUSEPORT (worker processes share the address; the kernel spreads connections)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                          reuse_port=reuse_port or None,
                                          backlog=max(128, min(self.max_connections, 4096)))
        self._servers.append(server)
        return server

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    # -- bookkeeping (called by _Connection) -------------------------------------------
    def _admit(self, conn: _Connection) -> None:
        transport = conn.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        if not peer:                      # reset before we could even ask who it was
            self.stats.resets += 1
            conn.closed = True
            transport.abort()
            return
        host = peer[0]
        if self._per_client[self._client(host)[1]] >= self.max_per_client:
            self.stats.refused += 1
            conn.closed = True
            transport.abort()
            return
        while len(self._connections) >= self.max_connections:
            victim = next(iter(self._connections))
            self.stats.evicted += 1
            victim.close()
        conn.host = host
        conn.client, conn.key = self._client(host)
        self._per_client[conn.key] += 1
        self._connections[conn] = None
        self.stats.accepted += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.max_unsent)
        transport.set_write_buffer_limits(high=self.max_unsent, low=self.max_unsent // 2)
        loop = asyncio.get_running_loop()
        conn.last_active = loop.time()
        conn.timer = loop.call_at(conn.last_active + self.idle_timeout, conn._check_idle)

    def _touch(self, conn: _Connection) -> None:
        conn.last_active = asyncio.get_running_loop().time()
        self._connections.move_to_end(conn)

    def _responder_failed(self, message: bytes, host: str) -> None:
        self.stats.errors += 1
        if self.stats.errors & (self.stats.errors - 1) == 0:     # the 1st, 2nd, 4th, 8th, ... only
            log.exception("responder failed on a %d-byte TCP message from %s (%d failures so far): %s",
                          len(message), host, self.stats.errors, message[:512].hex())

    def _forget(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn in self._connections:
            del self._connections[conn]
            left = self._per_client[conn.key] - 1
            if left > 0:
                self._per_client[conn.key] = left
            else:
                del self._per_client[conn.key]
