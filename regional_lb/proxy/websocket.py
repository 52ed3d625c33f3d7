"""WebSocket upgrades relayed to the backend the route's policy picks  [edge].

The backend is picked exactly as for a plain request (so sticky cookies and hashes send a
session's socket to its server); the proxy connects to it first (ClientSession.ws_connect),
then accepts the client's upgrade with the subprotocol the backend chose, and relays
messages both ways until either side closes; the close code is passed on. A relay with no
message either way (data, ping or pong) for `timeouts.tunnel` (default 1h; HAProxy's `timeout
tunnel`, regional_lb/proxy/idle.py) is closed with 1001 (going away) to both the client and the
backend, logged at info and counted in `rlb_tunnels_closed_total{kind="websocket", reason="idle"}`;
any message either way starts the wait again; a client that stopped reading (bytes queued for it)
is dropped without a closing handshake. However a relay ends, the two closing handshakes run
side by side, each at most 10s (drain and close reply: a peer that never reads or never answers
holds nothing longer); a client whose bytes are still queued after it is dropped.

Re-dispatch follows a GET's rules (regional_lb/retry.py, the pool's attempts and retry
budget): a sticky backend that is down or ejected is not a candidate, so the policy moves
the session; one that refuses the connection (nothing sent) or drops it before answering
the handshake is excluded and the policy picks again. Either way the client is told nothing
but the 101, which carries the policy's new Set-Cookie (the session is re-issued to the new
backend). A backend that answers the handshake with anything but 101 is a response, not
retried: the client gets a 502, as when every try failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from regional_lb.balancing.base import Pick, RequestInfo
from regional_lb.errors import BackendConnectError
from regional_lb.proxy.hooks import ExchangeHooks
from regional_lb.proxy.idle import IdleTimer
from regional_lb.proxy.upstream import backend_origin, translate
from regional_lb.retry import may_retry
from regional_lb.runtime import RouteRuntime

log = logging.getLogger("regional_lb.proxy")
_NONE: frozenset[str] = frozenset()
_CLOSE_LIMIT = 10.0            # seconds: each side's closing handshake, drain included


class _NoHeaders:
    """The 101's headers as sticky bookkeeping reads them: nothing to learn from."""

    headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


_NO_HEADERS: Any = _NoHeaders()
_WS_OWN = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                     "sec-websocket-protocol", "host", "content-length"})


async def _pump(src: Any, dst: Any, touch: Callable[[], None]) -> None:
    async for msg in src:
        touch()
        if msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await dst.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await dst.pong(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break


async def _close(ws: Any, code: int) -> None:
    """A closing handshake, bounded: aiohttp's waits for the peer's close frame (10s client, 5s
    backend) but not for the drain before it, which a peer that does not read holds for ever."""
    try:
        async with asyncio.timeout(_CLOSE_LIMIT):
            await ws.close(code=code)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise                               # this task is being cancelled
        # else aiohttp's drain waiter, shared by a connection's writers, was cancelled with the pump
        # blocked on it: the close frame is queued, the transport closing (dropped below if stuck)
    except Exception:
        pass


async def proxy_websocket(handler: ExchangeHooks, request: BaseRequest, rr: RouteRuntime, info: RequestInfo,
                          out_headers: Any) -> web.StreamResponse:
    lb = handler.lb
    clock = lb.clock
    t0 = clock()
    prt = rr.pool
    pool = prt.pool
    policy = rr.policy
    key = policy.sticky_key(info)
    stuck = await lb.store.get_sticky(rr.route.name, key) if key else None
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = {k: v for k, v in out_headers.items() if k.lower() not in _WS_OWN}
    tried: set[str] = set()
    retrying = False
    failed: tuple[str, str, str] | None = None          # (backend id, pick reason, why) of the last try
    prt.active += 1
    try:
        for attempt in range(prt.attempts):
            now = clock()
            pick = policy.pick(info, pool.candidates(now).list, now=lb.wall(), rng=lb.rng, stuck_to=stuck,
                               exclude=frozenset(tried) if tried else _NONE)
            if pick is None:
                if failed is not None:
                    break
                return handler._error(request, rr, 503, "no backend available\n", t0, "-", "none")
            backend = pick.backend
            headers["Host"] = info.host or backend.id
            pool.request_started(backend.id)
            try:
                upstream_ws = await lb.upstream.session.ws_connect(
                    URL(backend_origin(backend) + info.path, encoded=True),   # the target as routed, not requoted
                    headers=headers, protocols=protocols,
                    autoclose=False, autoping=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0), max_msg_size=0)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                pool.request_finished(backend.id, ok=False, latency=None, now=clock())
                failed = (backend.id, pick.reason, type(exc).__name__)
                if isinstance(exc, aiohttp.WSServerHandshakeError):
                    break                       # the backend answered: like a GET's response, not retried
                sent = not isinstance(translate(exc, backend=backend), BackendConnectError)
                if (attempt + 1 < prt.attempts and may_retry(request.method, sent=sent, body_streamed=False)
                        and prt.budget.can_retry(prt.active)):
                    tried.add(backend.id)
                    if retrying:
                        prt.budget.retry_finished()
                    prt.budget.retry_started()
                    retrying = True
                    lb.metrics.retries.labels(rr.route.name, "connect" if not sent else "reset").inc()
                    log.debug("websocket: retrying after %s on %s", type(exc).__name__, backend.id)
                    continue
                break
            return await _relay(handler, request, rr, info, pick, upstream_ws, t0)
    finally:
        prt.active -= 1
        if retrying:
            prt.budget.retry_finished()
    assert failed is not None
    backend_id, reason, why = failed
    return handler._error(request, rr, 502, f"backend {backend_id} refused the websocket: {why}\n", t0,
                          backend_id, reason)


async def _relay(handler: ExchangeHooks, request: BaseRequest, rr: RouteRuntime, info: RequestInfo, pick: Pick,
                 upstream_ws: aiohttp.ClientWebSocketResponse, t0: float) -> web.StreamResponse:
    """Accept the client's upgrade (101, with the pick's Set-Cookie) and relay until one side closes."""
    lb = handler.lb
    backend = pick.backend
    pool = rr.pool.pool
    try:
        async with upstream_ws:
            client_ws = web.WebSocketResponse(protocols=[upstream_ws.protocol] if upstream_ws.protocol else (),
                                              autoclose=False, autoping=False, max_msg_size=0)
            if lb.config.lb_headers:
                client_ws.headers["X-LB-Region"] = lb.rt.region
                client_ws.headers["X-LB-Backend"] = backend.id
            if pick.set_cookie:
                client_ws.headers.add("Set-Cookie", pick.set_cookie)
            await client_ws.prepare(request)
            client_transport = request.transport
            handler._account(request, rr, 101, t0, backend.id, pick.reason)
            if rr.bookkeeping:                  # as after a GET: session counts, stick table, metrics
                await handler._sticky_bookkeeping(rr, info, pick, _NO_HEADERS)
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            timer = IdleTimer(lb.config.timeouts.tunnel, functools.partial(idle.set_result, None))  # fires once
            a = asyncio.create_task(_pump(client_ws, upstream_ws, timer.touch))
            b = asyncio.create_task(_pump(upstream_ws, client_ws, timer.touch))
            try:
                done, _pending = await asyncio.wait({a, b, idle}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                idle.cancel()
                for t in (a, b):
                    t.cancel()
                for t in (a, b):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
            if a in done or b in done:
                code = upstream_ws.close_code if b in done else client_ws.close_code
                code = code or aiohttp.WSCloseCode.OK
            else:
                code = aiohttp.WSCloseCode.GOING_AWAY
                log.info("websocket %s -> %s (route %s): no message either way for %gs, closed with 1001",
                         request.remote, backend.id, rr.route.name, timer.idle)
                lb.metrics.tunnels_closed.labels(rr.route.name, "websocket", "idle").inc()
                if client_transport is not None and client_transport.get_write_buffer_size():
                    client_transport.abort()    # not reading: a closing handshake would wait on a drain
            await asyncio.gather(_close(client_ws, code), _close(upstream_ws, code))
            if client_transport is not None and client_transport.get_write_buffer_size():
                client_transport.abort()        # its bytes not taken within _CLOSE_LIMIT: dropped
            return client_ws
    finally:
        pool.request_finished(backend.id, ok=True, latency=None, now=lb.clock())
