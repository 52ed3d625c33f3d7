"""dnslib as a second, independent decoder of what our wire code reads and writes.

gslb/dns/wire.py is hand-written so that the work per datagram is bounded (owner names beyond the
question are skipped, never decompressed); dnslib decodes every record in full. Where both accept a
query they must read the same question and EDNS fields, and every reply we send must decode with
dnslib to the same header, question and records as with dnspython.
"""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.message
import dns.rdata
import dnslib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.dns.errors import WireError
from gslb.dns.responder import Responder
from gslb.dns.wire import parse_query
from tests.unit.dns_helpers import CLIENT, default_steering, load_test_zones

ZONES = load_test_zones()
NAMES = ["www.example.test", "mail.example.test", "example.test", "nope.example.test", "a.wild.example.test",
         "app2.example.test", "www.example.org", "sub.example.test"]
TYPES = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "ANY", "CAA", "SRV"]
ECS = [None, "1.2.3.0/24", "198.51.100.0/22", "2001:db8::/56", "0.0.0.0/0"]

names = st.sampled_from(NAMES).flatmap(
    lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))))


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    name, rdtype = draw(names), draw(st.sampled_from(TYPES))
    edns = draw(st.booleans())
    options: list[dns.edns.Option] = []
    if edns:
        ecs = draw(st.sampled_from(ECS))
        if ecs is not None:
            address, _, prefix = ecs.partition("/")
            options.append(dns.edns.ECSOption(address, int(prefix)))
        if draw(st.booleans()):
            options.append(dns.edns.GenericOption(dns.edns.COOKIE, draw(st.binary(min_size=8, max_size=8))))
    msg = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, options=options or None,
                                 payload=draw(st.sampled_from([512, 1232, 4096])), want_dnssec=draw(st.booleans()))
    msg.id = draw(st.integers(0, 0xFFFF))
    return msg.to_wire()


def _opt(record: dnslib.DNSRecord) -> dnslib.RR | None:
    opts = [rr for rr in record.ar if rr.rtype == dnslib.QTYPE.OPT]
    assert len(opts) <= 1
    return opts[0] if opts else None


def _same_reading(data: bytes) -> None:
    ours = parse_query(data)
    theirs = dnslib.DNSRecord.parse(data)
    assert ours.msg_id == theirs.header.id
    assert len(theirs.questions) == 1
    assert ours.question.labels == tuple(theirs.q.qname.label)        # raw labels, case as sent
    assert ours.question.qtype == theirs.q.qtype
    assert ours.question.qclass == theirs.q.qclass
    opt = _opt(theirs)
    assert (ours.edns is None) == (opt is None)
    if ours.edns is None or opt is None:
        return
    assert ours.edns.udp_size == opt.rclass
    assert ours.edns.do == bool(opt.ttl & 0x8000)
    options = {o.code: o.data for o in opt.rdata}
    if ours.edns.ecs is not None:
        ecs = ours.edns.ecs
        raw = options[8]
        assert (ecs.family, ecs.source) == (int.from_bytes(raw[:2], "big"), raw[2])
        assert ecs.address == raw[4:]
    else:
        assert 8 not in options
    assert ours.edns.cookie == options.get(10)


@settings(max_examples=300, deadline=None)
@given(queries())
def test_dnslib_reads_every_query_as_we_do(data: bytes) -> None:
    _same_reading(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4))
def test_where_both_accept_a_mutant_they_read_it_alike(data: bytes, flips: list[tuple[int, int]]) -> None:
    mutant = bytearray(data)
    for where, value in flips:
        if where < len(mutant):
            mutant[where] = value
    try:
        parse_query(bytes(mutant))
        record = dnslib.DNSRecord.parse(bytes(mutant))
    except (WireError, dnslib.DNSError):
        return
    except Exception:                       # dnslib raises assorted errors on garbage: it refused it
        return
    if record.header.qr or record.header.opcode or len(record.questions) != 1:
        return
    _same_reading(bytes(mutant))


def _rrs(message: dns.message.Message, section: list) -> list[tuple[str, int, str]]:
    return sorted((str(rrset.name).lower(), rrset.rdtype, rd.to_text().lower()) for rrset in section for rd in rrset)


def _dnslib_rrs(rrs: list[dnslib.RR]) -> list[tuple[str, int, str]]:
    out = []
    for rr in rrs:
        if rr.rtype == dnslib.QTYPE.OPT:
            continue
        wire = _pack(rr)
        text = dns.rdata.from_wire(rr.rclass, rr.rtype, wire, 0, len(wire)).to_text().lower()
        out.append((str(rr.rname).lower(), rr.rtype, text))
    return sorted(out)


class _NoNames(dict):  # type: ignore[type-arg]
    """A DNSBuffer name table that never remembers a name: rdata packed with every name in full."""

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: object, value: object) -> None:
        pass


def _pack(rr: dnslib.RR) -> bytes:
    """rr's data as dnslib decoded it, re-packed uncompressed (for dnspython to read on its own)."""
    buffer = dnslib.DNSBuffer()
    buffer.names = _NoNames()
    rr.rdata.pack(buffer)
    return bytes(buffer.data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(), st.sampled_from([CLIENT, ipaddress.IPv6Address("2001:db8::53")]), st.booleans())
def test_every_reply_decodes_alike_with_dnslib_and_dnspython(data: bytes, client: object, tcp: bool) -> None:
    responder = Responder(ZONES, default_steering())
    reply = responder.respond(data, client, 1000.0, tcp=tcp)  # type: ignore[arg-type]
    assert reply is not None
    ours = dns.message.from_wire(reply)
    theirs = dnslib.DNSRecord.parse(reply)
    assert theirs.header.id == ours.id
    assert theirs.header.rcode == ours.rcode() & 0xF
    assert (theirs.header.aa, theirs.header.tc) == (bool(ours.flags & 0x0400), bool(ours.flags & 0x0200))
    assert str(theirs.q.qname).lower() == str(ours.question[0].name).lower()
    assert _dnslib_rrs(theirs.rr) == _rrs(ours, ours.answer)
    assert _dnslib_rrs(theirs.auth) == _rrs(ours, ours.authority)
    assert _dnslib_rrs(theirs.ar) == _rrs(ours, ours.additional)
