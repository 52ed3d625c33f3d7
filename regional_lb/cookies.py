"""The sticky-session cookie codec and Set-Cookie text  [pure].

A sticky cookie value is opaque and signed; the server enforces its lifetime itself:

    value   = base64url(payload || mac)                     44 characters, no padding
    payload = version(1) || token(8) || issued(u32) || last_seen(u32)
    token   = HMAC-SHA256(secret, "backend:" || backend id)[:8]   -- does not reveal the address
    mac     = HMAC-SHA256(secret, "cookie:" || payload)[:16]

New cookies are signed with the first configured secret; every secret verifies (key
rotation: add the new secret first, drop the old one after max_life). Times are whole
seconds of the `now` the proxy passes -- it must be wall-clock time (LoadBalancer's `wall`,
never its monotonic `clock`) so cookies survive restarts and are shared by replicas; a wall
clock step therefore moves cookie expiry, and nothing else. `decode` never raises: any string is either a
`SessionCookie` or None.

Per request this is cheap (it runs on every sticky request): the HMAC key schedule is done
once per secret (`_KeyedSha256`), backend tokens are cached both ways (id -> token,
token -> id for `lookup`), and values that verified are remembered (bounded), so a
returning client's cookie costs dict lookups, not MACs. `SetCookieTemplate` writes the
fixed attribute text once.

`format_set_cookie` / `parse_set_cookie` write and read Set-Cookie header values
(RFC 6265); the parser is lenient and never raises, for sticky_learn.
"""

from __future__ import annotations

import base64
import binascii
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
_VERIFIED_MAX = 32768


@dataclass(frozen=True, slots=True)
class SessionCookie:
    token: bytes
    issued: int
    last_seen: int
    secret_index: int           # which configured secret verified it (0 = the current one)


def whole_seconds(now: float) -> int:
    """A time as a cookie carries it: whole seconds, clamped to 0 .. MAX_TIME."""
    return int(min(max(now, 0.0), MAX_TIME))


_URLSAFE = bytes.maketrans(b"+/", b"-_")


class _KeyedSha256:
    """HMAC-SHA256 (RFC 2104) under one key with a fixed message prefix, the key schedule done
    once: the inner and outer SHA-256 states are kept and copied per message. Same bytes as
    `hmac.new(key, prefix + message, "sha256").digest()`, in about half the time of copying
    an `hmac.HMAC` (whose copy and digest go through Python)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes) -> None:
        if len(key) > 64:                       # SHA-256's block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class CookieCodec:
    """Signs and verifies sticky-session cookie values with a list of secrets."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        if any(not isinstance(s, str) or not s.strip() for s in secrets):
            raise ValueError("secrets must be non-empty strings")
        self._keys = [s.encode("utf-8") for s in secrets]
        # HMAC keyed once per secret, with the domain prefix already fed in (the key schedule
        # -- two SHA-256 blocks -- is not redone per cookie).
        self._cookie_macs = [_KeyedSha256(k, b"cookie:") for k in self._keys]
        self._backend_macs = [_KeyedSha256(k, b"backend:") for k in self._keys]
        self._tokens: dict[tuple[int, str], bytes] = {}
        self._by_token: list[dict[bytes, str]] = [{} for _ in self._keys]   # token -> backend id
        # value -> its verified SessionCookie: a returning client sends the same value until the
        # cookie is refreshed, and verifying is a pure function of (value, secrets). Only values
        # that verified are kept, so garbage cannot fill it with anything but recomputation.
        self._verified: dict[str, SessionCookie] = {}

    def token(self, backend_id: str, secret_index: int = 0) -> bytes:
        """The 8-byte backend token under one secret (cached)."""
        cached = self._tokens.get((secret_index, backend_id))
        if cached is None:
            if len(self._tokens) > 65536:
                self._tokens.clear()
                for by_token in self._by_token:
                    by_token.clear()
            cached = self._backend_macs[secret_index].digest(backend_id.encode("utf-8", "surrogatepass"))[:8]
            self._tokens[(secret_index, backend_id)] = cached
            self._by_token[secret_index].setdefault(cached, backend_id)
        return cached

    def _mac(self, secret_index: int, payload: bytes) -> bytes:
        return self._cookie_macs[secret_index].digest(payload)[:_MAC_LEN]

    def lookup(self, cookie: SessionCookie) -> str | None:
        """The backend id whose token (under the secret that verified `cookie`) the cookie carries,
        among the ids this codec has computed a token for; None when it has seen no such id.
        One dict lookup: `resolve` is the exhaustive version."""
        return self._by_token[cookie.secret_index].get(cookie.token)

    def encode(self, backend_id: str, *, issued: float, last_seen: float) -> str:
        token = self._tokens.get((0, backend_id)) or self.token(backend_id)
        issued_s = int(issued) if 0.0 <= issued <= MAX_TIME else whole_seconds(issued)
        seen_s = int(last_seen) if 0.0 <= last_seen <= MAX_TIME else whole_seconds(last_seen)
        payload = _PAYLOAD.pack(VERSION, token, issued_s, seen_s)
        raw = payload + self._cookie_macs[0].digest(payload)[:_MAC_LEN]
        # 33 bytes -> exactly 44 base64 characters: no padding to strip
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode("ascii")

    def decode(self, value: object) -> SessionCookie | None:
        """The verified cookie, or None for anything malformed, tampered or from an unknown secret."""
        if not isinstance(value, str):
            return None
        cached = self._verified.get(value)
        if cached is not None:
            return cached
        if not _VALUE_RE.fullmatch(value):
            return None
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size:]
        version, token, issued, last_seen = _PAYLOAD.unpack(payload)
        if version != VERSION:
            return None
        for index in range(len(self._keys)):
            if hmac.compare_digest(mac, self._mac(index, payload)):
                cookie = SessionCookie(token, issued, last_seen, index)
                if len(self._verified) >= _VERIFIED_MAX:
                    self._verified.clear()      # bounded: a flood of valid cookies only costs MACs again
                self._verified[value] = cookie
                return cookie
        return None

    def resolve(self, cookie: SessionCookie, backend_ids: Iterable[str]) -> str | None:
        """The backend id among `backend_ids` whose token the cookie carries."""
        for backend_id in backend_ids:
            if hmac.compare_digest(self.token(backend_id, cookie.secret_index), cookie.token):
                return backend_id
        return None


def valid_cookie_name(name: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(name))


class SetCookieTemplate:
    """`format_set_cookie` with everything but the value and Max-Age written once:
    `template.render(value, max_age, secure)` == `format_set_cookie(name, value, max_age=max_age,
    secure=secure, ...)` for the name and other attributes given here."""

    __slots__ = ("_head", "_mid", "_tails")

    def __init__(self, name: str, *, path: str = "/", httponly: bool = True,
                 samesite: str | None = "Lax", domain: str | None = None) -> None:
        self._head = f"{name}="
        self._mid = f"; Path={path}" + (f"; Domain={domain}" if domain else "") + "; Max-Age="
        flags = "; HttpOnly" if httponly else ""
        same = f"; SameSite={samesite}" if samesite else ""
        self._tails = (flags + same, flags + "; Secure" + same)

    def render(self, value: str, max_age: int, secure: bool) -> str:
        return f"{self._head}{value}{self._mid}{max(0, int(max_age))}{self._tails[secure]}"


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
