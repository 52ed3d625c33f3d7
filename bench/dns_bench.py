"""DNS benchmark: our GSLB (`python -m gslb serve`) against gdnsd 3 (geoip plugin, city-auto-mode), one run.

Both serve zone example.test with www.example.test steered by geography over the same three regions
(us-east, eu-central, ap-northeast), read the same GeoIP database, and listen on free loopback ports.
Before measuring, both are asked for www with each ECS subnet and their answers are compared.

Then, for each server, dnsperf (UDP, 1 client, 100 outstanding queries, -v to get every latency) runs:
  * once per ECS /24 subnet (the "ECS mix": six continents, one run each, `--duration` seconds each),
  * once with a query file of `--wide` queries, each from a different random /24 (dnsperf -B),
  * once without ECS,
  * once with ECS at a bounded rate (`-Q --rate`) so that CPU is compared at equal load.
The server's CPU time (utime+stime of its process tree from /proc) over each run, divided by the queries
answered, gives CPU µs per query: it holds even when dnsperf, not the server, is the bottleneck.
dnsperf is pinned to CPU 0 and the server to CPU 1 (taskset) when there are two CPUs.

Usage: python bench/dns_bench.py [--duration 10] [--rate 2000] [--only gdnsd|gslb] [--no-readme]
                                 [--wide-only]
Results go to stdout and to the dns section of bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import ipaddress
import shutil
import string
import subprocess
import sys
import tempfile
import time
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
    command_line,
    fmt,
    free_port,
    machine_lines,
    markdown_table,
    percentile,
    started,
    tool_version,
    write_section,
)

QNAME = "www.example.test"
SERVER_CPU, CLIENT_CPU = "1", "0"
REGION_OF = {"127.0.1.1": "us-east", "127.0.2.1": "eu-central", "127.0.3.1": "ap-northeast"}


@dataclass(frozen=True)
class Subnet:
    label: str
    network: str
    lat: float            # used only for the synthetic database (see build_synthetic_geoip)
    lon: float
    country: str
    continent: str

    def ecs_hex(self) -> str:
        """dnsperf -E value for EDNS option 8: family, source prefix, scope 0, address cut to the prefix."""
        net = ipaddress.ip_network(self.network)
        family = 1 if net.version == 4 else 2
        nbytes = (net.prefixlen + 7) // 8
        return f"{family:04x}{net.prefixlen:02x}00" + net.network_address.packed[:nbytes].hex()


SUBNETS = (
    Subnet("New York", "12.0.1.0/24", 40.71, -74.01, "US", "NA"),
    Subnet("São Paulo", "200.160.0.0/24", -23.55, -46.63, "BR", "SA"),
    Subnet("London", "81.2.69.0/24", 51.51, -0.13, "GB", "EU"),
    Subnet("Johannesburg", "196.25.1.0/24", -26.20, 28.05, "ZA", "AF"),
    Subnet("Tokyo", "133.11.0.0/24", 35.68, 139.69, "JP", "AS"),
    Subnet("Sydney", "1.128.0.0/24", -33.87, 151.21, "AU", "OC"),
)


# ---------------------------------------------------------------- GeoIP database


def build_synthetic_geoip(path: Path) -> None:
    """A small GeoIP2-City database holding the bench subnets (used when geo_data/ has none)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                        languages=["en"], description="gslb bench synthetic city database")
    for s in SUBNETS:
        writer.insert_network(IPSet([s.network]), {
            "location": {"latitude": s.lat, "longitude": s.lon, "accuracy_radius": 50},
            "country": {"iso_code": s.country}, "continent": {"code": s.continent},
            "city": {"names": {"en": s.label}}})
    writer.to_db_file(str(path))


def choose_geoip(arg: str | None, workdir: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg).resolve(), f"`{arg}` (given with --geoip)"
    bundled = sorted((REPO_DIR / "geo_data").glob("*.mmdb"))
    if bundled:
        return bundled[0], f"the bundled `{bundled[0].relative_to(REPO_DIR)}`"
    path = workdir / "bench-city.mmdb"
    build_synthetic_geoip(path)
    return path, ("a synthetic GeoIP2-City database built by the script (geo_data/ had no .mmdb): "
                  "one location per bench subnet")


def build_wide_queries(path: Path, count: int, seed: int = 20261124) -> None:
    """`count` queries for www, each with ECS from a different random public /24, in dnsperf's -B format
    (2-byte length + wire message): a query stream that no response cache keyed by subnet can hold whole."""
    import random
    import struct

    import dns.edns
    import dns.message

    rng = random.Random(seed)
    seen: set[int] = set()
    with open(path, "wb") as fh:
        while len(seen) < count:
            net = rng.randrange(1 << 24)
            addr = ipaddress.IPv4Address(net << 8)
            if net in seen or not addr.is_global:
                continue
            seen.add(net)
            query = dns.message.make_query(QNAME, "A", use_edns=0, options=[dns.edns.ECSOption(str(addr), 24)])
            query.id = 0
            wire = query.to_wire()
            fh.write(struct.pack("!H", len(wire)) + wire)


# ---------------------------------------------------------------- servers


def render(template: str, **values: object) -> str:
    return string.Template((BENCH_DIR / "configs" / template).read_text()).substitute(values)


def dns_ready(port: int, timeout: float = 30.0):
    def wait(server: Server) -> None:
        import dns.exception
        import dns.message
        import dns.query

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise BenchError(f"exited with {server.proc.returncode}")
            try:
                dns.query.udp(dns.message.make_query(QNAME, "A"), "127.0.0.1", port=port, timeout=0.3)
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise BenchError(f"no DNS answer on 127.0.0.1:{port} after {timeout:.0f} s")
    return wait


def start_gdnsd(workdir: Path, geoip: Path):
    root = workdir / "gdnsd"
    (root / "zones").mkdir(parents=True)
    port = free_port(udp_too=True)
    (root / "config").write_text(render("gdnsd.config.tmpl", port=port, run_dir=root / "run",
                                        state_dir=root / "state", geoip_db=geoip))
    shutil.copy(BENCH_DIR / "configs" / "example.test.zone", root / "zones" / "example.test")
    gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    check = subprocess.run([gdnsd, "-c", str(root), "checkconf"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise BenchError(f"gdnsd checkconf failed:\n{check.stderr[-3000:]}")
    return port, started("gdnsd", [gdnsd, "-c", str(root), "start"], workdir, cpus=SERVER_CPU,
                         ready=dns_ready(port))


def start_gslb(workdir: Path, geoip: Path):
    port = free_port(udp_too=True)
    cfg = workdir / "gslb.yaml"
    cfg.write_text(render("gslb.yaml.tmpl", port=port, admin_port=free_port(), geoip_db=geoip))
    check = subprocess.run([sys.executable, "-m", "gslb", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=REPO_DIR, check=False)
    if check.returncode != 0:
        raise BenchError(f"gslb check-config failed: {(check.stderr or check.stdout).strip()[-1500:]}")
    return port, started("gslb", [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "warning"],
                         workdir, cpus=SERVER_CPU, ready=dns_ready(port), env={"PYTHONPATH": str(REPO_DIR)})


# ---------------------------------------------------------------- answers


def ask(port: int, subnet: Subnet | None) -> tuple[str, str]:
    """(answer addresses, ECS scope) for www with the given ECS subnet."""
    import dns.edns
    import dns.message
    import dns.query

    options = []
    if subnet is not None:
        net = ipaddress.ip_network(subnet.network)
        options = [dns.edns.ECSOption(str(net.network_address), net.prefixlen)]
    query = dns.message.make_query(QNAME, "A", use_edns=0, options=options)
    resp = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    addrs = sorted(rr.address for rrset in resp.answer for rr in rrset if rrset.rdtype == 1)
    scope = next((f"/{o.scopelen}" for o in resp.options if isinstance(o, dns.edns.ECSOption)), "none")
    return ", ".join(f"{a} ({REGION_OF.get(a, '?')})" for a in addrs) or "(no answer)", scope


# ---------------------------------------------------------------- dnsperf


@dataclass
class Run:
    server: str
    scenario: str
    sent: int = 0
    completed: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    latencies: array.array = field(default_factory=lambda: array.array("d"))
    avg_latency: float = 0.0

    @property
    def qps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float | None:
        return self.cpu * 1e6 / self.completed if self.completed else None

    def merge(self, other: Run) -> None:
        self.sent += other.sent
        self.completed += other.completed
        self.seconds += other.seconds
        self.cpu += other.cpu
        self.latencies.extend(other.latencies)


def dnsperf(server: Server, port: int, qfile: Path, duration: float, scenario: str, *,
            subnet: Subnet | None, rate: int | None = None, measure: bool = True, binary: bool = False) -> Run:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l", str(duration),
            "-c", "1", "-q", "100", "-t", "2", "-v"]
    if binary:
        argv.append("-B")
    if subnet is not None:
        argv += ["-E", f"8:{subnet.ecs_hex()}"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    from common import taskset_prefix
    meter = CpuMeter(server.pid)
    meter.start()
    proc = subprocess.Popen([*taskset_prefix(CLIENT_CPU), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    run = Run(server.name, scenario)
    stats: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("> "):
            if measure:
                run.latencies.append(float(line.rsplit(None, 1)[1]))
        else:
            stats.append(line)
    proc.wait(duration + 30)
    run.cpu = meter.stop()
    if proc.returncode != 0:
        raise BenchError(f"dnsperf exited {proc.returncode}: {proc.stderr.read()[-1500:] if proc.stderr else ''}")
    for line in stats:
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Queries sent":
            run.sent = int(value.split()[0])
        elif key == "Queries completed":
            run.completed = int(value.split()[0])
        elif key == "Run time (s)":
            run.seconds = float(value)
        elif key == "Average Latency (s)":
            run.avg_latency = float(value.split()[0])
    if run.completed == 0:
        raise BenchError(f"dnsperf got no answers from {server.name}:\n{''.join(stats)[-1500:]}")
    return run


def measure_server(name: str, starter, workdir: Path, geoip: Path, qfile: Path, wide: Path,
                   args) -> tuple[list[Run], dict]:
    port, ctx = starter(workdir, geoip)
    with ctx as server:
        answers = {s.label: ask(port, s) for s in SUBNETS}
        answers["(no ECS)"] = ask(port, None)
        dnsperf(server, port, qfile, 1, "warm-up", subnet=SUBNETS[0], measure=False)
        if args.wide_only:
            r = dnsperf(server, port, wide, args.duration, f"ECS wide mix ({args.wide:,} random /24s)",
                        subnet=None, binary=True)
            print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
            return [r], answers
        runs = []
        mix = Run(name, f"ECS mix ({len(SUBNETS)} subnets × {args.duration:g} s)")
        for s in SUBNETS:
            r = dnsperf(server, port, qfile, args.duration, f"ECS {s.network} ({s.label})", subnet=s)
            print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
            runs.append(r)
            mix.merge(r)
        runs.insert(0, mix)
        r = dnsperf(server, port, wide, args.duration, f"ECS wide mix ({args.wide:,} random /24s)", subnet=None,
                    binary=True)
        print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
        runs.insert(1, r)
        r = dnsperf(server, port, qfile, args.duration, "no ECS", subnet=None)
        print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
        runs.append(r)
        london = SUBNETS[2]
        r = dnsperf(server, port, qfile, args.duration, f"ECS {london.network}, bounded -Q {args.rate}",
                    subnet=london, rate=args.rate)
        print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
        runs.append(r)
        if server.proc.poll() is not None:
            raise BenchError(f"{name} died during the run:\n{server.tail()}")
    return runs, answers


def row(r: Run) -> list[object]:
    lat = sorted(r.latencies)
    ms = lambda v: fmt(v * 1e3 if v is not None else None, 3)  # noqa: E731
    lost = (r.sent - r.completed) / r.sent * 100 if r.sent else 0.0
    avg = sum(lat) / len(lat) if lat else r.avg_latency
    return [r.server, r.scenario, f"{r.completed:,}", fmt(r.qps, 0), ms(avg), ms(percentile(lat, 50)),
            ms(percentile(lat, 99)), ms(percentile(lat, 99.9)), fmt(lost, 2), fmt(r.cpu, 2), fmt(r.cpu_us, 2)]


HEADERS = ["server", "scenario", "answered", "queries/s", "avg ms", "p50 ms", "p99 ms", "p99.9 ms", "lost %",
           "server CPU s", "CPU µs/query"]


def pin_self(cpus: str) -> None:
    """Keep this script (it parses dnsperf's per-query lines) on the load generator's CPU, off the server's."""
    import os
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per dnsperf run (default 10)")
    p.add_argument("--rate", type=int, default=2000, help="queries/s for the bounded-rate run (default 2000)")
    p.add_argument("--wide", type=int, default=100_000,
                   help="distinct random /24 ECS subnets in the wide-mix query file (default 100000)")
    p.add_argument("--geoip", help="GeoIP2/DB-IP City .mmdb for both servers (default: geo_data/*.mmdb, "
                                   "else a synthetic one)")
    p.add_argument("--only", choices=["gdnsd", "gslb"], help="measure one server only")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--wide-only", action="store_true",
                   help="run only the wide-mix row (for iterating on the cache-miss path; implies --no-readme)")
    args = p.parse_args()
    if args.wide_only:
        args.no_readme = True
    pin_self(CLIENT_CPU)

    results: dict[str, list[Run]] = {}
    answers: dict[str, dict] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        qfile = workdir / "queries.txt"
        qfile.write_text(f"{QNAME} A\n")
        wide = workdir / "wide.bin"
        build_wide_queries(wide, args.wide)
        for name, starter in (("gdnsd", start_gdnsd), ("gslb", start_gslb)):
            if args.only and args.only != name:
                continue
            print(f"measuring {name} ...", flush=True)
            try:
                results[name], answers[name] = measure_server(name, starter, workdir, geoip, qfile, wide, args)
            except BenchError as exc:
                notes[name] = str(exc).strip()
                print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)

    body = report(args, results, answers, notes, geoip_text)
    print(body)
    if not args.no_readme:
        write_section("dns", body)
    return 0 if results else 1


def report(args, results: dict[str, list[Run]], answers: dict[str, dict], notes: dict[str, str],
           geoip_text: str) -> str:
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnsperf": tool_version(["dnsperf", "-h"])}
    out = ["## DNS: GSLB vs gdnsd", ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database (both servers): {geoip_text}",
            f"- dnsperf: UDP, `-c 1 -q 100 -t 2 -v`, one run of {args.duration:g} s per row (the ECS mix row sums "
            f"the {len(SUBNETS)} per-subnet runs); ECS sent with `-E 8:<hex>` (/24 source prefix); "
            "dnsperf pinned to CPU 0 and the server to CPU 1 with taskset. "
            "Percentiles come from every query's latency (`-v`), which costs dnsperf some throughput.",
            f"- ECS wide mix: a dnsperf `-B` (binary) query file of {args.wide:,} queries for www, each with ECS "
            "from a different random public /24 (fixed seed), looped for the run: a stream that defeats "
            "per-subnet response caches far more than the six-subnet mix, where every query of a run is identical. "
            "It measures the GSLB's cache-miss path: parse (or a known query shape), GeoIP lookup, policy, ECS scope "
            "widening, packing. Once dnsperf has sent the whole file, queries repeat; the steering's decision cache "
            "(16,384 record networks in two generations, bounded for memory since issue 8) holds only the recently "
            "used part of them, the response cache (50,000 entries, emptied when full) none.",
            "- CPU µs/query = server utime+stime (/proc/PID/stat, whole process tree) over the run ÷ queries "
            "answered. gdnsd runs one UDP thread (`udp_threads => 1`).", ""]
    if answers:
        out += ["### Same answers", "",
                "www.example.test A asked of both servers before measuring (answer address (region), ECS scope):",
                ""]
        names = list(answers)
        labels = list(next(iter(answers.values())))
        subnet_of = {s.label: s.network for s in SUBNETS}
        rows, agree = [], True
        for label in labels:
            cells = [answers[n][label] for n in names]
            same = all(c[0] == cells[0][0] for c in cells)
            agree &= same
            rows.append([label, subnet_of.get(label, "-"), *[f"{a} {s}" for a, s in cells],
                         "yes" if same else "NO"])
        out += [markdown_table(["client", "ECS subnet", *names, "same region"], rows), ""]
        if len(names) > 1:
            out += [f"All answers agree: {'yes' if agree else 'NO (see the table)'}.", ""]
    if results:
        out += ["### Throughput, latency and CPU", ""]
        rows = [row(r) for name in results for r in results[name]]
        out += [markdown_table(HEADERS, rows), ""]
    if "gdnsd" in results and "gslb" in results and not args.wide_only:
        g, o = results["gdnsd"], results["gslb"]
        mix_ratio = (o[0].cpu_us or 0) / (g[0].cpu_us or 1)
        eq_ratio = (o[-1].cpu_us or 0) / (g[-1].cpu_us or 1)
        wide_ratio = (o[1].cpu_us or 0) / (g[1].cpu_us or 1)
        verdict = "meets" if mix_ratio <= 4 else "MISSES"
        out += ["### Ratio", "",
                f"- GSLB CPU per query ÷ gdnsd CPU per query, www with ECS (mix): **{mix_ratio:.2f}×** "
                f"(target ≤ 4×: {verdict})",
                f"- Same, wide ECS mix ({args.wide:,} distinct /24s, response caches miss more): "
                f"**{wide_ratio:.2f}×**",
                f"- At equal load (`-Q {args.rate}`): {eq_ratio:.2f}× "
                "(CPU per query at a low rate includes each server's fixed per-wakeup cost)",
                f"- Throughput with ECS (mix): GSLB {o[0].qps:,.0f} q/s vs gdnsd {g[0].qps:,.0f} q/s "
                "(gdnsd's figure is bounded by dnsperf on one CPU)", ""]
    for name, why in notes.items():
        out += [f"**{name}: not yet measured**: {why.splitlines()[0][:500]}", ""]
        detail = "\n".join(why.splitlines()[1:])[-1500:]
        if detail:
            out += ["```", detail, "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
