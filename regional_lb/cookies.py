"""The sticky-session cookie codec and Set-Cookie text  [pure].

A sticky cookie value is opaque and signed; the server enforces its lifetime itself:

    value   = base64url(payload || mac)                     44 characters, no padding
    payload = version(1) || token(8) || issued(u32) || last_seen(u32)
    token   = HMAC-SHA256(secret, "backend:" || backend id)[:8]   -- does not reveal the address
    mac     = HMAC-SHA256(secret, "cookie:" || payload)[:16]

New cookies are signed with the first configured secret; every secret verifies (key
rotation: add the new secret first, drop the old one after max_life). Times are whole
seconds of the `now` the proxy passes -- it must be wall-clock time so cookies survive
restarts and are shared by replicas. `decode` never raises: any string is either a
`SessionCookie` or None.

`format_set_cookie` / `parse_set_cookie` write and read Set-Cookie header values
(RFC 6265); the parser is lenient and never raises, for sticky_learn.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

VERSION = 1
_PAYLOAD = struct.Struct(">B8sII")
_MAC_LEN = 16
_VALUE_RE = re.compile(r"[A-Za-z0-9_-]{44}")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")     # RFC 7230 token (cookie names)
MAX_TIME = 2**32 - 1


@dataclass(frozen=True, slots=True)
class SessionCookie:
    token: bytes
    issued: int
    last_seen: int
    secret_index: int           # which configured secret verified it (0 = the current one)


def _seconds(now: float) -> int:
    return int(min(max(now, 0.0), MAX_TIME))


class CookieCodec:
    """Signs and verifies sticky-session cookie values with a list of secrets."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        if any(not isinstance(s, str) or not s.strip() for s in secrets):
            raise ValueError("secrets must be non-empty strings")
        self._keys = [s.encode("utf-8") for s in secrets]
        self._tokens: dict[tuple[int, str], bytes] = {}

    def token(self, backend_id: str, secret_index: int = 0) -> bytes:
        """The 8-byte backend token under one secret (cached)."""
        cached = self._tokens.get((secret_index, backend_id))
        if cached is None:
            if len(self._tokens) > 65536:
                self._tokens.clear()
            key = self._keys[secret_index]
            cached = hmac.new(key, b"backend:" + backend_id.encode("utf-8", "surrogatepass"),
                              hashlib.sha256).digest()[:8]
            self._tokens[(secret_index, backend_id)] = cached
        return cached

    def _mac(self, secret_index: int, payload: bytes) -> bytes:
        return hmac.new(self._keys[secret_index], b"cookie:" + payload, hashlib.sha256).digest()[:_MAC_LEN]

    def encode(self, backend_id: str, *, issued: float, last_seen: float) -> str:
        payload = _PAYLOAD.pack(VERSION, self.token(backend_id), _seconds(issued), _seconds(last_seen))
        raw = payload + self._mac(0, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, value: object) -> SessionCookie | None:
        """The verified cookie, or None for anything malformed, tampered or from an unknown secret."""
        if not isinstance(value, str) or not _VALUE_RE.fullmatch(value):
            return None
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size:]
        version, token, issued, last_seen = _PAYLOAD.unpack(payload)
        if version != VERSION:
            return None
        for index in range(len(self._keys)):
            if hmac.compare_digest(mac, self._mac(index, payload)):
                return SessionCookie(token, issued, last_seen, index)
        return None

    def resolve(self, cookie: SessionCookie, backend_ids: Iterable[str]) -> str | None:
        """The backend id among `backend_ids` whose token the cookie carries."""
        for backend_id in backend_ids:
            if hmac.compare_digest(self.token(backend_id, cookie.secret_index), cookie.token):
                return backend_id
        return None


def valid_cookie_name(name: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(name))


def format_set_cookie(name: str, value: str, *, path: str = "/", max_age: int | None = None,
                      secure: bool = False, httponly: bool = True, samesite: str | None = "Lax",
                      domain: str | None = None) -> str:
    parts = [f"{name}={value}", f"Path={path}"]
    if domain:
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={max(0, int(max_age))}")
    if httponly:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    if samesite:
        parts.append(f"SameSite={samesite}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]          # lower-case attribute name -> value ("" for flags)

    @property
    def deletes(self) -> bool:
        """The server is removing the cookie (empty value or Max-Age <= 0)."""
        max_age = self.attributes.get("max-age", "").strip()
        if max_age.lstrip("-").isdigit() and int(max_age) <= 0:
            return True
        return self.value == ""


def parse_set_cookie(header: object) -> SetCookie | None:
    """One Set-Cookie header value -> SetCookie, or None if it has no name=value. Never raises."""
    if not isinstance(header, str):
        return None
    first, _, rest = header.partition(";")
    name, eq, value = first.partition("=")
    name = name.strip()
    if not eq or not name:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    attributes: dict[str, str] = {}
    for item in rest.split(";"):
        key, _, val = item.partition("=")
        key = key.strip().lower()
        if key:
            attributes[key] = val.strip()
    return SetCookie(name, value, attributes)
