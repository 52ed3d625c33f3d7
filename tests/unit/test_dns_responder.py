"""Responder behaviour, query by query, through dnspython-built queries and parsed replies."""

from __future__ import annotations

import ipaddress
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from gslb.dns.responder import Responder, ResponderStats
from tests.unit.dns_helpers import (
    CLIENT,
    FakeSteering,
    ask,
    default_steering,
    load_test_zones,
    make_responder,
    query,
    records,
    service_answer,
)

# -- flags, rcodes, negative answers ------------------------------------------------


def test_static_answer_is_authoritative_without_recursion_and_copies_rd() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("mail.example.test", "A", qid=777))
    assert reply.id == 777
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.QR
    assert not reply.flags & dns.flags.RA
    assert reply.flags & dns.flags.RD
    assert records(reply.answer) == ["mail.example.test. 3600 A 127.0.0.25"]
    no_rd = ask(responder, query("mail.example.test", "A", rd=False))
    assert not no_rd.flags & dns.flags.RD
    assert not no_rd.flags & dns.flags.RA


def test_nxdomain_has_soa_with_negative_ttl() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("nope.example.test", "A"))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    assert reply.answer == []
    assert records(reply.authority) == [
        "example.test. 60 SOA ns1.example.test. hostmaster.example.test. 2026112401 3600 600 1209600 60"]


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("nope.other.test", "A"))
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].ttl == 300    # ttl 300 < minimum 900


def test_nodata_is_noerror_with_soa() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("mail.example.test", "AAAA"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.authority[0].ttl == 60


def test_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("b.ent.example.test", "A"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


def test_outside_our_zones_is_refused() -> None:
    responder, _ = make_responder()
    for name in ("www.example.org", "test", "."):
        reply = ask(responder, query(name, "A"))
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.flags & dns.flags.AA


def test_zone_transfer_and_other_classes_are_refused() -> None:
    responder, _ = make_responder()
    assert ask(responder, query("example.test", "AXFR"), tcp=True).rcode() == dns.rcode.REFUSED
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    assert ask(responder, chaos.to_wire()).rcode() == dns.rcode.REFUSED


def test_opcode_other_than_query_is_notimp() -> None:
    responder, _ = make_responder()
    msg = dns.message.make_query("www.example.test", "A")
    msg.set_opcode(dns.opcode.NOTIFY)
    reply = ask(responder, msg.to_wire())
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == dns.opcode.NOTIFY
    assert reply.question == []


def test_names_are_case_insensitive_and_case_is_echoed() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("MaIl.ExAmPlE.tEsT", "A"))
    assert reply.question[0].name.to_text() == "MaIl.ExAmPlE.tEsT."
    assert reply.answer[0].name.to_text() == "MaIl.ExAmPlE.tEsT."
    raw = responder.respond(query("MaIl.ExAmPlE.tEsT", "A"), CLIENT, 0.0)
    assert raw is not None
    assert b"\x04MaIl\x07ExAmPlE\x04tEsT\x00" in raw
    assert b"mail" not in raw.lower().replace(b"mail", b"", 1)  # the owner is a pointer to the question


def test_soa_and_ns_at_the_apex_with_glue() -> None:
    responder, _ = make_responder()
    soa = ask(responder, query("example.test", "SOA"))
    assert records(soa.answer) == [
        "example.test. 3600 SOA ns1.example.test. hostmaster.example.test. 2026112401 3600 600 1209600 60"]
    ns = ask(responder, query("example.test", "NS"))
    assert records(ns.answer) == ["example.test. 3600 NS ns1.example.test.",
                                  "example.test. 3600 NS ns2.example.test."]
    assert records(ns.additional) == ["ns1.example.test. 3600 A 127.0.0.1",
                                      "ns1.example.test. 3600 AAAA ::1",
                                      "ns2.example.test. 3600 A 127.0.0.2"]


def test_static_types_mx_txt_caa_srv_ptr_and_ttl_override() -> None:
    responder, _ = make_responder()
    assert records(ask(responder, query("example.test", "MX")).answer) == [
        "example.test. 3600 MX 10 mail.example.test."]
    assert records(ask(responder, query("example.test", "TXT")).answer) == [
        'example.test. 3600 TXT "v=spf1 -all"']
    assert records(ask(responder, query("example.test", "CAA")).answer) == [
        'example.test. 3600 CAA 0 issue "letsencrypt.org"']
    assert records(ask(responder, query("srv.example.test", "SRV")).answer) == [
        "srv.example.test. 3600 SRV 10 5 443 mail.example.test."]
    assert records(ask(responder, query("ptr.example.test", "PTR")).answer) == [
        "ptr.example.test. 3600 PTR mail.example.test."]
    assert records(ask(responder, query("ttl-override.example.test", "A")).answer) == [
        "ttl-override.example.test. 60 A 127.0.0.7"]
    long_txt = ask(responder, query("txtlong.example.test", "TXT")).answer[0][0]
    assert b"".join(long_txt.strings) == b"x" * 600
    assert [len(s) for s in long_txt.strings] == [255, 255, 90]


def test_wildcard_synthesizes_the_query_name() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("Foo.Bar.wild.example.test", "A"))
    assert records(reply.answer) == ["Foo.Bar.wild.example.test. 3600 A 127.0.0.9"]
    assert reply.flags & dns.flags.AA
    nodata = ask(responder, query("foo.wild.example.test", "AAAA"))
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    # the wildcard does not cover the parent itself (an empty non-terminal)
    parent = ask(responder, query("wild.example.test", "A"))
    assert parent.rcode() == dns.rcode.NOERROR
    assert parent.answer == []


# -- CNAME chains ------------------------------------------------------------------

def test_cname_chain_into_a_service_name() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("app2.example.test", "A"))
    assert records(reply.answer) == [
        "app.example.test. 3600 CNAME www.example.test.",
        "app2.example.test. 3600 CNAME app.example.test.",
        "www.example.test. 30 A 192.0.2.1",
    ]
    assert steering.calls[0][0] == "www.example.test"


def test_cname_chain_across_our_zones_and_to_static_data() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("alias.other.test", "AAAA"))
    assert records(reply.answer) == ["alias.other.test. 300 CNAME www.example.test.",
                                     "www.example.test. 30 AAAA 2001:db8::1"]
    static = ask(responder, query("static-alias.example.test", "A"))
    assert "mail.example.test. 3600 A 127.0.0.25" in records(static.answer)


def test_cname_query_type_returns_the_cname_itself() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("app.example.test", "CNAME"))
    assert records(reply.answer) == ["app.example.test. 3600 CNAME www.example.test."]
    assert steering.calls == []


def test_cname_loop_and_dangling_and_outside_targets() -> None:
    responder, _ = make_responder()
    loop = ask(responder, query("loop1.example.test", "A"))
    assert loop.rcode() == dns.rcode.NOERROR
    assert records(loop.answer) == ["loop1.example.test. 3600 CNAME loop2.example.test.",
                                    "loop2.example.test. 3600 CNAME loop1.example.test."]
    dangling = ask(responder, query("dangling.example.test", "A"))
    assert dangling.rcode() == dns.rcode.NXDOMAIN        # RFC 6604: the last name's rcode
    assert len(dangling.answer) == 1
    assert dangling.authority[0].rdtype == dns.rdatatype.SOA
    outside = ask(responder, query("outside.example.test", "A"))
    assert outside.rcode() == dns.rcode.NOERROR
    assert records(outside.answer) == ["outside.example.test. 3600 CNAME www.elsewhere.invalid."]


# -- service names -----------------------------------------------------------------

def test_service_a_and_aaaa_from_steering_with_resolver_address() -> None:
    responder, steering = make_responder()
    a = ask(responder, query("www.example.test", "A", edns=None), now=5.0)
    aaaa = ask(responder, query("www.example.test", "AAAA", edns=None), now=6.0)
    assert records(a.answer) == ["www.example.test. 30 A 192.0.2.1"]
    assert records(aaaa.answer) == ["www.example.test. 30 AAAA 2001:db8::1"]
    assert steering.calls == [("www.example.test", CLIENT, None, 5.0), ("www.example.test", CLIENT, None, 6.0)]
    assert a.flags & dns.flags.AA


def test_service_without_v6_is_nodata() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("v4only.example.test", "AAAA"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.authority[0].ttl == 60


def test_service_other_types_are_nodata_without_asking_steering() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("www.example.test", "MX"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert steering.calls == []


def test_static_data_below_a_service_name_keeps_the_service() -> None:
    responder, _ = make_responder()   # _acme.www is static, www is a service
    assert records(ask(responder, query("www.example.test", "A")).answer) == [
        "www.example.test. 30 A 192.0.2.1"]
    assert records(ask(responder, query("_acme.www.example.test", "TXT")).answer) == [
        '_acme.www.example.test. 3600 TXT "token"']


def test_all_down_nodata_uses_the_answers_negative_ttl() -> None:
    stats = ResponderStats()
    responder, _ = make_responder(stats=stats)
    reply = ask(responder, query("down.example.test", "A"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert reply.authority[0].ttl == 5
    assert stats.all_down["down.example.test"] == 1


def test_all_down_cname_answer() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("moved.example.test", "A"))
    assert records(reply.answer) == ["moved.example.test. 30 CNAME fallback.elsewhere.invalid."]


def test_steering_failure_is_servfail_and_not_cached() -> None:
    steering = default_steering()
    steering.fail = True
    responder, _ = make_responder(steering)
    assert ask(responder, query("www.example.test", "A")).rcode() == dns.rcode.SERVFAIL
    steering.fail = False
    assert ask(responder, query("www.example.test", "A")).rcode() == dns.rcode.NOERROR
    assert responder.stats.steering_errors == 1


def test_bad_steering_data_is_servfail() -> None:
    steering = FakeSteering(services={"www.example.test": service_answer(v4=("not-an-ip",))})
    responder, _ = make_responder(steering)
    assert ask(responder, query("www.example.test", "A")).rcode() == dns.rcode.SERVFAIL


def test_stats_count_rcodes_qtypes_and_regions() -> None:
    responder, _ = make_responder()
    ask(responder, query("www.example.test", "A"))
    ask(responder, query("www.example.test", "A"))          # a cache hit counts too
    ask(responder, query("weighted.example.test", "AAAA"))
    ask(responder, query("nope.example.test", "TXT"))
    assert responder.respond(b"\x00" * 5, CLIENT, 0.0) is None
    stats = responder.stats
    assert stats.queries == 5
    assert stats.cache_hits == 1
    assert stats.dropped == 1
    assert stats.by_rcode == {"NOERROR": 3, "NXDOMAIN": 1}
    assert stats.by_qtype == {"A": 2, "AAAA": 1, "TXT": 1}
    assert stats.by_region == {"eu": 3, "us": 1}
    assert "queries" in repr(stats)


# -- ECS -------------------------------------------------------------------------------

def test_ecs_address_goes_to_steering_and_scope_is_echoed() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("www.example.test", "A", ecs="203.0.113.0/24"))
    assert steering.calls[0][1:3] == (ipaddress.IPv4Address("203.0.113.0"), 24)
    (ecs,) = reply.options
    assert isinstance(ecs, dns.edns.ECSOption)
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("203.0.113.0", 24, 24)


def test_ecs_source_is_capped_but_echoed_as_received() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("www.example.test", "A", ecs="203.0.113.77/32"))
    assert steering.calls[0][1:3] == (ipaddress.IPv4Address("203.0.113.0"), 24)
    (ecs,) = reply.options
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("203.0.113.77", 32, 24)
    ask(responder, query("www.example.test", "A", ecs="2001:db8:1234:5678:9abc::/64"))
    assert steering.calls[1][1:3] == (ipaddress.IPv6Address("2001:db8:1234:5600::"), 56)


def test_ecs_source_zero_uses_the_resolver_and_scope_zero() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("www.example.test", "A", ecs="0.0.0.0/0"))
    assert steering.calls[0][1:3] == (CLIENT, None)
    (ecs,) = reply.options
    assert (ecs.srclen, ecs.scopelen) == (0, 0)


def test_ecs_mapped_ipv4_is_located_as_ipv4_and_scope_shifted_back() -> None:
    responder, steering = make_responder()
    reply = ask(responder, query("www.example.test", "A", ecs="::ffff:203.0.113.0/120"))
    assert steering.calls[0][1:3] == (ipaddress.IPv4Address("203.0.113.0"), 24)
    (ecs,) = reply.options
    assert (ecs.srclen, ecs.scopelen) == (120, 120)


def test_resolver_on_mapped_address_is_located_as_ipv4() -> None:
    responder, steering = make_responder()
    ask(responder, query("www.example.test", "A", edns=None), client=ipaddress.IPv6Address("::ffff:1.2.3.4"))
    ask(responder, query("www.example.test", "A", edns=None), client=ipaddress.IPv6Address("64:ff9b::5.6.7.8"))
    assert [call[1] for call in steering.calls] == [ipaddress.IPv4Address("1.2.3.4"),
                                                     ipaddress.IPv4Address("5.6.7.8")]


def test_static_and_negative_answers_echo_scope_zero() -> None:
    responder, _ = make_responder()
    for name in ("mail.example.test", "nope.example.test"):
        (ecs,) = ask(responder, query(name, "A", ecs="203.0.113.0/24")).options
        assert ecs.scopelen == 0


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (struct.pack("!HBB", 3, 24, 0) + b"\x01\x02\x03", "family 3"),
        (struct.pack("!HBB", 1, 33, 0) + b"\x01\x02\x03\x04\x05", "source too long"),
        (struct.pack("!HBB", 1, 24, 0) + b"\x01\x02", "address too short"),
        (struct.pack("!HBB", 1, 24, 0) + b"\x01\x02\x03\x04", "address too long"),
        (struct.pack("!HBB", 1, 23, 0) + b"\x01\x02\x03", "bits beyond source"),
        (struct.pack("!HBB", 1, 24, 8) + b"\x01\x02\x03", "scope in a query"),
        (b"\x00\x01", "too short"),
    ],
)
def test_bad_ecs_is_formerr_with_question(option: bytes, why: str) -> None:
    responder, _ = make_responder()
    msg = dns.message.make_query("www.example.test", "A", use_edns=0,
                                 options=[dns.edns.GenericOption(8, option)])
    reply = ask(responder, msg.to_wire())
    assert reply.rcode() == dns.rcode.FORMERR, why
    assert str(reply.question[0].name) == "www.example.test."
    assert reply.edns == 0


def test_two_ecs_options_are_formerr() -> None:
    responder, _ = make_responder()
    ecs = dns.edns.ECSOption("1.2.3.0", 24)
    msg = dns.message.make_query("www.example.test", "A", use_edns=0, options=[ecs, ecs])
    assert ask(responder, msg.to_wire()).rcode() == dns.rcode.FORMERR


# -- EDNS, malformed queries, truncation -----------------------------------------------

def test_edns_is_echoed_with_our_payload_and_do_bit() -> None:
    responder, _ = make_responder(max_udp_size=1400)
    msg = dns.message.make_query("mail.example.test", "A", use_edns=0, payload=4096, want_dnssec=True,
                                 options=[dns.edns.GenericOption(65001, b"hello")])
    reply = ask(responder, msg.to_wire())
    assert reply.edns == 0
    assert reply.payload == 1400
    assert reply.ednsflags & dns.flags.DO
    assert reply.options == ()          # unknown options ignored, not echoed
    assert reply.rcode() == dns.rcode.NOERROR
    plain = ask(responder, query("mail.example.test", "A", edns=None))
    assert plain.edns == -1


def test_edns_version_above_zero_is_badvers() -> None:
    responder, _ = make_responder()
    reply = ask(responder, query("www.example.test", "A", edns=1))
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.answer == []
    assert str(reply.question[0].name) == "www.example.test."
    assert responder.stats.by_rcode["BADVERS"] == 1


def _with_counts(data: bytes, *, qd: int | None = None, ar: int | None = None) -> bytes:
    header = list(struct.unpack("!6H", data[:12]))
    if qd is not None:
        header[2] = qd
    if ar is not None:
        header[5] = ar
    return struct.pack("!6H", *header) + data[12:]


def test_formerr_cases() -> None:
    responder, _ = make_responder()
    base = query("www.example.test", "A", edns=None)
    two_questions = _with_counts(base + base[12:], qd=2)
    reply = ask(responder, two_questions)
    assert reply.rcode() == dns.rcode.FORMERR
    assert str(reply.question[0].name) == "www.example.test."
    no_question = ask(responder, _with_counts(base[:12], qd=0))
    assert no_question.rcode() == dns.rcode.FORMERR
    assert no_question.question == []
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    two_opts = ask(responder, _with_counts(base + opt + opt, ar=2))
    assert two_opts.rcode() == dns.rcode.FORMERR
    junk = ask(responder, base + b"\xff\xff")
    assert junk.rcode() == dns.rcode.FORMERR
    bad_opt_owner = ask(responder, _with_counts(base + b"\x01a\x00" + opt[1:], ar=1))
    assert bad_opt_owner.rcode() == dns.rcode.FORMERR
    bad_option_len = _with_counts(base + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x08\x00\x09", ar=1)
    assert ask(responder, bad_option_len).rcode() == dns.rcode.FORMERR


def test_garbage_is_dropped() -> None:
    responder, _ = make_responder()
    base = query("www.example.test", "A")
    assert responder.respond(b"", CLIENT, 0.0) is None
    assert responder.respond(base[:11], CLIENT, 0.0) is None
    response = bytearray(base)
    response[2] |= 0x80            # QR=1: a response, never answered
    assert responder.respond(bytes(response), CLIENT, 0.0) is None
    assert responder.stats.dropped == 3


def test_truncation_over_udp_and_full_answer_over_tcp() -> None:
    responder, _ = make_responder()
    udp = ask(responder, query("big.example.test", "A", payload=1232))
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert str(udp.question[0].name) == "big.example.test."
    assert udp.edns == 0
    tcp = ask(responder, query("big.example.test", "A", payload=1232), tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 100
    assert responder.stats.truncated == 1


def test_no_edns_means_512_and_client_size_is_honoured() -> None:
    responder, _ = make_responder()
    txt = ask(responder, query("txtlong.example.test", "TXT", edns=None))    # ~650 bytes
    assert txt.flags & dns.flags.TC
    small = ask(responder, query("txtlong.example.test", "TXT", payload=600))
    assert small.flags & dns.flags.TC
    tiny = ask(responder, query("txtlong.example.test", "TXT", payload=100))  # below 512 counts as 512
    assert tiny.flags & dns.flags.TC
    fits = ask(responder, query("txtlong.example.test", "TXT", payload=1232))
    assert not fits.flags & dns.flags.TC
    assert fits.answer


def test_glue_is_dropped_before_truncating_an_answer() -> None:
    hosts = "\n".join(f"      ns{i}: {{A: [{', '.join(f'127.2.{i}.{k}' for k in range(1, 6))}]}}"
                      for i in range(10))
    text = f"""
zones:
  many.test:
    ns: [{', '.join(f'ns{i}.many.test' for i in range(10))}]
    records:
{hosts}
"""
    responder = Responder(load_test_zones(text), default_steering())
    small = ask(responder, query("many.test", "NS", edns=None))
    assert not small.flags & dns.flags.TC
    assert len(small.answer[0]) == 10
    assert small.additional == []
    large = ask(responder, query("many.test", "NS", payload=4096))
    assert len(large.additional) == 10
    assert not large.flags & dns.flags.TC


def test_any_is_answered_minimally() -> None:
    responder, steering = make_responder()
    apex = ask(responder, query("example.test", "ANY"))
    assert len(apex.answer) == 1
    service = ask(responder, query("www.example.test", "ANY"))
    assert records(service.answer) == ['www.example.test. 3600 HINFO "RFC8482" ""']
    assert steering.calls == []
    alias = ask(responder, query("app.example.test", "ANY"))
    assert records(alias.answer) == ["app.example.test. 3600 CNAME www.example.test."]


def test_referral_for_names_at_and_below_a_cut() -> None:
    responder, steering = make_responder()
    for name, rdtype in (("sub.example.test", "NS"), ("deep.www.sub.example.test", "A"),
                         ("ns.sub.example.test", "A")):
        reply = ask(responder, query(name, rdtype))
        assert reply.rcode() == dns.rcode.NOERROR
        assert not reply.flags & dns.flags.AA
        assert reply.answer == []
        assert records(reply.authority) == ["sub.example.test. 3600 NS ns.other.invalid.",
                                            "sub.example.test. 3600 NS ns.sub.example.test."]
        assert records(reply.additional) == ["ns.sub.example.test. 3600 A 127.0.0.53"]
    ds = ask(responder, query("sub.example.test", "DS"))     # DS belongs to the parent side
    assert ds.flags & dns.flags.AA
    assert ds.authority[0].rdtype == dns.rdatatype.SOA
    assert steering.calls == []


# -- the cache -------------------------------------------------------------------------

def test_cache_hit_splices_the_id_and_skips_steering() -> None:
    responder, steering = make_responder()
    first = responder.respond(query("www.example.test", "A", ecs="1.2.3.0/24", qid=1), CLIENT, 100.0)
    second = responder.respond(query("www.example.test", "A", ecs="1.2.3.0/24", qid=2), CLIENT, 101.0)
    assert first is not None
    assert second is not None
    assert first[:2] == b"\x00\x01"
    assert second[:2] == b"\x00\x02"
    assert first[2:] == second[2:]
    assert len(steering.calls) == 1
    assert responder.stats.cache_hits == 1


def test_cache_expires_after_cache_for_and_on_generation_change() -> None:
    responder, steering = make_responder()
    data = query("www.example.test", "A", ecs="1.2.3.0/24")
    responder.respond(data, CLIENT, 100.0)
    responder.respond(data, CLIENT, 109.9)
    assert len(steering.calls) == 1
    responder.respond(data, CLIENT, 110.0)        # cache_for = 10 s
    assert len(steering.calls) == 2
    steering.generation += 1
    responder.respond(data, CLIENT, 111.0)
    assert len(steering.calls) == 3


def test_cache_for_zero_is_never_cached() -> None:
    responder, steering = make_responder()
    data = query("weighted.example.test", "A", ecs="1.2.3.0/24")
    responder.respond(data, CLIENT, 1.0)
    responder.respond(data, CLIENT, 1.0)
    assert len(steering.calls) == 2


def test_cache_without_ecs_is_per_client_network() -> None:
    responder, steering = make_responder()
    data = query("www.example.test", "A", edns=None)
    responder.respond(data, ipaddress.IPv4Address("10.1.2.3"), 1.0)
    responder.respond(data, ipaddress.IPv4Address("10.1.2.200"), 1.0)    # same /24: hit
    assert len(steering.calls) == 1
    responder.respond(data, ipaddress.IPv4Address("10.1.3.3"), 1.0)      # another /24: miss
    responder.respond(data, ipaddress.IPv6Address("2001:db8::1"), 1.0)
    responder.respond(data, ipaddress.IPv6Address("2001:db8:0:ff::1"), 1.0)   # same /56
    responder.respond(data, ipaddress.IPv6Address("::ffff:10.1.3.9"), 1.0)    # mapped: same /24 as 10.1.3.3
    assert [str(call[1]) for call in steering.calls] == ["10.1.2.3", "10.1.3.3", "2001:db8::1"]


def test_static_answers_are_cached_until_generation_changes() -> None:
    responder, _ = make_responder()
    data = query("mail.example.test", "A")
    responder.respond(data, CLIENT, 1.0)
    responder.respond(data, ipaddress.IPv4Address("192.0.2.99"), 1e9)
    assert responder.stats.cache_hits == 1


def test_cache_is_bounded() -> None:
    responder, _ = make_responder(cache_size=3)
    for i in range(10):
        responder.respond(query(f"n{i}.example.test", "A"), CLIENT, 1.0)
    assert responder._cached <= 3
    assert "cache" in repr(responder)


def test_cache_size_zero_disables_the_cache() -> None:
    responder, steering = make_responder(cache_size=0)
    data = query("www.example.test", "A", ecs="1.2.3.0/24")
    responder.respond(data, CLIENT, 1.0)
    responder.respond(data, CLIENT, 1.0)
    assert len(steering.calls) == 2


def test_tcp_and_udp_are_cached_apart() -> None:
    responder, _ = make_responder()
    data = query("big.example.test", "A")
    udp = responder.respond(data, CLIENT, 1.0)
    tcp = responder.respond(data, CLIENT, 1.0, tcp=True)
    udp2 = responder.respond(data, CLIENT, 1.0)
    assert udp == udp2
    assert udp != tcp


def test_memoryview_input_is_accepted() -> None:
    responder, _ = make_responder()
    data = query("mail.example.test", "A")
    assert responder.respond(memoryview(data), CLIENT, 1.0) == responder.respond(bytearray(data), CLIENT, 1.0)


def test_responder_without_zones_refuses_everything() -> None:
    responder = Responder((), default_steering())
    assert ask(responder, query("www.example.test", "A")).rcode() == dns.rcode.REFUSED
    assert load_test_zones()[0].origin in ("example.test", "other.test")


def test_service_at_the_apex_beside_soa_ns_and_mx() -> None:
    steering = default_steering()
    steering.services["example.test"] = service_answer(v4=("192.0.2.80",), service="apex")
    responder, _ = make_responder(steering)
    assert records(ask(responder, query("example.test", "A")).answer) == ["example.test. 30 A 192.0.2.80"]
    assert records(ask(responder, query("example.test", "MX")).answer) == [
        "example.test. 3600 MX 10 mail.example.test."]
    assert ask(responder, query("example.test", "SOA")).answer[0].rdtype == dns.rdatatype.SOA
    # static A/AAAA at a name win over the steering, for both address types
    steering.services["ns2.example.test"] = service_answer(service="ns2")
    assert records(ask(responder, query("ns2.example.test", "A")).answer) == ["ns2.example.test. 3600 A 127.0.0.2"]
    assert ask(responder, query("ns2.example.test", "AAAA")).answer == []


def test_latency_ingest_keeps_static_and_geo_answers_cached_and_moves_latency_answers() -> None:
    from gslb.common.configload import Section
    from gslb.geoip import FakeLocator, Place
    from gslb.latency_table import LatencyTable
    from gslb.steering import Steering
    from gslb.steering.base import Region
    from gslb.steering.config import load_services

    regions = {"us-east": Region("us-east", 39.04, -77.49, ("127.0.1.1",)),
               "ap-northeast": Region("ap-northeast", 37.57, 126.98, ("127.0.3.1",))}
    services = load_services(Section.from_yaml_text(
        "services:\n  www.example.test: {policy: geo}\n  lat.example.test: {policy: latency}\n",
        file="t.yaml").section("services"), regions)
    table = LatencyTable()
    locator = FakeLocator({"198.51.100.0/24": Place(40.71, -74.01, "US", "NA", "New York")})
    steering = Steering(regions, services, locator, table)
    responder = Responder(load_test_zones(), steering)
    static, geo, lat = (query(n, "A", ecs="198.51.100.0/24")
                        for n in ("mail.example.test", "www.example.test", "lat.example.test"))

    def addresses(data: bytes, now: float) -> list[str]:
        return [rr.address for rrset in ask(responder, data, now=now).answer for rr in rrset]

    assert addresses(lat, 1.0) == ["127.0.1.1"]          # no RTTs yet: nearest (us-east)
    assert addresses(geo, 1.0) == ["127.0.1.1"]
    assert addresses(static, 1.0) == ["127.0.0.25"]
    hits = responder.stats.cache_hits
    table.ingest(ipaddress.ip_network("198.51.100.0/24"), "ap-northeast", 5.0, now=2.0)
    table.ingest(ipaddress.ip_network("198.51.100.0/24"), "us-east", 80.0, now=2.0)
    assert addresses(geo, 2.0) == ["127.0.1.1"]
    assert addresses(static, 2.0) == ["127.0.0.25"]
    assert responder.stats.cache_hits == hits + 2        # both served from the cache after the push
    misses = responder.stats.cache_misses
    assert addresses(lat, 2.0) == ["127.0.3.1"]          # the very next query sees the new RTTs
    assert responder.stats.cache_misses == misses + 1
    assert addresses(lat, 2.5) == ["127.0.3.1"]          # and is cached again until the next push
    assert responder.stats.cache_hits == hits + 3


def test_names_above_a_service_name_are_nodata_not_nxdomain() -> None:
    steering = default_steering()
    steering.services["www.eu.example.test"] = service_answer()
    responder, _ = make_responder(steering)
    reply = ask(responder, query("eu.example.test", "A"))
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    reply = ask(responder, query("www.eu.example.test", "A"))
    assert reply.answer
    assert ask(responder, query("other.eu.example.test", "A")).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("max_tallies", [0, 1, 4096])
def test_stats_are_exact_whether_outcomes_are_tallied_or_counted_directly(
        monkeypatch: pytest.MonkeyPatch, max_tallies: int) -> None:
    """Cache hits add to their outcome's Tally; past MAX_TALLIES outcomes an entry counts directly.
    The totals read the same either way."""
    import gslb.dns.responder as module

    monkeypatch.setattr(module, "MAX_TALLIES", max_tallies)
    responder, _ = make_responder()
    for _ in range(3):                      # one miss, then two hits each
        ask(responder, query("www.example.test", "A"))
        ask(responder, query("nope.example.test", "TXT"))
        ask(responder, query("down.example.test", "A"))
    stats = responder.stats
    assert stats.queries == 9
    assert stats.cache_hits == 6
    assert stats.cache_misses == 3
    assert stats.by_rcode == {"NOERROR": 6, "NXDOMAIN": 3}
    assert stats.by_qtype == {"A": 6, "TXT": 3}
    assert stats.by_region == {"eu": 3}
    assert stats.all_down == {"down.example.test": 3}
    assert len(stats._tallies) == min(max_tallies, 3)
