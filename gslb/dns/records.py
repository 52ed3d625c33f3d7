"""Record types, names and rdata as the DNS core stores them  [pure].

Names are kept as text: lower-case, absolute, without the trailing dot
("www.example.test"; the root is ""). Rdata is stored ready to pack: a tuple of
parts, each either `bytes` (copied as is) or a `str` name (written by the
message writer, with compression where RFC 3597 allows it: NS, CNAME, SOA, PTR,
MX). Names that must not be compressed (SRV targets) are stored as bytes.

Text parsers here (`parse_rdata`) read the zone config's values ("10 mail",
'0 issue "letsencrypt.org"') and raise `RdataError` with a reason; the zone
loader turns that into a ConfigError with the key path.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

A = 1
NS = 2
CNAME = 5
SOA = 6
PTR = 12
HINFO = 13
MX = 15
TXT = 16
AAAA = 28
SRV = 33
OPT = 41
DS = 43
IXFR = 251
AXFR = 252
ANY = 255
CAA = 257

TYPE_NAMES: dict[int, str] = {
    A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", HINFO: "HINFO", MX: "MX",
    TXT: "TXT", AAAA: "AAAA", SRV: "SRV", OPT: "OPT", DS: "DS", IXFR: "IXFR", AXFR: "AXFR",
    ANY: "ANY", CAA: "CAA",
}
TYPE_CODES: dict[str, int] = {name: code for code, name in TYPE_NAMES.items()}

# Types that may appear under `records:` in the config.
CONFIG_TYPES: tuple[str, ...] = ("A", "AAAA", "CNAME", "NS", "MX", "TXT", "CAA", "SRV", "PTR")

RdataPart = bytes | str
Rdata = tuple[RdataPart, ...]


def type_name(code: int) -> str:
    """"A", "AAAA", ... or "TYPE65280" for types without a mnemonic (RFC 3597)."""
    return TYPE_NAMES.get(code) or f"TYPE{code}"


@dataclass(frozen=True, slots=True)
class RRset:
    """The records of one type at one name (the owner is the key it is stored under)."""

    rtype: int
    ttl: int
    rdatas: tuple[Rdata, ...]

    def __repr__(self) -> str:
        return f"<RRset {type_name(self.rtype)} ttl={self.ttl} x{len(self.rdatas)}>"

    def names(self) -> tuple[str, ...]:
        """The names in the rdata (NS / CNAME / MX targets): used for glue and chains."""
        return tuple(part for rdata in self.rdatas for part in rdata if isinstance(part, str))


class RdataError(ValueError):
    """A record value in the config is not valid for its type."""


# -- names --------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")


def check_name(name: str, *, wildcard: bool = False) -> str | None:
    """A reason why `name` (lower-case, no trailing dot) is not a usable DNS name, or None."""
    if name == "":
        return None
    labels = name.split(".")
    if len(name) + 2 > 255:
        return f"name is longer than 253 characters: {name!r}"
    for i, label in enumerate(labels):
        if label == "*" and wildcard and i == 0:
            continue
        if label == "":
            return f"empty label in {name!r}"
        if len(label) > 63:
            return f"label longer than 63 characters in {name!r}"
        if not _LABEL.match(label):
            if "*" in label:
                return f"'*' is only allowed as the whole leftmost label (a wildcard): {name!r}"
            return f"invalid label {label!r} in {name!r} (letters, digits, '-' and '_' only)"
    return None


def in_zone(name: str, origin: str) -> bool:
    """`name` is `origin` or below it."""
    return name == origin or origin == "" or name.endswith("." + origin)


def absolute_name(text: str, origin: str, *, wildcard: bool = False) -> str:
    """Config text -> absolute name: "@" is the origin, "x." is absolute, "x" is relative.

    Raises RdataError. A relative name that already ends with the origin
    ("mail.example.test" in zone example.test) is refused: it would become
    "mail.example.test.example.test", which is never what was meant.
    """
    text = text.strip()
    if not text:
        raise RdataError("empty name")
    if text == "@":
        return origin
    if text.endswith("."):
        name = text[:-1].lower()
    else:
        lowered = text.lower()
        if origin and (lowered == origin or lowered.endswith("." + origin)):
            raise RdataError(f"{text!r} is relative, so it means {lowered}.{origin}; "
                             f"write {text + '.'!r} (absolute) or drop the zone suffix")
        name = f"{lowered}.{origin}" if origin else lowered
    if text == ".":
        name = ""
    reason = check_name(name, wildcard=wildcard)
    if reason:
        raise RdataError(reason)
    return name


def name_to_wire(name: str) -> bytes:
    """Uncompressed wire form of a validated text name."""
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


# -- rdata from config text ---------------------------------------------------------

def _u16(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RdataError(f"{what} must be an integer 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise RdataError(f"{what} must be an integer 0..65535, got {value}")
    return value


def _character_strings(text: str) -> bytes:
    """One TXT value: split in 255-byte character-strings (how long DKIM keys are written)."""
    raw = text.encode("utf-8")
    if len(raw) > 65535 - 256:
        raise RdataError("TXT value too long")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes([len(c)]) + c for c in chunks)


_CAA = re.compile(r'^\s*(\d+)\s+([A-Za-z0-9]+)\s+(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')


def parse_rdata(rtype: int, text: str, origin: str) -> Rdata:
    """Parse one config value of type `rtype`; relative names are relative to `origin`."""
    if rtype == A:
        try:
            return (ipaddress.IPv4Address(text.strip()).packed,)
        except ValueError:
            raise RdataError(f"not an IPv4 address: {text!r}") from None
    if rtype == AAAA:
        try:
            return (ipaddress.IPv6Address(text.strip()).packed,)
        except ValueError:
            raise RdataError(f"not an IPv6 address: {text!r}") from None
    if rtype in (CNAME, NS, PTR):
        return (absolute_name(text, origin),)
    if rtype == MX:
        parts = text.split()
        if len(parts) != 2:
            raise RdataError(f"MX is 'PREFERENCE EXCHANGE', e.g. '10 mail', got {text!r}")
        return (struct.pack("!H", _u16(parts[0], "MX preference")), absolute_name(parts[1], origin))
    if rtype == SRV:
        parts = text.split()
        if len(parts) != 4:
            raise RdataError(f"SRV is 'PRIORITY WEIGHT PORT TARGET', got {text!r}")
        numbers = struct.pack("!HHH", _u16(parts[0], "SRV priority"), _u16(parts[1], "SRV weight"),
                              _u16(parts[2], "SRV port"))
        return (numbers + name_to_wire(absolute_name(parts[3], origin)),)
    if rtype == TXT:
        return (_character_strings(text),)
    if rtype == CAA:
        match = _CAA.match(text)
        if not match:
            raise RdataError(f"CAA is 'FLAGS TAG VALUE', e.g. '0 issue \"letsencrypt.org\"', got {text!r}")
        flags = int(match.group(1))
        if flags > 255:
            raise RdataError(f"CAA flags must be 0..255, got {flags}")
        tag = match.group(2).lower().encode("ascii")
        if len(tag) > 15:
            raise RdataError(f"CAA tag longer than 15 characters: {match.group(2)!r}")
        value = match.group(3) if match.group(3) is not None else match.group(4)
        value = re.sub(r"\\(.)", r"\1", value)
        return (bytes([flags, len(tag)]) + tag + value.encode("utf-8"),)
    raise RdataError(f"unsupported record type {type_name(rtype)}")


def soa_rdata(mname: str, rname: str, serial: int, refresh: int, retry: int, expire: int,
              minimum: int) -> Rdata:
    return (mname, rname, struct.pack("!IIIII", serial, refresh, retry, expire, minimum))
