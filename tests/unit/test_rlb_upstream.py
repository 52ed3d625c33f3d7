"""The upstream client's sans-I/O response reader (llhttp underneath): framing, 1xx, HEAD, junk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.errors import InvalidResponse
from regional_lb.proxy.upstream import CHUNKED, DONE, EOF, LENGTH, NONE, ResponseReader, interim_head


def read(data: bytes | list[bytes], *, head_request: bool = False) -> ResponseReader:
    reader = ResponseReader(max_head=4096)
    reader.begin(head_request=head_request)
    for part in [data] if isinstance(data, bytes) else data:
        reader.feed(part)
    return reader


def test_a_small_response_keeps_its_lines_without_hop_by_hop_ones() -> None:
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
             b"Set-Cookie: a=1\r\nX-LB-Backend: low\r\n\r\nhi")
    head = r.head
    assert head is not None
    assert (head.status, head.reason, head.version, head.framing, head.length) == (200, "OK", "1.1", LENGTH, 2)
    assert (head.keep_alive, head.lb_named, head.no_body) == (True, True, False)
    assert head.block == b"Content-Length: 2\r\nSet-Cookie: a=1\r\nX-LB-Backend: low\r\n"
    assert head.headers().getall("set-cookie") == ["a=1"]
    assert head.headers()["Keep-Alive"] == "timeout=5"
    assert (r.done, r.junk, b"".join(r.body)) == (True, False, b"hi")


def test_headers_named_by_connection_are_left_out() -> None:
    head = read(b"HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n").head
    assert head is not None
    assert head.block == b"X-B: 2\r\nContent-Length: 0\r\n"
    assert not head.keep_alive


@pytest.mark.parametrize(("raw", "framing", "keep_alive"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", CHUNKED, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", CHUNKED, True),
    (b"HTTP/1.1 200 OK\r\n\r\n", EOF, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", LENGTH, False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n", LENGTH, True),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", NONE, True),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", NONE, True),
])
def test_framing(raw: bytes, framing: str, keep_alive: bool) -> None:
    head = read(raw).head
    assert head is not None
    assert (head.framing, head.keep_alive) == (framing, keep_alive)


def test_a_204_loses_its_content_length_and_the_bytes_after_it_are_junk() -> None:
    r = read(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX: y\r\n\r\nhello")
    assert r.head is not None
    assert r.head.block == b"X: y\r\n"
    assert (r.done, r.junk, r.body) == (True, True, [])


def test_a_close_delimited_body_ends_at_eof() -> None:
    r = read([b"HTTP/1.1 200 OK\r\n\r\nab", b"cd"])
    assert (r.state, r.done, b"".join(r.body)) == (2, False, b"abcd")
    assert r.eof()
    assert (r.state, r.done) == (DONE, True)
    truncated = read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab")
    assert not truncated.eof()


def test_interim_responses_are_collected_100_dropped_and_never_final() -> None:
    r = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: keep-alive\r\n\r\n"
             b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [h.status for h in r.interim] == [103, 102]
    assert interim_head(r.interim[0]) == b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    assert r.head is not None
    assert (r.head.status, r.done) == (200, True)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 103 Early Hints\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
    b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: \x00\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 099 X\r\n\r\n",
    b"HTTP/1.1 600 X\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * 5000 + b"\r\n\r\n",        # over max_head, in one piece
    [b"HTTP/1.1 200 OK\r\n"] + [b"X: " + b"v" * 1000 + b"\r\n"] * 5,   # over max_head, unfinished
])
def test_invalid_responses_raise(raw: bytes | list[bytes]) -> None:
    with pytest.raises(InvalidResponse):
        read(raw)


def test_bytes_after_a_complete_response_are_junk_not_an_error() -> None:
    r = read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi, and more")
    assert (r.done, r.junk, b"".join(r.body)) == (True, True, b"hi")
    idle = ResponseReader()
    idle.feed(b"x")
    assert idle.junk


@pytest.mark.parametrize("split", [1, 2, 3, 5, 1000])
def test_a_head_response_is_read_to_its_head_only(split: int) -> None:
    raw = (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n")
    r = read([raw[i:i + split] for i in range(0, len(raw), split)], head_request=True)
    assert [h.status for h in r.interim] == [103]
    assert r.head is not None
    assert (r.head.status, r.head.framing, r.head.length, r.head.no_body) == (200, NONE, 1000, True)
    assert (r.done, r.junk, r.body) == (True, False, [])
    # the next response on the connection is read by a fresh parser
    r.begin(head_request=False)
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (r.done, b"".join(r.body)) == (True, b"ok")
    assert read(raw + b"junk", head_request=True).junk


def test_successive_responses_on_one_reader() -> None:
    r = ResponseReader()
    for body in (b"a", b"bb", b""):
        r.begin(head_request=False)
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert (r.done, b"".join(r.body)) == (True, body)
    r.begin(head_request=False)
    r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    assert r.head is not None
    assert (r.done, b"".join(r.body), r.head.headers().get("X-T")) == (True, b"abc", None)   # no trailers


RESPONSES = [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc",
             b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
             b"HTTP/1.0 200 OK\r\n\r\nabc"]


@given(st.sampled_from(RESPONSES), st.lists(st.integers(0, 120), max_size=6), st.booleans())
def test_any_split_reads_the_same(raw: bytes, cuts: list[int], head_request: bool) -> None:
    whole = read(raw, head_request=head_request)
    points = sorted({min(c, len(raw)) for c in cuts})
    parts = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    split = read(parts, head_request=head_request)
    assert whole.head is not None
    assert split.head is not None
    assert (split.head.status, split.head.block, split.head.framing, split.done, b"".join(split.body)) == \
        (whole.head.status, whole.head.block, whole.head.framing, whole.done, b"".join(whole.body))
    assert [h.status for h in split.interim] == [h.status for h in whole.interim]


@given(st.binary(max_size=400), st.booleans())
def test_any_bytes_give_a_response_state_or_invalid_never_another_error(data: bytes, head_request: bool) -> None:
    reader = ResponseReader(max_head=200)
    reader.begin(head_request=head_request)
    try:
        reader.feed(data)
        reader.feed(data)
    except InvalidResponse:
        return
    assert reader.state in (1, 2, 3)
    reader.eof()


@given(st.binary(max_size=200), st.booleans())
def test_garbage_after_a_valid_head_is_read_or_refused(tail: bytes, head_request: bool) -> None:
    reader = ResponseReader()
    reader.begin(head_request=head_request)
    try:
        reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + tail)
    except InvalidResponse:
        return
    assert reader.head is not None
