"""Backends found in DNS, re-resolved periodically  [edge].

A pool backend given as ``{dns: app.svc.example, port: 9000, type: A}`` (or AAAA, or SRV
where the port and weight come from the records) becomes the set of addresses the name
resolves to, each a `Backend` with id "host:port". Every `interval` the name is resolved
again and the pool gets `update_backends` (state of addresses still present is kept --
health, ejection, load -- and the pool's health checker restarts from that health, so a
backend known DOWN stays DOWN until `rise` probes pass and then comes back).
A failed lookup keeps the last good answer (logged), so a DNS outage never empties a pool.

The resolver is a seam: `AiodnsResolver` (aiodns) for real, `FakeResolver` for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from regional_lb.balancing.base import Backend
from regional_lb.config import DnsBackends, format_address

if TYPE_CHECKING:
    from regional_lb.seams import DiscoveryTarget

log = logging.getLogger("regional_lb.discovery")


class ResolveError(Exception):
    """a DNS lookup failed"""


class Resolver(Protocol):
    async def resolve(self, name: str, rtype: str) -> list[tuple[str, int | None, int]]:
        """(address, port or None, weight) for A / AAAA / SRV `name`; raises ResolveError."""
        ...

    async def close(self) -> None: ...


class AiodnsResolver:
    def __init__(self, nameservers: Sequence[str] | None = None) -> None:
        import aiodns

        self._resolver = aiodns.DNSResolver(nameservers=list(nameservers) if nameservers else None)

    async def _addresses(self, name: str, rtype: str) -> list[str]:
        import aiodns

        try:
            result = await self._resolver.query_dns(name, rtype)
        except aiodns.error.DNSError as exc:
            raise ResolveError(f"{rtype} {name}: {exc.args[-1] if exc.args else exc}") from None
        return [r.data.addr for r in result.answer if hasattr(r.data, "addr")]

    async def resolve(self, name: str, rtype: str) -> list[tuple[str, int | None, int]]:
        if rtype in ("A", "AAAA"):
            return [(a, None, 1) for a in await self._addresses(name, rtype)]
        import aiodns
        import pycares

        try:
            result = await self._resolver.query_dns(name, "SRV")
        except aiodns.error.DNSError as exc:
            raise ResolveError(f"SRV {name}: {exc.args[-1] if exc.args else exc}") from None
        out: list[tuple[str, int | None, int]] = []
        records = [r.data for r in result.answer if isinstance(r.data, pycares.SRVRecordData)]
        if records:
            best = min(r.priority for r in records)          # lowest priority only, as RFC 2782
            for r in records:
                if r.priority != best:
                    continue
                addrs: list[str] = []
                for kind in ("A", "AAAA"):
                    with contextlib.suppress(ResolveError):
                        addrs += await self._addresses(r.target, kind)
                out += [(a, r.port, max(1, r.weight)) for a in addrs]
        return out

    async def close(self) -> None:
        await self._resolver.close()


class FakeResolver:
    """Answers from a dict {(name, rtype): [(addr, port, weight), ...]} or raises ResolveError."""

    def __init__(self, answers: Mapping[tuple[str, str], list[tuple[str, int | None, int]]] | None = None
                 ) -> None:
        self.answers: dict[tuple[str, str], list[tuple[str, int | None, int]]] = dict(answers or {})
        self.queries: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def resolve(self, name: str, rtype: str) -> list[tuple[str, int | None, int]]:
        self.queries.append((name, rtype))
        if (name, rtype) not in self.answers:
            raise ResolveError(f"{rtype} {name}: NXDOMAIN")
        return list(self.answers[(name, rtype)])

    async def close(self) -> None:
        pass


def backends_from(spec: DnsBackends, answer: Sequence[tuple[str, int | None, int]]) -> tuple[Backend, ...]:
    out: dict[str, Backend] = {}
    for addr, port, weight in answer:
        p = port or spec.port
        if not p:
            continue
        bid = format_address(addr, p)
        out[bid] = Backend(bid, addr, p, spec.weight if spec.type != "SRV" else weight * spec.weight)
    return tuple(sorted(out.values(), key=lambda b: b.id))


class Discovery:
    """One task per DnsBackends entry of the running config."""

    def __init__(self, lb: DiscoveryTarget, *, resolver: Resolver | None = None) -> None:
        self.lb = lb
        self._given = resolver
        self.resolver: Resolver | None = resolver
        self._tasks: list[asyncio.Task[None]] = []
        self.rounds = 0

    async def start(self) -> None:
        specs = [(name, spec) for name, pc in self.lb.config.pools.items() for spec in pc.dns]
        if not specs:
            return
        if self.resolver is None:
            self.resolver = AiodnsResolver()
        for name, spec in specs:
            await self.resolve_once(name, spec)        # first answer before serving
            self._tasks.append(asyncio.create_task(self._loop(name, spec), name=f"discover {spec}"))

    async def resolve_once(self, pool: str, spec: DnsBackends) -> tuple[Backend, ...] | None:
        assert self.resolver is not None
        try:
            answer = await self.resolver.resolve(spec.name, spec.type)
        except ResolveError as exc:
            log.warning("pool %s: cannot resolve %s (keeping the last answer): %s", pool, spec, exc)
            return None
        except Exception:
            log.exception("pool %s: resolver failed for %s", pool, spec)
            return None
        found = backends_from(spec, answer)
        self.rounds += 1
        await self.lb.set_discovered(pool, spec, found)
        return found

    async def _loop(self, pool: str, spec: DnsBackends) -> None:
        while True:
            await asyncio.sleep(spec.interval)
            await self.resolve_once(pool, spec)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.resolver is not None and self._given is None:
            await self.resolver.close()
            self.resolver = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


__all__ = ["AiodnsResolver", "Discovery", "FakeResolver", "ResolveError", "Resolver", "backends_from"]
