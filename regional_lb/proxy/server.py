"""The client-facing HTTP/1.1 server: aiohttp's low-level server with proxy manners  [edge].

aiohttp's `RequestHandler` parses requests (its C parser) and runs one handler per request.
`ProxyProtocol` adds what a proxy needs on top:

* a header read timeout: from the first byte of a request until its handler starts, at most
  `header_read` seconds (slow-loris); then 408 and the connection is closed;
* parse errors answered with short plain bodies: an over-long header line or field -> 431,
  anything else the parser refuses -> 400 (never a traceback, logged at debug level);
* the idle keep-alive timeout is aiohttp's `keepalive_timeout` (config `client_idle`);
* received bytes are given to aiohttp's parser one request head at a time (16 at most per
  read): fed a read that holds a bad head, aiohttp answers the whole read with one 400 and
  drops the good requests pipelined before it; this way they are answered first, as on the
  fast path (the handler then re-reads every head through regional_lb/target.py, so both
  paths accept the same requests);
* methods llhttp does not know (extension methods such as ``FOO``, other spellings such as
  ``get``) are forwarded as received, as HAProxy and nginx do: where a request starts, its
  method is given to the parser as the stand-in ``GET`` and put back on the parsed request
  (regional_lb/target.py `stand_in_method`; `_MethodTrack` follows where requests start,
  through Content-Length and chunked bodies). After an upgrade, a refused request or a read
  of more than 16 pipelined heads the connection no longer knows where requests start, and
  an unknown method there is refused (400) as llhttp refuses it;
* the listen backlog is the listener's `backlog`, by default the kernel's somaxconn
  (`default_backlog`; aiohttp's own default is 128, asyncio's 100: a burst of connects beyond
  it waits for SYN retransmits, 1 s and more);
* `observe_rtt(transport, client_ip)` is called once per connection, at its first request (the
  kernel's RTT estimate for the client is known by then): the edge's passive latency feed.

`ProxyServer` is an `aiohttp.web.Server` that makes `ProxyProtocol`s. By default (LoadBalancer
server="fast") connections start on regional_lb/proxy/fast.py's raw protocol, which serves plain
body-less requests itself and hands a connection to a `ProxyProtocol` for everything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from regional_lb.target import stand_in_method

log = logging.getLogger("regional_lb.proxy")

_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 25\r\nConnection: close\r\n\r\nrequest header timed out\n")

_BODIES = {
    400: "bad request\n",
    408: "request timeout\n",
    413: "request body too large\n",
    431: "request header fields too large\n",
    500: "internal proxy error\n",
    504: "gateway timeout\n",
}


_SPLITS = 16                       # pieces a read is fed to aiohttp's parser in, at most
_HOLD_MAX = 1024                   # bytes held back while a request's method is incomplete
_SOMAXCONN = "/proc/sys/net/core/somaxconn"
_FALLBACK_BACKLOG = 4096


def default_backlog(path: str = _SOMAXCONN) -> int:
    """The listen backlog when a listener names none: the kernel's cap (net.core.somaxconn; a
    larger value would be cut to it anyway), or 4096 where it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return _FALLBACK_BACKLOG
    return value if value > 0 else _FALLBACK_BACKLOG


def listen_backlog(configured: int | None) -> int:
    return configured if configured is not None else default_backlog()


def plain_response(status: int, text: str | None = None, *, close: bool = False) -> web.Response:
    resp = web.Response(status=status, text=text or _BODIES.get(status, f"{status}\n"),
                        content_type="text/plain")
    if close:
        resp.force_close()
    return resp


class _MethodTrack:
    """Where a request starts in what `ProxyProtocol` gives aiohttp's parser, to stand in for
    methods llhttp does not know (regional_lb/target.py, "Method").

    A request starts at the connection's first byte, after a body-less request's head, after
    a Content-Length body (fed as its own piece) and after a chunked body (it ends with CRLFCRLF,
    where a piece ends). One entry in `originals` per request head fed from its start, in order:
    the method llhttp reads as GET, or None; aiohttp's parser yields the requests in the same
    order. When the start of the next request cannot be seen -- an upgrade, an error, a read with
    more than _SPLITS heads -- the connection reads methods as llhttp does (unknown ones: 400)."""

    __slots__ = ("at_start", "body_left", "chunked", "originals")

    def __init__(self) -> None:
        self.at_start = True
        self.body_left = 0
        self.chunked: StreamReader | None = None
        self.originals: deque[str | None] = deque()

    def lost(self) -> None:
        self.at_start = False
        self.body_left = 0
        self.chunked = None


class ProxyProtocol(RequestHandler):
    """One client connection (see the module docstring)."""

    def __init__(self, manager: ProxyServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self.header_since: float | None = None      # loop time of the first byte of a pending request
        self._busy = False
        self._proxy_server = manager
        self._rtt_sampled = False
        self._held = b""                # the first bytes of a request, up to the end of its method
        self._track = _MethodTrack()

    def data_received(self, data: bytes) -> None:
        if not self._busy and self.header_since is None and data:
            self.header_since = self._loop.time()
            self._proxy_server.watch()
        if self._held:
            data, self._held = self._held + data, b""
        # aiohttp answers a read that holds a bad request head with one 400 and drops the good
        # requests pipelined before it in the same read; fed one head at a time, it answers
        # those first, as the fast path does. At most _SPLITS pieces per read: a body full of
        # CRLFCRLF costs a few calls, no more. A Content-Length body is fed as one piece, so the
        # next request's first byte starts a piece (see `_MethodTrack`).
        track = self._track
        splits = _SPLITS
        while True:
            if track.body_left:
                piece, data = data[:track.body_left], data[track.body_left:]
                self._feed(piece)
                track.body_left -= len(piece)
                track.at_start = not track.body_left
                if not data:
                    return
                continue
            if track.at_start and data:
                data = data.lstrip(b"\r\n")               # empty lines before a request (RFC 9112 §2.2)
                if not data:
                    return
                got = stand_in_method(data)
                if got is None:
                    if len(data) <= _HOLD_MAX:
                        self._held = data               # the method goes on in the next read
                        return
                else:
                    data, original = got
                    track.originals.append(original)
            end = data.find(b"\r\n\r\n")
            if end < 0 or end + 4 == len(data) or not splits:
                if not splits:
                    track.lost()                        # heads we no longer see one by one
                self._feed(data)
                return
            splits -= 1
            self._feed(data[:end + 4])
            data = data[end + 4:]

    def _feed(self, piece: bytes) -> None:
        """Give aiohttp's parser one piece; put back the methods llhttp read as the stand-in."""
        messages = self._messages
        before = len(messages)
        super().data_received(piece)
        track = self._track
        if len(messages) > before:
            for i in range(before, len(messages)):
                msg, payload = messages[i]
                original = track.originals.popleft() if track.originals else None
                if original is not None and not isinstance(msg, _ErrInfo):
                    messages[i] = (msg._replace(method=original), payload)
            if not piece:
                return                                  # heads the parser had held back
            msg, payload = messages[-1]
            if isinstance(msg, _ErrInfo) or msg.upgrade or not piece.endswith(b"\r\n\r\n"):
                track.lost()
            elif payload is EMPTY_PAYLOAD:
                track.at_start = True
            elif msg.chunked:
                track.at_start, track.chunked = False, payload
            else:
                track.at_start = False
                track.body_left = int(msg.headers.get("Content-Length", "0"))
        elif track.chunked is not None:
            # a chunked body ends with CRLFCRLF (last chunk, trailers): a piece ends there
            if piece.endswith(b"\r\n\r\n") and track.chunked.is_eof():
                track.at_start, track.chunked = True, None
        elif piece.strip(b"\r\n"):
            track.at_start = False                      # inside a head: it ends in a later piece

    def request_started(self) -> None:
        """The handler calls this first: the request's header block is complete."""
        self._busy = True
        self.header_since = None
        if not self._rtt_sampled:
            self._rtt_sampled = True
            observe = self._proxy_server.observe_rtt
            if observe is not None and self.transport is not None:
                peer = self.transport.get_extra_info("peername")
                if peer:
                    observe(self.transport, peer[0])

    def request_finished(self) -> None:
        self._busy = False

    def header_timed_out(self) -> None:
        self.header_since = None
        if self._busy or self.transport is None:
            return
        log.debug("closing a connection: request header not complete within %.1fs", self._header_timeout)
        self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):      # the client went away mid-response: nothing to send
            log.debug("client %s disconnected: %s", request.remote, exc)
            raise ConnectionError("client disconnected") from exc
        if isinstance(exc, LineTooLong):
            status = 431
        elif isinstance(exc, BadHttpMessage | HttpProcessingError):
            status = exc.code if 400 <= exc.code < 500 else 400
        if status >= 500 and exc is not None:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:
            log.debug("refused a request from %s: %s %s", request.remote, status, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        return plain_response(status, close=True)


class ProxyServer(web.Server):
    """An aiohttp low-level server whose connections are `ProxyProtocol`s.

    Header read timeouts are enforced by one sweep over the connections every
    header_timeout / 4 (at most 1 s) while any connection waits for a header block,
    instead of a timer per request."""

    def __init__(self, handler: Any, *, header_timeout: float,
                 observe_rtt: Callable[[Any, str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.observe_rtt = observe_rtt
        self._header_timeout = header_timeout
        self._sweep_every = min(1.0, header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> RequestHandler:
        return ProxyProtocol(self, header_timeout=self._header_timeout, loop=self._loop, **self._kwargs)

    def watch(self) -> None:
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = self._loop.time() - self._header_timeout
        waiting = False
        for proto in list(self._connections):
            # every connection is a ProxyProtocol (`__call__`, and the fast path's hand-over calls
            # it too); aiohttp types them as RequestHandler, the isinstance says which
            if not isinstance(proto, ProxyProtocol) or (since := proto.header_since) is None:
                continue
            if since <= deadline:
                proto.header_timed_out()
            else:
                waiting = True
        if waiting:
            self.watch()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp signature
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)
