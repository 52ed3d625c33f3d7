"""Fuzzing the DNS core and the real UDP edge with mutations of real queries (issue 8).

The robustness invariant: any datagram gives a reply that dnspython parses, with the query's ID,
or a silent drop; never an internal error. Checked on `Responder.respond` (wired like
dns_helpers does, with cookies, NSID and CHAOS identity on so their paths are fuzzed too) for
hypothesis-drawn mutations, and on a real server over UDP for a few hundred seeded mutations.
bench/dns_fuzz.py does the same at scale (a million datagrams, TCP too) beside gdnsd.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import dns.asyncquery
import dns.edns
import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.dns.cookies import ServerCookies
from tests.gslb_helpers import SEOUL_NET, running_gslb, wait_for
from tests.unit.dns_helpers import CLIENT, make_responder, query

COOKIE = dns.edns.GenericOption(10, bytes(range(8)))
SEEDS = [
    query("www.example.test"),
    query("www.example.test", edns=None),
    query("www.example.test", "AAAA", ecs="81.2.69.0/24"),
    query("www.example.test", ecs="2001:db8::/56"),
    query("example.test", "SOA"),
    query("example.test", "ANY"),
    query("app2.example.test", "A"),
    query("a.wild.example.test", "TXT"),
    query("x.sub.example.test", "A"),
    query("nope.example.test", "MX"),
    dns.message.make_query("www.example.test", "A", use_edns=0, options=[COOKIE, dns.edns.GenericOption(3, b"")],
                           want_dnssec=True).to_wire(),
    dns.message.make_query("id.server", "TXT", rdclass="CH").to_wire(),
]


def _opt_at(d: bytearray) -> int:
    """Offset of the OPT record's owner byte in a seed (OPT is last), or -1."""
    i = d.rfind(b"\x00\x00\x29")
    return i if i >= 12 else -1


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    d = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "count", "pointer", "labels", "opt",
                                   "option"]))
        at = draw(st.integers(0, max(0, len(d) - 1)))
        if op == "flip" and d:
            d[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and d:
            d[at] = draw(st.sampled_from([0, 0x3F, 0x40, 0xC0, 0xFF, draw(st.integers(0, 255))]))
        elif op == "truncate":
            d = d[:at]
        elif op == "extend":
            d += draw(st.binary(min_size=1, max_size=64))
        elif op == "count" and len(d) >= 12:
            field = draw(st.sampled_from([4, 6, 8, 10]))
            value = draw(st.sampled_from([0, 1, 2, 0xFFFF, draw(st.integers(0, 0xFFFF))]))
            d[field:field + 2] = value.to_bytes(2, "big")
        elif op == "pointer" and len(d) > 13:
            at = max(12, at)
            target = draw(st.sampled_from([at, at + 2, 0, 12, 0x3FFF, draw(st.integers(0, 0x3FFF))]))
            d[at:at + 2] = struct.pack("!H", 0xC000 | target)
        elif op == "labels" and len(d) > 12:
            d[12:12] = b"\x01a" * draw(st.integers(1, 130))
        elif op == "opt" and (i := _opt_at(d)) >= 0 and len(d) >= i + 11:
            part = draw(st.sampled_from(["size", "ttl", "rdlength"]))
            value = draw(st.integers(0, 0xFFFF))
            offset = {"size": 3, "ttl": 5, "rdlength": 9}[part]
            d[i + offset:i + offset + 2] = value.to_bytes(2, "big")
        elif op == "option" and (i := _opt_at(d)) >= 0 and len(d) >= i + 11:
            code = draw(st.sampled_from([3, 8, 10, 12, draw(st.integers(0, 0xFFFF))]))
            body = draw(st.binary(max_size=48))
            length = draw(st.sampled_from([len(body), len(body) + 1, max(0, len(body) - 1), 0xFFFF]))
            option = struct.pack("!HH", code, length) + body
            rdata = bytes(d[i + 11:]) + option
            d = d[:i + 9] + struct.pack("!H", len(rdata)) + rdata
    return bytes(d)


def _responder():
    responder, _ = make_responder(cookies=ServerCookies([b"k" * 16]), nsid=b"ns1", identity="ns1.example.test",
                                  version="gslb")
    return responder


def _check(reply: bytes | None, data: bytes) -> None:
    if reply is None:
        return
    message = dns.message.from_wire(reply)
    assert message.id == int.from_bytes(data[:2], "big")


RESPONDER = _responder()        # one for all examples: later ones meet the cache earlier ones filled


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.booleans())
def test_mutated_queries_give_a_parsable_reply_with_their_id_or_a_drop(data: bytes, tcp: bool) -> None:
    responder = RESPONDER
    _check(responder.respond(data, CLIENT, 1000.0, tcp=tcp), data)
    _check(responder.respond(data, CLIENT, 1000.0, tcp=tcp), data)     # the cached path too
    assert responder.stats.internal_errors == 0


def test_the_mutations_reach_answers_errors_and_drops() -> None:
    """The strategy is worth something only if it covers every outcome: answers, error replies, drops."""
    rng = random.Random(3)
    responder = _responder()
    outcomes: set[str] = set()
    for data in _seeded_mutations(rng, 400):
        reply = responder.respond(data, CLIENT, 1000.0)
        if reply is None:
            outcomes.add("drop")
        else:
            outcomes.add(f"rcode {dns.message.from_wire(reply).rcode()}")
    assert {"drop", "rcode 0", "rcode 1"} <= outcomes
    assert responder.stats.internal_errors == 0


def _seeded_mutations(rng: random.Random, count: int) -> list[bytes]:
    """Mutations without hypothesis (for the socket test): the strategy's operations, seeded."""
    out = []
    for _ in range(count):
        d = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(6)
            at = rng.randrange(max(1, len(d)))
            if op == 0 and d:
                d[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                d = d[:at]
            elif op == 2 and len(d) >= 12:
                field = rng.choice((4, 6, 8, 10))
                d[field:field + 2] = rng.choice((0, 2, 0xFFFF)).to_bytes(2, "big")
            elif op == 3 and len(d) > 13:
                at = max(12, at)
                d[at:at + 2] = struct.pack("!H", 0xC000 | rng.choice((at, 0x3FFF, 12)))
            elif op == 4:
                d += rng.randbytes(rng.randint(1, 40))
            else:
                d = bytearray(rng.randbytes(rng.randint(0, 80)))
        out.append(bytes(d))
    return out


async def test_real_udp_server_survives_mutated_datagrams(tmp_path) -> None:
    count = 400
    datagrams = _seeded_mutations(random.Random(11), count)
    sent_ids = {d[:2] for d in datagrams}
    async with running_gslb(tmp_path, with_lbs=False) as g:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        before = g.server.udp_stats.received
        try:
            for d in datagrams:
                await loop.sock_sendto(sock, d, ("127.0.0.1", g.dns_port))
            # the edge reads and answers in the loop's thread: once it has counted every datagram,
            # every reply it was going to send is in our socket's queue
            await wait_for(lambda: g.server.udp_stats.received - before >= count)
            replies = []
            while True:
                try:
                    replies.append(sock.recv(65535))
                except BlockingIOError:
                    break
        finally:
            sock.close()
        assert replies                          # the mutations include queries that are answered
        for reply in replies:
            message = dns.message.from_wire(reply)
            assert reply[:2] in sent_ids
            assert message.flags & 0x8000
        assert g.server.dns_stats.internal_errors == 0
        assert g.server.udp_stats.errors == 0
        # and it still answers
        q = dns.message.make_query("www.example.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(SEOUL_NET.split("/")[0], 24)])
        answer = await dns.asyncquery.tcp(q, "127.0.0.1", port=g.dns_port, timeout=5)
        assert [rr.address for rrset in answer.answer for rr in rrset] == ["127.0.3.1"]
