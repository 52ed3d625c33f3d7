"""Send the edge's client RTT measurements to the GSLB admin API  [edge].

    pusher = LatencyPusher(RttAggregator(), region="us-east",
                           urls=["http://10.0.0.53:8053", "http://10.1.0.53:8053"], token="...")
    app.cleanup_ctx.append(pusher.cleanup_ctx)        # starts the loop, stops it with the app
    ...
    pusher.observe(request.transport, peer_ip)        # in the proxy, per request (or per connection)

Config (an edge LB's YAML; `load_latency_push(root.section("latency_push"))` reads it, None if absent):

    latency_push:
      urls: ["http://10.0.0.53:8053", "http://10.1.0.53:8053"]   # every GSLB admin API
      token: "..."                     # or token_file: relative to the config file
      interval: 10s
      window: 60s                      # samples older than this at push time are left out
      max_networks: 10000

Every `interval` seconds the aggregator's batch is POSTed as

    {"measurements": [{"network": "1.2.3.0/24", "region": "us-east", "rtt_ms": 23.5}, ...]}

(what gslb/latency_table.py `ingest_batch` accepts; it refuses unknown keys.  With
`send_counts=True` the batch also carries the sample count per item and the region at the top,
``{"region": "us-east", "measurements": [{..., "count": 12}]}``, for a GSLB that weighs by it)

to ``<url>/api/latency`` with ``Authorization: Bearer <token>``, in chunks of `max_batch`, to *every*
GSLB URL: GSLB instances share nothing, each keeps its own latency table.  A GSLB that is down or
refuses the batch: one warning per outage and URL (not per push), `stats["push_errors"]` counts,
that batch is dropped for that GSLB (RTTs are perishable), and proxying is never affected.
The RTT source is injectable (`rtt_source(transport) -> ms | None`): tests feed fake RTTs since
loopback RTTs are ~0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp

from regional_lb.latency_settings import LatencyPushSettings, ingest_url, load_latency_push
from regional_lb.rtt import RttAggregator, transport_rtt_ms

log = logging.getLogger("regional_lb.latency_push")

__all__ = ["LatencyPushSettings", "LatencyPusher", "ingest_url", "load_latency_push"]


class LatencyPusher:
    def __init__(self, aggregator: RttAggregator, *, region: str, urls: Sequence[str], token: str | None,
                 interval: float = 10.0, timeout: float = 2.0, max_batch: int = 2000,
                 rtt_source: Callable[[Any], float | None] = transport_rtt_ms,
                 clock: Callable[[], float] = time.monotonic,
                 session: aiohttp.ClientSession | None = None, send_counts: bool = False) -> None:
        if interval <= 0 or max_batch < 1:
            raise ValueError("interval and max_batch must be positive")
        self.aggregator = aggregator
        self.region = region
        self.urls = tuple(ingest_url(u) for u in urls)
        self.token = token
        self.interval = interval
        self.timeout = timeout
        self.max_batch = max_batch
        self.rtt_source = rtt_source
        self.clock = clock
        self.send_counts = send_counts
        self._session = session
        self._own_session = session is None
        self._task: asyncio.Task[None] | None = None
        self._down: set[str] = set()
        self.stats: dict[str, int] = {"pushes": 0, "push_errors": 0, "measurements_sent": 0,
                                      "observations": 0}

    @classmethod
    def from_settings(cls, settings: LatencyPushSettings, *, region: str, **seams: Any) -> LatencyPusher:
        """`seams`: rtt_source, clock, session (tests)."""
        return cls(RttAggregator(window=settings.window, max_networks=settings.max_networks), region=region,
                   urls=settings.urls, token=settings.token, interval=settings.interval,
                   timeout=settings.timeout, **seams)

    def __repr__(self) -> str:
        return f"<LatencyPusher {self.region} -> {len(self.urls)} GSLB(s) [{len(self._down)} unreachable]>"

    # -- observing (called by the proxy) ------------------------------------------------------
    def observe(self, transport: Any, client_ip: str) -> None:
        """Sample the RTT of the client connection behind `transport`; never raises."""
        try:
            rtt = self.rtt_source(transport)
        except Exception:
            return
        if rtt is not None:
            self.aggregator.observe(client_ip, rtt, self.clock())
            self.stats["observations"] += 1

    # -- pushing -------------------------------------------------------------------------------
    def _payload_chunks(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.send_counts:
            measurements = [{"network": m["network"], "region": self.region, "rtt_ms": m["rtt_ms"],
                             "count": m["count"]} for m in batch]
        else:
            measurements = [{"network": m["network"], "region": self.region, "rtt_ms": m["rtt_ms"]}
                            for m in batch]
        top = {"region": self.region} if self.send_counts else {}
        return [{**top, "measurements": measurements[i:i + self.max_batch]}
                for i in range(0, len(measurements), self.max_batch)]

    async def push_once(self) -> int:
        """Drain the aggregator and send the batch to every GSLB; returns how many GSLBs took all of it."""
        batch = self.aggregator.drain_batch(self.clock())
        if not batch:
            return 0
        chunks = self._payload_chunks(batch)
        session = self._get_session()
        results = await asyncio.gather(*(self._send(session, url, chunks) for url in self.urls))
        return sum(results)

    async def _send(self, session: aiohttp.ClientSession, url: str, chunks: list[dict[str, Any]]) -> bool:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for chunk in chunks:
            try:
                async with session.post(url, json=chunk, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    if resp.status != 200:
                        detail = (await resp.text())[:200]
                        raise _Refused(f"HTTP {resp.status}: {detail.strip()}")
            except (aiohttp.ClientError, TimeoutError, OSError, _Refused) as exc:
                self.stats["push_errors"] += 1
                if url not in self._down:
                    self._down.add(url)
                    log.warning("latency push to %s failed (%s: %s); dropping batches until it answers",
                                url, type(exc).__name__, exc)
                return False
            self.stats["measurements_sent"] += len(chunk["measurements"])
        self.stats["pushes"] += 1
        if url in self._down:
            self._down.discard(url)
            log.warning("latency push to %s works again", url)
        return True

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    @property
    def unreachable(self) -> frozenset[str]:
        return frozenset(self._down)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Push every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.push_once()
            except Exception:       # a bug here must not kill the loop (nor the proxy)
                log.exception("latency push failed unexpectedly")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"latency-push-{self.region}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def cleanup_ctx(self, _app: Any) -> AsyncIterator[None]:
        """For `app.cleanup_ctx.append(pusher.cleanup_ctx)`."""
        self.start()
        try:
            yield
        finally:
            await self.close()


class _Refused(Exception):
    """The GSLB answered the latency push with an error status."""
