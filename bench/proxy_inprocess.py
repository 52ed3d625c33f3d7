"""The regional LB's Python work per request, without sockets: the fast path in one process.

bench/http_bench.py measures the whole proxy against HAProxy, system calls and wake-ups included,
and on a shared machine its figures move with the load. This script measures only what the
proxy's own code costs per request, and can count it in instructions, which no other load on the
machine changes -- the figure to judge a change to the request path by.

A `FastServer` (regional_lb/proxy/fast.py) gets `--connections` client connections whose
transports are fakes: each response written triggers the connection's next request (the same
bytes: wrk's keep-alive GET). The upstream client's connections to three backends are fakes too:
each request written is answered, on the next loop turn, with a fixed 200 response (a 11-byte
body with a Content-Length). Everything between -- head reading, routing, the policy, the
upstream client, response writing, metrics -- is the real code, with the routes and policies of
bench/configs/regional_lb.yaml.tmpl: the sticky route without a cookie (a new session per
request), the sticky route with a cookie (a sticky hit), and the round-robin route.

    python bench/proxy_inprocess.py                  # CPU µs per request (time.process_time), best of --repeat
    python bench/proxy_inprocess.py --instructions   # instructions per request under valgrind (callgrind)
    python bench/proxy_inprocess.py --tree /tmp/old  # the regional_lb of another checkout (git archive REF)

The garbage collector is set as `regional-lb serve` sets it (regional_lb/cli.py: thresholds,
gc.freeze() after start) unless `--gc default`. `--instructions` needs valgrind (not a project
dependency); it counts only the measured requests (callgrind_control turns counting on and off).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = ("nocookie", "hit", "rr")
CONFIG = """
region: bench
role: edge
listen: [{address: "127.0.0.1:1"}]
trusted_proxies: []
lb_headers: false
state: {backend: memory}
pools:
  app:
    backends:
      - {address: "127.0.0.1:11", id: b1}
      - {address: "127.0.0.1:12", id: b2}
      - {address: "127.0.0.1:13", id: b3}
    health: {type: http, path: /healthz, expect_status: 200, interval: 5s, timeout: 1s, rise: 1, fall: 3}
routes:
  - {name: rr, match: {path: "/rr/**"}, pool: app, policy: round_robin}
  - name: sticky
    match: {path: "/"}
    pool: app
    policy: sticky_cookie
    options: {cookie: LBSESSIONID, secrets: ["bench-secret-not-for-production"], first: round_robin}
"""
REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n%s\r\n"


def response(backend_id: str) -> bytes:
    body = f"backend {backend_id}\n".encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: text/plain\r\nx-backend: %s\r\n\r\n"
            % (len(body), backend_id.encode())) + body


class FakeTransport(asyncio.Transport):
    """A transport whose writes call `on_write(data)`; nothing else happens."""

    def __init__(self, on_write, peer=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.on_write = on_write
        self.peer = peer
        self.closing = False

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        self.on_write(data)

    def writelines(self, parts) -> None:  # type: ignore[no-untyped-def]
        self.on_write(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):  # type: ignore[no-untyped-def]
        return self.peer if name == "peername" else default


class Run:
    def __init__(self, total: int, loop: asyncio.AbstractEventLoop) -> None:
        self.total = total
        self.done = 0
        self.finished = loop.create_future()
        self.last = b""


async def main(args: argparse.Namespace) -> dict[str, list[float]]:
    from regional_lb.app import LoadBalancer, _default_store
    from regional_lb.config import parse_config
    from regional_lb.proxy.fast import FastHandler, FastServer
    from regional_lb.proxy.upstream import Deadlines, Upstream, UpstreamConnection

    loop = asyncio.get_running_loop()
    config = parse_config(CONFIG, file="proxy_inprocess.yaml")
    lb = LoadBalancer(config)
    lb.store = _default_store(config, lb.clock)
    upstream = lb.upstream = Upstream(connect_timeout=1.0, read_timeout=10.0)
    deadlines = upstream._deadlines = Deadlines(loop, 10.0)
    heads = {"heads": upstream._heads} if hasattr(upstream, "_heads") else {}   # (older trees: none)
    for backend in lb.rt.pools["app"].pool.backends:
        pool = upstream._pool(backend)
        for _ in range(args.connections + 4):
            conn = UpstreamConnection(loop, backend.id, max_head=65536, deadlines=deadlines, **heads)
            answer = response(backend.id)
            conn.connection_made(FakeTransport(lambda _data, c=conn, a=answer: loop.call_soon(c.data_received, a)))
            pool.put(conn)
    fast = FastServer(FastHandler(lb, config.listeners[0]), None, header_timeout=10.0, idle_timeout=60.0,  # type: ignore[arg-type]
                      max_line=config.limits.max_header_size, max_headers=config.limits.max_headers)

    async def run(request: bytes, total: int) -> float:
        state = Run(total, loop)
        conns = []
        for _ in range(args.connections):
            conn = fast()

            def answered(data: bytes, c=conn) -> None:  # type: ignore[no-untyped-def]
                state.done += 1
                state.last = data
                if state.done >= state.total:
                    if not state.finished.done():
                        state.finished.set_result(None)
                    return
                loop.call_soon(c.data_received, request)
            conn.connection_made(FakeTransport(answered, ("127.0.0.1", 40000)))
            conns.append(conn)
        started = time.process_time()
        for conn in conns:
            conn.data_received(request)
        await state.finished
        spent = time.process_time() - started
        await asyncio.sleep(0.01)                  # the last requests in flight finish
        for conn in conns:
            conn.transport.close()
            conn.connection_lost(None)
        if not state.last.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected response: {state.last[:200]!r}")
        return spent * 1e6 / state.done

    first = Run(1, loop)
    probe = fast()
    probe.connection_made(FakeTransport(lambda data: first.finished.done() or first.finished.set_result(data)))
    probe.data_received(REQUEST % (b"/", b""))
    cookie = re.search(rb"Set-Cookie: (LBSESSIONID=[^;\r]+)", await first.finished)
    if cookie is None:
        raise SystemExit("the sticky route set no cookie")
    requests = {"nocookie": REQUEST % (b"/", b""), "hit": REQUEST % (b"/", b"Cookie: " + cookie.group(1) + b"\r\n"),
                "rr": REQUEST % (b"/rr/x", b"")}
    if args.gc == "cli":
        gc.collect()
        gc.freeze()
    for name in args.scenario:
        await run(requests[name], 3000)            # warm-up: caches filled, code paths taken once
    results: dict[str, list[float]] = {name: [] for name in args.scenario}
    if args.callgrind_child:
        name = args.scenario[0]
        # blocking on purpose: nothing may run between switching counting on and the measured requests
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True,  # noqa: ASYNC221
                       check=False)
        await run(requests[name], args.requests)
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True,  # noqa: ASYNC221
                       check=False)
        return results
    for _ in range(args.repeat):
        for name in args.scenario:
            results[name].append(await run(requests[name], args.requests))
    return results


def instructions(args: argparse.Namespace) -> None:
    """Each scenario in a child under callgrind: instructions counted over the measured requests only."""
    for name in args.scenario:
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/out",
                    sys.executable, __file__, "--callgrind-child", "--scenario", name, "--requests",
                    str(args.requests), "--connections", str(args.connections), "--gc", args.gc]
            if args.tree:
                argv += ["--tree", args.tree]
            res = subprocess.run(argv, capture_output=True, text=True, check=False)
            collected = re.search(r"Collected : (\d+)", res.stderr)
            if res.returncode != 0 or collected is None:
                raise SystemExit(f"callgrind run failed:\n{res.stderr[-2000:]}")
            print(f"{name:9s} {int(collected.group(1)) / args.requests / 1000:7.1f} k instructions/request", flush=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000, help="requests per measurement (default 20000)")
    p.add_argument("--repeat", type=int, default=5, help="measurements per scenario; the best is shown (default 5)")
    p.add_argument("--connections", type=int, default=50, help="client connections (default 50)")
    p.add_argument("--scenario", type=lambda v: v.split(","), default=list(SCENARIOS),
                   help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--gc", choices=["cli", "default"], default="cli", help="collector as `serve` sets it, or default")
    p.add_argument("--tree", help="import regional_lb from this source tree instead of this checkout")
    p.add_argument("--instructions", action="store_true", help="count instructions under valgrind (callgrind)")
    p.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if unknown := set(args.scenario) - set(SCENARIOS):
        p.error(f"unknown scenario {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(Path(args.tree).resolve()) if args.tree else str(Path(__file__).resolve().parent.parent))
    if args.gc == "cli":
        from regional_lb import cli as rlb_cli
        gc.set_threshold(*getattr(rlb_cli, "GC_THRESHOLDS", (100_000, 50, 1000)))
    if args.instructions:
        if args.requests == 20000:
            args.requests = 3000                    # ~50x slower under valgrind
        instructions(args)
        return
    import uvloop
    results = uvloop.run(main(args))
    for name, values in results.items():
        if values:
            values.sort()
            print(f"{name:9s} best {values[0]:6.2f}  median {values[len(values) // 2]:6.2f} µs CPU/request")


if __name__ == "__main__":
    cli()
