"""gslb.steering.config: the services section, with key paths in every error."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.common.configload import ConfigError, Section
from gslb.steering.base import Region
from gslb.steering.config import AllDownRule, load_services, service_name

REGIONS = {
    "us-east": Region("us-east", 39.04, -77.49, ("127.0.1.1",)),
    "eu-central": Region("eu-central", 50.11, 8.68, ("127.0.2.1",)),
    "ap-northeast": Region("ap-northeast", 37.57, 126.98, ("127.0.3.1",)),
}


def load(text: str):
    root = Section.from_yaml_text(text, file="gslb.yaml")
    services = load_services(root.section("services"), REGIONS)
    root.done()
    return services


def test_defaults() -> None:
    svc = load("services: {www.Example.test.: {}}")["www.example.test"]
    assert svc.policy == "geo"
    assert svc.regions == ("us-east", "eu-central", "ap-northeast")
    assert (svc.count, svc.ttl, svc.degraded_ttl) == (1, 30, 10)
    assert svc.all_down == AllDownRule("fail_open")
    assert svc.default_order == svc.regions


def test_full_example() -> None:
    services = load("""
services:
  www.example.test:
    policy: geo
    regions: [us-east, eu-central]
    count: 2
    ttl: 60
    degraded_ttl: 5
    all_down: {action: address, addresses: [192.0.2.1, "2001:db8::1"]}
    default_order: [eu-central, us-east]
  map.example.test:
    policy: geo_map
    all_down: {action: cname, cname: Sorry.Example.NET}
    map:
      cidr: {"10.0.0.0/8": [eu-central], "10.1.0.0/16": [ap-northeast, us-east]}
      country: {kr: [ap-northeast, us-east]}
      continent: {eu: [eu-central, us-east]}
      default: [us-east, eu-central]
  w.example.test:
    policy: weighted
    weights: {us-east: 3, eu-central: 1}
    all_down: {action: nodata, negative_ttl: 15}
  lat.example.test: {policy: latency, latency_max_age: 5m}
  fo.example.test: {policy: failover, regions: [eu-central, us-east]}
""")
    www = services["www.example.test"]
    assert www.regions == ("us-east", "eu-central")
    assert www.all_down == AllDownRule("address", v4=("192.0.2.1",), v6=("2001:db8::1",))
    assert www.default_order == ("eu-central", "us-east")
    gmap = services["map.example.test"].geo_map
    assert gmap is not None
    assert [str(n) for n, _ in gmap.cidr] == ["10.1.0.0/16", "10.0.0.0/8"]     # longest first
    assert gmap.country == {"KR": ("ap-northeast", "us-east")}
    assert gmap.continent == {"EU": ("eu-central", "us-east")}
    assert services["map.example.test"].all_down.cname == "sorry.example.net."
    assert services["w.example.test"].weights == {"us-east": 3.0, "eu-central": 1.0}
    assert services["w.example.test"].all_down.negative_ttl == 15
    assert services["lat.example.test"].latency_max_age == 300.0
    assert services["fo.example.test"].regions == ("eu-central", "us-east")


def test_weighted_defaults_to_equal_weights() -> None:
    svc = load("services: {w.example.test: {policy: weighted}}")["w.example.test"]
    assert svc.weights == {"us-east": 1.0, "eu-central": 1.0, "ap-northeast": 1.0}


@pytest.mark.parametrize(("body", "path", "reason"), [
    ("{policy: nearest}", "services.a.test.policy", "must be one of"),
    ("{regions: [mars]}", "services.a.test.regions", "unknown region 'mars'"),
    ("{regions: []}", "services.a.test.regions", "must not be empty"),
    ("{regions: [us-east, us-east]}", "services.a.test.regions", "twice"),
    ("{regions: us-east}", "services.a.test.regions", "expected a list"),
    ("{count: 0}", "services.a.test.count", ">= 1"),
    ("{count: 1.5}", "services.a.test.count", "integer"),
    ("{ttl: -1}", "services.a.test.ttl", ">= 0"),
    ("{degraded_ttl: 1e12}", "services.a.test.degraded_ttl", ""),
    ("{tll: 3}", "services.a.test.tll", "did you mean 'ttl'"),
    ("{regions: [us-east], default_order: [eu-central]}", "services.a.test.default_order",
     "not in this service's regions"),
    ("{all_down: {action: explode}}", "services.a.test.all_down.action", "must be one of"),
    ("{all_down: {action: address}}", "services.a.test.all_down.addresses", "is required"),
    ("{all_down: {action: address, addresses: [nope]}}", "services.a.test.all_down.addresses", "item 0"),
    ("{all_down: {action: cname}}", "services.a.test.all_down.cname", "is required"),
    ("{all_down: {action: cname, cname: 'a..b'}}", "services.a.test.all_down.cname", "not a domain"),
    ("{all_down: {action: nodata, negative_ttl: -3}}", "services.a.test.all_down.negative_ttl", ">= 0"),
    ("{all_down: {action: fail_open, cname: x.}}", "services.a.test.all_down.cname", "unknown key"),
    ("{policy: geo_map}", "services.a.test.map", "is required"),
    ("{policy: geo, map: {}}", "services.a.test.map", "only for policy geo_map"),
    ("{policy: geo_map, map: {cidr: {'10.0.0.1/8': [us-east]}}}", "services.a.test.map.cidr.10.0.0.1/8",
     "not a CIDR"),
    ("{policy: geo_map, map: {cidr: {'10.0.0.0/8': [mars]}}}", "services.a.test.map.cidr.10.0.0.0/8",
     "unknown region"),
    ("{policy: geo_map, map: {country: {KOR: [us-east]}}}", "services.a.test.map.country.KOR", "ISO 3166"),
    ("{policy: geo_map, map: {continent: {XX: [us-east]}}}", "services.a.test.map.continent.XX",
     "continent code"),
    ("{policy: geo_map, map: {default: []}}", "services.a.test.map.default", "must not be empty"),
    ("{policy: geo_map, map: {region: {}}}", "services.a.test.map.region", "unknown key"),
    ("{policy: weighted, weights: {us-east: -1}}", "services.a.test.weights.us-east", ">= 0"),
    ("{policy: weighted, weights: {us-east: 0}}", "services.a.test.weights", "> 0"),
    ("{policy: weighted, weights: {mars: 1}}", "services.a.test.weights.mars", "unknown region"),
    ("{policy: geo, weights: {us-east: 1}}", "services.a.test.weights", "only for policy weighted"),
    ("{policy: geo, latency_max_age: 10}", "services.a.test.latency_max_age", "only for policy latency"),
    ("{policy: latency, latency_max_age: soon}", "services.a.test.latency_max_age", "duration"),
    ("[1, 2]", "services.a.test", "expected a mapping"),
])
def test_errors_name_the_key_path(body: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(f"services:\n  a.test: {body}\n")
    assert info.value.path == path
    assert reason in info.value.reason


def test_bad_and_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="not a domain name"):
        load("services: {'a..b': {}}")
    with pytest.raises(ConfigError, match="listed twice"):
        load("services: {a.test: {}, A.TEST.: {}}")


def test_service_name() -> None:
    assert service_name("WWW.Example.Test.") == "www.example.test"
    assert service_name(".") is None
    assert service_name("a" * 64 + ".test") is None


def test_cidr_networks_are_parsed() -> None:
    svc = load("services: {m.test: {policy: geo_map, map: {cidr: {'2001:db8::/32': [us-east]}}}}")["m.test"]
    assert svc.geo_map is not None
    assert svc.geo_map.cidr[0][0] == ipaddress.ip_network("2001:db8::/32")
    assert svc.geo_map.default == svc.regions


@given(st.dictionaries(st.sampled_from(["policy", "count", "ttl", "regions", "all_down", "map", "weights",
                                        "default_order", "latency_max_age", "junk"]),
                       st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5),
                                 st.lists(st.sampled_from(["us-east", "eu-central", "x"]), max_size=3),
                                 st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2)),
                       max_size=5))
def test_any_body_loads_or_raises_config_error(body) -> None:
    root = Section({"services": {"a.test": body}}, file="f.yaml")
    with contextlib.suppress(ConfigError):
        load_services(root.section("services"), REGIONS)
