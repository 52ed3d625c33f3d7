"""The response cache: keyed by the normalised question, bounded by entries and bytes; internal errors logged."""

from __future__ import annotations

import ipaddress
import logging

import dns.edns
import dns.message
import pytest

from gslb.dns.cookies import ServerCookies
from gslb.dns.responder import ENTRY_OVERHEAD, Responder, _cache_key
from tests.unit.dns_helpers import CLIENT, ask, default_steering, load_test_zones, query

PADDING = 12


def make(name: str = "www.example.test", rdtype: str = "A", *, options: list[dns.edns.Option] | None = None,
         payload: int = 1232, qid: int = 1, edns: bool = True, want_dnssec: bool = False) -> bytes:
    msg = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=payload,
                                 options=options, want_dnssec=want_dnssec)
    msg.id = qid
    return msg.to_wire(max_size=65535)


def responder(**kwargs: object) -> Responder:
    return Responder(load_test_zones(), default_steering(), **kwargs)  # type: ignore[arg-type]


def test_case_variants_share_one_entry_and_each_gets_its_own_case_back() -> None:
    r = responder()
    names = ["mail.example.test", "MAIL.example.test", "mAiL.ExAmPlE.TeSt"]
    for name in names:
        reply = ask(r, make(name))
        assert reply.question[0].name.to_text() == name + "."
        assert reply.answer[0].name.to_text() == name + "."
    assert r.stats.cache_hits == 2
    assert len(r._udp_cache) == 1
    for name in names:      # and each equals the reference path byte for byte
        assert r.respond(make(name, qid=9), CLIENT, 1.0) == r.respond_uncached(make(name, qid=9), CLIENT, 1.0)


def test_padded_queries_share_one_entry_and_cost_no_more_memory() -> None:
    r = responder()
    for size in (0, 100, 4000, 60_000):
        data = make("mail.example.test", options=[dns.edns.GenericOption(PADDING, b"\x00" * size)], qid=size % 65536)
        reply = r.respond(data, CLIENT, 1.0, tcp=True)
        assert reply is not None
        assert dns.message.from_wire(reply).answer
    assert r.stats.cache_hits == 3
    assert r.stats.cache_entries == 1
    assert r.stats.cache_bytes < 2000                       # the 60 KB query is not kept


def test_distinct_padded_queries_stay_within_the_byte_limit() -> None:
    limit = 100_000              # 300 entries of ~400 bytes each: the padding costs nothing, the limit bites
    r = responder(cache_max_bytes=limit)
    for i in range(300):
        padding = dns.edns.GenericOption(PADDING, b"\x00" * 50_000)
        r.respond(make(f"host{i}.example.test", options=[padding]), CLIENT, 1.0, tcp=True)
        assert r.stats.cache_bytes <= limit
    assert r.stats.cache_clears > 0
    assert r.stats.cache_entries > 0


def test_queries_differing_in_client_cookie_share_one_entry() -> None:
    r = responder(cookies=ServerCookies([bytes(16)]))
    for i in range(50):
        cookie = dns.edns.GenericOption(dns.edns.COOKIE, i.to_bytes(8, "big"))
        r.respond(make("mail.example.test", options=[cookie]), CLIENT, 1.0)
    assert r.stats.cache_entries == 1
    assert r.stats.cache_hits == 49
    assert not r._udp_raw              # a cookie's bytes are never remembered as an alias


def test_what_the_answer_depends_on_is_in_the_key() -> None:
    ecs = [dns.edns.ECSOption("192.0.2.0", 24)]
    variants = [make(), make(edns=False), make(want_dnssec=True), make(payload=512), make(options=ecs),
                make(options=[dns.edns.ECSOption("192.0.3.0", 24)]),
                make(options=[dns.edns.GenericOption(dns.edns.NSID, b"")]), make("www.example.test", "AAAA")]
    keys = [_cache_key(data, 1232) for data in variants]
    assert None not in keys
    assert len({k[0] for k in keys if k is not None}) == len(variants)
    # what it does not depend on: the ID, payload sizes past our limit, unknown options, AD
    same = [make(qid=7), make(payload=4096), make(options=[dns.edns.GenericOption(65001, b"x")])]
    flagged = bytearray(make())
    flagged[3] |= 0x20
    same.append(bytes(flagged))
    assert {_cache_key(data, 1232)[0] for data in same} == {_cache_key(make(), 1232)[0]}  # type: ignore[index]


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 16, make()[:-1], make() + b"\x00",
    make()[:2] + b"\x80" + make()[3:],                      # a response
    make()[:2] + b"\x28" + make()[3:],                      # opcode 5
    make()[:12] + b"\xc0\x0c" + make()[-15:],               # a compressed question name
    make(options=[dns.edns.GenericOption(dns.edns.COOKIE, b"\x01" * 9)]),
])
def test_unusual_queries_take_the_parser(data: bytes) -> None:
    assert _cache_key(data, 1232) is None


def test_the_entry_limit_and_the_byte_limit_hold() -> None:
    r = responder(cache_size=10)
    for i in range(35):
        r.respond(make(f"h{i}.example.test"), CLIENT, 1.0)
        assert r.stats.cache_entries <= 10
    assert r.stats.cache_clears == 3
    small = responder(cache_max_bytes=3 * (ENTRY_OVERHEAD + 150))
    for i in range(20):
        small.respond(make(f"h{i}.example.test"), CLIENT, 1.0)
        assert 0 < small.stats.cache_bytes <= small.cache_max_bytes
    assert small.stats.cache_clears > 0
    small.clear_cache()
    assert small.stats.cache_entries == small.stats.cache_bytes == 0


def test_per_client_answers_are_counted_per_network() -> None:
    r = responder()
    for i in range(5):
        r.respond(make(), ipaddress.IPv4Address(f"198.51.{i}.7"), 1.0)
    assert r.stats.cache_entries == 5
    assert len(r._udp_cache) == 1


def test_a_stored_stats_object_starts_with_an_empty_cache() -> None:
    first = responder()
    first.respond(make(), CLIENT, 1.0)
    assert first.stats.cache_entries == 1
    second = Responder(load_test_zones(), default_steering(), stats=first.stats)
    assert second.stats.cache_entries == second.stats.cache_bytes == 0


def test_internal_errors_log_one_line_a_second_with_the_query(caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    r = responder()

    def explode(*args: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(r, "_resolve", explode)
    data = query("www.example.test")
    with caplog.at_level(logging.ERROR, logger="gslb.dns"):
        for now in (10.0, 10.2, 10.5, 10.9):
            assert r.respond(data, CLIENT, now) is None
        assert len(caplog.records) == 1
        line = caplog.records[0].getMessage()
        assert "ZeroDivisionError: boom" in line
        assert data.hex() in line
        assert "\n" not in line
        assert r.respond(data, CLIENT, 11.0) is None
        assert len(caplog.records) == 2
        assert "(3 more since the last line)" in caplog.records[1].getMessage()
        big = query("www.example.test") + b"\x00" * 5000
        monkeypatch.setattr(r, "_answer", lambda *a: 1 / 0)
        assert r.respond(big, CLIENT, 20.0) is None
        assert f"...({len(big)} bytes)" in caplog.records[2].getMessage()
        assert len(caplog.records[2].getMessage()) < 1000
    assert r.stats.internal_errors == 6
    assert r.stats.dropped == 6


def test_long_or_cookie_queries_never_become_shapes() -> None:
    r = responder(cookies=ServerCookies([bytes(16)]))
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    r.respond(make(options=[dns.edns.GenericOption(PADDING, b"\x00" * 600), ecs]), CLIENT, 1.0)
    r.respond(make(options=[dns.edns.GenericOption(dns.edns.COOKIE, b"\x01" * 8), ecs]), CLIENT, 1.0)
    assert not r._shapes
    r.respond(make(options=[dns.edns.ECSOption("198.51.100.0", 24)]), CLIENT, 1.0)     # a miss, short
    assert len(r._shapes) == 1


def test_an_expired_entry_replaced_is_not_counted_twice() -> None:
    r = responder()
    for now in (1.0, 100.0, 200.0):                         # the service answers live 10 s
        r.respond(make(options=[dns.edns.ECSOption("192.0.2.0", 24)]), CLIENT, now)
        r.respond(make(), CLIENT, now)                        # a per-client answer
        r.respond(make("mail.example.test"), CLIENT, now)     # static: lives forever, a hit after the first
    assert r.stats.cache_entries == 3
    first_bytes = r.stats.cache_bytes
    r.respond(make(options=[dns.edns.ECSOption("192.0.2.0", 24)]), CLIENT, 300.0)
    assert r.stats.cache_bytes == first_bytes
