"""A real redis-server for tests, on 127.0.0.1 and a free port.

    def test_x(redis_server):            # fixture (import it in the test module or conftest)
        url = redis_server.url           # redis://127.0.0.1:PORT/0
        redis_server.stop()              # kill it mid-test (the port stays reserved for us)
        redis_server.start()             # same port again

No persistence (`--save '' --appendonly no`), so a restart starts empty, like a
fresh replica; tests that need data to survive a restart write it again.
Skips the test when the redis-server binary is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process that can be stopped and started again on the same port."""

    def __init__(self, binary: str, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited at start (port {self.port} taken?)")
            if _ping(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=10)
        # the listening socket goes with the process; wait until nothing answers there
        deadline = time.monotonic() + 5
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.proc is not None else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if shutil.which(p)), None)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (make sysdeps installs it)")
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


class CuttableClient:
    """Wraps a redis-py asyncio client; `cut = True` makes every command fail as if the link broke,
    without losing what the server holds (unlike stopping it: the test servers have no persistence)."""

    _GUARDED = frozenset({"get", "hmget", "evalsha", "script_load", "set", "hincrby", "eval"})

    def __init__(self, client: object) -> None:
        self._client = client
        self.cut = False
        self.calls = 0

    def register_script(self, script: str) -> object:
        from redis.commands.core import AsyncScript

        return AsyncScript(self, script)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._client, name)
        if name not in self._GUARDED:
            return attr

        async def guarded(*args: object, **kwargs: object) -> object:
            from redis.exceptions import ConnectionError as RedisConnectionError

            self.calls += 1
            if self.cut:
                raise RedisConnectionError("link cut by the test")
            return await attr(*args, **kwargs)  # type: ignore[operator]

        return guarded
