"""This server's place among its peers: their last reports, the ballots, the admin entries  [pure].

    node = PeerNode(settings, admin_states)
    node.take_report(peer_name, payload, received_at, known_regions, not_after)
                                       -> regions whose admin state changed
    node.revote(own_verdicts, now)     -> True when a region's voted state changed
    node.ballots                       {region: Ballot}
    node.report(own_verdicts)          what GET /api/peers/verdicts publishes
    node.peers_view(now, own_verdicts) what GET /api/peers shows per peer
    node.reachable(now), node.alone(now), node.disagreeing()     for /api/peers and the metrics

It holds no socket and reads no clock (`now` is passed in), so the same object can later live
in a supervisor process that runs the vote for several DNS workers; the I/O is `PeerSync`
(sync.py) and the admin API, which feed it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from gslb.peers.admin_state import AdminStates, entries_from_json
from gslb.peers.config import PeerSettings
from gslb.peers.vote import Ballot, PeerReport, ReportError, Verdict, parse_report, vote


class PeerNode:
    def __init__(self, settings: PeerSettings, admin: AdminStates) -> None:
        self.settings = settings
        self.admin = admin
        self.reports: dict[str, PeerReport] = {}
        self.ballots: dict[str, Ballot] = {}
        self.mismatched: dict[str, str] = {}     # peer listed as X that says it is Y

    def __repr__(self) -> str:
        return (f"<PeerNode {self.settings.name} [{len(self.reports)} of {len(self.settings.servers)} peers "
                f"reported, {len(self.disagreeing())} regions where our view differs]>")

    def configure(self, settings: PeerSettings) -> None:
        self.settings = settings
        listed = {p.name for p in settings.servers}
        self.reports = {n: r for n, r in self.reports.items() if n in listed}

    def take_report(self, peer: str, payload: Any, received_at: float, known: Collection[str],
                    not_after: float | None = None) -> list[str]:
        """A peer's verdicts reply: kept for the vote, its admin entries merged. ValueError (ReportError)
        if malformed; nothing is kept then. Returns the regions whose admin state changed."""
        report = parse_report(payload, received_at, known)
        if report.server == self.settings.name:
            raise ReportError(f"this is this server itself (it says it is {report.server!r}): its own verdict "
                              "would count twice; remove it from peers.servers or list it under its own name")
        admin = entries_from_json(payload.get("admin", {}), known)
        if report.server != peer:
            self.mismatched[peer] = report.server
        else:
            self.mismatched.pop(peer, None)
        self.reports[peer] = PeerReport(peer, report.received_at, report.verdicts, report.interval)
        return self.admin.merge_all(admin, known, not_after)

    def revote(self, own: Mapping[str, Verdict], now: float) -> bool:
        ballots = vote(own, self.reports, now, self.settings.interval, self.settings.policy_map(),
                       self.settings.policy)
        changed = {n: b.up for n, b in ballots.items()} != {n: b.up for n, b in self.ballots.items()}
        self.ballots = ballots
        return changed

    def voted_up(self, region: str) -> bool | None:
        ballot = self.ballots.get(region)
        return None if ballot is None else ballot.up

    def disagreeing(self) -> list[str]:
        return sorted(n for n, b in self.ballots.items() if b.disagrees)

    def reachable(self, now: float) -> list[str]:
        """Peers whose last report is fresh (it votes)."""
        return sorted(n for n, r in self.reports.items() if r.is_fresh(now, self.settings.interval))

    def alone(self, now: float) -> bool:
        """Peers are configured and none is heard: our own probes decide."""
        return bool(self.settings.servers) and not self.reachable(now)

    def report(self, own: Mapping[str, Verdict]) -> dict[str, Any]:
        return {"server": self.settings.name, "interval": self.settings.interval,
                "regions": {n: v.to_json() for n, v in own.items()}, "admin": self.admin.to_json()}

    def peers_view(self, now: float, own: Mapping[str, Verdict]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for peer in self.settings.servers:
            report = self.reports.get(peer.name)
            row: dict[str, Any] = {"name": peer.name, "url": peer.url, "reported": report is not None}
            if peer.name in self.mismatched:
                row["says_it_is"] = self.mismatched[peer.name]
            if report is not None:
                row["age"] = round(now - report.received_at, 3)
                row["fresh"] = report.is_fresh(now, self.settings.interval)
                row["verdicts"] = {n: v.to_json() for n, v in report.verdicts.items()}
                row["agrees"] = {n: v.up == own[n].up for n, v in report.verdicts.items() if n in own}
            out.append(row)
        return out
