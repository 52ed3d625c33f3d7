"""Zone config loading: the data it builds and every error naming its key path."""

from __future__ import annotations

import pytest

from gslb.common.configload import ConfigError
from gslb.dns.records import AAAA, CNAME, MX, NS, SOA, A, RdataError, absolute_name, check_name, parse_rdata
from gslb.dns.zone import Soa
from tests.unit.dns_helpers import load_test_zones


def _zones(records: str = "", extra: str = "", ns: str = "[ns1.example.test]") -> tuple:
    text = f"""
zones:
  example.test:
    ns: {ns}
{extra}
    records:
      ns1: {{A: [127.0.0.1]}}
{records}
"""
    return load_test_zones(text)


def _error(records: str = "", extra: str = "", ns: str = "[ns1.example.test]") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _zones(records, extra, ns)
    return info.value


def test_the_example_config_loads() -> None:
    zones = load_test_zones()
    assert [z.origin for z in zones] == ["example.test", "other.test"]
    zone = zones[0]
    assert zone.soa == Soa("ns1.example.test", "hostmaster.example.test", 2026112401, 3600, 600, 1209600, 60)
    assert zone.ns == ("ns1.example.test", "ns2.example.test")
    assert zone.negative_ttl == 60
    assert zones[1].negative_ttl == 300
    assert zone.cuts == frozenset({"sub.example.test"})
    assert "b.ent.example.test" in zone.names
    assert "b.ent.example.test" not in zone.nodes
    assert zone.nodes["app.example.test"][CNAME].rdatas == (("www.example.test",),)
    assert zone.nodes["example.test"][MX].rdatas == ((b"\x00\x0a", "mail.example.test"),)
    assert zone.nodes["ttl-override.example.test"][A].ttl == 60
    assert zone.nodes["ns1.example.test"][AAAA].ttl == 3600
    assert set(zone.nodes["example.test"]) >= {SOA, NS}
    assert repr(zone).startswith("<Zone example.test [")
    assert "RRset A" in repr(zone.nodes["mail.example.test"][A])


def test_zone_lookups() -> None:
    zone = load_test_zones()[0]
    assert zone.find_cut("a.b.sub.example.test") == "sub.example.test"
    assert zone.find_cut("sub.example.test") == "sub.example.test"
    assert zone.find_cut("www.example.test") is None
    assert zone.find_cut("example.test") is None
    assert zone.wildcard("x.y.wild.example.test") == "*.wild.example.test"
    assert zone.wildcard("nope.example.test") is None
    assert [n for n, _ in zone.addresses("ns1.example.test")] == ["ns1.example.test"] * 2
    assert zone.addresses("missing.example.test") == []


def test_defaults_and_mail_style_rname() -> None:
    (zone,) = _zones(extra="    soa: {rname: admin@example.test}\n    ttl: 120")
    assert zone.soa.mname == "ns1.example.test"
    assert zone.soa.rname == "admin.example.test"
    assert zone.soa.serial == 1
    assert zone.ttl == 120
    assert zone.negative_ttl == 60


def test_owner_forms_and_case() -> None:
    (zone,) = _zones('      "WWW2.Example.Test.": {A: [127.0.0.3]}\n      "@": {TXT: [hi]}')
    assert "www2.example.test" in zone.nodes
    assert zone.nodes["example.test"][16].rdatas == ((b"\x02hi",),)


@pytest.mark.parametrize(
    ("records", "path", "reason"),
    [
        ("      www: {A: [300.1.1.1]}", "zones.example.test.records.www.A[0]", "not an IPv4 address"),
        ("      www: {A: 1.2.3}", "zones.example.test.records.www.A", "not an IPv4 address"),
        ("      www: {AAAA: [1.2.3.4]}", "zones.example.test.records.www.AAAA[0]", "not an IPv6 address"),
        ("      www: {AAA: ['::1']}", "zones.example.test.records.www.AAA", "did you mean 'AAAA'"),
        ("      www: {SPF: [x]}", "zones.example.test.records.www.SPF", "unknown record type"),
        ("      www: {CNAME: x, A: [1.2.3.4]}", "zones.example.test.records.www", "CNAME cannot be beside"),
        ("      www: {CNAME: [x, y]}", "zones.example.test.records.www.CNAME", "at most one CNAME"),
        ('      "@": {CNAME: x}', "zones.example.test.records.@", "apex"),
        ('      "@": {NS: [ns1]}', "zones.example.test.records.@.NS", "zone's `ns:` key"),
        ("      www: {SOA: [x]}", "zones.example.test.records.www.SOA", "`soa:`"),
        ("      www: {A: []}", "zones.example.test.records.www.A", "at least one value"),
        ("      www: {A: [1.2.3.4, 1.2.3.4]}", "zones.example.test.records.www.A[1]", "duplicate"),
        ("      www: {A: [7]}", "zones.example.test.records.www.A[0]", "expected a string"),
        ("      www: {ttl: -1, A: [1.2.3.4]}", "zones.example.test.records.www.ttl", ">= 0"),
        ("      www: {ttl: 60}", "zones.example.test.records.www", "no records"),
        ("      www: {MX: ['mail']}", "zones.example.test.records.www.MX[0]", "PREFERENCE EXCHANGE"),
        ("      www: {MX: ['70000 mail']}", "zones.example.test.records.www.MX[0]", "0..65535"),
        ("      www: {MX: ['10 mail.example.test']}", "zones.example.test.records.www.MX[0]", "relative"),
        ("      www: {SRV: ['1 2 3']}", "zones.example.test.records.www.SRV[0]", "SRV is"),
        ("      www: {CAA: ['x issue y']}", "zones.example.test.records.www.CAA[0]", "CAA is"),
        ("      www: {CAA: ['300 issue y']}", "zones.example.test.records.www.CAA[0]", "0..255"),
        ("      www: {CNAME: 'bad name'}", "zones.example.test.records.www.CNAME", "invalid label"),
        ("      www.other.test.: {A: [1.2.3.4]}", "zones.example.test.records.www.other.test.", "not in the zone"),
        ("      'a..b': {A: [1.2.3.4]}", "zones.example.test.records.a..b", "empty label"),
        ("      'x*': {A: [1.2.3.4]}", "zones.example.test.records.x*", "wildcard"),
        ("      'a.*': {A: [1.2.3.4]}", "zones.example.test.records.a.*", "wildcard"),
        (f"      {'a' * 64}: {{A: [1.2.3.4]}}", f"zones.example.test.records.{'a' * 64}", "63"),
        ("      www: {A: [1.2.3.4]}\n      www.example.test.: {A: [1.2.3.5]}",
         "zones.example.test.records.www.example.test.", "same name as 'www'"),
        ("      sub: {NS: [ns.sub], A: [1.2.3.4]}\n      ns.sub: {A: [1.1.1.1]}",
         "zones.example.test.records.sub", "only NS"),
        ("      sub: {NS: [ns.sub]}\n      ns.sub: {A: [1.1.1.1]}\n      x.sub: {TXT: [t]}",
         "zones.example.test.records.x.sub", "only A/AAAA glue"),
        ("      sub: {NS: [ns.sub]}\n      ns.sub: {A: [1.1.1.1]}\n      '*.sub': {A: [1.1.1.1]}",
         "zones.example.test.records.*.sub", "wildcard below"),
        ("      sub: {NS: [ns.sub]}", "zones.example.test.records.sub", "has no A/AAAA"),
    ],
)
def test_record_errors_name_the_key_path(records: str, path: str, reason: str) -> None:
    error = _error(records)
    assert error.path == path
    assert reason in error.reason
    assert error.file == "test.yaml"


@pytest.mark.parametrize(
    ("extra", "ns", "path", "reason"),
    [
        ("", "[]", "zones.example.test.ns", "at least one"),
        ("", "[ns1.example.test, ns1.example.test.]", "zones.example.test.ns", "duplicate"),
        ("", "[ns1]", "zones.example.test.ns[0]", "full host name"),
        ("", "[ns9.example.test]", "zones.example.test.ns", "has no A/AAAA"),
        ("    soa: {serial: -1}", "[ns1.example.test]", "zones.example.test.soa.serial", ">= 0"),
        ("    soa: {minimum: x}", "[ns1.example.test]", "zones.example.test.soa.minimum", "integer"),
        ("    soa: {mname: 'bad name.test'}", "[ns1.example.test]", "zones.example.test.soa.mname", "label"),
        ("    soa: {rname: 'a.b@example.test'}", "[ns1.example.test]", "zones.example.test.soa.rname", "one label"),
        ("    soa: {refersh: 5}", "[ns1.example.test]", "zones.example.test.soa.refersh", "did you mean 'refresh'"),
        ("    ttl: 1.5", "[ns1.example.test]", "zones.example.test.ttl", "integer"),
        ("    tll: 5", "[ns1.example.test]", "zones.example.test.tll", "did you mean 'ttl'"),
    ],
)
def test_zone_errors_name_the_key_path(extra: str, ns: str, path: str, reason: str) -> None:
    error = _error(extra=extra, ns=ns)
    assert error.path == path
    assert reason in error.reason


def test_duplicate_and_bad_zone_names() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        load_test_zones("zones:\n  a.test: {ns: [ns.b.test]}\n  A.TEST.: {ns: [ns.b.test]}\n")
    with pytest.raises(ConfigError, match="invalid label") as info:
        load_test_zones("zones:\n  'bad zone': {ns: [ns.b.test]}\n")
    assert info.value.path == "zones.bad zone"
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_test_zones("zones:\n  a.test: [1]\n")
    assert load_test_zones("zones: {}\n") == ()


def test_out_of_zone_name_servers_need_no_glue() -> None:
    (zone,) = load_test_zones("zones:\n  a.test: {ns: [ns1.b.test, ns2.b.test]}\n")
    assert zone.ns == ("ns1.b.test", "ns2.b.test")
    assert zone.soa.mname == "ns1.b.test"


def test_name_helpers() -> None:
    assert absolute_name("@", "example.test") == "example.test"
    assert absolute_name("www", "example.test") == "www.example.test"
    assert absolute_name("WWW.Other.", "example.test") == "www.other"
    assert absolute_name(".", "example.test") == ""
    with pytest.raises(RdataError):
        absolute_name("", "example.test")
    assert check_name("") is None
    assert check_name("a." * 127 + "a") is not None
    assert check_name("*.a", wildcard=True) is None
    assert parse_rdata(A, "1.2.3.4", "x") == (b"\x01\x02\x03\x04",)
    assert parse_rdata(257, '0 issue "a\\"b"', "x") == (b"\x00\x05issuea\"b",)
    with pytest.raises(RdataError, match="unsupported"):
        parse_rdata(99, "x", "x")
    with pytest.raises(RdataError, match="15"):
        parse_rdata(257, "0 abcdefghijklmnopq x", "x")
