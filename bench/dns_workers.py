"""GSLB with 1 and 2 workers beside gdnsd with 1 and 2 UDP threads and the platform's floor, one run (issue 11).

Servers, all on 127.0.0.1 with the same zone, regions and GeoIP database (bench/configs/):

  * gslb workers=1      `workers: 1`: one process does everything (the default)
  * gslb workers=2      `workers: 2`: a supervisor (probes, admin API) and two worker processes
                        answering on SO_REUSEPORT sockets (gslb/supervisor.py)
  * gdnsd udp_threads=1 / udp_threads=2   the established tool (its UDP threads also use SO_REUSEPORT)
  * echo processes=1 / processes=2        the floor: bench/udp_echo.py, Python processes on SO_REUSEPORT
                        sockets that answer each query with itself (a blocking recvfrom/sendto loop, no
                        event loop, nothing decided): what the machine charges any Python server per query

For each, dnsperf (`-c CLIENTS`: that many UDP sockets, so the kernel's SO_REUSEPORT hash of each
socket's address and port has enough of them to spread; one socket would always reach one worker)
measures
  1. CPU per query at the same bounded rate (`-Q RATE`, well under one worker's capacity), for
     `www` with one ECS subnet (answers from the response cache), then the same at `-Q RATE2`.
     CPU = utime+stime of the server's process tree (/proc) over the run; wake-ups = voluntary
     context switches of its threads (/proc/PID/task/*/status), each a sleep that ended.
  2. the spread across workers: during the RATE run each worker's queries (the supervisor's GET
     /api/workers) and its own CPU (/proc of its pid).
  3. queries/s flat out, cached (`www`, one ECS subnet) and misses (a file of distinct random /24
     ECS subnets that no response cache holds, dns_bench.build_wide_queries), and the CPU the
     server got meanwhile (CPU s ÷ wall s: 100 % = one core).
  4. RSS of each GSLB process once its compiled geo tables are in (workers map the supervisor's one file).
The echo is measured by 1 only (both rates). The report gives each server's CPU per query with 2
processes vs 1 at both rates, and the GSLB's CPU per query above the echo's ("above the floor")
with 1 and 2 workers: the part of the cost, and of its rise with workers, that our design controls.

Every server is started and warmed up first; then `--repeat` rounds go over all of them in turn
(interleaved), and per server the bounded run (at each rate) with the least CPU per query and the
fastest flat-out runs are kept. Nothing is pinned: two workers need both CPUs, so dnsperf and the
server share the machine's CPUs, and other work on the machine shows in the flat-out figures.

Usage: python bench/dns_workers.py [--duration 8] [--rate 25000] [--rate2 50000] [--clients 256] [--threads 2]
                                   [--misses 400000] [--repeat 2] [--no-readme]
Results go to stdout and to the dns-workers section of bench/README.md (not with --no-readme).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    BENCH_DIR,
    REPO_DIR,
    BenchError,
    CpuMeter,
    Server,
    WakeMeter,
    command_line,
    fmt,
    free_port,
    machine_lines,
    markdown_table,
    process_tree,
    started,
    tool_version,
    write_section,
)
from dns_bench import QNAME, SUBNETS, build_wide_queries, choose_geoip, dns_ready, render
from udp_echo import start_echo

SUBNET = SUBNETS[2]             # London: one ECS subnet, answers from the response cache


@dataclass
class Run:
    scenario: str
    completed: int = 0
    lost: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    wakeups: int = 0

    @property
    def qps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float | None:
        return self.cpu * 1e6 / self.completed if self.completed else None

    @property
    def wakeups_per_s(self) -> float | None:
        return self.wakeups / self.seconds if self.seconds else None

    @property
    def per_wakeup(self) -> float | None:
        """Queries answered per wake-up of the server's processes."""
        return self.completed / self.wakeups if self.wakeups else None


@dataclass
class Measured:
    name: str
    bounded: Run
    bounded2: Run
    cached: Run | None              # None for the echo: it is measured at the bounded rates only
    misses: Run | None
    worker_cpu: list[float] = field(default_factory=list)
    worker_queries: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)       # supervisor (or the one process), then workers


def start_gdnsd(workdir: Path, geoip: Path, threads: int
                ) -> tuple[int, None, contextlib.AbstractContextManager[Server]]:
    root = workdir / f"gdnsd-{threads}"
    (root / "zones").mkdir(parents=True)
    port = free_port(udp_too=True)
    text = render("gdnsd.config.tmpl", port=port, run_dir=root / "run", state_dir=root / "state", geoip_db=geoip)
    (root / "config").write_text(text.replace("udp_threads => 1", f"udp_threads => {threads}"))
    shutil.copy(BENCH_DIR / "configs" / "example.test.zone", root / "zones" / "example.test")
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    return port, None, started(f"gdnsd udp_threads={threads}", [gdnsd, "-c", str(root), "start"], workdir,
                               ready=dns_ready(port))


def start_echo_processes(workdir: Path, _geoip: Path, processes: int
                         ) -> tuple[int, None, contextlib.AbstractContextManager[Server]]:
    port, ctx = start_echo(workdir, processes)
    return port, None, ctx


def start_gslb(workdir: Path, geoip: Path, workers: int) -> tuple[int, int, contextlib.AbstractContextManager[Server]]:
    port, admin = free_port(udp_too=True), free_port()
    cfg = workdir / f"gslb-{workers}.yaml"
    cfg.write_text(render("gslb.yaml.tmpl", port=port, admin_port=admin, geoip_db=geoip) + f"workers: {workers}\n")
    answering = dns_ready(port)

    def ready(server: Server) -> None:
        """Answering, and every answering process's steering tables compiled (each logs it)."""
        answering(server)
        deadline = time.monotonic() + 300
        while server.log.read_text(errors="replace").count("steering tables compiled") < workers:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("not every process logged 'steering tables compiled'")
            time.sleep(0.2)

    return port, admin, started(f"gslb workers={workers}",
                                [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "info"],
                                workdir, ready=ready, env={"PYTHONPATH": str(REPO_DIR)})


def workers_of(admin: int | None) -> list[dict[str, object]]:
    if admin is None:
        return []
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/workers", timeout=10) as resp:
        rows: list[dict[str, object]] = json.load(resp)["workers"]
        return rows


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dnsperf(server: Server, port: int, qfile: Path, args: argparse.Namespace, scenario: str, *,
            rate: int | None = None, binary: bool = False, duration: float | None = None
            ) -> tuple[Run, dict[int, float]]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l",
            f"{duration or args.duration:g}", "-c", str(args.clients), "-T", str(args.threads), "-q", "500",
            "-t", "2"]
    if binary:
        argv.append("-B")
    else:
        argv += ["-E", f"8:{SUBNET.ecs_hex()}"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    meter = CpuMeter(server.pid)
    children = {pid: CpuMeter(pid) for pid in process_tree(server.pid) if pid != server.pid}
    wakes = WakeMeter(server.pid)
    wakes.start()
    meter.start()
    for m in children.values():
        m.start()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or args.duration) + 60, check=False)
    run = Run(scenario)
    run.cpu = meter.stop()
    run.wakeups = wakes.stop()
    per_child = {pid: m.stop() for pid, m in children.items()}
    if res.returncode != 0:
        raise BenchError(f"dnsperf exited {res.returncode}: {res.stderr[-1500:]}")
    for line in res.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Queries completed":
            run.completed = int(value.split()[0])
        elif key == "Queries lost":
            run.lost = int(value.split()[0])
        elif key == "Run time (s)":
            run.seconds = float(value)
    if server.proc.poll() is not None:
        raise BenchError(f"{server.name} died during the run:\n{server.tail()}")
    print(f"  {server.name} {scenario}: {run.qps:,.0f} q/s, {fmt(run.cpu_us, 2)} µs CPU/query, "
          f"{fmt(run.per_wakeup, 1)} queries/wake-up, {run.lost} lost", flush=True)
    return run, per_child


def measure_round(server: Server, port: int, admin: int | None, args: argparse.Namespace, qfile: Path,
                  misses: Path) -> Measured:
    before = [int(str(w["queries"] or 0)) for w in workers_of(admin)]
    bounded, per_child = dnsperf(server, port, qfile, args, f"bounded {args.rate} q/s", rate=args.rate)
    after = [int(str(w["queries"] or 0)) for w in workers_of(admin)]
    bounded2, _ = dnsperf(server, port, qfile, args, f"bounded {args.rate2} q/s", rate=args.rate2)
    if server.name.startswith("echo"):
        return Measured(server.name, bounded, bounded2, None, None)
    cached, _ = dnsperf(server, port, qfile, args, "flat out, cached")
    missed, _ = dnsperf(server, port, misses, args, "flat out, misses", binary=True)
    pids = [int(str(w["pid"])) for w in workers_of(admin)]
    return Measured(server.name, bounded, bounded2, cached, missed, [per_child.get(p, 0.0) for p in pids],
                    [a - b for a, b in zip(after, before, strict=True)],
                    [rss_mb(server.pid)] + [rss_mb(p) for p in pids] if server.name.startswith("gslb") else [])


def cheaper(a: Run, b: Run) -> Run:
    return a if (a.cpu_us or float("inf")) <= (b.cpu_us or float("inf")) else b


def faster(a: Run | None, b: Run | None) -> Run | None:
    if a is None or b is None:
        return a or b
    return a if a.qps >= b.qps else b


def best(old: Measured | None, new: Measured) -> Measured:
    """Per server: the bounded runs with the least CPU per query (each rate on its own; the spread goes with
    the first rate's run), the fastest flat-out runs."""
    if old is None:
        return new
    keep = old if cheaper(old.bounded, new.bounded) is old.bounded else new
    return Measured(keep.name, keep.bounded, cheaper(old.bounded2, new.bounded2), faster(old.cached, new.cached),
                    faster(old.misses, new.misses), keep.worker_cpu, keep.worker_queries, keep.rss_mb)


def spread(values: list[float]) -> str:
    if len(values) < 2 or not sum(values):
        return "n/a"
    even = sum(values) / len(values)
    return f"{max(abs(v - even) / even for v in values) * 100:.1f} %"


def rise(one: Run | None, two: Run | None) -> float | None:
    """CPU per query of `two` vs `one`, in % (None when either is missing)."""
    if one is None or two is None or not one.cpu_us or two.cpu_us is None:
        return None
    return (two.cpu_us / one.cpu_us - 1) * 100


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def above(server: Run | None, floor: Run | None) -> float | None:
    """CPU µs per query of `server` above the echo's at the same rate."""
    if server is None or floor is None or server.cpu_us is None or floor.cpu_us is None:
        return None
    return server.cpu_us - floor.cpu_us


def change(a: float | None, b: float | None) -> float | None:
    return (b / a - 1) * 100 if a and b is not None else None


def floor_lines(args: argparse.Namespace, by: dict[str, Measured]) -> list[str]:
    """The bullets beside the table of bounded runs: each server's 2-vs-1 rise at both rates, and the GSLB's
    CPU per query above the echo's."""
    def pair(prefix: str) -> tuple[Measured | None, Measured | None]:
        return by.get(f"{prefix}=1"), by.get(f"{prefix}=2")

    out = []
    servers = [("echo", "echo processes"), ("GSLB", "gslb workers"), ("gdnsd", "gdnsd udp_threads")]
    for rate, attr in ((args.rate, "bounded"), (args.rate2, "bounded2")):
        rises = []
        for label, prefix in servers:
            one, two = pair(prefix)
            if one and two:
                rises.append(f"{label} {pct(rise(getattr(one, attr), getattr(two, attr)))}")
        if rises:
            out.append(f"- CPU per query at {rate:,} q/s, 2 processes/workers/threads vs 1: " + ", ".join(rises) + ".")
    g1, g2 = pair("gslb workers")
    e1, e2 = pair("echo processes")
    if g1 and g2 and e1 and e2:
        for rate, attr in ((args.rate, "bounded"), (args.rate2, "bounded2")):
            a1 = above(getattr(g1, attr), getattr(e1, attr))
            a2 = above(getattr(g2, attr), getattr(e2, attr))
            out.append(f"- Above the floor at {rate:,} q/s (GSLB CPU µs/query − the echo's with as many processes): "
                       f"{fmt(a1, 2)} µs with 1 worker, {fmt(a2, 2)} µs with 2 ({pct(change(a1, a2))}): the part of "
                       "the cost our design controls.")
    return out


def scaling_prose(args: argparse.Namespace, by: dict[str, Measured]) -> str:
    """How throughput scales and what limits it, with this run's figures (nothing in it is typed in by hand)."""
    text = ("How throughput scales, and what limits it: the workers share nothing they write on the query path "
            "(each has its own sockets, steering, response cache and RRL table; the compiled tables are one file "
            "the supervisor compiled and every worker maps read-only; the supervisor probes, votes and serves the "
            "admin API and answers no query), so the work per query is the same with any number of workers, and "
            "the kernel's SO_REUSEPORT hash spreads the clients' sockets over them.")
    g1, g2 = by.get("gslb workers=1"), by.get("gslb workers=2")
    e1, e2 = by.get("echo processes=1"), by.get("echo processes=2")
    d1, d2 = by.get("gdnsd udp_threads=1"), by.get("gdnsd udp_threads=2")
    if g1 and g2 and e1 and e2 and d1 and d2:
        r1, r2 = args.rate, args.rate2
        a1, a2 = above(g1.bounded, e1.bounded), above(g2.bounded, e2.bounded)
        b1, b2 = above(g1.bounded2, e1.bounded2), above(g2.bounded2, e2.bounded2)
        g_rise, g_rise2 = rise(g1.bounded, g2.bounded), rise(g1.bounded2, g2.bounded2)
        e_rise = rise(e1.bounded, e2.bounded)
        g_up = (g2.bounded.cpu_us or 0) - (g1.bounded.cpu_us or 0)
        e_up = (e2.bounded.cpu_us or 0) - (e1.bounded.cpu_us or 0)
        text += (
            " What changes at a bounded rate is the cost of sleeping and waking. A server that has answered "
            "everything waiting goes back to sleep (epoll_wait for our event loop; a blocking receive for gdnsd's "
            "UDP threads and for the echo), and each wake-up costs about the same whatever it finds: the wake-up "
            "itself (on a VM often an interrupt sent from the other CPU), the receive that finds the socket empty "
            "before sleeping again, and the reply's sendto waking dnsperf. The fewer queries each wake-up finds, "
            "the more of that cost each query carries; two workers each see half the rate, so they find fewer. "
            f"At {r1:,} q/s one GSLB worker woke {fmt(g1.bounded.wakeups_per_s, 0)} times a second "
            f"({fmt(g1.bounded.per_wakeup, 1)} queries per wake-up) and two workers "
            f"{fmt(g2.bounded.wakeups_per_s, 0)} times a second together ({fmt(g2.bounded.per_wakeup, 1)} per "
            f"wake-up), and CPU per query rose {pct(g_rise)} ({fmt(g1.bounded.cpu_us, 2)} -> "
            f"{fmt(g2.bounded.cpu_us, 2)} µs). The echo shows how much of that the machine charges any Python "
            f"server: it does nothing but sleep, receive and send, and cost {fmt(e1.bounded.cpu_us, 2)} µs per query "
            f"in one process and {fmt(e2.bounded.cpu_us, 2)} µs in two ({pct(e_rise)}) at the same rate; gdnsd's "
            "UDP threads, blocking receives in C (its manual: about two system calls per query, fewer under load "
            f"thanks to recvmmsg/sendmmsg), went {fmt(d1.bounded.cpu_us, 2)} -> {fmt(d2.bounded.cpu_us, 2)} µs "
            f"({pct(rise(d1.bounded, d2.bounded))}). ")
        if g_up > 0 and e_up >= g_up:
            text += (f"In µs the echo rose {e_up:+.2f} and we rose {g_up:+.2f}: the machine's rise is as large as "
                     "ours, so none of ours is our own in this run. ")
        elif g_up > 0 and e_up > 0:
            text += (f"In µs the echo rose {e_up:+.2f} and we rose {g_up:+.2f}: {e_up / g_up * 100:.0f} % of our "
                     "rise is the machine's. ")
        elif g_up > 0:
            text += "The echo did not rise in this run: all of our rise is our own. "
        text += (
            f"Above that floor the GSLB costs {fmt(a1, 2)} µs per query with 1 worker and {fmt(a2, 2)} µs with 2 "
            f"({pct(change(a1, a2))}): that is the part of the cost, and of its rise, that our design controls (the "
            "event loop's turn around each wake-up, the non-blocking receive that finds nothing, the parsing and "
            f"deciding). At {r2:,} q/s ({r2 / r1:.1f}× the rate) each wake-up found more queries (GSLB: "
            f"{fmt(g1.bounded2.per_wakeup, 1)} per wake-up with 1 worker, {fmt(g2.bounded2.per_wakeup, 1)} with 2) "
            f"and the rises were {pct(rise(e1.bounded2, e2.bounded2))} for the echo, {pct(g_rise2)} for the GSLB "
            f"and {pct(rise(d1.bounded2, d2.bounded2))} for gdnsd; above the floor {fmt(b1, 2)} -> {fmt(b2, 2)} µs "
            f"({pct(change(b1, b2))}). ")
        if g_rise is not None and g_rise2 is not None and g_rise2 < g_rise:
            text += "The rise shrinks as the rate per worker grows"
        else:
            text += ("In this run the rise did not shrink with the higher rate (other work on the machine moves "
                     "these figures: the load average above)")
        if g1.misses and g2.misses:
            text += (f"; flat out, every worker busy, it is {pct(rise(g1.misses, g2.misses))} (the misses run)")
        text += "."
        if e_rise is not None and e_rise > 10:
            text += (f" A goal of CPU per query within 10 % with 1 and 2 workers at {r1:,} q/s is one the machine "
                     f"itself misses at that rate per worker (the echo: {pct(e_rise)}): the echo row is the "
                     "yardstick, and the figure above the floor is ours.")
        elif e_rise is not None:
            text += (f" The echo stayed within 10 % at {r1:,} q/s ({pct(e_rise)}), so in this run the machine "
                     "explains little of our rise beyond it.")
    clients = max(1, args.clients)
    text += (
        " Queries/s grow with the workers as long as each has a CPU of its own: N workers on N free CPUs answer "
        "about N times one worker's queries/s, the Python work per query bounding each. On this 2-CPU machine "
        "dnsperf itself needs a large part of a CPU (and other work may share the machine: the load average "
        "above), so two workers cannot each get a whole one: the server CPU column says what the server got. The "
        "spread depends on how many client sockets there are (one socket always reaches one worker: a resolver "
        "farm with many sockets spreads, a single forwarder on one source port does not; with n sockets one "
        f"worker's share varies by about 1/sqrt(n), {100 / clients ** 0.5:.0f} % for the {clients:,} here). "
        "Memory: the supervisor compiles the geo tables once (in a child process, so the compile's transient "
        "peak is paid once whatever the number of workers) into one file that every worker maps read-only: the "
        "tables' pages are shared, so the RSS column counts them in each worker that touched them while the "
        "machine holds them once (bench/gslb_table_memory.py gives each worker's PSS, its share).")
    return text


def report(args: argparse.Namespace, results: list[Measured], geoip_text: str) -> str:
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnsperf": tool_version(["dnsperf", "-h"])}
    out = ["## DNS: GSLB workers (issue 11), beside gdnsd UDP threads and the platform's floor", ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database: {geoip_text}. Configs: bench/configs/ (gslb.yaml.tmpl + `workers: N`, "
            "gdnsd.config.tmpl with `udp_threads => N`). Nothing pinned: dnsperf and the server share the CPUs.",
            f"- dnsperf `-c {args.clients} -T {args.threads} -q 500` (UDP sockets: the SO_REUSEPORT hash spreads "
            "them over workers/threads). "
            f"Bounded: `-Q {args.rate}` and `-Q {args.rate2}` for {args.duration:g} s each, `www` with ECS "
            f"{SUBNET.network} (cached answers). "
            f"Flat out, cached: the same without `-Q`. Flat out, misses: {args.misses:,} distinct random /24 ECS "
            "subnets (no response cache holds them; the compiled tables answer). "
            f"{args.repeat} rounds over all six servers, interleaved; per server the bounded run (at each rate) with "
            "the least CPU per query and the fastest flat-out runs kept.",
            "- CPU µs/query = utime+stime of the server's process tree (GSLB: supervisor and workers) ÷ answered "
            "queries. Spread = the largest distance of one worker from an even share, in % of the even share "
            "(queries from the supervisor's `GET /api/workers`, CPU from /proc of each worker, both during the "
            f"`-Q {args.rate}` run). Server CPU = its CPU s ÷ wall s during the cached flat-out run "
            "(100 % = one core).",
            "- The floor: `echo processes=N` is bench/udp_echo.py, N Python processes on SO_REUSEPORT sockets, each "
            "a blocking recvfrom/sendto loop that answers a query with itself, QR set: no event loop, no parsing, "
            "nothing decided. Measured at the bounded rates only. Its CPU per query is what the kernel, the loopback "
            "path, the wake-ups and the interpreter charge any Python server at that rate on this machine; "
            "\"above the floor\" = the GSLB's CPU per query − the echo's with as many processes as workers.",
            "- Wake-ups/s = voluntary context switches of every thread in the server's process tree "
            "(/proc/PID/task/*/status) ÷ wall s: each is a sleep (a receive, epoll_wait, a futex) that ended. "
            "Queries per wake-up = answered ÷ wake-ups.", ""]
    rows = []
    for m in results:
        if m.cached is None or m.misses is None:
            continue
        rows.append([m.name, fmt(m.bounded.qps, 0), fmt(m.bounded.cpu_us, 2),
                     " / ".join(f"{q:,}" for q in m.worker_queries) or "-",
                     spread([float(q) for q in m.worker_queries]),
                     " / ".join(fmt(c, 2) for c in m.worker_cpu) or "-", spread(m.worker_cpu),
                     fmt(m.cached.qps, 0), f"{m.cached.cpu / (m.cached.seconds or 1) * 100:.0f} %",
                     fmt(m.misses.qps, 0), fmt(m.misses.cpu_us, 2),
                     " / ".join(f"{r:.0f}" for r in m.rss_mb) or "-",
                     m.bounded.lost + m.cached.lost + m.misses.lost])
    out += [markdown_table(["server", "bounded q/s", "CPU µs/query", "queries per worker", "query spread",
                            "CPU s per worker", "CPU spread", "cached q/s flat out", "server CPU",
                            "misses q/s flat out", "misses CPU µs/query", "RSS MB (supervisor, workers)",
                            "lost"], rows), ""]
    out += ["CPU per query at the two bounded rates, beside the floor (the echo):", ""]
    rows = []
    for m in results:
        rows.append([m.name, *[cell for r in (m.bounded, m.bounded2) for cell in (
            fmt(r.qps, 0), fmt(r.cpu_us, 2), fmt(r.wakeups_per_s, 0), fmt(r.per_wakeup, 1))],
            m.bounded.lost + m.bounded2.lost])
    out += [markdown_table(["server", *[h for rate in (args.rate, args.rate2) for h in (
        f"q/s at {rate:,}", "CPU µs/query", "wake-ups/s", "queries per wake-up")], "lost"], rows), ""]
    by = {m.name: m for m in results}
    one, two = by.get("gslb workers=1"), by.get("gslb workers=2")
    if one and two and one.cached and two.cached and one.misses and two.misses:
        out.append(f"- GSLB, CPU per query at the same rate, 2 workers vs 1: "
                   f"{((two.bounded.cpu_us or 0) / (one.bounded.cpu_us or 1) - 1) * 100:+.1f} % (goal: within ±10 %); "
                   f"cached q/s flat out {one.cached.qps:,.0f} -> {two.cached.qps:,.0f} "
                   f"({two.cached.qps / (one.cached.qps or 1):.2f}×); misses {one.misses.qps:,.0f} -> "
                   f"{two.misses.qps:,.0f} ({two.misses.qps / (one.misses.qps or 1):.2f}×). Flat out (every "
                   f"worker busy, misses): CPU per query {fmt(one.misses.cpu_us, 2)} µs with 1 worker, "
                   f"{fmt(two.misses.cpu_us, 2)} µs with 2 "
                   f"({((two.misses.cpu_us or 0) / (one.misses.cpu_us or 1) - 1) * 100:+.1f} %).")
    g1, g2 = by.get("gdnsd udp_threads=1"), by.get("gdnsd udp_threads=2")
    if g1 and g2 and g1.cached and g2.cached:
        out.append(f"- gdnsd, same measurements, 2 UDP threads vs 1: CPU per query "
                   f"{((g2.bounded.cpu_us or 0) / (g1.bounded.cpu_us or 1) - 1) * 100:+.1f} %; cached q/s "
                   f"{g1.cached.qps:,.0f} -> {g2.cached.qps:,.0f} ({g2.cached.qps / (g1.cached.qps or 1):.2f}×).")
    out += floor_lines(args, by)
    out += ["", scaling_prose(args, by), ""]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rate", type=int, default=25000, help="queries/s of the bounded run (default 25000)")
    p.add_argument("--rate2", type=int, default=50000,
                   help="queries/s of the second bounded run, every server (default 50000)")
    p.add_argument("--clients", type=int, default=256, help="dnsperf -c: UDP sockets (default 256)")
    p.add_argument("--threads", type=int, default=2, help="dnsperf -T: its threads (default 2)")
    p.add_argument("--misses", type=int, default=400_000, help="distinct /24s in the misses file (default 400000)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--geoip", help="GeoIP2/DB-IP City .mmdb (default: geo_data/*.mmdb, else a synthetic one)")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dns-workers-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        qfile = workdir / "queries.txt"
        qfile.write_text(f"{QNAME} A\n")
        misses = workdir / "misses.bin"
        build_wide_queries(misses, args.misses)
        with contextlib.ExitStack() as stack:
            running = []
            for name, starter, n in (("gslb workers=1", start_gslb, 1), ("gslb workers=2", start_gslb, 2),
                                     ("gdnsd udp_threads=1", start_gdnsd, 1),
                                     ("gdnsd udp_threads=2", start_gdnsd, 2),
                                     ("echo processes=1", start_echo_processes, 1),
                                     ("echo processes=2", start_echo_processes, 2)):
                print(f"starting {name} ...", flush=True)
                port, admin, ctx = starter(workdir, geoip, n)
                server = stack.enter_context(ctx)
                dnsperf(server, port, qfile, args, "warm-up", duration=1.0)
                running.append((port, admin if n > 1 and name.startswith("gslb") else None, server))
            kept: dict[str, Measured] = {}
            for i in range(args.repeat):
                print(f"round {i + 1} of {args.repeat}", flush=True)
                for port, admin, server in running:
                    kept[server.name] = best(kept.get(server.name),
                                             measure_round(server, port, admin, args, qfile, misses))
            results = [kept[server.name] for _, _, server in running]
    text = report(args, results, geoip_text)
    print(text)
    if not args.no_readme:
        write_section("dns-workers", text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
