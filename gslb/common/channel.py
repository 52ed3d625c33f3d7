"""One end of a supervisor <-> worker socketpair: framed messages over asyncio streams  [edge].

    channel = await Channel.open(sock)        # a connected AF_UNIX socket (socketpair end)
    channel.send({"t": "regions", ...})       # never blocks: queued on the transport
    message = await channel.recv()            # the next message, or None at EOF
    channel.close()

Framing is gslb/common/framing.py's. A malformed frame (FramingError) closes the channel: for
a supervisor that ends the worker (it is restarted); for a worker, it reads as EOF (it stops).
Shared by both programs (gslb/common/workers.py, gslb/worker.py, regional_lb).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from gslb.common.framing import FrameDecoder, FramingError, encode

_READ = 256 * 1024


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder()
        self._ready: list[dict[str, Any]] = []
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_READ)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        if self.closed or self._writer.is_closing():
            return
        self._writer.write(encode(message))

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        while not self._ready:
            if self.closed:
                return None
            try:
                data = await self._reader.read(_READ)
            except ConnectionError:
                data = b""
            if not data:
                self.close()
                return None
            try:
                self._ready.extend(self._decoder.feed(data))
            except FramingError:
                self.close()
                return None
        return self._ready.pop(0)

    def close(self) -> None:
        self.closed = True
        self._writer.close()

    def __repr__(self) -> str:
        return f"<Channel {'closed' if self.closed else 'open'}>"
