"""Real loopback servers for regional LB tests: aiohttp backends and the real proxy.

    async with backend_servers(["a", "b"]) as (a, b):         # TestBackend on 127.0.0.1:<free>
        cfg = lb_config([a, b], routes=[{"pool": "app", "policy": "round_robin"}])
        async with running_lb(cfg) as lb:                     # LoadBalancer on 127.0.0.1:0, admin too
            async with aiohttp.ClientSession() as s:
                r = await s.get(lb_url(lb, "/hello"))          # r.headers["X-Backend"] == "a" or "b"

A `TestBackend` answers every path with JSON {"backend", "method", "path", "headers", "body_len"}
and has special paths:
    /healthz                      200 "ok" (503 after `set_healthy(False)`)
    /status/<code>                that status
    /slow?s=<seconds>             answers after a sleep
    /download?n=<bytes>           a streamed body of n bytes (chunked, 64 KiB writes)
    /upload                       reads the body as a stream, answers {"received": n}
    /broken                       sends headers and part of a body, then drops the connection
    /drop?on=<name>               backend <name> drops the connection without answering
    /set-cookie?name=&value=      answers with that Set-Cookie
    /ws                           a websocket echo that prefixes messages with "<name>:"
`hits` counts requests per path; `closed_after_headers` etc. are plain attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import yaml
from aiohttp import WSMsgType, web

from regional_lb.app import LoadBalancer
from regional_lb.config import Config, parse_config


class TestBackend:
    __test__ = False           # not a pytest class

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.healthy = True
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.hit = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_healthy(self, ok: bool) -> None:
        self.healthy = ok

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        self.hit.set()
        headers = {"X-Backend": self.name}
        if path == "/healthz":
            return web.Response(text="ok" if self.healthy else "down", status=200 if self.healthy else 503,
                                headers=headers)
        if path.startswith("/status/"):
            return web.Response(status=int(path.rsplit("/", 1)[1]), text="status\n", headers=headers)
        if path == "/slow":
            await asyncio.sleep(float(request.query.get("s", "1")))
        if path == "/download":
            n = int(request.query.get("n", "0"))
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            block = b"x" * 65536
            while n > 0:
                await resp.write(block[: min(n, len(block))])
                n -= len(block)
            await resp.write_eof()
            return resp
        if path == "/upload":
            total = 0
            async for chunk in request.content.iter_any():
                total += len(chunk)
            return web.json_response({"received": total, "backend": self.name}, headers=headers)
        if path == "/drop" and request.query.get("on", self.name) == self.name:
            assert request.transport is not None
            request.transport.close()           # no response at all
            return web.Response(status=500)
        if path == "/broken":
            resp = web.StreamResponse(headers=headers)
            resp.content_length = 100_000
            await resp.prepare(request)
            await resp.write(b"y" * 1000)
            assert request.transport is not None
            request.transport.close()
            return resp
        if path == "/ws":
            ws = web.WebSocketResponse(protocols=("chat",))
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if msg.data == "close":
                        await ws.close(code=4001)
                        break
                    await ws.send_str(f"{self.name}:{msg.data}")
            return ws
        body = await request.read()
        resp = web.json_response({"backend": self.name, "method": request.method, "path": request.path_qs,
                                  "headers": dict(request.headers), "body_len": len(body)}, headers=headers)
        if path == "/set-cookie":
            resp.headers.add("Set-Cookie", f"{request.query['name']}={request.query['value']}; Path=/")
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers)})
        return resp

    async def start(self) -> TestBackend:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def backend_servers(names: Sequence[str]) -> AsyncIterator[list[TestBackend]]:
    servers = [TestBackend(n) for n in names]
    try:
        for s in servers:
            await s.start()
        yield servers
    finally:
        for s in servers:
            await s.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def lb_config_dict(backends: Sequence[TestBackend | str], *, routes: Sequence[dict[str, Any]] | None = None,
                   pool: str = "app", health: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A config document for one pool of `backends` (ids = TestBackend names). Extra top-level keys
    (timeouts, limits, trusted_proxies, listen, ...) override the defaults."""
    items = []
    for b in backends:
        if isinstance(b, TestBackend):
            items.append({"address": b.address, "id": b.name})
        else:
            items.append({"address": b})
    doc: dict[str, Any] = {
        "region": "test-region",
        "role": "edge",
        "listen": [{"address": "127.0.0.1:0"}],
        "admin": {"listen": "127.0.0.1:0", "token": "test-token"},
        "pools": {pool: {"backends": items, "health": health or {"type": "none"}}},
        "routes": list(routes or [{"pool": pool, "policy": "round_robin"}]),
    }
    pools_extra = top.pop("pools_extra", None)
    if pools_extra:
        doc["pools"].update(pools_extra)
    pool_extra = top.pop("pool_extra", None)
    if pool_extra:
        doc["pools"][pool].update(pool_extra)
    doc.update(top)
    return doc


def lb_config(backends: Sequence[TestBackend | str], **kw: Any) -> Config:
    return parse_config(yaml.safe_dump(lb_config_dict(backends, **kw)), file="test.yaml")


@contextlib.asynccontextmanager
async def running_lb(config: Config, **kw: Any) -> AsyncIterator[LoadBalancer]:
    lb = LoadBalancer(config, **kw)
    await lb.start()
    try:
        yield lb
    finally:
        await lb.stop()


def lb_url(lb: LoadBalancer, path: str = "/", *, listener: int = 0, scheme: str = "http") -> str:
    host, port = lb.listen_addresses[listener]
    return f"{scheme}://{host}:{port}{path}"


def admin_url(lb: LoadBalancer, path: str) -> str:
    assert lb.admin_address is not None
    host, port = lb.admin_address
    return f"http://{host}:{port}{path}"


async def raw_request(host: str, port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or read_timeout)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(read_timeout):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def body_json(data: bytes) -> Any:
    return json.loads(data)


def request_finished(lb: Any, pool_name: str) -> asyncio.Event:
    """Set when the proxy next gives a request's in-flight count back to `pool_name` (a tunnel's or
    relay's last step)."""
    pool = lb.rt.pools[pool_name].pool
    finished = asyncio.Event()
    original = pool.request_finished

    def spy(*args: Any, **kw: Any) -> None:
        original(*args, **kw)
        finished.set()

    pool.request_finished = spy
    return finished
