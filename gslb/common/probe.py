"""Active probes: one HTTP GET or TCP connect, timed  [edge].

Shared by the GSLB (region probes) and the regional LB (backend checks). A probe
never raises: every failure becomes a `ProbeResult(ok=False, detail=...)` with
the reason (refused, timeout, status 503, ...), so callers only feed results to
the health state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """What to probe. `http`: GET scheme://host:port/path expecting one of `expect_status`;
    `tcp`: connect to host:port."""

    kind: Literal["http", "tcp"]
    host: str
    port: int
    path: str = "/"
    scheme: str = "http"
    expect_status: tuple[int, ...] = (200,)
    timeout: float = 1.0
    host_header: str | None = None
    verify_tls: bool = True

    @classmethod
    def from_url(cls, url: str, *, expect_status: tuple[int, ...] = (200,), timeout: float = 1.0,
                 verify_tls: bool = True) -> ProbeSpec:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls("http", parts.hostname, port, path, parts.scheme, expect_status, timeout,
                   verify_tls=verify_tls)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def __str__(self) -> str:
        return self.url if self.kind == "http" else f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    rtt: float | None                  # seconds to the response headers / the connect
    detail: str                        # "200", "refused", "timeout after 1.0s", ...
    status: int | None = None
    body: bytes | None = None          # the HTTP body (at most MAX_BODY bytes)


async def run_probe(spec: ProbeSpec, session: aiohttp.ClientSession | None = None,
                    clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """Run one probe. Never raises (except cancellation)."""
    start = clock()
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.kind == "tcp":
                _reader, writer = await asyncio.open_connection(spec.host, spec.port)
                rtt = clock() - start
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return ProbeResult(True, rtt, "connected")
            return await _http(spec, session, clock, start)
    except TimeoutError:
        return ProbeResult(False, None, f"timeout after {spec.timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, None, "connection refused")
    except (OSError, aiohttp.ClientError) as exc:
        return ProbeResult(False, None, f"{type(exc).__name__}: {exc}"[:200])


async def _http(spec: ProbeSpec, session: aiohttp.ClientSession | None,
                clock: Callable[[], float], start: float) -> ProbeResult:
    own = session is None
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    headers = {"User-Agent": "gslb-probe/1", "Connection": "close"}
    if spec.host_header:
        headers["Host"] = spec.host_header
    try:
        async with session.get(spec.url, headers=headers, allow_redirects=False,
                               ssl=spec.verify_tls) as resp:
            rtt = clock() - start
            body = await resp.content.read(MAX_BODY)
            ok = resp.status in spec.expect_status
            return ProbeResult(ok, rtt, str(resp.status), resp.status, body)
    finally:
        if own:
            await session.close()
