"""CPU per request of the regional LB's upstream client alone: `Upstream.send`, read, release.

A raw asyncio backend in a child process answers every request with fixed bytes (a 20-byte body
with a Content-Length, or the same body chunked); this process runs `--concurrency` keep-alive
workers through one `Upstream` and reports its own CPU time (time.process_time) per request,
best of `--repeat` runs after a warm-up. It isolates the response parsing and connection
handling from the rest of the proxy (bench/http_bench.py measures the whole proxy).

Usage: python bench/upstream_bench.py [--requests 40000] [--concurrency 20] [--repeat 3]
Compare two trees by running each copy's script (it imports regional_lb from its own tree).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from regional_lb.balancing.base import Backend
from regional_lb.proxy.upstream import RawHead, Upstream

BACKEND = r'''
import asyncio, uvloop
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nServer: raw\r\n"
RESPONSES = {b"/length": HEAD + b"Content-Length: 20\r\n\r\n" + b"x" * 20,
             b"/chunked": HEAD + b"Transfer-Encoding: chunked\r\n\r\n14\r\n" + b"x" * 20 + b"\r\n0\r\n\r\n"}
class Raw(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            self.transport.write(RESPONSES[head.split(b" ", 2)[1]])
async def main():
    server = await asyncio.get_running_loop().create_server(Raw, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
'''
HEADERS = RawHead(b"Host: app.test\r\nUser-Agent: wrk\r\nX-Forwarded-For: 127.0.0.1\r\nVia: 1.1 regional-lb\r\n", True)


async def measure(port: int, path: str, requests: int, concurrency: int) -> float:
    upstream = Upstream(connect_timeout=2.0, read_timeout=10.0)
    backend = Backend("b", "127.0.0.1", port)
    each = requests // concurrency

    async def worker() -> None:
        for _ in range(each):
            response = await upstream.send(backend, "GET", path, HEADERS, None)
            await response.read()
            response.release()

    await asyncio.gather(*[worker() for _ in range(concurrency)])          # warm-up: connections, caches
    started = time.process_time()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    cpu = time.process_time() - started
    await upstream.close()
    return cpu / (each * concurrency) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=40000)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    child = subprocess.Popen([sys.executable, "-c", BACKEND], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for path in ("/length", "/chunked"):
            runs = [uvloop.run(measure(port, path, args.requests, args.concurrency)) for _ in range(args.repeat)]
            print(f"{path:9} CPU µs/request: best {min(runs):.1f} (runs: {', '.join(f'{r:.1f}' for r in runs)})")
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    main()
