"""Requests to backends: a lean HTTP/1.1 client with keep-alive pools per backend  [edge].

`Upstream.send` returns an `UpstreamResponse` once the backend's response headers are in, or
raises one of regional_lb.errors (aiohttp / OS exceptions are translated here, where they enter):

    BackendConnectError   connecting failed or timed out: nothing was sent (retry elsewhere)
    BackendTimeout        no response headers within backend_read
    BackendError          the connection broke or the response was not HTTP before headers

Why not aiohttp.ClientSession: it costs ~85 us of CPU per small request (URL handling, cookie
jar, tracing, auto headers, request/response objects); a proxy knows the exact bytes it wants
to send. The request head is serialized here in one write; the response is parsed by aiohttp's
own C parser through its `ResponseHandler` protocol (the same parser ClientSession uses), and
connections are kept per backend (at most `max_idle` idle, dropped after `keepalive` seconds).
A request that fails on a *reused* idle connection before any response byte (the backend
closed it while idle) is sent once more on a fresh connection if it is idempotent and its body
can be replayed (a POST is never sent twice).

The ClientSession is still used for WebSocket upgrades (`session`, created lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict, CIMultiDictProxy

from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendConnectError, BackendError, BackendTimeout, ProxyError
from regional_lb.headers import HOP_BY_HOP

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_READ_BUFSIZE = 2**16
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


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


class _Body:
    """A response body already read in full (LeanConnection), or the error that cut it short:
    the StreamReader calls the proxy uses."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes | BaseException) -> None:
        self._data = data

    async def read(self) -> bytes:
        if isinstance(self._data, BaseException):
            raise self._data
        return self._data

    async def iter_any(self) -> AsyncIterator[bytes]:
        if isinstance(self._data, BaseException):
            raise self._data
        if self._data:
            yield self._data

    def is_eof(self) -> bool:
        return True


class UpstreamResponse:
    """The part of aiohttp.ClientResponse the proxy uses: status, reason, headers, content,
    content_length, read(), release() (keep the connection) and close() (drop it)."""

    __slots__ = ("_done", "_headers", "_pool", "_proto", "content", "content_length", "raw", "reason", "status")

    def __init__(self, status: int, reason: str, headers: CIMultiDictProxy[str] | None, content: Any,
                 proto: Any, pool: _BackendPool, raw: ResponseHead | None = None) -> None:
        self.status = status
        self.reason = reason
        self._headers = headers
        self.raw = raw                   # the head as LeanConnection read it (None: aiohttp's parser)
        self.content = content
        if raw is not None:
            self.content_length: int | None = raw.length
        else:
            assert headers is not None
            cl = headers.get("Content-Length")
            self.content_length = int(cl) if cl is not None and cl.isdigit() else None
        self._proto = proto
        self._pool = pool
        self._done = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            assert self.raw is not None
            self._headers = self.raw.headers()
        return self._headers

    async def read(self) -> bytes:
        try:
            return await self.content.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.close()
            raise

    def release(self) -> None:
        """Give the connection back for reuse if the response was read to its end."""
        if self._done:
            return
        self._done = True
        proto = self._proto
        if proto.should_close or not proto.is_connected() or not self.content.is_eof():
            proto.close()
        else:
            self._pool.put(proto)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._proto.close()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason}>"



_SMALL = 64 * 1024                 # a response body up to this is collected here, in one piece


class _Handed(Exception):
    """the response is not one LeanConnection reads itself: aiohttp's parser takes the connection"""


_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.1 ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?"
    rb"((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*)*)")
_HOP_BY_HOP_B = frozenset(name.encode() for name in HOP_BY_HOP)
_LB_NAMES_B = frozenset({b"x-lb-region", b"x-lb-backend"})
_SPECIAL_B = _HOP_BY_HOP_B | _LB_NAMES_B | {b"content-length"}


class ResponseHead:
    """A plain HTTP/1.1 response head as LeanConnection reads it.

    `block` is the header lines a proxy passes on (hop-by-hop ones removed), ready to send;
    None when the backend's Connection header names other headers (then use `headers()`).
    `headers()` decodes every line (as aiohttp does) only when someone asks."""

    __slots__ = ("block", "close", "lb_named", "length", "lines", "need", "reason", "reason_raw", "status")

    def __init__(self, status: int, reason_raw: bytes, lines: list[bytes], block: bytes | None,
                 length: int | None, need: int, close: bool, lb_named: bool) -> None:
        self.status = status
        self.reason_raw = reason_raw
        self.reason = reason_raw.decode("latin-1")
        self.lines = lines
        self.block = block
        self.length = length
        self.need = need
        self.close = close
        self.lb_named = lb_named

    def headers(self) -> CIMultiDictProxy[str]:
        pairs = []
        for line in self.lines:
            name, _, value = line.partition(b":")
            pairs.append((name.decode("ascii"), value.strip(b" \t").decode("utf-8", "surrogateescape")))
        return CIMultiDictProxy(CIMultiDict(pairs))


class LeanResponse:
    """A complete small response read by LeanConnection (or its head and the error that cut
    its body short)."""

    __slots__ = ("body", "head")

    def __init__(self, head: ResponseHead, body: bytes | BaseException) -> None:
        self.head = head
        self.body = body


def parse_response_head(head: bytes, *, head_request: bool) -> ResponseHead | None:
    """The head of a plain HTTP/1.1 response with a Content-Length up to 64 KiB (or no body by
    its status or method), else None (aiohttp's parser takes such responses)."""
    m = _RESPONSE_HEAD.fullmatch(head)
    if m is None:
        return None
    status = int(m.group(1))
    if status < 200:                   # 1xx (103 Early Hints, ...): aiohttp's parser
        return None
    lines = m.group(3).split(b"\r\n")
    del lines[0]                       # the group starts with CRLF
    kept: list[bytes] = []
    length: int | None = None
    close = False
    generic = False
    lb_named = False
    for line in lines:
        name = line[:line.index(b":")].lower()
        if name not in _SPECIAL_B:
            kept.append(line)
            continue
        value = line[len(name) + 1:].strip(b" \t")
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
            kept.append(line)
        elif name == b"transfer-encoding":
            return None
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")} - {b""}
            close = close or b"close" in tokens
            generic = generic or not tokens <= {b"close", b"keep-alive"}
        elif name in _LB_NAMES_B:
            lb_named = True
            kept.append(line)
    if head_request or status in (204, 304):
        need = 0
    elif length is None or length > _SMALL:
        return None
    else:
        need = length
    block = None if generic else b"".join([line + b"\r\n" for line in kept])
    return ResponseHead(status, m.group(2) or b"", lines, block, length, need, close, lb_named)


class Deadlines:
    """Read timeouts of the LeanConnections waiting for a response: one periodic sweep (every
    read_timeout / 8, at most 1 s) while any waits, instead of a timer per request. A response
    times out between read_timeout and read_timeout + the sweep interval after its last byte."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.waiting: set[LeanConnection] = set()
        self._every = min(1.0, timeout / 8) if timeout else 1.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn: LeanConnection) -> None:
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


class LeanConnection(asyncio.Protocol):
    """A keep-alive connection to a backend that reads small plain responses itself.

    A response with a Content-Length up to 64 KiB (or none by its status / HEAD) is parsed here
    (`exchange` returns a LeanResponse). Anything else -- chunked, unknown length, large, 1xx,
    HTTP/1.0, or a head this strict grammar does not accept -- is handed, with every byte read
    so far, to aiohttp's ResponseHandler on the same transport (`exchange` raises _Handed with
    it), as the fast client-facing path hands off to aiohttp's server."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_head: int, deadlines: Deadlines) -> None:
        self.loop = loop
        self.max_head = max_head
        self.deadlines = deadlines
        self.deadline = 0.0
        self.transport: asyncio.Transport | None = None
        self.should_close = False
        self.writing_paused = False
        self._buf = b""
        self._head_request = False
        self._parsed: ResponseHead | None = None
        self._body_at = 0
        self._waiter: asyncio.Future[LeanResponse] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._handed_to: ResponseHandler | None = None
        self._settings: dict[str, Any] = {}

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.should_close = True
        self._wake_drain()
        if self._waiter is not None and not self._waiter.done():
            if self._parsed is not None:        # after the head: the body read fails (as with aiohttp)
                self._finish_partial(aiohttp.ClientPayloadError("Response payload is not completed"))
            elif self._buf:
                self._finish(exc=aiohttp.ClientOSError(f"backend closed the connection mid-head: {exc}"))
            else:
                self._finish(exc=aiohttp.ServerDisconnectedError())

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
        if self._waiter is None:            # bytes nobody asked for: never reuse this connection
            self.should_close = True
            return
        buf = self._buf = self._buf + data if self._buf else data
        if self.deadlines.timeout:
            self.deadline = self.loop.time() + self.deadlines.timeout
        if self._parsed is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_head:
                    self._hand_off()
                return
            parsed = parse_response_head(buf[:end], head_request=self._head_request)
            if parsed is None:
                self._hand_off()
                return
            self._parsed = parsed
            self._body_at = end + 4
        parsed = self._parsed
        need = parsed.need
        have = len(buf) - self._body_at
        if have < need:
            return
        if parsed.close or have > need:     # more than the response: do not trust the rest
            self.should_close = True
        self._finish(LeanResponse(parsed, buf[self._body_at:self._body_at + need]))

    def eof_received(self) -> bool:
        return False

    # -- requests ---------------------------------------------------------------------------------
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def force_close(self) -> None:
        self.should_close = True

    def close(self) -> None:
        self.should_close = True
        if self.transport is not None:
            self.transport.close()
        if self._handed_to is not None:
            self._handed_to.close()

    def expect(self, *, head_request: bool, settings: dict[str, Any]) -> asyncio.Future[LeanResponse]:
        """Wait for the response to a request about to be written."""
        self._buf = b""
        self._parsed = None
        self._head_request = head_request
        self._settings = settings
        waiter = self._waiter = self.loop.create_future()
        deadlines = self.deadlines
        if deadlines.timeout:
            self.deadline = self.loop.time() + deadlines.timeout
            deadlines.add(self)
        return waiter

    def timed_out(self) -> None:
        """No response byte for read_timeout (called by Deadlines)."""
        if self._waiter is None:
            return
        if self._parsed is not None:
            self._finish_partial(TimeoutError())
        else:
            self._finish(exc=TimeoutError())
        self.close()

    def _finish_partial(self, exc: BaseException) -> None:
        """The head arrived, the body did not: a response whose body read raises `exc`."""
        assert self._parsed is not None
        self.should_close = True
        self._finish(LeanResponse(self._parsed, exc))

    def _finish(self, result: LeanResponse | None = None, exc: BaseException | None = None) -> None:
        waiter, self._waiter = self._waiter, None
        self.deadlines.waiting.discard(self)
        self._buf = b""
        self._parsed = None
        if waiter is None or waiter.done():
            return
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(result)  # type: ignore[arg-type]

    def _hand_off(self) -> None:
        transport = self.transport
        buf = self._buf
        self._buf = b""
        assert transport is not None
        proto = ResponseHandler(self.loop)
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.set_response_params(skip_payload=self._head_request, **self._settings)
        if self.writing_paused:
            proto.pause_writing()
        self._handed_to = proto
        self.transport = None
        self.should_close = True
        self._finish(exc=_Handed(proto))
        proto.data_received(buf)
        self._wake_drain()

class _BackendPool:
    """Idle keep-alive connections to one backend (most recently used first)."""

    __slots__ = ("host", "idle", "keepalive", "loop", "max_idle", "port")

    def __init__(self, host: str, port: int, *, keepalive: float, max_idle: int) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: list[tuple[Any, float]] = []      # LeanConnection or (after a hand-off) ResponseHandler
        self.loop = asyncio.get_running_loop()

    def get(self) -> Any:
        now = self.loop.time()
        idle = self.idle
        while idle:
            proto, since = idle.pop()
            if proto.is_connected() and now - since < self.keepalive and not proto.should_close:
                return proto
            proto.close()
        return None

    def put(self, proto: Any) -> None:
        if len(self.idle) >= self.max_idle:
            proto.close()
            return
        self.idle.append((proto, self.loop.time()))

    def close(self) -> None:
        for proto, _ in self.idle:
            proto.close()
        self.idle.clear()


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
        self._params = {"read_until_eof": False, "auto_decompress": False, "read_timeout": read_timeout,
                        "read_bufsize": _READ_BUFSIZE, "max_line_size": max_header_size,
                        "max_field_size": max_header_size}

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

    async def _connect(self, backend: Backend) -> LeanConnection:
        loop = asyncio.get_running_loop()
        max_head = self.max_header_size
        if self._deadlines is None:
            self._deadlines = Deadlines(loop, self.read_timeout)
        deadlines = self._deadlines
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: LeanConnection(loop, max_head=max_head, deadlines=deadlines),
                                                        backend.host, backend.port)
        except TimeoutError:
            raise BackendConnectError(f"connect to {backend.id} timed out") from None
        except OSError as exc:
            raise BackendConnectError(f"cannot connect to {backend.id}: {exc.strerror or exc}") from None
        return proto

    # -- requests ------------------------------------------------------------------------
    async def send(self, backend: Backend, method: str, path: str, headers: Any,
                   body: Any) -> UpstreamResponse:
        pool = self._pool(backend)
        replayable = method in _IDEMPOTENT and (body is None or isinstance(body, bytes | bytearray))
        proto = pool.get()
        if proto is not None:
            try:
                return await self._exchange(proto, pool, backend, method, path, headers, body)
            except _StaleConnection:
                if not replayable:
                    raise BackendError(f"backend {backend.id} closed a kept-alive connection") from None
        proto = await self._connect(backend)
        try:
            return await self._exchange(proto, pool, backend, method, path, headers, body)
        except _StaleConnection:
            raise BackendError(f"backend {backend.id} closed the connection") from None

    async def _exchange(self, proto: Any, pool: _BackendPool, backend: Backend, method: str,
                        path: str, headers: Any, body: Any) -> UpstreamResponse:
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
        head_request = method == "HEAD"
        lean = isinstance(proto, LeanConnection)
        if not lean and (proto._parser is None or proto._skip_payload is not head_request):
            # a new parser only when the connection is new or HEAD-ness changes (the C parser
            # handles successive responses on one connection)
            proto.set_response_params(skip_payload=head_request, **self._params)
        transport = proto.transport
        if transport is None or transport.is_closing():
            proto.close()
            raise _StaleConnection()
        waiter = proto.expect(head_request=head_request, settings=self._params) if lean else None
        writer: asyncio.Task[None] | None = None
        if streamed:
            transport.write(head)
            writer = asyncio.create_task(self._write_body(proto, body, chunked="Content-Length" not in headers))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
            writer.add_done_callback(lambda t: t.cancelled() or t.exception() is None or proto.close())
        else:
            transport.write(head + body if body else head)
        try:
            if waiter is not None:
                try:
                    got = await waiter
                except _Handed as handed:            # not a small plain response: aiohttp reads it
                    proto = handed.args[0]
                    proto.start_timeout()
                    message, payload = await proto.read()
                else:
                    if writer is not None and not writer.done():
                        proto.force_close()
                        writer.cancel()
                    rh = got.head
                    return UpstreamResponse(rh.status, rh.reason, None, _Body(got.body), proto, pool, raw=rh)
            else:
                proto.start_timeout()
                message, payload = await proto.read()
        except (TimeoutError, aiohttp.ClientError, OSError, aiohttp.EofStream) as exc:
            proto.close()
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
            if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.EofStream | ConnectionResetError) \
                    and not streamed:
                raise _StaleConnection() from exc
            if writer is not None and writer.done() and not writer.cancelled() and writer.exception():
                failed = writer.exception()
                if isinstance(failed, ProxyError):
                    raise failed from exc
                raise BackendError(f"sending the request body failed: {type(failed).__name__}") from exc
            raise translate(exc, backend=backend) from exc
        except BaseException:
            proto.close()
            if writer is not None:
                writer.cancel()
            raise
        if writer is not None and not writer.done():
            # the backend answered before taking the whole body: do not reuse the connection
            proto.force_close()
            writer.cancel()
        return UpstreamResponse(message.code, message.reason, message.headers, payload, proto, pool)

    async def _write_body(self, proto: Any, body: AsyncIterable[bytes] | aiohttp.StreamReader,
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


class _StaleConnection(Exception):
    """the connection was closed before any response byte (retry on a fresh one)"""
