"""WebSocket upgrades relayed to the backend the route's policy picks  [edge].

The backend is picked exactly as for a plain request (so sticky cookies and hashes send a
session's socket to its server); the proxy connects to it first (ClientSession.ws_connect),
then accepts the client's upgrade with the subprotocol the backend chose, and relays
messages both ways until either side closes; the close code is passed on.
A backend that refuses the upgrade gets the client a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.web_request import BaseRequest

from regional_lb.balancing.base import RequestInfo
from regional_lb.proxy.upstream import backend_origin

if TYPE_CHECKING:
    from regional_lb.app import RouteRuntime
    from regional_lb.proxy.handler import ProxyHandler

_WS_OWN = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                     "sec-websocket-protocol", "host", "content-length"})


async def _pump(src: Any, dst: Any) -> None:
    async for msg in src:
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


async def proxy_websocket(handler: ProxyHandler, request: BaseRequest, rr: RouteRuntime, info: RequestInfo,
                          out_headers: Any) -> web.StreamResponse:
    lb = handler.lb
    clock = lb.clock
    t0 = clock()
    pool = rr.pool.pool
    key = rr.policy.sticky_key(info)
    stuck = await lb.store.get_sticky(rr.route.name, key) if key else None
    now = clock()
    pick = rr.policy.pick(info, pool.candidates(now).list, now=now, rng=lb.rng, stuck_to=stuck)
    if pick is None:
        return handler._error(request, rr, 503, "no backend available\n", t0, "-", "none")
    backend = pick.backend
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    headers = {k: v for k, v in out_headers.items() if k.lower() not in _WS_OWN}
    headers["Host"] = info.host or backend.id
    pool.request_started(backend.id)
    ok = True
    try:
        try:
            upstream_ws = await lb.upstream.session.ws_connect(
                backend_origin(backend) + info.path, headers=headers, protocols=protocols,
                autoclose=False, autoping=False, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                max_msg_size=0)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok = False
            return handler._error(request, rr, 502, f"backend {backend.id} refused the websocket: "
                                  f"{type(exc).__name__}\n", t0, backend.id, pick.reason)
        async with upstream_ws:
            client_ws = web.WebSocketResponse(protocols=[upstream_ws.protocol] if upstream_ws.protocol else (),
                                              autoclose=False, autoping=False, max_msg_size=0)
            if lb.config.lb_headers:
                client_ws.headers["X-LB-Region"] = lb.rt.region
                client_ws.headers["X-LB-Backend"] = backend.id
            if pick.set_cookie:
                client_ws.headers.add("Set-Cookie", pick.set_cookie)
            await client_ws.prepare(request)
            handler._account(request, rr, 101, t0, backend.id, pick.reason)
            a = asyncio.create_task(_pump(client_ws, upstream_ws))
            b = asyncio.create_task(_pump(upstream_ws, client_ws))
            try:
                done, _pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (a, b):
                    t.cancel()
                for t in (a, b):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
            code = upstream_ws.close_code if b in done else client_ws.close_code
            code = code or aiohttp.WSCloseCode.OK
            with contextlib.suppress(Exception):
                await client_ws.close(code=code)
            with contextlib.suppress(Exception):
                await upstream_ws.close(code=code)
            return client_ws
    finally:
        pool.request_finished(backend.id, ok=ok, latency=None, now=clock())
