"""The sticky cookie codec and Set-Cookie text: round trips, tampering, rotation, robustness."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.cookies import (
    CookieCodec,
    SetCookieTemplate,
    format_set_cookie,
    parse_set_cookie,
    valid_cookie_name,
)

CODEC = CookieCodec(["current", "old"])


def test_round_trip_and_resolve() -> None:
    value = CODEC.encode("10.0.0.7:8080", issued=1000.9, last_seen=1500.0)
    assert len(value) == 44
    cookie = CODEC.decode(value)
    assert cookie is not None
    assert (cookie.issued, cookie.last_seen, cookie.secret_index) == (1000, 1500, 0)
    assert CODEC.resolve(cookie, ["a", "10.0.0.7:8080", "b"]) == "10.0.0.7:8080"
    assert CODEC.resolve(cookie, ["a", "b"]) is None


def test_value_does_not_reveal_the_backend_address() -> None:
    value = CODEC.encode("10.0.0.7:8080", issued=0, last_seen=0)
    raw = base64.urlsafe_b64decode(value + "=")
    assert b"10.0.0.7" not in raw
    assert b"8080" not in raw
    assert "10.0.0.7" not in value


def test_tokens_differ_per_secret_so_sites_cannot_correlate() -> None:
    assert CookieCodec(["x"]).token("b1") != CookieCodec(["y"]).token("b1")
    assert CODEC.token("b1") != CODEC.token("b2")


def test_every_bit_flip_is_rejected() -> None:
    raw = bytearray(base64.urlsafe_b64decode(CODEC.encode("b1", issued=5, last_seen=6) + "="))
    for i in range(len(raw)):
        for bit in (1, 0x80):
            flipped = bytearray(raw)
            flipped[i] ^= bit
            text = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
            assert CODEC.decode(text) is None


def test_rotation_old_secret_verifies_unknown_does_not() -> None:
    old_value = CookieCodec(["old"]).encode("b1", issued=1, last_seen=2)
    cookie = CODEC.decode(old_value)
    assert cookie is not None
    assert cookie.secret_index == 1
    assert CODEC.resolve(cookie, ["b1"]) == "b1"
    assert CookieCodec(["other"]).decode(old_value) is None


def test_wrong_version_is_rejected_even_if_signed() -> None:
    codec = CookieCodec(["k"])
    import regional_lb.cookies as mod

    payload = mod._PAYLOAD.pack(2, codec.token("b"), 1, 1)
    value = base64.urlsafe_b64encode(payload + codec._mac(0, payload)).rstrip(b"=").decode()
    assert codec.decode(value) is None


@pytest.mark.parametrize("secrets", [[], [""], ["ok", "  "]])
def test_empty_secrets_are_refused(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="secret"):
        CookieCodec(secrets)


@given(st.one_of(st.text(), st.binary(), st.none(), st.integers(),
                 st.text(alphabet="ABCDEFabcdef0123456789-_", min_size=44, max_size=44)))
def test_decode_never_raises(value: object) -> None:
    assert CODEC.decode(value) is None


def test_times_are_clamped_into_u32() -> None:
    cookie = CODEC.decode(CODEC.encode("b", issued=-5, last_seen=2**40))
    assert cookie is not None
    assert (cookie.issued, cookie.last_seen) == (0, 2**32 - 1)


def test_format_set_cookie_attributes() -> None:
    text = format_set_cookie("LB", "v", path="/app", max_age=60, secure=True, httponly=True,
                             samesite="Strict", domain="example.test")
    assert text == "LB=v; Path=/app; Domain=example.test; Max-Age=60; HttpOnly; Secure; SameSite=Strict"
    assert format_set_cookie("LB", "v", secure=False, httponly=False, samesite=None) == "LB=v; Path=/"


def test_parse_set_cookie() -> None:
    c = parse_set_cookie('JSESSIONID="abc123"; Path=/; HttpOnly; Max-Age=3600')
    assert c is not None
    assert (c.name, c.value) == ("JSESSIONID", "abc123")
    assert c.attributes == {"path": "/", "httponly": "", "max-age": "3600"}
    assert not c.deletes
    gone = parse_set_cookie("JSESSIONID=; Max-Age=0")
    assert gone is not None
    assert gone.deletes
    neg = parse_set_cookie("JSESSIONID=x; Max-Age=-1")
    assert neg is not None
    assert neg.deletes
    assert parse_set_cookie("novalue") is None
    assert parse_set_cookie("=x") is None
    assert parse_set_cookie(None) is None


@given(st.text())
def test_parse_set_cookie_never_raises(text: str) -> None:
    parsed = parse_set_cookie(text)
    assert parsed is None or parsed.name


def test_cookie_names() -> None:
    assert valid_cookie_name("LBSESSIONID")
    assert not valid_cookie_name("bad name")
    assert not valid_cookie_name("a;b")
    assert not valid_cookie_name("")


def test_token_cache_is_bounded() -> None:
    codec = CookieCodec(["k"])
    first = codec.token("b0")
    for i in range(65540):
        codec._tokens[(0, f"x{i}")] = b"12345678"
    codec.token("newcomer")                     # a miss on a full cache clears it
    assert len(codec._tokens) == 1
    assert codec.token("b0") == first


def _reference_value(secret: str, backend_id: str, issued: int, last_seen: int) -> str:
    """The documented format, computed from scratch with one-shot HMACs (no keyed copies, no caches)."""
    import hashlib
    import hmac
    import struct

    token = hmac.new(secret.encode(), b"backend:" + backend_id.encode(), hashlib.sha256).digest()[:8]
    payload = struct.pack(">B8sII", 1, token, issued, last_seen)
    mac = hmac.new(secret.encode(), b"cookie:" + payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()


@given(st.text(min_size=1).filter(str.strip), st.text(min_size=1, max_size=40),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_encode_matches_the_documented_format(secret: str, backend_id: str, issued: int, seen: int) -> None:
    codec = CookieCodec([secret])
    try:
        expected = _reference_value(secret, backend_id, issued, seen)
    except UnicodeEncodeError:                  # lone surrogates: only the codec's surrogatepass handles them
        return
    assert codec.encode(backend_id, issued=issued, last_seen=seen) == expected
    assert codec.encode(backend_id, issued=issued, last_seen=seen) == expected     # cached keys reused


def test_verified_cache_answers_like_a_fresh_codec() -> None:
    codec = CookieCodec(["new", "old"])
    value = CookieCodec(["old"]).encode("b1", issued=100, last_seen=200)
    first = codec.decode(value)
    assert first is not None
    assert first.secret_index == 1
    assert codec.decode(value) == first == CookieCodec(["new", "old"]).decode(value)
    tampered = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    assert codec.decode(tampered) is None
    assert codec.decode(tampered) is None
    assert CookieCodec(["new"]).decode(value) is None      # the cache is per codec (per secret list)


def test_lookup_finds_ids_whose_token_was_computed() -> None:
    codec = CookieCodec(["k", "old"])
    cookie = codec.decode(CookieCodec(["old"]).encode("b7", issued=1, last_seen=1))
    assert cookie is not None
    assert codec.lookup(cookie) is None                      # b7's token under "old" never computed
    assert codec.resolve(cookie, ["b1", "b7"]) == "b7"
    assert codec.lookup(cookie) == "b7"


@given(st.text(alphabet="abcXYZ_-", min_size=1, max_size=8), st.text(alphabet="abc012", max_size=44),
       st.sampled_from(["/", "/app"]), st.integers(-5, 10**6), st.booleans(), st.booleans(),
       st.sampled_from([None, "Lax", "None", "Strict"]), st.sampled_from([None, "example.com"]))
def test_set_cookie_template_equals_format_set_cookie(name: str, value: str, path: str, max_age: int,
                                                      secure: bool, httponly: bool, samesite: str | None,
                                                      domain: str | None) -> None:
    template = SetCookieTemplate(name, path=path, httponly=httponly, samesite=samesite, domain=domain)
    assert template.render(value, max_age, secure) == format_set_cookie(
        name, value, path=path, max_age=max_age, secure=secure, httponly=httponly, samesite=samesite,
        domain=domain)


@pytest.mark.parametrize("secret", ["k", "x" * 64, "y" * 65, "é" * 40, "long secret " * 20])
def test_keys_of_every_length_sign_like_hmac(secret: str) -> None:
    """Keys longer than SHA-256's 64-byte block are hashed first (RFC 2104), as hmac does."""
    codec = CookieCodec([secret])
    assert codec.encode("b1", issued=10, last_seen=20) == _reference_value(secret, "b1", 10, 20)
