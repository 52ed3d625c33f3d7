"""Typed seams between the GSLB's parts  [pure].

    WorkersView   what the admin API (gslb/admin_api.py) needs of a supervisor with workers
                  (gslb/supervisor.py): the merged metrics registry, refreshed before a scrape,
                  the workers' report for GET /api/workers, and the DNS listeners they serve and
                  their open TCP connections for GET /api/status
    StateSink     where GslbServer reports its state changes: gslb/feed.py (the supervisor)
    Answers       what the status page shows of the answers given: the client sample, answers per
                  region and all-down answers per service (one process's, or its workers' merged)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from gslb.feed import StateSink
from gslb.status import AnswerSampler

__all__ = ["Answers", "StateSink", "WorkersView"]


@dataclass(frozen=True, slots=True)
class Answers:
    sample: AnswerSampler
    by_region: dict[str, int]
    all_down: dict[str, int]


class WorkersView(Protocol):
    registry: CollectorRegistry

    async def refresh_metrics(self) -> None:
        """Ask every worker for its metric families (the registry then yields them summed)."""

    async def workers_report(self) -> list[dict[str, Any]]:
        """One row per worker: id, pid, ready, restarts, generation, queries, rss_bytes."""

    async def answers(self) -> Answers:
        """The workers' answer samples and counts, asked now and merged."""

    def udp_listeners(self) -> list[dict[str, Any]]:
        """The UDP listeners the ready workers bound: {"address", "reply_source", "workers"} each."""

    async def tcp_open(self) -> int:
        """The TCP connections open in the workers, asked now."""
