"""Prometheus metrics for the GSLB, read from the server's plain counters at scrape time  [edge].

The DNS hot path only increments ints in plain counter objects (`ResponderStats`,
`UdpStats`, `TcpStats`, `RrlStats`); this collector turns them into metric families
when Prometheus scrapes, so serving pays nothing for metrics. The DNS families:

    gslb_dns_responses_total{rcode}, gslb_dns_queries_total{qtype}
    gslb_dns_dropped_total{reason}        no reply: short (UDP, shorter than a header), response
                                          (UDP, QR=1), unanswerable (the responder's other drops,
                                          TCP's included), internal_error, send_failed (the kernel
                                          refused a UDP reply), rate_limited (RRL)
    gslb_dns_internal_errors_total{where} responder (logged by it), udp / tcp (the edge caught
                                          an exception the responder should not raise)
    gslb_dns_truncated_total, gslb_dns_steering_errors_total
    gslb_dns_cache_lookups_total{result}, gslb_dns_cache_entries, gslb_dns_cache_bytes,
    gslb_dns_cache_clears_total           the response cache
    gslb_dns_cookies_total{result}, gslb_dns_nsid_total
    gslb_dns_udp_datagrams_total{event}   received, replied, send_failed, receive_error
    gslb_dns_tcp_open_connections         open now (gauge)
    gslb_dns_tcp_connections_total{event} accepted, evicted (longest idle, at the limit),
                                          refused (per-client cap), reset, idle_closed,
                                          unsent_closed, dropped_closed
    gslb_dns_tcp_messages_total, gslb_dns_tcp_read_paused_total
    gslb_dns_rrl_*                        response rate limiting (gslb/dns/rrl.py)

The peers (gslb/peers/):

    gslb_peers_configured, gslb_peers_reachable   peers listed / whose last report is fresh (votes)
    gslb_peers_alone                      1 when peers are configured and none is heard: this server
                                          answers on its own view
    gslb_peer_pulls_total{peer,result}    verdict pulls, ok / failed
    gslb_region_vote_disagrees{region}    1 while our own probes' view of the region differs from the vote
    gslb_regions_disagreeing              how many regions that is
    gslb_region_own_up{region}            1 when our own probes say up (gslb_region_up: as answered)
    gslb_admin_state_saves_total{result}  writes of the admin state file, ok / failed

Every family above is always there: a counter nothing has counted yet is 0 (the RRL counters
with rate limiting off too; gslb_dns_rrl_buckets is then 0). The collector reads typed fields of
GslbServer (gslb/app.py) and its plain counter objects; it probes nothing with getattr. A gauge
without a value yet (a region's probe RTT before its first successful probe) has no sample.
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
        yield from _dns_families(server)
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

        up = GaugeMetricFamily("gslb_region_up", "1 when the region is up as answered (vote, maintenance)",
                               labels=["region"])
        drained = GaugeMetricFamily("gslb_region_drained", "1 while an operator drains the region",
                                    labels=["region"])
        degraded = GaugeMetricFamily("gslb_region_degraded", "1 while the region reports unhealthy backends",
                                     labels=["region"])
        rtt = GaugeMetricFamily("gslb_probe_rtt_seconds", "RTT of the last successful probe", labels=["region"])
        probes = CounterMetricFamily("gslb_probe_results", "probe results", labels=["region", "result"])
        transitions = CounterMetricFamily("gslb_region_transitions", "region up/down changes", labels=["region"])
        for name, rt in server.regions.items():
            up.add_metric([name], 1.0 if rt.answer_up else 0.0)
            drained.add_metric([name], 1.0 if rt.drained_since is not None else 0.0)
            degraded.add_metric([name], 1.0 if rt.degraded else 0.0)
            if rt.last_result is not None and rt.last_result.rtt is not None:
                rtt.add_metric([name], rt.last_result.rtt)
            transitions.add_metric([name], rt.transitions)
        for (name, ok), count in sorted(server.probe_counts.items()):
            probes.add_metric([name, "ok" if ok else "fail"], count)
        yield from (up, drained, degraded, rtt, probes, transitions)
        yield from _peer_families(server)

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


def _peer_families(server: GslbServer) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    node = server.peer_node
    now = server.clock()
    for name, doc, value in (
            ("gslb_peers_configured", "peers listed in the config", len(server.config.peers.servers)),
            ("gslb_peers_reachable", "peers whose last report is fresh (they vote)", len(node.reachable(now))),
            ("gslb_peers_alone", "1 when no peer is heard: answers follow this server's own probes",
             1 if node.alone(now) else 0),
            ("gslb_regions_disagreeing", "regions where this server's own probes differ from the vote",
             len(node.disagreeing()))):
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], value)
        yield gauge
    disagrees = GaugeMetricFamily("gslb_region_vote_disagrees", "1 while our own view of the region differs "
                                  "from the vote", labels=["region"])
    own = GaugeMetricFamily("gslb_region_own_up", "1 when this server's own probes say up", labels=["region"])
    for name, rt in server.regions.items():
        ballot = node.ballots.get(name)
        disagrees.add_metric([name], 1.0 if ballot is not None and ballot.disagrees else 0.0)
        own.add_metric([name], 1.0 if rt.health.up else 0.0)
    yield disagrees
    yield own
    pulls = CounterMetricFamily("gslb_peer_pulls", "pulls of a peer's verdicts", labels=["peer", "result"])
    if server.peer_sync is not None:
        for peer, status in sorted(server.peer_sync.status.items()):
            pulls.add_metric([peer, "ok"], status.pulls_ok)
            pulls.add_metric([peer, "failed"], status.pulls_failed)
    yield pulls
    saves = CounterMetricFamily("gslb_admin_state_saves", "writes of the admin state file", labels=["result"])
    for result, count in server.admin_saves.items():
        saves.add_metric([result], count)
    yield saves


def _dns_families(server: GslbServer) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    stats = server.responder.stats
    udp = server.udp_stats
    tcp = server.tcp.stats
    rrl = server.rrl_stats

    dropped = CounterMetricFamily("gslb_dns_dropped", "queries dropped without an answer, by reason",
                                  labels=["reason"])
    dropped.add_metric(["short"], udp.dropped_short)
    dropped.add_metric(["response"], udp.dropped_response)
    dropped.add_metric(["unanswerable"], max(0, stats.dropped - stats.internal_errors - udp.dropped_short
                                              - udp.dropped_response))
    dropped.add_metric(["internal_error"], stats.internal_errors)
    dropped.add_metric(["send_failed"], udp.send_failed)
    dropped.add_metric(["rate_limited"], rrl.dropped)
    yield dropped
    internal = CounterMetricFamily("gslb_dns_internal_errors", "unexpected errors: the query was dropped",
                                   labels=["where"])
    internal.add_metric(["responder"], stats.internal_errors)
    internal.add_metric(["udp"], udp.errors)
    internal.add_metric(["tcp"], tcp.errors)
    yield internal
    truncated = CounterMetricFamily("gslb_dns_truncated", "UDP responses sent truncated (TC=1)")
    truncated.add_metric([], stats.truncated)
    yield truncated
    steering = CounterMetricFamily("gslb_dns_steering_errors", "steering failed: SERVFAIL answered")
    steering.add_metric([], stats.steering_errors)
    yield steering

    lookups = CounterMetricFamily("gslb_dns_cache_lookups", "response cache lookups", labels=["result"])
    lookups.add_metric(["hit"], stats.cache_hits)
    lookups.add_metric(["miss"], stats.cache_misses)
    yield lookups
    for name, doc, value, family in (
            ("gslb_dns_cache_entries", "responses held by the response cache", stats.cache_entries,
             GaugeMetricFamily),
            ("gslb_dns_cache_bytes", "estimated bytes held by the response cache", stats.cache_bytes,
             GaugeMetricFamily),
            ("gslb_dns_cache_clears", "times the response cache reached a limit and was emptied",
             stats.cache_clears, CounterMetricFamily),
            ("gslb_dns_nsid", "NSID options answered", stats.nsid, CounterMetricFamily)):
        metric = family(name, doc)
        metric.add_metric([], value)
        yield metric
    cookies = CounterMetricFamily("gslb_dns_cookies", "queries with a DNS COOKIE option, by server cookie",
                                  labels=["result"])
    cookies.add_metric(["valid"], stats.cookies_valid)
    cookies.add_metric(["other"], max(0, stats.cookies - stats.cookies_valid))
    yield cookies

    datagrams = CounterMetricFamily("gslb_dns_udp_datagrams", "UDP datagrams, by what happened",
                                    labels=["event"])
    for event, count in (("received", udp.received), ("replied", udp.replied), ("send_failed", udp.send_failed),
                         ("receive_error", udp.receive_errors)):
        datagrams.add_metric([event], count)
    yield datagrams

    open_now = GaugeMetricFamily("gslb_dns_tcp_open_connections", "TCP connections open now")
    open_now.add_metric([], len(server.tcp))
    yield open_now
    connections = CounterMetricFamily("gslb_dns_tcp_connections", "TCP connections, by what happened",
                                      labels=["event"])
    for event, count in (("accepted", tcp.accepted), ("evicted", tcp.evicted), ("refused", tcp.refused),
                         ("reset", tcp.resets), ("idle_closed", tcp.idle_closed),
                         ("unsent_closed", tcp.unsent_closed), ("dropped_closed", tcp.dropped_closed)):
        connections.add_metric([event], count)
    yield connections
    messages = CounterMetricFamily("gslb_dns_tcp_messages", "DNS messages read over TCP")
    messages.add_metric([], tcp.queries)
    yield messages
    paused = CounterMetricFamily("gslb_dns_tcp_read_paused",
                                 "times a TCP connection's queries stopped being read: replies unread over the cap")
    paused.add_metric([], tcp.paused)
    yield paused
