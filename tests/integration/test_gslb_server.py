"""The real GSLB over real UDP and TCP sockets, checked with dnspython and dig."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess

import aiohttp
import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.gslb_helpers import FRANKFURT_NET, SEOUL_NET, SEOUL_V6_NET, TOKEN, running_gslb, wait_for


def ecs_query(name: str, net: str, rdtype: str = "A") -> dns.message.Message:
    address, prefix = net.split("/")
    return dns.message.make_query(name, rdtype, use_edns=0,
                                  options=[dns.edns.ECSOption(address, int(prefix))])


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype in (1, 28))


def ecs_scope(reply: dns.message.Message) -> int | None:
    for opt in reply.options:
        if isinstance(opt, dns.edns.ECSOption):
            return opt.scopelen
    return None


async def udp(q: dns.message.Message, port: int, host: str = "127.0.0.1") -> dns.message.Message:
    return await dns.asyncquery.udp(q, host, port=port, timeout=2)


async def test_geo_answer_over_udp_and_tcp_v4_and_v6(tmp_path):
    async with running_gslb(tmp_path) as g:
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.AA
        assert not reply.flags & dns.flags.RA
        assert addresses(reply) == ["127.0.3.1"]
        assert ecs_scope(reply) is not None
        assert ecs_scope(reply) > 0
        reply = await dns.asyncquery.tcp(ecs_query("www.example.test", FRANKFURT_NET), "127.0.0.1",
                                         port=g.dns_port, timeout=2)
        assert addresses(reply) == ["127.0.2.1"]
        reply = await udp(ecs_query("www.example.test", SEOUL_V6_NET), g.dns_port, host="::1")
        assert addresses(reply) == ["127.0.3.1"]
        # count: 2 -> the two nearest regions
        reply = await udp(ecs_query("two.example.test", FRANKFURT_NET), g.dns_port)
        assert addresses(reply) == ["127.0.1.1", "127.0.2.1"]


async def test_static_records_cname_and_negative_answers(tmp_path):
    async with running_gslb(tmp_path) as g:
        reply = await udp(ecs_query("APP.Example.TEST", SEOUL_NET), g.dns_port)
        assert reply.question[0].name.to_text() == "APP.Example.TEST."      # case echoed
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        assert addresses(reply) == ["127.0.3.1"]
        nx = await udp(dns.message.make_query("nope.example.test", "A"), g.dns_port)
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert nx.authority[0].rdtype == dns.rdatatype.SOA
        nodata = await udp(dns.message.make_query("mail.example.test", "AAAA"), g.dns_port)
        assert nodata.rcode() == dns.rcode.NOERROR
        assert not nodata.answer
        assert nodata.authority[0].ttl == 60                          # RFC 2308: SOA minimum
        refused = await udp(dns.message.make_query("example.com", "A"), g.dns_port)
        assert refused.rcode() == dns.rcode.REFUSED


async def test_tcp_several_queries_per_connection(tmp_path):
    async with running_gslb(tmp_path) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.dns_port)
        try:
            for i in range(3):
                q = dns.message.make_query("ns1.example.test", "A", id=100 + i)
                wire = q.to_wire()
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = dns.message.from_wire(await reader.readexactly(size))
                assert reply.id == 100 + i
                assert addresses(reply) == ["127.0.0.1"]
        finally:
            writer.close()
            await writer.wait_closed()


async def test_garbage_is_dropped_and_server_keeps_serving(tmp_path):
    async with running_gslb(tmp_path) as g:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            for junk in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 40):
                sock.sendto(junk, ("127.0.0.1", g.dns_port))
        finally:
            sock.close()
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]


async def test_region_down_moves_answers_and_back(tmp_path):
    async with running_gslb(tmp_path, interval="50ms", fall=2, rise=1) as g:
        await wait_for(lambda: g.lbs["ap-northeast"].hits >= 1)
        g.lbs["ap-northeast"].status = 503
        await wait_for(lambda: not g.server.regions["ap-northeast"].health.up, within=3)
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) != ["127.0.3.1"]
        assert addresses(reply)
        g.lbs["ap-northeast"].status = 200
        await wait_for(lambda: g.server.regions["ap-northeast"].health.up, within=3)
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]


async def test_lb_reporting_few_healthy_backends_counts_as_down_and_degraded_shortens_ttl(tmp_path):
    async with running_gslb(tmp_path, interval="50ms", fall=1, rise=1) as g:
        lb = g.lbs["ap-northeast"]
        lb.healthy_fraction = 0.75                                   # degraded, still up
        await wait_for(lambda: g.server.regions["ap-northeast"].degraded, within=3)
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]
        assert reply.answer[0].ttl == 5
        lb.healthy_fraction = 0.25                                   # below min_healthy_fraction 0.5
        await wait_for(lambda: not g.server.regions["ap-northeast"].health.up, within=3)
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) != ["127.0.3.1"]


async def test_admin_drain_requires_token_and_reports_safe_stop(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        url = f"{g.admin}/api/regions/ap-northeast/drain"
        async with http.post(url) as resp:
            assert resp.status == 401
        async with http.post(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            info = await resp.json()
        assert info["drained"]
        assert info["longest_ttl"] == 30
        assert info["safe_to_stop_at"] == pytest.approx(info["drained_at"] + 30)
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) != ["127.0.3.1"]
        async with http.post(f"{g.admin}/api/regions/ap-northeast/undrain",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]
        async with http.post(f"{g.admin}/api/regions/mars/drain",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 404
        async with http.get(f"{g.admin}/api/regions") as resp:
            regions = {r["name"]: r for r in (await resp.json())["regions"]}
        assert regions["us-east"]["last_probe"]["ok"] is True
        assert regions["us-east"]["probed"] is True


async def test_latency_ingest_steers_latency_policy(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        # Without data: geo fallback, Seoul client -> ap-northeast.
        reply = await udp(ecs_query("fast.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]
        batch = {"measurements": [
            {"network": SEOUL_NET, "region": "ap-northeast", "rtt_ms": 180.0},
            {"network": SEOUL_NET, "region": "us-east", "rtt_ms": 20.0},
        ]}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{g.admin}/api/latency", json=batch, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        reply = await udp(ecs_query("fast.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.1.1"]
        async with http.post(f"{g.admin}/api/latency", data=b"{not json", headers=headers) as resp:
            assert resp.status == 400
        async with http.post(f"{g.admin}/api/latency", json={"measurements": [{"network": "x"}]},
                             headers=headers) as resp:
            assert resp.status == 400


async def test_metrics_and_status(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        async with http.get(f"{g.admin}/metrics") as resp:
            text = await resp.text()
        assert 'gslb_dns_responses_total{rcode="NOERROR"}' in text
        assert 'gslb_answers_total{region="ap-northeast"} 1.0' in text
        assert "gslb_latency_networks 0.0" in text
        async with http.get(f"{g.admin}/api/status") as resp:
            status = await resp.json()
        assert "DB-IP" in status["geoip_attribution"]
        assert status["dns"]["tcp"]["max_per_client"] == 64
        assert status["dns"]["tcp"]["idle_timeout"] == 2.0
        assert {u["reply_source"] for u in status["dns"]["udp"]} == {"bound"}      # 127.0.0.1 and ::1
        assert len(status["dns"]["udp"]) == 2


async def test_reload_bad_config_keeps_old_and_good_config_applies(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        good = g.config_path.read_text()
        g.config_path.write_text(good.replace("policy: geo", "policy: nearest"))
        async with http.post(f"{g.admin}/api/reload", headers=headers) as resp:
            assert resp.status == 400
            assert "policy" in (await resp.json())["error"]
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]                        # old config still serving
        g.config_path.write_text(good.replace("www.example.test", "web.example.test"))
        async with http.post(f"{g.admin}/api/reload", headers=headers) as resp:
            assert resp.status == 200
        reply = await udp(ecs_query("web.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.needs_dig
@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
async def test_dig_sees_ecs_scope_and_tc_fallback(tmp_path):
    async with running_gslb(tmp_path) as g:
        out = await asyncio.to_thread(subprocess.run, [
            "dig", "@127.0.0.1", "-p", str(g.dns_port), "www.example.test", f"+subnet={SEOUL_NET}",
            "+tries=1", "+time=2"], capture_output=True, text=True, check=True)
        assert "status: NOERROR" in out.stdout
        assert "127.0.3.1" in out.stdout
        assert "flags: qr aa" in out.stdout
        assert f"CLIENT-SUBNET: {SEOUL_NET}/" in out.stdout
        out = await asyncio.to_thread(subprocess.run, [
            "dig", "@::1", "-p", str(g.dns_port), "example.test", "SOA", "+tcp", "+tries=1", "+time=2"],
            capture_output=True, text=True, check=True)
        assert "hostmaster.example.test." in out.stdout


async def test_reload_with_missing_geoip_database_is_refused(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        good = g.config_path.read_text()
        g.config_path.write_text(good.replace("test-city.mmdb", "missing.mmdb"))
        async with http.post(f"{g.admin}/api/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 400
            assert "geoip.database" in (await resp.json())["error"]
        reply = await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        assert addresses(reply) == ["127.0.3.1"]


async def test_metrics_export_drops_internal_errors_udp_and_tcp_counters(tmp_path, monkeypatch):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as http:
        server = g.server
        await udp(ecs_query("www.example.test", SEOUL_NET), g.dns_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\x00\x01", ("127.0.0.1", g.dns_port))            # shorter than a header
            response = dns.message.make_response(dns.message.make_query("ns1.example.test", "A"))
            sock.sendto(response.to_wire(), ("127.0.0.1", g.dns_port))     # a response: never answered
        await wait_for(lambda: server.udp_stats.received == 3)
        # an internal error: the responder counts it and drops the query
        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("a bug")
        monkeypatch.setattr(server.responder, "_answer", broken)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(dns.message.make_query("mail.example.test", "MX").to_wire(), ("127.0.0.1", g.dns_port))
        await wait_for(lambda: server.responder.stats.internal_errors == 1)
        monkeypatch.undo()
        reply = await dns.asyncquery.tcp(dns.message.make_query("ns1.example.test", "A"), "127.0.0.1",
                                         port=g.dns_port, timeout=2)
        assert addresses(reply) == ["127.0.0.1"]
        held = socket.create_connection(("127.0.0.1", g.dns_port))
        await wait_for(lambda: len(server.tcp) == 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        held.close()                                                      # a reset
        await wait_for(lambda: server.tcp.stats.resets == 1)
        async with http.get(f"{g.admin}/metrics") as resp:
            text = await resp.text()
        lines = set(text.splitlines())
        for line in (
            'gslb_dns_dropped_total{reason="short"} 1.0',
            'gslb_dns_dropped_total{reason="response"} 1.0',
            'gslb_dns_dropped_total{reason="unanswerable"} 0.0',
            'gslb_dns_dropped_total{reason="internal_error"} 1.0',
            'gslb_dns_dropped_total{reason="send_failed"} 0.0',
            'gslb_dns_internal_errors_total{where="responder"} 1.0',
            'gslb_dns_internal_errors_total{where="udp"} 0.0',
            'gslb_dns_udp_datagrams_total{event="received"} 4.0',
            'gslb_dns_udp_datagrams_total{event="replied"} 1.0',
            'gslb_dns_tcp_open_connections 0.0',
            'gslb_dns_tcp_connections_total{event="accepted"} 2.0',
            'gslb_dns_tcp_connections_total{event="reset"} 1.0',
            'gslb_dns_tcp_connections_total{event="evicted"} 0.0',
            'gslb_dns_tcp_connections_total{event="refused"} 0.0',
            'gslb_dns_tcp_messages_total 1.0',
        ):
            assert line in lines, line
        misses = [x for x in lines if x.startswith('gslb_dns_cache_lookups_total{result="miss"} ')]
        assert misses
        assert float(misses[0].split()[1]) >= 3
        if hasattr(server.responder.stats, "cache_bytes"):
            entries = [x for x in lines if x.startswith("gslb_dns_cache_entries ")]
            cache_bytes = [x for x in lines if x.startswith("gslb_dns_cache_bytes ")]
            assert entries
            assert float(entries[0].split()[1]) >= 1
            assert cache_bytes
            assert float(cache_bytes[0].split()[1]) > 0
