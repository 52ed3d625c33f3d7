"""The bundled compact DB-IP database locates well-known addresses (values checked in the source)."""

from __future__ import annotations

import ipaddress

import pytest

from gslb.geoip import DEFAULT_DATABASE, MaxMindLocator

# address -> (country, continent), as in DB-IP City Lite 2023-04 (the source of the bundled file)
KNOWN = {
    "1.1.1.1": ("AU", "OC"),
    "8.8.8.8": ("US", "NA"),
    "9.9.9.9": ("CH", "EU"),
    "193.0.14.129": ("NL", "EU"),        # k.root-servers.net
    "202.12.27.33": ("JP", "AS"),        # m.root-servers.net
    "200.160.0.8": ("BR", "SA"),
    "196.216.2.1": ("ZA", "AF"),
    "2001:4860:4860::8888": ("US", "NA"),
    "2606:4700:4700::1111": ("CA", "NA"),
    "::ffff:8.8.8.8": ("US", "NA"),
}


@pytest.fixture(scope="module")
def bundled():
    with MaxMindLocator(DEFAULT_DATABASE) as loc:
        yield loc


@pytest.mark.parametrize(("address", "expected"), KNOWN.items())
def test_known_addresses(bundled, address, expected) -> None:
    where = bundled.locate(ipaddress.ip_address(address))
    assert where is not None
    assert (where.country, where.continent) == expected
    assert where.has_coordinates


def test_coordinates_roughly_right(bundled) -> None:
    sydney = bundled.locate(ipaddress.ip_address("1.1.1.1"))
    assert sydney is not None
    assert abs(sydney.lat + 33.9) <= 1.0
    assert abs(sydney.lon - 151.2) <= 1.0


def test_record_networks_are_at_most_24_and_32(bundled) -> None:
    v4 = bundled.locate(ipaddress.ip_address("8.8.8.8"))
    v6 = bundled.locate(ipaddress.ip_address("2001:4860:4860::8888"))
    assert v4 is not None
    assert v4.prefix_len <= 24
    assert v6 is not None
    assert v6.prefix_len <= 32


def test_private_addresses_are_not_located(bundled) -> None:
    for address in ("127.0.0.1", "10.1.1.1", "192.168.1.1", "::1", "fe80::1"):
        assert bundled.locate(ipaddress.ip_address(address)) is None
    assert bundled.database_type == "DBIP-City-Lite-Compact"


def test_size_target() -> None:
    assert DEFAULT_DATABASE.stat().st_size <= 20 * 1024 * 1024


def test_steering_with_the_bundled_database(bundled) -> None:
    from gslb.latency_table import LatencyTable
    from gslb.steering import Steering
    from gslb.steering.base import Region
    from gslb.steering.config import ServiceConfig

    regions = {"us-east": Region("us-east", 39.04, -77.49, ("127.0.1.1",)),
               "eu-central": Region("eu-central", 50.11, 8.68, ("127.0.2.1",)),
               "ap-northeast": Region("ap-northeast", 35.68, 139.69, ("127.0.3.1",))}
    steering = Steering(regions, {"www.test": ServiceConfig("www.test", "geo", tuple(regions))}, bundled,
                        LatencyTable())
    expected = {"8.8.8.8": "us-east", "9.9.9.9": "eu-central", "202.12.27.33": "ap-northeast",
                "2606:4700:4700::1111": "us-east"}
    for address, region in expected.items():
        answer = steering.answer("www.test", ipaddress.ip_address(address), 24, 0.0)
        assert answer.decision.regions == (region,)
        record = bundled.locate(ipaddress.ip_address(address))
        assert 0 < answer.scope_prefix <= record.prefix_len      # widened, never narrowed
