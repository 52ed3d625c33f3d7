"""Responder: DNS Cookies (RFC 7873 / 9018), NSID (RFC 5001), CHAOS identity, OPT and flags in error replies."""

from __future__ import annotations

import ipaddress
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from gslb.dns.cookies import ServerCookies
from gslb.dns.responder import Responder
from tests.unit.dns_helpers import CLIENT, ask, default_steering, load_test_zones, records

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
OTHER_SECRET = bytes(range(16))
WALL = 1_700_000_000.0
CLIENT_COOKIE = bytes.fromhex("2464c4abcf10c957")


def responder(**kwargs: object) -> Responder:
    kwargs.setdefault("cookies", ServerCookies([SECRET]))
    return Responder(load_test_zones(), default_steering(), **kwargs)  # type: ignore[arg-type]


def make(name: str = "www.example.test", rdtype: str = "A", *, cookie: bytes | None = None, nsid: bool = False,
         ecs: str | None = None, qid: int = 4242, edns: bool = True, payload: int = 1232,
         rdclass: str = "IN", extra: list[dns.edns.Option] | None = None) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    if nsid:
        options.append(dns.edns.GenericOption(dns.edns.NSID, b""))
    if cookie is not None:
        options.append(dns.edns.GenericOption(dns.edns.COOKIE, cookie))
    options += extra or []
    msg = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=0 if edns else False, payload=payload,
                                 options=options or None)
    msg.id = qid
    return msg.to_wire()


def option(reply: dns.message.Message, code: int) -> bytes | None:
    for opt in reply.options:
        if opt.otype == code:
            return opt.to_wire()
    return None


def server_cookie_for(client_cookie: bytes, client: ipaddress.IPv4Address = CLIENT, now: float = WALL) -> bytes:
    return client_cookie + ServerCookies([SECRET]).make(client_cookie, client, now)


# -- cookies ------------------------------------------------------------------------------


def test_client_cookie_is_echoed_with_a_fresh_server_cookie() -> None:
    r = responder()
    reply = ask(r, make(cookie=CLIENT_COOKIE), now=WALL)
    assert reply.rcode() == dns.rcode.NOERROR
    assert records(reply.answer) == ["www.example.test. 30 A 192.0.2.1"]
    cookie = option(reply, dns.edns.COOKIE)
    assert cookie is not None
    assert len(cookie) == 24
    assert cookie[:8] == CLIENT_COOKIE
    assert cookie == server_cookie_for(CLIENT_COOKIE)
    assert ServerCookies([SECRET]).valid(cookie, CLIENT, WALL + 10)
    assert r.stats.cookies == 1


def test_every_reply_carries_its_own_clients_cookie_even_from_the_cache() -> None:
    r = responder()
    first, second = b"\x01" * 8, b"\x02" * 8
    a = ask(r, make(cookie=first), now=WALL)
    b = ask(r, make(cookie=second), now=WALL + 1)
    neighbour = ipaddress.IPv4Address("198.51.100.9")          # same /24: the same cached answer
    c = ask(r, make(cookie=first), client=neighbour, now=WALL + 2)
    assert r.stats.cache_hits == 2
    assert option(a, dns.edns.COOKIE) == server_cookie_for(first)
    assert option(b, dns.edns.COOKIE) == server_cookie_for(second, now=WALL + 1)
    assert option(c, dns.edns.COOKIE) == server_cookie_for(first, neighbour, WALL + 2)
    assert records(a.answer) == records(b.answer) == records(c.answer)
    plain = ask(r, make(), now=WALL + 3)
    assert option(plain, dns.edns.COOKIE) is None      # no cookie asked, none given (and none from the cache)


def test_without_require_a_bad_or_missing_server_cookie_still_gets_the_answer() -> None:
    r = responder()
    stale = server_cookie_for(CLIENT_COOKIE, now=WALL - 7200)
    forged = CLIENT_COOKIE + b"\x01\x00\x00\x00" + struct.pack("!I", int(WALL)) + b"\x00" * 8
    for cookie in (CLIENT_COOKIE, stale, forged, CLIENT_COOKIE + b"\x05" * 8):
        reply = ask(r, make(cookie=cookie), now=WALL)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer
        assert option(reply, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE)
    assert r.stats.cookies == 4
    assert r.stats.cookies_valid == 0
    for _ in range(2):      # a miss, then a hit: both checked, both counted
        ask(r, make(cookie=server_cookie_for(CLIENT_COOKIE, now=WALL - 60)), now=WALL)
    assert r.stats.cookies_valid == 2


def test_require_answers_badcookie_over_udp_without_a_valid_server_cookie() -> None:
    r = responder(require_cookies=True)
    for cookie in (CLIENT_COOKIE, server_cookie_for(CLIENT_COOKIE, now=WALL - 7200),
                   server_cookie_for(CLIENT_COOKIE, client=ipaddress.IPv4Address("192.0.2.99"))):
        for _ in range(2):          # and never from the cache
            reply = ask(r, make(cookie=cookie), now=WALL)
            assert reply.rcode() == 23                                  # BADCOOKIE (extended rcode)
            assert reply.answer == []
            assert reply.authority == []
            assert option(reply, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE)
            assert reply.question[0].name.to_text() == "www.example.test."
    assert r.stats.by_rcode["BADCOOKIE"] == 6
    # the fresh cookie it sent is then accepted, answered, and cached
    good = server_cookie_for(CLIENT_COOKIE)
    for i in range(2):
        reply = ask(r, make(cookie=good), now=WALL + i)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer
    assert r.stats.cache_hits == 1
    assert r.stats.cookies_valid == 2
    # ... and a forged one after that is still refused, cache or not
    assert ask(r, make(cookie=CLIENT_COOKIE + b"\x01" + b"\x00" * 15), now=WALL).rcode() == 23


def test_require_still_answers_tcp_and_queries_without_any_cookie() -> None:
    r = responder(require_cookies=True)
    over_tcp = ask(r, make(cookie=CLIENT_COOKIE), now=WALL, tcp=True)
    assert over_tcp.rcode() == dns.rcode.NOERROR
    assert over_tcp.answer
    assert option(over_tcp, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE)
    assert ask(r, make(), now=WALL).answer                                  # §5.2.1: no cookie, normal answer
    assert ask(r, make(edns=False), now=WALL).answer


def test_cookies_off_ignores_the_option() -> None:
    r = responder(cookies=None)
    reply = ask(r, make(cookie=CLIENT_COOKIE), now=WALL)
    assert reply.answer
    assert option(reply, dns.edns.COOKIE) is None
    assert not r.cookie_valid(make(cookie=server_cookie_for(CLIENT_COOKIE)), CLIENT, WALL)


@pytest.mark.parametrize("length", [1, 7, 9, 15, 41])
def test_malformed_cookie_is_formerr_with_opt(length: int) -> None:
    reply = ask(responder(), make(cookie=b"\x07" * length), now=WALL)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0


def test_cookie_valid_for_rate_limiting_uses_the_wall_clock() -> None:
    clock = [WALL]
    r = responder(wall=lambda: clock[0])
    good = make(cookie=server_cookie_for(CLIENT_COOKIE))
    assert r.cookie_valid(good, CLIENT, 5.0)                 # `now` (monotonic) is not used for cookies
    assert not r.cookie_valid(good, ipaddress.IPv4Address("192.0.2.1"), 5.0)
    assert not r.cookie_valid(make(cookie=CLIENT_COOKIE), CLIENT, 5.0)
    assert not r.cookie_valid(make(), CLIENT, 5.0)
    assert not r.cookie_valid(b"\x00garbage", CLIENT, 5.0)
    clock[0] = WALL + 3601
    assert not r.cookie_valid(good, CLIENT, 5.0)
    # and the reply's server cookie is stamped with the wall clock
    reply = ask(r, make(cookie=CLIENT_COOKIE), now=5.0)
    assert option(reply, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE, now=WALL + 3601)


def test_rotation_old_secret_verifies_new_one_signs() -> None:
    old_cookie = CLIENT_COOKIE + ServerCookies([OTHER_SECRET]).make(CLIENT_COOKIE, CLIENT, WALL)
    r = responder(cookies=ServerCookies([SECRET, OTHER_SECRET]), require_cookies=True)
    reply = ask(r, make(cookie=old_cookie), now=WALL)
    assert reply.rcode() == dns.rcode.NOERROR
    assert option(reply, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE)


# -- NSID and CHAOS ------------------------------------------------------------------------


def test_nsid_is_echoed_only_when_configured() -> None:
    off = ask(responder(), make(nsid=True))
    assert option(off, dns.edns.NSID) is None
    r = responder(nsid=b"gslb-eu-1")
    on = ask(r, make(nsid=True, cookie=CLIENT_COOKIE), now=WALL)
    assert option(on, dns.edns.NSID) == b"gslb-eu-1"
    assert option(on, dns.edns.COOKIE) == server_cookie_for(CLIENT_COOKIE)
    again = ask(r, make(nsid=True), now=WALL)                     # from the cache
    assert option(again, dns.edns.NSID) == b"gslb-eu-1"
    assert option(ask(r, make()), dns.edns.NSID) is None        # not asked
    assert r.stats.nsid >= 2


def test_nsid_with_ecs_keeps_both_options() -> None:
    reply = ask(responder(nsid=b"n1"), make(nsid=True, ecs="192.0.2.0/24"))
    assert option(reply, dns.edns.NSID) == b"n1"
    assert any(isinstance(o, dns.edns.ECSOption) for o in reply.options)


@pytest.mark.parametrize(("name", "configured"), [
    ("id.server", "identity"), ("hostname.bind", "identity"), ("version.bind", "version"),
    ("version.server", "version"), ("VERSION.BIND", "version")])
def test_chaos_txt_answers_the_configured_strings(name: str, configured: str) -> None:
    off = ask(responder(), make(name, "TXT", rdclass="CH"))
    assert off.rcode() == dns.rcode.REFUSED
    assert not off.answer
    r = responder(identity="ns1.example.test", version="gslb 1.0")
    for _ in range(2):      # second one from the cache
        reply = ask(r, make(name, "TXT", rdclass="CH"))
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.AA
        (rrset,) = reply.answer
        assert rrset.rdclass == dns.rdataclass.CH
        assert rrset.rdtype == dns.rdatatype.TXT
        expected = "ns1.example.test" if configured == "identity" else "gslb 1.0"
        assert [b"".join(rd.strings).decode() for rd in rrset] == [expected]


def test_chaos_other_names_types_and_classes_are_refused() -> None:
    r = responder(identity="ns1", version="v1")
    assert ask(r, make("authors.bind", "TXT", rdclass="CH")).rcode() == dns.rcode.REFUSED
    assert ask(r, make("version.bind", "A", rdclass="CH")).rcode() == dns.rcode.REFUSED
    assert ask(r, make("version.bind", "TXT", rdclass="HS")).rcode() == dns.rcode.REFUSED
    assert ask(r, make("version.bind", "TXT")).rcode() == dns.rcode.REFUSED      # IN: outside our zones


# -- OPT and flags in error replies -----------------------------------------------------------


def _flags(reply: dns.message.Message) -> int:
    return reply.flags & ~(dns.flags.QR | 0x7800 | 0x000F)      # the flag bits: not QR, opcode, rcode


def test_notimp_carries_opt_and_copies_only_opcode_and_rd() -> None:
    msg = dns.message.make_query("www.example.test", "A", use_edns=0)
    msg.set_opcode(dns.opcode.NOTIFY)
    msg.flags |= dns.flags.CD | dns.flags.AD
    reply = ask(responder(), msg.to_wire())
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == dns.opcode.NOTIFY
    assert reply.edns == 0                                   # RFC 6891 §7: OPT in, OPT out
    assert _flags(reply) == dns.flags.RD
    msg.flags &= ~dns.flags.RD
    assert _flags(ask(responder(), msg.to_wire())) == 0
    msg.use_edns(False)
    assert ask(responder(), msg.to_wire()).edns == -1        # no OPT in, none out


def test_formerr_carries_opt_and_copies_only_rd() -> None:
    data = bytearray(make(cookie=b"\x01" * 9))              # a malformed COOKIE length
    data[3] |= 0x30                                            # AD and CD
    reply = ask(responder(), bytes(data))
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert _flags(reply) == dns.flags.RD
    bad_ecs = bytearray(make(ecs="192.0.2.0/23"))
    bad_ecs[-1] = 1                                            # a bit beyond the /23
    reply = ask(responder(), bytes(bad_ecs))
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0


def test_badvers_refused_servfail_carry_opt() -> None:
    msg = dns.message.make_query("www.example.test", "A", use_edns=1)
    reply = ask(responder(), msg.to_wire())
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert ask(responder(), make("www.example.org")).edns == 0     # REFUSED
    steering = default_steering()
    steering.fail = True
    failing = Responder(load_test_zones(), steering)
    servfail = ask(failing, make())
    assert servfail.rcode() == dns.rcode.SERVFAIL
    assert servfail.edns == 0
