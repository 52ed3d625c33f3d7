"""The passive latency feed, for real: edge LBs sample client RTTs and push them to a running GSLB,
whose `latency` policy then answers the region with the lowest measured RTT for that client network.
Loopback RTTs are all ~0, so each edge gets an injected RTT source."""

from __future__ import annotations

import aiohttp
import dns.asyncquery
import dns.message

from tests.gslb_helpers import TOKEN, running_gslb, wait_for
from tests.rlb_helpers import backend_servers, lb_config, lb_url, running_lb


async def answer(port: int) -> list[str]:
    query = dns.message.make_query("fast.example.test", "A")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)
    return sorted(rd.address for rrset in reply.answer for rd in rrset)


async def test_edges_feed_client_rtts_to_the_gslb_latency_policy(tmp_path):
    async with running_gslb(tmp_path, with_lbs=False) as g, backend_servers(["a"]) as backends:
        # The resolver 127.0.0.1 is not in the test GeoIP db: without data, the default order
        # (the regions as listed: ap-northeast first in this config) wins.
        assert await answer(g.dns_port) == ["127.0.3.1"]
        push = {"urls": [g.admin], "token": TOKEN, "interval": "50ms"}
        slow = lb_config(backends, region="ap-northeast", latency_push=push)
        fast = lb_config(backends, region="us-east", latency_push=push)
        async with running_lb(slow, rtt_source=lambda _t: 180.0) as lb_ap, \
                running_lb(fast, rtt_source=lambda _t: 15.0) as lb_us, aiohttp.ClientSession() as http:
            for lb in (lb_ap, lb_us):
                async with http.get(lb_url(lb, "/x")) as resp:
                    assert resp.status == 200
            await wait_for(lambda: lb_ap.pusher.stats["pushes"] >= 1 and lb_us.pusher.stats["pushes"] >= 1)
            assert len(g.server.latency) == 1                       # one client network: 127.0.0.0/24
            assert await answer(g.dns_port) == ["127.0.1.1"]              # us-east: 15 ms beats 180 ms


async def test_gslb_down_does_not_affect_proxying(tmp_path):
    async with backend_servers(["a"]) as backends:
        push = {"urls": ["http://127.0.0.1:9/"], "token": TOKEN, "interval": "50ms"}   # nothing listens
        cfg = lb_config(backends, region="us-east", latency_push=push)
        async with running_lb(cfg, rtt_source=lambda _t: 20.0) as lb, aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(lb_url(lb, "/x")) as resp:
                    assert resp.status == 200
            await wait_for(lambda: lb.pusher.stats["push_errors"] >= 1)
            async with http.get(lb_url(lb, "/y")) as resp:
                assert resp.status == 200
