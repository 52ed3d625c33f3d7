"""Response rate limiting: keys from our own responses, buckets with injected time, slips, bounds."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.config import ConfigError, load_config
from gslb.dns.rrl import (
    Action,
    RateLimitedResponder,
    RateLimiter,
    ResponseClass,
    RrlSettings,
    RrlStats,
    classify,
    slip_reply,
)
from tests.gslb_helpers import gslb_config
from tests.unit.dns_helpers import CLIENT, make_responder, query

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def response(name: str, rdtype: str = "A", **kwargs: object) -> bytes:
    responder, _ = make_responder()     # a fresh one: no test sees another's cache
    reply = responder.respond(query(name, rdtype, **kwargs), CLIENT, 1000.0)  # type: ignore[arg-type]
    assert reply is not None
    return reply


WWW = response("www.example.test")


def limiter(**kwargs: object) -> RateLimiter:
    return RateLimiter(RrlSettings(**kwargs))  # type: ignore[arg-type]


def actions(rl: RateLimiter, reply: bytes, count: int, now: float = 0.0, client: object = CLIENT) -> list[Action]:
    return [rl.decide(reply, client, now) for _ in range(count)]  # type: ignore[arg-type]


# -- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "reason"), [
    ("responses_per_second", -1, "responses_per_second: must be an integer in"),
    ("nxdomains_per_second", 2.5, "nxdomains_per_second: must be an integer"),
    ("errors_per_second", True, "errors_per_second: must be an integer"),
    ("window", 0.5, "window: must be in"),
    ("slip", 11, "slip: must be in"),
    ("ipv4_prefix", 33, "ipv4_prefix: must be in"),
    ("ipv6_prefix", -1, "ipv6_prefix: must be in"),
    ("max_table_size", 0, "max_table_size: must be in"),
])
def test_settings_refuse_bad_values_naming_the_field(field, value, reason):
    with pytest.raises(ValueError, match=reason):
        RrlSettings(**{field: value})


def test_default_settings_are_on_and_generous():
    s = RrlSettings()
    assert s.enabled
    assert (s.responses_per_second, s.nxdomains_per_second, s.errors_per_second) == (100, 25, 10)
    assert (s.slip, s.window, s.ipv4_prefix, s.ipv6_prefix) == (2, 15.0, 24, 56)


def write_config(tmp_path: Path, rrl: Any) -> Path:
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    if rrl is not None:
        data["dns"]["rrl"] = rrl
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_defaults_and_values(tmp_path):
    assert load_config(write_config(tmp_path, None)).dns.rrl == RrlSettings()
    rrl = load_config(write_config(tmp_path, {
        "enabled": False, "responses_per_second": 7, "nxdomains_per_second": 0, "errors_per_second": 3,
        "window": "20s", "slip": 1, "ipv4_prefix": 32, "ipv6_prefix": 64, "max_table_size": 500})).dns.rrl
    assert rrl == RrlSettings(enabled=False, responses_per_second=7, nxdomains_per_second=0, errors_per_second=3,
                              window=20.0, slip=1, ipv4_prefix=32, ipv6_prefix=64, max_table_size=500)


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("enabled", "yes", "expected a boolean"),
    ("responses_per_second", -1, "must be >= 0"),
    ("responses_per_second", 2.5, "expected an integer"),
    ("nxdomains_per_second", 10_000_000, "must be <= 1000000"),
    ("errors_per_second", "ten", "expected an integer"),
    ("window", "500ms", "must be >= 1.0s"),
    ("window", "2h", "must be <= 3600s"),
    ("window", "soon", "expected a duration"),
    ("slip", 11, "must be <= 10"),
    ("slip", -1, "must be >= 0"),
    ("ipv4_prefix", 33, "must be <= 32"),
    ("ipv6_prefix", 129, "must be <= 128"),
    ("max_table_size", 0, "must be >= 1"),
    ("responses_per_secnd", 5, "unknown key (did you mean 'responses_per_second'?)"),
])
def test_config_bad_values_name_file_key_and_reason(tmp_path, key, value, reason):
    path = write_config(tmp_path, {key: value})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert f"dns.rrl.{key}" in text
    assert reason in text


def test_config_rrl_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"dns\.rrl"):
        load_config(write_config(tmp_path, [1, 2]))


# -- keys -------------------------------------------------------------------------------

def test_classes_and_names_from_our_own_responses():
    assert classify(WWW) == (ResponseClass.NOERROR, b"\x03www\x07example\x04test\x00", 1)
    # 0x20 case randomisation shares the bucket
    assert classify(response("wWw.ExAmPlE.tEsT")) == classify(WWW)
    assert classify(response("www.example.test", "AAAA"))[::2] == (ResponseClass.NOERROR, 28)
    # an answer too big for UDP is sent truncated (no records at all): still that answer's bucket
    big = response("big.example.test", payload=512)
    assert dns.message.from_wire(big).flags & dns.flags.TC
    assert classify(big) == (ResponseClass.NOERROR, b"\x03big\x07example\x04test\x00", 1)
    assert classify(response("mail.example.test", "AAAA")) == (
        ResponseClass.NODATA, b"\x04mail\x07example\x04test\x00", 28)
    # a referral is keyed by the delegation, whatever name below it was asked
    assert classify(response("a.sub.example.test")) == (ResponseClass.REFERRAL, b"\x03sub\x07example\x04test\x00", 0)
    assert classify(response("b.c.SUB.example.test", "MX")) == classify(response("a.sub.example.test"))
    # NXDOMAIN by zone: random subdomains share one bucket; a CNAME chain to nothing too
    zone = (ResponseClass.NXDOMAIN, b"\x07example\x04test\x00", 0)
    assert classify(response("x1y2z3.example.test")) == zone
    assert classify(response("q.w.e.example.test", "TXT")) == zone
    assert classify(response("dangling.example.test")) == zone
    assert classify(response("nothing.other.test")) == (ResponseClass.NXDOMAIN, b"\x05other\x04test\x00", 0)


def test_errors_share_one_bucket_per_network():
    refused = response("www.elsewhere.invalid")
    assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    assert classify(refused) == (ResponseClass.ERROR, b"", 0)
    responder, _ = make_responder()
    notimp = dns.message.make_query("www.example.test", "A")
    notimp.set_opcode(dns.opcode.UPDATE)
    reply = responder.respond(notimp.to_wire(), CLIENT, 1.0)
    assert reply is not None
    assert classify(reply) == (ResponseClass.ERROR, b"", 0)
    badvers = responder.respond(dns.message.make_query("www.example.test", "A", use_edns=1).to_wire(), CLIENT, 1.0)
    assert badvers is not None
    assert classify(badvers) == (ResponseClass.ERROR, b"", 0)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 11, WWW[:13], WWW[:20], b"\xff" * 40,
                                     WWW[:12] + b"\xc0\x0c" + WWW[14:]])
def test_classify_and_slip_never_raise_on_odd_bytes(garbage):
    cls, name, qtype = classify(garbage)
    assert isinstance(cls, ResponseClass)
    assert isinstance(name, bytes)
    assert isinstance(qtype, int)
    reply = slip_reply(garbage)
    assert reply is None or dns.message.from_wire(reply).flags & dns.flags.TC


@given(st.binary(max_size=600))
def test_classify_and_slip_total_on_any_bytes(data):
    assert classify(data)[0] in ResponseClass
    slip_reply(data)


# -- buckets ----------------------------------------------------------------------------

def test_burst_then_limited_then_refilled_with_injected_time():
    rl = limiter(responses_per_second=5, slip=0)
    assert actions(rl, WWW, 5) == [Action.SEND] * 5
    assert actions(rl, WWW, 3) == [Action.DROP] * 3
    # debt: 3 over-limit debits; 1/5 s earns one credit, so 4 credits are owed first
    assert rl.decide(WWW, CLIENT, 0.6) is Action.DROP
    assert rl.decide(WWW, CLIENT, 1.0) is Action.SEND
    # a long pause refills to the burst (the rate), never more
    assert actions(rl, WWW, 7, now=100.0) == [Action.SEND] * 5 + [Action.DROP] * 2
    assert rl.stats.limited == 6
    assert rl.stats.dropped == 0     # decide() counts limits; limit() counts what it did
    assert rl.stats.by_class == {"NOERROR": 6}


def test_a_flood_stays_limited_for_the_window_after_it():
    rl = limiter(responses_per_second=10, window=5, slip=0)
    for i in range(1000):                       # 100/s for 10 s: ten times the rate
        rl.decide(WWW, CLIENT, i / 100)
    # the debt is capped at rate * window = 50: 5 s of silence pays it back, then one credit is needed
    assert rl.decide(WWW, CLIENT, 9.99 + 5.0) is Action.DROP
    assert rl.decide(WWW, CLIENT, 9.99 + 5.0 + 0.25) is Action.SEND


def test_time_going_back_earns_nothing():
    rl = limiter(responses_per_second=2, slip=0)
    assert actions(rl, WWW, 3, now=10.0) == [Action.SEND, Action.SEND, Action.DROP]
    assert actions(rl, WWW, 2, now=5.0) == [Action.DROP, Action.DROP]


@pytest.mark.parametrize(("slip", "expected"), [
    (0, "DDDDDD"), (1, "SSSSSS"), (2, "SDSDSD"), (3, "SDDSDD"),
])
def test_slip_every_nth_limited_response_of_a_bucket(slip, expected):
    rl = limiter(responses_per_second=1, slip=slip)
    assert rl.decide(WWW, CLIENT, 0.0) is Action.SEND
    got = "".join("S" if a is Action.SLIP else "D" for a in actions(rl, WWW, 6))
    assert got == expected


def test_errors_are_dropped_never_slipped():
    refused = response("www.elsewhere.invalid")
    rl = limiter(errors_per_second=1, slip=1)
    assert actions(rl, refused, 4) == [Action.SEND, Action.DROP, Action.DROP, Action.DROP]


def test_each_class_has_its_rate_and_zero_is_unlimited():
    nx1, nx2 = response("a1.example.test"), response("b2.example.test")
    rl = limiter(responses_per_second=0, nxdomains_per_second=2, errors_per_second=1, slip=0)
    assert actions(rl, WWW, 500) == [Action.SEND] * 500
    # random subdomains: one bucket for the zone
    assert [rl.decide(r, CLIENT, 0.0) for r in (nx1, nx2, nx1)] == [Action.SEND, Action.SEND, Action.DROP]
    refused = response("www.elsewhere.invalid")
    assert actions(rl, refused, 2) == [Action.SEND, Action.DROP]


def test_names_types_and_classes_have_separate_buckets():
    rl = limiter(responses_per_second=1, slip=0)
    others = [response("www.example.test", "AAAA"), response("mail.example.test"),
              response("mail.example.test", "AAAA"), response("nope.example.test"),
              response("a.sub.example.test")]
    assert rl.decide(WWW, CLIENT, 0.0) is Action.SEND
    assert [rl.decide(r, CLIENT, 0.0) for r in others] == [Action.SEND] * len(others)
    assert rl.decide(WWW, CLIENT, 0.0) is Action.DROP
    assert len(rl) == 6


def test_client_networks_by_prefix():
    rl = limiter(responses_per_second=1, slip=0)
    assert rl.decide(WWW, V4("192.0.2.1"), 0.0) is Action.SEND
    assert rl.decide(WWW, V4("192.0.2.254"), 0.0) is Action.DROP       # same /24
    assert rl.decide(WWW, V4("192.0.3.1"), 0.0) is Action.SEND         # another /24
    assert rl.decide(WWW, V6("2001:db8:0:ff::1"), 0.0) is Action.SEND
    assert rl.decide(WWW, V6("2001:db8:0:1::53"), 0.0) is Action.DROP   # same /56
    assert rl.decide(WWW, V6("2001:db8:0:100::1"), 0.0) is Action.SEND  # another /56
    # an IPv4-mapped address (dual-stack socket) is its IPv4 address, not one /56 for all of IPv4
    assert rl.network(V6("::ffff:192.0.2.77")) == rl.network(V4("192.0.2.77"))
    assert rl.network(V6("::ffff:192.0.2.77")) != rl.network(V6("::ffff:198.51.100.1"))
    assert rl.decide(WWW, V6("::ffff:192.0.2.9"), 0.0) is Action.DROP  # 192.0.2.0/24's bucket, spent above
    # an IPv6 network never equals an IPv4 one, even with the same bits
    assert rl.network(V4("0.0.0.0")) != rl.network(V6("::"))
    narrow = limiter(responses_per_second=1, slip=0, ipv4_prefix=32, ipv6_prefix=128)
    assert narrow.decide(WWW, V4("192.0.2.1"), 0.0) is Action.SEND
    assert narrow.decide(WWW, V4("192.0.2.2"), 0.0) is Action.SEND
    assert narrow.decide(WWW, V6("2001:db8::1"), 0.0) is Action.SEND
    assert narrow.decide(WWW, V6("2001:db8::2"), 0.0) is Action.SEND
    wide = limiter(responses_per_second=1, slip=0, ipv4_prefix=0, ipv6_prefix=0)
    assert wide.decide(WWW, V4("10.0.0.1"), 0.0) is Action.SEND
    assert wide.decide(WWW, V4("203.0.113.9"), 0.0) is Action.DROP
    assert wide.decide(WWW, V6("::1"), 0.0) is Action.SEND


def test_table_is_bounded_and_evicts_the_least_recently_used():
    rl = limiter(responses_per_second=1, slip=0, max_table_size=3)
    nets = [V4(f"10.0.{i}.1") for i in range(4)]
    for net in nets[:3]:
        assert rl.decide(WWW, net, 0.0) is Action.SEND
    assert rl.decide(WWW, nets[0], 0.0) is Action.DROP      # touched: now the most recent
    assert rl.decide(WWW, nets[3], 0.0) is Action.SEND      # evicts nets[1], the least recent
    assert len(rl) == 3
    assert rl.stats.evicted == 1
    assert rl.decide(WWW, nets[0], 0.0) is Action.DROP      # kept, still limited
    assert rl.decide(WWW, nets[1], 0.0) is Action.SEND      # forgotten: a fresh bucket
    for i in range(1000):
        rl.decide(WWW, V4(f"10.{i // 250}.{i % 250}.1"), 1.0)
    assert len(rl) == 3
    assert "3/3 buckets" in repr(rl)


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 20), window=st.integers(1, 30), slip=st.integers(0, 3),
       steps=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 2)), min_size=1, max_size=300))
def test_never_more_than_rate_times_interval_plus_burst(rate, window, slip, steps):
    """For every bucket and every interval [a, b]: SENDs <= rate * (b - a) + rate (the burst)."""
    rl = limiter(responses_per_second=rate, window=float(window), slip=slip)
    clients = [V4("192.0.2.1"), V4("192.0.2.99"), V4("198.51.100.1")]   # two networks
    sends: dict[int, list[float]] = {}
    now = 0.0
    for gap, who in steps:
        now += gap
        action = rl.decide(WWW, clients[who], now)
        assert isinstance(action, Action)
        if action is Action.SEND:
            sends.setdefault(rl.network(clients[who]), []).append(now)
    for times in sends.values():
        for i in range(len(times)):
            for j in range(i, len(times)):
                assert j - i + 1 <= rate * (times[j] - times[i]) + rate + 1e-6


# -- slip replies -----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "rdtype"), [("www.example.test", "A"), ("example.test", "NS"),
                                              ("nope.example.test", "A"), ("a.sub.example.test", "A"),
                                              ("big.example.test", "A"), ("www.elsewhere.invalid", "A")])
def test_slip_reply_is_header_question_and_opt_with_tc(name, rdtype):
    full = response(name, rdtype, ecs="192.0.2.0/24", qid=777)
    reply = slip_reply(full)
    assert reply is not None
    assert len(reply) <= len(full)
    msg = dns.message.from_wire(reply)
    orig = dns.message.from_wire(full)
    assert msg.id == 777
    assert msg.flags & dns.flags.TC
    assert msg.flags & ~dns.flags.TC == orig.flags & ~dns.flags.TC
    assert msg.rcode() == orig.rcode()
    assert msg.question == orig.question
    assert (msg.answer, msg.authority, msg.additional) == ([], [], [])
    assert msg.edns == 0
    assert msg.options == orig.options          # the ECS echo kept as we built it


def test_slip_reply_without_opt_or_question():
    full = response("example.test", "NS", edns=None)
    msg = dns.message.from_wire(slip_reply(full))
    assert msg.edns == -1
    assert msg.flags & dns.flags.TC
    assert str(msg.question[0].name) == "example.test."
    responder, _ = make_responder()
    update = dns.message.make_query("www.example.test", "A")
    update.set_opcode(dns.opcode.UPDATE)
    notimp = responder.respond(update.to_wire(), CLIENT, 1.0)
    assert notimp is not None
    reply = slip_reply(notimp)
    assert reply is not None
    assert dns.message.from_wire(reply).question == []


# -- limit() and the responder wrapper ---------------------------------------------------

def test_limit_acts_and_counts_and_asks_exempt_only_over_the_limit():
    stats = RrlStats()
    rl = RateLimiter(RrlSettings(responses_per_second=2, slip=2), stats=stats)
    asked: list[tuple[bytes, object, float]] = []

    def exempt(query: bytes, client: object, now: float) -> bool:
        asked.append((query, client, now))
        return False

    out = [rl.limit(WWW, CLIENT, 0.5, query=b"q", exempt=exempt) for _ in range(5)]
    assert out[:2] == [WWW, WWW]
    assert out[2] == slip_reply(WWW)
    assert out[3] is None
    assert out[4] == slip_reply(WWW)
    assert asked == [(b"q", CLIENT, 0.5)] * 3
    assert (stats.limited, stats.slipped, stats.dropped, stats.exempt_cookie) == (3, 2, 1, 0)
    assert "3 limited" in repr(stats)


def test_exempt_queries_get_the_whole_answer():
    rl = limiter(responses_per_second=1, slip=0)
    assert rl.limit(WWW, CLIENT, 0.0, exempt=lambda q, c, t: True) == WWW
    assert rl.limit(WWW, CLIENT, 0.0, exempt=lambda q, c, t: True) == WWW
    assert rl.limit(WWW, CLIENT, 0.0, exempt=lambda q, c, t: False) is None
    assert (rl.stats.exempt_cookie, rl.stats.dropped) == (1, 1)


def test_responder_wrapper_limits_udp_only():
    responder, _ = make_responder()
    rl = limiter(responses_per_second=1, slip=0)
    wrapped = RateLimitedResponder(responder, rl)
    q = query("www.example.test")
    assert wrapped.respond(q, CLIENT, 0.0) is not None
    assert wrapped.respond(q, CLIENT, 0.0) is None
    assert all(wrapped.respond(q, CLIENT, 0.0, tcp=True) is not None for _ in range(10))
    assert wrapped.respond(b"\x00", CLIENT, 0.0) is None            # the responder's own drop
    assert rl.stats.dropped == 1
    assert "RateLimitedResponder" in repr(wrapped)


def test_responder_wrapper_passes_query_and_client_to_exempt():
    responder, _ = make_responder()
    seen: list[tuple[bytes, object, float]] = []
    wrapped = RateLimitedResponder(responder, limiter(responses_per_second=1, slip=0),
                                   exempt=lambda q, c, t: seen.append((q, c, t)) is None)
    q = query("www.example.test", ecs="192.0.2.0/24")
    assert wrapped.respond(q, CLIENT, 0.0) is not None
    assert seen == []
    assert wrapped.respond(q, CLIENT, 0.25) is not None
    assert seen == [(q, CLIENT, 0.25)]


def test_queries_with_a_valid_server_cookie_are_never_limited():
    """The real responder's cookie check as the exemption: a cookie we made for this address is never
    limited; a client cookie alone, a forged server cookie, or our cookie from another address are."""
    from gslb.dns.cookies import ServerCookies

    secret = bytes(range(16))
    wall = [1_700_000_000.0]
    responder, _ = make_responder(cookies=ServerCookies([secret]), wall=lambda: wall[0])
    wrapped = RateLimitedResponder(responder, limiter(responses_per_second=1, slip=0),
                                   exempt=responder.cookie_valid)

    def ask_with(cookie: bytes, client: object = CLIENT) -> bytes | None:
        msg = dns.message.make_query("www.example.test", "A", use_edns=0,
                                     options=[dns.edns.GenericOption(dns.edns.COOKIE, cookie)])
        return wrapped.respond(msg.to_wire(), client, 0.0)  # type: ignore[arg-type]

    client_cookie = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    first = ask_with(client_cookie)
    assert first is not None
    options = dns.message.from_wire(first).options
    cookie = next(o for o in options if isinstance(o, dns.edns.CookieOption))
    assert cookie.client == client_cookie
    full = cookie.client + cookie.server
    assert len(full) == 24
    for _ in range(20):
        reply = ask_with(full)
        assert reply is not None
        assert dns.message.from_wire(reply).answer
    assert ask_with(client_cookie) is None                           # client cookie alone: limited
    assert ask_with(full[:8] + bytes(16)) is None                    # a forged server cookie: limited
    other = ipaddress.IPv4Address("198.51.100.99")                   # same /24, not the address it was made for
    assert ask_with(full, other) is None
    assert wrapped.limiter.stats.exempt_cookie == 20
    assert wrapped.limiter.stats.dropped == 3


def reference_class(reply: bytes) -> tuple[ResponseClass, bytes, int]:
    """The obvious classification, from dnspython's parse of the whole response."""
    msg = dns.message.from_wire(reply)
    rcode = msg.rcode()
    question = msg.question[0] if msg.question else None
    qname = question.name.canonicalize().to_wire() if question is not None else b""
    qtype = question.rdtype if question is not None else 0
    if rcode == dns.rcode.NXDOMAIN:
        return ResponseClass.NXDOMAIN, msg.authority[0].name.canonicalize().to_wire(), 0
    if rcode != dns.rcode.NOERROR or question is None:
        return ResponseClass.ERROR, b"", 0
    if msg.answer or (msg.flags & dns.flags.TC and not msg.authority):
        return ResponseClass.NOERROR, qname, qtype
    if not msg.authority:
        return ResponseClass.ERROR, b"", 0
    if msg.flags & dns.flags.AA:
        return ResponseClass.NODATA, qname, qtype
    return ResponseClass.REFERRAL, msg.authority[0].name.canonicalize().to_wire(), 0


SHARED_RESPONDER, _ = make_responder()     # built once: loading the zones is the slow part
NAMES = ["www.example.test", "example.test", "mail.example.test", "app.example.test", "app2.example.test",
         "dangling.example.test", "loop1.example.test", "x.sub.example.test", "sub.example.test",
         "a.wild.example.test", "ent.example.test", "b.ent.example.test", "nope.example.test", "big.example.test",
         "alias.other.test", "zzz.other.test", "www.elsewhere.invalid", "down.example.test", "moved.example.test",
         "txtlong.example.test", "v4only.example.test"]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(NAMES), rdtype=st.sampled_from(["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "ANY"]),
       edns=st.sampled_from([None, 0, 1]), payload=st.sampled_from([512, 1232, 4096]),
       ecs=st.sampled_from([None, "192.0.2.0/24", "2001:db8::/56"]), flips=st.integers(0, 2**20))
def test_classify_equals_the_dnspython_reference(name, rdtype, edns, payload, ecs, flips):
    """Every kind of answer the real responder gives, in any letter case, classified as the slow parse says."""
    cased = "".join(c.upper() if flips >> (i % 20) & 1 else c for i, c in enumerate(name))
    reply = SHARED_RESPONDER.respond(query(cased, rdtype, edns=edns, payload=payload, ecs=ecs if edns == 0 else None),
                              CLIENT, 1000.0)
    assert reply is not None
    assert classify(reply) == reference_class(reply)
    slipped = slip_reply(reply)
    assert slipped is not None
    msg, full = dns.message.from_wire(slipped), dns.message.from_wire(reply)
    assert msg.flags & dns.flags.TC
    assert (msg.question, msg.rcode(), msg.edns, msg.options) == (full.question, full.rcode(), full.edns, full.options)


def test_limited_replies_are_logged_once_per_interval_with_a_count(caplog):
    from gslb.dns.rrl import LOG_INTERVAL

    rl = limiter(responses_per_second=1, nxdomains_per_second=1, slip=2)
    caplog.set_level("WARNING", logger="gslb.dns.rrl")
    for _ in range(6):                                   # 1 sent, 5 limited: one line, the first limited
        rl.limit(WWW, V4("192.0.2.55"), 100.0)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == (
        "rate limiting UDP replies: 1 limited since the last report; latest to 192.0.2.0/24: "
        "NOERROR www.example.test. type 1, slipped (TC=1)")
    nx = response("gone.example.test")
    for _ in range(3):
        rl.limit(nx, V6("2001:db8:0:1::9"), 100.0 + LOG_INTERVAL)   # 1 sent, 2 limited
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage() == (
        "rate limiting UDP replies: 5 limited since the last report; latest to 2001:db8::/56: "
        "NXDOMAIN example.test. type 0, slipped (TC=1)")
    assert rl.limit(nx, V6("2001:db8:0:1::9"), 100.0 + LOG_INTERVAL + 0.5) == slip_reply(nx)
    assert len(caplog.records) == 2                     # limited within the interval: counted, not logged
    assert rl.stats.limited == 8


# -- shared by workers ------------------------------------------------------------------

def test_a_limiter_shared_by_workers_enforces_its_share_of_each_rate() -> None:
    """Under `workers: N` each worker enforces 1/N of the rates: together they send the configured rate."""
    whole = RateLimiter(RrlSettings(responses_per_second=10, slip=0))
    half = RateLimiter(RrlSettings(responses_per_second=10, slip=0), share=2)
    assert actions(whole, WWW, 11) == [Action.SEND] * 10 + [Action.DROP]     # the burst is the rate
    assert actions(half, WWW, 5) == [Action.SEND] * 5
    assert actions(half, WWW, 6, now=1.0) == [Action.SEND] * 5 + [Action.DROP]   # 5 credits a second
    assert "shared by 2" in repr(half)
    with pytest.raises(ValueError, match="share"):
        RateLimiter(RrlSettings(), share=0)


def test_a_share_below_one_response_a_second_still_sends_one_then_waits() -> None:
    rl = RateLimiter(RrlSettings(responses_per_second=1, slip=0), share=4)     # 0.25/s: a burst of 1
    assert actions(rl, WWW, 1) == [Action.SEND]
    assert actions(rl, WWW, 1, now=3.0) == [Action.DROP]    # 0.75 credits earned: not yet one
    rl = RateLimiter(RrlSettings(responses_per_second=1, slip=0), share=4)
    paced = [rl.decide(WWW, CLIENT, 4.0 * i) for i in range(5)]    # type: ignore[arg-type]
    assert paced == [Action.SEND] * 5                       # one every 4 s is the pace it allows


def test_the_server_shares_its_rates_by_its_workers(tmp_path: Path) -> None:
    import dataclasses

    from gslb.app import GslbServer

    config = load_config(write_config(tmp_path, None))
    assert GslbServer(config).rate_limiter.share == 1                      # type: ignore[union-attr]
    server = GslbServer(dataclasses.replace(config, workers=2))           # what each of 2 workers builds
    assert server.rate_limiter.share == 2                                  # type: ignore[union-attr]
