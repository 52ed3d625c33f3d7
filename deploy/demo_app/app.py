"""The demo application: handlers, the header middleware and the app factory  [edge]."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

SESSION_COOKIE = "session"

STATIC: dict[str, tuple[str, bytes]] = {
    "app.css": ("text/css", b"body { font-family: sans-serif; margin: 2em; }\n"),
    "app.js": ("application/javascript", b"console.log('demo app asset');\n"),
    "logo.svg": ("image/svg+xml",
                 b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
                 b'<circle cx="8" cy="8" r="7" fill="#2a7"/></svg>\n'),
}


@dataclass(frozen=True, slots=True)
class AppInfo:
    name: str
    region: str
    session_ttl: int = 1800
    key_prefix: str = "demo:session:"


class SessionStore(Protocol):
    """What the app needs of redis.asyncio.Redis (a fake with these four methods works too)."""

    def get(self, name: str) -> Awaitable[Any]: ...

    def set(self, name: str, value: str, ex: int | None = None) -> Awaitable[Any]: ...

    def delete(self, *names: str) -> Awaitable[Any]: ...

    def ping(self) -> Awaitable[Any]: ...


APP_INFO = web.AppKey("app_info", AppInfo)
REDIS = web.AppKey("redis", SessionStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def stamp_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request.app[APP_INFO]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers["X-App-Server"] = info.name
    response.headers["X-App-Region"] = info.region
    response.headers["X-Seen-Client"] = request.headers.get("X-Forwarded-For", "")
    response.headers["X-Seen-Peer"] = request.remote or ""
    if isinstance(response, web.HTTPException):
        raise response
    return response


def _json(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


async def _session_user(request: web.Request) -> tuple[str | None, str | None]:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return None, None
    info = request.app[APP_INFO]
    try:
        user = await request.app[REDIS].get(info.key_prefix + sid)
    except Exception as exc:
        raise web.HTTPServiceUnavailable(text=f"session store unavailable: {type(exc).__name__}\n") from None
    if isinstance(user, bytes):
        user = user.decode()
    return sid, user


async def login(request: web.Request) -> web.Response:
    info = request.app[APP_INFO]
    user: Any = None
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json(400, error="body is not JSON")
        user = body.get("user") if isinstance(body, dict) else None
    else:
        user = (await request.post()).get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > 200:
        return _json(400, error="give a user: form field or JSON key 'user'")
    sid = secrets.token_urlsafe(24)
    try:
        await request.app[REDIS].set(info.key_prefix + sid, user.strip(), ex=info.session_ttl)
    except Exception as exc:
        return _json(503, error=f"session store unavailable: {type(exc).__name__}")
    response = _json(200, user=user.strip(), server=info.name, region=info.region)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, path="/", samesite="Lax", max_age=info.session_ttl)
    return response


async def me(request: web.Request) -> web.Response:
    info = request.app[APP_INFO]
    _sid, user = await _session_user(request)
    if user is None:
        return _json(401, error="not logged in", server=info.name)
    return _json(200, user=user, server=info.name, region=info.region)


async def logout(request: web.Request) -> web.Response:
    info = request.app[APP_INFO]
    sid, _user = await _session_user(request)
    if sid:
        await request.app[REDIS].delete(info.key_prefix + sid)
    response = _json(200, server=info.name)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return _json(200, server=request.app[APP_INFO].name, method=request.method, path=request.path_qs,
                 host=request.host, headers={k: v for k, v in request.headers.items()}, body_bytes=len(body))


async def static(request: web.Request) -> web.Response:
    asset = STATIC.get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(text="no such asset\n")
    content_type, data = asset
    return web.Response(body=data, content_type=content_type, headers={"Cache-Control": "public, max-age=60"})


async def index(request: web.Request) -> web.Response:
    info = request.app[APP_INFO]
    client = request.headers.get("X-Forwarded-For", request.remote or "?")
    text = f"Hello from {info.name} (region {info.region})\nclient: {client}\n"
    return web.Response(text=text)


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
        redis_state = "ok"
    except Exception as exc:
        redis_state = f"unavailable ({type(exc).__name__})"
    return web.Response(text=json.dumps({"status": "ok", "redis": redis_state}) + "\n",
                        content_type="application/json")


def make_app(info: AppInfo, *, redis_url: str | None = None,
             redis_client: SessionStore | None = None) -> web.Application:
    """The demo app; give a `redis_client` (tests) or a `redis_url` (opened and closed with the app)."""
    if (redis_url is None) == (redis_client is None):
        raise ValueError("give exactly one of redis_url and redis_client")
    app = web.Application(middlewares=[stamp_headers])
    app[APP_INFO] = info

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        if redis_client is not None:
            app[REDIS] = redis_client
            yield
            return
        import redis.asyncio

        assert redis_url is not None
        client: SessionStore = redis.asyncio.from_url(redis_url, decode_responses=True, socket_timeout=1.0,
                                                      socket_connect_timeout=1.0)
        app[REDIS] = client
        try:
            yield
        finally:
            await client.aclose()  # type: ignore[attr-defined]

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/api/auth/login", login)
    app.router.add_get("/api/auth/me", me)
    app.router.add_post("/api/auth/logout", logout)
    app.router.add_route("*", "/api/echo", echo)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    return app
