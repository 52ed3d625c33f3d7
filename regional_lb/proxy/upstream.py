"""Requests to backends: a lean HTTP/1.1 client with keep-alive pools per backend  [edge].

`Upstream.send` returns an `UpstreamResponse` once the backend's final response head is in (with
its whole body when that is small), or raises one of regional_lb.errors (OS and parser exceptions
are translated here, where they enter):

    BackendConnectError   connecting failed or timed out: nothing was sent (retry elsewhere)
    BackendTimeout        no response byte for backend_read
    BackendError          the connection broke before the response head (or mid-body)
        InvalidResponse   the response's framing is invalid (below): the connection is dropped

Why not aiohttp.ClientSession: it costs ~85 us of CPU per small request (URL handling, cookie
jar, tracing, auto headers, request/response objects); a proxy knows the exact bytes it wants
to send. The request head is serialized here in one write. Responses are parsed by llhttp
(`httptools.HttpResponseParser`, strict: no leniency flag set) in `ResponseReader`, a sans-I/O
core (bytes in, state out; a whole response whose head it read before, byte for byte, takes
that head from a bounded cache); `UpstreamConnection` is its asyncio edge. No framing grammar is
written here: llhttp finds the message boundaries, `ResponseReader` only refuses what llhttp
would let through and a proxy must not, and picks the framing (RFC 9112 section 6.3):

    NONE      a response to HEAD, 204 or 304: no body whatever its headers say; reusable
    LENGTH    Content-Length: n (n may be 0)
    CHUNKED   Transfer-Encoding: chunked (the body is passed on de-chunked)
    EOF       neither: the body runs to the backend's close (that connection is never reused)

1xx: a 100 is dropped (the proxy answers Expect itself); 102, 103 and other 1xx are handed to
the caller's `interim` callback as they arrive (at most 8), never taken as the final response;
101 is invalid (this client never asks for an upgrade: WebSockets use aiohttp's ClientSession).

Invalid (-> InvalidResponse): whatever llhttp refuses (Transfer-Encoding with Content-Length, a
bad or repeated Content-Length, bad chunk sizes, invalid bytes in names or values, obs-fold, bare
LF, ...), plus a version other than HTTP/1.0 or 1.1, a status outside 100-599, a
Transfer-Encoding other than plain chunked (one not ending in chunked has no length; gzip before
chunked would be lost when the body is re-chunked) or on an HTTP/1.0 response, a 1xx with a body
length, 101, a head over max_header_size, and bytes after a response with a body that arrive
with it (a body longer than its Content-Length). Bytes after a response that has no body (HEAD,
204, 304), or after the response was handed over, only keep that connection from being reused.

`response_head` and `interim_head` turn a head back into bytes for the client (both server kinds
use them: the backend's header lines as received, hop-by-hop ones left out, the proxy's appended).

Bodies up to 64 KiB with a Content-Length (or any body that arrived whole with its head) are
collected and handed over in one piece; others are streamed (`_Stream`): reading from the backend
pauses while 256 KiB wait for the client. Connections are kept per backend (at most `max_idle`
idle, dropped after `keepalive` seconds). A request that fails on a *reused* idle connection
before any response byte (the backend closed it while idle) is sent once more on a fresh
connection if it is idempotent and its body can be replayed (a POST is never sent twice).
Read timeouts are one periodic sweep (`Deadlines`), not a timer per request.

The ClientSession is still used for WebSocket upgrades (`session`, created lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from multidict import CIMultiDict, CIMultiDictProxy

from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendConnectError, BackendError, BackendTimeout, InvalidResponse, ProxyError
from regional_lb.headers import HOP_BY_HOP

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
SMALL = 64 * 1024                  # a response body up to this (by Content-Length) is collected whole
HIGH_WATER = 256 * 1024            # a streamed body: backend reads pause with this much unsent
MAX_INTERIM = 8                    # 1xx responses before the final one
CACHED_HEAD_MAX = 2048             # response heads up to this size are remembered (ResponseReader),
CACHE_ENTRIES = 1024               # at most this many per Upstream (cleared when full): ~2 MB of keys

# framings of a final response
NONE, LENGTH, CHUNKED, EOF = "none", "length", "chunked", "eof"
# ResponseReader states
IDLE, HEAD, BODY, DONE = 0, 1, 2, 3

_HOP_BY_HOP_B = frozenset(name.encode() for name in HOP_BY_HOP)
_LB_NAMES_B = frozenset({b"x-lb-region", b"x-lb-backend"})
_SPECIAL_B = _HOP_BY_HOP_B | _LB_NAMES_B | {b"content-length"}
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b""})
_NO_BODY_STATUS = frozenset({204, 304})


def backend_origin(backend: Backend, scheme: str = "http") -> str:
    host = f"[{backend.host}]" if ":" in backend.host else backend.host
    return f"{scheme}://{host}:{backend.port}"


def translate(exc: BaseException, *, backend: Backend) -> Exception:
    """The regional_lb error for an aiohttp / OS exception raised while sending a request."""
    where = backend.id
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return BackendConnectError(f"connect to {where} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BackendConnectError(f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return BackendTimeout(f"backend {where} timed out")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return BackendError(f"backend {where} closed the connection")
    return BackendError(f"backend {where} failed: {type(exc).__name__}")


class RawHead:
    """Request header lines already serialized (the fast path: the client's lines as received,
    hop-by-hop ones left out, forwarding headers appended), in place of a header mapping."""

    __slots__ = ("block", "has_host")

    def __init__(self, block: bytes, has_host: bool) -> None:
        self.block = block
        self.has_host = has_host

    def __contains__(self, name: object) -> bool:
        return name == "Host" and self.has_host      # never Content-Length / Expect: no body here

    def __repr__(self) -> str:
        return f"<RawHead {len(self.block)} bytes>"


def serialize_head(method: str, path: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header block. Values with CR/LF are refused (header injection)."""
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("\r\n")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) or "\r\r" in text or text.count("\r") != len(lines):
        raise ValueError("a header or the request line contains a line break")
    return text.encode("latin-1", "replace")


# -- the sans-I/O core ----------------------------------------------------------------------------
class ResponseHead:
    """A response head as ResponseReader read it (a 1xx or the final one).

    `lines` are the (name, value) pairs as received; `block` the header lines a proxy passes on,
    ready to send: hop-by-hop ones and those the Connection header names left out (and
    Content-Length of a 1xx or 204, which must not carry one). `headers()` decodes every line
    only when someone asks."""

    __slots__ = ("block", "framing", "keep_alive", "lb_named", "length", "lines", "no_body", "reason",
                 "reason_raw", "status", "version")

    def __init__(self, status: int, reason_raw: bytes, version: str, lines: list[tuple[bytes, bytes]],
                 block: bytes, length: int | None, framing: str, keep_alive: bool, lb_named: bool,
                 no_body: bool) -> None:
        self.status = status
        self.reason_raw = reason_raw
        self.reason = reason_raw.decode("latin-1")
        self.version = version
        self.lines = lines
        self.block = block
        self.length = length
        self.framing = framing
        self.keep_alive = keep_alive
        self.lb_named = lb_named
        self.no_body = no_body

    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict(
            [(name.decode("latin-1"), value.strip(b" \t").decode("utf-8", "surrogateescape"))
             for name, value in self.lines]))

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} {self.framing} {self.length}>"


def interim_head(head: ResponseHead) -> bytes:
    """A 1xx head as a proxy passes it on to an HTTP/1.1 client."""
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (head.status, head.reason_raw, head.block)


def response_head(raw: ResponseHead, extra: list[tuple[str, str]], framing: bytes, *, close: bool,
                  keep_alive: bool = False, drop_lb: bool = False) -> bytes:
    """The status line and header block a proxy sends its client for a backend's final response
    (both server kinds): the header lines as received (hop-by-hop ones already left out; with
    `drop_lb` the backend's own X-LB-* too, ours replace them), then `extra`, then `framing` (a
    Content-Length or Transfer-Encoding line, or nothing), then Connection: close if `close`
    (Connection: keep-alive if `keep_alive`, for an HTTP/1.0 client). Nothing is decoded."""
    block = raw.block
    if drop_lb and raw.lb_named:
        block = b"".join([line + b"\r\n" for line in block.split(b"\r\n")[:-1]
                          if line.partition(b":")[0].lower() not in _LB_NAMES_B])
    parts = [b"HTTP/1.1 %d %s\r\n" % (raw.status, raw.reason_raw), block]
    for key, value in extra:
        parts.append(f"{key}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(framing)
    if close:
        parts.append(b"Connection: close\r\n")
    elif keep_alive:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Junk(Exception):
    """bytes after a complete response"""


class ResponseReader:
    """The responses on one backend connection, sans-I/O (see the module docstring).

    `begin(head_request=...)` before each response; then `feed(data)` (raises InvalidResponse)
    and read the state: `interim` (1xx heads, the caller takes them), `head` (the final head,
    once in), `body` (body pieces, the caller takes them), `done` (the response is complete),
    `junk` (bytes came after it). `eof()` at a clean close: True if that ends the body.

    `cache` (head bytes -> ResponseHead, shared by an Upstream's connections): a backend repeats
    its response heads byte for byte (the same Date within a second, the same lengths), and the
    same bytes read the same way -- llhttp starts each response from the same state. So when a
    response's first read holds a whole Content-Length response whose head (up to the first
    CRLFCRLF) is in the cache, with exactly that many body bytes after it, the head is taken from
    the cache and llhttp is not called; anything else (a partial read, extra bytes, a 1xx, HEAD,
    another framing) goes to llhttp, which also fills the cache from such whole responses."""

    __slots__ = ("_head_bytes", "_head_request", "_lines", "_parser", "_reason", "_tail", "body", "cache",
                 "done", "head", "interim", "junk", "max_head", "state")

    def __init__(self, *, max_head: int = 65536, cache: dict[bytes, ResponseHead] | None = None) -> None:
        self.max_head = max_head
        self.cache = cache
        self._parser = HttpResponseParser(self)
        self.state = IDLE
        self.head: ResponseHead | None = None
        self.interim: list[ResponseHead] = []
        self.body: list[bytes] = []
        self.done = False
        self.junk = False
        self._head_request = False
        self._head_bytes = 0
        self._reason = b""
        self._lines: list[tuple[bytes, bytes]] = []
        self._tail = b""

    def begin(self, *, head_request: bool) -> None:
        self.state = HEAD
        self.head = None
        self.done = self.junk = False
        self.body = []
        self.interim = []
        self._head_request = head_request
        self._head_bytes = 0
        self._tail = b""

    def feed(self, data: bytes) -> None:
        state = self.state
        if state == HEAD:
            first = not self._head_bytes
            self._head_bytes += len(data)
            if self._head_request:
                self._feed_head_only(data)
            elif first and self.cache is not None:
                self._feed_first(data)
            else:
                self._feed(data)
            if self.state == HEAD and self._head_bytes > self.max_head:
                raise InvalidResponse(f"response head over {self.max_head} bytes")
        elif state == BODY:
            self._feed(data)
        elif data:
            self.junk = True             # nothing expected (IDLE) or after the end (DONE)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:                    # (a 101 is refused before llhttp pauses on it)
            raise InvalidResponse("an upgrade nobody asked for") from None
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, InvalidResponse):
                raise cause from None
            if isinstance(cause, _Junk) or self.state == DONE:
                self.junk = True
                return
            raise InvalidResponse(str(exc)) from None

    def _feed_first(self, data: bytes) -> None:
        """A response's first bytes, with the head cache (see the class docstring)."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or not data.startswith(b"HTTP/1."):
            self._feed(data)
            return
        cut = end + 4
        size = len(data)
        key = data if cut == size else data[:cut]
        cache = self.cache
        assert cache is not None
        head = cache.get(key)
        if head is not None and size - cut == head.length:
            self.head = head
            if cut < size:
                self.body.append(data[cut:])
            self.state = DONE
            self.done = True
            return
        self._feed(data)
        head = self.head
        # complete, nothing after it: its body is the last `length` bytes, so its head is data[:cut]
        if (head is not None and self.done and head.framing == LENGTH and cut <= CACHED_HEAD_MAX
                and size - cut == head.length and not self.interim and not self.junk):
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[key] = head

    def _feed_head_only(self, data: bytes) -> None:
        """A response to HEAD: llhttp cannot be told there is no body (httptools has no such
        switch), so it is fed up to the end of each head (the first CRLFCRLF: no line of a valid
        head holds CR or LF) and a fresh parser waits for the next response."""
        while data:
            scan = self._tail + data
            end = scan.find(b"\r\n\r\n")
            if end < 0:
                self._tail = scan[-3:]
                self._feed(data)
                return
            cut = end + 4 - len(self._tail)
            self._tail = b""
            self._feed(data[:cut])
            data = data[cut:]
            if self.state != HEAD:               # the final head: its body is not on the wire
                self._parser = HttpResponseParser(self)
                self.state = DONE
                self.done = True
                if data:
                    self.junk = True
                return

    def eof(self) -> bool:
        """The backend closed cleanly: True if that completes a close-delimited body."""
        if self.state == BODY and self.head is not None and self.head.framing == EOF:
            self.state = DONE
            self.done = True
            return True
        return False

    # -- llhttp callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.state != HEAD:
            raise _Junk()
        self._reason = b""
        self._lines = []

    def on_status(self, data: bytes) -> None:
        self._reason += data

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state == HEAD:               # (trailers of a chunked body are dropped)
            self._lines.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise InvalidResponse(f"an HTTP/{version} response")
        if not 100 <= status <= 599:
            raise InvalidResponse(f"status {status}")
        lines = self._lines
        if self._head_bytes > self.max_head and len(self._reason) + 17 + sum(
                [len(name) + len(value) + 4 for name, value in lines]) > self.max_head:
            raise InvalidResponse(f"response head over {self.max_head} bytes")
        length = None
        te: list[bytes] = []
        tokens: set[bytes] = set()
        lb_named = False
        kept: list[bytes] = []
        for name, value in lines:
            low = name.lower()
            if low not in _SPECIAL_B:
                kept.append(name + b": " + value)
            elif low == b"content-length":
                length = int(value)          # llhttp took digits only, and one value
                if status != 204 and status >= 200:
                    kept.append(name + b": " + value)
            elif low == b"transfer-encoding":
                te.append(value)
            elif low == b"connection":
                tokens.update(t.strip().lower() for t in value.split(b","))
            elif low in _LB_NAMES_B:
                lb_named = True
                kept.append(name + b": " + value)
        if tokens and not tokens <= _PLAIN_TOKENS:      # names other headers: leave them out too
            kept = [name + b": " + value for name, value in lines
                    if (low := name.lower()) not in _HOP_BY_HOP_B and low not in tokens
                    and (low != b"content-length" or (status != 204 and status >= 200))]
        kept.append(b"")
        block = b"\r\n".join(kept) if len(kept) > 1 else b""
        if status < 200:
            if status == 101:
                raise InvalidResponse("101 Switching Protocols without an upgrade request")
            if length is not None or te:
                raise InvalidResponse(f"a {status} response with a body length")
            if len(self.interim) >= MAX_INTERIM:
                raise InvalidResponse(f"more than {MAX_INTERIM} interim responses")
            if status != 100:
                self.interim.append(ResponseHead(status, self._reason, version, lines, block, None, NONE,
                                                 True, lb_named, True))
            return
        no_body = self._head_request or status in _NO_BODY_STATUS
        if no_body:
            framing = NONE
        elif te:
            codings = [c.strip().lower() for v in te for c in v.split(b",")]
            if version == "1.0" or codings != [b"chunked"]:     # other codings: not passed on either
                raise InvalidResponse(f"Transfer-Encoding {b', '.join(te).decode('latin-1')!r} on an "
                                      f"HTTP/{version} response")
            framing = CHUNKED
        elif length is not None:
            framing = LENGTH
        else:
            framing = EOF
        keep_alive = (b"close" not in tokens) if version == "1.1" else (b"keep-alive" in tokens)
        self.head = ResponseHead(status, self._reason, version, lines, block, length, framing,
                                 keep_alive and framing != EOF, lb_named, no_body)
        self.state = BODY

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.state == BODY:
            self.state = DONE
            self.done = True


# -- the asyncio edge -----------------------------------------------------------------------------
class _Body:
    """A response body read in full: the StreamReader calls the proxy uses."""

    __slots__ = ("_data",)

    complete = True

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data

    async def iter_any(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data

    def is_eof(self) -> bool:
        return True


class _Stream:
    """A body streamed from the backend: pieces pushed by the connection, taken by the proxy;
    the connection stops reading while HIGH_WATER bytes wait."""

    __slots__ = ("_conn", "_eof", "_exc", "_parts", "_size", "_waiter")

    complete = False

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, parts: list[bytes]) -> None:
        if not parts:
            return
        self._parts += parts
        for part in parts:
            self._size += len(part)
        if self._size > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._eof and self._exc is None:
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            parts = self._parts
            if parts:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = []
                self._size = 0
                self._conn.resume()
                yield data
                continue
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return
            self._waiter = self._conn.loop.create_future()
            await self._waiter

    async def read(self) -> bytes:
        return b"".join([part async for part in self.iter_any()])

    def is_eof(self) -> bool:
        return self._eof and not self._parts


class UpstreamResponse:
    """The part of a client response the proxy uses: status, reason, headers, content (read(),
    iter_any()), content_length, framing, the head (`raw`), release() (keep the connection) and
    close() (drop it)."""

    __slots__ = ("_done", "_headers", "_pool", "_proto", "content", "content_length", "framing", "raw", "reason",
                 "status")

    def __init__(self, head: ResponseHead, content: _Body | _Stream, proto: UpstreamConnection,
                 pool: _BackendPool) -> None:
        self.raw = head
        self.status = head.status
        self.reason = head.reason
        self.framing = head.framing
        self.content_length = head.length
        self.content = content
        self._headers: CIMultiDictProxy[str] | None = None
        self._proto = proto
        self._pool = pool
        self._done = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = self.raw.headers()
        return self._headers

    async def read(self) -> bytes:
        try:
            return await self.content.read()
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        """Give the connection back for reuse if the response was read to its end."""
        if self._done:
            return
        self._done = True
        proto = self._proto
        if proto.should_close or not proto.is_connected() or not proto.reader.done:
            proto.close()
        else:
            proto.idle()
            self._pool.put(proto)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._proto.close()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason} {self.framing}>"


class Deadlines:
    """Read timeouts of the connections waiting for response bytes: one periodic sweep (every
    read_timeout / 8, at most 1 s) while any waits, instead of a timer per request. A response
    times out between read_timeout and read_timeout + the sweep interval after its last byte
    (a streamed body whose reading is paused for a slow client does not time out)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.waiting: set[UpstreamConnection] = set()
        self._every = min(1.0, timeout / 8) if timeout else 1.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: UpstreamConnection) -> None:
        if not self.timeout:
            return
        self.waiting.add(conn)
        if self._timer is None:
            self._timer = self.loop.call_later(self._every, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        for conn in [c for c in self.waiting if c.deadline <= now]:
            self.waiting.discard(conn)
            conn.timed_out()
        if self.waiting:
            self._timer = self.loop.call_later(self._every, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waiting.clear()


Interim = Callable[[ResponseHead], None]


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one backend: writes requests, reads responses with a
    ResponseReader, hands the final response to the waiting `exchange` (see the docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, backend_id: str, *, max_head: int,
                 deadlines: Deadlines, heads: dict[bytes, ResponseHead] | None = None) -> None:
        self.loop = loop
        self.backend_id = backend_id
        self.reader = ResponseReader(max_head=max_head, cache=heads)
        self.deadlines = deadlines
        self.deadline = 0.0
        self.transport: asyncio.Transport | None = None
        self.should_close = False
        self.writing_paused = False
        self._paused = False
        self._got = False
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._stream: _Stream | None = None
        self._interim: Interim | None = None
        self._pool: _BackendPool | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.should_close = True
        self._wake_drain()
        reader = self.reader
        if self._waiter is not None:
            if reader.state == HEAD and not self._got:
                self._fail(_StaleConnection())
            elif exc is None and reader.eof():
                self._deliver()
            else:
                where = "mid-head" if reader.head is None else "mid-body"
                self._fail(BackendError(f"backend {self.backend_id} closed the connection {where}"))
        elif self._stream is not None:
            if exc is None and reader.eof():
                self._end_stream()
            else:
                self._fail(BackendError(f"backend {self.backend_id} closed the connection mid-body"))

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    async def _drain_helper(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("backend connection lost")
        if self.writing_paused:
            self._drain = self.loop.create_future()
            await self._drain

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._stream is None:   # bytes nobody asked for: never reuse
            self.should_close = True
            self.reader.junk = True
            return
        self._got = True
        if self.deadlines.timeout and not self._paused:
            self.deadline = self.loop.time() + self.deadlines.timeout
        reader = self.reader
        try:
            reader.feed(data)
        except InvalidResponse as exc:
            self._fail(InvalidResponse(f"backend {self.backend_id} sent an invalid response: {exc}"))
            return
        if reader.interim:
            interims, reader.interim = reader.interim, []
            sink = self._interim
            if sink is not None:
                for interim_head in interims:
                    sink(interim_head)
        if self._stream is not None:
            self._stream.push(reader.body)
            reader.body = []
            if reader.done:
                self._end_stream()
            return
        head = reader.head
        if head is None:
            return
        if reader.done or head.framing != LENGTH or head.length > SMALL:  # type: ignore[operator]
            self._deliver()

    # -- exchanges ------------------------------------------------------------------------------
    def expect(self, pool: _BackendPool, *, head_request: bool, interim: Interim | None
               ) -> asyncio.Future[UpstreamResponse]:
        """Wait for the response to a request about to be written."""
        self.reader.begin(head_request=head_request)
        self._pool = pool
        self._interim = interim
        self._got = False
        waiter = self._waiter = self.loop.create_future()
        deadlines = self.deadlines
        if deadlines.timeout:
            self.deadline = self.loop.time() + deadlines.timeout
            deadlines.add(self)
        return waiter

    def _deliver(self) -> None:
        """The final head is in (and the body, if it is to be collected): wake the exchange."""
        reader = self.reader
        head = reader.head
        assert head is not None
        assert self._pool is not None
        waiter, self._waiter = self._waiter, None
        if reader.done:
            self.deadlines.waiting.discard(self)
            if reader.junk:
                if not head.no_body:
                    self._fail(InvalidResponse(
                        f"backend {self.backend_id} sent an invalid response: bytes after its body"), waiter)
                    return
                self.should_close = True
            if not head.keep_alive:
                self.should_close = True
            body = reader.body
            content: _Body | _Stream = _Body(body[0] if len(body) == 1 else b"".join(body))
        else:
            content = self._stream = _Stream(self)
            content.push(reader.body)
        reader.body = []
        if waiter is not None and not waiter.done():
            waiter.set_result(UpstreamResponse(head, content, self, self._pool))

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        assert stream is not None
        self.deadlines.waiting.discard(self)
        reader = self.reader
        if reader.junk:
            stream.fail(InvalidResponse(f"backend {self.backend_id} sent an invalid response: bytes after its body"))
            self.close()
            return
        assert reader.head is not None
        if not reader.head.keep_alive:
            self.should_close = True
        stream.feed_eof()

    def _fail(self, exc: BaseException, waiter: asyncio.Future[UpstreamResponse] | None = None) -> None:
        """End the exchange with `exc` (before the head: the waiter; after: the body) and drop
        the connection."""
        waiter = waiter or self._waiter
        self._waiter = None
        stream, self._stream = self._stream, None
        self.deadlines.waiting.discard(self)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if stream is not None:
            stream.fail(exc)
        self.close()

    def timed_out(self) -> None:
        """No response byte for read_timeout (called by Deadlines)."""
        if self._waiter is None and self._stream is None:
            return
        where = "" if self.reader.head is None else " mid-body"
        self._fail(BackendTimeout(f"backend {self.backend_id} timed out{where}"))

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.deadline = float("inf")
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self.deadlines.timeout:
                self.deadline = self.loop.time() + self.deadlines.timeout
            if self.transport is not None:
                self.transport.resume_reading()

    def idle(self) -> None:
        self.reader.state = IDLE
        self._interim = None
        self._pool = None

    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def force_close(self) -> None:
        self.should_close = True

    def close(self) -> None:
        self.should_close = True
        if self.transport is not None:
            self.transport.close()

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.backend_id} state={self.reader.state}>"


class _BackendPool:
    """Idle keep-alive connections to one backend (most recently used first)."""

    __slots__ = ("host", "idle", "keepalive", "loop", "max_idle", "port")

    def __init__(self, host: str, port: int, *, keepalive: float, max_idle: int) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: list[tuple[UpstreamConnection, float]] = []
        self.loop = asyncio.get_running_loop()

    def get(self) -> UpstreamConnection | None:
        now = self.loop.time()
        idle = self.idle
        while idle:
            proto, since = idle.pop()
            if proto.is_connected() and now - since < self.keepalive and not proto.should_close:
                return proto
            proto.close()
        return None

    def put(self, proto: UpstreamConnection) -> None:
        if len(self.idle) >= self.max_idle:
            proto.close()
            return
        self.idle.append((proto, self.loop.time()))

    def close(self) -> None:
        for proto, _ in self.idle:
            proto.close()
        self.idle.clear()

    def __repr__(self) -> str:
        return f"<_BackendPool {self.host}:{self.port} [{len(self.idle)} idle]>"


class Upstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float, keepalive: float = 30.0,
                 max_idle: int = 256, max_header_size: int = 65536) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.max_header_size = max_header_size
        self._pools: dict[tuple[str, int], _BackendPool] = {}
        self._session: aiohttp.ClientSession | None = None
        self._writers: set[asyncio.Task[None]] = set()
        self._deadlines: Deadlines | None = None
        self._heads: dict[bytes, ResponseHead] = {}      # ResponseReader's cache of recent heads

    def __repr__(self) -> str:
        idle = sum(len(pool.idle) for pool in self._pools.values())
        waiting = len(self._deadlines.waiting) if self._deadlines is not None else 0
        return f"<Upstream [{len(self._pools)} backends | connections: {waiting} reading, {idle} idle]>"

    # -- websocket path ------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, use_dns_cache=False, force_close=True),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                skip_auto_headers=_SKIP_AUTO, trust_env=False)
        return self._session

    # -- connections ---------------------------------------------------------------------
    def _pool(self, backend: Backend) -> _BackendPool:
        key = (backend.host, backend.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _BackendPool(backend.host, backend.port, keepalive=self.keepalive,
                                                   max_idle=self.max_idle)
        return pool

    async def _connect(self, backend: Backend) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        max_head = self.max_header_size
        if self._deadlines is None:
            self._deadlines = Deadlines(loop, self.read_timeout)
        deadlines = self._deadlines
        heads = self._heads
        backend_id = backend.id
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: UpstreamConnection(loop, backend_id, max_head=max_head, deadlines=deadlines,
                                               heads=heads),
                    backend.host, backend.port)
        except TimeoutError:
            raise BackendConnectError(f"connect to {backend.id} timed out") from None
        except OSError as exc:
            raise BackendConnectError(f"cannot connect to {backend.id}: {exc.strerror or exc}") from None
        return proto

    # -- requests ------------------------------------------------------------------------
    async def send(self, backend: Backend, method: str, path: str, headers: Any, body: Any,
                   interim: Interim | None = None) -> UpstreamResponse:
        """Send a request; the final response once its head is in. `interim` is called with
        each 1xx head but 100, as it arrives."""
        pool = self._pool(backend)
        replayable = method in _IDEMPOTENT and (body is None or isinstance(body, bytes | bytearray))
        proto = pool.get()
        if proto is not None:
            try:
                return await self._exchange(proto, pool, backend, method, path, headers, body, interim)
            except _StaleConnection:
                if not replayable:
                    raise BackendError(f"backend {backend.id} closed a kept-alive connection") from None
        proto = await self._connect(backend)
        try:
            return await self._exchange(proto, pool, backend, method, path, headers, body, interim)
        except _StaleConnection:
            raise BackendError(f"backend {backend.id} closed the connection") from None

    async def _exchange(self, proto: UpstreamConnection, pool: _BackendPool, backend: Backend, method: str,
                        path: str, headers: Any, body: Any, interim: Interim | None) -> UpstreamResponse:
        streamed = body is not None and not isinstance(body, bytes | bytearray)
        if isinstance(headers, RawHead):
            parts = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), headers.block]
            if not headers.has_host:
                parts.append(f"Host: {backend_origin(backend).split('://', 1)[1]}\r\n".encode("latin-1"))
            if body is None and method in ("POST", "PUT", "PATCH"):
                parts.append(b"Content-Length: 0\r\n")
            parts.append(b"\r\n")
            head = b"".join(parts)
        else:
            items = list(headers.items())
            if "Host" not in headers:            # an HTTP/1.0 client sent none; HTTP/1.1 needs one
                items.append(("Host", backend_origin(backend).split("://", 1)[1]))
            if streamed and "Content-Length" not in headers:
                items.append(("Transfer-Encoding", "chunked"))
            elif body is None and method in ("POST", "PUT", "PATCH"):
                items.append(("Content-Length", "0"))
            head = serialize_head(method, path, items)
        transport = proto.transport
        if transport is None or transport.is_closing():
            proto.close()
            raise _StaleConnection()
        waiter = proto.expect(pool, head_request=method == "HEAD", interim=interim)
        writer: asyncio.Task[None] | None = None
        if streamed:
            transport.write(head)
            writer = asyncio.create_task(self._write_body(proto, body, chunked="Content-Length" not in headers))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
            writer.add_done_callback(lambda t: _close_if_failed(t, proto))
        else:
            transport.write(head + body if body else head)
        try:
            response = await waiter
        except _StaleConnection:
            proto.close()
            if writer is None:
                raise
            failed = await _writer_failure(writer)
            if failed is not None:
                raise failed from None
            raise BackendError(f"backend {backend.id} closed the connection") from None
        except ProxyError:
            proto.close()
            if writer is not None:
                failed = await _writer_failure(writer)
                if failed is not None:
                    raise failed from None
            raise
        except BaseException:
            proto.close()
            if writer is not None:
                writer.cancel()
            raise
        if writer is not None and not writer.done():
            # the backend answered before taking the whole body: do not reuse the connection
            proto.force_close()
            writer.cancel()
        return response

    async def _write_body(self, proto: UpstreamConnection, body: AsyncIterable[bytes] | aiohttp.StreamReader,
                          *, chunked: bool) -> None:
        transport = proto.transport
        assert transport is not None
        source = body.iter_any() if isinstance(body, aiohttp.StreamReader) else body
        async for chunk in source:
            if not chunk:
                continue
            if transport.is_closing():
                return
            if chunked:
                transport.writelines((f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if proto.writing_paused:
                await proto._drain_helper()
        if chunked and not transport.is_closing():
            transport.write(b"0\r\n\r\n")

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        for task in list(self._writers):
            task.cancel()
        if self._deadlines is not None:
            self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _writer_failure(writer: asyncio.Task[None]) -> ProxyError | None:
    """After the response failed: the request body writer's own error, if it had one (a body
    over the size limit, a client that broke off), as the error to report."""
    if not writer.done():
        writer.cancel()
    with contextlib.suppress(BaseException):
        await writer
    if writer.cancelled():
        return None
    failed = writer.exception()
    if failed is None:
        return None
    if isinstance(failed, ProxyError):
        return failed
    return BackendError(f"sending the request body failed: {type(failed).__name__}")


class _StaleConnection(Exception):
    """the connection was closed before any response byte (retry on a fresh one)"""


def _close_if_failed(task: asyncio.Task[None], proto: UpstreamConnection) -> None:
    """Done callback of a request-body writer: a writer that failed closes its connection."""
    if not task.cancelled() and task.exception() is not None:
        proto.close()
