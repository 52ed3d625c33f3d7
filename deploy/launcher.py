"""Start the whole demo topology on loopback; stop all of it on Ctrl-C / SIGTERM.

    python -m deploy.launcher                   # what `make run` does
    python -m deploy.launcher --run-dir /tmp/demo --ready-file /tmp/demo/ready.json \\
        --dns-port 0 --admin-port 0 --lb-port 0 --lb-admin-port 0 --app-port 0     # tests: free ports

What runs (every piece a subprocess, logs in RUN_DIR/logs/):

    redis-server      127.0.0.1:<free port>       app sessions (db 0, shared by every region, so a
                                                  session survives region failover) and edge LB state
    gslb              DNS 127.0.0.1:1053 + [::1]:1053 (UDP, TCP), admin 127.0.0.1:8053
    per region N      us-east (1), eu-central (2), ap-northeast (3):
      edge LB         127.0.N.1:8080   (health /lb/healthz, admin :9080); sticky_cookie on /api/auth/**
                                       keeps a user on one of the region's two internal groups
      group a         internal LB 127.0.N.2:8080 (admin :9080) over apps 127.0.N.21:8000, 127.0.N.22:8000
      group b         internal LB 127.0.N.3:8080 (admin :9080) over apps 127.0.N.23:8000, 127.0.N.24:8000
                      (apps: python -m deploy.demo_app --name <region>-app-1..4)

The configs are deploy/local/*.yaml (gslb, edge-<region>, internal-<region>-a, internal-<region>-b);
they are rendered into RUN_DIR with the ports actually used (a port given as 0 means "any free
one") and the Redis port filled in.  Everything after Redis starts at once.  When every piece
answers (and, within --health-timeout, every region is healthy as the GSLB sees it) the launcher
prints how to try it and writes --ready-file: JSON with the ports, addresses, run dir and pids.

Stopping: SIGINT or SIGTERM stops the edges, then the internal LBs, the app servers, the GSLB
and Redis, each with SIGTERM to its own process group and SIGKILL after --stop-timeout.
Children also get SIGTERM from the kernel if the launcher itself dies (PR_SET_PDEATHSIG).
Exit status: 0 after a requested stop, 1 if a piece failed to start. A port given explicitly that is
already taken on one of its addresses (another demo running) stops the launcher at once, naming
the address and port. After a failure the temporary run dir is kept (its path is printed) so the
logs that say why are still there.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCAL = Path(__file__).resolve().parent / "local"

REGIONS: tuple[tuple[int, str], ...] = ((1, "us-east"), (2, "eu-central"), (3, "ap-northeast"))
DEFAULT_PORTS = {"dns": 1053, "admin": 8053, "lb": 8080, "lb_admin": 9080, "app": 8000, "redis": 6379}
ADMIN_TOKEN = "demo-token"


def edge_host(n: int) -> str:
    return f"127.0.{n}.1"


GROUPS: tuple[str, ...] = ("a", "b")        # the internal groups of every region (configs internal-<region>-<g>)


def group_id(region: str, group: str) -> str:
    """The edge's backend id for an internal group (its X-LB-Backend), e.g. "ap-northeast-group-a"."""
    return f"{region}-group-{group}"


def internal_host(n: int, group: str = "a") -> str:
    """Group a's internal LB is 127.0.N.2, group b's 127.0.N.3."""
    return f"127.0.{n}.{2 + GROUPS.index(group)}"


def internal_hosts(n: int) -> tuple[str, ...]:
    return tuple(internal_host(n, g) for g in GROUPS)


def group_app_hosts(n: int, group: str) -> tuple[str, str]:
    """Group a's apps are 127.0.N.21 and .22 (app-1, app-2); group b's .23 and .24 (app-3, app-4)."""
    first = 21 + 2 * GROUPS.index(group)
    return f"127.0.{n}.{first}", f"127.0.{n}.{first + 1}"


def app_hosts(n: int) -> tuple[str, ...]:
    """All of region N's app servers, app-1 first."""
    return tuple(h for g in GROUPS for h in group_app_hosts(n, g))


# -- ports --------------------------------------------------------------------------------------

def _bindable(host: str, port: int, kind: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return True
    except OSError:
        return False


def ipv6_loopback() -> bool:
    return _bindable("::1", 0, socket.SOCK_STREAM)


def pick_port(hosts: list[str], *, udp: bool = False, attempts: int = 200) -> int:
    """A port free on every one of `hosts` (TCP, and UDP too if `udp`)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((hosts[0] if ":" not in hosts[0] else "127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
        if all(_bindable(h, port, k) for h in hosts for k in kinds):
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


@dataclass(frozen=True, slots=True)
class Ports:
    dns: int
    admin: int
    lb: int
    lb_admin: int
    app: int
    redis: int


def choose_ports(requested: dict[str, int], *, v6: bool) -> Ports:
    """Resolve 0 ("any free") to real ports, each free on every address that uses it."""
    lb_hosts = [h for n, _ in REGIONS for h in (edge_host(n), *internal_hosts(n))]
    app = [h for n, _ in REGIONS for h in app_hosts(n)]
    users: dict[str, tuple[list[str], bool]] = {
        "dns": (["127.0.0.1", *(["::1"] if v6 else [])], True),
        "admin": (["127.0.0.1"], False),
        "lb": (lb_hosts, False),
        "lb_admin": (lb_hosts, False),
        "app": (app, False),
        "redis": (["127.0.0.1"], False),
    }
    chosen: dict[str, int] = {}
    for key, (hosts, udp) in users.items():
        port = requested.get(key, 0)
        if port != 0:
            kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
            for host in hosts:
                for kind in kinds:
                    if not _bindable(host, port, kind):
                        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                        proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                        raise RuntimeError(
                            f"{where} ({proto}, the {key.replace('_', ' ')} port) is already in use: is another "
                            f"demo running? Stop it, or choose another port with --{key.replace('_', '-')}-port")
        if port == 0:
            port = pick_port(hosts, udp=udp)
            while port in chosen.values():
                port = pick_port(hosts, udp=udp)
        chosen[key] = port
    return Ports(**chosen)


# -- config rendering ---------------------------------------------------------------------------

def render(text: str, ports: Ports, *, v6: bool, template_dir: Path) -> str:
    """A deploy/local config with its default ports replaced by `ports` (and ::1 dropped if absent)."""
    if not v6:
        text = re.sub(r',\s*"\[::1\]:\d+"', "", text)
    mapping = {DEFAULT_PORTS[k]: getattr(ports, k) for k in DEFAULT_PORTS}
    text = re.sub(r"(?<=redis://127\.0\.0\.1):6379\b", f":{ports.redis}", text)

    def port_sub(m: re.Match[str]) -> str:
        port = int(m.group(2))
        return f"{m.group(1)}:{mapping.get(port, port)}" if port != DEFAULT_PORTS["redis"] else m.group(0)

    text = re.sub(r"(127\.0\.\d+\.\d+|\[::1\]):(\d+)\b", port_sub, text)

    def abs_path(m: re.Match[str]) -> str:
        path = Path(m.group(2))
        return m.group(1) + (str(path) if path.is_absolute() else str((template_dir / path).resolve()))

    return re.sub(r"^(\s*database:\s*)([^\s#]+)", abs_path, text, flags=re.MULTILINE)


def render_configs(run_dir: Path, ports: Ports, *, v6: bool, source: Path = LOCAL) -> dict[str, Path]:
    out = {}
    for template in sorted(source.glob("*.yaml")):
        target = run_dir / template.name
        target.write_text(render(template.read_text(encoding="utf-8"), ports, v6=v6, template_dir=source),
                          encoding="utf-8")
        out[template.stem] = target
    return out


# -- processes ----------------------------------------------------------------------------------

def _die_with_parent() -> None:     # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    ready: Callable[[], bool]
    stage: int                           # stop order: higher stops first
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                                     start_new_session=not sys.platform.startswith("linux"))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_children(children: list[Child], timeout: float) -> None:
    """SIGTERM each stage's process groups (edges first), wait, SIGKILL what is left."""
    for stage in sorted({c.stage for c in children}, reverse=True):
        group = [c for c in children if c.stage == stage and c.proc is not None]
        for child in group:
            if child.alive():
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in group:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal_group(signal.SIGKILL)
                child.proc.wait()
            child.signal_group(signal.SIGKILL)      # anything its process group left behind
    for child in children:
        child.close_log()


# -- readiness probes ---------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via an http_proxy


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def http_json(url: str, timeout: float = 1.0) -> Any:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def dns_answers(port: int, name: str = "example.test") -> bool:
    from dnslib import DNSRecord

    query = DNSRecord.question(name, "SOA")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(query.pack(), ("127.0.0.1", port))
            data, _ = sock.recvfrom(4096)
        return bool(DNSRecord.parse(data).header.id == query.header.id)
    except Exception:              # refused, timed out, or not a DNS answer
        return False


def gslb_regions_up(admin_port: int) -> bool:
    body = http_json(f"http://127.0.0.1:{admin_port}/api/regions")
    if not isinstance(body, dict) or not isinstance(body.get("regions"), list):
        return False
    # eligible (up, not drained) and the last probe of this GSLB succeeded (not merely assumed up)
    return all(bool(r.get("eligible") and (r.get("last_probe") or {}).get("ok")) for r in body["regions"])


# -- the topology -------------------------------------------------------------------------------

def python_cmd(module_main: str, *args: str) -> list[str]:
    """Run `main()` of a module's CLI (works whether or not the package has a __main__)."""
    return [sys.executable, "-c", f"import sys; from {module_main} import main; sys.exit(main())", *args]


def build_children(run_dir: Path, configs: dict[str, Path], ports: Ports, redis_bin: str) -> list[Child]:
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis_dir = run_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    children = [Child(
        "redis", [redis_bin, "--port", str(ports.redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(redis_dir), "--protected-mode", "no"],
        logs / "redis.log", lambda: redis_ping(ports.redis), stage=0)]
    children.append(Child(
        "gslb", python_cmd("gslb.cli", "serve", "-c", str(configs["gslb"])), logs / "gslb.log",
        lambda: dns_answers(ports.dns) and http_status(f"http://127.0.0.1:{ports.admin}/healthz") == 200,
        stage=1))
    for n, region in REGIONS:
        for i, host in enumerate(app_hosts(n), start=1):
            name = f"{region}-app-{i}"
            children.append(Child(
                name, [sys.executable, "-m", "deploy.demo_app", "--listen", f"{host}:{ports.app}", "--name", name,
                       "--region", region, "--redis", f"redis://127.0.0.1:{ports.redis}/0"],
                logs / f"{name}.log",
                functools.partial(_answers, f"http://{host}:{ports.app}/healthz", 200), stage=2))
        lbs = [(f"internal-{region}-{g}", internal_host(n, g), 3) for g in GROUPS]
        for name, host, stage in [*lbs, (f"edge-{region}", edge_host(n), 4)]:
            children.append(Child(
                name, python_cmd("regional_lb.cli", "serve", "-c", str(configs[name])), logs / f"{name}.log",
                functools.partial(_answers, f"http://{host}:{ports.lb}/lb/healthz", None), stage=stage))
    return children


def _answers(url: str, status: int | None) -> bool:
    """`url` answers HTTP at all (status None) or with `status`."""
    got = http_status(url)
    return got is not None and (status is None or got == status)


def regions_healthy(ports: Ports) -> dict[str, bool]:
    state = {f"edge-{r}": http_status(f"http://{edge_host(n)}:{ports.lb}/lb/healthz") == 200 for n, r in REGIONS}
    state["gslb-regions"] = gslb_regions_up(ports.admin)
    return state


def howto(ports: Ports, run_dir: Path) -> str:
    dns, lb = ports.dns, ports.lb
    return f"""
Demo running (logs and rendered configs in {run_dir}). Try:

  dig @127.0.0.1 -p {dns} www.example.test +subnet=168.126.63.0/24    # Seoul     -> 127.0.3.1 ap-northeast
  dig @127.0.0.1 -p {dns} www.example.test +subnet=3.120.0.0/24        # Frankfurt -> 127.0.2.1 eu-central
  dig @127.0.0.1 -p {dns} www.example.test +subnet=3.208.0.0/24       # Ashburn   -> 127.0.1.1 us-east
  dig @127.0.0.1 -p {dns} www.example.test +tcp
  dig @::1 -p {dns} example.test SOA

  curl -si http://127.0.3.1:{lb}/ | grep -i '^x-'     # X-LB-Backend: the edge's pick of group a or b
  curl -si -c jar -b jar -d user=alice http://127.0.3.1:{lb}/api/auth/login
  curl -si -c jar -b jar http://127.0.3.1:{lb}/api/auth/me    # same group every time (LBSESSIONID):
  #   group a = internal LB 127.0.3.2, ap-northeast-app-1/2; group b = 127.0.3.3, ap-northeast-app-3/4
  curl -s  http://127.0.0.1:{ports.admin}/api/regions | python3 -m json.tool

  # latency steering (api.example.test): report that Seoul's network is fastest from eu-central
  curl -s -X POST -H 'Authorization: Bearer {ADMIN_TOKEN}' -H 'Content-Type: application/json' \\
       -d '{{"measurements":[{{"network":"168.126.63.0/24","region":"eu-central","rtt_ms":5}}]}}' \\
       http://127.0.0.1:{ports.admin}/api/latency
  dig @127.0.0.1 -p {dns} api.example.test +subnet=168.126.63.0/24 +short  # -> 127.0.2.1
  curl -s  http://127.0.3.1:{ports.lb_admin}/api/pools -H 'Authorization: Bearer {ADMIN_TOKEN}'

Status pages in a browser (reading needs no token; the drain buttons ask for it: {ADMIN_TOKEN}):
  http://127.0.0.1:{ports.admin}/          GSLB: map, regions, share of answers, why-not, explain
  http://127.0.3.1:{ports.lb_admin}/          ap-northeast edge LB stats (127.0.N.1: region N; .2/.3: internal LBs)

Kill an app server or an edge (see pids in the ready file / `ps`) and watch the answers move.
Ctrl-C stops everything.
"""


# -- for tests: the launcher as a context manager ---------------------------------------------------

@contextlib.contextmanager
def running_demo(run_dir: Path, *, free_ports: bool = True, timeout: float = 100.0,
                 extra_args: tuple[str, ...] = ()) -> Any:
    """Start the launcher in a subprocess, yield its ready-file JSON (plus "output": a callable
    returning what it printed so far), and stop it with SIGTERM on exit (SIGKILL to its group
    if it does not stop within 60 s).

        with running_demo(tmp_path) as demo:
            edge = demo["regions"]["ap-northeast"]["edge"]      # "127.0.3.1:PORT"
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ready_file = run_dir / "ready.json"
    out_path = run_dir / "launcher.out"
    ports = ["--dns-port", "0", "--admin-port", "0", "--lb-port", "0", "--lb-admin-port", "0",
             "--app-port", "0"] if free_ports else []
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.launcher", "--run-dir", str(run_dir / "run"),
                                 "--ready-file", str(ready_file), *ports, *extra_args],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return out_path.read_text(errors="replace")

    try:
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"launcher exited with {proc.returncode}:\n{output()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"launcher not ready within {timeout:g}s:\n{output()[-4000:]}")
            time.sleep(0.1)
        info = json.loads(ready_file.read_text())
        info["output"] = output
        info["process"] = proc
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- main ---------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy.launcher", description="Start the local demo topology.")
    p.add_argument("--run-dir", type=Path, help="where rendered configs, logs and Redis files go "
                   "(default: a new temporary directory, removed at exit)")
    p.add_argument("--ready-file", type=Path, help="write JSON here when everything answers")
    for key, default in DEFAULT_PORTS.items():
        if key == "redis":
            continue
        p.add_argument(f"--{key.replace('_', '-')}-port", type=int, default=default,
                       help=f"default {default}; 0 = any free port")
    p.add_argument("--redis-port", type=int, default=0, help="default: any free port")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds for every piece to answer")
    p.add_argument("--health-timeout", type=float, default=30.0,
                   help="seconds more for every region to be healthy (a warning if not)")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="SIGTERM -> SIGKILL grace per stage")
    p.add_argument("--no-ipv6", action="store_true", help="do not listen on ::1")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    redis_bin = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                 else None)
    if redis_bin is None:
        print("redis-server is not installed (`make sysdeps` installs it)", file=sys.stderr)
        return 1
    v6 = not args.no_ipv6 and ipv6_loopback()
    requested = {"dns": args.dns_port, "admin": args.admin_port, "lb": args.lb_port,
                 "lb_admin": args.lb_admin_port, "app": args.app_port, "redis": args.redis_port}
    try:
        ports = choose_ports(requested, v6=v6)
    except RuntimeError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 1
    temp = None
    if args.run_dir is None:
        temp = run_dir = Path(tempfile.mkdtemp(prefix="gslb-demo-"))
    else:
        run_dir = args.run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
    configs = render_configs(run_dir, ports, v6=v6)
    children = build_children(run_dir, configs, ports, redis_bin)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    status = 0
    try:
        status = _run(args, children, ports, run_dir, env, v6)
    except _Stop as stop:
        print(f"\nlauncher: {stop}: stopping everything", file=sys.stderr, flush=True)
    finally:
        for sig in old:                                   # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        stop_children(children, args.stop_timeout)
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if temp is not None:
            if status == 0:
                shutil.rmtree(temp, ignore_errors=True)
            else:                                         # the logs say why: keep them
                print(f"launcher: logs and rendered configs kept in {temp}", file=sys.stderr, flush=True)
    print("launcher: all stopped", file=sys.stderr, flush=True)
    return status


def _wait(what: Callable[[], bool], deadline: float, children: list[Child]) -> bool:
    while time.monotonic() < deadline:
        for child in children:
            if child.proc is not None and not child.alive():
                raise _Failed(child)
        if what():
            return True
        time.sleep(0.1)
    return False


class _Failed(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


def _region_info(n: int, region: str, ports: Ports) -> dict[str, Any]:
    """A region in the ready file. "internal" (group a's LB) and "apps" (all four) predate the groups;
    "internals" lists both internal LBs and "groups" maps the edge's backend id to its LB and apps."""
    return {
        "edge": f"{edge_host(n)}:{ports.lb}",
        "internal": f"{internal_host(n)}:{ports.lb}",
        "internals": [f"{h}:{ports.lb}" for h in internal_hosts(n)],
        "apps": [f"{h}:{ports.app}" for h in app_hosts(n)],
        "groups": {group_id(region, g): {"internal": f"{internal_host(n, g)}:{ports.lb}",
                                         "apps": [f"{h}:{ports.app}" for h in group_app_hosts(n, g)],
                                         "app_names": [f"{region}-app-{2 * i + k}" for k in (1, 2)]}
                   for i, g in enumerate(GROUPS)},
        "redis_db": 0,
    }


def _run(args: argparse.Namespace, children: list[Child], ports: Ports, run_dir: Path,
         env: dict[str, str], v6: bool) -> int:
    out = sys.stderr
    deadline = time.monotonic() + args.start_timeout
    try:
        redis = children[0]
        redis.start(env)
        if not _wait(redis.ready, deadline, [redis]):
            print("launcher: redis did not answer in time", file=out)
            return 1
        for child in children[1:]:
            child.start(env)
        for child in children:
            if not _wait(child.ready, deadline, children):
                print(f"launcher: {child.name} did not answer within {args.start_timeout:g}s; "
                      f"its log ({child.log}):\n{child.tail()}", file=out)
                return 1
            print(f"launcher: {child.name:<24} up (pid {child.pid})", file=out, flush=True)
        health_deadline = time.monotonic() + args.health_timeout
        healthy = _wait(lambda: all(regions_healthy(ports).values()), health_deadline, children)
        if not healthy:
            bad = [k for k, ok in regions_healthy(ports).items() if not ok]
            print(f"launcher: warning: not healthy after {args.health_timeout:g}s: {', '.join(bad)}", file=out)
    except _Failed as failed:
        child = failed.child
        code = child.proc.returncode if child.proc else None
        print(f"launcher: {child.name} exited early (status {code}); its log ({child.log}):\n{child.tail()}",
              file=out)
        return 1
    info = {
        "run_dir": str(run_dir), "healthy": healthy, "ipv6": v6, "admin_token": ADMIN_TOKEN,
        "ports": {"dns": ports.dns, "gslb_admin": ports.admin, "lb": ports.lb, "lb_admin": ports.lb_admin,
                  "app": ports.app, "redis": ports.redis},
        "redis_url": f"redis://127.0.0.1:{ports.redis}",
        "regions": {region: _region_info(n, region, ports) for n, region in REGIONS},
        "pids": {c.name: c.pid for c in children},
        "launcher_pid": os.getpid(),
    }
    if args.ready_file is not None:
        tmp = args.ready_file.with_suffix(args.ready_file.suffix + ".tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        tmp.replace(args.ready_file)
    print(howto(ports, run_dir), file=out, flush=True)
    reported: set[str] = set()
    while True:                                        # until a signal raises _Stop
        for child in children:
            if not child.alive() and child.name not in reported:
                reported.add(child.name)
                code = child.proc.returncode if child.proc else None
                print(f"launcher: {child.name} exited (status {code}); the rest keeps running", file=out,
                      flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
