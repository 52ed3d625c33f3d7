"""Properties of the responder: any bytes -> a valid message or a drop; cache == reference path."""

from __future__ import annotations

import ipaddress
import struct

import dns.exception
import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.dns.responder import Responder
from tests.unit.dns_helpers import CLIENT, default_steering, load_test_zones, query

ZONES = load_test_zones()
NAMES = ["www.example.test", "WWW.example.TEST", "app2.example.test", "mail.example.test", "nope.example.test",
         "example.test", "sub.example.test", "x.sub.example.test", "a.wild.example.test", "b.ent.example.test",
         "loop1.example.test", "big.example.test", "txtlong.example.test", "down.example.test",
         "moved.example.test", "v4only.example.test", "weighted.example.test", "alias.other.test",
         "www.example.org", "dangling.example.test"]
TYPES = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "ANY", "CAA", "DS", "SRV"]
ECS = [None, "1.2.3.0/24", "1.2.3.4/32", "0.0.0.0/0", "2001:db8::/48", "::ffff:1.2.3.0/120", "10.0.0.0/8"]
CLIENTS = [CLIENT, ipaddress.IPv4Address("198.51.100.200"), ipaddress.IPv4Address("203.0.113.9"),
           ipaddress.IPv6Address("2001:db8::53"), ipaddress.IPv6Address("::ffff:203.0.113.9")]


def _valid_or_none(reply: bytes | None) -> None:
    if reply is None:
        return
    message = dns.message.from_wire(reply)
    assert message.flags & 0x8000      # QR


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_give_a_valid_message_or_a_drop(data: bytes, tcp: bool) -> None:
    responder = Responder(ZONES, default_steering())
    _valid_or_none(responder.respond(data, CLIENT, 1.0, tcp=tcp))
    assert responder.stats.internal_errors == 0


VALID = [query(name, rdtype, ecs=ecs) for name in NAMES[:6] for rdtype in ("A", "AAAA", "ANY")
         for ecs in (None, "1.2.3.0/24", "2001:db8::/56")] + [query("www.example.test", "A", edns=None)]


_WARM: dict[tuple[object, ...], Responder] = {}


def _warm(tcp: bool, **options: object) -> Responder:
    """A responder whose cache holds the answers to every valid query, kept across examples: whatever
    the cache holds, a mutant must get the reference path's bytes, never another query's entry."""
    key = (tcp, *sorted((k, repr(v)) for k, v in options.items()))
    responder = _WARM.get(key)
    if responder is None:
        responder = _WARM[key] = Responder(ZONES, default_steering(), **options)  # type: ignore[arg-type]
        for data in VALID + COOKIE_VALID:      # (COOKIE_VALID is built further down, before any test runs)
            responder.respond(data, CLIENT, 1.0, tcp=tcp)
    return responder


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[position] = draw(st.sampled_from([0x00, 0x3F, 0x40, 0xC0, 0xFF, 0x29, 0x08]))
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.booleans())
def test_mutated_queries_give_a_valid_message_or_a_drop(data: bytes, tcp: bool) -> None:
    responder = _warm(tcp)
    reply = responder.respond(data, CLIENT, 1.0, tcp=tcp)
    _valid_or_none(reply)
    assert responder.stats.internal_errors == 0
    assert reply == responder.respond_uncached(data, CLIENT, 1.0, tcp=tcp)
    again = responder.respond(data, CLIENT, 1.0, tcp=tcp)      # the cache gives the same bytes
    assert again == reply


def test_compression_pointer_loops_are_formerr_not_hangs() -> None:
    responder = Responder(ZONES, default_steering())
    header = struct.pack("!6H", 1, 0, 1, 0, 0, 0)
    for name in (b"\xc0\x0c", b"\x01a\xc0\x0c", b"\xc0\x0e\xc0\x0c", b"\x01a\xc0", b"\x01a\xc0\x0e"):
        reply = responder.respond(header + name + b"\x00\x01\x00\x01", CLIENT, 1.0)
        assert reply is not None
        assert dns.message.from_wire(reply).rcode() == 1
    # pointing backwards into the header is not a loop: it reads a (root) name there
    into_header = responder.respond(header + b"\xc0\x00" + b"\x00\x01\x00\x01", CLIENT, 1.0)
    assert into_header is not None
    assert dns.message.from_wire(into_header).rcode() == 5
    # a pointer in the OPT owner that loops on itself
    base = query("www.example.test", "A", edns=None)
    loop = struct.pack("!6H", 2, 0, 1, 0, 0, 1) + base[12:] + b"\xc0" + bytes([len(base)]) + b"\x00" * 10
    reply = responder.respond(loop, CLIENT, 1.0)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == 1


@st.composite
def query_steps(draw: st.DrawFn) -> list[tuple[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address, float,
                                                bool, bool]]:
    steps = []
    now = 1000.0
    for _ in range(draw(st.integers(1, 25))):
        name = draw(st.sampled_from(NAMES))
        edns = draw(st.sampled_from([None, 0, 0, 1]))
        data = query(name, draw(st.sampled_from(TYPES)), ecs=draw(st.sampled_from(ECS)) if edns == 0 else None,
                     edns=edns, payload=draw(st.sampled_from([512, 1232, 4096])),
                     qid=draw(st.integers(0, 65535)), rd=draw(st.booleans()))
        now += draw(st.sampled_from([0.0, 0.5, 3.0, 11.0]))
        steps.append((data, draw(st.sampled_from(CLIENTS)), now, draw(st.booleans()),
                      draw(st.booleans())))
    return steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query_steps())
def test_cache_hits_give_the_reference_bytes(steps: list) -> None:
    fast_steering, slow_steering = default_steering(), default_steering()
    fast = Responder(ZONES, fast_steering)
    slow = Responder(ZONES, slow_steering)
    for data, client, now, tcp, bump in steps:
        if bump:
            fast_steering.generation += 1
            slow_steering.generation += 1
        expected = slow.respond_uncached(data, client, now, tcp=tcp)
        assert fast.respond(data, client, now, tcp=tcp) == expected
        assert fast.respond(data, client, now, tcp=tcp) == expected     # and again, from the cache
    assert fast.stats.by_rcode.total() == 2 * slow.stats.by_rcode.total()


def test_dnspython_parses_every_scripted_answer() -> None:
    responder = Responder(ZONES, default_steering())
    for name in NAMES:
        for rdtype in TYPES:
            for ecs in ECS:
                reply = responder.respond(query(name, rdtype, ecs=ecs), CLIENT, 1.0)
                assert reply is not None
                try:
                    dns.message.from_wire(reply)
                except dns.exception.DNSException as exc:  # pragma: no cover - the failure message
                    raise AssertionError(f"{name} {rdtype} {ecs}: {exc}") from exc
    assert responder.stats.internal_errors == 0


@st.composite
def ecs_queries(draw: st.DrawFn) -> bytes:
    """Queries that differ only in ID and ECS address: the responder's shape path."""
    v6 = draw(st.booleans())
    source = draw(st.integers(0, 128 if v6 else 32))
    value = draw(st.integers(0, 2**128 - 1 if v6 else 2**32 - 1))
    bits = 128 if v6 else 32
    value = value >> (bits - source) << (bits - source) if source else 0
    address = str(ipaddress.IPv6Address(value) if v6 else ipaddress.IPv4Address(value))
    data = bytearray(query(draw(st.sampled_from([*NAMES[:6], "moved.example.test", "down.example.test"])),
                           draw(st.sampled_from(["A", "AAAA"])), ecs=f"{address}/{source}",
                           qid=draw(st.integers(0, 65535))))
    if draw(st.booleans()) and source % 8:     # a bit set beyond SOURCE: FORMERR on both paths
        data[-1] |= 1
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ecs_queries(), min_size=1, max_size=20), st.sampled_from(CLIENTS))
def test_known_query_shapes_give_the_reference_bytes(datas: list[bytes], client) -> None:
    fast = Responder(ZONES, default_steering())
    slow = Responder(ZONES, default_steering())
    for data in datas:
        fast.clear_cache()          # misses only: the shape path, not the response cache
        assert fast.respond(data, client, 1.0) == slow.respond_uncached(data, client, 1.0)


def test_a_learnt_shape_is_used_for_other_addresses(monkeypatch) -> None:
    import gslb.dns.responder as module

    parsed = []
    real_parse = module.parse_query
    monkeypatch.setattr(module, "parse_query", lambda data: parsed.append(data) or real_parse(data))
    responder = Responder(ZONES, default_steering())
    first, second = query("www.example.test", ecs="1.2.3.0/24"), query("www.example.test", ecs="9.8.7.0/24")
    responder.respond(first, CLIENT, 1.0)
    assert len(responder._shapes) == 1
    assert len(parsed) == 2                     # the query, then the proof with the address flipped
    responder.respond(second, CLIENT, 1.0)
    assert len(parsed) == 2                     # not parsed: the shape gave the query
    assert len(responder._shapes) == 1
    assert responder.respond(second, CLIENT, 2.0) == responder.respond_uncached(second, CLIENT, 2.0)
    responder.respond_uncached(query("mail.example.test", ecs="1.2.3.0/24"), CLIENT, 1.0)
    assert len(responder._shapes) == 1          # the reference path learns nothing


@st.composite
def cookie_steps(draw: st.DrawFn) -> list[tuple[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address, float, bool]]:
    """Queries with cookies (none, client only, valid, stale, forged), 0x20 case, padding, NSID."""
    import dns.edns

    from gslb.dns.cookies import ServerCookies

    steps = []
    now = 1_700_000_000.0
    for _ in range(draw(st.integers(1, 20))):
        name = draw(st.sampled_from(NAMES[:8]))
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        client = draw(st.sampled_from(CLIENTS))
        client_cookie = draw(st.sampled_from([b"\x01" * 8, b"\x02" * 8]))
        made_at = now - draw(st.sampled_from([0, 100, 4000]))
        kind = draw(st.sampled_from(["none", "client", "valid", "forged", "other-client"]))
        options: list[dns.edns.Option] = []
        if kind == "client":
            options.append(dns.edns.GenericOption(dns.edns.COOKIE, client_cookie))
        elif kind in ("valid", "other-client"):
            whom = client if kind == "valid" else ipaddress.IPv4Address("192.0.2.77")
            server = ServerCookies([COOKIE_SECRET]).make(client_cookie, whom, made_at)
            options.append(dns.edns.GenericOption(dns.edns.COOKIE, client_cookie + server))
        elif kind == "forged":
            options.append(dns.edns.GenericOption(dns.edns.COOKIE, client_cookie + b"\x01" + b"\x00" * 15))
        if draw(st.booleans()):
            options.append(dns.edns.GenericOption(dns.edns.NSID, b""))
        if draw(st.booleans()):
            options.append(dns.edns.GenericOption(12, b"\x00" * draw(st.integers(0, 600))))
        if draw(st.booleans()):
            options.insert(0, dns.edns.ECSOption(draw(st.sampled_from(["1.2.3.0", "10.0.0.0"])), 24))
        draw(st.randoms()).shuffle(options)
        msg = dns.message.make_query(name, draw(st.sampled_from(["A", "AAAA", "TXT"])), use_edns=0,
                                     payload=draw(st.sampled_from([512, 1232, 4096])), options=options or None)
        msg.id = draw(st.integers(0, 65535))
        now += draw(st.sampled_from([0.0, 1.0, 11.0]))
        steps.append((msg.to_wire(max_size=65535), client, now, draw(st.booleans())))
    return steps


COOKIE_SECRET = bytes(range(16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cookie_steps(), st.booleans())
def test_cache_hits_give_the_reference_bytes_with_cookies(steps: list, require: bool) -> None:
    from gslb.dns.cookies import ServerCookies

    options = {"cookies": ServerCookies([COOKIE_SECRET]), "require_cookies": require, "nsid": b"ns-test"}
    fast = Responder(ZONES, default_steering(), **options)  # type: ignore[arg-type]
    slow = Responder(ZONES, default_steering(), **options)  # type: ignore[arg-type]
    for data, client, now, tcp in steps:
        expected = slow.respond_uncached(data, client, now, tcp=tcp)
        assert fast.respond(data, client, now, tcp=tcp) == expected
        assert fast.respond(data, client, now, tcp=tcp) == expected     # and again, from the cache
    assert fast.stats.internal_errors == slow.stats.internal_errors == 0


def _cookie_valid_queries() -> list[bytes]:
    import dns.edns

    from gslb.dns.cookies import ServerCookies

    full = b"\x03" * 8 + ServerCookies([COOKIE_SECRET]).make(b"\x03" * 8, CLIENT, 1.0)
    out = []
    for name in ("www.example.test", "version.bind", "mail.example.test"):
        for options in ([dns.edns.GenericOption(dns.edns.COOKIE, b"\x03" * 8)],
                        [dns.edns.GenericOption(dns.edns.COOKIE, full), dns.edns.GenericOption(dns.edns.NSID, b"")],
                        [dns.edns.ECSOption("1.2.3.0", 24), dns.edns.GenericOption(dns.edns.COOKIE, full)]):
            out.append(dns.message.make_query(name, "TXT" if name.endswith("bind") else "A",
                                              rdclass="CH" if name.endswith("bind") else "IN", use_edns=0,
                                              options=options).to_wire())
    return out


COOKIE_VALID = _cookie_valid_queries()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans(), st.booleans())
def test_mutated_cookie_queries_give_a_valid_message_or_a_drop(data: st.DataObject, tcp: bool,
                                                               require: bool) -> None:
    from gslb.dns.cookies import ServerCookies

    raw = bytearray(data.draw(st.sampled_from(COOKIE_VALID)))
    for _ in range(data.draw(st.integers(0, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    responder = _warm(tcp, cookies=ServerCookies([COOKIE_SECRET]), require_cookies=require, nsid=b"n",
                      identity="id", version="v")
    reply = responder.respond(bytes(raw), CLIENT, 1.0, tcp=tcp)
    _valid_or_none(reply)
    assert reply == responder.respond_uncached(bytes(raw), CLIENT, 1.0, tcp=tcp)
    assert responder.respond(bytes(raw), CLIENT, 1.0, tcp=tcp) == reply
    assert responder.stats.internal_errors == 0
