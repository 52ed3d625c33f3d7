"""Helpers for the admin APIs of both programs  [edge].

* `require_token`: a handler decorator that refuses mutating calls without
  `Authorization: Bearer <token>` (401) and all of them when no token is configured (403).
* `metrics_handler`: Prometheus text exposition of a `CollectorRegistry`.
* `json_error`: one shape for error bodies: {"error": "..."}.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ADMIN_TOKEN: web.AppKey[str | None] = web.AppKey("admin_token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def require_token(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        token = request.app.get(ADMIN_TOKEN)
        if not token:
            return json_error(403, "mutating admin calls are disabled: no admin token configured")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            resp = json_error(401, "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
            return resp
        return await handler(request)

    return wrapped


def metrics_handler(registry: CollectorRegistry,
                    before: Callable[[], Awaitable[None]] | None = None) -> Handler:
    """`before`: awaited before each scrape (a supervisor asks its workers for their counters)."""
    async def metrics(_request: web.Request) -> web.Response:
        if before is not None:
            await before()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
