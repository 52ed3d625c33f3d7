"""DNS benchmark: our GSLB (`python -m gslb serve`) against gdnsd 3 (geoip plugin, city-auto-mode), one run.

Both serve zone example.test with www.example.test steered by geography over the same three regions
(us-east, eu-central, ap-northeast), read the same GeoIP database, and listen on free loopback ports.
Before measuring, both are asked for www with each ECS subnet and their answers are compared.

Then, for each server, dnsperf (UDP, 1 client, 100 outstanding queries, -v to get every latency) runs:
  * once per ECS /24 subnet (the "ECS mix": six continents, one run each, `--duration` seconds each),
  * once through a query file of `--wide` IPv4 /24s plus `--wide6` IPv6 /56s, every query from a
    different random network, none repeating during the run (dnsperf -B -n 1): the cache-miss path,
  * the same at a bounded rate (`--wide-rate`, another file of distinct networks): its p99,
  * once without ECS,
  * once with ECS at a bounded rate (`-Q --rate`) so that CPU is compared at equal load.
After the runs: each server's RSS, and the share of 20,000 random networks of the wide files whose
answer is the nearest region by a brute-force haversine on the database's own coordinates.
The GSLB is measured once its steering tables are compiled (it logs that; the compile's time and the
worker's CPU time are reported).
The server's CPU time (utime+stime of its process tree from /proc) over each run, divided by the queries
answered, gives CPU µs per query: it holds even when dnsperf, not the server, is the bottleneck.
dnsperf is pinned to CPU 0 and the server to CPU 1 (taskset) when there are two CPUs.

Beside them, the platform's floor: `echo` (bench/udp_echo.py, one Python process in a blocking
recvfrom/sendto loop that answers each query with itself, QR set), pinned like the servers and measured
in the two bounded rows only (the wide mix at `--wide-rate`, one subnet at `--rate`). The Ratio list gives
its p99 and CPU per query beside gdnsd's and ours, and each server's CPU per query above it: at a bounded
rate much of a query's CPU is the machine's cost of sleeping and waking, which the echo pays too.

Usage: python bench/dns_bench.py [--duration 10] [--rate 2000] [--wide 1000000] [--wide6 250000]
                                 [--wide-rate 10000] [--only gdnsd|gslb|echo] [--no-readme] [--wide-only]
Results go to stdout and to the dns section of bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import contextlib
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
    process_tree,
    started,
    tool_version,
    write_section,
)
from udp_echo import start_echo

QNAME = "www.example.test"
SERVER_CPU, CLIENT_CPU = "1", "0"
REGION_OF = {"127.0.1.1": "us-east", "127.0.2.1": "eu-central", "127.0.3.1": "ap-northeast"}
# the regions' coordinates in both configs (configs/gslb.yaml.tmpl, configs/gdnsd.config.tmpl)
REGION_AT = {"us-east": (39.04, -77.49), "eu-central": (50.11, 8.68), "ap-northeast": (37.57, 126.98)}
NEAREST_SAMPLE = 20_000


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


def _v6_networks(geoip: Path, count: int, rng, taken: set[int]) -> list[int]:
    """`count` distinct random /56s inside the database's IPv6 record networks (real clients come from
    allocated space; a random /56 of 2000::/3 is mostly in no record at all)."""
    from gslb.geoip import ALIAS, NO_PLACE, read_tree

    tree = read_tree(geoip)
    records = [((h << 64) | lo, p) for h, lo, p, place in zip(
        tree.v6_start.tolist(), tree.v6_start_low.tolist(), tree.v6_prefix.tolist(), tree.v6_place.tolist(),
        strict=True) if place not in (NO_PLACE, ALIAS) and ((h << 64) | lo) >> 125 == 1 and p <= 56]
    out: list[int] = []
    while len(out) < count:
        start, prefix = records[rng.randrange(len(records))]
        net = (start >> 72) + rng.randrange(1 << (56 - prefix))
        if net not in taken:
            taken.add(net)
            out.append(net)
    return out


def build_wide_queries(path: Path, count: int, count6: int = 0, seed: int = 20261124,
                       geoip: Path | None = None) -> list[tuple[int, int]]:
    """`count` queries for www with ECS from distinct random public /24s and `count6` from distinct /56s
    (shuffled), in dnsperf's -B format (2-byte length + wire message): a query stream that no response
    cache keyed by subnet can hold. Returns the networks as (4, /24 number) or (6, /56 number)."""
    import random
    import struct

    import dns.edns
    import dns.message

    rng = random.Random(seed)
    seen: set[int] = set()
    nets: list[tuple[int, int]] = []
    while len(seen) < count:
        net = rng.randrange(1 << 24)
        if net in seen or not ipaddress.IPv4Address(net << 8).is_global:
            continue
        seen.add(net)
        nets.append((4, net))
    if count6:
        assert geoip is not None
        nets += [(6, n) for n in _v6_networks(geoip, count6, rng, set())]
    rng.shuffle(nets)
    query = dns.message.make_query(QNAME, "A", use_edns=0, options=[dns.edns.ECSOption("1.2.3.0", 24)])
    query.id = 0
    head4 = query.to_wire()[:-3]
    query = dns.message.make_query(QNAME, "A", use_edns=0, options=[dns.edns.ECSOption("2001:db8::", 56)])
    query.id = 0
    head6 = query.to_wire()[:-7]
    with open(path, "wb") as fh:
        for family, net in nets:
            wire = head4 + net.to_bytes(3, "big") if family == 4 else head6 + net.to_bytes(7, "big")
            fh.write(struct.pack("!H", len(wire)) + wire)
    return nets


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    import math

    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def nearest_regions(geoip: Path, nets: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """Brute force: each network's coordinates from the database (maxminddb, no gslb code), the region
    at the smallest haversine distance. Networks without coordinates are left out."""
    import maxminddb

    out = {}
    with maxminddb.open_database(str(geoip)) as reader:
        for family, net in nets:
            address = ipaddress.IPv4Address(net << 8) if family == 4 else ipaddress.IPv6Address(net << 72)
            record = reader.get(address)
            loc = record.get("location") if isinstance(record, dict) else None
            if not isinstance(loc, dict) or "latitude" not in loc or "longitude" not in loc:
                continue
            lat, lon = float(loc["latitude"]), float(loc["longitude"])
            out[(family, net)] = min(REGION_AT, key=lambda r: (_haversine_km(lat, lon, *REGION_AT[r]), r))
    return out


def answered_regions(port: int, nets: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The region each network gets from the server on `port` (200 queries outstanding, UDP)."""
    import socket

    import dns.edns
    import dns.message

    out: dict[tuple[int, int], str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        for start in range(0, len(nets), 200):
            batch = nets[start:start + 200]
            for i, (family, net) in enumerate(batch):
                address = str(ipaddress.IPv4Address(net << 8)) if family == 4 else str(ipaddress.IPv6Address(net << 72))
                query = dns.message.make_query(QNAME, "A", use_edns=0, options=[
                    dns.edns.ECSOption(address, 24 if family == 4 else 56)])
                query.id = i
                sock.sendto(query.to_wire(), ("127.0.0.1", port))
            pending = len(batch)
            try:
                while pending:
                    reply = dns.message.from_wire(sock.recv(4096))
                    pending -= 1
                    addrs = [rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == 1]
                    if addrs and reply.id < len(batch):
                        out[batch[reply.id]] = REGION_OF.get(addrs[0], "?")
            except TimeoutError:
                pass
    return out


TABLE_COST = r"""
import asyncio, json, sys, time
from pathlib import Path
from gslb.common.configload import Section
from gslb.geoip import MaxMindLocator
from gslb.latency_table import LatencyTable
from gslb.steering import Steering
from gslb.steering.base import Region
from gslb.steering.config import load_services
from gslb.tables import TableCompiler

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

regions = {n: Region(n, lat, lon, ("127.0.0.1",)) for n, (lat, lon) in json.loads(sys.argv[2]).items()}
maps = ["{policy: geo}", "{policy: geo_map, map: {continent: {EU: [eu-central, us-east], AS: [ap-northeast]},"
        " default: [us-east, eu-central]}}", "{policy: geo, regions: [us-east, eu-central]}"]
count = int(sys.argv[3])
locator = MaxMindLocator(sys.argv[1])
text = "services:\n" + "".join(f"  s{i}.test: {m}\n" for i, m in enumerate(maps[:count]))
services = load_services(Section.from_yaml_text(text, file="b").section("services"), regions)
steering = Steering(regions, services, locator, LatencyTable())
compiler = TableCompiler()
before = rss()
started = time.monotonic()
compiler.install(steering, locator)
asyncio.run(compiler.ready())
print(json.dumps({"maps": count, "seconds": time.monotonic() - started, "rss_mb": rss() - before,
                  "worker": compiler.worker_report, "services": len(steering.compiled_services)}))
"""


def table_cost(geoip: Path) -> list[dict]:
    """The compiled tables' cost in a fresh process that only loads them (numpy is imported by the worker,
    never here): RSS added by 1, 2 and 3 distinct maps of the bench's regions, and the compile's time."""
    import json

    out = []
    for count in (1, 2, 3):         # a fresh process each: nothing freed by an earlier load is reused
        res = subprocess.run([sys.executable, "-c", TABLE_COST, str(geoip), json.dumps(REGION_AT), str(count)],
                             capture_output=True, text=True, cwd=REPO_DIR,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO_DIR)}, timeout=600, check=False)
        if res.returncode != 0:
            raise BenchError(f"table cost: {res.stderr[-1500:]}")
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


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
    answering = dns_ready(port)

    def ready(server: Server) -> None:
        """Answering, and the steering tables compiled (the server logs it; until then misses take the
        reference path)."""
        answering(server)
        deadline = time.monotonic() + 180
        while "steering tables compiled" not in server.log.read_text(errors="replace"):
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("no 'steering tables compiled' line in the log")
            time.sleep(0.2)

    return port, started("gslb", [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "info"],
                         workdir, cpus=SERVER_CPU, ready=ready, env={"PYTHONPATH": str(REPO_DIR)})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
            subnet: Subnet | None, rate: int | None = None, measure: bool = True, binary: bool = False,
            once: bool = False) -> Run:
    """One dnsperf run: `duration` seconds, or with `once` one pass through the file (`-n 1`)."""
    limit = ["-n", "1"] if once else ["-l", str(duration)]
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), *limit,
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
                with contextlib.suppress(ValueError):   # "> NOERROR name A 0.000123"; a timeout has none
                    run.latencies.append(float(line.rsplit(None, 1)[1]))
        else:
            stats.append(line)
    proc.wait(duration + 30 if not once else 1800)
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


def measure_server(name: str, starter, workdir: Path, geoip: Path, qfile: Path, wide: Path, wide_bounded: Path,
                   sample: list[tuple[int, int]], args) -> tuple[list[Run], dict, dict]:
    port, ctx = starter(workdir, geoip)
    extra: dict = {}
    with ctx as server:
        if name == "gslb":
            extra["compile"] = next((line.split("gslb.tables: ", 1)[-1] for line in server.log.read_text(
                errors="replace").splitlines() if "steering tables compiled" in line), "")
            extra["rss_start"] = rss_mb(server.pid)
        answers = {s.label: ask(port, s) for s in SUBNETS}
        answers["(no ECS)"] = ask(port, None)
        dnsperf(server, port, qfile, 1, "warm-up", subnet=SUBNETS[0], measure=False)
        wide_name = f"ECS wide mix ({args.wide:,} /24s + {args.wide6:,} /56s, each once)"
        if args.wide_only:
            r = dnsperf(server, port, wide, args.duration, wide_name, subnet=None, binary=True, once=True)
            print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
            extra["rss_end"] = rss_mb(server.pid)
            return [r], answers, extra
        runs = []
        mix = Run(name, f"ECS mix ({len(SUBNETS)} subnets × {args.duration:g} s)")
        for s in SUBNETS:
            r = dnsperf(server, port, qfile, args.duration, f"ECS {s.network} ({s.label})", subnet=s)
            print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
            runs.append(r)
            mix.merge(r)
        runs.insert(0, mix)
        r = dnsperf(server, port, wide, args.duration, wide_name, subnet=None, binary=True, once=True)
        print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
        runs.insert(1, r)
        runs.insert(2, bounded_wide(server, port, wide_bounded, args))
        r = dnsperf(server, port, qfile, args.duration, "no ECS", subnet=None)
        print(f"  {name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
        runs.append(r)
        runs.append(bounded_cached(server, port, qfile, args))
        extra["rss_end"] = rss_mb(server.pid)
        extra["answered"] = answered_regions(port, sample)
        if server.proc.poll() is not None:
            raise BenchError(f"{name} died during the run:\n{server.tail()}")
    return runs, answers, extra


def bounded_wide(server: Server, port: int, wide_bounded: Path, args) -> Run:
    """The wide mix (another file of distinct networks) at `-Q --wide-rate`: the bounded miss path's p99."""
    r = dnsperf(server, port, wide_bounded, args.duration, f"ECS wide mix, bounded -Q {args.wide_rate}",
                subnet=None, binary=True, rate=args.wide_rate)
    print(f"  {server.name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
    return r


def bounded_cached(server: Server, port: int, qfile: Path, args) -> Run:
    """One ECS subnet (London) at `-Q --rate`: CPU at equal load."""
    london = SUBNETS[2]
    r = dnsperf(server, port, qfile, args.duration, f"ECS {london.network}, bounded -Q {args.rate}",
                subnet=london, rate=args.rate)
    print(f"  {server.name} {r.scenario}: {r.qps:,.0f} q/s, {fmt(r.cpu_us, 2)} µs CPU/query", flush=True)
    return r


def measure_echo(workdir: Path, qfile: Path, wide_bounded: Path, args) -> list[Run]:
    """The floor (bench/udp_echo.py, one process, pinned like the servers) in the two bounded rows only."""
    port, ctx = start_echo(workdir, 1, cpus=SERVER_CPU, name="echo")
    with ctx as server:
        dnsperf(server, port, qfile, 1, "warm-up", subnet=SUBNETS[0], measure=False)
        runs = [bounded_wide(server, port, wide_bounded, args), bounded_cached(server, port, qfile, args)]
        if server.proc.poll() is not None:
            raise BenchError(f"echo died during the run:\n{server.tail()}")
    return runs


def tail_rounds(workdir: Path, geoip: Path, count: int, args) -> list[dict[str, tuple[float, float]]]:
    """The bounded wide row again, with gdnsd, the GSLB and the echo all started and warmed up, in
    `--tail-rounds` rounds that take the three in turn (each round its own file of distinct networks):
    one server's run and the next are seconds apart, so a minute of host noise falls on all three, not on
    whichever was measured then. Per round and server: (p99 ms, CPU µs/query)."""
    files = []
    for i in range(args.tail_rounds):
        path = workdir / f"tail-{i}.bin"
        build_wide_queries(path, count * args.wide // (args.wide + args.wide6),
                           count * args.wide6 // (args.wide + args.wide6), seed=20261300 + i, geoip=geoip)
        files.append(path)
    rounds: list[dict[str, tuple[float, float]]] = []
    sub = workdir / "tail"          # fresh config and log files, beside the first runs' ones
    sub.mkdir()
    with contextlib.ExitStack() as stack:
        servers = []
        for name, starter in (("gdnsd", start_gdnsd), ("gslb", start_gslb)):
            port, ctx = starter(sub, geoip)
            servers.append((name, port, stack.enter_context(ctx)))
        port, ctx = start_echo(sub, 1, cpus=SERVER_CPU, name="echo")
        servers.append(("echo", port, stack.enter_context(ctx)))
        qfile = workdir / "queries.txt"
        for _name, port, server in servers:
            dnsperf(server, port, qfile, 1, "warm-up", subnet=SUBNETS[0], measure=False)
        for i, path in enumerate(files):
            got: dict[str, tuple[float, float]] = {}
            for name, port, server in servers:
                others = [s for n, _p, s in servers if n != name]
                with paused(others):        # the idle ones frozen: nothing of theirs runs on the server CPU
                    r = dnsperf(server, port, path, args.duration, f"tail round {i + 1}", subnet=None,
                                binary=True, rate=args.wide_rate)
                got[name] = ((percentile(sorted(r.latencies), 99) or 0.0) * 1e3, r.cpu_us or 0.0)
                if server.proc.poll() is not None:
                    raise BenchError(f"{name} died during the tail rounds:\n{server.tail()}")
            print("  round " + str(i + 1) + ": " + ", ".join(f"{n} p99 {p:.3f} ms" for n, (p, _c) in got.items()),
                  flush=True)
            rounds.append(got)
    return rounds


@contextlib.contextmanager
def paused(servers: list[Server]):
    """SIGSTOP every process of `servers` (their trees) for the block, SIGCONT after."""
    import os
    import signal

    pids = [pid for server in servers for pid in process_tree(server.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def tail_lines(args, rounds: list[dict[str, tuple[float, float]]]) -> list[str]:
    """The interleaved rounds as a table, and the median of the per-round p99 ratios."""
    import statistics

    names = ["gdnsd", "gslb", "echo"]
    rows = [[str(i + 1)] + [f"{r[n][0]:.3f}" for n in names] + [f"{r['gslb'][0] / (r['gdnsd'][0] or 1):.2f}×",
                                                               f"{r['echo'][0] / (r['gdnsd'][0] or 1):.2f}×"]
            + [f"{r[n][1]:.1f}" for n in names] for i, r in enumerate(rounds)]
    ratios = [r["gslb"][0] / (r["gdnsd"][0] or 1) for r in rounds]
    echo_ratios = [r["echo"][0] / (r["gdnsd"][0] or 1) for r in rounds]
    median = statistics.median(ratios)
    return [f"### Tail latency at `-Q {args.wide_rate}`, {len(rounds)} interleaved rounds", "",
            "gdnsd, the GSLB and the echo are all started (each pinned to the server CPU); each round sends every "
            "one of them its own file of distinct networks in turn, the other two frozen (SIGSTOP) meanwhile "
            f"({args.duration:g} s each), so host noise (this VM shows stalls of 3-14 ms even in a bare loop) "
            "falls on all three alike. A single p99 of one 10 s run moves several-fold with that noise.", "",
            markdown_table(["round", "gdnsd p99 ms", "gslb p99 ms", "echo p99 ms", "gslb ÷ gdnsd", "echo ÷ gdnsd",
                            "gdnsd µs/q", "gslb µs/q", "echo µs/q"], rows), "",
            f"- p99 ratio GSLB ÷ gdnsd, median of the {len(rounds)} rounds: **{median:.2f}×** (target ≤ 2×: "
            f"{'meets' if median <= 2 else 'MISSES'}); range {min(ratios):.2f}-{max(ratios):.2f}×. The echo "
            f"(a do-nothing Python server): median {statistics.median(echo_ratios):.2f}× gdnsd's p99.", ""]


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
    p.add_argument("--wide", type=int, default=1_000_000,
                   help="distinct random /24 ECS subnets in the wide-mix query file (default 1000000)")
    p.add_argument("--wide6", type=int, default=250_000,
                   help="distinct random IPv6 /56 ECS subnets added to it (default 250000)")
    p.add_argument("--wide-rate", type=int, default=10_000,
                   help="queries/s for the bounded wide-mix run (default 10000); its file holds "
                        "rate × duration × 1.2 other distinct networks")
    p.add_argument("--geoip", help="GeoIP2/DB-IP City .mmdb for both servers (default: geo_data/*.mmdb, "
                                   "else a synthetic one)")
    p.add_argument("--only", choices=["gdnsd", "gslb", "echo"], help="measure one server only")
    p.add_argument("--tail-rounds", type=int, default=5,
                   help="interleaved rounds of the bounded wide row over gdnsd, gslb and echo, all running at "
                        "once, for the p99 ratio (default 5; 0: the single run of each server's own row)")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--wide-only", action="store_true",
                   help="run only the wide-mix row (for iterating on the cache-miss path; implies --no-readme)")
    args = p.parse_args()
    if args.wide_only:
        args.no_readme = True
    pin_self(CLIENT_CPU)

    results: dict[str, list[Run]] = {}
    answers: dict[str, dict] = {}
    extras: dict[str, dict] = {}
    notes: dict[str, str] = {}
    extras_tables: list[dict] = []
    tail: list[dict[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        qfile = workdir / "queries.txt"
        qfile.write_text(f"{QNAME} A\n")
        wide, wide_bounded = workdir / "wide.bin", workdir / "wide-bounded.bin"
        print("building the wide query files ...", flush=True)
        nets = build_wide_queries(wide, args.wide, args.wide6, geoip=geoip)
        bounded = int(args.wide_rate * args.duration * 1.2)
        build_wide_queries(wide_bounded, bounded * args.wide // (args.wide + args.wide6),
                           bounded * args.wide6 // (args.wide + args.wide6), seed=20261201, geoip=geoip)
        import random
        sample = random.Random(7).sample(nets, min(NEAREST_SAMPLE, len(nets)))
        if not args.wide_only:
            print("measuring the compiled tables' memory ...", flush=True)
            try:
                extras_tables = table_cost(geoip)
            except BenchError as exc:
                extras_tables = []
                notes["tables"] = str(exc)
        nearest = nearest_regions(geoip, sample)
        for name, starter in (("gdnsd", start_gdnsd), ("gslb", start_gslb)):
            if args.only and args.only != name:
                continue
            print(f"measuring {name} ...", flush=True)
            try:
                results[name], answers[name], extras[name] = measure_server(
                    name, starter, workdir, geoip, qfile, wide, wide_bounded, sample, args)
            except BenchError as exc:
                notes[name] = str(exc).strip()
                print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)
        if not args.wide_only and args.only in (None, "echo"):
            print("measuring echo (the floor) ...", flush=True)
            try:
                results["echo"] = measure_echo(workdir, qfile, wide_bounded, args)
            except BenchError as exc:
                notes["echo"] = str(exc).strip()
                print(f"  echo: not measured: {notes['echo']}", file=sys.stderr, flush=True)
        if not args.wide_only and args.only is None and args.tail_rounds > 0:
            print(f"tail: {args.tail_rounds} interleaved rounds at -Q {args.wide_rate} ...", flush=True)
            try:
                tail = tail_rounds(workdir, geoip, bounded, args)
            except BenchError as exc:
                notes["tail"] = str(exc).strip()
                print(f"  tail rounds: not measured: {notes['tail']}", file=sys.stderr, flush=True)
    for extra in extras.values():
        got = extra.pop("answered", {})
        same = sum(1 for net, region in nearest.items() if got.get(net) == region)
        extra["nearest"] = (same, len(nearest), sum(1 for net in nearest if net in got))

    body = report(args, results, answers, notes, geoip_text, extras, extras_tables, tail)
    print(body)
    if not args.no_readme:
        write_section("dns", body)
    return 0 if results else 1


def floor_lines(args, gdnsd: list[Run], gslb: list[Run], echo: list[Run]) -> list[str]:
    """The floor beside the ratios: the echo's p99 and CPU per query in the two bounded rows, beside gdnsd's and
    ours, and the part of our CPU per query above it."""
    out = []
    for label, e, g, o in ((f"wide ECS mix at `-Q {args.wide_rate}`", echo[0], gdnsd[2], gslb[2]),
                           (f"one subnet at `-Q {args.rate}`", echo[1], gdnsd[-1], gslb[-1])):
        p99 = [(percentile(sorted(r.latencies), 99) or 0.0) * 1e3 for r in (e, g, o)]
        us = [r.cpu_us for r in (e, g, o)]
        above = (us[2] - us[0]) if us[2] is not None and us[0] is not None else None
        gd_above = (us[1] - us[0]) if us[1] is not None and us[0] is not None else None
        below = (" (below the floor: a C thread that receives and sends costs less than the Python echo)"
                 if gd_above is not None and gd_above < 0 else "")
        out.append(f"- The floor, {label}: echo p99 {p99[0]:.3f} ms and {fmt(us[0], 2)} µs CPU/query; gdnsd "
                   f"{p99[1]:.3f} ms and {fmt(us[1], 2)} µs; GSLB {p99[2]:.3f} ms and {fmt(us[2], 2)} µs. CPU per "
                   f"query above the echo's: GSLB {fmt(above, 2)} µs, gdnsd {fmt(gd_above, 2)} µs{below}")
    return out


def report(args, results: dict[str, list[Run]], answers: dict[str, dict], notes: dict[str, str],
           geoip_text: str, extras: dict[str, dict] | None = None, tables: list[dict] | None = None,
           tail: list[dict[str, tuple[float, float]]] | None = None) -> str:
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnsperf": tool_version(["dnsperf", "-h"])}
    out = ["## DNS: GSLB vs gdnsd", ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database (both servers): {geoip_text}",
            f"- dnsperf: UDP, `-c 1 -q 100 -t 2 -v`, one run of {args.duration:g} s per row (the ECS mix row sums "
            f"the {len(SUBNETS)} per-subnet runs); ECS sent with `-E 8:<hex>` (/24 source prefix); "
            "dnsperf pinned to CPU 0 and the server to CPU 1 with taskset. "
            "Percentiles come from every query's latency (`-v`), which costs dnsperf some throughput.",
            f"- ECS wide mix: a dnsperf `-B` (binary) query file of {args.wide:,} queries for www with ECS from "
            f"distinct random public IPv4 /24s and {args.wide6:,} from distinct random IPv6 /56s inside the "
            "database's IPv6 record networks (shuffled, fixed seed), sent once (`-n 1`): no query repeats during "
            "the run, so no response cache and no per-network memo can answer; every query is a miss. The GSLB "
            "answers it from its compiled decision table (gslb/steering/table.py: one bisect, health applied to "
            "the record's ordered regions, the ECS scope from its widening chain, a reply template per answer). "
            f"The bounded row sends another file of distinct networks at `-Q {args.wide_rate}`.",
            "- The six-subnet ECS mix is the cached path: every query of a run is identical.",
            "- Rerun on a quiet machine with `.venv/bin/python bench/dns_bench.py` (about 6 minutes; both "
            "servers pinned to CPU 1, dnsperf to CPU 0). CPU per query is the figure other load on the machine "
            "moves least; q/s and latency percentiles move most (a shared CPU queues the server's replies). "
            "bench/dns_inprocess.py gives the responder's instructions per query, which load does not move.",
            "- The GSLB is measured after it logged that its steering tables were compiled (in a worker "
            "process; it listens once they are, at most 60 s after start).",
            f"- Load average when the report was written: {__import__('os').getloadavg()[0]:.2f} (other work "
            "ran on this 2-CPU machine during the run: see the note on rerunning quietly).",
            "- CPU µs/query = server utime+stime (/proc/PID/stat, whole process tree) over the run ÷ queries "
            "answered. gdnsd runs one UDP thread (`udp_threads => 1`).",
            "- `echo` rows: the platform's floor, bench/udp_echo.py (one Python process, a blocking "
            "recvfrom/sendto loop that answers each query with itself, QR set: no event loop, no parsing, "
            "nothing decided), pinned to CPU 1 like the servers, in the two bounded rows only. At a bounded rate "
            "much of the CPU per query is the cost of sleeping and waking (a wake-up, the reply waking dnsperf), "
            "which any server on this machine pays; CPU per query above the echo's is the part a design controls.",
            ""]
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
    extras = extras or {}
    if "gdnsd" in results and "gslb" in results and not args.wide_only:
        g, o = results["gdnsd"], results["gslb"]
        mix_ratio = (o[0].cpu_us or 0) / (g[0].cpu_us or 1)
        eq_ratio = (o[-1].cpu_us or 0) / (g[-1].cpu_us or 1)
        wide_ratio = (o[1].cpu_us or 0) / (g[1].cpu_us or 1)
        p99 = [percentile(sorted(r.latencies), 99) or 0.0 for r in (g[2], o[2])]
        p99_ratio = p99[1] / (p99[0] or 1)
        p99c = [percentile(sorted(r.latencies), 99) or 0.0 for r in (g[-1], o[-1])]
        out += ["### Ratio", "",
                f"- CPU per query, wide ECS mix (the miss path, {args.wide:,} /24s + {args.wide6:,} /56s, none "
                f"repeating): GSLB ÷ gdnsd **{wide_ratio:.2f}×** (target ≤ 3×: "
                f"{'meets' if wide_ratio <= 3 else 'MISSES'}; moonshot 2×)",
                f"- p99 latency, wide ECS mix at `-Q {args.wide_rate}`, the table's one run of each (minutes "
                f"apart): GSLB {p99[1] * 1e3:.3f} ms ÷ gdnsd {p99[0] * 1e3:.3f} ms = **{p99_ratio:.2f}×** "
                f"(target ≤ 2×: {'meets' if p99_ratio <= 2 else 'MISSES'})"
                + ("; the interleaved rounds below are the figure to go by" if tail else ""),
                f"- CPU per query, cached path (the six-subnet ECS mix): **{mix_ratio:.2f}×** (target ≤ 2.3×: "
                f"{'meets' if mix_ratio <= 2.3 else 'MISSES'})",
                f"- At equal load (`-Q {args.rate}`, one subnet): CPU {eq_ratio:.2f}× (includes each server's fixed "
                f"per-wakeup cost); p99 {p99c[1] * 1e3:.3f} ms vs {p99c[0] * 1e3:.3f} ms",
                f"- Throughput with ECS (mix): GSLB {o[0].qps:,.0f} q/s vs gdnsd {g[0].qps:,.0f} q/s "
                "(gdnsd's figure is bounded by dnsperf on one CPU)"]
        if "echo" in results:
            out += floor_lines(args, g, o, results["echo"])
        out.append("")
        if tail:
            out += tail_lines(args, tail)
    if extras:
        out += ["### Memory, steering, table compile", ""]
        for name, extra in extras.items():
            same, total, answered = extra.get("nearest", (0, 0, 0))
            share = same / total * 100 if total else 0.0
            line = f"- {name}: RSS after the runs **{extra.get('rss_end', 0):.1f} MB**"
            if name == "gslb":
                line += f" (goal ≤ 120; {extra.get('rss_start', 0):.1f} MB once the table was installed)"
            line += (f"; nearest region by brute-force haversine on the database's coordinates: **{share:.2f} %** "
                     f"of {total:,} located networks of a {NEAREST_SAMPLE:,}-network sample of the wide file "
                     f"({answered:,} answered)")
            if name == "gslb":
                line += " (goal ≥ 99.9 %)"
            out.append(line)
        compile_line = extras.get("gslb", {}).get("compile")
        if compile_line:
            out.append(f"- GSLB table compile (its log): {compile_line}")
        out.append("")
    if tables:
        out += ["Compiled tables alone (a fresh process that loads them; numpy stays in the worker): RSS added and "
                "compile time for 1, 2 and 3 distinct maps (geo over the 3 regions; + a geo_map; + geo over 2 "
                "regions). Goal: compile ≤ 5 s, ≤ 50 MB per distinct map.", "",
                markdown_table(["distinct maps", "RSS added MB", "MB per map", "compile wall s", "worker"],
                               [[t["maps"], fmt(t["rss_mb"], 1), fmt(t["rss_mb"] / t["maps"], 1),
                                 fmt(t["seconds"], 2), t["worker"]] for t in tables]), ""]
    for name, why in notes.items():
        out += [f"**{name}: not yet measured**: {why.splitlines()[0][:500]}", ""]
        detail = "\n".join(why.splitlines()[1:])[-1500:]
        if detail:
            out += ["```", detail, "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
