"""ECS option validation (RFC 7871) and locating the client."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.dns.ecs import ClientSubnet, EcsError, client_network, echo_scope, locate, locate_resolver

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
RESOLVER = V4("198.51.100.7")


def ecs(family: int, source: int, address: bytes, scope: int = 0) -> ClientSubnet:
    return ClientSubnet.from_wire(struct.pack("!HBB", family, source, scope) + address)


def test_valid_options_and_echo() -> None:
    option = ecs(1, 24, b"\x01\x02\x03")
    assert option.ip() == V4("1.2.3.0")
    assert str(option.network()) == "1.2.3.0/24"
    assert repr(option) == "<ClientSubnet 1.2.3.0/24>"
    assert option.to_wire(16) == struct.pack("!HHHBB", 8, 7, 1, 24, 16) + b"\x01\x02\x03"
    assert option.to_wire(99)[7] == 32      # scope clamped to the family width
    assert ecs(2, 0, b"").to_wire(0) == struct.pack("!HHHBB", 8, 4, 2, 0, 0)
    assert ecs(1, 20, b"\x01\x02\x30").source == 20


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x18",
        struct.pack("!HBB", 0, 0, 0),
        struct.pack("!HBB", 1, 33, 0) + b"\x00" * 5,
        struct.pack("!HBB", 2, 129, 0) + b"\x00" * 17,
        struct.pack("!HBB", 1, 24, 0) + b"\x01\x02",
        struct.pack("!HBB", 1, 20, 0) + b"\x01\x02\x31",
        struct.pack("!HBB", 1, 24, 24) + b"\x01\x02\x03",
    ],
)
def test_invalid_options(raw: bytes) -> None:
    with pytest.raises(EcsError):
        ClientSubnet.from_wire(raw)


def test_locate_caps_and_masks() -> None:
    assert locate(ecs(1, 32, b"\x01\x02\x03\x04"), RESOLVER) == (V4("1.2.3.0"), 24, 0)
    assert locate(ecs(1, 16, b"\x01\x02"), RESOLVER) == (V4("1.2.0.0"), 16, 0)
    assert locate(ecs(2, 64, bytes.fromhex("20010db8aabbccdd")), RESOLVER) == (V6("2001:db8:aabb:cc00::"), 56, 0)
    assert locate(ecs(1, 0, b""), RESOLVER) == (RESOLVER, None, 0)
    assert locate(None, RESOLVER) == (RESOLVER, None, 0)


def test_locate_ipv4_inside_ipv6() -> None:
    mapped = V6("::ffff:1.2.3.0").packed[:15]
    assert locate(ecs(2, 120, mapped), RESOLVER) == (V4("1.2.3.0"), 24, 96)
    nat64 = V6("64:ff9b::1.2.3.4").packed
    assert locate(ecs(2, 128, nat64), RESOLVER) == (V4("1.2.3.0"), 24, 96)
    sixtofour = V6("2002:0102:0300::").packed[:5]
    assert locate(ecs(2, 40, sixtofour), RESOLVER) == (V4("1.2.3.0"), 24, 16)
    short_mapped = V6("::ffff:0:0").packed[:12]
    assert locate(ecs(2, 96, short_mapped), RESOLVER) == (RESOLVER, None, 0)   # no IPv4 bits at all
    assert locate_resolver(V6("::ffff:9.8.7.6")) == V4("9.8.7.6")
    assert locate_resolver(V6("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == V4("192.0.2.45")   # Teredo
    assert locate_resolver(V6("2001:db8::1")) == V6("2001:db8::1")


def test_echo_scope() -> None:
    assert echo_scope(0, 96) == 0
    assert echo_scope(24, 0) == 24
    assert echo_scope(24, 96) == 120
    assert echo_scope(32, 96) == 128
    assert echo_scope(24, 16) == 40


def test_client_network() -> None:
    assert client_network(V4("10.1.2.3")) == client_network(V4("10.1.2.250"))
    assert client_network(V4("10.1.2.3")) != client_network(V4("10.1.3.3"))
    assert client_network(V6("::ffff:10.1.2.3")) == client_network(V4("10.1.2.99"))
    assert client_network(V6("2001:db8:0:1::1")) == client_network(V6("2001:db8:0:ff::2"))
    assert client_network(V6("2001:db8:0:100::1")) != client_network(V6("2001:db8::1"))
    assert client_network(V6("::1")) != client_network(V4("0.0.0.1"))


@given(st.integers(1, 2), st.integers(0, 128), st.binary(max_size=17), st.integers(0, 255))
def test_from_wire_accepts_exactly_the_valid_options(family: int, source: int, address: bytes,
                                                     scope: int) -> None:
    width = 32 if family == 1 else 128
    raw = struct.pack("!HBB", family, source, scope) + address
    valid = (source <= width and scope == 0 and len(address) == (source + 7) // 8
             and not (source % 8 and address[-1] & (0xFF >> (source % 8))))
    if valid:
        option = ClientSubnet.from_wire(raw)
        assert option.to_wire(0)[4:] == raw
        _located, prefix, _ = locate(option, RESOLVER)
        assert prefix is None or prefix <= 56
    else:
        with pytest.raises(EcsError):
            ClientSubnet.from_wire(raw)
