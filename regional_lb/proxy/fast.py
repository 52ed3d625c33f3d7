"""The client-facing server's fast path: a raw asyncio.Protocol for plain keep-alive requests  [edge].

aiohttp's server costs ~30-40 us of CPU per request by itself (request and response objects,
payload streams, a task and a writer per request, header dicts built twice). Most proxied
requests are small body-less GETs, so `FastConnection` serves exactly those itself and hands
everything else to aiohttp (`ProxyProtocol`, regional_lb/proxy/server.py) on the same
connection. Request heads are read by llhttp (httptools, `HeadReader`), then checked and
normalised by regional_lb/target.py exactly as the aiohttp path does in ProxyHandler.read:

    request head served here                        handed to aiohttp (it decides)
    -----------------------------------------       --------------------------------------------
    an HTTP/1.1 head llhttp accepts, any form of    HTTP/1.0 and other versions (505 there)
    target target.py accepts (absolute-form too)    anything llhttp refuses (bad method, name,
    with a method llhttp knows                      obs-fold, control bytes, bare LF, ...) and
                                                    methods llhttp does not know (FOO, get)
    no Content-Length / Transfer-Encoding           a request body (streamed, chunked, 413)
    no Expect, no Upgrade, not CONNECT              100-continue, WebSocket upgrades, CONNECT
    within max_header_size / max_headers            431 / 400 for oversized heads

    refused here with target.py's answer, then closed (the aiohttp path gives the same):
    Host missing/several/invalid, %2F / %5C / %00 in the path, a fragment, '*' but for OPTIONS

A hand-off happens only between requests: the connection's transport is given to a fresh
`ProxyProtocol` with the bytes not yet consumed, so aiohttp parses the request from its first
byte and every behaviour of that path (limits, errors, streaming, upgrades) is unchanged.
Both parsers are llhttp and both paths run the same normalisation, so no request is
understood differently by the two (tests/integration/test_rlb_requests_differential.py).

The request itself goes through the same `ProxyHandler` code (routing, picking, retries,
metrics); only `_respond` is replaced by one that writes the response head and body to the
transport directly. Header read timeouts (408) and idle keep-alive closes are one sweep over
the connections, as in `ProxyServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from regional_lb.errors import InvalidResponse, ProxyError
from regional_lb.headers import DROP_ALWAYS, NOT_PLAIN, connection_tokens, forwarding_block
from regional_lb.proxy.handler import BUFFER_LIMIT, ProxyHandler
from regional_lb.proxy.server import _REQUEST_TIMEOUT, ProxyServer, plain_response
from regional_lb.proxy.upstream import LENGTH, NONE, RawHead, ResponseHead, interim_head, response_head
from regional_lb.target import DEFAULT_OPTIONS, BadRequest, Request, RequestOptions, lower_name, read_request

if TYPE_CHECKING:
    from regional_lb.runtime import RouteRuntime

log = logging.getLogger("regional_lb.proxy")

# names that need aiohttp's path (a body, an expectation, a protocol switch)
_HAND_OFF = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
_SPECIAL = NOT_PLAIN | DROP_ALWAYS | {"host"}
_PLAIN_TOKENS = frozenset({"close", "keep-alive"})
_WRITTEN = web.Response()          # returned by FastHandler._respond: the response is on the wire


class FastRequest:
    """What ProxyHandler reads from a request (the subset of aiohttp's BaseRequest it uses)."""

    __slots__ = ("block", "conn", "has_host", "headers", "host", "method", "norm", "raw_path", "remote")

    body_exists = False                # the fast path takes body-less requests only
    can_read_body = False

    def __init__(self, conn: FastConnection, head: FastHead) -> None:
        norm = head.norm
        self.conn = conn
        self.norm = norm
        self.block = head.block
        self.has_host = norm.has_host
        self.method = norm.method
        self.raw_path = norm.target
        self.headers = head.headers
        self.remote = conn.peer
        self.host = norm.host


class FastHead:
    """A request head this path serves: the normalised request (regional_lb/target.py), its
    headers for policies, the header lines to forward (`block`: hop-by-hop ones left out; None
    when the request carries forwarding headers or Via: headers.upstream_headers then) and
    whether the client asked to close."""

    __slots__ = ("block", "close", "headers", "norm")

    def __init__(self, norm: Request, headers: CIMultiDictProxy[str], block: bytes | None, close: bool) -> None:
        self.norm = norm
        self.headers = headers
        self.block = block
        self.close = close


_CACHED_HEAD_MAX = 2048                # heads up to this size are remembered, at most _CACHE_ENTRIES
_CACHE_ENTRIES = 1024                  # of them per server (cleared when full): ~2 MB of keys at most
NEED_MORE = 0                          # HeadReader.read results
HAND_OFF = 1
READY = 2
REJECT = 3


class HeadReader:
    """Reads the request heads of one connection with llhttp (httptools), one at a time  [sans-I/O].

    `read(buf)` looks at the connection's unconsumed bytes (from the first byte of the next
    request) and returns one of
      (NEED_MORE, None, 0)        no complete head yet (and no error so far)
      (HAND_OFF, None, 0)         for aiohttp to read from `buf`'s first byte: a body, an upgrade,
                                  Expect, HTTP/1.0, an over-long head, or anything llhttp refuses
                                  (aiohttp's llhttp then answers exactly as the aiohttp server does)
      (READY, FastHead, n)        a body-less HTTP/1.1 request, normalised; n bytes consumed
      (REJECT, BadRequest, 0)     read_request refused it (the same answer the aiohttp path gives)
    The head's end is found by llhttp; the CRLFCRLF search only bounds how much is fed at once
    (llhttp here refuses bare LF, so the first CRLFCRLF is the end of a head or of leading empty lines).
    """

    __slots__ = ("_complete", "_done", "_fed", "_fields", "_url", "cache", "max_head", "max_headers", "max_line",
                 "options", "parser")

    def __init__(self, options: RequestOptions = DEFAULT_OPTIONS, *, max_line: int = 8190,
                 max_headers: int = 100, max_head: int = 16380, cache: dict[bytes, FastHead] | None = None
                 ) -> None:
        self.options = options
        self.cache = cache              # head bytes -> FastHead, shared by a server's connections
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_head = max_head
        self.parser = httptools.HttpRequestParser(self)
        self._fed = 0
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._done = False

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        self._complete = self._done = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._complete = True

    def on_message_complete(self) -> None:
        self._done = True

    # -- reading --------------------------------------------------------------------------------
    def read(self, buf: bytes) -> tuple[int, Any, int]:
        cache = self.cache
        if cache is not None and not self._fed:
            # a keep-alive client repeats its heads byte for byte: the same bytes read the same way
            # (llhttp starts each message from the same state), so a repeat skips the parse
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                got = cache.get(buf if end + 4 == len(buf) else buf[:end + 4])
                if got is not None:
                    return READY, got, end + 4
        skip = 0
        while True:
            fed = self._fed
            end = buf.find(b"\r\n\r\n", max(fed - 3, skip))
            limit = end + 4 if end >= 0 else len(buf)
            if limit - skip > self.max_head:
                return HAND_OFF, None, 0
            if limit > fed:
                try:
                    self.parser.feed_data(buf[fed:limit])
                except (httptools.HttpParserError, httptools.HttpParserUpgrade):    # aiohttp's to take
                    return HAND_OFF, None, 0
                self._fed = limit
            if self._complete:
                break
            if end < 0:
                return NEED_MORE, None, 0
            skip = limit                              # empty lines before a request (RFC 9112 §2.2)
        self._fed = 0
        self._complete = False
        if not self._done or self.parser.get_http_version() != "1.1":
            return HAND_OFF, None, 0
        url = self._url
        max_line = self.max_line
        fields = self._fields
        if len(url) + 24 > max_line or len(fields) > self.max_headers:
            return HAND_OFF, None, 0
        pairs = []
        for name, value in fields:
            if len(name) + len(value) + 2 > max_line or name.lower() in _HAND_OFF:
                return HAND_OFF, None, 0
            pairs.append((name.decode("latin-1"), value.decode("latin-1")))
        try:
            norm = read_request(self.parser.get_method().decode("latin-1"), url.decode("latin-1"), (1, 1),
                                pairs, self.options)
        except BadRequest as exc:
            return REJECT, exc, 0
        if norm.connect:
            return HAND_OFF, None, 0
        head = _fast_head(norm)
        if cache is not None and limit <= _CACHED_HEAD_MAX and not skip:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[buf if limit == len(buf) else buf[:limit]] = head
        return READY, head, limit


def _fast_head(norm: Request) -> FastHead:
    kept = []
    close = False
    plain = True
    for name, value in norm.headers:
        low = lower_name(name)
        if low not in _SPECIAL or low == "host":
            kept.append(f"{name}: {value}\r\n")
        elif low == "connection":
            tokens = connection_tokens((value,))
            close = close or "close" in tokens
            plain = plain and tokens <= _PLAIN_TOKENS
        elif low in NOT_PLAIN:
            plain = False
    block = "".join(kept).encode("latin-1") if plain else None
    return FastHead(norm, CIMultiDictProxy(CIMultiDict(norm.headers)), block, close)


def parse_head(data: bytes, *, max_line: int = 8190, max_headers: int = 100,
               options: RequestOptions = DEFAULT_OPTIONS) -> tuple[int, Any, int]:
    """`HeadReader.read` on a fresh reader (for tests and one-off use)."""
    return HeadReader(options, max_line=max_line, max_headers=max_headers,
                      max_head=max(max_line, 8192) * 2).read(data)


def serialize_response(resp: web.Response, *, close: bool) -> tuple[bytes, bool]:
    """A response the handler built (health endpoint, 404, proxy errors) as bytes, and whether
    the connection closes after it."""
    close = close or resp.keep_alive is False
    body = resp.body if isinstance(resp.body, bytes | bytearray) else b""
    parts = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
    for key, value in resp.headers.items():
        if key.lower() not in ("content-length", "transfer-encoding", "connection"):
            parts.append(f"{key}: {value}\r\n")
    parts.append(f"Content-Length: {len(body)}\r\n")
    if close:
        parts.append("Connection: close\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1", "replace") + body, close


class FastHandler(ProxyHandler):
    """ProxyHandler whose responses go straight to the FastConnection's transport."""

    def read(self, request: Any) -> tuple[Request, Any]:
        return request.norm, request.headers            # read by FastConnection (HeadReader)

    def upstream_headers(self, request: Any, peer: str, settings: Any, headers: Any) -> tuple[Any, str]:
        if request.block is None:
            return super().upstream_headers(request, peer, settings, headers)
        conn = request.conn
        key = (request.host, settings)
        if conn.forwarding_key != key:          # the same for every request of a connection, mostly
            conn.forwarding_key = key
            conn.forwarding = forwarding_block(peer, self.scheme, request.host, settings)
        return RawHead(request.block + conn.forwarding, request.has_host), peer

    def interim_sink(self, request: Any) -> Any:
        return request.conn.write_interim                # the fast path serves HTTP/1.1 only

    async def _respond(self, request: Any, rr: RouteRuntime, info: Any, pick: Any, up: Any,
                       t0: float, sent_at: float) -> web.StreamResponse:
        """The backend's final response, written to the transport: HEAD / 204 / 304 without a
        body (and without a chunked terminator), a collected body in one write with its length, a
        streamed one with its Content-Length, else chunked (close-delimited when the client
        asked to close). A body that breaks mid-way aborts the client connection."""
        lb = self.lb
        clock = lb.clock
        conn: FastConnection = request.conn
        backend = pick.backend
        status = up.status
        ok = status < 500
        latency = clock() - sent_at
        try:
            extra: list[tuple[str, str]] = []
            drop_lb = lb.config.lb_headers
            if drop_lb:
                extra.append(("X-LB-Region", lb.rt.region))
                extra.append(("X-LB-Backend", backend.id))
            if pick.set_cookie:
                extra.append(("Set-Cookie", pick.set_cookie))
            if rr.bookkeeping:
                await self._sticky_bookkeeping(rr, info, pick, up)
            close = conn.close_after
            framing = up.framing
            content = up.content
            if content.complete:
                data = await content.read()
                length = b"" if framing in (NONE, LENGTH) else b"Content-Length: %d\r\n" % len(data)
                conn.write(response_head(up.raw, extra, length, close=close, drop_lb=drop_lb) + data)
            else:
                chunked = framing != LENGTH and not close
                conn.write(response_head(up.raw, extra, b"Transfer-Encoding: chunked\r\n" if chunked else b"",
                                         close=close, drop_lb=drop_lb))
                try:
                    async for chunk in content.iter_any():
                        if conn.closed:
                            raise ConnectionResetError("client disconnected")
                        if chunked:
                            conn.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                        else:
                            conn.write(chunk)
                        await conn.drain()
                except ProxyError as exc:
                    ok = False
                    if isinstance(exc, InvalidResponse):
                        self._invalid(rr, backend.id, exc)
                    else:
                        log.warning("backend %s broke mid-response (%s): aborting the client connection",
                                    backend.id, exc)
                    up.close()
                    conn.abort()                     # a truncated body the client can tell
                    return _WRITTEN
                if chunked:
                    conn.write(b"0\r\n\r\n")
        except (ConnectionError, asyncio.CancelledError):
            up.close()
            raise
        finally:
            await self._finish(request, rr, pick, up, status=status, ok=ok, latency=latency, t0=t0)
        return _WRITTEN


class FastConnection(asyncio.Protocol):
    """One client connection on the fast path (see the module docstring)."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buf = b""
        self.busy = False
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.close_after = False
        self.header_since: float | None = None
        self.idle_since = 0.0
        self._abort = False
        self._rtt_sampled = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.forwarding_key: tuple[str, Any] | None = None
        self.forwarding = b""
        self.reader = HeadReader(server.options, max_line=server.max_line, max_headers=server.max_headers,
                                 max_head=server.max_head, cache=server.heads)

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.idle_since = self.loop.time()
        self.server.added(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.server.conns.discard(self)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drain_waiter = None

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.busy:
            if len(self.buf) > BUFFER_LIMIT and not self._reading_paused and self.transport is not None:
                self._reading_paused = True          # a pipelining client: wait for our answers
                self.transport.pause_reading()
            return
        self._next()

    # -- writing ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def writelines(self, parts: Any) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(parts)

    def write_interim(self, head: ResponseHead) -> None:
        """A backend's 1xx (103 Early Hints, ...), ahead of the final response."""
        self.write(interim_head(head))

    def abort(self) -> None:
        """Reset the connection (a response cut short: its head is out, no status can say so)."""
        self._abort = True
        if not self.closed and self.transport is not None:
            self.transport.abort()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if self._writing_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
            if self.closed:
                raise ConnectionResetError("client disconnected")

    # -- requests --------------------------------------------------------------------------------
    def _next(self) -> None:
        buf = self.buf
        if not buf:
            self.idle_since = self.loop.time()
            return
        kind, got, used = self.reader.read(buf)
        if kind == READY:
            pass
        elif kind == NEED_MORE:
            if self.header_since is None:
                self.header_since = self.loop.time()
                self.server.watch()
            return
        elif kind == HAND_OFF:
            self._hand_off()
            return
        else:
            self._refuse(got)
            return
        head: FastHead = got
        self.buf = buf[used:]
        self.header_since = None
        self.busy = True
        self.close_after = head.close
        server = self.server
        if not self._rtt_sampled:
            self._rtt_sampled = True
            if server.observe_rtt is not None and self.transport is not None:
                server.observe_rtt(self.transport, self.peer)
        task = self._task = self.loop.create_task(self._serve(FastRequest(self, head)))
        server.tasks.add(task)                  # dropped by _finished (no done callback to schedule)

    def _refuse(self, exc: BadRequest) -> None:
        """Answer a request target.read_request refused, and close (as ProxyHandler does)."""
        log.debug("refused a request from %s: %s %s", self.peer, exc.status, exc)
        data, _ = serialize_response(plain_response(exc.status, f"{exc}\n", close=True), close=True)
        self.buf = b""
        self.header_since = None
        self.write(data)
        if self.transport is not None:
            self.transport.close()

    async def _serve(self, request: FastRequest) -> None:
        try:
            resp = await self.server.handler.handle(request)  # type: ignore[arg-type]
            if resp is not _WRITTEN:
                data, close = serialize_response(resp, close=self.close_after)  # type: ignore[arg-type]
                self.close_after = close
                self.write(data)
        except (ConnectionError, asyncio.CancelledError):
            self._abort = True
        except Exception:
            log.exception("error handling a request from %s", self.peer)
            data, _ = serialize_response(web.Response(status=500, text="internal proxy error\n",
                                                      content_type="text/plain"), close=True)
            self.write(data)
            self.close_after = True
        finally:
            self._finished()

    def _finished(self) -> None:
        self.busy = False
        self.server.tasks.discard(self._task)
        self._task = None
        transport = self.transport
        if transport is None or self.closed:
            return
        if self._abort:
            transport.close()
            return
        if self.close_after:
            transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._next()

    def _hand_off(self) -> None:
        """Give this connection, with the unread bytes, to aiohttp's server (see the docstring)."""
        transport = self.transport
        assert transport is not None
        self.server.conns.discard(self)
        proto = self.server.aiohttp_server()
        proto._rtt_sampled = self._rtt_sampled  # type: ignore[attr-defined]
        buf, self.buf = self.buf, b""
        self.transport = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        if buf:
            proto.data_received(buf)

    # -- timeouts (the server's sweep) -----------------------------------------------------------
    def sweep(self, now: float, header_deadline: float, idle_deadline: float) -> bool:
        """Close on a header timeout or when idle too long; True while this waits for a head."""
        transport = self.transport
        if transport is None or self.busy:
            return False
        since = self.header_since
        if since is not None:
            if since <= header_deadline:
                self.header_since = None
                log.debug("closing a connection: request header not complete in time")
                transport.write(_REQUEST_TIMEOUT)
                transport.close()
                return False
            return True
        if not self.buf and self.idle_since <= idle_deadline:
            transport.close()
        return False


class FastServer:
    """Makes FastConnections for one listener; owns the aiohttp server used for hand-offs, the
    timeout sweep and a graceful shutdown."""

    def __init__(self, handler: FastHandler, aiohttp_server: ProxyServer, *, header_timeout: float,
                 idle_timeout: float, max_line: int, max_headers: int,
                 observe_rtt: Callable[[Any, str], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.aiohttp_server = aiohttp_server
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_line = max_line
        self.max_head = max(max_line, 8192) * 2
        self.max_headers = max_headers
        self.observe_rtt = observe_rtt
        self.options = handler.options          # the listener's (regional_lb/target.py)
        self.heads: dict[bytes, FastHead] = {}  # HeadReader's cache of recent heads
        self.conns: set[FastConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._every = max(0.05, min(1.0, header_timeout / 4, idle_timeout / 4))
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> FastConnection:
        return FastConnection(self)

    def added(self, conn: FastConnection) -> None:
        self.conns.add(conn)
        self.watch()

    def watch(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._every, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        header_deadline = now - self.header_timeout
        idle_deadline = now - self.idle_timeout
        for conn in list(self.conns):
            conn.sweep(now, header_deadline, idle_deadline)
        if self.conns:
            self.watch()

    async def shutdown(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """After the listening socket is closed: let in-flight requests finish, then close."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        await self.aiohttp_server.shutdown(timeout)
