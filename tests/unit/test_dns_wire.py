"""The query parser (bounds, errors, EDNS/ECS) and the message writer."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.dns import errors
from gslb.dns.ecs import EcsError
from gslb.dns.records import OPT
from gslb.dns.wire import MessageWriter, Question, name_text, parse_query, read_name
from tests.unit.dns_helpers import CLIENT as CLIENT_V4
from tests.unit.dns_helpers import query

HEADER = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0)
QUESTION = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"


def test_parse_a_plain_query() -> None:
    parsed = parse_query(query("WWW.example.test", "AAAA", edns=None, qid=99))
    assert parsed.msg_id == 99
    assert parsed.rd
    assert parsed.opcode == 0
    assert parsed.edns is None
    assert parsed.question.labels == (b"WWW", b"example", b"test")
    assert parsed.question.name == "www.example.test"
    assert parsed.question.qtype == 28
    assert "www.example.test AAAA" in repr(parsed.question)


def test_parse_edns_and_ecs() -> None:
    parsed = parse_query(query("www.example.test", "A", ecs="1.2.3.0/24", payload=4096))
    assert parsed.edns is not None
    assert parsed.edns.udp_size == 4096
    assert parsed.edns.version == 0
    assert parsed.edns.ecs is not None
    assert parsed.edns.ecs.source == 24
    assert parsed.edns.ecs.address == b"\x01\x02\x03"


def _with_options(*options: dns.edns.Option) -> bytes:
    msg = dns.message.make_query("www.example.test", "A", use_edns=0, options=list(options))
    return msg.to_wire()


def test_parse_cookie_and_nsid() -> None:
    client = bytes(range(1, 9))
    parsed = parse_query(_with_options(dns.edns.CookieOption(client, b"")))
    assert parsed.edns is not None
    assert parsed.edns.cookie == client
    assert not parsed.edns.nsid
    server = bytes(range(16))
    both = parse_query(_with_options(dns.edns.NSIDOption(b""), dns.edns.CookieOption(client, server),
                                     dns.edns.ECSOption("1.2.3.0", 24)))
    assert both.edns is not None
    assert both.edns.cookie == client + server
    assert both.edns.nsid
    assert both.edns.ecs is not None
    assert both.edns.ecs.address == b"\x01\x02\x03"
    plain = parse_query(query("www.example.test"))
    assert plain.edns is not None
    assert plain.edns.cookie is None
    assert not plain.edns.nsid


@pytest.mark.parametrize("length", [0, 7, 9, 15, 41, 64])
def test_cookie_of_a_bad_length_is_a_form_error(length: int) -> None:
    data = _with_options(dns.edns.GenericOption(10, b"c" * length))
    with pytest.raises(errors.BadCookie) as info:
        parse_query(data)
    assert isinstance(info.value, errors.FormError)
    assert info.value.question is not None
    assert info.value.edns is not None          # the OPT itself was sound: echoed in the FORMERR


@pytest.mark.parametrize("length", [8, 16, 24, 40])
def test_cookie_lengths_accepted(length: int) -> None:
    parsed = parse_query(_with_options(dns.edns.GenericOption(10, b"c" * length)))
    assert parsed.edns is not None
    assert parsed.edns.cookie == b"c" * length


def test_two_cookies_are_a_form_error() -> None:
    cookie = dns.edns.GenericOption(10, b"c" * 8)
    with pytest.raises(errors.BadCookie, match="two"):
        parse_query(_with_options(cookie, cookie))


def _raises(data: bytes, kind: type[Exception]) -> errors.WireError:
    with pytest.raises(kind) as info:
        parse_query(data)
    assert isinstance(info.value, errors.WireError)
    return info.value


def test_error_family() -> None:
    _raises(b"\x00" * 11, errors.ShortHeader)
    _raises(struct.pack("!6H", 1, 0x8000, 1, 0, 0, 0) + QUESTION, errors.NotAQuery)
    exc = _raises(struct.pack("!6H", 1, 0x2800, 1, 0, 0, 0) + QUESTION, errors.NotImplementedOpcode)
    assert exc.msg_id == 1
    _raises(struct.pack("!6H", 1, 0, 0, 0, 0, 0), errors.BadQuestionCount)
    exc = _raises(struct.pack("!6H", 1, 0, 2, 0, 0, 0) + QUESTION * 2, errors.BadQuestionCount)
    assert exc.question is not None
    assert exc.question.name == "www.example.test"
    _raises(HEADER + QUESTION[:-1], errors.ShortMessage)
    _raises(HEADER + QUESTION + b"\x00", errors.TrailingJunk)
    _raises(HEADER + b"\x40abc\x00\x00\x01\x00\x01", errors.BadName)
    _raises(HEADER + b"\x05ab", errors.BadName)
    _raises(HEADER + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", errors.BadName)   # > 255
    _raises(struct.pack("!6H", 1, 0, 1, 1, 0, 0) + QUESTION + b"\x00\x00\x29\x02\x00" + b"\x00" * 6,
            errors.BadOpt)
    _raises(struct.pack("!6H", 1, 0, 1, 0, 0, 1) + QUESTION + b"\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x05ab",
            errors.ShortMessage)
    ecs = struct.pack("!HH", 8, 7) + struct.pack("!HBB", 1, 24, 0) + b"\x01\x02\x03"
    opt = b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, len(ecs) * 2) + ecs * 2
    exc = _raises(struct.pack("!6H", 1, 0, 1, 0, 0, 1) + QUESTION + opt, EcsError)
    assert isinstance(exc, errors.FormError)
    assert exc.edns is not None     # the OPT itself was sound: echoed in the FORMERR
    version1 = b"\x00" + struct.pack("!HHIH", OPT, 1232, 1 << 16, 0)
    exc = _raises(struct.pack("!6H", 1, 0, 1, 0, 0, 1) + QUESTION + version1, errors.BadVersion)
    assert exc.question is not None
    assert str(exc).startswith("EDNS version not supported")


def test_answer_and_authority_records_are_skipped() -> None:
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04"
    parsed = parse_query(struct.pack("!6H", 1, 0, 1, 1, 1, 1) + QUESTION + record * 3)
    assert parsed.question.name == "www.example.test"
    assert parsed.edns is None


def test_pointer_rules() -> None:
    data = HEADER + QUESTION + b"\x01a\xc0\x0c"
    labels, end = read_name(data, len(HEADER) + len(QUESTION))
    assert labels == (b"a", b"www", b"example", b"test")
    assert end == len(data)
    with pytest.raises(errors.BadName, match="backwards"):
        read_name(HEADER + b"\x01a\xc0\x0c", 12)      # points at its own start: a loop
    with pytest.raises(errors.BadName, match="cut short"):
        read_name(HEADER + b"\xc0", 12)


def test_name_text_escapes_dots_inside_labels() -> None:
    assert name_text((b"WWW", b"Example")) == "www.example"
    assert name_text(()) == ""
    assert name_text((b"a.b", b"test")) == "a\\.b.test"
    assert name_text((b"a\\", b"test")) == "a\\\\.test"
    assert name_text((b"\xc9",)) == "\xc9"          # only ASCII is case-folded


def test_odd_labels_never_match_a_served_name() -> None:
    from tests.unit.dns_helpers import CLIENT, ask, make_responder
    responder, steering = make_responder()
    data = HEADER + b"\x10www.example.test\x00\x00\x01\x00\x01"      # one label holding dots
    assert ask(responder, data).rcode() == 5                           # REFUSED: no zone "" holds it
    inside = HEADER + b"\x07www.foo\x07example\x04test\x00\x00\x01\x00\x01"
    reply = ask(responder, inside)
    assert reply.rcode() == 3
    below_cut = HEADER + b"\x03a.b\x03sub\x07example\x04test\x00\x00\x01\x00\x01"
    assert not ask(responder, below_cut).flags & 0x0400               # referral
    assert steering.calls == []
    assert responder.respond(HEADER + b"\x03a\\b\x07example\x04test\x00\x00\xfc\x00\x01", CLIENT, 0) is not None


def test_writer_compresses_and_keeps_question_case() -> None:
    writer = MessageWriter()
    writer.question(Question((b"WwW", b"Example", b"TEST"), 1, 1, "www.example.test"))
    writer.record(1, "www.example.test", 5, 60, ("mail.example.test",))
    writer.record(1, "mail.example.test", 1, 60, (b"\x01\x02\x03\x04",))
    writer.opt(1232, 0, True, b"")
    data = writer.finish(5, 0x8400)
    assert data.count(b"example") == 0
    assert data.count(b"Example") == 1
    message = dns.message.from_wire(data)
    assert [str(rrset.name) for rrset in message.answer] == ["WwW.Example.TEST.", "mail.Example.TEST."]
    assert message.ednsflags & 0x8000
    assert "MessageWriter" in repr(writer)


def test_writer_rollback_forgets_names_written_after_the_mark() -> None:
    writer = MessageWriter()
    writer.question(Question((b"a", b"test"), 1, 1, "a.test"))
    mark = writer.mark()
    writer.record(3, "ns.b.test", 1, 60, (b"\x01\x02\x03\x04",))
    writer.rollback(mark)
    writer.record(1, "b.test", 1, 60, (b"\x01\x02\x03\x04",))
    message = dns.message.from_wire(writer.finish(1, 0x8000))
    assert [str(r.name) for r in message.answer] == ["b.test."]
    assert message.additional == []


@given(st.lists(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), min_size=1, max_size=5),
       st.integers(0, 65535), st.sampled_from(["A", "AAAA", "TXT", "NS", "ANY"]))
def test_parse_agrees_with_dnspython(labels: list[str], qid: int, rdtype: str) -> None:
    name = ".".join(labels)
    parsed = parse_query(query(name, rdtype, qid=qid))
    assert parsed.msg_id == qid
    assert parsed.question.name == name
    assert parsed.edns is not None


def test_trailing_junk_after_a_sound_opt_keeps_the_opt_for_the_formerr() -> None:
    data = query("www.example.test", ecs="1.2.3.0/24", payload=4096) + b"\x00junk"
    with pytest.raises(errors.TrailingJunk) as info:
        parse_query(data)
    assert info.value.edns is not None
    assert info.value.edns.udp_size == 4096


def test_the_formerr_for_trailing_junk_carries_opt() -> None:
    from tests.unit.dns_helpers import make_responder

    responder, _ = make_responder()
    reply = responder.respond(query("www.example.test", payload=4096) + b"junk", CLIENT_V4, 1.0)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.rcode() == 1                     # FORMERR
    assert message.edns == 0                        # ... with an OPT record (RFC 6891 §7)
