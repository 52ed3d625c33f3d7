"""The DNS core's exception tree  [pure].

    DnsError
        WireError                 a query that cannot be answered normally
            Unanswerable          drop silently (no reply)
                ShortHeader       fewer than 12 bytes
                NotAQuery         QR=1: a response (never answer one)
            FormError             FORMERR (the question echoed when it was parsed)
                BadName           label too long, bad label type, name > 255, pointer not backwards,
                                  more than 128 labels and pointers
                ShortMessage      a record runs past the end, or the record counts cannot fit
                TrailingJunk      bytes after the last record
                BadQuestionCount  QDCOUNT != 1
                BadOpt            OPT not at the root, in the wrong section, or with bad options
                DuplicateOpt      two OPT records (RFC 6891 §6.1.1)
                BadCookie         a COOKIE option of a bad length, or two of them (RFC 7873 §5.2.2)
                EcsError          (gslb.dns.ecs) a malformed Client Subnet option
            NotImplementedOpcode  NOTIMP: an opcode other than QUERY
            BadVersion            BADVERS: EDNS version > 0

The message is the docstring; `detail` says more. The parser attaches what it
could read before the error (`msg_id`, `flags`, `question`, `edns`) so the
responder can still build an error response.
"""

from __future__ import annotations

from typing import Any


class DnsError(Exception):
    """DNS core error."""


class WireError(DnsError):
    """The query cannot be answered normally."""

    def __init__(self, detail: str = "") -> None:
        doc = (type(self).__doc__ or "").strip()
        super().__init__(f"{doc}: {detail}" if detail else doc)
        self.detail = detail
        self.msg_id = 0
        self.flags = 0
        self.question: Any = None   # wire.Question when it was parsed
        self.edns: Any = None       # wire.Edns (without options) when the OPT record was sound


class Unanswerable(WireError):
    """Not answerable: drop silently."""


class ShortHeader(Unanswerable):
    """Message shorter than a DNS header."""


class NotAQuery(Unanswerable):
    """Message is a response (QR=1)."""


class FormError(WireError):
    """Malformed query."""


class BadName(FormError):
    """Malformed name."""


class ShortMessage(FormError):
    """Record runs past the end of the message."""


class TrailingJunk(FormError):
    """Bytes after the last record."""


class BadQuestionCount(FormError):
    """Query must hold exactly one question."""


class BadOpt(FormError):
    """Malformed OPT record."""


class DuplicateOpt(FormError):
    """More than one OPT record."""


class BadCookie(FormError):
    """Malformed COOKIE option."""


class NotImplementedOpcode(WireError):
    """Opcode not implemented."""


class BadVersion(WireError):
    """EDNS version not supported."""
