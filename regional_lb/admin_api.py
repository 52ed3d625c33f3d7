"""The admin API (aiohttp, loopback by default)  [edge].

    GET  /metrics                                             Prometheus text
    GET  /api/pools                                           backends: health, admin, in-flight, sticky
    POST /api/pools/{pool}/backends/{id}/{drain|maintenance|ready}   (bearer token)
         drain takes an optional JSON body {"deadline": seconds-from-now}
    POST /api/reload                                          (bearer token) re-read the config file
    GET  /lb/healthz (or the configured path)                 as on every listener

Mutating calls need `Authorization: Bearer <admin.token>` (gslb.common.admin.require_token).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gslb.common.admin import ADMIN_TOKEN, json_error, metrics_handler, require_token

if TYPE_CHECKING:
    from regional_lb.app import LoadBalancer

LB: web.AppKey[Any] = web.AppKey("lb", object)
ADMIN_STATES = ("drain", "maintenance", "ready")


async def _pools(request: web.Request) -> web.Response:
    lb: LoadBalancer = request.app[LB]
    return web.json_response(await lb.pools_report())


@require_token
async def _set_admin(request: web.Request) -> web.Response:
    lb: LoadBalancer = request.app[LB]
    pool_name = request.match_info["pool"]
    backend_id = request.match_info["backend"]
    state = request.match_info["state"]
    if state not in ADMIN_STATES:
        return json_error(404, f"unknown state {state!r}; use one of {', '.join(ADMIN_STATES)}")
    pr = lb.rt.pools.get(pool_name)
    if pr is None:
        return json_error(404, f"no pool {pool_name!r}")
    if pr.pool.backend(backend_id) is None:
        return json_error(404, f"no backend {backend_id!r} in pool {pool_name!r}")
    now = lb.clock()
    deadline = None
    if request.can_read_body:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "body must be JSON, e.g. {\"deadline\": 300}")
        if not isinstance(body, dict) or set(body) - {"deadline"}:
            return json_error(400, "the only field is \"deadline\" (seconds from now)")
        if body.get("deadline") is not None:
            value = body["deadline"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return json_error(400, "deadline must be a number of seconds >= 0")
            deadline = now + float(value)
    pr.pool.set_admin(backend_id, state, now, deadline)
    report = await lb.pools_report()
    row = next(r for r in report[pool_name]["backends"] if r["id"] == backend_id)
    return web.json_response({"pool": pool_name, "backend": row})


@require_token
async def _reload(request: web.Request) -> web.Response:
    lb: LoadBalancer = request.app[LB]
    ok, message = await lb.reload()
    return web.json_response({"ok": ok, "message": message}, status=200 if ok else 400)


async def _healthz(request: web.Request) -> web.Response:
    lb: LoadBalancer = request.app[LB]
    status, body = lb.healthz_body()
    return web.Response(status=status, body=body, content_type="application/json")


def make_admin_app(lb: LoadBalancer) -> web.Application:
    app = web.Application()
    app[LB] = lb
    app[ADMIN_TOKEN] = lb.config.admin.token
    app.router.add_get("/metrics", metrics_handler(lb.metrics.registry))
    app.router.add_get("/api/pools", _pools)
    app.router.add_post("/api/pools/{pool}/backends/{backend}/{state}", _set_admin)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get(lb.config.health_endpoint.path, _healthz)
    return app
