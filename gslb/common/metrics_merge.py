"""/metrics across worker processes: each worker's families on the wire, summed by the supervisor  [edge].

Shared by both programs' supervisors. Every worker counts its own work; on a scrape the
supervisor asks each one for its families (`families_to_wire(registry)`, sent over the
worker channel, gslb/common/channel.py) and a `MergedCollector` yields them summed with its
own:

  * counters, histograms and summed gauges: the sum over the supervisor and every worker,
    sample by sample (same name and labels);
  * the families named in `supervisor_only` (state the supervisor owns: health, admin state,
    reloads): the supervisor's own value, not a sum;
  * `*_created` samples are left out (a sum of creation times means nothing).

A scrape reads: it asks the workers for numbers and changes nothing in them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Wire = list[list[Any]]          # [[family name, type, help, [[sample name, labels, value], ...]], ...]


def families_to_wire(registry: CollectorRegistry) -> Wire:
    out: Wire = []
    for family in registry.collect():
        samples = [[s.name, dict(s.labels), float(s.value)] for s in family.samples
                   if not s.name.endswith("_created")]
        out.append([family.name, family.type, family.documentation, samples])
    return out


def merge(own: Wire, workers: Iterable[Wire], supervisor_only: Collection[str] = ()) -> list[Metric]:
    """The supervisor's families with every worker's summed in (see the module docstring)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    order: list[str] = []

    def add(wire: Wire, *, supervisor: bool) -> None:
        for name, typ, doc, samples in wire:
            if not supervisor and name in supervisor_only:
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

    def __init__(self, own: CollectorRegistry, snapshots: Callable[[], Sequence[Wire]],
                 supervisor_only: Collection[str] = ()) -> None:
        self._own = own
        self._snapshots = snapshots
        self._supervisor_only = frozenset(supervisor_only)

    def collect(self) -> Iterator[Metric]:
        yield from merge(families_to_wire(self._own), self._snapshots(), self._supervisor_only)


def sample_total(wire: Wire, family: str, suffix: str = "_total") -> float:
    """The sum of a family's samples whose name ends with `suffix` (all its labels)."""
    return sum(float(value) for name, _typ, _doc, samples in wire if name == family
               for sample_name, _labels, value in samples if str(sample_name).endswith(suffix))


class WorkersCollector(Collector):
    """`<prefix>_workers` (gauge: workers ready) and `<prefix>_worker_restarts{worker}` (counter),
    read from the supervisor's worker slots (gslb/common/workers.py) at each scrape."""

    def __init__(self, prefix: str, up_help: str, workers: Callable[[], Iterable[Any]]) -> None:
        self._prefix = prefix
        self._up_help = up_help
        self._workers = workers             # () -> the WorkerProcess slots (ready, id, restarts)

    def collect(self) -> Iterator[Metric]:
        workers = list(self._workers())
        up = GaugeMetricFamily(f"{self._prefix}_workers", self._up_help)
        up.add_metric([], float(sum(1 for w in workers if w.ready)))
        yield up
        restarts = CounterMetricFamily(f"{self._prefix}_worker_restarts",
                                       "Worker processes started again after dying", labels=["worker"])
        for w in workers:
            restarts.add_metric([str(w.id)], float(w.restarts))
        yield restarts
