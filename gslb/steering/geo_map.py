"""Policy `geo_map`: gdnsd-style ordered lists: CIDR > country > continent > default  [pure].

The matched list is the whole candidate order: its first eligible region(s) win, and when
every region of the list is down the service's all-down rule applies (fail_open answers the
list as if it were up, as gdnsd does). There is no capacity spill: the list *is* the
operator's failover order.
"""

from __future__ import annotations

import ipaddress

from gslb.geoip import Location
from gslb.steering.config import GeoMap

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def match_cidr(gmap: GeoMap, address: IPAddress | None) -> tuple[IPNetwork, tuple[str, ...]] | None:
    if address is None:
        return None
    for net, order in gmap.cidr:        # longest prefix first
        if net.version == address.version and address in net:
            return net, order
    return None


def rank(gmap: GeoMap, address: IPAddress | None, loc: Location | None) -> tuple[tuple[str, ...], str]:
    """(ordered regions, which rule matched)."""
    hit = match_cidr(gmap, address)
    if hit is not None:
        return hit[1], f"cidr {hit[0]}"
    if loc is not None:
        if loc.country and loc.country in gmap.country:
            return gmap.country[loc.country], f"country {loc.country}"
        if loc.continent and loc.continent in gmap.continent:
            return gmap.continent[loc.continent], f"continent {loc.continent}"
    return gmap.default, "default"


def key_prefix(gmap: GeoMap, address: IPAddress, prefix: int) -> int:
    """The shortest prefix >= `prefix` around `address` that no CIDR entry splits.

    Inside the returned network every address matches the same CIDR entry (or none), so
    the CIDR part of the answer is constant there.
    """
    changed = True
    while changed:
        changed = False
        shift = address.max_prefixlen - prefix
        top = int(address) >> shift
        for net, _ in gmap.cidr:
            # skip entries that are not strictly inside the /prefix network around the address
            if net.version != address.version or net.prefixlen <= prefix \
                    or int(net.network_address) >> shift != top:
                continue
            if address in net:
                prefix = net.prefixlen
            else:
                diff = int(net.network_address) ^ int(address)
                prefix = address.max_prefixlen - diff.bit_length() + 1
            changed = True
            break
    return prefix
