"""The platform's floor: a do-nothing DNS "server" that answers every query with the query itself, QR set.

It does the least a UDP server on this machine can do per query: a blocking `recvfrom` that sleeps until a
datagram comes, one bit flipped, one `sendto`. No event loop, no parsing, no steering. Whatever it costs per
query at a given rate is what the kernel, the loopback path, the wake-ups and the Python interpreter cost
any server here (ours, gdnsd); a server's CPU per query minus the echo's at the same rate is the part its
own design controls. bench/dns_bench.py and bench/dns_workers.py measure it beside the GSLB and gdnsd.

Each of the `--processes` processes binds its own socket with SO_REUSEPORT (as the GSLB's workers and
gdnsd's UDP threads do), so the kernel spreads the clients' sockets over them, and asks for the GSLB's
4 MiB receive buffer (so dnsperf's first burst of outstanding queries is not dropped). The first process
forks the others, and every process prints one `listening` line once bound (start_echo waits for them
all). SIGTERM or SIGINT to the first process stops the others (which also die with it: PR_SET_PDEATHSIG).

Input: a datagram shorter than a DNS header (12 bytes) or one that already has QR set (a response: echoing
it could loop between two echoes) is dropped; anything else is echoed whole, so a datagram up to 65,535
bytes costs one copy into a fixed buffer, never more memory.

Usage: python bench/udp_echo.py --port PORT [--host 127.0.0.1] [--processes 1]
Benchmarks are scripts, not tests: nothing here is imported by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common import Server

HEADER = 12                 # bytes in a DNS header
QR = 0x80                   # the QR bit in the header's third byte
PR_SET_PDEATHSIG = 1        # prctl(2)
RCVBUF = 4 * 1024 * 1024    # asked of the kernel (capped at net.core.rmem_max), as gslb/server/udp.py does


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((host, port))
    return sock


def echo_forever(sock: socket.socket) -> None:
    """The whole server: sleep in recvfrom, flip QR, send the datagram back."""
    buf = bytearray(65535)
    view = memoryview(buf)
    recvfrom_into, sendto = sock.recvfrom_into, sock.sendto
    while True:
        n, addr = recvfrom_into(buf)
        if n < HEADER or buf[2] & QR:
            continue
        buf[2] |= QR
        with contextlib.suppress(OSError):      # the client's socket is gone: nothing to answer
            sendto(view[:n], addr)


def die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def serve(host: str, port: int, processes: int) -> None:
    children: list[int] = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent()
            if os.getppid() == 1:               # the parent died before prctl took effect
                os._exit(0)
            run_one(host, port)
            os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_one(host, port)


def run_one(host: str, port: int) -> None:
    sock = bind(host, port)
    print(f"udp_echo: pid {os.getpid()} listening on {host}:{port}", flush=True)
    echo_forever(sock)


# ---------------------------------------------------------------- for the bench scripts


def answers(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """Whether a DNS-shaped query to host:port comes back with the same id and QR set."""
    query = (bytes.fromhex("beef 0100 0001 0000 0000 0000")            # id, RD, one question
             + b"\x03www\x07example\x04test\x00" + bytes.fromhex("0001 0001"))     # www.example.test A IN
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (host, port))
            reply = sock.recv(512)
        except OSError:
            return False
    return reply[:2] == query[:2] and bool(reply[2] & QR) and reply[3:] == query[3:]


def start_echo(workdir: Path, processes: int = 1, *, cpus: str | None = None, name: str | None = None,
               timeout: float = 15.0) -> tuple[int, contextlib.AbstractContextManager[Server]]:
    """The echo with `processes` processes on a free loopback port: (port, a context manager from
    bench/common.started, so it is measured and stopped like the other servers) that is entered once every
    process listens and a query comes back. `name` (default `echo processes=N`) names its rows and log."""
    from common import BenchError, free_port, started

    port = free_port(udp_too=True)

    def ready(server: Server) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if server.proc.poll() is not None:
                raise BenchError(f"exited with {server.proc.returncode}")
            if server.log.read_text(errors="replace").count(" listening on ") >= processes and answers(port):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"not {processes} processes answering on 127.0.0.1:{port} after {timeout:.0f} s")
            time.sleep(0.05)

    argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--processes", str(processes)]
    return port, started(name or f"echo processes={processes}", argv, workdir, cpus=cpus, ready=ready)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--processes", type=int, default=1, help="processes on SO_REUSEPORT sockets (default 1)")
    args = p.parse_args()
    if not 1 <= args.processes <= 256:
        p.error("--processes must be between 1 and 256")
    serve(args.host, args.port, args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
