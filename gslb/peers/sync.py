"""Talking to the peers: pull their verdicts, push drains, pull latency tables once  [edge].

    PeerSync(settings, on_report=..., on_round=..., clock=...)
      .start() / .stop()        the pull loop: every `interval`, GET {peer}/api/peers/verdicts from
                                every peer at once; each reply's JSON handed to
                                `on_report(peer, payload, received_at)`, which parses it (node.py:
                                vote.parse_report and the admin entries it carries) and raises
                                ValueError if it is malformed (counted as a failed pull);
                                `on_round()` after each round, whether peers answered or not
      .push_admin(body)         POST {peer}/api/peers/admin to every peer at once; {peer: "ok" | why}
      .pull_latency()           GET {peer}/api/peers/latency from every peer; [(peer, payload)]
      .status                   {peer: PeerStatus} (last success, last error, counts)

A hostile or broken peer costs bounded work: every request has a total timeout (`timeout`),
a reply larger than `max_response_bytes` is refused while it is read (not after), and the JSON of
a reply is only walked for the regions this server knows (vote.parse_report). Every request
carries `Authorization: Bearer <peers.token>`. aiohttp's, JSON's and the parsers' exceptions
are translated into `PeerError` here, where they enter; a pull never raises out of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from gslb.peers.config import Peer, PeerSettings

log = logging.getLogger("gslb.peers")

LATENCY_MAX_BYTES = 64 * 1024 * 1024     # a peer's whole latency table (100,000 networks x regions)
LATENCY_TIMEOUT = 10.0
CHUNK = 64 * 1024


class PeerError(Exception):
    """A peer did not answer as a GSLB server does (unreachable, timed out, refused, malformed)."""


@dataclass(slots=True)
class PeerStatus:
    """What this server knows of one peer's replies (monotonic times of this server)."""

    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    pulls_ok: int = 0
    pulls_failed: int = 0


OnReport = Callable[[Peer, Any, float], None]


class PeerSync:
    def __init__(self, settings: PeerSettings, *, on_report: OnReport, on_round: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._on_report = on_report
        self._on_round = on_round
        self._clock = clock
        self.status: dict[str, PeerStatus] = {p.name: PeerStatus() for p in settings.servers}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        ok = sum(1 for s in self.status.values() if s.last_ok is not None and
                 (s.last_error_at is None or s.last_ok >= s.last_error_at))
        return f"<PeerSync [{ok} of {len(self.status)} peers answering], every {self.settings.interval:g}s>"

    def configure(self, settings: PeerSettings) -> None:
        """New settings (a reload): peers no longer listed are forgotten, new ones start unknown."""
        self.settings = settings
        self.status = {p.name: self.status.get(p.name) or PeerStatus() for p in settings.servers}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
                                                  headers={"User-Agent": "gslb-peer"})
        return self._session

    # -- one request ------------------------------------------------------------------
    async def _request(self, method: str, url: str, *, body: Any = None, limit: int, seconds: float) -> Any:
        """The JSON of a 200 reply; PeerError otherwise. At most `limit` bytes are read."""
        session = self._ensure_session()
        try:
            async with session.request(method, url, json=body, headers=self._headers(),
                                       timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=False) as resp:
                if resp.content_length is not None and resp.content_length > limit:
                    raise PeerError(f"reply of {resp.content_length} bytes is over the {limit}-byte limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PeerError(f"reply is over the {limit}-byte limit")
                    chunks.append(chunk)
                if resp.status != 200:
                    text = b"".join(chunks)[:200].decode("utf-8", "replace")
                    raise PeerError(f"HTTP {resp.status}: {text.strip()}")
        except TimeoutError:
            raise PeerError(f"no complete reply within {seconds:g}s") from None
        except aiohttp.ClientError as exc:
            raise PeerError(f"{type(exc).__name__}: {exc}") from None
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise PeerError(f"reply is not JSON: {exc}") from None
        except RecursionError:
            raise PeerError("reply is JSON nested too deeply") from None

    # -- pulling verdicts ----------------------------------------------------------------
    async def pull_once(self) -> None:
        """One round: every peer at once; then on_round()."""
        peers = self.settings.servers
        if peers:
            await asyncio.gather(*(self._pull(peer) for peer in peers))
        self._on_round()

    async def _pull(self, peer: Peer) -> None:
        status = self.status.setdefault(peer.name, PeerStatus())
        try:
            payload = await self._request("GET", f"{peer.url}/api/peers/verdicts",
                                          limit=self.settings.max_response_bytes, seconds=self.settings.timeout)
            self._on_report(peer, payload, self._clock())     # ValueError if malformed
        except (PeerError, ValueError) as exc:
            status.pulls_failed += 1
            if status.last_error != str(exc):
                log.warning("peer %s (%s): %s", peer.name, peer.url, exc)
            status.last_error, status.last_error_at = str(exc), self._clock()
            return
        status.pulls_ok += 1
        status.last_ok = self._clock()
        if status.last_error is not None:
            log.warning("peer %s (%s) answers again", peer.name, peer.url)
        status.last_error = None

    async def _loop(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.pull_once()
            except Exception:       # a bug in a callback must not stop the pulling
                log.exception("peer round failed")
            await asyncio.sleep(max(0.0, self.settings.interval - (self._clock() - started)))

    async def start(self) -> None:
        self._ensure_session()
        self._task = asyncio.create_task(self._loop(), name="peer sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- pushing admin changes -------------------------------------------------------------
    async def push_admin(self, body: dict[str, Any]) -> dict[str, str]:
        """POST `body` to every peer's /api/peers/admin at once: {peer: "ok" or the reason}."""

        async def one(peer: Peer) -> str:
            try:
                await self._request("POST", f"{peer.url}/api/peers/admin", body=body, limit=64 * 1024,
                                    seconds=self.settings.timeout)
            except PeerError as exc:
                log.warning("admin change not pushed to peer %s: %s (it catches up at its next pull)",
                            peer.name, exc)
                return str(exc)
            return "ok"

        peers = self.settings.servers
        results = await asyncio.gather(*(one(p) for p in peers))
        return {p.name: r for p, r in zip(peers, results, strict=True)}

    # -- latency table at start -------------------------------------------------------------
    async def pull_latency(self) -> list[tuple[Peer, Any]]:
        """Every peer's latency table export (those that answered)."""

        async def one(peer: Peer) -> tuple[Peer, Any] | None:
            try:
                payload = await self._request("GET", f"{peer.url}/api/peers/latency", limit=LATENCY_MAX_BYTES,
                                              seconds=LATENCY_TIMEOUT)
            except PeerError as exc:
                log.warning("latency table not pulled from peer %s: %s", peer.name, exc)
                return None
            return peer, payload

        got = await asyncio.gather(*(one(p) for p in self.settings.servers))
        return [g for g in got if g is not None]
