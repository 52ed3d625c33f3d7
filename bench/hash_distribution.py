"""Load spread and key movement of the consistent-hash ring and of bounded_load.

Not a test: run it and paste the Markdown it prints into bench/README.md.

    .venv/bin/python bench/hash_distribution.py [--keys 100000] [--backends 10]

Model (the static setting of Mirrokni, Thorup & Zadimoghaddam): requests arrive one by
one and none finishes, so a backend's load is the number of requests it was given and
bounded_load sees the true in-flight counts. "uniform": every key once; "Zipf(1.1)": the
same number of requests drawn from the key universe with P(rank k) ~ 1 / k^1.1.
max/avg = the busiest backend's load over the mean. "moved" = share of requests whose
backend differs once one backend is added (n -> n+1) or removed (n -> n-1); the ideal
for a consistent hash is 1/(n+1) and 1/n.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regional_lb.balancing.base import Backend, Candidate, RequestInfo
from regional_lb.balancing.bounded_load import BoundedLoad
from regional_lb.balancing.hashing import ip_key
from regional_lb.balancing.ring import DEFAULT_VNODES, HashRing, stable_hash


def workloads(n_keys: int, seed: int = 7) -> dict[str, list[str]]:
    keys = [f"user-{i}" for i in range(n_keys)]
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (k + 1) ** 1.1 for k in range(n_keys)))
    zipf = rng.choices(keys, cum_weights=cum, k=n_keys)
    uniform = keys[:]
    rng.shuffle(uniform)
    return {"uniform": uniform, "Zipf(1.1)": zipf}


def ids(n: int) -> list[str]:
    return [f"10.0.0.{i + 1}:8080" for i in range(n)]


def ring_assign(backends: Sequence[str], requests: Sequence[str], vnodes: int = DEFAULT_VNODES) -> list[str]:
    ring = HashRing([(b, 1) for b in backends], vnodes=vnodes)
    owner: dict[str, str] = {}
    out = []
    for key in requests:
        b = owner.get(key)
        if b is None:
            b = owner[key] = ring.lookup(stable_hash(key)) or ""
        out.append(b)
    return out


def bounded_assign(backends: Sequence[str], requests: Sequence[str], c: float) -> tuple[list[str], int]:
    policy = BoundedLoad(ip_key, c=c)
    load = dict.fromkeys(backends, 0)
    objs = {b: Backend(b, b.rsplit(":", 1)[0], 8080) for b in backends}
    rng = random.Random(1)
    out = []
    for key in requests:
        cands = [Candidate(objs[b], inflight=load[b]) for b in backends]
        req = RequestInfo(client_ip=key, method="GET", host="h", path="/", headers={}, cookies={})
        pick = policy.pick(req, cands, now=0.0, rng=rng)
        assert pick is not None
        load[pick.backend.id] += 1
        out.append(pick.backend.id)
    return out, policy.stats["spills"]


def max_over_avg(assignment: Sequence[str], n: int) -> float:
    counts: dict[str, int] = {}
    for b in assignment:
        counts[b] = counts.get(b, 0) + 1
    return max(counts.values()) / (len(assignment) / n)


def moved(a: Sequence[str], b: Sequence[str]) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y) / len(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--backends", type=int, default=10)
    ap.add_argument("--c", type=float, default=1.25)
    ap.add_argument("--no-readme", action="store_true", help="print only; do not update bench/README.md")
    args = ap.parse_args()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report(args)
    print(out.getvalue(), end="")
    if not args.no_readme:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import write_section
        command = f"python bench/hash_distribution.py --keys {args.keys} --backends {args.backends} --c {args.c}"
        write_section("hash", f"Command: `{command}`\n\n{out.getvalue()}")


def report(args: argparse.Namespace) -> None:
    n, c = args.backends, args.c
    started = time.perf_counter()
    loads = workloads(args.keys)
    base, more, fewer = ids(n), ids(n + 1), ids(n)[:3] + ids(n)[4:]

    print(f"n = {n} backends, {args.keys:,} requests, ring vnodes = {DEFAULT_VNODES} per weight, c = {c}\n")
    print("| scheme | keys | max/avg load | spilled | moved, +1 backend | moved, -1 backend |")
    print("|---|---|---:|---:|---:|---:|")
    for name, reqs in loads.items():
        r = ring_assign(base, reqs)
        print(f"| ring | {name} | {max_over_avg(r, n):.3f} | - | "
              f"{moved(r, ring_assign(more, reqs)):.1%} | {moved(r, ring_assign(fewer, reqs)):.1%} |")
    for name, reqs in loads.items():
        b, spills = bounded_assign(base, reqs, c)
        b_more, _ = bounded_assign(more, reqs, c)
        b_fewer, _ = bounded_assign(fewer, reqs, c)
        print(f"| bounded_load c={c} | {name} | {max_over_avg(b, n):.3f} | {spills / len(reqs):.1%} | "
              f"{moved(b, b_more):.1%} | {moved(b, b_fewer):.1%} |")
    print(f"\nideal movement: +1 backend {1 / (n + 1):.1%}, -1 backend {1 / n:.1%} "
          "(bounded_load moves more: a spill cascades when the load pattern changes)\n")

    print("Ring balance vs virtual nodes (uniform keys):\n")
    print("| vnodes per weight | max/avg | min/avg |")
    print("|---:|---:|---:|")
    uniform = loads["uniform"]
    for vnodes in (10, 40, 160, 640):
        r = ring_assign(base, uniform, vnodes)
        counts = {b: 0 for b in base}
        for x in r:
            counts[x] += 1
        avg = len(r) / n
        print(f"| {vnodes} | {max(counts.values()) / avg:.3f} | {min(counts.values()) / avg:.3f} |")
    print()
    pick_cost(n)
    print(f"\n(ran in {time.perf_counter() - started:.1f} s on Python {sys.version.split()[0]})")


def pick_cost(n: int, picks: int = 20_000) -> None:
    """Microseconds per Policy.pick over n candidates (the policy alone: no pool, no proxy)."""
    from gslb.common.configload import Section
    from regional_lb.balancing import make_policy

    cands = [Candidate(Backend(b, b.rsplit(":", 1)[0], 8080), inflight=i % 4, ewma=0.01 * (i + 1))
             for i, b in enumerate(ids(n))]
    specs: list[tuple[str, dict[str, object]]] = [
        ("round_robin", {}), ("random", {}), ("least_connections", {}), ("least_connections", {"choices": 2}),
        ("least_response_time", {}), ("ip_hash", {}), ("bounded_load", {}),
        ("sticky_cookie", {"secrets": ["k"]}), ("sticky_learn", {})]
    print(f"Pick cost, {n} candidates, {picks:,} picks each (CPython, one core):\n")
    print("| policy | µs per pick |")
    print("|---|---:|")
    for name, options in specs:
        policy = make_policy(name, Section(dict(options), file="bench", path="options"), tls=False)
        rng = random.Random(0)
        reqs = [RequestInfo(client_ip=f"198.51.{i // 256 % 256}.{i % 256}", method="GET", host="h", path="/",
                            headers={}, cookies={}) for i in range(1000)]
        if name == "sticky_cookie":        # returning visitors: every request carries a valid cookie
            first = [policy.pick(r, cands, now=1e9, rng=rng) for r in reqs]
            reqs = [RequestInfo(r.client_ip, "GET", "h", "/", {}, {"LBSESSIONID": p.set_cookie.split(";")[0]
                                .split("=", 1)[1]}) for r, p in zip(reqs, first, strict=True)
                    if p is not None and p.set_cookie]
        t = time.perf_counter()
        for i in range(picks):
            policy.pick(reqs[i % len(reqs)], cands, now=1e9, rng=rng)
        label = name + (f" (choices={options['choices']})" if "choices" in options else "")
        print(f"| {label} | {(time.perf_counter() - t) / picks * 1e6:.1f} |")
    from regional_lb.pool import Pool, PoolSettings

    pool = Pool("bench", [c.backend for c in cands], PoolSettings(slow_start=30.0), now=0.0)
    t = time.perf_counter()
    for i in range(picks):
        pool.candidates(float(i))
    print(f"| (pool.candidates, per request) | {(time.perf_counter() - t) / picks * 1e6:.1f} |")


if __name__ == "__main__":
    main()
