"""The GSLB responder's Python work per query without sockets: the compiled miss path and the cached path.

A Responder and Steering built from bench/configs/gslb.yaml.tmpl (www.example.test, policy geo, three
regions, the bundled GeoIP database) answer, in-process:

  * miss:      `--queries` queries with ECS from distinct random /24s, none repeating (the wide mix's
               miss path: the steering's compiled table, a reply template per answer);
  * miss-ref:  the same without the compiled tables (the reference path: GeoIP lookup, ranking, widening,
               with its bounded memos), for comparison;
  * miss-spill: the miss queries with eu-central drained: its clients (the share is printed) spill over
               the other two regions by a hash of their network (an incident's miss path);
  * cached:    50 queries repeated (what the six-subnet ECS mix measures: remembered replies).

Reported as CPU time per query (`time.process_time`, best of `--repeat`) and, with `--instructions`,
as instructions per query under valgrind (callgrind, counting only the measured loop: callgrind_control
turns counting on and off) -- a figure the machine's other load does not move.

Usage: python bench/dns_inprocess.py [--queries 20000] [--repeat 3] [--instructions] [--no-readme]
                                     [--cases miss,miss-ref,miss-spill,cached]
Results go to stdout and to the dns-inprocess section of bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = ("miss", "miss-ref", "miss-spill", "cached")
DRAINED = "eu-central"         # miss-spill: the region drained


_TABLES: dict[str, object] = {}


def tables_for(steering: object, database: str) -> object:
    """The compiled tables: compiled once, kept in a pickle file the callgrind children load (compiling
    under valgrind would take minutes)."""
    import pickle

    from gslb.steering.table import compile_database

    path = os.environ.get("DNS_INPROCESS_TABLES")
    if "tables" not in _TABLES:
        if path and Path(path).exists():
            _TABLES["tables"] = pickle.loads(Path(path).read_bytes())
        else:
            _TABLES["tables"] = compile_database(database, steering.table_specs())  # type: ignore[attr-defined]
            if path:
                Path(path).write_bytes(pickle.dumps(_TABLES["tables"], protocol=pickle.HIGHEST_PROTOCOL))
    return _TABLES["tables"]


def build(case: str, queries: int, seed: int) -> tuple[object, list[bytes], object]:
    import string

    import dns.edns
    import dns.message

    from gslb.config import load_config
    from gslb.dns.responder import Responder
    from gslb.geoip import DEFAULT_DATABASE, MaxMindLocator
    from gslb.latency_table import LatencyTable
    from gslb.status import AnswerSampler
    from gslb.steering import Steering
    from gslb.steering.base import RegionState

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "gslb.yaml"
        cfg_path.write_text(string.Template((REPO / "bench" / "configs" / "gslb.yaml.tmpl").read_text()).substitute(
            port=5353, admin_port=8053, geoip_db=DEFAULT_DATABASE))
        config = load_config(cfg_path)
    steering = Steering(config.region_models(), config.services, MaxMindLocator(config.geoip_database),
                        LatencyTable())
    if case != "miss-ref":
        steering.install_tables(tables_for(steering, str(config.geoip_database)))  # type: ignore[arg-type]
    if case == "miss-spill":
        steering.update_region_states({DRAINED: RegionState(drained=True)})
    responder = Responder(config.zones, steering)
    responder.on_answer = AnswerSampler()     # as the server installs it (the status page's sample)
    query = dns.message.make_query("www.example.test", "A", use_edns=0, options=[dns.edns.ECSOption("1.2.3.0", 24)])
    query.id = 0
    head = query.to_wire()[:-3]
    rng = random.Random(seed)
    nets = rng.sample(range(1 << 24), queries + 100)
    resolver = ipaddress.IPv4Address("127.0.0.1")
    for n in nets[:100]:                # shapes learnt, templates made
        responder.respond(head + n.to_bytes(3, "big"), resolver, 0.0)
    if case == "cached":
        items = [head + nets[i % 50].to_bytes(3, "big") for i in range(queries)]
    else:
        items = [head + n.to_bytes(3, "big") for n in nets[100:]]
    return responder, items, steering


def spill_share(queries: int, seed: int, sample: int = 4000) -> float:
    """miss-spill: the share of its queries whose answer spilled (the reference path's reasoning says so)."""
    _, items, steering = build("miss-spill", queries, seed)
    step = max(1, len(items) // sample)
    picked = items[::step]
    spilled = 0
    for data in picked:
        client = ipaddress.IPv4Address(data[-3:] + b"\0")
        decision = steering.decide("www.example.test", client, 24, 1.0).decision  # type: ignore[attr-defined]
        spilled += any("spill" in line for line in decision.lines)
    return spilled / len(picked)


def measure(case: str, queries: int, repeat: int, callgrind: bool) -> tuple[float, float]:
    """(best CPU seconds per query, compiled-table answers per query: about 1 when the table answers
    every query; a reply template is made by the reference responder path, which asks once more)."""
    best = float("inf")
    compiled = 0.0
    for r in range(1 if callgrind else repeat):
        responder, items, steering = build(case, queries, 7 + r)
        before = steering.compiled_answers  # type: ignore[attr-defined]
        respond = responder.respond     # type: ignore[attr-defined]
        resolver = ipaddress.IPv4Address("127.0.0.1")
        gc.collect()
        gc.freeze()
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=False)
        started = time.process_time()
        for data in items:
            respond(data, resolver, 1.0)
        spent = time.process_time() - started
        if callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True, check=False)
        gc.unfreeze()
        best = min(best, spent / len(items))
        compiled = (steering.compiled_answers - before) / len(items)  # type: ignore[attr-defined]
    return best, compiled


def instructions(case: str, queries: int) -> float:
    """Instructions per query: two runs under callgrind (queries and 2 x queries); the difference
    removes what the on/off switching itself costs."""
    counts = []
    for n in (queries, 2 * queries):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/out",
                    sys.executable, __file__, "--callgrind-child", case, "--queries", str(n)]
            res = subprocess.run(argv, capture_output=True, text=True, check=False)
            total = [line for line in res.stderr.splitlines() if "Collected :" in line]
            if res.returncode != 0 or not total:
                raise SystemExit(f"callgrind run failed:\n{res.stderr[-2000:]}")
            counts.append(int(total[-1].rsplit(":", 1)[1].replace(",", "").strip()))
    return (counts[1] - counts[0]) / queries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--instructions", action="store_true", help="also count instructions under callgrind")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (all)")
    p.add_argument("--callgrind-child", metavar="CASE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.callgrind_child:
        measure(args.callgrind_child, args.queries, 1, True)
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    from common import command_line, fmt, machine_lines, markdown_table, write_section

    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.queries:,} queries per case", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="dns-inprocess-")
    os.environ["DNS_INPROCESS_TABLES"] = str(Path(tmp.name) / "tables.pickle")
    cases = [c for c in CASES if c in args.cases.split(",")]
    if not cases:
        p.error(f"--cases: none of {', '.join(CASES)}")
    rows = []
    for case in cases:
        cpu, compiled = measure(case, args.queries, args.repeat, False)
        cpu *= 1e6
        count = instructions(case, args.queries) if args.instructions else None
        print(f"{case:10s} {cpu:6.2f} µs CPU/query" + (f"   {count:9,.0f} instructions/query" if count else "")
              + f"   {compiled:5.3f} compiled answers/query", flush=True)
        rows.append([case, fmt(cpu, 2), f"{count:,.0f}" if count else "-", f"{compiled:.3f}"])
    share = spill_share(args.queries, 7) if "miss-spill" in cases else 0.0
    if "miss-spill" in cases:
        print(f"miss-spill: {share:.1%} of the queries spilled ({DRAINED} drained)", flush=True)
    what = {"miss": "compiled miss path (distinct /24s, none repeating)",
            "miss-ref": "reference miss path (no tables: GeoIP lookup, ranking, widening, memos)",
            "miss-spill": f"the miss queries with {DRAINED} drained ({share:.0%} of them spill by capacity)",
            "cached": "cached path (50 queries repeated)"}
    body = "\n".join([
        "## DNS: the responder's work per query, in-process (issue 10)", "",
        *machine_lines({}, command_line()),
        f"- {args.queries:,} queries per case for www.example.test (policy geo, 3 regions, the bundled database), "
        "`Responder.respond` called directly: no sockets, no event loop. CPU time is the best of "
        f"{args.repeat} runs; instructions (callgrind, only the measured loop) do not move with the machine's "
        "other load. The server adds its socket and event-loop work on top of these (the DNS section above).", "",
        markdown_table(["case", "CPU µs/query", "instructions/query", "compiled answers/query"],
                       [[f"{r[0]}: {what[r[0]]}", r[1], r[2], r[3]] for r in rows]), ""])
    if not args.no_readme:
        write_section("dns-inprocess", body)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
