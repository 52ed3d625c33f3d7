"""LazyCookies shares the parse of a Cookie header it saw before: the same mapping as parsing anew."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from regional_lb.proxy import handler
from regional_lb.proxy.handler import LazyCookies, parse_cookie_header

pieces = st.sampled_from(["a=1", 'b="two"', "bad", "a=again", "=x", "c=", " d = 4 ", "LBSESSIONID=" + "v" * 44,
                          "long=" + "x" * 600])


@given(st.lists(st.lists(pieces, max_size=5).map(";".join), min_size=1, max_size=8))
def test_repeated_headers_read_as_parsed_anew(headers: list[str]) -> None:
    for header in headers + headers:
        want = parse_cookie_header(header)
        cookies = LazyCookies(header)
        assert dict(cookies) == want
        assert len(cookies) == len(want)
        for name in want:
            assert cookies[name] == want[name]
            assert cookies.get(name) == want[name]
        assert cookies.get("absent", "dflt") == "dflt"
    assert len(handler._PARSED) <= handler._PARSED_ENTRIES
    assert all(len(h) <= handler._PARSED_MAX_LEN for h in handler._PARSED)


def test_the_cache_is_bounded() -> None:
    for i in range(handler._PARSED_ENTRIES + 10):
        assert LazyCookies(f"n={i}")["n"] == str(i)
    assert len(handler._PARSED) <= handler._PARSED_ENTRIES
