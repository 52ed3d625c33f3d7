"""Route matching: host and path patterns, first match wins, the cache agrees with the reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regional_lb import routing
from regional_lb.routing import Route, RouteTable, glob_regex, host_matcher, normalize_host, path_matcher


@pytest.mark.parametrize(("raw", "norm"), [
    ("Example.COM:8080", "example.com"), ("[::1]:80", "::1"), ("::1", "::1"), ("a.b.", "a.b"), ("", ""),
])
def test_normalize_host(raw: str, norm: str) -> None:
    assert normalize_host(raw) == norm


@pytest.mark.parametrize(("pattern", "host", "ok"), [
    ("*", "anything", True),
    ("*", "", True),
    ("api.example.com", "api.example.com", True),
    ("api.example.com", "www.example.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
])
def test_host_patterns(pattern: str, host: str, ok: bool) -> None:
    assert host_matcher(pattern)(host) is ok


def test_bad_host_pattern() -> None:
    with pytest.raises(ValueError, match="only as"):
        host_matcher("a*.example.com")


@pytest.mark.parametrize(("pattern", "path", "ok"), [
    ("/", "/anything", True),
    ("/api/", "/api/x", True),
    ("/api/", "/apix", False),
    ("/api", "/apix", True),                    # a prefix is a prefix
    ("/api/auth/**", "/api/auth", True),
    ("/api/auth/**", "/api/auth/login", True),
    ("/api/auth/**", "/api/auth/a/b/c", True),
    ("/api/auth/**", "/api/authx", False),
    ("/static/*.css", "/static/a.css", True),
    ("/static/*.css", "/static/a/b.css", False),
    ("/a/**/z", "/a/b/c/z", True),
    ("/a/*/z", "/a/b/c/z", False),
    ("/x.y/*", "/xzy/a", False),                # regex metacharacters are literal
])
def test_path_patterns(pattern: str, path: str, ok: bool) -> None:
    assert bool(path_matcher(pattern)(path)) is ok


def test_path_pattern_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="must start"):
        Route(name="r", pool="p", path="api/")


def test_first_match_wins_and_404() -> None:
    table = RouteTable([
        Route(name="auth", pool="app", host="*", path="/api/auth/**"),
        Route(name="api-host", pool="api", host="api.example.com", path="/"),
        Route(name="static", pool="app", host="*.example.com", path="/static/**"),
    ])
    assert table.match("www.example.com", "/api/auth/login").name == "auth"
    assert table.match("API.example.com:443", "/api/auth/x").name == "auth"
    assert table.match("api.example.com", "/static/a").name == "api-host"
    assert table.match("www.example.com", "/static/a").name == "static"
    assert table.match("example.com", "/static/a") is None
    assert repr(table) == "<RouteTable [3 routes]>"


segments = st.lists(st.sampled_from(["a", "b", "api", "static", "x.css", "*", "**"]), min_size=0, max_size=4)


@given(host=st.sampled_from(["a.example.com", "example.com", "other", "A.EXAMPLE.com:80"]),
       path_parts=st.lists(st.sampled_from(["a", "b", "api", "static", "x.css"]), max_size=5),
       patterns=st.lists(st.tuples(st.sampled_from(["*", "*.example.com", "example.com", "other"]), segments),
                         min_size=1, max_size=5))
def test_cached_match_agrees_with_reference(host: str, path_parts: list[str],
                                            patterns: list[tuple[str, list[str]]]) -> None:
    routes = [Route(name=f"r{i}", pool="p", host=h, path="/" + "/".join(segs))
              for i, (h, segs) in enumerate(patterns)]
    table = RouteTable(routes)
    path = "/" + "/".join(path_parts)
    assert table.match(host, path) == table.match_reference(host, path)
    assert table.match(host, path) == table.match_reference(host, path)   # second time from the cache


@given(st.text(max_size=30))
def test_glob_never_crashes(pattern: str) -> None:
    glob_regex("/" + pattern).match("/some/path")


def test_answer_cache_is_bounded_and_still_right() -> None:
    table = RouteTable([Route("api", "app", path="/api/"), Route("rest", "app", host="www.example.com")])
    for i in range(20_000):                          # unique paths: the cache is cleared, never grows past its bound
        assert table.match("www.example.com", f"/api/{i}").name == "api"
        assert table.match("other.example", f"/x/{i}") is None
    assert len(table._answers) <= routing._ANSWER_CACHE_MAX
    assert table.match("WWW.example.com:80", "/x").name == "rest"
