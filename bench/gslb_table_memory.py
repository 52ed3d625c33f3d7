"""GSLB `workers: N`: memory of the compiled steering tables per worker, compiles, time to tables (issue 11).

Starts `python -m gslb serve` with `workers: N` (default 2) on the bench config (bench/configs/gslb.yaml.tmpl,
the bundled GeoIP database) from a source tree (--tree: this checkout by default; give a worktree of an
older commit to compare, e.g. `git worktree add /tmp/before <commit>`), and measures

  * the time from the start until every worker has its tables: each answering process logs a line
    containing "steering tables compiled" when it has them (a worker compiling its own; a worker
    mapping the supervisor's file logs "steering tables compiled by the supervisor, mapped from");
  * how many compiles ran: log lines "steering tables compiled from" (a process that compiled its
    own) plus "compiled the steering tables once" (the supervisor, for all workers);
  * per process (the supervisor, each worker), /proc/PID/smaps_rollup once the tables are in and
    SETTLE seconds passed: Rss, Pss (shared pages divided among the processes that map them),
    Pss_File (of which: file pages, such as a mapped table file) and Private (clean + dirty).

With --lookups instead: the cost of one table lookup (GeoTable.find, and the inline IPv4 lookup of
Steering.fast_answer) on the arrays of a compile (array.array) and on the same tables mapped from
the file (memoryviews), over the same random addresses, best of 5 rounds; and the file's size and
the time map_tables takes (it reads every page for the CRC-32).

Usage: python bench/gslb_table_memory.py [--tree DIR] [--workers 2] [--settle 2] | --lookups
Prints a table (markdown); writes nothing else.
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO_DIR, free_port
from dns_bench import choose_geoip, render

FIELDS = ("Rss", "Pss", "Pss_File", "Private_Clean", "Private_Dirty")


def rollup(pid: int) -> dict[str, float]:
    """MB per smaps_rollup field."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].rstrip(":") in FIELDS:
            out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return out


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def lookups() -> None:
    import random

    from gslb.geoip import read_tree
    from gslb.steering.base import Region
    from gslb.steering.config import ServiceConfig
    from gslb.steering.table import RecordIndex, compile_tables, map_tables, table_spec, write_tables

    with tempfile.TemporaryDirectory(prefix="gslb-table-lookups-") as tmp:
        geoip, geoip_text = choose_geoip(None, Path(tmp))
        regions = {"us-east": Region("us-east", 39.04, -77.49), "eu-central": Region("eu-central", 50.11, 8.68),
                   "ap-northeast": Region("ap-northeast", 37.57, 126.98)}
        spec = table_spec(ServiceConfig(name="www", policy="geo", regions=tuple(regions)), regions)
        assert spec is not None
        compiled = compile_tables(read_tree(geoip), [spec])
        path = Path(tmp) / "tables.bin"
        write_tables(path, compiled)
        t = time.perf_counter()
        mapped = map_tables(path)
        map_s = time.perf_counter() - t
        rng = random.Random(1)
        v4 = [rng.getrandbits(32) for _ in range(200_000)]
        v6 = [(0x2000 + rng.getrandbits(12)) << 112 | rng.getrandbits(112) for _ in range(200_000)]
        size = path.stat().st_size / 1e6
        print(f"database: {geoip_text}; table file {size:.1f} MB, map_tables {map_s * 1e3:.0f} ms\n")
        print("| lookup | array.array ns | mapped memoryview ns |")
        print("|---|---:|---:|")
        for name, values, version in (("GeoTable.find IPv4", v4, 4), ("GeoTable.find IPv6", v6, 6)):
            cost = []
            for tables in (compiled, mapped):
                table = tables[spec]
                best = min(_timed(table.find, version, values) for _ in range(5))
                cost.append(best)
            assert [compiled[spec].find(version, v) for v in values[:5000]] == \
                [mapped[spec].find(version, v) for v in values[:5000]]
            print(f"| {name} | {cost[0]:.0f} | {cost[1]:.0f} |")
        # the layout before the table file: IPv6 starts as one sorted list of Python ints
        r6 = compiled[spec].records6
        assert r6.low is not None
        as_list = RecordIndex(128, [(h << 64) | lo for h, lo in zip(r6.starts, r6.low, strict=True)], r6.prefix, None)
        ints = min(_timed(lambda _v, value: as_list.find(value), 6, v6) for _ in range(5))
        two = min(_timed(lambda _v, value: r6.find(value), 6, v6) for _ in range(5))
        print(f"| RecordIndex.find IPv6: one list of ints (before) vs two uint64 arrays | {ints:.0f} | {two:.0f} |")
        cost = []
        for tables in (compiled, mapped):
            r = tables[spec].records4
            inline = _inline_lookup(r.starts, r.idx16, r.prefix, tables[spec].chain_ids4)
            cost.append(min(_timed1(inline, v4) for _ in range(5)))
        print(f"| fast_answer's inline IPv4 lookup | {cost[0]:.0f} | {cost[1]:.0f} |")


def _inline_lookup(starts: Any, idx16: Any, prefixes: Any, chains: Any) -> Callable[[int], int]:
    """Steering.fast_answer's inline IPv4 lookup, on these arrays."""
    br = bisect.bisect_right

    def inline(value: int) -> int:
        h = value >> 16
        i = br(starts, value, idx16[h], idx16[h + 1]) - 1
        return int(chains[i]) if i >= 0 and not (value - starts[i]) >> (32 - prefixes[i]) else -1

    return inline


def _timed(find: object, version: int, values: list[int]) -> float:
    t = time.perf_counter()
    for v in values:
        find(version, v)  # type: ignore[operator]
    return (time.perf_counter() - t) / len(values) * 1e9


def _timed1(fn: object, values: list[int]) -> float:
    t = time.perf_counter()
    for v in values:
        fn(v)  # type: ignore[operator]
    return (time.perf_counter() - t) / len(values) * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(REPO_DIR), help="the source tree to run (default: this checkout)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after the tables are in")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--lookups", action="store_true", help="time lookups on compiled vs mapped tables instead")
    args = parser.parse_args()
    if args.lookups:
        lookups()
        return 0
    with tempfile.TemporaryDirectory(prefix="gslb-table-memory-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(None, workdir)
        cfg = workdir / "gslb.yaml"
        cfg.write_text(render("gslb.yaml.tmpl", port=free_port(udp_too=True), admin_port=free_port(),
                              geoip_db=geoip) + f"workers: {args.workers}\n")
        log = workdir / "gslb.log"
        env = {**os.environ, "PYTHONPATH": args.tree}
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "info"],
                                    cwd=args.tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while (text := log.read_text(errors="replace")).count("steering tables compiled") < args.workers:
                if proc.poll() is not None or time.monotonic() - started > args.timeout:
                    print(text[-3000:], file=sys.stderr)
                    raise SystemExit("gslb did not log every worker's tables")
                time.sleep(0.05)
            to_tables = time.monotonic() - started
            time.sleep(args.settle)
            text = log.read_text(errors="replace")
            compiles = text.count("steering tables compiled from") + text.count("compiled the steering tables once")
            rows = [("supervisor", proc.pid)] + [(f"worker {i}", pid) for i, pid in enumerate(children(proc.pid))
                                                 if b"gslb.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            print(f"tree: {args.tree}  database: {geoip_text}  workers: {args.workers}")
            print(f"time from start to every worker having its tables: {to_tables:.1f} s; compiles: {compiles}\n")
            print("| process | RSS MB | PSS MB | of which file PSS MB | private MB |")
            print("|---|---:|---:|---:|---:|")
            total_pss = 0.0
            for name, pid in rows:
                r = rollup(pid)
                total_pss += r["Pss"]
                print(f"| {name} | {r['Rss']:.0f} | {r['Pss']:.0f} | {r['Pss_File']:.0f} | "
                      f"{r['Private_Clean'] + r['Private_Dirty']:.0f} |")
            print(f"| total PSS | | {total_pss:.0f} | | |")
            for line in text.splitlines():
                if "compiled" in line and "steering tables" in line:
                    print("log:", line.split(": ", 1)[-1][:200])
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
