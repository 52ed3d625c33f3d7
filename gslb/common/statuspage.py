"""Serving a status page's files from the installed package  [edge].

    add_status_page(app, {"index.html": ("gslb", "status/index.html"), ...})

`GET /` answers the page's `index.html`; `GET /static/<name>` the other named files. Files are
read once, when the app is built, with importlib.resources (so they come from the wheel, with no
internet and no path guessing); only the listed names are served, so no request can name another
file. The shared files (gslb/common/static/: status.css, status-common.js) are added by default.
Every answer carries a Content-Security-Policy that allows only this origin ('self'): no inline
script, no CDN.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

SHARED = {
    "status.css": ("gslb.common", "static/status.css"),
    "status-common.js": ("gslb.common", "static/status-common.js"),
}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
         ".svg": "image/svg+xml"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


def read_asset(package: str, path: str) -> bytes:
    return resources.files(package).joinpath(path).read_bytes()


def add_status_page(app: web.Application, files: dict[str, tuple[str, str]]) -> None:
    """Route `/` to files["index.html"] and `/static/{name}` to the others (and the shared ones)."""
    assets: dict[str, tuple[bytes, str]] = {}
    for name, (package, path) in {**SHARED, **files}.items():
        suffix = name[name.rfind("."):]
        assets[name] = (read_asset(package, path), TYPES.get(suffix, "application/octet-stream"))

    def answer(name: str) -> web.Response:
        body, content_type = assets[name]
        charset = None if content_type == "application/octet-stream" else "utf-8"
        return web.Response(body=body, content_type=content_type, charset=charset, headers=HEADERS)

    async def index(_request: web.Request) -> web.Response:
        return answer("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets or name == "index.html":
            raise web.HTTPNotFound()
        return answer(name)

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
