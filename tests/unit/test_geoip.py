"""gslb.geoip: MaxMindLocator over fixture databases, FakeLocator, errors."""

from __future__ import annotations

import ipaddress

import geoip2.database
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.geoip import (
    ATTRIBUTION,
    DEFAULT_DATABASE,
    FakeLocator,
    GeoIPError,
    Location,
    MaxMindLocator,
    Place,
    place_from_record,
    unmap,
)
from tests.geo_fixtures import SAMPLE_PLACES, City, write_city_db

ip = ipaddress.ip_address


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory):
    return write_city_db(tmp_path_factory.mktemp("geo") / "sample.mmdb")


def test_locates_ipv4_with_record_network(sample_db) -> None:
    with MaxMindLocator(sample_db) as loc:
        where = loc.locate(ip("203.0.113.77"))
    assert where == Location(37.57, 126.98, "KR", "AS", "Seoul", ipaddress.ip_network("203.0.113.0/24"))
    assert where.prefix_len == 24
    assert "KR Seoul" in where.describe()


def test_locates_ipv6_and_v4_mapped(sample_db) -> None:
    with MaxMindLocator(sample_db) as loc:
        tokyo = loc.locate(ip("2001:db8:1::1234"))
        mapped = loc.locate(ip("::ffff:198.51.100.9"))
        wide = loc.locate(ip("10.20.30.40"))
    assert tokyo is not None
    assert tokyo.country == "JP"
    assert tokyo.prefix_len == 48
    assert mapped is not None
    assert mapped.city == "New York"
    assert mapped.network == ipaddress.ip_network("198.51.100.0/24")
    assert wide is not None
    assert wide.network == ipaddress.ip_network("10.0.0.0/8")


def test_unknown_address_is_none(sample_db) -> None:
    with MaxMindLocator(sample_db) as loc:
        assert loc.locate(ip("8.8.8.8")) is None
        assert loc.locate(ip("2001:db8:3::1")) is None


def test_fixture_is_readable_by_geoip2(sample_db) -> None:
    with geoip2.database.Reader(str(sample_db)) as reader:
        city = reader.city("192.0.2.1")
    assert city.country.iso_code == "DE"
    assert city.continent.code == "EU"
    assert city.city.name == "Frankfurt"
    assert city.location.latitude == pytest.approx(50.11)


def test_fixture_is_deterministic(tmp_path) -> None:
    a = write_city_db(tmp_path / "a.mmdb", {"1.2.3.0/24": City(1.0, 2.0, country="FR")})
    b = write_city_db(tmp_path / "b.mmdb", {"1.2.3.0/24": City(1.0, 2.0, country="FR")})
    assert a.read_bytes() == b.read_bytes()


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "nope.mmdb"
    with pytest.raises(GeoIPError, match=f"cannot open GeoIP database {path}: "):
        MaxMindLocator(path)


def test_corrupt_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "junk.mmdb"
    path.write_bytes(b"this is not a maxmind database" * 100)
    with pytest.raises(GeoIPError, match=r"cannot open GeoIP database .*junk\.mmdb"):
        MaxMindLocator(path)


def test_place_from_record_is_tolerant() -> None:
    assert place_from_record(None) is None
    assert place_from_record({}) is None
    assert place_from_record({"location": {"latitude": "x", "longitude": 3}}) is None
    assert place_from_record({"registered_country": {"iso_code": "se"}}) == Place(None, None, "SE")
    assert place_from_record({"location": {"latitude": 1, "longitude": 2}, "city": {"names": {}}}) \
        == Place(1.0, 2.0)


def test_unmap() -> None:
    assert unmap(ip("::ffff:1.2.3.4")) == ip("1.2.3.4")
    assert unmap(ip("2001:db8::1")) == ip("2001:db8::1")
    assert unmap(ip("1.2.3.4")) == ip("1.2.3.4")


def test_fake_locator_longest_prefix() -> None:
    fake = FakeLocator({"10.0.0.0/8": City(1, 2, "AA"), "10.1.0.0/16": City(3, 4, "BB")})
    hit = fake.locate(ip("10.1.2.3"))
    assert hit is not None
    assert hit.country == "BB"
    assert hit.prefix_len == 16
    assert fake.locate(ip("::ffff:10.9.9.9")).country == "AA"  # type: ignore[union-attr]
    assert fake.locate(ip("11.0.0.1")) is None
    assert fake.calls == 3


def test_constants() -> None:
    assert "DB-IP" in ATTRIBUTION
    assert "https://db-ip.com" in ATTRIBUTION
    assert "CC BY 4.0" in ATTRIBUTION
    assert DEFAULT_DATABASE.name.endswith(".mmdb")
    assert SAMPLE_PLACES


@pytest.fixture(scope="module")
def sample_locator(sample_db):
    with MaxMindLocator(sample_db) as loc:
        yield loc


@given(st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                 st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
                 st.sampled_from(list(SAMPLE_PLACES)).map(lambda c: ipaddress.ip_network(c)[1])))
def test_any_address_is_located_inside_its_record_or_not_at_all(sample_locator, address) -> None:
    where = sample_locator.locate(address)
    if where is not None:
        assert unmap(address) in where.network
        assert where.network.prefixlen == where.prefix_len
        if where.network.version == 4 or where.network.prefixlen < 96 \
                or int(where.network.network_address) >> 32:            # not IPv4-compatible ::a.b.c.d
            assert str(where.network) in SAMPLE_PLACES


def test_locate_exact_only_answers_records_of_that_size(sample_db) -> None:
    with MaxMindLocator(sample_db) as loc:
        assert loc.locate_exact(ip("203.0.113.77"), 24) == loc.locate(ip("203.0.113.77"))
        assert loc.locate_exact(ip("203.0.113.77"), 23) is None
        assert loc.locate_exact(ip("10.20.30.40"), 8) == loc.locate(ip("10.20.30.40"))
        assert loc.locate_exact(ip("8.8.8.8"), 24) is None


def test_location_from_integers_equals_location_from_a_network() -> None:
    built = Location(1.0, 2.0, "SE", "EU", "", version=4, value=0xC0000200, prefix_len=24)
    assert built == Location(1.0, 2.0, "SE", "EU", "", ipaddress.ip_network("192.0.2.0/24"))
    assert hash(built) == hash(Location(1.0, 2.0, "SE", "EU", "", ipaddress.ip_network("192.0.2.0/24")))
    assert built.network == ipaddress.ip_network("192.0.2.0/24")
    assert built.describe() == "SE [1.0,2.0] (192.0.2.0/24)"
    assert "192.0.2.0/24" in repr(built)
    with pytest.raises(AttributeError):
        built.lat = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="bad record network"):
        Location(None, None, "", "", "", version=4, value=0, prefix_len=33)
    v6 = Location(None, None, "JP", "AS", "", ipaddress.ip_network("2001:db8:1::/48"))
    assert v6.network_text() == "2001:db8:1::/48"


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-90, 90), st.text(max_size=3),
                    st.lists(st.integers(), max_size=1))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "location": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={"latitude": _VALUES, "longitude": _VALUES})),
    "country": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={"iso_code": _VALUES})),
    "registered_country": st.fixed_dictionaries({}, optional={"iso_code": _VALUES}),
    "continent": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={"code": _VALUES})),
    "city": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={
        "names": st.one_of(_VALUES, st.fixed_dictionaries({}, optional={"en": _VALUES}))})),
}))
def test_fast_place_reading_equals_the_tolerant_one(record) -> None:
    from gslb.geoip import _place_fast, _place_tolerant

    fast = _place_fast(record)
    if fast is not None:
        assert Place(*fast) == _place_tolerant(record)


def test_complete_records_take_the_fast_reading() -> None:
    from gslb.geoip import _place_fast

    record = {"location": {"latitude": 52.0, "longitude": 0.5}, "country": {"iso_code": "gb"},
              "continent": {"code": "EU"}, "city": {"names": {"en": "Cambridge"}}}
    assert _place_fast(record) == (52.0, 0.5, "GB", "EU", "Cambridge")
    assert place_from_record(record) == Place(52.0, 0.5, "GB", "EU", "Cambridge")
    assert _place_fast({**record, "city": {"names": {}}}) is None        # odd: the tolerant reading
    assert place_from_record({**record, "city": {"names": {}}}) == Place(52.0, 0.5, "GB", "EU", "")
