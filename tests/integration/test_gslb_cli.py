"""The `gslb` command line: check-config, explain, and serve as a real process (signals, reload)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import yaml

from tests.gslb_helpers import SEOUL_NET, free_dns_port, free_port, gslb_config

ROOT = Path(__file__).resolve().parents[2]


def gslb(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def write(tmp: Path, data: dict, name: str = "gslb.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_config_is_valid():
    result = gslb("check-config", "deploy/example/gslb.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_names_file_key_path_and_reason(tmp_path):
    data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
    data["regions"]["us-east"]["probe"] = {"type": "http", "url": "http://127.0.1.1/", "intervall": "2s"}
    path = write(tmp_path, data)
    result = gslb("check-config", str(path))
    assert result.returncode == 1
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "intervall" in text)
    assert f"{path}:{line}: regions.us-east.probe.intervall: unknown key (did you mean 'interval'?)" in result.stderr
    assert result.stderr.splitlines()[-1] == f"{path}: 1 error"


def test_check_config_reports_every_error_in_file_order(tmp_path):
    data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
    data["dns"]["tcp_idle_timeout"] = "forever"
    data["dns"]["max_udp_sise"] = 1232
    data["latency"] = {"max_age": -5}
    path = write(tmp_path, data)
    result = gslb("check-config", str(path))
    assert result.returncode == 1
    lines = path.read_text().splitlines()
    errors = result.stderr.splitlines()
    assert errors[-1] == f"{path}: 3 errors", result.stderr
    found = {}
    for error in errors[:-1]:
        where, _, rest = error.partition(": ")
        found[rest.split(":")[0]] = int(where.rsplit(":", 1)[1])
    assert set(found) == {"dns.tcp_idle_timeout", "dns.max_udp_sise", "latency.max_age"}
    for key_path, line in found.items():
        assert key_path.rsplit(".", 1)[1] + ":" in lines[line - 1]
    assert [int(e.partition(": ")[0].rsplit(":", 1)[1]) for e in errors[:-1]] == sorted(found.values())


def test_bad_values_are_refused(tmp_path):
    cases = [
        (("regions", "us-east", "location"), [100, 0], "regions.us-east.location: latitude must be in"),
        (("regions", "us-east", "addresses"), ["not-ip"], "regions.us-east.addresses: item 0: not an IP"),
        (("dns", "listen"), ["127.0.0.1:99999"], "dns.listen[0]: bad port"),
    ]
    for keys, value, expected in cases:
        data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        result = gslb("check-config", str(write(tmp_path, data)))
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr


def test_missing_and_corrupt_geoip_database_are_clear_errors(tmp_path):
    data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
    data["geoip"]["database"] = str(tmp_path / "missing.mmdb")
    result = gslb("check-config", str(write(tmp_path, data)))
    assert result.returncode == 1
    assert "missing.mmdb" in result.stderr
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"this is not a maxmind database" * 10)
    data["geoip"]["database"] = str(corrupt)
    result = gslb("check-config", str(write(tmp_path, data)))
    assert result.returncode == 1
    assert "corrupt.mmdb" in result.stderr


def test_missing_config_file():
    result = gslb("check-config", "/nonexistent/gslb.yaml")
    assert result.returncode == 1
    assert "/nonexistent/gslb.yaml" in result.stderr
    assert "cannot read" in result.stderr


def test_explain_prints_regions_and_reason(tmp_path):
    path = write(tmp_path, gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None))
    result = gslb("explain", "-c", str(path), "www.example.test", "--client", "168.126.63.10")
    assert result.returncode == 0, result.stderr
    assert "ap-northeast" in result.stdout.splitlines()[-1]
    assert "Seoul" in result.stdout or "KR" in result.stdout
    assert "assumed" in result.stdout


def test_explain_probe_reports_an_unreachable_region_down_after_fall_failures(tmp_path):
    data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
    refused = free_port("127.0.3.1")            # nothing listens there: connection refused
    data["regions"]["ap-northeast"]["probe"] = {"type": "tcp", "target": f"127.0.3.1:{refused}",
                                                "interval": "1s", "timeout": "1s", "rise": 2, "fall": 3}
    path = write(tmp_path, data)
    result = gslb("explain", "-c", str(path), "www.example.test", "--client", "168.126.63.10", "--probe")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("region    ap-northeast"))
    assert line.startswith("region    ap-northeast: down [probed 3x: failed"), line
    assert "no probe configured" in next(x for x in result.stdout.splitlines() if "us-east" in x)
    answer = result.stdout.splitlines()[-1]
    assert answer.startswith("answer")
    assert "ap-northeast" not in answer


def test_version_names_geoip_attribution():
    result = gslb("--version")
    assert result.returncode == 0
    assert "DB-IP" in result.stdout


def test_serve_answers_reloads_on_sighup_and_stops_on_sigterm(tmp_path):
    dns_port, admin_port = free_dns_port(), free_port()
    data = gslb_config(tmp_path, dns_port=dns_port, admin_port=admin_port, lbs=None)
    path = write(tmp_path, data)
    proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", "-c", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                       options=[dns.edns.ECSOption(SEOUL_NET.split("/")[0], 24)])
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=0.3)
                break
            except (dns.exception.Timeout, ConnectionRefusedError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "gslb did not start answering"
        assert [rd.address for rd in reply.answer[0]] == ["127.0.3.1"]
        # Reload on SIGHUP: a renamed service appears.
        data["services"]["web.example.test"] = data["services"].pop("www.example.test")
        path.write_text(yaml.safe_dump(data))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            q = dns.message.make_query("web.example.test", "A")
            if dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=1).answer:
                break
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_service_name_with_static_address_records_is_refused(tmp_path):
    data = gslb_config(tmp_path, dns_port=1053, admin_port=8053, lbs=None)
    data["zones"]["example.test"]["records"]["www"] = {"A": ["127.0.0.80"]}
    result = gslb("check-config", str(write(tmp_path, data)))
    assert result.returncode == 1
    assert "services: 'www.example.test' also has static A records" in result.stderr
