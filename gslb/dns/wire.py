"""DNS wire format: the query parser and the response writer  [pure].

    parse_query(data, stats=None) -> Query   bounds-checked; raises the WireError family (errors.py)
    read_name(data, offset) -> labels, end   one name, decompressed within a budget
    MessageWriter                            header, question, records with name compression, OPT

The parser reads one question, skips answer/authority records, and finds the
OPT record (RFC 6891) and its Client Subnet (RFC 7871), COOKIE (RFC 7873: the
option data as received, 8 or 16..40 bytes) and NSID (RFC 5001: present or
not) options in the additional section.

It never reads past a length, and its work is linear in the datagram with a
small constant (one step per label, pointer or root of a name and per EDNS
option; `ParseStats` counts them and tests bound them by
len(data) // 2 + MAX_NAME_STEPS + 1: outside the question every step but a
failing last one moves forward by at least two bytes, or by one byte that
needs ten more after it):
- only the question name is decompressed: at most MAX_NAME_STEPS (128) labels
  and pointers, 255 bytes, and a pointer must point before the labels that led
  to it, so pointer chains always end;
- other records are skipped, never decompressed: the owner name is walked to
  its terminating zero or its first pointer (checked to point before the name,
  not followed), then type/class/TTL/RDLENGTH are read and RDATA is jumped
  over. Only the OPT record is looked into; its owner must be the single root
  byte. A skipped owner's compressed suffix is never checked (it is not used);
- record counts that cannot fit in what is left (a record is at least 11
  bytes) are refused before any record is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gslb.dns.ecs import ECS_OPTION, ClientSubnet, EcsError
from gslb.dns.errors import (
    BadCookie,
    BadName,
    BadOpt,
    BadQuestionCount,
    BadVersion,
    DuplicateOpt,
    NotAQuery,
    NotImplementedOpcode,
    ShortHeader,
    ShortMessage,
    TrailingJunk,
    WireError,
)
from gslb.dns.records import OPT, Rdata, type_name

HEADER = struct.Struct("!HHHHHH")
NSID_OPTION = 3             # RFC 5001
COOKIE_OPTION = 10          # RFC 7873
_RR_FIXED = struct.Struct("!HHIH")
_TYPE_CLASS = struct.Struct("!HH")
MAX_NAME_STEPS = 128        # labels and pointers followed in the one name decompressed (the question)
_MIN_RECORD = 11            # a record's least size: a root owner and type, class, TTL, RDLENGTH

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
OPCODE_MASK = 0x7800

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 16: "BADVERS"}


@dataclass(frozen=True, slots=True)
class Question:
    labels: tuple[bytes, ...]   # as received (original case)
    qtype: int
    qclass: int
    name: str                   # lower-case text, no trailing dot; "" is the root

    def __repr__(self) -> str:
        return f"<Question {self.name or '.'} {type_name(self.qtype)} class={self.qclass}>"


@dataclass(frozen=True, slots=True)
class Edns:
    udp_size: int               # the requestor's advertised payload size, as received
    version: int
    do: bool
    ecs: ClientSubnet | None = None
    cookie: bytes | None = None  # COOKIE option data as received: client cookie (8) or client+server (16..40)
    nsid: bool = False          # an NSID option was present (RFC 5001)


@dataclass(slots=True)
class ParseStats:
    """The work parse_query did: one step per label, pointer or root of a name, per EDNS option.

    The parser is built so that steps <= len(data) // 2 + MAX_NAME_STEPS + 1; tests check it on
    worst cases and on arbitrary bytes (an operation count rather than a time)."""

    steps: int = 0


@dataclass(frozen=True, slots=True)
class Query:
    msg_id: int
    flags: int
    question: Question
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def rd(self) -> bool:
        return bool(self.flags & RD)


def name_text(labels: tuple[bytes, ...]) -> str:
    """Lower-case text of wire labels; a label holding '.' or '\\' is escaped, so it can
    never be mistaken for two labels of a name we serve. Only ASCII is case-folded."""
    raw = b".".join(labels).lower()
    if raw.count(b".") != len(labels) - 1 or b"\\" in raw:
        raw = b".".join(label.lower().replace(b"\\", b"\\\\").replace(b".", b"\\.") for label in labels)
    return raw.decode("latin-1")


def read_name(data: bytes, offset: int, stats: ParseStats | None = None) -> tuple[tuple[bytes, ...], int]:
    """Labels of the name at `offset` and the offset just after it (after the first pointer).

    At most MAX_NAME_STEPS labels and pointers are followed, the name is at most 255 bytes,
    and a pointer must point before the labels that led to it, so every chain ends."""
    labels: list[bytes] = []
    n = len(data)
    pos = offset
    run_start = offset          # start of the labels read since the last jump
    end = -1
    total = 1
    steps = 0
    try:
        while True:
            steps += 1
            if pos >= n:
                raise BadName("name runs past the end of the message")
            length = data[pos]
            if length == 0:
                pos += 1
                break
            if steps > MAX_NAME_STEPS:
                raise BadName(f"more than {MAX_NAME_STEPS} labels and pointers")
            if length >= 0xC0:
                if pos + 1 >= n:
                    raise BadName("compression pointer cut short")
                target = ((length & 0x3F) << 8) | data[pos + 1]
                if target >= run_start:
                    raise BadName("compression pointer does not point backwards")
                if end < 0:
                    end = pos + 2
                pos = run_start = target
                continue
            if length > 63:
                raise BadName(f"unknown label type 0x{length & 0xC0:02x}")
            total += length + 1
            if total > 255:
                raise BadName("name longer than 255 bytes")
            if pos + 1 + length > n:
                raise BadName("label runs past the end of the message")
            labels.append(data[pos + 1: pos + 1 + length])
            pos += 1 + length
    finally:
        if stats is not None:
            stats.steps += steps
    return tuple(labels), (end if end >= 0 else pos)


def _read_question(data: bytes, stats: ParseStats | None) -> tuple[Question, int]:
    labels, pos = read_name(data, 12, stats)
    if pos + 4 > len(data):
        raise ShortMessage("question cut short")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, pos)
    return Question(labels, qtype, qclass, name_text(labels)), pos + 4


def _find_opt(data: bytes, pos: int, before: int, additional: int, stats: ParseStats | None
              ) -> tuple[tuple[int, int, int, int] | None, int]:
    """Skip `before` answer/authority records and `additional` records from `pos`; returns the
    OPT record's (class, ttl, rdata offset, rdata end) or None, and the offset after the last.

    Owner names are walked to their terminating zero or first pointer and never decompressed:
    a pointer is only checked to point before the name. Each step moves forward by at least
    one byte, so the work is linear in the message's length."""
    n = len(data)
    count = before + additional
    if count * _MIN_RECORD > n - pos:
        raise ShortMessage(f"{count} records cannot fit in {n - pos} bytes")
    opt: tuple[int, int, int, int] | None = None
    steps = 0
    try:
        for i in range(count):
            start = pos
            while True:         # the owner name
                steps += 1
                if pos >= n:
                    raise BadName("name runs past the end of the message")
                length = data[pos]
                if length == 0:
                    pos += 1
                    break
                if length >= 0xC0:
                    if pos + 1 >= n:
                        raise BadName("compression pointer cut short")
                    if ((length & 0x3F) << 8) | data[pos + 1] >= start:
                        raise BadName("compression pointer does not point backwards")
                    pos += 2
                    break
                if length > 63:
                    raise BadName(f"unknown label type 0x{length & 0xC0:02x}")
                pos += 1 + length
                if pos - start > 254:
                    raise BadName("name longer than 255 bytes")
            if pos + 10 > n:
                raise ShortMessage("record header cut short")
            rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
            pos += 10 + rdlength
            if pos > n:
                raise ShortMessage("record data cut short")
            if rtype == OPT:
                if i < before:
                    raise BadOpt("OPT outside the additional section")
                if opt is not None:
                    raise DuplicateOpt()
                if data[start] != 0:
                    raise BadOpt("OPT owner is not the root")
                opt = (rclass, ttl, pos - rdlength, pos)
    finally:
        if stats is not None:
            stats.steps += steps
    return opt, pos


def parse_query(data: bytes, stats: ParseStats | None = None) -> Query:
    """Parse a query; raises WireError subclasses carrying what was read before the error.

    `stats`, when given, is incremented by the loop steps taken (tests bound it by the length)."""
    if len(data) < 12:
        raise ShortHeader(f"{len(data)} bytes")
    msg_id, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    question: Question | None = None
    edns: Edns | None = None
    steps = 0           # EDNS options looked at (the helpers count their own steps)
    try:
        if flags & QR:
            raise NotAQuery()
        if flags & OPCODE_MASK:
            # no question echoed: other opcodes give the section other meanings (UPDATE's zone)
            raise NotImplementedOpcode(f"opcode {(flags & OPCODE_MASK) >> 11}")
        if qdcount == 0:
            raise BadQuestionCount("no question")
        question, pos = _read_question(data, stats)
        if qdcount != 1:
            raise BadQuestionCount(f"QDCOUNT {qdcount}")
        opt: tuple[int, int, int, int] | None = None
        if ancount or nscount or arcount:
            opt, pos = _find_opt(data, pos, ancount + nscount, arcount, stats)
        if pos != len(data):
            if opt is not None:     # the OPT itself was read: the FORMERR carries one (RFC 6891 §7)
                edns = Edns(opt[0], (opt[1] >> 16) & 0xFF, bool(opt[1] & 0x8000))
            raise TrailingJunk(f"{len(data) - pos} bytes")
        if opt is not None:
            udp_size, ttl, p, end = opt
            version = (ttl >> 16) & 0xFF
            do = bool(ttl & 0x8000)
            edns = Edns(udp_size, version, do)
            if version != 0:
                raise BadVersion(f"version {version}")
            ecs: ClientSubnet | None = None
            cookie: bytes | None = None
            nsid = False
            while p < end:      # the options: Client Subnet, COOKIE and NSID are read, others skipped
                steps += 1
                if p + 4 > end:
                    raise BadOpt("option header cut short")
                code, length = _TYPE_CLASS.unpack_from(data, p)
                p += 4
                if p + length > end:
                    raise BadOpt("option runs past the OPT record")
                if code == ECS_OPTION:
                    if ecs is not None:
                        raise EcsError("two Client Subnet options")
                    ecs = ClientSubnet.from_wire(data[p:p + length])
                elif code == COOKIE_OPTION:
                    if cookie is not None:
                        raise BadCookie("two COOKIE options")
                    if length != 8 and not 16 <= length <= 40:     # RFC 7873 §5.2.2
                        raise BadCookie(f"{length} bytes")
                    cookie = data[p:p + length]
                elif code == NSID_OPTION:
                    nsid = True
                p += length
            if ecs is not None or cookie is not None or nsid:
                edns = Edns(udp_size, version, do, ecs, cookie, nsid)
    except WireError as exc:
        exc.msg_id, exc.flags, exc.question, exc.edns = msg_id, flags, question, edns
        raise
    finally:
        if stats is not None:
            stats.steps += steps
    return Query(msg_id, flags, question, edns)


class MessageWriter:
    """Builds one message: header, question, records (names compressed), OPT last."""

    __slots__ = ("buf", "counts", "names")

    def __init__(self) -> None:
        self.buf = bytearray(12)
        self.names: dict[str, int] = {}
        self.counts = [0, 0, 0, 0]

    def __repr__(self) -> str:
        return f"<MessageWriter {len(self.buf)} bytes, counts={self.counts}>"

    def name(self, name: str) -> None:
        buf = self.buf
        names = self.names
        while name:
            pointer = names.get(name)
            if pointer is not None:
                buf += (0xC000 | pointer).to_bytes(2, "big")
                return
            if len(buf) < 0x4000:
                names[name] = len(buf)
            label, _, name = name.partition(".")
            raw = label.encode("ascii")
            buf.append(len(raw))
            buf += raw
        buf.append(0)

    def question(self, question: Question) -> None:
        """The question with the query's original case; its suffixes become pointer targets."""
        buf = self.buf
        labels = question.labels
        escaped = "\\" in question.name
        name = question.name
        for i, label in enumerate(labels):
            if len(buf) < 0x4000:
                self.names.setdefault(name, len(buf))
            buf.append(len(label))
            buf += label
            name = name_text(labels[i + 1:]) if escaped else name.partition(".")[2]
        buf.append(0)
        buf += _TYPE_CLASS.pack(question.qtype, question.qclass)
        self.counts[0] = 1

    def record(self, section: int, owner: str, rtype: int, ttl: int, rdata: Rdata, rclass: int = 1) -> None:
        """Append one record to `section` (1 answer, 2 authority, 3 additional)."""
        self.name(owner)
        buf = self.buf
        buf += _RR_FIXED.pack(rtype, rclass, ttl, 0)
        start = len(buf)
        for part in rdata:
            if isinstance(part, str):
                self.name(part)
            else:
                buf += part
        struct.pack_into("!H", buf, start - 2, len(buf) - start)
        self.counts[section] += 1

    def opt(self, udp_size: int, ext_rcode: int, do: bool, options: bytes) -> None:
        self.buf += b"\x00" + _RR_FIXED.pack(OPT, udp_size, (ext_rcode << 24) | (0x8000 if do else 0),
                                             len(options)) + options
        self.counts[3] += 1

    def snapshot(self) -> tuple[bytes, dict[str, int], list[int]]:
        """The writer's state, to start other messages from (e.g. after the same question)."""
        return bytes(self.buf), dict(self.names), list(self.counts)

    @classmethod
    def from_snapshot(cls, snapshot: tuple[bytes, dict[str, int], list[int]]) -> MessageWriter:
        writer = cls()
        buf, names, counts = snapshot
        writer.buf = bytearray(buf)
        writer.names = dict(names)
        writer.counts = list(counts)
        return writer

    def mark(self) -> tuple[int, list[int]]:
        return len(self.buf), list(self.counts)

    def rollback(self, mark: tuple[int, list[int]]) -> None:
        size, counts = mark
        del self.buf[size:]
        self.counts = list(counts)
        self.names = {k: v for k, v in self.names.items() if v < size}

    def finish(self, msg_id: int, flags: int) -> bytes:
        HEADER.pack_into(self.buf, 0, msg_id, flags, *self.counts)
        return bytes(self.buf)
