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
from collections.abc import AsyncIterable, Iterable
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDictProxy

from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendConnectError, BackendError, BackendTimeout, ProxyError

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


def serialize_head(method: str, path: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and header block. Values with CR/LF are refused (header injection)."""
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("\r\n")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) or "\r\r" in text or text.count("\r") != len(lines):
        raise ValueError("a header or the request line contains a line break")
    return text.encode("latin-1", "replace")


class UpstreamResponse:
    """The part of aiohttp.ClientResponse the proxy uses: status, reason, headers, content,
    content_length, read(), release() (keep the connection) and close() (drop it)."""

    __slots__ = ("_done", "_pool", "_proto", "content", "content_length", "headers", "reason", "status")

    def __init__(self, message: Any, payload: aiohttp.StreamReader, proto: ResponseHandler,
                 pool: _BackendPool) -> None:
        self.status: int = message.code
        self.reason: str = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = payload
        cl = self.headers.get("Content-Length")
        self.content_length: int | None = int(cl) if cl is not None and cl.isdigit() else None
        self._proto = proto
        self._pool = pool
        self._done = False

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


class _BackendPool:
    """Idle keep-alive connections to one backend (most recently used first)."""

    __slots__ = ("host", "idle", "keepalive", "loop", "max_idle", "port")

    def __init__(self, host: str, port: int, *, keepalive: float, max_idle: int) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: list[tuple[ResponseHandler, float]] = []
        self.loop = asyncio.get_running_loop()

    def get(self) -> ResponseHandler | None:
        now = self.loop.time()
        idle = self.idle
        while idle:
            proto, since = idle.pop()
            if proto.is_connected() and now - since < self.keepalive and not proto.should_close:
                return proto
            proto.close()
        return None

    def put(self, proto: ResponseHandler) -> None:
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

    async def _connect(self, backend: Backend) -> ResponseHandler:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(lambda: ResponseHandler(loop), backend.host, backend.port)
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

    async def _exchange(self, proto: ResponseHandler, pool: _BackendPool, backend: Backend, method: str,
                        path: str, headers: Any, body: Any) -> UpstreamResponse:
        items = list(headers.items())
        if "Host" not in headers:                # an HTTP/1.0 client sent none; HTTP/1.1 needs one
            items.append(("Host", backend_origin(backend).split("://", 1)[1]))
        streamed = body is not None and not isinstance(body, bytes | bytearray)
        if streamed and "Content-Length" not in headers:
            items.append(("Transfer-Encoding", "chunked"))
        elif body is None and method in ("POST", "PUT", "PATCH"):
            items.append(("Content-Length", "0"))
        head = serialize_head(method, path, items)
        head_request = method == "HEAD"
        if proto._parser is None or proto._skip_payload is not head_request:
            # a new parser only when the connection is new or HEAD-ness changes (the C parser
            # handles successive responses on one connection)
            proto.set_response_params(skip_payload=head_request, read_until_eof=False, auto_decompress=False,
                                      read_timeout=self.read_timeout, read_bufsize=_READ_BUFSIZE,
                                      max_line_size=self.max_header_size, max_field_size=self.max_header_size)
        transport = proto.transport
        if transport is None or transport.is_closing():
            proto.close()
            raise _StaleConnection()
        writer: asyncio.Task[None] | None = None
        if streamed:
            transport.write(head)
            writer = asyncio.create_task(self._write_body(proto, body, chunked="Content-Length" not in headers))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
            writer.add_done_callback(lambda t: t.cancelled() or t.exception() is None or proto.close())
        else:
            transport.write(head + body if body else head)
        proto.start_timeout()
        try:
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
        return UpstreamResponse(message, payload, proto, pool)

    async def _write_body(self, proto: ResponseHandler, body: AsyncIterable[bytes] | aiohttp.StreamReader,
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
        if self._session is not None:
            await self._session.close()
            self._session = None


class _StaleConnection(Exception):
    """the connection was closed before any response byte (retry on a fresh one)"""
