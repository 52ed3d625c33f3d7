"""The production install: a wheel built from this tree, installed into a fresh venv outside the
checkout, runs `gslb check-config`, `gslb serve` and `regional-lb serve` from another directory
(issue 9: the GeoIP database must travel in the wheel as package data)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
import yaml

from tests.gslb_helpers import free_dns_port, free_port

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "gslb", "regional_lb", "geo_data")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the wheel built from a copy of this tree (no checkout on sys.path)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
                   check=True, cwd=base, capture_output=True, text=True)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=base)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
                   check=True, cwd=base, capture_output=True, text=True)
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no checkout in it or above it."""
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    return cwd


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _run(bindir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bindir / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=_env())


@pytest.fixture
def serving(installed: Path, elsewhere: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_wheel_carries_the_geoip_database(installed: Path, elsewhere: Path) -> None:
    code = "import gslb.geoip as g, sys; print(g.DEFAULT_DATABASE); sys.exit(not g.DEFAULT_DATABASE.is_file())"
    result = _run(installed, elsewhere, "python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout
    assert str(ROOT) not in result.stdout


def test_installed_gslb_checks_and_serves_the_example_config(installed: Path, elsewhere: Path,
                                                             serving: list[subprocess.Popen[str]]) -> None:
    config = yaml.safe_load((ROOT / "deploy/example/gslb.yaml").read_text())
    dns_port, admin_port = free_dns_port(), free_port()
    config["dns"]["listen"] = [f"127.0.0.1:{dns_port}"]
    config["admin"]["listen"] = f"127.0.0.1:{admin_port}"
    path = elsewhere / "gslb.yaml"
    path.write_text(yaml.safe_dump(config))

    checked = _run(installed, elsewhere, "gslb", "check-config", "gslb.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout

    proc = subprocess.Popen([str(installed / "gslb"), "serve", "-c", "gslb.yaml"], cwd=elsewhere, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    serving.append(proc)
    query = dns.message.make_query("www.example.test", "A")
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=0.3)
            break
        except (dns.exception.Timeout, ConnectionRefusedError):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the installed gslb did not start answering"
    assert reply.rcode() == 0
    assert reply.answer, reply
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_installed_regional_lb_serves_the_example_edge_config(installed: Path, elsewhere: Path,
                                                              serving: list[subprocess.Popen[str]]) -> None:
    config = yaml.safe_load((ROOT / "deploy/example/edge.yaml").read_text())
    port, admin_port = free_port(), free_port()
    config["listen"] = [{"address": f"127.0.0.1:{port}"}]
    config["admin"]["listen"] = f"127.0.0.1:{admin_port}"
    config.pop("latency_push", None)
    path = elsewhere / "edge.yaml"
    path.write_text(yaml.safe_dump(config))

    checked = _run(installed, elsewhere, "regional-lb", "check-config", "edge.yaml")
    assert checked.returncode == 0, checked.stderr

    proc = subprocess.Popen([str(installed / "regional-lb"), "serve", "-c", "edge.yaml"], cwd=elsewhere,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    serving.append(proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/lb/healthz", timeout=1) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:     # no backend answers here: 503 is an answer too
            status = exc.code
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the installed regional-lb did not start answering"
            time.sleep(0.1)
            continue
        break
    assert status in (200, 503)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
