"""The admin API (aiohttp, loopback by default)  [edge].

    GET  /metrics                                             Prometheus text
    GET  /api/pools                                           backends: health, admin, in-flight, sticky
                                                              (with workers: summed over them, and
                                                              `ejected_in_workers`: regional_lb/supervisor.py)
    POST /api/pools/{pool}/backends/{id}/{drain|maintenance|ready}   (bearer token)
         drain takes an optional JSON body {"deadline": seconds-from-now}
    POST /api/reload                                          (bearer token) re-read the config file
    GET  /api/workers                                         worker processes: id, pid, ready, restarts, config
                                                              generation, requests proxied ([] with workers: 1)
    GET  /api/status/pools                                    /api/pools with each backend's requests and
                                                              5xx answers (Metrics.backend_counts), and the
                                                              routes using each pool: what the stats page shows
    GET  /                                                    the stats page (regional_lb/status/, served from
                                                              the package by gslb/common/statuspage.py)
    GET  /lb/healthz (or the configured path)                 as on every listener

Mutating calls need `Authorization: Bearer <admin.token>` (gslb.common.admin.require_token).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gslb.common.admin import ADMIN_TOKEN, json_error, require_token
from gslb.common.statuspage import add_status_page

if TYPE_CHECKING:
    from regional_lb.seams import AdminTarget

LB: web.AppKey[Any] = web.AppKey("lb", object)
ADMIN_STATES = ("drain", "maintenance", "ready")
STATUS_FILES = {
    "index.html": ("regional_lb", "status/index.html"),
    "stats.js": ("regional_lb", "status/stats.js"),
}


async def _pools(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    return web.json_response(await lb.pools_report())


async def _status_pools(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    pools = await lb.pools_report()
    await lb.refresh_metrics()                  # the workers' counts, when there are workers
    counts = lb.metrics.backend_counts()
    for name, pool in pools.items():
        for row in pool["backends"]:
            row["requests"], row["errors"] = counts.get((name, str(row["id"])), (0, 0))
        pool["routes"] = [{"name": rr.route.name, "host": rr.route.host, "path": rr.route.path,
                           "policy": rr.route.policy}
                          for rr in lb.rt.routes.values() if rr.pool.name == name]
    return web.json_response({"region": lb.config.region, "role": lb.config.role, "pools": pools,
                              "token_required": bool(lb.config.admin.token)})


@require_token
async def _set_admin(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
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
    await lb.set_admin(pool_name, backend_id, state, deadline)
    report = await lb.pools_report()
    row = next(r for r in report[pool_name]["backends"] if r["id"] == backend_id)
    return web.json_response({"pool": pool_name, "backend": row})


@require_token
async def _reload(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    ok, message = await lb.reload()
    return web.json_response({"ok": ok, "message": message}, status=200 if ok else 400)


async def _metrics(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    await lb.refresh_metrics()          # workers' counters, when there are workers; reads only
    body = generate_latest(lb.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _workers(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    return web.json_response({"workers": await lb.workers_report()})


async def _healthz(request: web.Request) -> web.Response:
    lb: AdminTarget = request.app[LB]
    status, body = lb.healthz_body()
    return web.Response(status=status, body=body, content_type="application/json")


def make_admin_app(lb: AdminTarget) -> web.Application:
    app = web.Application()
    app[LB] = lb
    app[ADMIN_TOKEN] = lb.config.admin.token
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/pools", _pools)
    app.router.add_post("/api/pools/{pool}/backends/{backend}/{state}", _set_admin)
    app.router.add_post("/api/reload", _reload)
    app.router.add_get("/api/status/pools", _status_pools)
    app.router.add_get("/api/workers", _workers)
    app.router.add_get(lb.config.health_endpoint.path, _healthz)
    if lb.config.health_endpoint.path not in ("/", "/static/{name}"):   # (a health path of "/" wins)
        add_status_page(app, STATUS_FILES)
    return app
