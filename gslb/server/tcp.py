"""DNS over TCP (RFC 7766): length-framed messages, several per connection, idle timeout  [edge].

The same responder as UDP answers with `tcp=True` (no truncation). A connection is
closed after `idle_timeout` without a query, on a message the responder drops, or
when the connection limit is reached (new connections are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gslb.dns")


class DnsTcpServer:
    def __init__(self, get_responder: Callable[[], Any], *, idle_timeout: float = 10.0,
                 max_connections: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._get_responder = get_responder
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._clock = clock
        self.connections: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.Server] = []

    def __repr__(self) -> str:
        return f"<DnsTcpServer [{len(self.connections)} connections]>"

    async def listen(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self._servers.append(server)
        return server

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self.connections):
            writer.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.max_connections:
            writer.close()
            return
        self.connections.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            client = ipaddress.ip_address(peer[0].partition("%")[0])
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        message = await reader.readexactly(size)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = self._get_responder().respond(message, client, self._clock(), tcp=True)
                if reply is None:
                    return
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except ConnectionError:
            return
        except Exception:
            log.exception("tcp connection from %s failed", peer)
        finally:
            self.connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
