"""Header rewriting: hop-by-hop removal, forwarding headers, trusted-proxy chains."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from regional_lb.headers import (
    ForwardingSettings,
    TrustedProxies,
    client_address,
    downstream_headers,
    parse_ip,
    split_forwarded_for,
    upstream_headers,
)

TRUSTED = ForwardingSettings(TrustedProxies(["10.0.0.0/8", "::1/128"]), via="1.1 lb")


def _h(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    out, _ = upstream_headers(_h(("Host", "h"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
                                 ("Keep-Alive", "5"), ("TE", "trailers"), ("Trailer", "x"),
                                 ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
                                 ("Proxy-Connection", "x"), ("X-Keep", "yes"), ("x-keep", "twice")),
                              peer="192.0.2.1", scheme="http", settings=TRUSTED)
    for name in ("Connection", "X-Secret", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
                 "Proxy-Connection"):
        assert name not in out
    assert out.getall("X-Keep") == ["yes", "twice"]
    assert out["Host"] == "h"


def test_untrusted_peer_replaces_forwarding_headers() -> None:
    out, client = upstream_headers(
        _h(("Host", "www.example.com"), ("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=6.6.6.6"),
           ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil")),
        peer="192.0.2.1", scheme="http", settings=TRUSTED)
    assert client == "192.0.2.1"
    assert out["X-Forwarded-For"] == "192.0.2.1"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "www.example.com"
    assert out["Forwarded"] == "for=192.0.2.1;proto=http;host=www.example.com"
    assert out["Via"] == "1.1 lb"


def test_trusted_peer_extends_chain_and_client_is_rightmost_untrusted() -> None:
    out, client = upstream_headers(
        _h(("Host", "h"), ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"), ("X-Forwarded-For", "10.1.1.1"),
           ("X-Forwarded-Proto", "https"), ("Via", "1.1 cdn")),
        peer="10.0.0.5", scheme="http", settings=TRUSTED)
    assert client == "203.0.113.9"          # 6.6.6.6 is left of an untrusted hop: may be forged
    assert out["X-Forwarded-For"] == "6.6.6.6, 203.0.113.9, 10.1.1.1, 10.0.0.5"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["Via"] == "1.1 cdn, 1.1 lb"


def test_trusted_forwarded_header_wins_and_ipv6_is_quoted() -> None:
    out, client = upstream_headers(
        _h(("Host", "h"), ("Forwarded", 'for="[2001:db8::7]:4711";proto=https, for=10.2.2.2')),
        peer="::1", scheme="https", settings=TRUSTED)
    assert client == "2001:db8::7"
    assert out["Forwarded"] == ('for="[2001:db8::7]:4711";proto=https, for=10.2.2.2, '
                                'for="[::1]";proto=https;host=h')


def test_all_trusted_chain_gives_leftmost_and_garbage_stops_walk() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert client_address("10.0.0.1", ["10.9.9.9", "10.8.8.8"], trusted) == "10.9.9.9"
    assert client_address("10.0.0.1", ["6.6.6.6", "garbage", "10.8.8.8"], trusted) == "10.8.8.8"
    assert client_address("10.0.0.1", [], trusted) == "10.0.0.1"
    assert client_address("8.8.8.8", ["1.1.1.1"], trusted) == "8.8.8.8"


def test_parse_ip_forms() -> None:
    assert str(parse_ip("1.2.3.4:80")) == "1.2.3.4"
    assert str(parse_ip('"[2001:db8::1]:80"')) == "2001:db8::1"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip("unknown") is None
    assert parse_ip("_hidden") is None
    assert parse_ip("[::1") is None


def test_forwarded_for_elements_keep_positions() -> None:
    assert split_forwarded_for(['for=1.1.1.1;by=x, proto=http, for="a,b"']) == ["1.1.1.1", "unknown", "a,b"]


def test_downstream_strips_hop_by_hop_and_appends_via() -> None:
    out = downstream_headers(_h(("Connection", "close, X-Internal"), ("X-Internal", "1"),
                                ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                ("Transfer-Encoding", "chunked"), ("Content-Length", "3")),
                             via="1.1 lb")
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "X-Internal" not in out
    assert "Transfer-Encoding" not in out
    assert "Connection" not in out
    assert out["Via"] == "1.1 lb"


def test_no_trusted_proxies_means_nobody_is_trusted() -> None:
    nobody = TrustedProxies([])
    assert "127.0.0.1" not in nobody
    assert not nobody
    assert repr(TrustedProxies(["127.0.0.0/8"])) == "<TrustedProxies 127.0.0.0/8>"


header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                      max_size=40)


@given(xff=header_text, fwd=header_text, peer=st.sampled_from(["10.0.0.1", "8.8.8.8", "::1", "weird"]))
def test_any_forwarding_input_gives_headers_and_a_client(xff: str, fwd: str, peer: str) -> None:
    out, client = upstream_headers(_h(("X-Forwarded-For", xff), ("Forwarded", fwd), ("Host", "h")),
                                   peer=peer, scheme="http", settings=TRUSTED)
    assert out["X-Forwarded-For"].endswith(peer)
    assert isinstance(client, str)
    assert client
    if peer not in TRUSTED.trusted:
        assert client == peer
