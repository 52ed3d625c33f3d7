"""DNS memory under attacker-chosen queries: RSS of our GSLB and of gdnsd, one run.

For each server (freshly started, warmed up with a few queries):

  1. `--ecs` distinct ECS /24s (default 1,000,000 random public /24s, fixed seed): one query for
     www.example.test A each, sent once by dnsperf (`-B -n 1`, 100 outstanding);
  2. `--padded` distinct queries padded to about `--padded-size` bytes (default 50,000 queries of
     ~60 KB: www A with an EDNS Padding option whose length and content differ per query), sent by
     this script with up to 16 outstanding.

RSS (VmRSS from /proc/PID/status) is read after start-up, after each phase, and the peak (VmHWM) at
the end. Our goal (issue 8): RSS after the one million ECS /24s at most 120 MB.
Rate limiting is switched off in our server for the run (`--gslb-dns`): every query comes from one
address, and we measure what the answers cost to keep, not how many are throttled.

Usage: python bench/dns_memory.py [--ecs 1000000] [--padded 50000] [--only gdnsd|gslb]
                                  [--gslb-src DIR] [--no-readme]
Results go to stdout and to the dns-memory section of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BenchError,
    CpuMeter,
    command_line,
    fmt,
    machine_lines,
    markdown_table,
    taskset_prefix,
    tool_version,
    write_section,
)
from dns_bench import CLIENT_CPU, choose_geoip, pin_self
from dns_hostile import (
    QNAME,
    distinct_global_24s,
    ecs_wire_template,
    gdnsd_target,
    gslb_source,
    gslb_target,
    metrics,
    rss_kib,
    rss_parts_kib,
)

DEFAULT_GSLB_DNS = {"rrl": {"enabled": False}}
GOAL_MB = 120


@dataclass
class Phase:
    label: str
    sent: int
    answered: int
    seconds: float
    cpu: float
    rss_after: int              # KiB
    anon: int = 0               # of which RssAnon (KiB): the heap
    file: int = 0               # and RssFile: mapped files (libraries, the GeoIP database)


@dataclass
class Result:
    server: str
    rss_start: int = 0
    start_parts: tuple[int, int] = (0, 0)
    phases: list[Phase] = field(default_factory=list)
    peak: int = 0
    alive: bool = True
    cache: str = ""


def build_ecs_file(path: Path, count: int, seed: int = 20261201) -> None:
    """dnsperf -B input: `count` queries for www A, each with ECS from a different public /24."""
    template, at = ecs_wire_template()
    head = struct.pack("!H", len(template)) + template[:at]
    with open(path, "wb") as fh:
        for net in distinct_global_24s(count, seed):
            fh.write(head + net.to_bytes(3, "big"))


def dnsperf_once(port: int, qfile: Path, timeout: float) -> tuple[int, int]:
    argv = [*taskset_prefix(CLIENT_CPU), "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-B",
            "-n", "1", "-c", "1", "-q", "100", "-t", "2"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise BenchError(f"dnsperf exited {res.returncode}: {res.stderr[-1500:]}")
    sent = answered = 0
    for line in res.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Queries sent":
            sent = int(value.split()[0])
        elif key == "Queries completed":
            answered = int(value.split()[0])
    return sent, answered


def padded_query(i: int, size: int) -> bytes:
    """www A with EDNS0 and a Padding option (12) making the query about `size` bytes; distinct per i."""
    head = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 1)
    question = b"".join(bytes([len(label)]) + label.encode() for label in QNAME.split(".")) + b"\x00\x00\x01\x00\x01"
    pad_len = max(4, size - 500 + i % 500 - len(head) - len(question) - 11 - 4)
    padding = i.to_bytes(4, "big") + bytes(pad_len - 4)
    option = struct.pack("!HH", 12, pad_len) + padding
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option
    return head + question + opt


def send_padded(port: int, count: int, size: int, window: int = 3, timeout: float = 0.2) -> tuple[int, int]:
    """Send `count` distinct padded queries, `window` at a time; (sent, answered)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(timeout)
    sent = answered = 0
    try:
        while sent < count:
            batch = min(window, count - sent)
            for _ in range(batch):
                sock.send(padded_query(sent, size))
                sent += 1
            for _ in range(batch):
                try:
                    sock.recv(65535)
                except TimeoutError:
                    break
                answered += 1
    finally:
        sock.close()
    return sent, answered


def measure(name: str, starter, args, ecs_file: Path) -> Result:
    res = Result(name)
    ctx, admin_port = starter()
    with ctx as server:
        port = server.port
        time.sleep(0.5)         # let start-up allocations settle before the first reading
        res.rss_start = rss_kib(server.pid)[0]
        res.start_parts = rss_parts_kib(server.pid)
        phases = [(f"{args.ecs:,} distinct ECS /24s", lambda: dnsperf_once(port, ecs_file, 3600))]
        if args.padded:
            phases.append((f"{args.padded:,} distinct padded queries (~{args.padded_size // 1000} KB)",
                           lambda: send_padded(port, args.padded, args.padded_size)))
        for label, run in phases:
            meter = CpuMeter(server.pid)
            meter.start()
            t0 = time.monotonic()
            sent, answered = run()
            seconds = time.monotonic() - t0
            cpu = meter.stop()
            time.sleep(0.5)
            anon, file = rss_parts_kib(server.pid)
            phase = Phase(label, sent, answered, seconds, cpu, rss_kib(server.pid)[0], anon, file)
            res.phases.append(phase)
            print(f"  {name} {label}: answered {answered:,}/{sent:,} in {seconds:.1f} s, "
                  f"RSS {phase.rss_after / 1024:.1f} MB", flush=True)
        res.peak = rss_kib(server.pid)[1]
        res.alive = server.proc.poll() is None
        if admin_port is not None and res.alive:
            try:
                samples = metrics(admin_port)
            except OSError:
                samples = {}
            cache = {k: v for k, v in samples.items() if "cache" in k and not k.endswith("_created")}
            res.cache = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cache.items()))
    return res


class _Server:
    def __init__(self, server, port: int) -> None:
        self.server, self.port = server, port
        self.pid, self.proc = server.pid, server.proc


class _Ctx:
    def __init__(self, ctx, port: int) -> None:
        self.ctx, self.port = ctx, port

    def __enter__(self) -> _Server:
        return _Server(self.ctx.__enter__(), self.port)

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ecs", type=int, default=1_000_000, help="distinct ECS /24s (default 1000000)")
    p.add_argument("--padded", type=int, default=50_000, help="distinct padded queries (default 50000; 0: none)")
    p.add_argument("--padded-size", type=int, default=60_000, help="bytes per padded query (default 60000)")
    p.add_argument("--gslb-dns", default=json.dumps(DEFAULT_GSLB_DNS),
                   help=f"JSON object of extra dns: keys for our server (default {json.dumps(DEFAULT_GSLB_DNS)})")
    p.add_argument("--gslb-src", help="directory holding the gslb package to run (default: this checkout)")
    p.add_argument("--geoip", help="GeoIP .mmdb for both servers (default: geo_data/*.mmdb)")
    p.add_argument("--only", choices=["gdnsd", "gslb"], help="measure one server only")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--section", default="dns-memory",
                   help="README section to rewrite (default dns-memory; e.g. dns-memory-before with --gslb-src)")
    args = p.parse_args()
    extra_dns = json.loads(args.gslb_dns)
    src, src_text = gslb_source(args.gslb_src)
    pin_self(CLIENT_CPU)

    results: list[Result] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dns-memory-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        ecs_file = workdir / "ecs.bin"
        t0 = time.monotonic()
        build_ecs_file(ecs_file, args.ecs)
        print(f"built {args.ecs:,} ECS queries in {time.monotonic() - t0:.1f} s", flush=True)
        for name in ("gdnsd", "gslb"):
            if args.only and args.only != name:
                continue
            run_dir = workdir / name
            run_dir.mkdir()
            print(f"measuring {name} ...", flush=True)

            def starter(name=name, run_dir=run_dir):
                if name == "gdnsd":
                    port, ctx = gdnsd_target(run_dir, geoip)
                    return _Ctx(ctx, port), None
                port, admin_port, ctx = gslb_target(run_dir, geoip, extra_dns, src=src)
                return _Ctx(ctx, port), admin_port
            try:
                results.append(measure(name, starter, args, ecs_file))
            except BenchError as exc:
                notes[name] = str(exc).strip()
                print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)

    body = report(args, results, notes, geoip_text, extra_dns, src_text)
    print(body)
    if not args.no_readme and results:
        write_section(args.section, body)
    return 0 if results and not notes else 1


def report(args, results: list[Result], notes: dict[str, str], geoip_text: str, extra_dns: dict,
           src_text: str) -> str:
    mb = lambda kib: fmt(kib / 1024, 1)  # noqa: E731
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnsperf": tool_version(["dnsperf", "-h"])}
    title = "### Memory: RSS under distinct queries"
    if args.gslb_src:
        title += f" — before (our server from `{args.gslb_src}`)"
    out = [title, ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database (both servers): {geoip_text}; our server's code: {src_text}",
            f"- Phase 1: {args.ecs:,} queries for www.example.test A, each with ECS from a different random public "
            "/24 (fixed seed), sent once by dnsperf (`-B -n 1 -c 1 -q 100 -t 2`).",
            f"- Phase 2: {args.padded:,} distinct queries for www A padded (EDNS Padding, RFC 7830) to about "
            f"{args.padded_size:,} bytes, padding length and content different per query, 3 outstanding "
            "(so that a default-sized socket buffer holds them).",
            f"- Our server's extra `dns:` keys: `{json.dumps(extra_dns)}`. RSS = VmRSS, peak = VmHWM "
            "(/proc/PID/status), read 0.5 s after each phase; anon = RssAnon (heap), file = RssFile (mapped "
            "files: libraries and the GeoIP database, which both servers map; the pages a lookup touched count).",
            ""]
    rows = []
    for r in results:
        rows.append([r.server, "after start-up", "", "", "", mb(r.rss_start), mb(r.start_parts[0]),
                     mb(r.start_parts[1])])
        for ph in r.phases:
            rows.append([r.server, ph.label, f"{ph.answered:,} / {ph.sent:,}", fmt(ph.seconds, 1), fmt(ph.cpu, 1),
                         mb(ph.rss_after), mb(ph.anon), mb(ph.file)])
        rows.append([r.server, "peak (VmHWM)" + ("" if r.alive else ", then DIED"), "", "", "", mb(r.peak), "",
                     ""])
    out += [markdown_table(["server", "after", "answered / sent", "seconds", "server CPU s", "RSS MB",
                            "of which anon MB", "file MB"], rows), ""]
    for r in results:
        if r.cache:
            out += [f"{r.server} /metrics at the end: {r.cache}", ""]
    ours = next((r for r in results if r.server == "gslb" and r.phases), None)
    if ours is not None:
        after_ecs = ours.phases[0].rss_after / 1024
        verdict = "meets" if after_ecs <= GOAL_MB else "MISSES"
        out += [f"Our RSS after the distinct ECS /24s: **{after_ecs:.1f} MB** (goal ≤ {GOAL_MB} MB: {verdict}); "
                f"peak over the whole run {ours.peak / 1024:.1f} MB.", ""]
    for name, why in notes.items():
        out += [f"**{name}: not measured**: {why.splitlines()[0][:500]}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
