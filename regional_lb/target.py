"""One way to read a request: target, Host, path, method and framing, checked and normalised  [pure].

Both server kinds (regional_lb/proxy/fast.py on httptools, regional_lb/proxy/server.py on
aiohttp) parse a request head with llhttp and then hand the pieces -- method, request-target,
version, header fields as latin-1 text -- to `read_request`, before routing. It returns a
`Request` whose `path` is what the route table matches and whose `target` and `headers` are
exactly what the backend receives, or raises `BadRequest` (its `status` is the answer; the
connection is closed after it). Nothing here does I/O.

    BadRequest (regional_lb/errors.py, a ProxyError)   400
        MethodNotAllowed                               405  CONNECT on a route that does not allow it
        NotImplementedCoding                           501  a transfer coding other than chunked
        VersionNotSupported                            505  not HTTP/1.0 or HTTP/1.1

Request-target (RFC 9112 §3.2)
    origin-form ``/path?query`` as is; absolute-form ``http(s)://authority/path?query`` becomes
    origin-form and its authority replaces the Host header (§3.2.2; userinfo -> 400, another
    scheme -> 400); asterisk-form ``*`` only for OPTIONS (routed as path ``*``: only a catch-all
    ``/`` route matches it); authority-form ``host:port`` only for CONNECT, which is routed by
    that authority with path ``/`` and refused with 405 unless the route sets ``allow_connect``
    (the caller decides, `Request.connect` tells it). A fragment (``#``) -> 400.

Host (RFC 9112 §3.2)
    HTTP/1.1 without Host, more than one Host field, an empty Host, or a value that is not
    ``uri-host[:port]`` (userinfo, a path, spaces, a port that is not 0-65535) -> 400. HTTP/1.0
    may omit Host (the RFC only requires it of HTTP/1.1): such a request matches only routes
    whose host is ``*``, and the backend gets the backend's own address as Host.

Path (RFC 3986 §6.2.2, §5.2.4), before routing, forwarded as routed
    percent-escapes of unreserved characters decoded (``%41`` -> ``A``, ``%2E`` -> ``.``), the
    hex of the others uppercased (``%c3`` -> ``%C3``; ``%25`` stays encoded, so a second pass
    changes nothing); ``//`` merged into ``/`` when `merge_slashes` (default on, as nginx);
    dot-segments removed -- a path that climbs above the root is clamped at ``/`` (as
    remove_dot_segments does). An encoded ``/`` or ``\\`` (``%2F``, ``%5C``) or a raw ``\\`` is
    refused with 400 (`escaped_slashes: reject`, the default: a backend that decodes them would
    see another path than the one routed) or kept undecoded (``keep``, like Envoy's
    KEEP_UNCHANGED). Encoded control bytes (``%00``-``%1F``, ``%7F``) are always 400, as are raw
    spaces, controls and non-ASCII. A malformed escape (``%4``, ``%zz``) -> 400. The query string
    is forwarded untouched.

Method (RFC 9110 §9.1)
    a token, case-sensitive, forwarded as received -- extension methods (``FOO``) and other
    spellings (``get`` is not ``GET``) too, as HAProxy and nginx forward them; anything else in
    the method's place -> 400. llhttp only reads the methods it knows (the IANA registry), so a
    request line whose method is not one of `PLAIN_METHODS` is given to llhttp with the stand-in
    ``GET`` in its place (`stand_in_method`; no request method changes llhttp's framing but
    CONNECT and HEAD, which are plain) and the original is put back on the parsed request. A
    method longer than `MAX_METHOD` (64) characters is not stood in for: llhttp refuses it (400).

Framing (RFC 9112 §6)
    Transfer-Encoding: empty, or not ending in ``chunked``, or ``chunked`` twice -> 400; other
    codings before it (``gzip, chunked``) -> 501; with Content-Length -> 400; in an HTTP/1.0
    request -> 400. Content-Length: digits only (no sign, no list, no inner space) and one field
    only -- even repeated identical values are refused, as llhttp refuses them on both paths.
    Header names must be tokens; values must not hold CR, LF, NUL or other controls (obs-fold
    and bare CR are refused by llhttp already). A repeated singleton field (Host, Content-Type,
    User-Agent, ETag, Server, ... -- aiohttp's list) -> 400, as aiohttp's parser refuses it.
    Names with ``_`` are dropped unless `underscores_in_headers` (nginx's default: off), so
    ``X_User`` cannot pose as ``X-User`` behind a CGI-style backend.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from regional_lb.errors import BadRequest, MethodNotAllowed, NotImplementedCoding, VersionNotSupported

ESCAPED_SLASH_ACTIONS = ("reject", "keep")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# a path that needs no rewriting: pchar except '%', no '//', no dot-segment
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+"
_HOST_PORT = re.compile(rf"(\[[0-9A-Fa-f:.]+\]|{_REG_NAME})(?::([0-9]*))?")
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)
_CTL_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MULTI_SLASH = re.compile(r"//+")
_CACHE_MAX = 4096
_VERSIONS = frozenset({(1, 0), (1, 1)})


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """A listener's request-reading choices (config: listen[].escaped_slashes, merge_slashes,
    underscores_in_headers)."""

    escaped_slashes: str = "reject"
    merge_slashes: bool = True
    underscores_in_headers: bool = False

    def __post_init__(self) -> None:
        if self.escaped_slashes not in ESCAPED_SLASH_ACTIONS:
            raise ValueError(f"escaped_slashes must be one of {ESCAPED_SLASH_ACTIONS}, not {self.escaped_slashes!r}")


DEFAULT_OPTIONS = RequestOptions()


class Request:
    """A request head as routed and forwarded (see the module docstring)."""

    __slots__ = ("chunked", "connect", "content_length", "has_host", "headers", "host", "method", "path",
                 "target", "version")

    def __init__(self, method: str, version: tuple[int, int], path: str, target: str, host: str,
                 headers: list[tuple[str, str]], has_host: bool, content_length: int | None, chunked: bool,
                 connect: bool) -> None:
        self.method = method
        self.version = version
        self.path = path                  # normalised, without query: what routing matches
        self.target = target              # what the backend's request line carries
        self.host = host                  # the Host value forwarded ("" when an HTTP/1.0 client sent none)
        self.headers = headers            # kept fields, in order, Host replaced for absolute-form
        self.has_host = has_host
        self.content_length = content_length
        self.chunked = chunked
        self.connect = connect            # CONNECT (authority-form): the route must allow it

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} host={self.host!r} {len(self.headers)} fields>"


_hosts: dict[str, bool] = {}


def valid_host(value: str) -> bool:
    """True if `value` is ``uri-host[:port]`` (RFC 3986 §3.2.2; port 0-65535, may be empty)."""
    hit = _hosts.get(value)
    if hit is not None:
        return hit
    ok = False
    m = _HOST_PORT.fullmatch(value)
    if m is not None:
        host, port = m.group(1), m.group(2)
        ok = not port or (len(port) <= 5 and int(port) <= 65535)
        if ok and host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                ok = False
    if len(_hosts) >= _CACHE_MAX:
        _hosts.clear()
    _hosts[value] = ok
    return ok


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` and ``..`` segments resolved, clamped at ``/``."""
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")                    # "/a/b/.." -> "/a/": the directory stays a directory
    return "/" + "/".join(out)


def normalize_path(path: str, options: RequestOptions = DEFAULT_OPTIONS) -> str:
    """The path (no query) as routed and forwarded, or BadRequest (see the module docstring)."""
    if _PLAIN_PATH.fullmatch(path) and "//" not in path and "/." not in path:
        return path
    if not path.startswith("/"):
        raise BadRequest("the path must start with '/'")
    keep = options.escaped_slashes == "keep"
    out: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == "%":
            hx = path[i + 1:i + 3]
            if len(hx) < 2 or hx[0] not in _HEX or hx[1] not in _HEX:
                raise BadRequest("malformed percent-escape in the path")
            code = int(hx, 16)
            ch = chr(code)
            if ch in _UNRESERVED:
                out.append(ch)
            elif code < 0x20 or code == 0x7F:
                raise BadRequest("an encoded control byte in the path")
            elif code in (0x2F, 0x5C) and not keep:
                raise BadRequest("an encoded '/' or '\\' in the path")
            else:
                out.append("%" + hx.upper())
            i += 3
            continue
        if c == "\\":
            if not keep:
                raise BadRequest("a '\\' in the path")
        elif c <= " " or c >= "\x7f":
            raise BadRequest("a space, control or non-ASCII character in the path")
        out.append(c)
        i += 1
    text = "".join(out)
    if options.merge_slashes and "//" in text:
        text = _MULTI_SLASH.sub("/", text)
    return remove_dot_segments(text) if "/." in text else text


_names: dict[str, str] = {}            # token -> its lower-case form ("" if not a token)
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})
# fields RFC 9110 defines as one value (not lists): a repeat is refused, as aiohttp's parser does
_SINGLETONS = frozenset({"host", "content-length", "content-location", "content-range", "content-type", "etag",
                         "max-forwards", "server", "transfer-encoding", "user-agent"})


# methods llhttp reads as they are and whose framing matters to it (CONNECT, HEAD) or that are
# common enough not to be worth a rewrite; any other token is read as GET (see "Method" above)
PLAIN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE",
                           b"CONNECT"})
STAND_IN = "GET"
_STAND_IN = STAND_IN.encode()
MAX_METHOD = 64
_METHOD = re.compile(rb"[\r\n]*([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64})(.)?", re.DOTALL)      # 64: MAX_METHOD


def stand_in_method(data: bytes) -> tuple[bytes, str | None] | None:
    """`data` from the first byte of a request (empty lines may come first): None when it ends
    inside the method (wait for more bytes); else (bytes for llhttp, the method it stands in for
    or None). Only a whole token followed by a space is replaced; anything else is left for
    llhttp to refuse."""
    m = _METHOD.match(data)
    if m is None:
        return data, None
    if m.group(2) is None:
        if m.end(1) == len(data):
            return None                     # the method may go on in the next read
        return data, None                   # only empty lines so far: nothing to replace
    method = m.group(1)
    if m.group(2) != b" " or method in PLAIN_METHODS:
        return data, None
    return data[:m.start(1)] + _STAND_IN + data[m.end(1):], method.decode("ascii")


def lower_name(name: str) -> str:
    """The lower-cased field name or method if it is a token (RFC 9110 §5.6.2), else ""."""
    low = _names.get(name)
    if low is None:
        low = name.lower() if _TOKEN.fullmatch(name) else ""
        if len(_names) >= _CACHE_MAX:
            _names.clear()
        _names[name] = low
    return low


def read_request(method: str, target: str, version: tuple[int, int], fields: Iterable[tuple[str, str]],
                 options: RequestOptions = DEFAULT_OPTIONS) -> Request:
    """Check and normalise one request head; `fields` are (name, value) pairs as received, values
    decoded as latin-1 (leading/trailing whitespace is removed here). Raises BadRequest."""
    if version not in _VERSIONS:
        raise VersionNotSupported()
    if not lower_name(method):
        raise BadRequest("the method is not a token")
    underscores = options.underscores_in_headers
    kept: list[tuple[str, str]] = []
    host_at = -1
    hosts = 0
    lengths: list[str] = []
    codings: list[str] = []
    seen: set[str] = set()
    for name, value in fields:
        low = _names.get(name) or lower_name(name)
        if not low:
            raise BadRequest("a header name is not a token")
        value = value.strip(" \t")
        if not value.isprintable() and _CTL_VALUE.search(value):      # HTAB and obs-text are allowed
            raise BadRequest("a control character in a header value")
        if "_" in name and not underscores:
            continue
        if low not in _SINGLETONS:
            pass
        elif low in seen:
            raise BadRequest(f"more than one {name} header")
        else:
            seen.add(low)
        if low not in _FRAMING:
            pass
        elif low == "host":
            hosts += 1
            host_at = len(kept)
        elif low == "content-length":
            lengths.append(value)
        elif low == "transfer-encoding":
            codings.extend(c.strip(" \t").lower() for c in value.split(","))
        kept.append((name, value))
    if hosts > 1:
        raise BadRequest("more than one Host header")
    host = kept[host_at][1] if hosts else ""
    if hosts:
        if not valid_host(host):
            raise BadRequest("the Host header is not host[:port]")
    elif version == (1, 1):
        raise BadRequest("an HTTP/1.1 request without Host")
    content_length = None
    if lengths:
        if len(lengths) > 1:
            raise BadRequest("more than one Content-Length")
        text = lengths[0]
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise BadRequest("Content-Length is not a number")
        content_length = int(text)
    chunked = False
    if codings:
        if lengths:
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if version == (1, 0):
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if "" in codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
            raise BadRequest("Transfer-Encoding must end in one 'chunked'")
        if len(codings) > 1:
            raise NotImplementedCoding()
        chunked = True

    if method == "CONNECT":
        m = _HOST_PORT.fullmatch(target)
        if m is None or not m.group(2) or not valid_host(target):
            raise BadRequest("CONNECT needs host:port")
        return Request(method, version, "/", target, target, kept, bool(hosts), content_length, chunked, True)
    if "#" in target:
        raise BadRequest("a fragment in the request-target")
    if target.startswith("/"):
        q = target.find("?")
        if q < 0:
            path = normalize_path(target, options)
            out_target = path
        else:
            path = normalize_path(target[:q], options)
            out_target = path + target[q:]
    elif target == "*":
        if method != "OPTIONS":
            raise BadRequest("'*' is for OPTIONS only")
        path = out_target = "*"
    else:
        m = _ABSOLUTE.fullmatch(target)
        if m is None:
            raise BadRequest("the request-target is not origin-form or absolute-form")
        scheme, authority, rest = m.groups()
        if scheme.lower() not in ("http", "https"):
            raise BadRequest("absolute-form for a scheme other than http/https")
        if "@" in authority or not valid_host(authority):
            raise BadRequest("the absolute-form authority is not host[:port]")
        if not rest or rest.startswith("?"):
            rest = "/" + rest
        q = rest.find("?")
        path = normalize_path(rest if q < 0 else rest[:q], options)
        out_target = path if q < 0 else path + rest[q:]
        if hosts:
            kept[host_at] = (kept[host_at][0], authority)
        else:                             # HTTP/1.0: the authority is the host
            kept.append(("Host", authority))
            hosts = 1
        host = authority
    return Request(method, version, path, out_target, host, kept, bool(hosts), content_length, chunked, False)


__all__ = [
    "DEFAULT_OPTIONS",
    "ESCAPED_SLASH_ACTIONS",
    "MAX_METHOD",
    "PLAIN_METHODS",
    "STAND_IN",
    "BadRequest",
    "MethodNotAllowed",
    "NotImplementedCoding",
    "Request",
    "RequestOptions",
    "VersionNotSupported",
    "lower_name",
    "normalize_path",
    "read_request",
    "remove_dot_segments",
    "stand_in_method",
    "valid_host",
]
