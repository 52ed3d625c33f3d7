"""EDNS Client Subnet (RFC 7871) and where a client is located from  [pure].

    ClientSubnet.from_wire(option_data)  -> validated option (EcsError = FORMERR otherwise)
    ClientSubnet.to_wire(scope)          -> the option to echo: FAMILY, SOURCE, ADDRESS as
                                            received, SCOPE as given (whole option, code+length)
    locate(ecs, resolver)                -> (address, source_prefix, scope_offset) for steering

Locating: with ECS SOURCE > 0 the ECS address is used, its SOURCE capped at /24
(IPv4) or /56 (IPv6) and the address masked to the cap; SOURCE 0 means "do not
use client information": the resolver's address is used and SCOPE 0 echoed.
IPv4 carried in IPv6 (mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16,
Teredo 2001::/32 for full addresses) is located as IPv4; the steering's scope is
then shifted back into the IPv6 family when echoed (`scope_offset`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from gslb.dns.errors import FormError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ECS_OPTION = 8
V4_CAP = 24
V6_CAP = 56

_MAPPED = int(ipaddress.IPv6Address("::ffff:0:0"))
_NAT64 = int(ipaddress.IPv6Address("64:ff9b::"))
_LOW96_MASK = (1 << 96) - 1
_V6_BITS = 128


class EcsError(FormError):
    """The EDNS Client Subnet option is malformed (RFC 7871 §7.1.1)."""


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """A validated ECS option from a query."""

    family: int        # 1 = IPv4, 2 = IPv6
    source: int        # SOURCE PREFIX-LENGTH as received
    scope: int         # SCOPE PREFIX-LENGTH as received (0 in a valid query)
    address: bytes     # ADDRESS as received: ceil(source / 8) bytes

    def __repr__(self) -> str:
        return f"<ClientSubnet {self.network()}>"

    @classmethod
    def from_wire(cls, data: bytes) -> ClientSubnet:
        if len(data) < 4:
            raise EcsError("ECS option shorter than 4 bytes")
        family, source, scope = struct.unpack_from("!HBB", data)
        address = bytes(data[4:])
        if family == 1:
            width = 32
        elif family == 2:
            width = 128
        else:
            raise EcsError(f"ECS family {family} is not 1 (IPv4) or 2 (IPv6)")
        if source > width:
            raise EcsError(f"ECS source /{source} is longer than the address")
        if scope != 0:
            raise EcsError("ECS scope must be 0 in a query")
        if len(address) != (source + 7) // 8:
            raise EcsError(f"ECS address is {len(address)} bytes, /{source} needs {(source + 7) // 8}")
        if source % 8 and address[-1] & (0xFF >> (source % 8)):
            raise EcsError("ECS address has bits set beyond the source prefix")
        return cls(family, source, scope, address)

    def to_wire(self, scope: int) -> bytes:
        """The whole option (code, length, data) for a response, with SCOPE = `scope`."""
        width = 32 if self.family == 1 else 128
        scope = max(0, min(scope, width))
        body = struct.pack("!HBB", self.family, self.source, scope) + self.address
        return struct.pack("!HH", ECS_OPTION, len(body)) + body

    def ip(self) -> IPAddress:
        """The address, padded with zero bytes to the family's width."""
        if self.family == 1:
            return ipaddress.IPv4Address(self.address.ljust(4, b"\0"))
        return ipaddress.IPv6Address(self.address.ljust(16, b"\0"))

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.ip()}/{self.source}")


def _embedded_v4(value: int, prefix: int) -> tuple[ipaddress.IPv4Address, int, int] | None:
    """IPv4 inside an IPv6 address `value`/`prefix`: (v4, v4 prefix, bit offset) or None."""
    top96 = value >> 32
    if prefix >= 96 and top96 in (_MAPPED >> 32, _NAT64 >> 32):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF), prefix - 96, 96
    if prefix > 16 and value >> 112 == 0x2002:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF), min(prefix - 16, 32), 16
    if prefix == 128 and value >> 96 == 0x20010000:
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF), 32, 96
    return None


def _mask(address: IPAddress, prefix: int) -> IPAddress:
    width = address.max_prefixlen
    value = int(address) & (((1 << prefix) - 1) << (width - prefix)) if prefix else 0
    return type(address)(value)


def locate_resolver(resolver: IPAddress) -> IPAddress:
    """The resolver's address as steering should see it (IPv4 out of IPv4-in-IPv6 forms)."""
    if resolver.version == 6:
        embedded = _embedded_v4(int(resolver), 128)
        if embedded is not None:
            return embedded[0]
    return resolver


def locate(ecs: ClientSubnet | None, resolver: IPAddress) -> tuple[IPAddress, int | None, int]:
    """(client address, source prefix for steering or None, scope offset to add when echoing).

    Without ECS, or with SOURCE 0, the resolver's address is used and the prefix is None.
    """
    if ecs is None or ecs.source == 0:
        return locate_resolver(resolver), None, 0
    if ecs.family == 1:         # the common case, from integers: one address object
        source = min(ecs.source, V4_CAP)
        value = int.from_bytes(ecs.address.ljust(4, b"\0"), "big") >> (32 - source) << (32 - source)
        return ipaddress.IPv4Address(value), source, 0
    address = ecs.ip()
    source = ecs.source
    offset = 0
    if address.version == 6:
        embedded = _embedded_v4(int(address), source)
        if embedded is not None:
            address, source, offset = embedded
            if source == 0:
                return locate_resolver(resolver), None, 0
    cap = V4_CAP if address.version == 4 else V6_CAP
    source = min(source, cap)
    return _mask(address, source), source, offset


def echo_scope(scope_prefix: int, offset: int) -> int:
    """SCOPE for the response: the steering's scope, moved back into IPv6 for embedded IPv4."""
    if scope_prefix <= 0:
        return 0
    return min(scope_prefix + offset, _V6_BITS if offset else scope_prefix)


def client_network(resolver: IPAddress) -> int:
    """A cache key for the resolver's network (/24 for IPv4, /56 for IPv6) after locating it."""
    if resolver.version == 4:
        return int(resolver) >> 8
    located = locate_resolver(resolver)
    if located.version == 4:
        return int(located) >> 8
    return (int(located) >> 72) | (1 << 64)   # tag bit: never equal to an IPv4 key
