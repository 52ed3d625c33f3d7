"""What response rate limiting (gslb/dns/rrl.py) costs per UDP reply, and what it saves a victim.

Cost, measured as CPU time (so a busy machine skews it less than wall time):

1. In process: `Responder.respond` on a cached answer against the same call through
   `RateLimitedResponder` (a limiter whose rate is never reached, so every reply pays for its key
   and bucket and none is limited), plus `RateLimiter.decide` alone and the over-limit path
   (`limit` building a slip reply). Best of --repeat rounds of --calls calls each.
2. The real server (`python -m gslb serve`, bench/configs/gslb.yaml.tmpl), when dnsperf is
   installed: RRL off, then on (rate 1,000,000/s: never limiting), alternating --rounds times,
   dnsperf at a bounded rate (-Q --rate) for --duration seconds asking www.example.test A; the
   server's CPU time over each run divided by the answers gives CPU µs per query.

Saving (--reflect-seconds, 0 to skip): a spoofed-source flood as the victim sees it. One socket
sends `example.test NS` with EDNS (the apex NS answer with glue: the biggest answer) at --reflect-rate
q/s for --reflect-seconds to the real server with RRL off and with the default settings, and counts
the bytes that come back: bytes in / bytes out is the amplification the attacker gets.

Usage: python bench/dns_rrl_cost.py [--calls 200000] [--repeat 7] [--rounds 2] [--duration 5] [--rate 3000]
                                   [--reflect-rate 2000] [--reflect-seconds 5]
(--rounds 0: in process only.) On a busy machine the real-server figures vary by more than
RRL's cost; compare them only on an otherwise idle one.
Prints the figures; it does not edit bench/README.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import BENCH_DIR, REPO_DIR, BenchError, CpuMeter, Server, free_port, started


def render(values: dict[str, object]) -> str:
    import string
    return string.Template((BENCH_DIR / "configs" / "gslb.yaml.tmpl").read_text()).substitute(values)


def config_text(port: int, admin_port: int, geoip: str, rrl: str) -> str:
    text = render({"port": port, "admin_port": admin_port, "geoip_db": geoip})
    old = "  rrl: {enabled: false}"
    if old not in text:
        raise BenchError("bench/configs/gslb.yaml.tmpl no longer holds the rrl line this script replaces")
    return text.replace(old, f"  rrl: {rrl}")


def default_geoip() -> str:
    from gslb.geoip import DEFAULT_DATABASE
    return str(DEFAULT_DATABASE)


def cpu_per_call(fn: Callable[[int], object], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started_at = time.process_time()
        for i in range(calls):
            fn(i)
        best = min(best, (time.process_time() - started_at) / calls)
    return best * 1e6


def in_process(args: argparse.Namespace, workdir: Path) -> None:
    import logging

    import dns.message

    from gslb.app import GslbServer
    from gslb.config import load_config
    from gslb.dns.rrl import RateLimiter, RrlSettings

    path = workdir / "inproc.yaml"
    path.write_text(config_text(53, 8053, default_geoip(), "{responses_per_second: 1000000}"))
    server = GslbServer(load_config(path))
    responder, wrapped = server.responder, server.udp_responder
    client = ipaddress.IPv4Address("192.0.2.7")
    data = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    reply = responder.respond(data, client, 0.0)
    assert reply is not None
    assert wrapped is not responder
    base = cpu_per_call(lambda i: responder.respond(data, client, i * 1e-6), args.calls, args.repeat)
    limited = cpu_per_call(lambda i: wrapped.respond(data, client, i * 1e-6), args.calls, args.repeat)
    limiter = RateLimiter(RrlSettings(responses_per_second=1_000_000))
    decide = cpu_per_call(lambda i: limiter.decide(reply, client, i * 1e-6), args.calls, args.repeat)
    logging.getLogger("gslb.dns.rrl").setLevel(logging.ERROR)     # its "rate limiting" line is expected here
    over = RateLimiter(RrlSettings(responses_per_second=1, slip=2))
    over_limit = cpu_per_call(lambda i: over.limit(reply, client, 0.0), args.calls, args.repeat)
    print("In process, CPU µs per call (best of", args.repeat, "rounds of", f"{args.calls:,})")
    print(f"  Responder.respond, cached answer             {base:6.2f}")
    print(f"  the same through RateLimitedResponder         {limited:6.2f}   (+{limited - base:.2f})")
    print(f"  RateLimiter.decide alone                      {decide:6.2f}")
    print(f"  over the limit: limit() -> slip or drop       {over_limit:6.2f}")


def dns_ready(port: int) -> Callable[[Server], None]:
    def ready(server: Server) -> None:
        import dns.exception
        import dns.message
        import dns.query
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise BenchError("exited")
            try:
                dns.query.udp(dns.message.make_query("www.example.test", "A"), "127.0.0.1", port=port, timeout=0.3)
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        raise BenchError("no DNS answer within 30 s")
    return ready


def real_server(args: argparse.Namespace, workdir: Path) -> None:
    if args.rounds < 1:
        return
    if shutil.which("dnsperf") is None:
        print("dnsperf not installed: real-server figures skipped (make bench-deps)")
        return
    qfile = workdir / "queries.txt"
    qfile.write_text("www.example.test A\n")
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode, rrl in (("off", "{enabled: false}"), ("on", "{responses_per_second: 1000000}")):
            port = free_port(udp_too=True)
            cfg = workdir / f"gslb-{mode}.yaml"
            cfg.write_text(config_text(port, free_port(), default_geoip(), rrl))
            argv = [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "warning"]
            with started(f"gslb-{mode}", argv, workdir, ready=dns_ready(port),
                         env={"PYTHONPATH": str(REPO_DIR)}) as server:
                meter = CpuMeter(server.pid)
                meter.start()
                res = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
                                      "-l", str(args.duration), "-Q", str(args.rate), "-c", "1", "-q", "100"],
                                     capture_output=True, text=True, timeout=args.duration + 30, check=False)
                cpu = meter.stop()
                if res.returncode != 0:
                    raise BenchError(f"dnsperf failed: {res.stderr[-1000:]}")
                completed = next(int(line.split(":")[1].split()[0]) for line in res.stdout.splitlines()
                                 if line.strip().startswith("Queries completed"))
                results[mode].append(cpu * 1e6 / completed)
                print(f"  RRL {mode:3}: {completed:,} answers, {cpu * 1e6 / completed:.2f} µs CPU/query", flush=True)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"Real server, median CPU µs per query at {args.rate} q/s: RRL off {off:.2f}, on {on:.2f} "
          f"(+{on - off:.2f}, {100 * (on - off) / off:+.0f}%)")


def reflection(args: argparse.Namespace, workdir: Path) -> None:
    if args.reflect_seconds <= 0:
        return
    import socket

    import dns.message

    query = dns.message.make_query("example.test", "NS", use_edns=0, payload=1232).to_wire()
    print(f"Reflection: example.test NS (+EDNS, {len(query)} bytes) at {args.reflect_rate} q/s "
          f"for {args.reflect_seconds:g} s from one address")
    for mode, rrl in (("off", "{enabled: false}"), ("default", "{}")):
        port = free_port(udp_too=True)
        cfg = workdir / f"gslb-reflect-{mode}.yaml"
        cfg.write_text(config_text(port, free_port(), default_geoip(), rrl))
        argv = [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "error"]
        with started(f"gslb-reflect-{mode}", argv, workdir, ready=dns_ready(port),
                     env={"PYTHONPATH": str(REPO_DIR)}), \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.66", 0))
            sock.setblocking(False)
            sent = received = bytes_in = truncated = 0
            interval = 1.0 / args.reflect_rate
            start = time.monotonic()
            end = start + args.reflect_seconds
            while True:
                now = time.monotonic()
                if now >= end + 1.0:            # a second after the last query for the stragglers
                    break
                if now < end and sent < (now - start) / interval:
                    sock.sendto(query, ("127.0.0.1", port))
                    sent += 1
                    continue
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    time.sleep(interval / 4)
                    continue
                received += 1
                bytes_in += len(data)
                truncated += bool(data[2] & 0x02)
        bytes_out = sent * len(query)
        print(f"  RRL {mode:7}: {sent:,} queries ({bytes_out:,} bytes) -> {received:,} replies, "
              f"{truncated:,} truncated ({bytes_in:,} bytes): amplification {bytes_in / bytes_out:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--reflect-rate", type=int, default=2000)
    parser.add_argument("--reflect-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rrl-cost-") as tmp:
        in_process(args, Path(tmp))
        real_server(args, Path(tmp))
        reflection(args, Path(tmp))


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"error: {exc}")
