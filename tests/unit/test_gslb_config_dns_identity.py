"""The `dns:` keys for cookies, NSID, CHAOS identity and the response cache: defaults, values, refusals."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from gslb.config import ConfigError, load_config
from gslb.dns.cookies import ServerCookies
from tests.gslb_helpers import gslb_config

SECRET_A, SECRET_B = "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
CLIENT = ipaddress.IPv4Address("192.0.2.1")


def write(tmp_path: Path, dns: dict[str, Any]) -> Path:
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    data["dns"].update(dns)
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults(tmp_path: Path) -> None:
    dns = load_config(write(tmp_path, {})).dns
    assert dns.cookies_enabled
    assert not dns.cookie_require
    assert dns.cookie_secrets == ()
    assert (dns.nsid, dns.identity, dns.version) == (None, None, None)
    assert (dns.cache_max_entries, dns.cache_max_bytes) == (50_000, 64 * 1024 * 1024)
    options = dns.responder_options()
    assert isinstance(options["cookies"], ServerCookies)          # a random secret
    assert options["require_cookies"] is False
    assert options["nsid"] is None


def test_values_are_read(tmp_path: Path) -> None:
    dns = load_config(write(tmp_path, {
        "cookies": {"secrets": [SECRET_A, SECRET_B], "require": True},
        "nsid": "gslb-eu-1", "identity": "ns1.example.test", "version": "gslb 1.0",
        "cache_max_entries": 1000, "cache_max_bytes": 1 << 20})).dns
    assert dns.cookie_secrets == (bytes.fromhex(SECRET_A), bytes.fromhex(SECRET_B))
    assert dns.cookie_require
    assert SECRET_A not in repr(dns)                               # secrets stay out of reprs and logs
    assert dns.nsid == b"gslb-eu-1"
    options = dns.responder_options()
    assert options["identity"] == "ns1.example.test"
    assert options["version"] == "gslb 1.0"
    assert (options["cache_size"], options["cache_max_bytes"]) == (1000, 1 << 20)
    # the first secret signs, the second verifies
    made = options["cookies"].make(b"\x01" * 8, CLIENT, 1000)
    assert ServerCookies([bytes.fromhex(SECRET_A)]).valid(b"\x01" * 8 + made, CLIENT, 1000)
    old = ServerCookies([bytes.fromhex(SECRET_B)]).make(b"\x01" * 8, CLIENT, 1000)
    assert options["cookies"].valid(b"\x01" * 8 + old, CLIENT, 1000)


def test_secrets_from_a_file_and_cookies_off(tmp_path: Path) -> None:
    (tmp_path / "cookie.keys").write_text(f"{SECRET_B}\n\n{SECRET_A}\n")
    dns = load_config(write(tmp_path, {"cookies": {"secrets_file": "cookie.keys"}})).dns
    assert dns.cookie_secrets == (bytes.fromhex(SECRET_B), bytes.fromhex(SECRET_A))
    off = load_config(write(tmp_path, {"cookies": {"enabled": False}})).dns
    assert off.responder_options()["cookies"] is None


@pytest.mark.parametrize(("dns", "path", "reason"), [
    ({"cookies": {"secrets": ["00ff"]}}, "dns.cookies.secrets", "item 0: must be 16 bytes"),
    ({"cookies": {"secrets": [SECRET_A, "xyz"]}}, "dns.cookies.secrets", "item 1: not hex"),
    ({"cookies": {"secrets": []}}, "dns.cookies.secrets", "at least one secret"),
    ({"cookies": {"secrets": "abc"}}, "dns.cookies.secrets", "expected a list"),
    ({"cookies": {"secrets": [SECRET_A], "secrets_file": "x"}}, "dns.cookies.secrets_file", "not both"),
    ({"cookies": {"secrets_file": "missing.keys"}}, "dns.cookies.secrets_file", "cannot read"),
    ({"cookies": {"enabled": False, "require": True}}, "dns.cookies.require", "not enabled"),
    ({"cookies": {"requier": True}}, "dns.cookies", "requier"),
    ({"nsid": ""}, "dns.nsid", "printable text"),
    ({"nsid": "x" * 129}, "dns.nsid", "1..128 bytes"),
    ({"identity": "a\nb"}, "dns.identity", "printable"),
    ({"version": 3}, "dns.version", "expected a string"),
    ({"cache_max_bytes": -1}, "dns.cache_max_bytes", "must be >= 0"),
    ({"cache_max_entries": "lots"}, "dns.cache_max_entries", "expected an integer"),
])
def test_bad_values_name_file_key_and_reason(tmp_path: Path, dns: dict[str, Any], path: str, reason: str) -> None:
    config_path = write(tmp_path, dns)
    with pytest.raises(ConfigError) as info:
        load_config(config_path)
    text = str(info.value)
    assert str(config_path) in text
    assert path in text
    assert reason in text
