"""Shared helpers for the benchmark scripts (bench/dns_bench.py, bench/http_bench.py).

Free loopback ports, a process's CPU time and wake-ups from /proc, starting and stopping the servers under test
(each stopped by its own pid), machine and tool facts for the report, Markdown tables, and writing a
script's section into bench/README.md between `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers so that
every figure there comes from one run of the scripts.

Benchmarks are scripts, not tests: nothing here is imported by the test suite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
README = BENCH_DIR / "README.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark step failed."""


# ---------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1", *, udp_too: bool = False) -> int:
    """A port free for TCP (and UDP when `udp_too`) on `host`, found by binding port 0."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise BenchError(f"no free port on {host}")


def wait_tcp(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts TCP connections on host:port (the server under test is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


# ---------------------------------------------------------------- CPU from /proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (HAProxy master/worker, a CLI that forks)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (all threads included); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])      # fields 14 and 15 of proc(5): utime, stime


class CpuMeter:
    """CPU seconds spent by a process and its descendants between start() and stop()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._before: dict[int, int] = {}
        self.seconds = 0.0

    def start(self) -> None:
        self._before = {p: cpu_ticks(p) for p in process_tree(self.pid)}

    def stop(self) -> float:
        after = {p: cpu_ticks(p) for p in process_tree(self.pid)}
        ticks = sum(t - self._before.get(p, 0) for p, t in after.items())
        self.seconds = ticks / CLK_TCK
        return self.seconds


def wakeups(pid: int) -> int:
    """Voluntary context switches of all threads of one process: each is a sleep (a blocking receive, an
    epoll_wait, a futex) that ended in a wake-up; 0 if it is gone."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


class WakeMeter:
    """Wake-ups (voluntary context switches, all threads) of a process and its descendants between start()
    and stop(): how often the server slept and was woken, which at a bounded rate costs more CPU than the
    queries themselves."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._before: dict[int, int] = {}
        self.count = 0

    def start(self) -> None:
        self._before = {p: wakeups(p) for p in process_tree(self.pid)}

    def stop(self) -> int:
        after = {p: wakeups(p) for p in process_tree(self.pid)}
        self.count = sum(n - self._before.get(p, 0) for p, n in after.items())
        return self.count


# ---------------------------------------------------------------- processes


def taskset_prefix(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` when asked for, there is more than one CPU, and taskset exists."""
    if cpus is None or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", cpus]


@dataclass
class Server:
    """A server under test started by us; stopped by its own pid (SIGTERM, then SIGKILL)."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def started(name: str, argv: Sequence[str], workdir: Path, *, cpus: str | None = None,
            ready: Callable[[Server], None] | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `argv` (logging to workdir/NAME.log), wait for `ready`, stop it on exit whatever happens."""
    log = workdir / f"{name}.log"
    cmd = [*taskset_prefix(cpus), *argv]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, env={**os.environ, **(env or {})})
    server = Server(name, proc, log)
    try:
        if ready is not None:
            try:
                ready(server)
            except BenchError as exc:
                raise BenchError(f"{name} did not start: {exc}\n--- {log} ---\n{server.tail()}") from None
        yield server
    finally:
        server.stop()


def run(argv: Sequence[str], *, timeout: float, cpus: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a load generator to completion and return its output (raises BenchError on failure)."""
    cmd = [*taskset_prefix(cpus), *argv]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{shlex.join(cmd)} ran past {timeout:.0f} s") from None
    if res.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} exited {res.returncode}: {res.stderr[-2000:]}")
    return res


# ---------------------------------------------------------------- facts for the report


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def tool_version(argv: Sequence[str], pattern: str = r"[Vv]ersion\s*([0-9][\w.+~-]*)") -> str:
    """The first version number a tool prints (stdout or stderr), or 'not installed'."""
    if not shutil.which(argv[0]) and not Path(argv[0]).exists():
        return "not installed"
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = res.stdout + res.stderr
    m = re.search(pattern, text)
    return m.group(1) if m else (text.strip().splitlines() or ["unknown"])[0]


def git_commit() -> str:
    res = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() or "unknown"


def machine_lines(extra_versions: dict[str, str], command: str) -> list[str]:
    """Markdown bullet lines: date, machine, versions, the exact command."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = {"Python": platform.python_version(), **extra_versions}
    return [
        f"- Date: {now}; repository commit {git_commit()}",
        f"- Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, Linux {platform.release()}; "
        f"load average at start {os.getloadavg()[0]:.2f} (other work on the machine makes throughput and tail "
        "latency noisy; CPU per query/request is the steadier figure)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Command: `{command}`",
    ]


def command_line() -> str:
    return shlex.join(["python", os.path.relpath(sys.argv[0], REPO_DIR), *sys.argv[1:]])


# ---------------------------------------------------------------- report


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")
    numeric = [all(isinstance(r[i], int | float) or _looks_numeric(r[i]) for r in rows) if rows else False
               for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _looks_numeric(v: object) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,.]+( ?[a-zµ%x/]+)?|n/a|—", str(v)))


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def write_section(name: str, body: str, readme: Path = README) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in bench/README.md."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, nearest rank) of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]
