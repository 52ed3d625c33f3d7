"""What the GSLB status page shows, as plain objects  [pure].

    AnswerSampler(every=16, size=2000)   the responder's `on_answer` sink: the responder tells it of 1
                                         in `every` cache-miss answers (client address, regions, now),
                                         kept in a deque of `size`; deterministic (the responder counts
                                         down, no randomness), so the other answers cost no call
    ShareHistory(interval=10, keep=60)   snapshots of ResponderStats.by_region taken by the server
                                         every `interval` seconds; `points()` gives the answers per
                                         region in each interval (10 minutes by default)
    client_rows(samples, locate, now)    the sample grouped by client network (/24, /48), located
    why_not(regions, services, near)     for each region, why clients near it are not getting it

Memory is bounded by the constructors (`size` samples, `keep` snapshots), and the page's work by
the sample: `client_rows` locates at most `size` addresses. The server wires these in
gslb/app.py; gslb/admin_api.py serves them as /api/status/overview and /api/status/clients, and
the page itself (gslb/status/: index.html, status.js, world.json) at `/`.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Sample = tuple[IPAddress, tuple[str, ...], float]


class AnswerSampler:
    """The last `size` of the answers it is told of (`add`); whoever tells it keeps to 1 in `every`
    (gslb/dns/responder.py AnswerSink) and says how many answers each one stands for (`seen`)."""

    __slots__ = ("every", "samples", "seen")

    def __init__(self, every: int = 16, size: int = 2000) -> None:
        if every < 1 or size < 1:
            raise ValueError("every and size must be >= 1")
        self.every = every
        self.samples: deque[Sample] = deque(maxlen=size)
        self.seen = 0           # answers seen, up to the last one kept

    def add(self, client: IPAddress, regions: tuple[str, ...], now: float, seen: int = 1) -> None:
        self.seen += seen
        self.samples.append((client, regions, now))

    def recent(self, now: float, max_age: float) -> list[Sample]:
        return [s for s in self.samples if now - s[2] <= max_age]

    def __repr__(self) -> str:
        return f"<AnswerSampler 1/{self.every}, {len(self.samples)}/{self.samples.maxlen} kept, {self.seen} seen>"


class ShareHistory:
    """A ring of (wall time, counters) snapshots; answers per region between consecutive ones."""

    def __init__(self, interval: float = 10.0, keep: int = 60) -> None:
        if interval <= 0 or keep < 2:
            raise ValueError("interval must be > 0 and keep >= 2")
        self.interval = interval
        self._snaps: deque[tuple[float, float, dict[str, int]]] = deque(maxlen=keep)

    def due(self, now: float) -> bool:
        return not self._snaps or now - self._snaps[-1][0] >= self.interval

    def snapshot(self, counts: Mapping[str, int], now: float, wall: float) -> None:
        self._snaps.append((now, wall, dict(counts)))

    def points(self) -> list[dict[str, Any]]:
        """[{"t": wall time at the end, "seconds": length, "answers": {region: n}}], oldest first.
        Counters that went back (a new stats object) count from zero."""
        out = []
        snaps = list(self._snaps)
        for (t0, _w0, c0), (t1, w1, c1) in itertools.pairwise(snaps):
            answers = {}
            for region, n in c1.items():
                before = c0.get(region, 0)
                answers[region] = n - before if n >= before else n
            out.append({"t": w1, "seconds": round(t1 - t0, 3), "answers": answers})
        return out

    def __len__(self) -> int:
        return len(self._snaps)

    def __repr__(self) -> str:
        return f"<ShareHistory every {self.interval:g} s, {len(self._snaps)}/{self._snaps.maxlen} snapshots>"


def network_of(address: IPAddress) -> str:
    """The client network a sample stands for: /24 (IPv4) or /48 (IPv6)."""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class Place:
    lat: float
    lon: float
    where: str


def client_rows(samples: Iterable[Sample], locate: Callable[[IPAddress], Place | None],
                now: float) -> list[dict[str, Any]]:
    """One row per client network (latest answer wins), located; unlocatable networks are kept
    without coordinates. `locate` is called once per network."""
    latest: dict[str, tuple[IPAddress, tuple[str, ...], float, int]] = {}
    for address, regions, at in samples:
        net = network_of(address)
        seen = latest.get(net)
        count = 1 if seen is None else seen[3] + 1
        if seen is None or at >= seen[2]:
            latest[net] = (address, regions, at, count)
        else:
            latest[net] = (*seen[:3], count)
    rows = []
    for net, (address, regions, at, count) in sorted(latest.items()):
        place = locate(address)
        row: dict[str, Any] = {"network": net, "regions": list(regions), "seconds_ago": round(now - at, 1),
                               "samples": count}
        if place is not None:
            row.update(lat=place.lat, lon=place.lon, where=place.where)
        rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class NearDecision:
    """A sampled client whose nearest region is `region`, explained for `service` (by the edge)."""

    region: str
    network: str
    service: str
    chosen: tuple[str, ...]
    all_down: bool
    location: str
    lines: tuple[str, ...]


def why_not(regions: Sequence[Mapping[str, Any]], services: Mapping[str, Sequence[str]],
            near: Iterable[NearDecision]) -> dict[str, list[dict[str, str]]]:
    """For each region, the reasons clients near it may not get it: {"kind", "text"} items.

    `near`: sampled clients whose nearest region is R, explained (by the edge) for each service
    holding R. kinds: down, drained, degraded (the region's own state); all_down (no region is
    eligible); elsewhere (where its clients go instead, when its own state is the reason); spill
    (another region's capacity spill); latency (measured RTTs prefer another region); other (a near
    client sent elsewhere for another reason); unused (in no service); ok (nothing keeps them away).
    One line per (region, kind, service), one `elsewhere` line per region."""
    eligible = [r["name"] for r in regions if r.get("eligible")]
    out: dict[str, list[dict[str, str]]] = {}
    for info in regions:
        name = info["name"]
        reasons: list[dict[str, str]] = []
        if info.get("state") != "up":
            probe = info.get("last_probe")
            detail = (f": last probe {'ok' if probe['ok'] else 'failed'} {probe.get('detail') or ''} "
                      f"({probe['seconds_ago']:.0f} s ago)") if probe else ": not probed yet"
            reasons.append({"kind": "down", "text": f"down by its health probe{detail}".rstrip()})
        if info.get("drained"):
            left = info.get("safe_to_stop_in")
            tail = f"; safe to stop in {left:.0f} s" if left else "; safe to stop (the longest TTL has passed)"
            reasons.append({"kind": "drained", "text": f"drained by an operator{tail}"})
        if info.get("degraded"):
            reasons.append({"kind": "degraded",
                            "text": "degraded (its LB reports unhealthy backends): still answered, shorter TTL"})
        if not eligible:
            reasons.append({"kind": "all_down", "text": "no region is eligible: each service's all-down rule "
                                                        "decides the answer"})
        if not any(name in members for members in services.values()):
            reasons.append({"kind": "unused", "text": "in no service"})
        out[name] = reasons
    own = {r["name"] for r in regions if not r.get("eligible")}   # its own state says why already
    seen: set[tuple[str, str, str]] = set()
    for d in near:
        if d.region not in out or d.region in d.chosen:
            continue
        spill = next((line for line in d.lines if "spill" in line), None)
        sent = ", ".join(d.chosen) or "no region"
        if d.all_down:
            kind = "all_down"
        elif d.region in own:
            kind = "elsewhere"
        elif spill is not None:
            kind = "spill"
        elif "RTT" in d.location:
            kind = "latency"
        else:
            kind = "other"
        key = (d.region, kind, "" if kind == "elsewhere" else d.service)
        if key in seen:
            continue
        seen.add(key)
        if kind == "elsewhere":
            how = ", spread by capacity" if spill is not None else ""
            text = f"so its nearby clients go to {sent}{how} (e.g. {d.service} for {d.network})"
        else:
            text = f"{d.service} for {d.network} -> {sent}: {d.location}"
            if spill is not None:
                text += "; " + spill
            elif kind != "spill":
                text += "; " + " | ".join(line.strip() for line in d.lines[:3])
        out[d.region].append({"kind": kind, "text": text})
    for reasons in out.values():
        if not reasons:
            reasons.append({"kind": "ok", "text": "eligible: nearby clients get it"})
    return out
