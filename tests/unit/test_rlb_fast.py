"""The fast path's request reader (llhttp via httptools) and its agreement with the generic (aiohttp) path."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from regional_lb.headers import ForwardingSettings, TrustedProxies, forwarding_block, upstream_headers
from regional_lb.proxy.fast import HAND_OFF, NEED_MORE, READY, REJECT, FastHead, HeadReader, parse_head
from regional_lb.proxy.upstream import serialize_head
from regional_lb.target import RequestOptions

SETTINGS = ForwardingSettings(TrustedProxies(["10.0.0.0/8"]))
NAMES = ["Host", "Accept", "User-Agent", "Cookie", "X-Custom", "Keep-Alive", "TE", "Trailer",
         "Proxy-Connection", "X-Real-IP", "Connection", "Via", "X-Forwarded-For", "Forwarded", "x-lower"]
VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


def parse(head: bytes, **kw: Any) -> FastHead | None:
    kind, got, used = parse_head(head + b"\r\n\r\n", **kw)
    if kind == READY:
        assert used == len(head) + 4
        return got  # type: ignore[no-any-return]
    return None


def test_a_plain_get_is_read_with_llhttp_and_normalised() -> None:
    got = parse(b"GET /a/../b?c=1 HTTP/1.1\r\nHost: x.test\r\nAccept:  */* \r\nKeep-Alive: 5\r\nConnection: close")
    assert got is not None
    norm = got.norm
    assert (norm.method, norm.path, norm.target, norm.host, got.close) == ("GET", "/b", "/b?c=1", "x.test", True)
    assert got.headers["accept"] == "*/*"
    assert got.block == b"Host: x.test\r\nAccept: */*\r\n"       # hop-by-hop left out, OWS trimmed


def test_absolute_form_is_served_here_with_the_authority_as_host() -> None:
    got = parse(b"GET http://other.test/api/x HTTP/1.1\r\nHost: x.test")
    assert got is not None
    assert (got.norm.target, got.norm.host, got.block) == ("/api/x", "other.test", b"Host: other.test\r\n")


def test_anything_unusual_is_left_to_aiohttp() -> None:
    for head in (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3",
                 b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0",
                 b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
                 b"PUT /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue",
                 b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket",
                 b"CONNECT x:443 HTTP/1.1\r\nHost: x:443",
                 b"GET /a HTTP/1.0\r\nHost: x",
                 b"GET /a HTTP/2.0\r\nHost: x",
                 b"GET /a HTTP/1.1\r\n folded: value",
                 b"GET /a HTTP/1.1\r\nX: a\r\n folded",
                 b"GET /a HTTP/1.1\r\nBad Name: v",
                 b"GET /a HTTP/1.1\r\nX: a\x00b",
                 b"get /a HTTP/1.1\r\nHost: x",
                 b"FOO /a HTTP/1.1\r\nHost: x",
                 b"GET /a b HTTP/1.1\r\nHost: x"):
        kind, _, _ = parse_head(head + b"\r\n\r\n")
        assert kind == HAND_OFF, head
    assert parse_head(b"GET /a HTTP/1.1\nHost: x\n")[0] == HAND_OFF        # bare LF: known before the end
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 100 + b"\r\n\r\n",
                      max_line=50)[0] == HAND_OFF
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nY: 2\r\n\r\n", max_headers=1)[0] == HAND_OFF
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 40000)[0] == HAND_OFF


def test_what_read_request_refuses_is_refused_here() -> None:
    for head, status in ((b"GET /a HTTP/1.1", 400), (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y", 400),
                         (b"GET /a%2Fb HTTP/1.1\r\nHost: x", 400), (b"GET /a HTTP/1.1\r\nHost: a@b", 400),
                         (b"GET * HTTP/1.1\r\nHost: x", 400), (b"GET /a#b HTTP/1.1\r\nHost: x", 400)):
        kind, exc, _ = parse_head(head + b"\r\n\r\n")
        assert kind == REJECT, head
        assert exc.status == status


def test_partial_heads_wait_and_leading_empty_lines_are_skipped() -> None:
    reader = HeadReader()
    assert reader.read(b"GET /a HT")[0] == NEED_MORE
    assert reader.read(b"GET /a HTTP/1.1\r\nHost: x\r\n")[0] == NEED_MORE
    kind, got, used = reader.read(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b")
    assert (kind, got.norm.path, used) == (READY, "/a", 28)
    kind, got, used = reader.read(b"\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")     # the next request
    assert (kind, got.norm.path, used) == (READY, "/b", 32)


def test_underscore_headers_follow_the_listener() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX_User: admin"
    got = parse(head)
    assert got is not None
    assert got.block == b"Host: x\r\n"
    assert "X_User" not in got.headers
    got = parse(head, options=RequestOptions(underscores_in_headers=True))
    assert got is not None
    assert got.block == b"Host: x\r\nX_User: admin\r\n"


@given(st.binary(max_size=300))
def test_any_bytes_give_a_result_never_an_error(head: bytes) -> None:
    for data in (head, b"GET / HTTP/1.1\r\n" + head, b"GET / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n"):
        kind, _, used = parse_head(data)
        assert kind in (NEED_MORE, HAND_OFF, READY, REJECT)
        assert 0 <= used <= len(data)


@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8),
       st.sampled_from(["127.0.0.1", "10.1.2.3", "2001:db8::1"]), st.sampled_from(["http", "https"]))
def test_the_fast_upstream_head_is_what_upstream_headers_would_send(
        pairs: list[tuple[str, str]], peer: str, scheme: str) -> None:
    head = b"GET /p HTTP/1.1\r\nHost: h.test" + b"".join(f"\r\n{k}: {v}".encode() for k, v in pairs)
    got = parse(head)
    if got is None:
        return
    headers, block = got.headers, got.block
    out, client = upstream_headers(headers, peer=peer, scheme=scheme, settings=SETTINGS)
    generic = serialize_head("GET", "/p", list(out.items()))
    if block is None:               # forwarding headers or Via: the generic path is used
        assert any(k.lower() in ("via", "x-forwarded-for", "forwarded") for k, _ in pairs) or \
            any(k == "Connection" for k, _ in pairs)
        return
    assert client == peer
    fast = b"GET /p HTTP/1.1\r\n" + block + forwarding_block(peer, scheme, got.norm.host, SETTINGS) + b"\r\n"
    assert fast == generic


def test_cimultidict_headers_match_what_policies_read() -> None:
    got = parse(b"GET / HTTP/1.1\r\nhost: a\r\ncookie: x=1\r\ncookie: y=2")
    assert got is not None
    headers: CIMultiDict[str] = got.headers
    assert headers["Host"] == "a"
    assert headers.getall("Cookie") == ["x=1", "y=2"]


HEADS = st.lists(st.tuples(st.sampled_from([*NAMES, "X_U", "Content-Length", "Bad Name"]), VALUES), max_size=6)


@given(st.sampled_from(["/", "/a/../b", "/a%2Fb", "http://h.test/x?y", "*", "/a#f"]), HEADS)
def test_a_remembered_head_reads_as_a_fresh_one(target: str, pairs: list[tuple[str, str]]) -> None:
    head = (f"GET {target} HTTP/1.1\r\nHost: h.test" + "".join(f"\r\n{k}: {v}" for k, v in pairs)
            + "\r\n\r\n").encode()
    cache: dict[bytes, FastHead] = {}
    cached = HeadReader(cache=cache)
    first = cached.read(head)
    again = cached.read(head)                      # from the cache when the first was READY
    fresh = HeadReader().read(head)
    for got in (first, again):
        assert got[0] == fresh[0]
        assert got[2] == fresh[2]
        if got[0] == READY:
            assert (got[1].norm.target, got[1].norm.host, got[1].block, got[1].close, list(got[1].headers.items())) \
                == (fresh[1].norm.target, fresh[1].norm.host, fresh[1].block, fresh[1].close,
                    list(fresh[1].headers.items()))
    assert bool(cache) == (fresh[0] == READY)
    pipelined = cached.read(head + head)           # a head followed by the next: still read one at a time
    assert (pipelined[0], pipelined[2]) == (fresh[0], fresh[2])


def test_the_head_cache_is_bounded() -> None:
    cache: dict[bytes, FastHead] = {}
    reader = HeadReader(cache=cache)
    for i in range(3000):
        assert reader.read(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)[0] == READY
    assert 0 < len(cache) <= 1024
    assert reader.read(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")[0] == READY
    assert all(len(k) <= 2048 for k in cache)


class _Proto:
    transport = None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def aiohttp_reading(head: bytes) -> tuple[str, Any]:
    """What the aiohttp path makes of `head`: its llhttp parser, then ProxyHandler.read's fields."""
    import asyncio

    from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
    from aiohttp.http_parser import HttpRequestParser

    from regional_lb.target import BadRequest, read_request

    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(_Proto(), loop, 2**16, max_line_size=8190, max_field_size=8190)  # type: ignore[arg-type]
        try:
            messages, _, _ = parser.feed_data(head)
        except LineTooLong:
            return "refused", 431                        # as ProxyProtocol.handle_error answers
        except HttpProcessingError as exc:
            return "refused", exc.code if 400 <= exc.code < 500 else 400
        if not messages:
            return "incomplete", None
        msg = messages[0][0]
        fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in msg.raw_headers]
        try:
            return "ok", read_request(msg.method, msg.path, msg.version, fields)
        except BadRequest as exc:
            return "refused", exc.status
    finally:
        loop.close()


PIECES = ["GET", "get", "PURGE", " ", "  ", "/", "/a/../b", "%2F", "%2e", "?q=%2f", "#", "*", "http://h.test/x",
          "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "\r\n", "\n", "\r", "Host: h.test", "Host:", "Host: a@b", "X_Y: 1",
          "X: a", " b", "\t", "\x00", "\x7f", "é", ":", "Content-Length: 0", "Transfer-Encoding: chunked",
          "Expect: 100-continue", "Connection: close", "Upgrade: websocket"]


TARGET_PIECES = ["/", "a", "..", ".", "%2e", "%2F", "%5c", "%41", "%c3%a9", "//", "?q=%2f/..", "#f", "{x}", ";p", "~"]
FIELDS = ["Host: h.test:8080", "Host: a@b", "Host:", "host: other", "X_Under: 1", "X-A:  a  ", "X-B: caf\xe9",
          "Cookie: a=1", "Connection: close", "Connection: x-a", "X-A: 2", "Via: 1.0 p", "X-Forwarded-For: 1.2.3.4",
          "Keep-Alive: 5", "Accept: */*", "User-Agent: t/1", "X-Empty:"]
ODD = ["Bad Name: v", "Content-Length: 0", "Expect: 100-continue", "X: a\x01", ""]
HEADS = st.builds(
    lambda method, target, version, host, fields, odd: (
        f"{method} {target} {version}\r\n" + host + "".join(f + "\r\n" for f in [*fields, *odd]) + "\r\n"
    ).encode("latin-1"),
    st.sampled_from(["GET"] * 6 + ["PURGE", "OPTIONS", "DELETE", "get", "CONNECT"]),
    st.one_of(st.lists(st.sampled_from(TARGET_PIECES), max_size=6).map(lambda p: "/" + "/".join(p)),
              st.sampled_from(["*", "http://h.test/a/../b?x", "https://u@h.test/", "h.test:443", "x"])),
    st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0"]),
    st.sampled_from(["Host: h.test\r\n"] * 4 + [""]),
    st.lists(st.sampled_from(FIELDS), max_size=5),
    st.lists(st.sampled_from(ODD), max_size=1).map(lambda odd: [o for o in odd if o]))


@given(st.one_of(HEADS, st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map(
    lambda p: "".join(p).encode("utf-8") + b"\r\n\r\n")))
def test_what_the_fast_path_serves_or_refuses_aiohttp_reads_the_same_way(head: bytes) -> None:
    kind, got, _ = parse_head(head)
    if kind in (HAND_OFF, NEED_MORE):
        return                                            # aiohttp decides: nothing to compare
    what, theirs = aiohttp_reading(head)
    if kind == REJECT:
        assert (what, theirs) == ("refused", got.status)
    else:
        assert what == "ok"
        ours = got.norm
        assert (theirs.method, theirs.target, theirs.host, theirs.headers) == (
            ours.method, ours.target, ours.host, ours.headers)


def test_the_comparison_sees_both_outcomes() -> None:
    assert aiohttp_reading(b"GET /a/../b HTTP/1.1\r\nHost: h\r\n\r\n")[1].target == "/b"
    assert aiohttp_reading(b"GET /a HTTP/1.1\r\n\r\n") == ("refused", 400)      # aiohttp's own Host check
    assert aiohttp_reading(b"GET /a%2F HTTP/1.1\r\nHost: h\r\n\r\n") == ("refused", 400)
