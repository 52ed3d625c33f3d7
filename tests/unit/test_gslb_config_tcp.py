"""The `dns:` TCP keys of the GSLB config: defaults, and refusals that name file, key path and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gslb.config import ConfigError, load_config
from tests.gslb_helpers import gslb_config


def write(tmp_path: Path, dns: dict[str, Any]) -> Path:
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    data["dns"].update(dns)
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults(tmp_path):
    dns = load_config(write(tmp_path, {})).dns
    assert dns.tcp_max_connections == 1024
    assert dns.tcp_max_per_client == 64
    assert dns.tcp_max_unsent == 65536


def test_values_are_read(tmp_path):
    dns = load_config(write(tmp_path, {"tcp_max_per_client": 3, "tcp_max_unsent": 4096,
                                       "tcp_max_connections": 10, "tcp_idle_timeout": "250ms"})).dns
    assert (dns.tcp_max_per_client, dns.tcp_max_unsent, dns.tcp_max_connections) == (3, 4096, 10)
    assert dns.tcp_idle_timeout == 0.25


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("tcp_max_per_client", 0, "must be >= 1"),
    ("tcp_max_per_client", "many", "expected an integer"),
    ("tcp_max_per_client", 2.5, "expected an integer"),
    ("tcp_max_unsent", 100, "must be >= 1024"),
    ("tcp_max_unsent", 1 << 30, "must be <= 16777216"),
    ("tcp_max_unsent", True, "expected an integer"),
    ("tcp_max_connections", 0, "must be >= 1"),
    ("tcp_idle_timeout", "0ms", "must be >= 0.1s"),
])
def test_bad_values_name_file_key_and_reason(tmp_path, key, value, reason):
    path = write(tmp_path, {key: value})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert f"dns.{key}" in text
    assert reason in text


def test_misspelt_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"dns.*tcp_max_per_clients"):
        load_config(write(tmp_path, {"tcp_max_per_clients": 3}))
