"""Server cookies (RFC 9018): the Appendix A test vectors, the time window, rotation, bad input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.dns.cookies import ServerCookies, client_cookie, parse_secrets, query_cookie_valid

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
V4 = ipaddress.ip_address("198.51.100.100")


@pytest.mark.parametrize(("secret", "client", "address", "now", "server"), [
    # A.1: learning a new server cookie
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559731985,
     "010000005cf79f111f8130c3eee29480"),
    # A.2: the same client renewing it
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559734385,
     "010000005cf7a871d4a564a1442aca77"),
    # A.3: another client
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "fc93fc62807ddb86", "203.0.113.203", 1559734700,
     "010000005cf7a9acf73a7810aca2381e"),
    # A.4: an IPv6 client after the secret rolled over
    ("445536bcd2513298075a5d379663c962", "22681ab97d52c298", "2001:db8:220:1:59de:d0f4:8769:82b8",
     1559741961, "010000005cf7c609a6bb79d16625507a"),
])
def test_rfc9018_vectors(secret: str, client: str, address: str, now: int, server: str) -> None:
    cookies = ServerCookies([bytes.fromhex(secret)])
    made = cookies.make(bytes.fromhex(client), ipaddress.ip_address(address), now)
    assert made.hex() == server
    assert cookies.valid(bytes.fromhex(client) + made, ipaddress.ip_address(address), now)


def test_rfc9018_cookies_the_clients_sent_back() -> None:
    # A.3's query: reserved bytes set by whoever made it are part of the hash
    a3 = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    assert ServerCookies([SECRET]).valid(a3, ipaddress.ip_address("203.0.113.203"), 0x5CF78F71 + 60)
    assert not ServerCookies([SECRET]).valid(a3, ipaddress.ip_address("203.0.113.204"), 0x5CF78F71 + 60)
    # A.4's query carries a cookie from the old secret: valid while the old secret still verifies
    a4 = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    v6 = ipaddress.ip_address("2001:db8:220:1:59de:d0f4:8769:82b8")
    new, old = bytes.fromhex("445536bcd2513298075a5d379663c962"), bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")
    assert ServerCookies([new, old]).valid(a4, v6, 1559741961)
    assert not ServerCookies([new]).valid(a4, v6, 1559741961)


@pytest.mark.parametrize(("age", "ok"), [
    (0, True), (1800, True), (3600, True), (3601, False), (-300, True), (-301, False), (10**6, False)])
def test_time_window(age: int, ok: bool) -> None:
    cookies = ServerCookies([SECRET])
    made = 1_700_000_000
    cookie = b"\x11" * 8 + cookies.make(b"\x11" * 8, V4, made)
    assert cookies.valid(cookie, V4, made + age) is ok


def test_time_window_across_the_32_bit_wrap() -> None:
    cookies = ServerCookies([SECRET])
    cookie = b"\x22" * 8 + cookies.make(b"\x22" * 8, V4, 2**32 - 600)
    assert cookies.valid(cookie, V4, 2**32 + 1000)         # 1600 s later, the stamp has wrapped
    assert not cookies.valid(cookie, V4, 2**32 + 3100)


def test_tampering_is_refused() -> None:
    cookies = ServerCookies([SECRET])
    cookie = b"\x33" * 8 + cookies.make(b"\x33" * 8, V4, 1000)
    assert cookies.valid(cookie, V4, 1000)
    for i in range(len(cookie)):
        bad = bytearray(cookie)
        bad[i] ^= 0x01
        assert not cookies.valid(bytes(bad), V4, 1000), i
    assert not cookies.valid(cookie, ipaddress.ip_address("198.51.100.101"), 1000)
    assert not ServerCookies([bytes(16)]).valid(cookie, V4, 1000)
    assert not cookies.valid(cookie[:8], V4, 1000)          # client cookie only
    assert not cookies.valid(cookie + b"\x00", V4, 1000)    # not an RFC 9018 length


def test_first_secret_signs_all_verify() -> None:
    old, new = bytes(range(16)), bytes(range(16, 32))
    before = b"\x44" * 8 + ServerCookies([old]).make(b"\x44" * 8, V4, 5000)
    rotating = ServerCookies([new, old])
    assert rotating.valid(before, V4, 5000)
    after = b"\x44" * 8 + rotating.make(b"\x44" * 8, V4, 5000)
    assert after != before
    assert ServerCookies([new]).valid(after, V4, 5000)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2**40))
def test_any_cookie_bytes_give_an_answer(data: bytes, now: int) -> None:
    assert ServerCookies([SECRET]).valid(data, V4, now) in (True, False)


def test_bad_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ServerCookies([])
    with pytest.raises(ValueError, match="16 bytes"):
        ServerCookies([b"short"])
    assert parse_secrets(["00" * 16, "FF" * 16]) == (bytes(16), b"\xff" * 16)
    with pytest.raises(ValueError, match="item 1: not hex"):
        parse_secrets(["00" * 16, "zz"])
    with pytest.raises(ValueError, match="item 0: must be 16 bytes"):
        parse_secrets(["0011"])


def test_helpers() -> None:
    assert client_cookie(None) is None
    assert client_cookie(b"12345678abc") == b"12345678"

    class _Edns:
        cookie = b"\x55" * 8 + ServerCookies([SECRET]).make(b"\x55" * 8, V4, 10)

    class _Query:
        edns = _Edns()

    assert query_cookie_valid(_Query(), ServerCookies([SECRET]), V4, 10)
    assert not query_cookie_valid(_Query(), None, V4, 10)

    class _NoEdns:
        edns = None

    assert not query_cookie_valid(_NoEdns(), ServerCookies([SECRET]), V4, 10)    # no OPT record: no cookie
