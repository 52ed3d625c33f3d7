"""DNS Cookies: server cookies as RFC 9018 builds them  [pure].

    cookies = ServerCookies([secret_now, secret_before])   # 16-byte secrets: [0] signs, all verify
    server = cookies.make(client_cookie, client, now)       # 16 bytes: version 1, reserved, time, hash
    cookies.valid(option_data, client, now)                 # the COOKIE option data of a query

A server cookie (RFC 9018 §4) is 16 bytes: version (1), three reserved bytes
(zero when we make one; verified as received), a 32-bit Unix time, and
SipHash-2-4 keyed with a 16-byte secret over client cookie | version |
reserved | time | client address (4 or 16 bytes), the 64-bit result written
little-endian as the reference implementation does (RFC 9018 Appendix A holds
the test vectors). Every server given the same secrets makes and accepts the
same cookies, so several servers behind one name or anycast address agree.
Rotation (RFC 9018 §4.4): put the new secret second, then first once every
server has it, then drop the old one.

A cookie is *valid* when it holds a version-1 server cookie whose hash
matches with one of the secrets and whose time is at most one hour old and at
most five minutes ahead (RFC 9018 §4.3, serial arithmetic modulo 2**32).
`now` is Unix time in seconds (wall clock): cookies cross servers.

The responder (responder.py) echoes the client cookie with a fresh server
cookie in every reply to a query that carried one, and answers BADCOOKIE only
when configured to require cookies (`dns.cookies.require`).

For response rate limiting: a query with a valid server cookie came from its
claimed address (it echoed what we sent there). Call
`Responder.cookie_valid(data, client, now)` (it parses the query and checks its
cookie with the responder's wall clock), or `query_cookie_valid(query, cookies,
client, now)` when the query is already parsed. Both cost a parse and a
SipHash: call them only for a query that is about to be dropped or slipped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from siphashc import siphash

if TYPE_CHECKING:
    from gslb.dns.wire import Query

COOKIE_OPTION = 10          # EDNS option code (RFC 7873 §4)
CLIENT_COOKIE = 8           # client cookie length
SERVER_COOKIE = 16          # RFC 9018 server cookie length
SECRET_SIZE = 16            # SipHash-2-4 key
MAX_AGE = 3600              # a server cookie older than this is not accepted (RFC 9018 §4.3)
MAX_AHEAD = 300             # nor one this far in the future (clock skew between servers)
VERSION = 1

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HEAD = struct.Struct("!4sI")     # version + reserved, timestamp
_STAMP = struct.Struct("!I")      # the timestamp (network order) ...
_MAC = struct.Struct("<Q")        # ... and the hash, as SipHash's 64-bit result written little-endian


class ServerCookies:
    """Makes and checks RFC 9018 server cookies with a list of secrets ([0] signs, all verify)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one cookie secret is needed")
        for i, secret in enumerate(secrets):
            if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
                raise ValueError(f"cookie secret {i} must be {SECRET_SIZE} bytes")
        self._secrets = tuple(secrets)

    def __repr__(self) -> str:
        return f"<ServerCookies {len(self._secrets)} secret(s)>"

    def make(self, client_cookie: bytes, client: IPAddress, now: float) -> bytes:
        """A fresh 16-byte server cookie for `client_cookie` from `client` at Unix time `now`."""
        head = _HEAD.pack(b"\x01\x00\x00\x00", int(now) & 0xFFFFFFFF)
        digest = siphash(self._secrets[0], client_cookie + head + client.packed)
        return head + digest.to_bytes(8, "little")

    def valid(self, cookie: bytes, client: IPAddress, now: float) -> bool:
        """True when `cookie` (client + server cookie, as the COOKIE option holds them) carries a
        server cookie we made for this client cookie and address, within the time window."""
        if len(cookie) != CLIENT_COOKIE + SERVER_COOKIE or cookie[8] != VERSION:
            return False
        (stamp,) = _STAMP.unpack_from(cookie, 12)
        (mac,) = _MAC.unpack_from(cookie, 16)
        now32 = int(now) & 0xFFFFFFFF
        if (now32 - stamp) & 0xFFFFFFFF > MAX_AGE and (stamp - now32) & 0xFFFFFFFF > MAX_AHEAD:
            return False
        signed = cookie[:16] + client.packed
        for secret in self._secrets:       # noqa: SIM110 - a plain loop: no generator per query
            if siphash(secret, signed) == mac:
                return True
        return False


def client_cookie(cookie: bytes | None) -> bytes | None:
    """The client cookie part of a COOKIE option's data (None when there is none)."""
    return cookie[:CLIENT_COOKIE] if cookie is not None and len(cookie) >= CLIENT_COOKIE else None


def query_cookie_valid(query: Query, cookies: ServerCookies | None, client: IPAddress, now: float) -> bool:
    """True when a parsed query carries a valid server cookie for `client`."""
    cookie = query.edns.cookie if query.edns is not None else None
    return cookies is not None and cookie is not None and cookies.valid(cookie, client, now)


def parse_secrets(texts: Sequence[str]) -> tuple[bytes, ...]:
    """Hex strings (32 hex digits each) -> secrets; ValueError naming the bad one."""
    out = []
    for i, text in enumerate(texts):
        try:
            secret = bytes.fromhex(str(text))
        except ValueError:
            raise ValueError(f"item {i}: not hex") from None
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"item {i}: must be {SECRET_SIZE} bytes ({2 * SECRET_SIZE} hex digits), "
                             f"got {len(secret)}")
        out.append(secret)
    return tuple(out)
