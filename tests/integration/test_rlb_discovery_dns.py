"""The real aiodns resolver against a tiny DNS server on loopback (dnslib)."""

from __future__ import annotations

import asyncio

import pytest
from dnslib import QTYPE, RR, SRV, A, DNSRecord

from regional_lb.config import DnsBackends
from regional_lb.discovery import AiodnsResolver, ResolveError, backends_from


class _Zone(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = DNSRecord.parse(data)
        reply = query.reply()
        name, qtype = str(query.q.qname), QTYPE[query.q.qtype]
        if name == "app.test." and qtype == "A":
            reply.add_answer(RR(name, QTYPE.A, rdata=A("127.0.0.9"), ttl=5))
            reply.add_answer(RR(name, QTYPE.A, rdata=A("127.0.0.8"), ttl=5))
        if name == "_http._tcp.app.test." and qtype == "SRV":
            reply.add_answer(RR(name, QTYPE.SRV, rdata=SRV(1, 5, 8001, "app.test."), ttl=5))
            reply.add_answer(RR(name, QTYPE.SRV, rdata=SRV(2, 5, 8002, "app.test."), ttl=5))   # backup
        self.transport.sendto(reply.pack(), addr)  # type: ignore[attr-defined]


async def test_aiodns_resolver_a_srv_and_failure() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Zone, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    resolver = AiodnsResolver([f"127.0.0.1:{port}"])
    try:
        a = await resolver.resolve("app.test", "A")
        assert sorted(a) == [("127.0.0.8", None, 1), ("127.0.0.9", None, 1)]
        spec = DnsBackends("app.test", 9000, "A")
        assert [b.id for b in backends_from(spec, a)] == ["127.0.0.8:9000", "127.0.0.9:9000"]
        srv = await resolver.resolve("_http._tcp.app.test", "SRV")
        assert sorted(srv) == [("127.0.0.8", 8001, 5), ("127.0.0.9", 8001, 5)]       # lowest priority only
        with pytest.raises(ResolveError):
            await resolver.resolve("nothing.test", "A")
    finally:
        await resolver.close()
        transport.close()
