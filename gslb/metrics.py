"""Prometheus metrics for the GSLB, read from the server's plain counters at scrape time  [edge].

The DNS hot path only increments ints in `Responder.stats`; this collector turns
them into metric families when Prometheus scrapes, so serving pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gslb.app import GslbServer


class GslbCollector(Collector):
    def __init__(self, server: GslbServer) -> None:
        self.server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        server = self.server
        stats = server.responder.stats
        by_rcode = CounterMetricFamily("gslb_dns_responses", "DNS responses sent, by rcode", labels=["rcode"])
        for rcode, count in sorted(stats.by_rcode.items()):
            by_rcode.add_metric([str(rcode)], count)
        yield by_rcode
        by_qtype = CounterMetricFamily("gslb_dns_queries", "DNS queries answered, by qtype", labels=["qtype"])
        for qtype, count in sorted(stats.by_qtype.items()):
            by_qtype.add_metric([str(qtype)], count)
        yield by_qtype
        dropped = CounterMetricFamily("gslb_dns_dropped", "datagrams dropped without an answer (garbage)")
        dropped.add_metric([], stats.dropped)
        yield dropped
        answers = CounterMetricFamily("gslb_answers", "service answers naming a region", labels=["region"])
        for region, count in sorted(stats.by_region.items()):
            answers.add_metric([region], count)
        yield answers
        all_down = CounterMetricFamily("gslb_all_regions_down",
                                       "service answers where no region was eligible (all-down rule applied)",
                                       labels=["service"])
        for service, count in sorted(stats.all_down.items()):
            all_down.add_metric([service], count)
        yield all_down

        up = GaugeMetricFamily("gslb_region_up", "1 when the region's probe says up", labels=["region"])
        drained = GaugeMetricFamily("gslb_region_drained", "1 while an operator drains the region",
                                    labels=["region"])
        degraded = GaugeMetricFamily("gslb_region_degraded", "1 while the region reports unhealthy backends",
                                     labels=["region"])
        rtt = GaugeMetricFamily("gslb_probe_rtt_seconds", "RTT of the last successful probe", labels=["region"])
        probes = CounterMetricFamily("gslb_probe_results", "probe results", labels=["region", "result"])
        transitions = CounterMetricFamily("gslb_region_transitions", "region up/down changes", labels=["region"])
        for name, rt in server.regions.items():
            up.add_metric([name], 1.0 if rt.health.up else 0.0)
            drained.add_metric([name], 1.0 if rt.drained_since is not None else 0.0)
            degraded.add_metric([name], 1.0 if rt.degraded else 0.0)
            if rt.last_result is not None and rt.last_result.rtt is not None:
                rtt.add_metric([name], rt.last_result.rtt)
            transitions.add_metric([name], rt.transitions)
        for (name, ok), count in sorted(server.probe_counts.items()):
            probes.add_metric([name, "ok" if ok else "fail"], count)
        yield from (up, drained, degraded, rtt, probes, transitions)

        table = GaugeMetricFamily("gslb_latency_networks", "client networks in the latency table")
        table.add_metric([], len(server.latency))
        yield table
        reloads = CounterMetricFamily("gslb_config_reloads", "config reloads", labels=["result"])
        for result, count in server.reloads.items():
            reloads.add_metric([result], count)
        yield reloads

        rrl = server.rrl_stats          # response rate limiting (UDP): gslb/dns/rrl.py
        limited = CounterMetricFamily("gslb_dns_rrl_limited", "UDP responses over their rate limit, by what was done",
                                      labels=["action"])
        for action, count in (("dropped", rrl.dropped), ("slipped", rrl.slipped),
                              ("exempt_cookie", rrl.exempt_cookie)):
            limited.add_metric([action], count)
        yield limited
        by_class = CounterMetricFamily("gslb_dns_rrl_limited_by_class",
                                       "UDP responses over their rate limit, by response class", labels=["class"])
        for cls, count in sorted(rrl.by_class.items()):
            by_class.add_metric([cls], count)
        yield by_class
        evicted = CounterMetricFamily("gslb_dns_rrl_evicted", "rate-limit buckets evicted from a full table")
        evicted.add_metric([], rrl.evicted)
        yield evicted
        buckets = GaugeMetricFamily("gslb_dns_rrl_buckets", "rate-limit buckets held (0 when rate limiting is off)")
        buckets.add_metric([], len(server.rate_limiter) if server.rate_limiter is not None else 0)
        yield buckets
