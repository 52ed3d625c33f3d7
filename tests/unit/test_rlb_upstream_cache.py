"""The response reader's head cache (ResponseReader `cache`): a response read through the cache is
read exactly as llhttp reads it without one -- head, body, completion, junk and errors alike."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from regional_lb.errors import InvalidResponse
from regional_lb.proxy.upstream import CACHE_ENTRIES, LENGTH, ResponseHead, ResponseReader

STATUS = [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content",
          b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 100 Continue",
          b"HTTP/2 200 OK", b"HTTP/1.1 200 ", b"\r\nHTTP/1.1 200 OK"]
HEADERS = [b"Date: Tue, 01 Dec 2026 10:00:00 GMT", b"Date: Tue, 01 Dec 2026 10:00:01 GMT",
           b"Content-Type: text/plain", b"Connection: close", b"Connection: keep-alive", b"Connection: x-a",
           b"X-A: 1", b"X-LB-Backend: b1", b"Transfer-Encoding: chunked", b"Keep-Alive: timeout=5",
           b"Bad Name: x", b"X-Fold: a\r\n b", b"X-Bare: a\nX-B: b"]
BODIES = [b"", b"abc", b"backend b1\n", b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A response head (often valid, sometimes not)."""
    status = draw(st.sampled_from(STATUS))
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=4))
    length = draw(st.sampled_from([None, 0, 3, 3, 11, 11, 12]))
    if length is not None:
        headers.insert(draw(st.integers(0, len(headers))), b"Content-Length: %d" % length)
    return b"\r\n".join([status, *headers]) + b"\r\n\r\n"


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[bytes, list[int], bool]]:
    """Responses on one connection, a few heads repeated with various bodies, bytes before and
    after, splits, and whether each answers HEAD."""
    shared = draw(st.lists(heads(), min_size=1, max_size=3))
    out = []
    for _ in range(draw(st.integers(1, 8))):
        prefix = draw(st.sampled_from([b"", b"", b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                                       b"HTTP/1.1 100 Continue\r\n\r\n"]))
        tail = draw(st.sampled_from([b"", b"", b"", b"x", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]))
        raw = prefix + draw(st.sampled_from(shared)) + draw(st.sampled_from(BODIES)) + tail
        cuts = draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=2, unique=True))
        out.append((raw, sorted(cuts), draw(st.integers(0, 5)) == 0))
    return out


def outcome(reader: ResponseReader, raw: bytes, cuts: list[int], head_request: bool) -> tuple[object, ...]:
    reader.begin(head_request=head_request)
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    try:
        for piece in pieces:
            reader.feed(piece)
    except InvalidResponse as exc:
        return ("invalid", str(exc))
    head = reader.head
    fields = None if head is None else (head.status, head.reason, head.version, head.lines, head.block,
                                        head.length, head.framing, head.keep_alive, head.lb_named, head.no_body)
    interim = [(h.status, h.block) for h in reader.interim]
    reader.interim = []
    return fields, interim, b"".join(reader.body), reader.done, reader.junk, reader.state


@settings(max_examples=400, deadline=None)
@given(streams())
def test_a_cached_reader_reads_every_response_as_llhttp_does(stream: list[tuple[bytes, list[int], bool]]) -> None:
    cache: dict[bytes, ResponseHead] = {}
    cached, plain = ResponseReader(max_head=4096, cache=cache), ResponseReader(max_head=4096)
    for raw, cuts, head_request in stream + stream:         # (the second pass meets cached heads)
        for split in ([], cuts):
            want = outcome(plain, raw, split, head_request)
            got = outcome(cached, raw, split, head_request)
            assert got == want, raw
            # a connection the client drops (UpstreamResponse.release): the next response is on a new one
            if got[0] == "invalid" or got[0] is None or not got[0][7] or got[-2] or not got[-3]:
                cached, plain = ResponseReader(max_head=4096, cache=cache), ResponseReader(max_head=4096)


def test_a_repeated_response_is_served_from_the_cache_and_the_cache_is_bounded() -> None:
    cache: dict[bytes, ResponseHead] = {}
    reader = ResponseReader(cache=cache)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc"
    reader.begin(head_request=False)
    reader.feed(raw)
    first = reader.head
    assert first is not None
    assert first.framing == LENGTH
    assert list(cache) == [raw[:-3]]
    reader.begin(head_request=False)
    reader.feed(raw)
    assert reader.head is first                       # the very object: llhttp was not asked
    assert (reader.body, reader.done, reader.junk) == ([b"abc"], True, False)
    for i in range(CACHE_ENTRIES + 5):
        reader.begin(head_request=False)
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-N: %d\r\n\r\n" % i)
        assert reader.done
    assert len(cache) <= CACHE_ENTRIES
