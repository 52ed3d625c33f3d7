"""The fast path's strict parsers and their agreement with the generic (aiohttp) path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from regional_lb.headers import ForwardingSettings, TrustedProxies, forwarding_block, upstream_headers
from regional_lb.proxy.fast import parse_head
from regional_lb.proxy.upstream import serialize_head

SETTINGS = ForwardingSettings(TrustedProxies(["10.0.0.0/8"]))
NAMES = ["Host", "Accept", "User-Agent", "Cookie", "X-Custom", "Keep-Alive", "TE", "Trailer",
         "Proxy-Connection", "X-Real-IP", "Connection", "Via", "X-Forwarded-For", "Forwarded", "x-lower"]
VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


def parse(head: bytes) -> tuple | None:  # type: ignore[type-arg]
    return parse_head(head, max_line=8190, max_headers=100)


def test_a_plain_get_is_taken_with_its_lines_as_received() -> None:
    got = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nAccept:  */* \r\nKeep-Alive: 5\r\nConnection: close")
    assert got is not None
    method, target, headers, close, block, has_host = got
    assert (method, target, close, has_host) == ("GET", "/a?b=1", True, True)
    assert headers["accept"] == "*/*"
    assert block == b"Host: x.test\r\nAccept:  */* \r\n"       # hop-by-hop left out


def test_anything_unusual_is_left_to_aiohttp() -> None:
    for head in (b"POST /a HTTP/1.1\r\nContent-Length: 3",
                 b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked",
                 b"PUT /a HTTP/1.1\r\nExpect: 100-continue",
                 b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
                 b"GET /a HTTP/1.0\r\nHost: x",
                 b"GET http://x/a HTTP/1.1\r\nHost: x",
                 b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y",
                 b"GET /a HTTP/1.1\r\n folded: value",
                 b"GET /a HTTP/1.1\r\nBad Name: v",
                 b"GET /a HTTP/1.1\r\nX: a\x00b",
                 b"GET /a HTTP/1.1\r\nX: a\nY: b",
                 b"GET  /a HTTP/1.1",
                 b"\r\nGET /a HTTP/1.1"):
        assert parse(head) is None, head
    assert parse_head(b"GET /a HTTP/1.1\r\nX: " + b"v" * 100, max_line=50, max_headers=100) is None
    assert parse_head(b"GET /a HTTP/1.1\r\nX: 1\r\nY: 2", max_line=8190, max_headers=1) is None


@given(st.binary(max_size=300))
def test_any_bytes_give_a_parse_or_none_never_an_error(head: bytes) -> None:
    parse(head)


@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8),
       st.sampled_from(["127.0.0.1", "10.1.2.3", "2001:db8::1"]), st.sampled_from(["http", "https"]))
def test_the_fast_upstream_head_is_what_upstream_headers_would_send(
        pairs: list[tuple[str, str]], peer: str, scheme: str) -> None:
    head = b"GET /p HTTP/1.1" + b"".join(f"\r\n{k}: {v}".encode() for k, v in pairs)
    got = parse(head)
    if got is None:
        return
    _, _, headers, _, block, _ = got
    out, client = upstream_headers(headers, peer=peer, scheme=scheme, settings=SETTINGS)
    generic = serialize_head("GET", "/p", list(out.items()))
    if block is None:               # forwarding headers or Via: the generic path is used
        assert any(k.lower() in ("via", "x-forwarded-for", "forwarded") for k, _ in pairs) or \
            any(k == "Connection" for k, _ in pairs)
        return
    assert client == peer
    fast = b"GET /p HTTP/1.1\r\n" + block + forwarding_block(peer, scheme, headers.get("Host", ""), SETTINGS) + b"\r\n"

    def lines(raw: bytes) -> list[tuple[str, str]]:
        return [(k.lower(), v.strip()) for k, _, v in
                (line.partition(":") for line in raw.decode().split("\r\n")[1:] if line)]
    assert lines(fast) == lines(generic)


def test_cimultidict_headers_match_what_policies_read() -> None:
    got = parse(b"GET / HTTP/1.1\r\nhost: a\r\ncookie: x=1\r\ncookie: y=2")
    assert got is not None
    headers: CIMultiDict[str] = got[2]
    assert headers["Host"] == "a"
    assert headers.getall("Cookie") == ["x=1", "y=2"]
