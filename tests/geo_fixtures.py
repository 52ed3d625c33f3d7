"""Small deterministic GeoIP2-City-shaped .mmdb files for tests.

    from tests.geo_fixtures import City, write_city_db, SAMPLE_PLACES

    write_city_db(tmp_path / "geo.mmdb", {
        "1.2.3.0/24": City(37.57, 126.98, country="KR", continent="AS", city="Seoul"),
        "2001:db8::/32": City(50.11, 8.68, country="DE", continent="EU", city="Frankfurt"),
    })

The file is an IPv6 database with IPv4 under ::/96 (like GeoIP2 and DB-IP), readable by
maxminddb, geoip2 and gslb.geoip.MaxMindLocator. Networks should not overlap (a later,
more specific one is carved out of an earlier one by mmdb-writer, but keep it simple).
`City` is gslb.geoip.Place; `record_for(city)` is the record written for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gslb.geoip import Place

City = Place

# Well-spread places, handy for steering tests (documentation and private prefixes only).
SAMPLE_PLACES: dict[str, Place] = {
    "198.51.100.0/24": City(40.71, -74.01, country="US", continent="NA", city="New York"),
    "203.0.113.0/24": City(37.57, 126.98, country="KR", continent="AS", city="Seoul"),
    "192.0.2.0/24": City(50.11, 8.68, country="DE", continent="EU", city="Frankfurt"),
    "10.0.0.0/8": City(-33.87, 151.21, country="AU", continent="OC", city="Sydney"),
    "2001:db8:1::/48": City(35.68, 139.69, country="JP", continent="AS", city="Tokyo"),
    "2001:db8:2::/48": City(51.51, -0.13, country="GB", continent="EU", city="London"),
}


def record_for(city: Place) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if city.lat is not None and city.lon is not None:
        record["location"] = {"latitude": float(city.lat), "longitude": float(city.lon)}
    if city.country:
        record["country"] = {"iso_code": city.country}
    if city.continent:
        record["continent"] = {"code": city.continent}
    if city.city:
        record["city"] = {"names": {"en": city.city}}
    return record


def write_city_db(path: str | Path, places: Mapping[str, Place] | None = None, *,
                  database_type: str = "GeoIP2-City", build_epoch: int = 1_700_000_000) -> Path:
    """Write `places` (CIDR -> City) as a City database at `path`; returns the path."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet

    class _Writer(MMDBWriter):
        def _build_meta(self) -> dict[str, Any]:
            meta = super()._build_meta()
            meta["build_epoch"] = build_epoch      # deterministic bytes
            return meta

    writer = _Writer(ip_version=6, ipv4_compatible=True, database_type=database_type,
                     languages=["en"], description={"en": "test fixture"})
    for cidr, city in (SAMPLE_PLACES if places is None else places).items():
        writer.insert_network(IPSet([IPNetwork(cidr)]), record_for(city))
    path = Path(path)
    writer.to_db_file(str(path))
    return path
