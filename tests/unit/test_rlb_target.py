"""regional_lb/target.py: one way to read a request (target, Host, path, method, framing)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.routing import Route, RouteTable
from regional_lb.target import (
    DEFAULT_OPTIONS,
    MAX_METHOD,
    PLAIN_METHODS,
    BadRequest,
    MethodNotAllowed,
    NotImplementedCoding,
    Request,
    RequestOptions,
    VersionNotSupported,
    lower_name,
    normalize_path,
    read_request,
    remove_dot_segments,
    stand_in_method,
    valid_host,
)

KEEP = RequestOptions(escaped_slashes="keep")
NO_MERGE = RequestOptions(merge_slashes=False)
HOST = [("Host", "a.test")]


def read(target: str = "/", fields: list[tuple[str, str]] | None = None, *, method: str = "GET",
         version: tuple[int, int] = (1, 1), options: RequestOptions = DEFAULT_OPTIONS) -> Request:
    return read_request(method, target, version, HOST if fields is None else fields, options)


# -- path -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "norm"), [
    ("/", "/"),
    ("/api/users", "/api/users"),
    ("/static/../api/auth/me", "/api/auth/me"),
    ("/static/%2e%2e/api/auth/me", "/api/auth/me"),
    ("/static/%2E%2E/api", "/api"),
    ("/a/./b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/..", "/"),
    ("/../../etc/passwd", "/etc/passwd"),            # clamped at the root
    ("/a/b/c/./../../g", "/a/g"),                    # RFC 3986 §5.2.4 example
    ("/%41%62%7e%2d", "/Ab~-"),                      # unreserved decoded
    ("/%c3%a9", "/%C3%A9"),                          # others: hex uppercased, kept encoded
    ("/%25", "/%25"),                                # '%' stays encoded: a second pass changes nothing
    ("/%2541", "/%2541"),
    ("/a//b", "/a/b"),                               # merge_slashes on by default
    ("///a", "/a"),
    ("/a//../b", "/b"),                              # merged first, then dot-segments
    ("/.well-known/x", "/.well-known/x"),
    ("/a/..b/c", "/a/..b/c"),
    ("/a%3Fb", "/a%3Fb"),                            # reserved: stays encoded
    ("/a;p=1/b", "/a;p=1/b"),
    ("/a{b}|c", "/a{b}|c"),                          # llhttp lets these through: forwarded as is
])
def test_paths(raw: str, norm: str) -> None:
    assert normalize_path(raw) == norm


def test_merge_slashes_off_keeps_empty_segments() -> None:
    assert normalize_path("/a//b", NO_MERGE) == "/a//b"
    assert normalize_path("/a//../b", NO_MERGE) == "/a/b"      # RFC 3986: '..' removes the empty segment


@pytest.mark.parametrize("raw", ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5c..%5cb", "/a\\b"])
def test_escaped_slashes_rejected_by_default_and_kept_on_request(raw: str) -> None:
    with pytest.raises(BadRequest, match=r"'/' or|'\\'"):
        normalize_path(raw)
    kept = normalize_path(raw, KEEP)
    assert "%2f" not in kept
    assert "%5c" not in kept
    assert kept.count("/") == raw.count("/")                 # no decoded '/'


@pytest.mark.parametrize("raw", ["/a%00", "/a%0a", "/a%0D%0AX:1", "/%7f", "/%1F", "/a%", "/a%4", "/a%zz", "/a%4g",
                                 "/a b", "/a\x00", "/é", "/a\tb", "a", ""])
def test_bad_paths(raw: str) -> None:
    for options in (RequestOptions(), KEEP):
        with pytest.raises(BadRequest):
            normalize_path(raw, options)


def reference_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 as written (input buffer, output buffer)."""
    inp, out = path, ""
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = "/" + inp[3:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = "/" + inp[4:]
            out = out[:out.rfind("/")] if "/" in out else ""
        elif inp == "/..":
            inp = "/"
            out = out[:out.rfind("/")] if "/" in out else ""
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            cut = inp.find("/", start)
            cut = len(inp) if cut < 0 else cut
            out += inp[:cut]
            inp = inp[cut:]
    return out


SEGMENT = st.sampled_from(["", ".", "..", "a", "b", "%2e", "%2E%2e", ".%2e", "%2F", "%5c", "%41", "%c3%a9",
                           "%25", "x.y", "..a", "~", "%7E", "\\"])
PATHS = st.lists(SEGMENT, max_size=8).map(lambda segs: "/" + "/".join(segs))
OPTIONS = st.builds(RequestOptions, st.sampled_from(["reject", "keep"]), st.booleans(), st.booleans())


@given(st.lists(st.sampled_from(["", ".", "..", "a", "b", "cd"]), max_size=10).map(lambda s: "/" + "/".join(s)))
def test_remove_dot_segments_is_the_rfc_algorithm(path: str) -> None:
    assert remove_dot_segments(path) == reference_remove_dot_segments(path)


@given(PATHS, OPTIONS)
def test_normalisation_properties(path: str, options: RequestOptions) -> None:
    try:
        norm = normalize_path(path, options)
    except BadRequest:
        assert options.escaped_slashes == "reject"
        assert re.search(r"%2f|%5c|\\", path, re.IGNORECASE)
        return
    assert normalize_path(norm, options) == norm                     # idempotent
    assert norm.startswith("/")
    segments = norm.split("/")
    assert "." not in segments
    assert ".." not in segments
    assert norm.count("/") <= path.count("/")                         # no decoded '/'
    assert not re.search(r"%(?:[a-f][0-9A-Fa-f]|[0-9A-F][a-f])", norm)  # hex uppercased
    if options.merge_slashes:
        assert "//" not in norm


@given(PATHS, st.sampled_from(["", "?", "?a=1&b=%2f/../x"]), OPTIONS)
def test_the_routed_path_is_the_forwarded_path(path: str, query: str, options: RequestOptions) -> None:
    table = RouteTable([Route("static", "s", path="/static/"), Route("api", "a", path="/api/**"),
                        Route("rest", "r", path="/")])
    try:
        req = read(path + query, options=options)
    except BadRequest:
        return
    assert req.target == req.path + query                             # query forwarded untouched
    again = read(req.target, options=options)
    assert again.path == req.path
    assert table.match(req.host, again.path) is table.match(req.host, req.path)


# -- request-target ---------------------------------------------------------------------------
def test_absolute_form_becomes_origin_form_with_its_authority_as_host() -> None:
    req = read("http://Other.Host:8080/api/../auth/me?x=1",
               [("Accept", "*/*"), ("Host", "a.test"), ("X-Y", "1")])
    assert (req.path, req.target, req.host) == ("/auth/me", "/auth/me?x=1", "Other.Host:8080")
    assert req.headers == [("Accept", "*/*"), ("Host", "Other.Host:8080"), ("X-Y", "1")]   # in place
    assert read("https://b.test").target == "/"
    assert read("HTTP://b.test?q").target == "/?q"
    req10 = read("http://b.test/x", [], version=(1, 0))
    assert req10.headers == [("Host", "b.test")]
    assert req10.has_host


@pytest.mark.parametrize("target", ["http://u:p@b.test/", "http://b.test:99999/", "http:///x", "ftp://b.test/",
                                    "http://b test/", "b.test/x", "http://[zz]/", "/a#frag",
                                    "http://b.test/a#f", "*"])
def test_bad_targets(target: str) -> None:
    with pytest.raises(BadRequest) as info:
        read(target)
    assert info.value.status == 400


def test_asterisk_form_for_options_only() -> None:
    req = read("*", method="OPTIONS")
    assert (req.path, req.target) == ("*", "*")
    assert RouteTable([Route("api", "a", path="/api/")]).match("a.test", req.path) is None
    assert RouteTable([Route("all", "a", path="/")]).match("a.test", req.path) is not None


def test_connect_takes_authority_form_only() -> None:
    req = read("b.test:443", [("Host", "b.test:443")], method="CONNECT")
    assert req.connect
    assert req.path == "/"
    assert req.host == "b.test:443"
    for target in ("b.test", "/x", "b.test:", "http://b.test:443/"):
        with pytest.raises(BadRequest):
            read(target, [("Host", "b.test:443")], method="CONNECT")
    assert MethodNotAllowed.status == 405


# -- Host -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "ok"), [
    ("a.test", True), ("A.Test:8080", True), ("127.0.0.1", True), ("[::1]:80", True), ("[::1]", True),
    ("a.test:", True), ("xn--bcher-kva.test", True), ("a%41.test", True), ("a.test:0", True),
    ("", False), ("a.test:65536", False), ("a.test:123456", False), ("a.test:8o", False), ("u@a.test", False),
    ("a.test/x", False), ("a test", False), (" a.test", False), ("::1", False), ("[::1", False),
    ("[zz::1]", False), ("a.test:80:80", False), ("a%4.test", False), ("ä.test", False),
])
def test_host_values(value: str, ok: bool) -> None:
    assert valid_host(value) is ok


@pytest.mark.parametrize("fields", [
    [], [("Host", "a"), ("Host", "a")], [("Host", "")], [("Host", "a/b")], [("Host", "u@a")],
    [("Host", "a:x")], [("host", "a"), ("HOST", "b")],
])
def test_http11_host_rules(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest, match=r"(?i)host"):
        read("/", fields)


def test_http10_may_omit_host_but_not_send_a_bad_one() -> None:
    req = read("/", [], version=(1, 0))
    assert (req.host, req.has_host) == ("", False)
    with pytest.raises(BadRequest):
        read("/", [("Host", "a b")], version=(1, 0))


def test_host_value_whitespace_is_trimmed() -> None:
    assert read("/", [("Host", " a.test \t")]).host == "a.test"


# -- method, version ----------------------------------------------------------------------------
def test_methods_are_case_sensitive_tokens_forwarded_as_received() -> None:
    assert read(method="PURGE").method == "PURGE"
    assert read(method="get").method == "get"                 # a token: forwarded as received
    for bad in ("G ET", "GET\x00", "", "GÉT", "G(T"):
        with pytest.raises(BadRequest):
            read(method=bad)


def test_llhttp_reads_an_extension_method_as_the_stand_in() -> None:
    assert stand_in_method(b"FOO /x HTTP/1.1\r\n") == (b"GET /x HTTP/1.1\r\n", "FOO")
    assert stand_in_method(b"get /x") == (b"GET /x", "get")                 # case-sensitive: not GET
    assert stand_in_method(b"\r\n\r\nBREW /") == (b"\r\n\r\nGET /", "BREW")   # empty lines first
    for plain in PLAIN_METHODS:                                             # llhttp reads these itself
        assert stand_in_method(plain + b" /") == (plain + b" /", None)
    for other in (b"G@T /", b"GET\t/", b"/x HTTP/1.1", b"\r\n", b"", b"M" * 65 + b" /"):
        assert stand_in_method(other) == (other, None)                      # llhttp refuses or skips
    assert stand_in_method(b"M" * 64 + b" /") == (b"GET /", "M" * 64)


def test_a_method_cut_by_the_end_of_a_read_waits_for_more_but_only_up_to_max_method() -> None:
    for part in (b"F", b"FO", b"\r\nFOO", b"M" * MAX_METHOD):
        assert stand_in_method(part) is None
    assert stand_in_method(b"M" * (MAX_METHOD + 1)) == (b"M" * (MAX_METHOD + 1), None)


@given(st.binary(max_size=80))
def test_stand_in_changes_nothing_but_the_method(data: bytes) -> None:
    got = stand_in_method(data)
    if got is None:
        return
    out, original = got
    if original is None:
        assert out == data
    else:
        assert out.replace(b"GET", original.encode(), 1) == data
        assert lower_name(original)


@pytest.mark.parametrize("version", [(0, 9), (2, 0), (1, 2), (3, 0)])
def test_versions_other_than_1x(version: tuple[int, int]) -> None:
    with pytest.raises(VersionNotSupported) as info:
        read(version=version)
    assert info.value.status == 505


# -- framing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "status"), [
    ([("Transfer-Encoding", "")], 400),
    ([("Transfer-Encoding", ""), ("Content-Length", "3")], 400),
    ([("Transfer-Encoding", "gzip")], 400),
    ([("Transfer-Encoding", "chunked, gzip")], 400),
    ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], 400),
    ([("Transfer-Encoding", "chunked,")], 400),
    ([("Transfer-Encoding", "chunked"), ("Content-Length", "3")], 400),
    ([("Transfer-Encoding", "gzip, chunked")], 501),
    ([("Content-Length", "+3")], 400),
    ([("Content-Length", "-3")], 400),
    ([("Content-Length", "3, 3")], 400),
    ([("Content-Length", "3 3")], 400),
    ([("Content-Length", "3"), ("Content-Length", "3")], 400),
    ([("Content-Length", "3"), ("Content-Length", "4")], 400),
    ([("Content-Length", "")], 400),
    ([("Content-Length", "0x10")], 400),
    ([("Content-Length", "٣")], 400),                          # a non-ASCII digit
    ([("Content-Length", "1" * 19)], 400),
    ([("Bad Name", "v")], 400),
    ([("User-Agent", "a"), ("user-agent", "a")], 400),            # a singleton field, repeated
    ([("Content-Type", "a"), ("Content-Type", "b")], 400),
    ([("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], 400),
    ([("X", "a\r\n b")], 400),                                   # obs-fold, were it to get here
    ([("X", "a\x00b")], 400),
    ([("", "v")], 400),
])
def test_framing_and_field_errors(fields: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(BadRequest) as info:
        read("/", HOST + fields, method="POST")
    assert info.value.status == status


def test_valid_framing() -> None:
    req = read("/", [*HOST, ("Content-Length", " 12 ")], method="POST")
    assert (req.content_length, req.chunked) == (12, False)
    req = read("/", [*HOST, ("Transfer-Encoding", "Chunked")], method="POST")
    assert (req.content_length, req.chunked) == (None, True)
    with pytest.raises(BadRequest, match=r"HTTP/1\.0"):
        read("/", [("Transfer-Encoding", "chunked")], method="POST", version=(1, 0))
    assert NotImplementedCoding.status == 501


def test_underscore_names_dropped_unless_allowed() -> None:
    fields = [*HOST, ("X_User", "admin"), ("X-User", "bob"), ("Content_Length", "5")]
    assert read("/", fields).headers == [*HOST, ("X-User", "bob")]
    allowed = read("/", fields, options=RequestOptions(underscores_in_headers=True))
    assert allowed.headers == fields
    assert allowed.content_length is None


def test_bad_options_refused() -> None:
    with pytest.raises(ValueError, match="escaped_slashes"):
        RequestOptions(escaped_slashes="decode")


@given(st.text(max_size=40), st.text(max_size=60), st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)),
                                                              max_size=6),
       st.sampled_from([(1, 0), (1, 1), (2, 0)]), OPTIONS)
def test_any_input_gives_a_request_or_bad_request(method: str, target: str, fields: list[tuple[str, str]],
                                                  version: tuple[int, int], options: RequestOptions) -> None:
    try:
        req = read_request(method, target, version, fields, options)
    except BadRequest:
        return
    if not req.connect and req.target != "*":
        assert normalize_path(req.path, options) == req.path
        assert req.target.startswith(req.path)
