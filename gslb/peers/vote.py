"""Health by vote across the GSLB servers of one NS set  [pure].

Each server probes every region itself and publishes its *verdicts*; it pulls its peers'
verdicts every peer interval. The state it answers with is decided here, from the verdicts
that are fresh, by the region's policy:

    quorum   (default) up unless a strict majority of the voting servers say down: one
             server that loses its path to a region is outvoted; with two servers a 1-1 split
             stays up (both keep the region, so both answer alike)
    any_up   up when any voting server says up
    all_up   up only when every voting server says up

    vote(own, reports, now, interval, policies) -> {region: Ballot}

Who votes on a region: this server, when its own verdict is *fresh* (it has probed the region
within three of its probe intervals: `Verdict.fresh`), and every peer whose report arrived within
`FRESH_INTERVALS` (3) peer intervals and whose verdict for the region is fresh too. A server that
hears from no fresh peer answers on its own view (`Ballot.alone`); when nobody has a fresh verdict
(before the first probe, say) the own verdict counts as it is (the assumed state).

Reports from peers come over the network: `parse_report` turns their JSON into a `PeerReport`
or raises `ReportError` naming what is wrong, and never keeps more than the regions this server
knows. `Verdict.to_json` / `Verdict.from_json` are the two halves of the wire form.

Nothing here reads a clock or a socket: `now` (monotonic, this server's) is passed in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

FRESH_INTERVALS = 3          # a report older than this many peer intervals does not vote
MAX_NAME = 255               # longest server or region name accepted from a peer


class Policy(enum.Enum):
    QUORUM = "quorum"
    ANY_UP = "any_up"
    ALL_UP = "all_up"


POLICIES = tuple(p.value for p in Policy)


class ReportError(ValueError):
    """A peer's report is not what a GSLB server publishes (the message says what is wrong)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One server's own probe verdict on one region."""

    up: bool
    since: float                # wall-clock time of the last change (or of the start)
    rtt_ms: float | None = None  # last probe's RTT
    probes: int = 0             # probe results so far
    fresh: bool = True          # probed within three probe intervals (an assumed state is not fresh)

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "since": self.since, "rtt_ms": self.rtt_ms, "probes": self.probes,
                "fresh": self.fresh}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Verdict:
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected an object")
        up, fresh, since, rtt, probes = (data.get(k) for k in ("up", "fresh", "since", "rtt_ms", "probes"))
        if not isinstance(up, bool) or not isinstance(fresh, bool):
            raise ReportError(f"{where}: 'up' and 'fresh' must be booleans")
        if not _finite(since):
            raise ReportError(f"{where}.since: expected a number")
        if rtt is not None and not (_finite(rtt) and rtt >= 0):
            raise ReportError(f"{where}.rtt_ms: expected a number >= 0 or null")
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
            raise ReportError(f"{where}.probes: expected an integer >= 0")
        return cls(up, float(since), None if rtt is None else float(rtt), probes, fresh)


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What one peer said, and when it arrived (this server's monotonic clock)."""

    server: str
    received_at: float
    verdicts: Mapping[str, Verdict]
    interval: float = 2.0        # the peer's own pull interval (shown, not used to judge freshness)

    def is_fresh(self, now: float, interval: float) -> bool:
        return now - self.received_at <= FRESH_INTERVALS * interval


@dataclass(frozen=True, slots=True)
class Ballot:
    """The vote on one region: the state to answer with and how it was reached."""

    up: bool
    own_up: bool
    policy: Policy
    up_votes: int
    voters: tuple[str, ...]      # servers whose fresh verdict counted (this one as "self")
    alone: bool                  # no fresh peer verdict: this server's own view decided
    down_votes: int = 0

    @property
    def disagrees(self) -> bool:
        """Our own view differs from the vote."""
        return self.up != self.own_up

    def to_json(self) -> dict[str, Any]:
        return {"up": self.up, "own_up": self.own_up, "policy": self.policy.value, "up_votes": self.up_votes,
                "down_votes": self.down_votes, "voters": list(self.voters), "alone": self.alone}


SELF = "self"


def decide(policy: Policy, ups: int, downs: int) -> bool:
    """The table of the three policies over counted votes (at least one vote)."""
    if policy is Policy.QUORUM:
        return downs * 2 <= ups + downs          # down only on a strict majority
    if policy is Policy.ANY_UP:
        return ups > 0
    return downs == 0


def vote(own: Mapping[str, Verdict], reports: Mapping[str, PeerReport], now: float, interval: float,
         policies: Mapping[str, Policy] | None = None, default: Policy = Policy.QUORUM) -> dict[str, Ballot]:
    """The voted state of every region in `own` (this server's verdicts)."""
    fresh_reports = [r for _, r in sorted(reports.items()) if r.is_fresh(now, interval)]
    out: dict[str, Ballot] = {}
    for region, mine in own.items():
        policy = (policies or {}).get(region, default)
        voters: list[str] = []
        ups = downs = 0
        if mine.fresh:
            voters.append(SELF)
            ups, downs = (1, 0) if mine.up else (0, 1)
        peers = 0
        for report in fresh_reports:
            theirs = report.verdicts.get(region)
            if theirs is None or not theirs.fresh:
                continue
            peers += 1
            voters.append(report.server)
            if theirs.up:
                ups += 1
            else:
                downs += 1
        up = decide(policy, ups, downs) if voters else mine.up     # nobody has probed: the assumed state
        out[region] = Ballot(up, mine.up, policy, ups, tuple(voters), alone=peers == 0, down_votes=downs)
    return out


def parse_report(payload: Any, received_at: float, known_regions: Collection[str]) -> PeerReport:
    """A peer's `GET /api/peers/verdicts` body as a PeerReport; ReportError if malformed.

    Regions this server does not know are ignored (configs may differ during a rollout), so
    the report holds at most len(known_regions) verdicts whatever the peer sent."""
    if not isinstance(payload, dict):
        raise ReportError("expected a JSON object")
    server = payload.get("server")
    if not isinstance(server, str) or not server or len(server) > MAX_NAME:
        raise ReportError("'server': expected a non-empty name")
    interval = payload.get("interval", 2.0)
    if not _finite(interval) or interval <= 0:
        raise ReportError("'interval': expected a number > 0")
    regions = payload.get("regions")
    if not isinstance(regions, dict):
        raise ReportError("'regions': expected an object")
    verdicts = {name: Verdict.from_json(regions[name], f"regions.{name}") for name in known_regions
                if name in regions}
    return PeerReport(server, received_at, verdicts, float(interval))


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

