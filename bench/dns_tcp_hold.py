"""DNS over TCP under a client that tries to hold it: our GSLB (and gdnsd beside it), one run.

Two attacks, each against a freshly started server:

  * hold: `--hold` silent connections (default 1,100, above our default limit of 1,024) from 22 loopback
    addresses (50 each, under the per-client cap), each reopened as soon as the server closes it, for
    `--duration` seconds; meanwhile a legitimate client at 127.0.0.1 sends one TCP query every 10 ms,
    each on a new connection (2 s timeout). Reported: the share of legitimate queries answered.
  * pipeline: `--pipeline` connections (default 1,000) from 20 addresses, each sending ~1 MB of queries
    (apex NS) as fast as the kernel takes them and never reading a reply. Reported: the server's RSS
    before, with them open, and after they close.

Usage: python bench/dns_tcp_hold.py [--duration 20] [--hold 1100] [--pipeline 1000] [--only gslb|gdnsd]
                                    [--gslb-src DIR]
    --gslb-src DIR runs the `gslb` package found in DIR instead (e.g. an older commit unpacked with
    `git archive COMMIT gslb geo_data | tar -x -C DIR`) for before/after figures.
Results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dns.asyncquery
import dns.message
from common import BenchError
from dns_bench import choose_geoip
from dns_hostile import gdnsd_target, gslb_source, gslb_target, rss_kib

LEGIT = "127.0.0.1"


def attacker_address(i: int, per_address: int) -> str:
    return f"127.1.{i // per_address // 250}.{i // per_address % 250 + 1}"


async def hold(port: int, count: int, duration: float) -> tuple[int, int, int]:
    """(legitimate queries sent, answered, attacker connections opened)."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + duration
    opened = 0

    async def holder(i: int) -> None:
        nonlocal opened
        source = attacker_address(i, 50)
        while loop.time() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            opened += 1
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(reader.read(1), max(0.01, stop - loop.time()))   # until closed
            writer.close()

    holders = [asyncio.create_task(holder(i)) for i in range(count)]
    await asyncio.sleep(1.0)                  # let the attacker fill the table first
    sent = answered = 0
    query = dns.message.make_query("ns1.example.test", "A")
    while loop.time() < stop:
        sent += 1
        with contextlib.suppress(Exception):
            reply = await dns.asyncquery.tcp(query, "127.0.0.1", port=port, source=LEGIT, timeout=2)
            answered += reply.id == query.id
        await asyncio.sleep(0.01)
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    return sent, answered, opened


def pipeline(port: int, pid: int, count: int) -> tuple[float, float, float]:
    """(RSS MB before, with `count` pipelining connections open, after they closed)."""
    q = dns.message.make_query("example.test", "NS").to_wire()
    frame = len(q).to_bytes(2, "big") + q
    blob = frame * (1_000_000 // len(frame))
    before = rss_kib(pid)[0] / 1024
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((attacker_address(i, 50), 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError, OSError):
            while sent < len(blob):
                sent += s.send(blob[sent:sent + 65536])
        socks.append(s)
    time.sleep(3)
    for s in socks:                            # once more, after the server had time to read
        with contextlib.suppress(OSError):
            s.send(blob[:65536])
    time.sleep(2)
    during = rss_kib(pid)[0] / 1024
    for s in socks:
        s.close()
    time.sleep(2)
    return before, during, rss_kib(pid)[0] / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--hold", type=int, default=1100)
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--only", choices=("gslb", "gdnsd"))
    parser.add_argument("--gslb-src")
    parser.add_argument("--geoip")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.hold + args.pipeline + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    src, src_label = gslb_source(args.gslb_src)
    with tempfile.TemporaryDirectory(prefix="dns-tcp-hold-") as tmp:
        workdir = Path(tmp)
        geoip, _ = choose_geoip(args.geoip, workdir)
        for name in ("gslb", "gdnsd"):
            if args.only and args.only != name:
                continue
            for attack in ("hold", "pipeline"):
                run_dir = workdir / f"{name}-{attack}"      # a fresh server (and directory) per attack
                run_dir.mkdir()
                if name == "gslb":
                    try:
                        port, _admin, ctx = gslb_target(run_dir, geoip, {"rrl": {"enabled": False}}, src=src)
                    except BenchError:          # an older --gslb-src without rate limiting
                        port, _admin, ctx = gslb_target(run_dir, geoip, {"rrl": None}, src=src)
                else:
                    port, ctx = gdnsd_target(run_dir, geoip)
                with ctx as server:
                    label = f"{name} ({src_label})" if name == "gslb" else name
                    if attack == "hold":
                        sent, answered, opened = asyncio.run(hold(port, args.hold, args.duration))
                        print(f"{label}: hold {args.hold} silent connections (reopened: {opened:,} opens in "
                              f"{args.duration:.0f} s): legitimate TCP queries answered {answered:,}/{sent:,} "
                              f"({100 * answered / max(sent, 1):.1f}%)")
                    else:
                        before, during, after = pipeline(port, server.pid, args.pipeline)
                        print(f"{label}: {args.pipeline} connections pipelining ~1 MB of queries, never "
                              f"reading: RSS {before:.1f} MB before, {during:.1f} MB with them, "
                              f"{after:.1f} MB after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
