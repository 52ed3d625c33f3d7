"""The query parser's work is linear in the datagram: worst cases checked by an operation count.

Every case parses with a `ParseStats` and asserts `steps <= len(data) // 2 + MAX_NAME_STEPS + 1`
(one step per label, pointer or root walked and per EDNS option; the question name costs at
most MAX_NAME_STEPS + 1; outside it a label or pointer is at least two bytes, a root owner
needs ten more bytes after it, an option is at least four). Before this
bound, a 64 KB datagram of records whose owners chain through compression pointers took
seconds of CPU (every owner was decompressed, pointer hops were unbounded).
"""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.dns import errors
from gslb.dns.records import OPT
from gslb.dns.wire import MAX_NAME_STEPS, ParseStats, Query, parse_query, read_name

QUESTION = b"\x01a\x00\x00\x01\x00\x01"                   # a. A IN, at offset 12
FIXED = struct.pack("!HHIH", 1, 1, 0, 0)                    # type A, class IN, TTL 0, no rdata
OPT_RECORD = b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, 0)
TCP_MAX = 65535


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0) -> bytes:
    return struct.pack("!6H", 7, flags, qd, an, ns, ar)


def pointer(target: int) -> bytes:
    assert target < 0x4000
    return struct.pack("!H", 0xC000 | target)


def bound(data: bytes) -> int:
    return len(data) // 2 + MAX_NAME_STEPS + 1


def parse_counted(data: bytes) -> tuple[Query | errors.WireError, int]:
    stats = ParseStats()
    try:
        result: Query | errors.WireError = parse_query(data, stats)
    except errors.WireError as exc:
        result = exc
    assert stats.steps <= bound(data), (stats.steps, len(data))
    return result, stats.steps


# -- worst cases -------------------------------------------------------------------


def pointer_chain(limit: int = TCP_MAX) -> bytes:
    """Additional records whose owners each point at the previous record's owner (quadratic
    if owners are decompressed; past 16 KB, where pointers cannot reach, at the last one that
    can be reached), the OPT record last."""
    body = bytearray(QUESTION)
    prev = 12 + len(body)
    body += b"\x00" + FIXED
    count = 1
    while 12 + len(body) + 12 <= limit - len(OPT_RECORD):
        here = 12 + len(body)
        body += pointer(prev) + FIXED
        if here < 0x4000:
            prev = here
        count += 1
    body += OPT_RECORD
    return header(ar=count + 1) + bytes(body)


def rdata_chain(limit: int = TCP_MAX) -> bytes:
    """The first 16 KB: one record's rdata is a chain of pointers, each to the one before;
    the rest: records whose owners point at the end of the chain (8k hops each if followed)."""
    body = bytearray(QUESTION)
    root = 12 + len(body)
    body += b"\x00" + FIXED[:-2]
    links = (0x4000 - 12 - len(body) - 2) // 2
    body += struct.pack("!H", 2 * links)
    start = 12 + len(body)
    prev = root
    for i in range(links):
        body += pointer(prev)
        prev = start + 2 * i
    count = 1
    while 12 + len(body) + 12 <= limit:
        body += pointer(prev) + FIXED
        count += 1
    return header(an=count) + bytes(body)


def long_owners(limit: int = TCP_MAX) -> bytes:
    """Owners of 127 one-byte labels (a 255-byte name, the most labels a name may have),
    the question too."""
    name = b"\x01x" * 127 + b"\x00"
    body = bytearray(name + b"\x00\x01\x00\x01")
    count = 0
    while 12 + len(body) + len(name) + 10 <= limit:
        body += name + FIXED
        count += 1
    return header(ns=count) + bytes(body)


def label_then_pointer(limit: int = TCP_MAX) -> bytes:
    """Owners of 126 labels then a pointer to the previous owner: each decompresses past 255."""
    body = bytearray(QUESTION)
    prev = 12 + len(body)
    body += b"\x00" + FIXED
    count = 1
    while 12 + len(body) + 254 + 10 <= limit:
        here = 12 + len(body)
        body += b"\x01x" * 126 + pointer(prev if prev < 0x4000 else 12 + len(QUESTION)) + FIXED
        prev = here
        count += 1
    return header(an=count) + bytes(body)


def many_options(limit: int = TCP_MAX) -> bytes:
    """One OPT record holding as many empty unknown options as fit (4 bytes each)."""
    room = limit - 12 - len(QUESTION) - len(OPT_RECORD)
    options = struct.pack("!HH", 65001, 0) * (room // 4)
    opt = b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, len(options)) + options
    return header(ar=1) + QUESTION + opt


@pytest.mark.parametrize("limit", [TCP_MAX, 65507, 1232, 512])
def test_owner_pointer_chain_is_linear(limit: int) -> None:
    data = pointer_chain(limit)
    assert len(data) > limit - 24
    parsed, steps = parse_counted(data)
    assert isinstance(parsed, Query)
    assert parsed.edns is not None          # the OPT record after thousands of others is found
    assert parsed.edns.udp_size == 1232
    records = struct.unpack_from("!H", data, 10)[0]
    assert steps <= records + 2             # one step per owner: pointers are never followed


def test_pointer_chain_inside_rdata_is_never_walked() -> None:
    data = rdata_chain()
    assert len(data) > TCP_MAX - 12
    parsed, steps = parse_counted(data)
    assert isinstance(parsed, Query)
    assert parsed.edns is None
    assert steps <= 2 + struct.unpack_from("!H", data, 6)[0]


def test_owners_with_the_most_labels() -> None:
    data = long_owners()
    parsed, steps = parse_counted(data)
    assert isinstance(parsed, Query)
    assert len(parsed.question.labels) == 127
    assert steps <= len(data) // 2 + 2      # 128 steps per 265-byte record


def test_owners_of_labels_then_pointers() -> None:
    data = label_then_pointer()
    parsed, _ = parse_counted(data)
    assert isinstance(parsed, Query)        # skipped owners are not decompressed, so not refused


def test_thousands_of_options() -> None:
    data = many_options()
    assert len(data) > TCP_MAX - 4
    parsed, steps = parse_counted(data)
    assert isinstance(parsed, Query)
    assert parsed.edns is not None
    assert steps >= (len(data) - 40) // 4   # every option was looked at, once


def test_counts_that_cannot_fit_are_refused_before_any_record() -> None:
    data = header(an=65535, ns=65535, ar=65535) + QUESTION + OPT_RECORD * 1000
    with pytest.raises(errors.ShortMessage, match="cannot fit") as info:
        parse_query(data, stats := ParseStats())
    assert stats.steps == 2                 # the question's label and root only
    assert info.value.question is not None  # still echoed in the FORMERR
    exact = header(ar=3) + QUESTION + b"\x00" + FIXED + b"\x00" + FIXED + OPT_RECORD
    assert isinstance(parse_query(exact), Query)
    with pytest.raises(errors.ShortMessage, match="cannot fit"):
        parse_query(exact[:-1])


def test_question_name_from_a_pointer_chain_through_the_header() -> None:
    # ARCOUNT -> NSCOUNT -> ANCOUNT -> QDCOUNT's high byte (a zero: the root)
    data = struct.pack("!6H", 7, 0, 1, 0xC004, 0xC006, 0xC008) + pointer(10) + b"\x00\x01\x00\x01"
    result, steps = parse_counted(data)
    assert isinstance(result, errors.ShortMessage)     # the counts it took cannot fit
    assert result.question is not None
    assert result.question.labels == ()
    assert steps == 5                                   # four hops and the root


def test_question_of_the_most_labels_and_a_pointer() -> None:
    labels = b"\x01x" * 127
    ok = header() + labels + b"\x00\x00\x01\x00\x01"
    parsed, steps = parse_counted(ok)
    assert isinstance(parsed, Query)
    assert steps == 128
    over = header() + b"\x01x" * 127 + b"\x01y\x00\x00\x01\x00\x01"
    with pytest.raises(errors.BadName, match="255"):
        parse_query(over)


def test_read_name_follows_at_most_max_steps() -> None:
    # a chain of 1,000 pointers, each to the one before, ends at a root: refused after 128 hops
    data = bytearray(b"\x00")
    for i in range(1000):
        data += pointer(2 * i - 1 if i else 0)
    stats = ParseStats()
    with pytest.raises(errors.BadName, match=f"more than {MAX_NAME_STEPS}"):
        read_name(bytes(data), len(data) - 2, stats)
    assert stats.steps == MAX_NAME_STEPS + 1
    # 127 pointers (and the root) is within the budget
    labels, end = read_name(bytes(data), 1 + 2 * 126, stats := ParseStats())
    assert labels == ()
    assert end == 1 + 2 * 127
    assert stats.steps == 128


def test_skipped_owner_names_are_still_checked() -> None:
    def with_owner(owner: bytes) -> bytes:
        return header(an=1) + QUESTION + owner + FIXED

    assert isinstance(parse_query(with_owner(pointer(12))), Query)
    assert isinstance(parse_query(with_owner(b"\x03www" + pointer(12))), Query)
    with pytest.raises(errors.BadName, match="backwards"):
        parse_query(with_owner(pointer(12 + len(QUESTION))))           # points at itself
    with pytest.raises(errors.BadName, match="backwards"):
        parse_query(with_owner(b"\x01b" + pointer(12 + len(QUESTION))))  # at its own start
    with pytest.raises(errors.BadName, match="label type"):
        parse_query(with_owner(b"\x41" + b"x" * 65 + b"\x00"))
    with pytest.raises(errors.BadName, match="255"):
        parse_query(with_owner(b"\x3fxxx" + b"x" * 60 + (b"\x3f" + b"x" * 63) * 3 + b"\x00"))
    with pytest.raises(errors.BadName, match="cut short"):
        parse_query(header(an=1) + QUESTION + b"\x09abcdefghi\xc0")
    with pytest.raises(errors.BadName, match="past the end"):
        parse_query(header(an=1) + QUESTION + b"\x0aabcdefghij")
    with pytest.raises(errors.ShortMessage, match="header cut short"):
        parse_query(header(an=1) + QUESTION + b"\x0aabcdefghij" + b"\x00" * 4)
    with pytest.raises(errors.ShortMessage, match="data cut short"):
        parse_query(header(an=1) + QUESTION + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x00" * 3)


def test_opt_rules() -> None:
    with pytest.raises(errors.BadOpt, match="root"):
        parse_query(header(ar=1) + QUESTION + pointer(14) + OPT_RECORD[1:])    # compressed root
    with pytest.raises(errors.BadOpt, match="root"):
        parse_query(header(ar=1) + QUESTION + b"\x01a\x00" + OPT_RECORD[1:])
    with pytest.raises(errors.BadOpt, match="additional"):
        parse_query(header(ns=1) + QUESTION + OPT_RECORD)
    with pytest.raises(errors.DuplicateOpt):
        parse_query(header(ar=2) + QUESTION + OPT_RECORD * 2)
    with pytest.raises(errors.BadOpt, match="cut short"):
        parse_query(header(ar=1) + QUESTION + b"\x00" + struct.pack("!HHIH", OPT, 512, 0, 2) + b"\x00\x08")
    with pytest.raises(errors.BadOpt, match="past the OPT"):
        parse_query(header(ar=1) + QUESTION + b"\x00" + struct.pack("!HHIHHH", OPT, 512, 0, 4, 8, 1))
    with pytest.raises(errors.TrailingJunk):
        parse_query(header(ar=1) + QUESTION + OPT_RECORD + b"\x00")


# -- agreement with dnspython on real messages holding records ---------------------


def _message_with_records(n: int, options: list[dns.edns.Option]) -> bytes:
    msg = dns.message.make_query("www.example.test", "AAAA", use_edns=0, options=options)
    for i in range(n):
        section = (msg.answer, msg.authority, msg.additional)[i % 3]
        section.append(dns.rrset.from_text(f"r{i}.www.example.test.", 60, "IN", "CNAME", "www.example.test."))
    return msg.to_wire()


@settings(deadline=None)
@given(st.integers(0, 30), st.booleans(), st.booleans())
def test_messages_with_compressed_records_agree_with_dnspython(n: int, ecs: bool, cookie: bool) -> None:
    options: list[dns.edns.Option] = []
    if ecs:
        options.append(dns.edns.ECSOption("10.1.2.0", 24))
    if cookie:
        options.append(dns.edns.CookieOption(b"12345678", b""))
    data = _message_with_records(n, options)
    reference = dns.message.from_wire(data)
    parsed, _ = parse_counted(data)
    assert isinstance(parsed, Query)
    assert parsed.question.name == str(reference.question[0].name).rstrip(".").lower()
    assert parsed.edns is not None
    assert parsed.edns.udp_size == reference.payload
    assert (parsed.edns.ecs is not None) == ecs
    assert parsed.edns.cookie == (b"12345678" if cookie else None)


# -- any input ---------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_a_query_or_a_wire_error(data: bytes) -> None:
    parse_counted(data)


_LABEL = st.binary(min_size=1, max_size=8).map(lambda label: bytes([len(label)]) + label)
_POINTER = st.integers(0, 160).map(lambda t: struct.pack("!H", 0xC000 | t))
_BAD_LABEL = st.integers(64, 191).map(lambda b: bytes([b]))
_NAME = st.tuples(st.lists(st.one_of(_LABEL, _LABEL, _LABEL, _LABEL, _BAD_LABEL), max_size=4),
                  st.sampled_from([b"\x00"] * 6 + [b"\xc0\x04", b"\xc0\x0c"]) | _POINTER).map(
    lambda n: b"".join(n[0]) + n[1])
_QNAME = st.tuples(st.lists(_LABEL, max_size=4), st.sampled_from([b"\x00"] * 12 + [b"\xc0\x04", b"\xc0\x0b"])).map(
    lambda n: b"".join(n[0]) + n[1]) | _NAME
_OPTION = st.one_of(
    st.tuples(st.sampled_from([3, 10, 10, 65001]), st.binary(max_size=44)).map(
        lambda option: struct.pack("!HH", option[0], len(option[1])) + option[1]),
    st.sampled_from([struct.pack("!HH", 8, 7) + b"\x00\x01\x18\x00\x01\x02\x03",
                     struct.pack("!HH", 8, 4) + b"\x00\x02\x00\x00", struct.pack("!HH", 10, 8) + b"c" * 8]),
    st.binary(min_size=1, max_size=5),
)
_RDATA = st.one_of(st.binary(max_size=12), st.lists(_OPTION, max_size=4).map(b"".join))
_RECORD = st.tuples(st.one_of(st.just(b"\x00"), _NAME), st.sampled_from([OPT, OPT, 1, 5, 28]),
                    st.integers(0, 2**32 - 1), _RDATA, st.integers(-2, 2)).map(
    lambda r: r[0] + struct.pack("!HHIH", r[1], 1232, r[2] & 0x0000FFFF if r[1] == OPT else r[2],
                                 max(0, len(r[3]) + (r[4] if r[4] in (-1, 1) else 0))) + r[3])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0] * 4 + [0x0100] * 4 + [0x0110, 0x8000, 0x2800]), st.sampled_from([1] * 8 + [0, 2]),
       _QNAME, st.lists(_RECORD, max_size=6), st.integers(0, 5), st.integers(0, 5), st.integers(-1, 1),
       st.sampled_from([b"", b"", b"", b"\x00", b"\xc0"]))
def test_crafted_messages_give_a_query_or_a_wire_error(flags: int, qdcount: int, qname: bytes,
                                                       records: list[bytes], an: int, ns: int, skew: int,
                                                       tail: bytes) -> None:
    an, ns = min(an, len(records)), min(ns, len(records) - min(an, len(records)))
    ar = max(0, len(records) - an - ns + skew)
    data = (struct.pack("!6H", 7, flags, qdcount, an, ns, ar) + qname + b"\x00\x01\x00\x01"
            + b"".join(records) + tail)
    result, _ = parse_counted(data)
    if isinstance(result, Query):
        assert qdcount == 1
        assert flags & 0xF800 == 0
        assert result.edns is None or result.edns.version == 0
