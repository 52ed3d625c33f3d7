"""Header rewriting between client, proxy and backend  [pure].

* Hop-by-hop headers (RFC 9110 7.6.1) are removed in both directions: ``Connection`` and
  every header it names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``.
* ``X-Forwarded-For`` / ``-Proto`` / ``-Host``, ``Forwarded`` (RFC 7239) and ``Via`` are
  added. Incoming forwarding headers are kept (and extended) only when the TCP peer is a
  trusted proxy; then the client address is the right-most address of the chain that is not
  itself trusted. From anyone else they are replaced.

Nothing here does I/O; `TrustedProxies` is built once from the config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from multidict import CIMultiDict, istr

HOP_BY_HOP: frozenset[str] = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})

_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})
# request headers after which `forwarding_block` is not what upstream_headers would add
NOT_PLAIN: frozenset[str] = _FORWARDING | {"via"}
DROP_ALWAYS: frozenset[str] = HOP_BY_HOP | frozenset({"x-real-ip"})
_DROP_ALWAYS = DROP_ALWAYS
_XFF = istr("X-Forwarded-For")
_XFP = istr("X-Forwarded-Proto")
_XFH = istr("X-Forwarded-Host")
_FWD = istr("Forwarded")
_VIA = istr("Via")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8192)
def parse_ip(text: str) -> IPAddress | None:
    """An address from an X-Forwarded-For / Forwarded element, or None if it is not one
    (``unknown``, an obfuscated ``_hidden`` identifier, garbage). Ports and brackets are removed."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:                          # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """The networks whose forwarding headers are believed."""

    __slots__ = ("_cache", "networks")

    def __init__(self, networks: Iterable[str | Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            n if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
            else ipaddress.ip_network(n, strict=False) for n in networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, addr: str | IPAddress | None) -> bool:
        if addr is None or not self.networks:
            return False
        if isinstance(addr, str):
            hit = self._cache.get(addr)
            if hit is None:
                hit = self._check(parse_ip(addr))
                if len(self._cache) < 65536:
                    self._cache[addr] = hit
            return hit
        return self._check(addr)

    def _check(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"<TrustedProxies {', '.join(map(str, self.networks)) or 'none'}>"


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """The lower-cased header names listed in Connection header values."""
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def split_xff(values: Iterable[str]) -> list[str]:
    """The addresses of X-Forwarded-For header values, left (origin) to right (nearest)."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def split_forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` values of RFC 7239 Forwarded header values, in order (elements without one
    count as "unknown", so positions stay honest)."""
    out: list[str] = []
    for value in values:
        for element in _split_quoted(value, ","):
            found = "unknown"
            for pair in _split_quoted(element, ";"):
                name, sep, val = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    found = val.strip().strip('"')
            out.append(found)
    return out


def _split_quoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def client_address(peer: str, chain: list[str], trusted: TrustedProxies) -> str:
    """The client address: the peer, unless the peer is trusted; then walk `chain` (left to right
    as received) from the right and return the first address that is not trusted (an unparsable
    element stops the walk: nothing left of it can be believed). If every hop is trusted, the
    left-most address."""
    if peer not in trusted:
        return peer
    client = peer
    for element in reversed(chain):
        ip = parse_ip(element)
        if ip is None:
            return client
        client = str(ip)
        if ip not in trusted:
            return client
    return client


def format_forwarded_node(addr: str) -> str:
    """A Forwarded ``for=`` value: IPv6 quoted in brackets (RFC 7239 section 6)."""
    return f'"[{addr}]"' if ":" in addr else addr


@lru_cache(maxsize=1024)
def _quote_token(value: str) -> str:
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@dataclass(frozen=True, slots=True)
class ForwardingSettings:
    """How the proxy names itself and whom it trusts. Built once from the config."""

    trusted: TrustedProxies
    via: str = "1.1 regional-lb"           # the Via value this proxy appends
    add_forwarded: bool = True             # add the RFC 7239 header too (X-Forwarded-* always)


def upstream_headers(headers: Mapping[str, str] | CIMultiDict[str], *, peer: str, scheme: str,
                     settings: ForwardingSettings) -> tuple[CIMultiDict[str], str]:
    """The headers to send to the backend and the client address.

    `headers` is the client's (case-insensitive multidict, items in order); `peer` is the
    TCP peer address; `scheme` "http" or "https" as the client reached us.
    """
    named = connection_tokens(headers.getall("Connection", ())) if "Connection" in headers else ()  # type: ignore[union-attr]
    trusted_peer = peer in settings.trusted
    out: CIMultiDict[str] = CIMultiDict()
    xff: list[str] = []
    fwd: list[str] = []
    xfp = xfh = None
    for key, value in headers.items():
        low = key.lower()
        if low in _DROP_ALWAYS or low in named:
            continue
        if low in _FORWARDING:
            if trusted_peer:
                if low == "x-forwarded-for":
                    xff.append(value)
                elif low == "forwarded":
                    fwd.append(value)
                elif low == "x-forwarded-proto":
                    xfp = value
                else:
                    xfh = value
            continue
        out.add(key, value)
    if trusted_peer:
        chain = split_forwarded_for(fwd) if fwd else split_xff(xff)
        client = client_address(peer, chain, settings.trusted)
    else:
        client = peer
    host = headers.get("Host", "")
    proto = xfp if xfp is not None else scheme
    out[_XFF] = f"{', '.join(xff)}, {peer}" if xff else peer
    out[_XFP] = proto
    out[_XFH] = xfh if xfh is not None else host
    if settings.add_forwarded:
        mine = f"for={format_forwarded_node(peer)};proto={scheme}"
        if host:
            mine += f";host={_quote_token(host)}"
        out[_FWD] = f"{', '.join(fwd)}, {mine}" if fwd else mine
    via = headers.get("Via")
    out[_VIA] = f"{via}, {settings.via}" if via else settings.via
    return out, client


def forwarding_block(peer: str, scheme: str, host: str, settings: ForwardingSettings) -> bytes:
    """The header lines `upstream_headers` adds for a request that brought no forwarding headers
    and no Via (the common case): X-Forwarded-*, Forwarded and Via, serialized, in its order.
    Then the client address is `peer` whoever the peer is."""
    lines = [f"X-Forwarded-For: {peer}\r\n", f"X-Forwarded-Proto: {scheme}\r\n", f"X-Forwarded-Host: {host}\r\n"]
    if settings.add_forwarded:
        mine = f"for={format_forwarded_node(peer)};proto={scheme}"
        if host:
            mine += f";host={_quote_token(host)}"
        lines.append(f"Forwarded: {mine}\r\n")
    lines.append(f"Via: {settings.via}\r\n")
    return "".join(lines).encode("latin-1", "replace")


def downstream_headers(headers: Mapping[str, str] | CIMultiDict[str], *, via: str | None
                       ) -> CIMultiDict[str]:
    """The backend's response headers without hop-by-hop ones, with our Via appended."""
    named = connection_tokens(headers.getall("Connection", ())) if "Connection" in headers else ()  # type: ignore[union-attr]
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        low = key.lower()
        if low in HOP_BY_HOP or low in named:
            continue
        out.add(key, value)
    if via:
        prior = out.get("Via")
        out[_VIA] = f"{prior}, {via}" if prior else via
    return out
