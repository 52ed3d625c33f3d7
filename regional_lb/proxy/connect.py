"""CONNECT tunnels on routes that allow them (`allow_connect: true`)  [edge].

A CONNECT request (authority-form, read by regional_lb/target.py; routed by that authority with
path ``/``) on a route without `allow_connect` gets 405 in ProxyHandler.handle. On a route with
it, the route's policy picks a backend as for any request; the proxy opens a TCP connection to
it, sends the CONNECT head (with the usual forwarding headers) and reads the backend's answer:

* 2xx: the client gets ``HTTP/1.1 200 Connection Established`` and bytes are relayed both ways
  (the client's through aiohttp's payload hook, `RequestHandler.set_parser`, so bytes the client
  sent right behind its CONNECT head are relayed too) until either side closes (the other is
  then closed too). Writes wait for the other side to drain (no unbounded buffering).
  A tunnel with no byte either way for `timeouts.tunnel` (default 1h) is closed, both sides
  (HAProxy's `timeout tunnel`; regional_lb/proxy/idle.py): logged at info and counted in
  `rlb_tunnels_closed_total{kind="connect", reason="idle"}`. Any byte either way starts the
  wait again; a side that stops reading (its writes blocked) does not count as traffic, so a
  stuck tunnel is closed too (its unsent bytes are dropped).
* anything else: that status, with a short body, and the connection closed;
* no answer within timeouts.backend_read, an over-long or malformed head: 502 / 504.

The fast path never serves CONNECT (llhttp reports it as an upgrade): it hands the connection to
aiohttp, so this one code path serves both server kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from regional_lb.balancing.base import RequestInfo
from regional_lb.proxy.hooks import ExchangeHooks
from regional_lb.proxy.idle import IdleTimer
from regional_lb.proxy.server import plain_response
from regional_lb.proxy.upstream import serialize_head
from regional_lb.runtime import RouteRuntime

log = logging.getLogger("regional_lb.proxy")

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})[^\r\n]*\r\n")
_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_MAX_HEAD = 16384
_HIGH_WATER = 256 * 1024


class _ToBackend:
    """aiohttp's payload parser slot, after the tunnel is up: the client's bytes go to the backend."""

    def __init__(self, writer: asyncio.StreamWriter, client: asyncio.Transport, timer: IdleTimer) -> None:
        self.writer = writer
        self.client = client
        self.touch = timer.touch
        self._draining: asyncio.Task[None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.writer.is_closing():
            return False, b""
        self.touch()
        self.writer.write(data)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > _HIGH_WATER and self._draining is None:
            self.client.pause_reading()                # resumed when the backend has taken it
            self._draining = asyncio.ensure_future(self._drain())
        return False, b""

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self._draining = None
        if not self.client.is_closing():
            self.client.resume_reading()

    def feed_eof(self) -> None:
        """The client is gone (asyncio closes a transport on EOF): so is the tunnel."""
        self.writer.close()                    # the backend reader sees EOF: proxy_connect ends


def _shut(transport: asyncio.BaseTransport) -> None:
    """Close a transport now: gracefully if nothing is queued, else dropped (a side that does not
    read must not keep it open for ever)."""
    if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("backend closed before its answer")
        head += data
        if len(head) > _MAX_HEAD and b"\r\n\r\n" not in head[:_MAX_HEAD + 4]:
            raise ValueError("backend answer head too long")
    return head


async def proxy_connect(handler: ExchangeHooks, request: BaseRequest, rr: RouteRuntime, info: RequestInfo,
                        out_headers: Any) -> web.StreamResponse:
    lb = handler.lb
    clock = lb.clock
    t0 = clock()
    pool = rr.pool.pool
    now = clock()
    pick = rr.policy.pick(info, pool.candidates(now).list, now=lb.wall(), rng=lb.rng)
    if pick is None:
        return handler._error(request, rr, 503, "no backend available\n", t0, "-", "none", close=True)
    backend = pick.backend
    timeouts = lb.config.timeouts
    pool.request_started(backend.id)
    ok = False
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(timeouts.connect):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
        except (OSError, TimeoutError) as exc:
            return handler._error(request, rr, 502, f"backend {backend.id} refused the tunnel: "
                                  f"{type(exc).__name__}\n", t0, backend.id, pick.reason, close=True)
        writer.write(serialize_head("CONNECT", info.path, list(out_headers.items())))
        try:
            async with asyncio.timeout(timeouts.backend_read):
                head = await _read_head(reader)
        except TimeoutError:
            return handler._error(request, rr, 504, f"backend {backend.id} did not answer the CONNECT\n", t0,
                                  backend.id, pick.reason, close=True)
        except (OSError, ValueError) as exc:
            return handler._error(request, rr, 502, f"backend {backend.id} failed the CONNECT: {exc}\n", t0,
                                  backend.id, pick.reason, close=True)
        m = _STATUS_LINE.match(head)
        if m is None:
            return handler._error(request, rr, 502, f"backend {backend.id} sent an invalid answer\n", t0,
                                  backend.id, pick.reason, close=True)
        status = int(m.group(1))
        if not 200 <= status < 300:
            ok = status < 500
            handler._account(request, rr, status, t0, backend.id, pick.reason)
            return plain_response(status, f"backend {backend.id} refused the tunnel\n", close=True)
        ok = True
        transport = request.transport
        assert transport is not None
        rest = head[head.index(b"\r\n\r\n") + 4:]
        transport.write(_ESTABLISHED + rest)
        handler._account(request, rr, 200, t0, backend.id, pick.reason)
        idle = timeouts.tunnel
        backend_side = writer.transport

        def on_idle() -> None:
            log.info("CONNECT tunnel %s -> %s (route %s): nothing either way for %gs, closed",
                     request.remote, backend.id, rr.route.name, idle)
            lb.metrics.tunnels_closed.labels(rr.route.name, "connect", "idle").inc()
            _shut(backend_side)                # the relay below reads EOF and ends
            _shut(transport)

        timer = IdleTimer(idle, on_idle)
        try:
            up = _ToBackend(writer, transport, timer)
            request.protocol.set_parser(up)  # type: ignore[arg-type]
            await _relay(reader, transport, request.protocol, timer)
        finally:
            timer.cancel()
        proto: Any = request.protocol
        proto.force_close()
        transport.close()
        return web.Response(status=200)        # not sent: the connection is closed
    finally:
        if writer is not None:
            writer.close()
        pool.request_finished(backend.id, ok=ok, latency=None, now=clock())


async def _relay(reader: asyncio.StreamReader, transport: asyncio.Transport, proto: Any, timer: IdleTimer) -> None:
    """Backend -> client until the backend's EOF or the client's transport closes."""
    touch = timer.touch
    while not transport.is_closing():
        data = await reader.read(65536)
        if not data:
            break
        touch()
        transport.write(data)
        if transport.get_write_buffer_size() > _HIGH_WATER:
            with contextlib.suppress(ConnectionError):
                await proto._drain_helper()
