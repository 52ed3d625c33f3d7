"""The demo launcher: configs render with the ports in use; it starts everything and stops everything."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deploy import launcher
from deploy.launcher import (
    GROUPS,
    REGIONS,
    Child,
    Ports,
    choose_ports,
    group_app_hosts,
    group_id,
    internal_host,
    render,
    render_configs,
    running_demo,
    stop_children,
)

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _listening(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def test_render_replaces_ports_and_keeps_the_rest() -> None:
    ports = Ports(dns=2053, admin=2054, lb=2080, lb_admin=2090, app=2000, redis=2379)
    text = (LOCAL := launcher.LOCAL / "gslb.yaml").read_text()
    out = yaml.safe_load(render(text, ports, v6=True, template_dir=LOCAL.parent))
    assert out["dns"]["listen"] == ["127.0.0.1:2053", "[::1]:2053"]
    assert out["admin"]["listen"] == "127.0.0.1:2054"
    assert out["regions"]["ap-northeast"]["probe"]["url"] == "http://127.0.3.1:2080/lb/healthz"
    assert out["regions"]["ap-northeast"]["addresses"] == ["127.0.3.1"]
    out = yaml.safe_load(render(text, ports, v6=False, template_dir=LOCAL.parent))
    assert out["dns"]["listen"] == ["127.0.0.1:2053"]
    edge = yaml.safe_load(render((launcher.LOCAL / "edge-eu-central.yaml").read_text(), ports, v6=True,
                                 template_dir=LOCAL.parent))
    assert edge["listen"] == [{"address": "127.0.2.1:2080"}]
    assert edge["admin"]["listen"] == "127.0.2.1:2090"
    assert edge["state"]["url"] == "redis://127.0.0.1:2379/2"
    assert [(b["address"], b["id"]) for b in edge["pools"]["internal"]["backends"]] == [
        ("127.0.2.2:2080", "eu-central-group-a"), ("127.0.2.3:2080", "eu-central-group-b")]
    for group, apps in (("a", (1, 2)), ("b", (3, 4))):
        internal = yaml.safe_load(render((launcher.LOCAL / f"internal-eu-central-{group}.yaml").read_text(), ports,
                                         v6=True, template_dir=LOCAL.parent))
        assert internal["listen"] == [{"address": f"127.0.2.{2 + 'ab'.index(group)}:2080"}]
        assert [(b["address"], b["id"]) for b in internal["pools"]["app"]["backends"]] == [
            (f"127.0.2.{20 + i}:2000", f"eu-central-app-{i}") for i in apps]
    rel = render("geoip:\n  database: ../x.mmdb   # c\n", ports, v6=True, template_dir=Path("/a/b"))
    assert rel == "geoip:\n  database: /a/x.mmdb   # c\n"


def test_rendered_configs_load(tmp_path: Path) -> None:
    from regional_lb.config import load_config as load_lb

    ports = choose_ports({"dns": 0, "admin": 0, "lb": 0, "lb_admin": 0, "app": 0, "redis": 0}, v6=True)
    assert len({ports.dns, ports.admin, ports.lb, ports.lb_admin, ports.app, ports.redis}) == 6
    configs = render_configs(tmp_path, ports, v6=True)
    assert set(configs) == {"gslb"} | {f"edge-{r}" for _, r in REGIONS} | {
        f"internal-{r}-{g}" for _, r in REGIONS for g in GROUPS}
    for name, path in configs.items():
        if name != "gslb":
            cfg = load_lb(path)
            assert cfg.listeners[0].port == ports.lb
    # every edge's pool is the region's two groups, each group's pool its own two app servers
    for n, region in REGIONS:
        (pool,) = load_lb(configs[f"edge-{region}"]).pools.values()
        assert [(b.host, b.port, b.id) for b in pool.backends] == [
            (internal_host(n, g), ports.lb, group_id(region, g)) for g in GROUPS]
        names = []
        for g in GROUPS:
            internal = load_lb(configs[f"internal-{region}-{g}"])
            assert (internal.listeners[0].host, internal.role) == (internal_host(n, g), "internal")
            (app_pool,) = internal.pools.values()
            assert [(b.host, b.port) for b in app_pool.backends] == [(h, ports.app) for h in group_app_hosts(n, g)]
            names += [b.id for b in app_pool.backends]
        assert names == [f"{region}-app-{i}" for i in (1, 2, 3, 4)]


def test_stop_children_kills_whole_process_groups(tmp_path: Path) -> None:
    # a child that ignores SIGTERM and has a grandchild in its process group
    script = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
             "print(p.pid, flush=True); time.sleep(60)"
    stubborn = Child("stubborn", [sys.executable, "-c", script], tmp_path / "s.log", lambda: True, stage=1)
    polite = Child("polite", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "p.log",
                   lambda: True, stage=2)
    for child in (stubborn, polite):
        child.start(dict(os.environ))
    deadline = time.monotonic() + 10
    while not (tmp_path / "s.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int((tmp_path / "s.log").read_text().split()[0])
    started = time.monotonic()
    stop_children([stubborn, polite], timeout=0.5)
    assert time.monotonic() - started < 5
    assert polite.proc is not None
    assert polite.proc.returncode == -signal.SIGTERM
    assert stubborn.proc is not None
    assert stubborn.proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def _not_importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:          # not written yet, or half-written by someone else right now
        return True
    return False


# the programs' serving code; until it is all written the end-to-end launcher test waits
_PROGRAMS = ("gslb.cli", "gslb.app", "gslb.admin_api", "regional_lb.cli", "regional_lb.app")
_missing = [m for m in _PROGRAMS if _not_importable(m)]


@pytest.mark.timeout(150)
@pytest.mark.skipif(bool(_missing), reason=f"programs not written yet: {', '.join(_missing)}")
def test_launcher_starts_everything_and_sigterm_stops_everything(tmp_path: Path) -> None:
    import urllib.request

    with running_demo(tmp_path) as demo:
        assert demo["healthy"], demo["output"]()
        pids = demo["pids"]
        assert len(pids) == 1 + 1 + (1 + len(GROUPS) + 2 * len(GROUPS)) * len(REGIONS)
        ports = demo["ports"]
        listening = [("127.0.0.1", ports["dns"]), ("127.0.0.1", ports["gslb_admin"]),
                     ("127.0.0.1", ports["redis"])]
        for region in demo["regions"].values():
            assert region["internal"] == region["internals"][0]
            assert len(region["internals"]) == len(GROUPS)
            assert len(region["apps"]) == 2 * len(GROUPS)
            for addr in (region["edge"], *region["internals"], *region["apps"]):
                host, port = addr.rsplit(":", 1)
                listening.append((host, int(port)))
        assert all(_listening(h, p) for h, p in listening)

        # the path works: the edge answers through the internal LB from an app server of its region
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{demo['regions']['ap-northeast']['edge']}/", timeout=5) as resp:
            assert resp.headers["X-App-Region"] == "ap-northeast"
            assert resp.headers["X-App-Server"].startswith("ap-northeast-app-")
            # X-LB-Backend is the edge's pick (a group); the app server named is one of that group's
            group = demo["regions"]["ap-northeast"]["groups"][resp.headers["X-LB-Backend"]]
            assert resp.headers["X-App-Server"] in group["app_names"]

        proc = demo["process"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        output = demo["output"]()
    assert "all stopped" in output
    assert not (tmp_path / "ready.json").exists()
    assert all(_gone(pid) for pid in pids.values()), output
    assert not any(_listening(h, p) for h, p in listening)


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    free = ["--dns-port", "0", "--admin-port", "0", "--lb-port", "0", "--lb-admin-port", "0", "--app-port", "0"]
    return subprocess.run([sys.executable, "-m", "deploy.launcher", *free, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_a_taken_demo_port_stops_the_launcher_at_once_naming_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _launch("--run-dir", str(tmp_path / "run"), "--admin-port", str(port))
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (TCP, the admin port) is already in use" in result.stderr
    assert "--admin-port" in result.stderr
    assert not (tmp_path / "run").exists()          # nothing started, nothing to clean


def test_choose_ports_refuses_a_taken_port_on_any_of_its_addresses() -> None:
    host = internal_host(2, "b")
    with socket.socket() as busy:
        busy.bind((host, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"{host}:{port} \(TCP, the lb port\) is already in use"):
            choose_ports({"lb": port}, v6=False)


def test_a_failed_start_keeps_the_temporary_logs(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = _launch("--start-timeout", "0", env=env)
    assert result.returncode == 1
    kept = [line.rsplit(" ", 1)[-1] for line in result.stderr.splitlines() if "kept in" in line]
    assert len(kept) == 1, result.stderr
    run_dir = Path(kept[0])
    assert run_dir.parent == tmp_path
    assert (run_dir / "logs").is_dir()
    assert (run_dir / "gslb.yaml").is_file()
