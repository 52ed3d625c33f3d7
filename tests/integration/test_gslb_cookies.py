"""DNS Cookies, NSID and CHAOS identity against the real GSLB over UDP and TCP (dnspython and dig)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import dns.rdataclass
import pytest
import yaml

from gslb.app import GslbServer
from gslb.dns.cookies import ServerCookies
from tests.gslb_helpers import free_dns_port, free_port, gslb_config, serving

SECRET = "5ea1ed5ec2e7000000000000000000aa"
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
CLIENT_COOKIE = bytes.fromhex("2464c4abcf10c957")


@contextlib.asynccontextmanager
async def gslb_with(tmp: Path, dns_keys: dict[str, Any]) -> AsyncIterator[tuple[GslbServer, int]]:
    """The real server (no probes: regions up) with extra `dns:` keys; yields it and its DNS port."""
    dns_port = free_dns_port()
    data = gslb_config(tmp, dns_port=dns_port, admin_port=free_port(), lbs=None)
    data["dns"].update(dns_keys)
    path = tmp / f"gslb-{dns_port}.yaml"
    path.write_text(yaml.safe_dump(data))
    async with serving(path) as server:
        yield server, dns_port


def make(name: str = "www.example.test", rdtype: str = "A", *, cookie: bytes | None = None,
         nsid: bool = False, rdclass: str = "IN") -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if cookie is not None:
        options.append(dns.edns.GenericOption(dns.edns.COOKIE, cookie))
    if nsid:
        options.append(dns.edns.GenericOption(dns.edns.NSID, b""))
    return dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=0, options=options or None)


def cookie_of(reply: dns.message.Message) -> bytes | None:
    return next((o.to_wire() for o in reply.options if o.otype == dns.edns.COOKIE), None)


def nsid_of(reply: dns.message.Message) -> bytes | None:
    return next((o.to_wire() for o in reply.options if o.otype == dns.edns.NSID), None)


async def ask(q: dns.message.Message, port: int, *, tcp: bool = False) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)


async def test_cookie_is_echoed_with_a_server_cookie_that_verifies_over_udp_and_tcp(tmp_path: Path) -> None:
    async with gslb_with(tmp_path, {"cookies": {"secrets": [SECRET]}}) as (_server, port):
        for tcp in (False, True):
            reply = await ask(make(cookie=CLIENT_COOKIE), port, tcp=tcp)
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer
            cookie = cookie_of(reply)
            assert cookie is not None
            assert cookie[:8] == CLIENT_COOKIE
            assert ServerCookies([bytes.fromhex(SECRET)]).valid(cookie, LOOPBACK, time.time())
            # sending it back is answered too, with a fresh cookie for the same client cookie
            again = await ask(make(cookie=cookie), port, tcp=tcp)
            assert again.rcode() == dns.rcode.NOERROR
            assert cookie_of(again)[:8] == CLIENT_COOKIE  # type: ignore[index]
        plain = await ask(make(), port)
        assert plain.answer
        assert cookie_of(plain) is None


async def test_require_gives_badcookie_then_the_answer_and_servers_sharing_secrets_agree(tmp_path: Path) -> None:
    keys = {"cookies": {"secrets": [SECRET], "require": True}}
    async with gslb_with(tmp_path, keys) as (server, port), gslb_with(tmp_path, keys) as (_other, other_port):
        first = await ask(make(cookie=CLIENT_COOKIE), port)
        assert first.rcode() == dns.rcode.BADCOOKIE
        assert not first.answer
        fresh = cookie_of(first)
        assert fresh is not None
        assert len(fresh) == 24
        retry = await ask(make(cookie=fresh), port)
        assert retry.rcode() == dns.rcode.NOERROR
        assert retry.answer
        elsewhere = await ask(make(cookie=fresh), other_port)        # the other server accepts it
        assert elsewhere.rcode() == dns.rcode.NOERROR
        forged = await ask(make(cookie=fresh[:-1] + bytes([fresh[-1] ^ 1])), port)
        assert forged.rcode() == dns.rcode.BADCOOKIE
        over_tcp = await ask(make(cookie=CLIENT_COOKIE), port, tcp=True)
        assert over_tcp.rcode() == dns.rcode.NOERROR                 # TCP needs no cookie proof
        no_cookie = await ask(make(), port)
        assert no_cookie.rcode() == dns.rcode.NOERROR
        assert server.dns_stats.by_rcode["BADCOOKIE"] == 2
        assert server.dns_stats.cookies_valid >= 1


async def test_nsid_and_chaos_identity_when_configured(tmp_path: Path) -> None:
    keys = {"nsid": "gslb-test-1", "identity": "ns1.example.test", "version": "gslb test"}
    async with gslb_with(tmp_path, keys) as (_server, port):
        for tcp in (False, True):
            reply = await ask(make(nsid=True), port, tcp=tcp)
            assert nsid_of(reply) == b"gslb-test-1"
            assert reply.answer
            for name, text in (("id.server", "ns1.example.test"), ("hostname.bind", "ns1.example.test"),
                               ("version.bind", "gslb test"), ("version.server", "gslb test")):
                chaos = await ask(make(name, "TXT", rdclass="CH"), port, tcp=tcp)
                assert chaos.rcode() == dns.rcode.NOERROR
                assert chaos.answer[0].rdclass == dns.rdataclass.CH
                assert [b"".join(rd.strings).decode() for rd in chaos.answer[0]] == [text]


async def test_nsid_and_chaos_are_off_by_default(tmp_path: Path) -> None:
    async with gslb_with(tmp_path, {}) as (_server, port):
        reply = await ask(make(nsid=True), port)
        assert reply.answer
        assert nsid_of(reply) is None
        chaos = await ask(make("version.bind", "TXT", rdclass="CH"), port)
        assert chaos.rcode() == dns.rcode.REFUSED
        assert not chaos.answer
        # cookies are on by default (a random secret): the client cookie is echoed
        cookie = cookie_of(await ask(make(cookie=CLIENT_COOKIE), port))
        assert cookie is not None
        assert cookie[:8] == CLIENT_COOKIE


@pytest.mark.needs_dig
@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
async def test_dig_sees_a_good_cookie_and_the_nsid(tmp_path: Path) -> None:
    async with gslb_with(tmp_path, {"cookies": {"secrets": [SECRET]}, "nsid": "gslb-dig"}) as (_server, port):
        out = await asyncio.to_thread(subprocess.run, [
            "dig", "@127.0.0.1", "-p", str(port), "www.example.test", "+cookie", "+nsid", "+tries=1", "+time=2"],
            capture_output=True, text=True, check=True)
        assert "status: NOERROR" in out.stdout
        assert "(good)" in out.stdout                       # dig checked the client cookie came back
        assert 'NSID: 67 73 6c 62 2d 64 69 67 ("gslb-dig")' in out.stdout
        chaos = await asyncio.to_thread(subprocess.run, [
            "dig", "@127.0.0.1", "-p", str(port), "version.bind", "TXT", "CH", "+tries=1", "+time=2"],
            capture_output=True, text=True, check=True)
        assert "status: REFUSED" in chaos.stdout
