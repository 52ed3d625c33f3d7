"""What the CONNECT and WebSocket paths need of the request handler  [edge: protocol only].

proxy/connect.py and proxy/websocket.py are called by proxy/handler.py and answer through
these hooks, so they name this protocol instead of importing the handler (no import cycle).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_request import BaseRequest

from regional_lb.balancing.base import RequestInfo
from regional_lb.runtime import RouteRuntime
from regional_lb.seams import ProxyContext


class ExchangeHooks(Protocol):
    """regional_lb.proxy.handler.ProxyHandler as the CONNECT / WebSocket paths see it."""

    lb: ProxyContext

    def _error(self, request: BaseRequest, rr: RouteRuntime, status: int, text: str, t0: float,
               backend: str, reason: str, *, close: bool = False, account: bool = True) -> web.Response: ...

    def _account(self, request: BaseRequest, rr: RouteRuntime, status: int, t0: float, backend: str,
                 reason: str) -> None: ...

    async def _sticky_bookkeeping(self, rr: RouteRuntime, info: RequestInfo, pick: Any, up: Any) -> None: ...
