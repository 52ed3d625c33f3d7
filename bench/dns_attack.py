"""DNS under a parsing attack: legitimate-query loss for our GSLB and for gdnsd, one run.

A legitimate client (dnsperf, UDP, `--rate` queries/s for www with an ECS /24, timeout `--timeout` s)
runs for `--duration` seconds while an attacker (a thread of this script, from another loopback /24)
sends crafted ~64 KB queries at each of `--attack-rates` per second:

  * chain:  thousands of additional records whose owner names point into a chain of ~8,000
            compression pointers (a parser that decompresses every owner name and does not bound
            pointer hops walks the chain once per record);
  * labels: thousands of additional records whose owner name is a pointer to a 127-label name.

Every attack datagram differs (the last record's TTL counts up), so no response cache can answer it.
Each scenario gets a freshly started server (a backlog left by one scenario cannot leak into the
next), warmed up for one second. Loss = (sent - answered) / sent as dnsperf counts it: a query not
answered within the timeout is lost. dnsperf and the attacker run on CPU 0, the server on CPU 1.
Rate limiting is switched off in our server for this run (`--gslb-dns`): every legitimate query comes
from one address, which response rate limiting would rightly throttle.

Usage: python bench/dns_attack.py [--duration 10] [--rate 2000] [--attack-rates 1,2,10,100]
                                  [--kinds chain,labels] [--only gdnsd|gslb] [--no-readme]
Results go to stdout and to the dns-attack section of bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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
from dns_bench import CLIENT_CPU, SUBNETS, choose_geoip, pin_self
from dns_hostile import QNAME, chain_datagram, gdnsd_target, gslb_source, gslb_target, labels_datagram

ATTACKER_ADDRESS = "127.9.0.1"
KINDS = {"chain": chain_datagram, "labels": labels_datagram}
DEFAULT_GSLB_DNS = {"rrl": {"enabled": False}}


@dataclass
class Result:
    server: str
    scenario: str
    attack_sent: int = 0
    sent: int = 0
    answered: int = 0
    avg_ms: float | None = None
    max_ms: float | None = None
    cpu: float = 0.0
    alive: bool = True

    @property
    def loss(self) -> float:
        return (self.sent - self.answered) / self.sent * 100 if self.sent else 100.0


class Attacker(threading.Thread):
    """Sends `rate` crafted datagrams per second (evenly spaced) until stopped."""

    def __init__(self, port: int, datagram: bytes, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.base, self.rate = port, datagram, rate
        self.sent = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ATTACKER_ADDRESS, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # replies are never read
        data = bytearray(self.base)
        start = time.monotonic()
        try:
            while not self._stop_event.is_set():
                data[-6:-2] = self.sent.to_bytes(4, "big")   # the last record's TTL: every datagram differs
                data[0:2] = (self.sent & 0xFFFF).to_bytes(2, "big")
                with contextlib.suppress(OSError):      # a full queue loses the datagram, as a wire would
                    sock.sendto(data, ("127.0.0.1", self.port))
                self.sent += 1
                self._stop_event.wait(max(0.0, start + self.sent / self.rate - time.monotonic()))
        finally:
            sock.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def dnsperf(port: int, qfile: Path, duration: float, rate: int, timeout: float) -> tuple[int, int, float, float]:
    """(sent, answered, avg ms, max ms) of one bounded-rate dnsperf run."""
    london = SUBNETS[2]
    argv = [*taskset_prefix(CLIENT_CPU), "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
            "-l", str(duration), "-c", "1", "-q", str(max(100, int(rate * timeout * 2))), "-Q", str(rate),
            "-t", str(timeout), "-E", f"8:{london.ecs_hex()}"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout + 30, check=False)
    if res.returncode != 0:
        raise BenchError(f"dnsperf exited {res.returncode}: {res.stderr[-1500:]}")
    sent = answered = 0
    avg = mx = 0.0
    for line in res.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Queries sent":
            sent = int(value.split()[0])
        elif key == "Queries completed":
            answered = int(value.split()[0])
        elif key == "Average Latency (s)":
            parts = value.replace("(", " ").replace(")", " ").replace(",", " ").split()
            avg = float(parts[0]) * 1e3
            if "max" in parts:
                mx = float(parts[parts.index("max") + 1]) * 1e3
    return sent, answered, avg, mx


def scenario(name: str, starter, args, qfile: Path, kind: str | None, attack_rate: float) -> Result:
    label = "no attack" if kind is None else f"{kind} × {attack_rate:g}/s"
    ctx = starter()
    with ctx as target:
        port = target[1]
        server = target[0]
        dnsperf(port, qfile, 1, args.rate, args.timeout)                        # warm-up
        attacker = None
        if kind is not None:
            attacker = Attacker(port, KINDS[kind](), attack_rate)
        meter = CpuMeter(server.pid)
        meter.start()
        if attacker is not None:
            attacker.start()
        try:
            sent, answered, avg, mx = dnsperf(port, qfile, args.duration, args.rate, args.timeout)
        finally:
            if attacker is not None:
                attacker.stop()
        result = Result(name, label, attacker.sent if attacker else 0, sent, answered, avg if answered else None,
                        mx if answered else None, meter.stop(), server.proc.poll() is None)
    print(f"  {name} {label}: sent {result.sent:,}, answered {result.answered:,}, lost {result.loss:.2f} %, "
          f"attack datagrams {result.attack_sent}, server CPU {result.cpu:.2f} s", flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (default 10)")
    p.add_argument("--rate", type=int, default=2000, help="legitimate queries/s (default 2000)")
    p.add_argument("--timeout", type=float, default=1.0, help="a query unanswered after this is lost (default 1 s)")
    p.add_argument("--attack-rates", default="1,2,10,100",
                   help="attack datagrams per second (default 1,2,10,100)")
    p.add_argument("--kinds", default="chain,labels", help="attack kinds (default chain,labels)")
    p.add_argument("--gslb-dns", default=json.dumps(DEFAULT_GSLB_DNS),
                   help=f"JSON object of extra dns: keys for our server (default {json.dumps(DEFAULT_GSLB_DNS)})")
    p.add_argument("--gslb-src", help="directory holding the gslb package to run (default: this checkout); "
                                      "e.g. an older commit unpacked with git archive, for a before figure")
    p.add_argument("--geoip", help="GeoIP .mmdb for both servers (default: geo_data/*.mmdb)")
    p.add_argument("--only", choices=["gdnsd", "gslb"], help="measure one server only")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--section", default="dns-attack",
                   help="README section to rewrite (default dns-attack; e.g. dns-attack-before with --gslb-src)")
    args = p.parse_args()
    rates = [float(r) for r in args.attack_rates.split(",") if r]
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            p.error(f"unknown kind {k!r} (known: {', '.join(KINDS)})")
    extra_dns = json.loads(args.gslb_dns)
    src, src_text = gslb_source(args.gslb_src)
    pin_self(CLIENT_CPU)

    results: list[Result] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dns-attack-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        qfile = workdir / "queries.txt"
        qfile.write_text(f"{QNAME} A\n")
        seq = 0

        def start(name: str):
            nonlocal seq
            seq += 1
            run_dir = workdir / f"{name}-{seq}"
            run_dir.mkdir()
            if name == "gdnsd":
                port, ctx = gdnsd_target(run_dir, geoip)
            else:
                port, _, ctx = gslb_target(run_dir, geoip, extra_dns, src=src)
            return _Paired(ctx, port)

        for name in ("gdnsd", "gslb"):
            if args.only and args.only != name:
                continue
            print(f"measuring {name} ...", flush=True)
            try:
                results.append(scenario(name, lambda n=name: start(n), args, qfile, None, 0))
                for kind in kinds:
                    for rate in rates:
                        results.append(scenario(name, lambda n=name: start(n), args, qfile, kind, rate))
            except BenchError as exc:
                notes[name] = str(exc).strip()
                print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)

    body = report(args, results, notes, geoip_text, extra_dns, src_text)
    print(body)
    if not args.no_readme and results:
        write_section(args.section, body)
    return 0 if results and not notes else 1


class _Paired:
    """Enter a server context and yield (server, port)."""

    def __init__(self, ctx, port: int) -> None:
        self.ctx, self.port = ctx, port

    def __enter__(self):
        return self.ctx.__enter__(), self.port

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def report(args, results: list[Result], notes: dict[str, str], geoip_text: str, extra_dns: dict,
           src_text: str) -> str:
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnsperf": tool_version(["dnsperf", "-h"])}
    chain, labels = chain_datagram(), labels_datagram()
    title = "### Parsing attack: legitimate-query loss"
    if args.gslb_src:
        title += f" — before (our server from `{args.gslb_src}`)"
    out = [title, ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database (both servers): {geoip_text}; our server's code: {src_text}",
            f"- Legitimate load: dnsperf `-Q {args.rate} -t {args.timeout:g} -c 1` for {args.duration:g} s, "
            f"www.example.test A with ECS {SUBNETS[2].network}, from 127.0.0.1; a query not answered within "
            f"{args.timeout:g} s is lost. One freshly started server per row, warmed up for 1 s.",
            f"- Attack from {ATTACKER_ADDRESS}, evenly spaced: `chain` = {len(chain):,}-byte query, "
            f"{int.from_bytes(chain[10:12], 'big'):,} additional records, each owner a pointer into a chain of "
            f"~8,000 pure compression pointers; `labels` = {len(labels):,}-byte query, "
            f"{int.from_bytes(labels[10:12], 'big'):,} additional records, each owner a pointer to a 127-label name. "
            "Every attack datagram differs (ID and the last record's TTL).",
            f"- Our server's extra `dns:` keys: `{json.dumps(extra_dns)}` (one legitimate source at "
            f"{args.rate:,} q/s is exactly what rate limiting throttles).",
            "- Server CPU = utime+stime over the measured run (/proc); server on CPU 1, dnsperf and attacker on CPU 0.",
            ""]
    rows = [[r.server, r.scenario, f"{r.attack_sent:,}", f"{r.sent:,}", f"{r.answered:,}", fmt(r.loss, 2),
             fmt(r.avg_ms, 3), fmt(r.max_ms, 1), fmt(r.cpu, 2), "yes" if r.alive else "NO"] for r in results]
    out += [markdown_table(["server", "attack", "attack datagrams", "legit sent", "answered", "lost %",
                            "avg ms", "max ms", "server CPU s", "alive after"], rows), ""]
    ours = [r for r in results if r.server == "gslb" and r.scenario != "no attack"]
    if ours:
        worst = max(ours, key=lambda r: r.loss)
        verdict = "meets" if worst.loss <= 1.0 else "MISSES"
        out += [f"Worst legitimate-query loss under attack for our GSLB: **{worst.loss:.2f} %** ({worst.scenario}; "
                f"goal ≤ 1 %: {verdict}).", ""]
    for name, why in notes.items():
        out += [f"**{name}: not measured**: {why.splitlines()[0][:500]}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
