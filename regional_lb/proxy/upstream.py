"""Requests to backends: one aiohttp ClientSession with keep-alive pools per backend  [edge].

`Upstream.send` returns the backend's response once its headers are in, or raises one of
regional_lb.errors (aiohttp's exceptions are translated here, where they enter):

    BackendConnectError   connecting failed or timed out: nothing was sent (retry elsewhere)
    BackendTimeout        no response headers within backend_read
    BackendError          the connection broke or the response was not HTTP before headers

The session is transparent: no cookie jar, no automatic headers, no decompression, no
redirects. `Upstream` is the I/O seam of the proxy; tests use real loopback backends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from yarl import URL

from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendConnectError, BackendError, BackendTimeout

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def backend_origin(backend: Backend, scheme: str = "http") -> str:
    host = f"[{backend.host}]" if ":" in backend.host else backend.host
    return f"{scheme}://{host}:{backend.port}"


def translate(exc: BaseException, *, backend: Backend) -> Exception:
    """The regional_lb error for an aiohttp / OS exception raised while sending a request."""
    where = backend.id
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return BackendConnectError(f"connect to {where} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return BackendConnectError(f"cannot connect to {where}: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return BackendTimeout(f"backend {where} timed out")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return BackendError(f"backend {where} closed the connection")
    return BackendError(f"backend {where} failed: {type(exc).__name__}")


class Upstream:
    def __init__(self, *, connect_timeout: float, read_timeout: float, keepalive: float = 30.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout,
                                             sock_read=read_timeout)
        self._own = session is None
        self.session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, use_dns_cache=False,
                                           keepalive_timeout=keepalive, ttl_dns_cache=None),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, timeout=self.timeout,
            skip_auto_headers=_SKIP_AUTO, trust_env=False, raise_for_status=False)
        self._origins: dict[Backend, str] = {}

    def origin(self, backend: Backend) -> str:
        found = self._origins.get(backend)
        if found is None:
            if len(self._origins) > 10_000:
                self._origins.clear()
            found = self._origins[backend] = backend_origin(backend)
        return found

    async def send(self, backend: Backend, method: str, path: str, headers: Any,
                   body: Any) -> aiohttp.ClientResponse:
        url = URL(self.origin(backend) + path, encoded=True)
        try:
            return await self.session.request(method, url, headers=headers, data=body,
                                               allow_redirects=False, compress=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise translate(exc, backend=backend) from exc

    async def close(self) -> None:
        if self._own:
            await self.session.close()
