"""Response rate limiting on the real server: UDP floods are limited and slipped, TCP never is."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import yaml

from gslb.app import GslbServer
from gslb.dns.rrl import RrlSettings
from tests.gslb_helpers import free_dns_port, free_port, gslb_config, running_gslb, serving, wait_for

RATE = 5


@contextlib.asynccontextmanager
async def gslb_with_rrl(tmp: Path, rrl: dict[str, Any], **dns_keys: Any
                        ) -> AsyncIterator[tuple[GslbServer, int, int, Path]]:
    dns_port, admin_port = free_dns_port(), free_port()
    data = gslb_config(tmp, dns_port=dns_port, admin_port=admin_port, lbs=None)
    data["dns"]["rrl"] = rrl
    data["dns"].update(dns_keys)
    path = tmp / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    async with serving(path) as server:
        yield server, dns_port, admin_port, path


def client_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def flood(server: GslbServer, sock: socket.socket, port: int,
                query: dns.message.Message | list[dns.message.Message], count: int,
                target: str = "127.0.0.1") -> list[dns.message.Message]:
    """Send `count` copies of `query` (or each query of a list; distinct IDs); the replies that came back,
    once the server read them all.

    The server runs in this event loop and answers each datagram as it reads it, so once its query
    counter has moved by `count` every reply it sent is already in our socket's buffer."""
    queries = query if isinstance(query, list) else [query] * count
    before = server.dns_stats.queries
    for i, q in enumerate(queries):
        q.id = (i + 1) & 0xFFFF
        sock.sendto(q.to_wire(), (target, port))
    await wait_for(lambda: server.dns_stats.queries >= before + len(queries))
    replies = []
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return replies
        replies.append(dns.message.from_wire(data))


def is_slip(reply: dns.message.Message, query: dns.message.Message) -> bool:
    return bool(reply.flags & dns.flags.TC) and not reply.answer and reply.question == query.question


async def test_flood_gets_the_rate_then_slips_and_drops_tcp_still_answers(tmp_path):
    async with gslb_with_rrl(tmp_path, {"responses_per_second": RATE, "slip": 2}) as (server, port, admin, _):
        query = dns.message.make_query("www.example.test", "A", use_edns=0)
        with client_socket("127.0.0.5") as sock:
            started = time.monotonic()
            replies = await flood(server, sock, port, query, 40)
            elapsed = time.monotonic() - started
        full = [r for r in replies if not r.flags & dns.flags.TC]
        slips = [r for r in replies if r.flags & dns.flags.TC]
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in full)
        assert RATE <= len(full) <= RATE + RATE * elapsed + 1
        # every other limited reply is a TC=1 slip carrying the question and OPT: resolvers retry over TCP
        assert slips
        assert all(is_slip(r, query) and r.edns == 0 for r in slips)
        limited = 40 - len(full)
        assert len(slips) == (limited + 1) // 2
        assert len(replies) < 40
        assert server.rrl_stats.slipped == len(slips)
        assert server.rrl_stats.dropped == limited - len(slips)
        # TCP is never limited: the same question from the same address is answered in full
        reply = await dns.asyncquery.tcp(query, "127.0.0.1", port=port, source="127.0.0.5", timeout=2)
        assert reply.answer
        assert not reply.flags & dns.flags.TC
        # another /24 has its own bucket
        with client_socket("127.0.1.5") as other:
            replies = await flood(server, other, port, query, 1)
        assert len(replies) == 1
        assert replies[0].answer
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            text = await resp.text()
        assert f'gslb_dns_rrl_limited_total{{action="slipped"}} {float(len(slips))}' in text
        assert f'gslb_dns_rrl_limited_total{{action="dropped"}} {float(limited - len(slips))}' in text
        assert f'gslb_dns_rrl_limited_by_class_total{{class="NOERROR"}} {float(limited)}' in text
        assert "gslb_dns_rrl_buckets 2.0" in text


async def test_a_valid_server_cookie_is_never_limited(tmp_path):
    secret = "00112233445566778899aabbccddeeff"
    settings = {"responses_per_second": RATE, "slip": 0}
    async with gslb_with_rrl(tmp_path, settings, cookies={"secrets": [secret]}) as (server, port, _admin, _):
        client_cookie = b"\x11" * 8
        with client_socket("127.0.0.9") as sock:
            first = await flood(server, sock, port, cookie_query(client_cookie), 1)
            (cookie,) = [o for o in first[0].options if isinstance(o, dns.edns.CookieOption)]
            assert cookie.client == client_cookie
            assert len(cookie.server) == 16
            # with the server cookie we gave it, this address is provably not spoofed: every reply comes back
            replies = await flood(server, sock, port, cookie_query(client_cookie, cookie.server), 6 * RATE)
            assert len(replies) == 6 * RATE
            assert all(r.answer and not r.flags & dns.flags.TC for r in replies)
            assert server.rrl_stats.exempt_cookie > 0          # over the limit, yet sent
            assert server.rrl_stats.exempt_cookie == server.rrl_stats.limited
            assert server.rrl_stats.dropped == 0
            # the client cookie alone proves nothing: limited like any other query
            replies = await flood(server, sock, port, cookie_query(client_cookie), 3 * RATE)
            assert len(replies) < 3 * RATE
        with client_socket("127.0.0.10") as other:     # same /24, but the cookie was made for 127.0.0.9
            replies = await flood(server, other, port, cookie_query(client_cookie, cookie.server), 3 * RATE)
            assert replies == []


def cookie_query(client: bytes, server: bytes = b"") -> dns.message.Message:
    return dns.message.make_query("www.example.test", "A", use_edns=0,
                                  options=[dns.edns.CookieOption(client, server)])


async def test_nxdomain_floods_share_the_zone_bucket_over_ipv6(tmp_path):
    settings = {"nxdomains_per_second": 2, "slip": 0}
    async with gslb_with_rrl(tmp_path, settings) as (server, port, _admin, _):
        # random subdomains: each name is new, the zone's bucket is one
        queries = [dns.message.make_query(f"r{i}x.example.test", "A") for i in range(10)]
        with client_socket("::1") as sock:
            started = time.monotonic()
            replies = await flood(server, sock, port, queries, 10, target="::1")
            elapsed = time.monotonic() - started
        assert 2 <= len(replies) <= 2 + 2 * elapsed
        assert all(r.rcode() == dns.rcode.NXDOMAIN for r in replies)
        assert server.rrl_stats.by_class["NXDOMAIN"] == 10 - len(replies)


async def test_reload_keeps_the_buckets_unless_the_settings_change(tmp_path):
    async with running_gslb(tmp_path) as g:       # probes on: reload restarts the checker cleanly
        server, port = g.server, g.dns_port
        default = server.rate_limiter
        assert default is not None
        assert default.settings == RrlSettings()
        data = yaml.safe_load(g.config_path.read_text())

        async def reload_with(rrl: dict[str, Any]) -> None:
            data["dns"]["rrl"] = rrl
            g.write_config(data)
            await server.reload()

        await reload_with({"responses_per_second": RATE, "slip": 0})
        limiter = server.rate_limiter
        assert limiter is not None
        assert limiter is not default
        query = dns.message.make_query("www.example.test", "A")
        with client_socket("127.0.0.7") as sock:
            assert len(await flood(server, sock, port, query, 6 * RATE)) < 3 * RATE   # 5 s in debt
            await server.reload()
            assert server.rate_limiter is limiter      # same settings: the same buckets, still limited
            assert await flood(server, sock, port, query, 1) == []
            await reload_with({"enabled": False})
            assert server.rate_limiter is None
            assert len(await flood(server, sock, port, query, 3 * RATE)) == 3 * RATE
            await reload_with({"responses_per_second": 1000})
            assert server.rate_limiter is not None
            assert server.rate_limiter is not limiter
            assert len(await flood(server, sock, port, query, 3 * RATE)) == 3 * RATE
        assert server.rrl_stats.dropped >= 2 * RATE    # counters survive the reloads
