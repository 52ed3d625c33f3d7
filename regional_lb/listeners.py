"""The HTTP listeners of one process, either server kind  [edge].

    listeners = Listeners(ctx, config, server_kind="fast", reuse_port=False, observe_rtt=None)
    await listeners.start()          # binds every `listen` entry (port 0 allowed)
    listeners.addresses              # [(host, port), ...] as bound
    await listeners.stop(grace=5.0)  # stops accepting, lets in-flight requests finish

`server_kind` "fast": plain keep-alive requests on a raw asyncio.Protocol, the rest handed to
aiohttp on the same connection (regional_lb/proxy/fast.py); "aiohttp": every request through
aiohttp's server. `reuse_port`: SO_REUSEPORT, so that several worker processes bind the same
port and the kernel spreads new connections over them (regional_lb/supervisor.py).

Requests see the process only through `ctx` (regional_lb.seams.ProxyContext).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from regional_lb.config import Config, Listener
from regional_lb.proxy.fast import FastHandler, FastServer
from regional_lb.proxy.handler import ProxyHandler
from regional_lb.proxy.server import ProxyServer, listen_backlog
from regional_lb.seams import ProxyContext

SERVER_KINDS = ("fast", "aiohttp")


def ssl_context(listener: Listener) -> ssl.SSLContext | None:
    if listener.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(listener.tls.cert), str(listener.tls.key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Listeners:
    def __init__(self, ctx: ProxyContext, config: Config, *, server_kind: str, reuse_port: bool = False,
                 observe_rtt: Callable[..., Any] | None = None) -> None:
        if server_kind not in SERVER_KINDS:
            raise ValueError(f"server must be 'fast' or 'aiohttp', not {server_kind!r}")
        self._ctx = ctx
        self._config = config
        self.server_kind = server_kind
        self.reuse_port = reuse_port
        self._observe = observe_rtt
        self._runners: list[web.BaseRunner] = []
        self._fast: list[tuple[asyncio.AbstractServer, FastServer]] = []
        self.addresses: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        bound = ", ".join(f"{h}:{p}" for h, p in self.addresses) or "nothing"
        return f"<Listeners {self.server_kind} [{bound}]>"

    async def start(self) -> None:
        cfg = self._config
        for listener in cfg.listeners:
            server = ProxyServer(ProxyHandler(self._ctx, listener), header_timeout=cfg.timeouts.header_read,
                                 observe_rtt=self._observe,
                                 keepalive_timeout=cfg.timeouts.client_idle,
                                 max_line_size=cfg.limits.max_header_size,
                                 max_field_size=cfg.limits.max_header_size,
                                 max_headers=cfg.limits.max_headers, access_log=None,
                                 auto_decompress=False)
            if self.server_kind == "fast":
                await self._start_fast(listener, server)
                continue
            runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, listener.host, listener.port, ssl_context=ssl_context(listener),
                               reuse_address=True, reuse_port=self.reuse_port or None,
                               backlog=listen_backlog(listener.backlog))
            await site.start()
            addr = runner.addresses[-1]
            self.addresses.append((str(addr[0]), int(addr[1])))

    async def _start_fast(self, listener: Listener, server: ProxyServer) -> None:
        cfg = self._config
        fast = FastServer(FastHandler(self._ctx, listener), server, header_timeout=cfg.timeouts.header_read,
                          idle_timeout=cfg.timeouts.client_idle, max_line=cfg.limits.max_header_size,
                          max_headers=cfg.limits.max_headers, observe_rtt=self._observe)
        srv = await asyncio.get_running_loop().create_server(
            fast, listener.host, listener.port, ssl=ssl_context(listener), reuse_address=True,
            reuse_port=self.reuse_port or None, backlog=listen_backlog(listener.backlog))
        self._fast.append((srv, fast))
        addr = srv.sockets[-1].getsockname()
        self.addresses.append((str(addr[0]), int(addr[1])))

    async def stop(self, grace: float = 5.0) -> None:
        for srv, _ in self._fast:
            srv.close()                     # stop accepting
        for srv, fast in self._fast:
            await fast.shutdown(grace)      # in-flight requests finish, then connections close
            await srv.wait_closed()
        self._fast = []
        for runner in reversed(self._runners):
            await runner.cleanup()          # stops accepting, waits for in-flight handlers
        self._runners = []
