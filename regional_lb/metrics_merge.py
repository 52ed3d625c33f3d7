"""/metrics across worker processes: each worker's families on the wire, summed by the supervisor  [edge].

With `workers` > 1 every worker counts its own requests (regional_lb/metrics.py: plain int
counters, read at scrape time). On a scrape the supervisor asks every worker for its families
(`families_to_wire(registry)`, sent over the state feed as a "metrics_reply"), and its
registry's `MergedCollector` yields them summed with its own:

  * counters, histograms and summed gauges (in-flight requests): the sum over the supervisor
    and every worker, sample by sample (same name and labels);
  * SUPERVISOR_ONLY families -- `rlb_backend_up` (health and admin state, which the supervisor
    owns), `rlb_health_transitions` and `rlb_config_reloads` (it runs the checks and reloads):
    the supervisor's own value, not a sum;
  * `*_created` samples are left out (a sum of creation times means nothing).

`rlb_workers` (gauge: workers up) and `rlb_worker_restarts` (counter) come from the supervisor.
A scrape reads: it asks the workers for numbers and changes nothing in them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

SUPERVISOR_ONLY = frozenset({"rlb_backend_up", "rlb_health_transitions", "rlb_config_reloads"})
Wire = list[list[Any]]          # [[family name, type, help, [[sample name, labels, value], ...]], ...]


def families_to_wire(registry: CollectorRegistry) -> Wire:
    out: Wire = []
    for family in registry.collect():
        samples = [[s.name, dict(s.labels), float(s.value)] for s in family.samples
                   if not s.name.endswith("_created")]
        out.append([family.name, family.type, family.documentation, samples])
    return out


def merge(own: Wire, workers: Iterable[Wire]) -> list[Metric]:
    """The supervisor's families with every worker's summed in (see the module docstring)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    order: list[str] = []

    def add(wire: Wire, *, supervisor: bool) -> None:
        for name, typ, doc, samples in wire:
            if not supervisor and name in SUPERVISOR_ONLY:
                continue
            if name not in families:
                families[name] = (str(typ), str(doc), {})
                order.append(name)
            values = families[name][2]
            for sample_name, labels, value in samples:
                key = (str(sample_name), tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())))
                values[key] = values.get(key, 0.0) + float(value)

    add(own, supervisor=True)
    for wire in workers:
        add(wire, supervisor=False)
    out = []
    for name in order:
        typ, doc, values = families[name]
        metric = Metric(name, doc, typ)
        for (sample_name, labels), value in values.items():
            metric.add_sample(sample_name, dict(labels), value)
        out.append(metric)
    return out


class MergedCollector(Collector):
    """Yields `merge(own registry, latest worker snapshots)`; the snapshots are refreshed by the
    supervisor before each scrape (an async round trip, which a collector cannot make)."""

    def __init__(self, own: CollectorRegistry, snapshots: Callable[[], Sequence[Wire]]) -> None:
        self._own = own
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        yield from merge(families_to_wire(self._own), self._snapshots())


def request_counts(wire: Wire) -> dict[tuple[str, str], tuple[int, int]]:
    """(pool, backend) -> (requests, 5xx answers) from merged `rlb_requests` samples (the stats page)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for name, _typ, _doc, samples in wire:
        if name != "rlb_requests":
            continue
        for sample_name, labels, value in samples:
            if not str(sample_name).endswith("_total"):
                continue
            key = (str(labels.get("pool")), str(labels.get("backend")))
            requests, errors = out.get(key, (0, 0))
            n = int(value)
            out[key] = (requests + n, errors + (n if labels.get("code") == "5xx" else 0))
    return out
