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
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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

    def __init__(self, binary: str, *, host: str = "127.0.0.1", port: int | None = None,
                 extra: Sequence[str] = (), config_text: str | None = None) -> None:
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self.extra = tuple(extra)
        self.config_text = config_text          # a config file written to the data dir (sentinels)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")

    @property
    def dir(self) -> str:
        return self._dir.name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets and answers nothing (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            return
        argv = [self.binary]
        if self.config_text is not None:
            conf = Path(self._dir.name) / "redis.conf"
            if not conf.exists():               # a sentinel rewrites its own file: keep it across restarts
                conf.write_text(self.config_text)
            argv.append(str(conf))
        argv += ["--port", str(self.port), "--bind", self.host, "--dir", self._dir.name, "--protected-mode", "no",
                 "--loglevel", "warning", *self.extra]
        if "--sentinel" not in self.extra:
            argv += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        if self.paused:
            proc.send_signal(signal.SIGCONT)
            self.paused = False
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
    """Wraps a redis-py asyncio client; while `cut` is set every command and pipeline fails with
    `error()` (default: a redis ConnectionError, as if the link broke) without losing what the
    server holds (unlike stopping it: the test servers have no persistence)."""

    _GUARDED = frozenset({"get", "set", "ping", "eval", "evalsha", "script_load", "hmget", "hincrby", "delete"})

    def __init__(self, client: Any, error: Callable[[], BaseException] | None = None) -> None:
        self._client = client
        self.cut = False
        self.calls = 0
        self.error = error or _link_cut

    def register_script(self, script: str) -> object:
        from redis.commands.core import AsyncScript

        return AsyncScript(self, script)  # type: ignore[arg-type]

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._client.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def guarded_execute(*a: Any, **k: Any) -> Any:
            self.calls += 1
            if self.cut:
                raise self.error()
            return await execute(*a, **k)

        pipe.execute = guarded_execute
        return pipe

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self._GUARDED:
            return attr

        async def guarded(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.cut:
                raise self.error()
            return await attr(*args, **kwargs)

        return guarded


def _link_cut() -> BaseException:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError("link cut by the test")


# -- real topologies ------------------------------------------------------------------------------

def _sync_client(host: str, port: int) -> Any:
    import redis

    return redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)


def _wait(what: str, check: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # a node still starting: try again
            pass
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


SENTINEL_SERVICE = "lbstate"


class SentinelTopology:
    """A master, two replicas and three sentinels (quorum 2) on loopback, with fast fail-over
    settings (down-after 400 ms).  `url` is the store's redis+sentinel URL."""

    def __init__(self, binary: str, *, down_after_ms: int = 400) -> None:
        self.binary = binary
        self.master = RedisServer(binary)
        self.replicas = [RedisServer(binary, extra=("--replicaof", "127.0.0.1", str(self.master.port)))
                         for _ in range(2)]
        self.sentinels = []
        for _ in range(3):
            conf = (f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {down_after_ms}\n"
                    f"sentinel failover-timeout {SENTINEL_SERVICE} 4000\n"
                    f"sentinel parallel-syncs {SENTINEL_SERVICE} 2\n")
            self.sentinels.append(RedisServer(binary, extra=("--sentinel",), config_text=conf))

    @property
    def url(self) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self) -> None:
        self.master.start()
        for r in self.replicas:
            r.start()
        for s in self.sentinels:
            s.start()

        def synced() -> bool:
            info = _sync_client("127.0.0.1", self.master.port).info("replication")
            return int(info.get("connected_slaves", 0)) == 2
        _wait("replicas to sync", synced, 20)

        def sentinels_know_each_other() -> bool:
            for s in self.sentinels:
                c = _sync_client("127.0.0.1", s.port)
                if len(c.sentinel_sentinels(SENTINEL_SERVICE)) < 2 or len(c.sentinel_slaves(SENTINEL_SERVICE)) < 2:
                    return False
            return True
        _wait("sentinels to discover each other and the replicas", sentinels_know_each_other, 30, 0.1)

    def current_master(self) -> tuple[str, int]:
        for s in self.sentinels:
            with contextlib.suppress(Exception):
                host, port = _sync_client("127.0.0.1", s.port).sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
                return str(host), int(port)
        raise RuntimeError("no sentinel answers")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.data_nodes if n.port == port)

    def wait_failover(self, old: tuple[str, int], timeout: float = 20) -> tuple[str, int]:
        """Until every sentinel names a new master and that master accepts writes."""
        def moved() -> bool:
            addrs = {tuple(_sync_client("127.0.0.1", s.port).sentinel_get_master_addr_by_name(SENTINEL_SERVICE))
                     for s in self.sentinels if s.proc is not None}
            if len(addrs) != 1:
                return False
            host, port = next(iter(addrs))
            if (host, int(port)) == old:
                return False
            return _sync_client(str(host), int(port)).info("replication")["role"] == "master"
        _wait("the sentinels to fail over", moved, timeout, 0.1)
        return self.current_master()

    def wait_stable(self, timeout: float = 20) -> tuple[str, int]:
        """Until every sentinel names the same master, it takes writes and a replica follows it
        (after a pause or a kill the sentinels may be failing over)."""
        def stable() -> bool:
            addrs = {tuple(_sync_client("127.0.0.1", s.port).sentinel_get_master_addr_by_name(SENTINEL_SERVICE))
                     for s in self.sentinels if s.proc is not None}
            if len(addrs) != 1:
                return False
            host, port = next(iter(addrs))
            info = _sync_client(str(host), int(port)).info("replication")
            return bool(info["role"] == "master" and int(info.get("connected_slaves", 0)) >= 1)
        _wait("the sentinels to agree on a master", stable, timeout, 0.1)
        return self.current_master()

    def close(self) -> None:
        for n in [*self.sentinels, *self.replicas, self.master]:
            n.close()


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A port p where both p and its cluster bus port p + 10000 are free."""
    for _ in range(200):
        port = free_port(host)
        if port + 10000 > 65535:
            continue
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, port + 10000))
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterTopology:
    """Three masters and three replicas made into a cluster by `redis-cli --cluster create`."""

    def __init__(self, binary: str, cli: str, *, node_timeout_ms: int = 1000) -> None:
        self.cli = cli
        self.nodes = [RedisServer(binary, port=free_cluster_port(), extra=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms), "--cluster-replica-validity-factor", "0"))
            for _ in range(6)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes[:3])

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        subprocess.run([self.cli, "--cluster", "create", *(n.address for n in self.nodes), "--cluster-replicas",
                        "1", "--cluster-yes"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        self.wait_ok()

    def wait_ok(self, timeout: float = 30, *, replicas: bool = True) -> None:
        """Until every live node says cluster_state:ok, three masters serve the slots and (if
        `replicas`) each has a replica."""
        def ok() -> bool:
            for n in self.nodes:
                if n.proc is None:
                    continue
                c = _sync_client(n.host, n.port)
                if c.cluster("info").get("cluster_state") != "ok":
                    return False
            masters = self.masters()
            return len(masters) == 3 and (not replicas or all(self.replicas_of(m) for m in masters))
        _wait("the cluster to be ok with a replica per master", ok, timeout, 0.1)

    def _nodes_view(self) -> dict[str, Any]:
        live = next(n for n in self.nodes if n.proc is not None)
        return dict(_sync_client(live.host, live.port).cluster("nodes"))

    def masters(self) -> list[RedisServer]:
        out = []
        for addr, info in self._nodes_view().items():
            if "master" in info["flags"] and "fail" not in info["flags"] and info.get("slots"):
                port = int(addr.split("@")[0].rsplit(":", 1)[1])
                out.extend(n for n in self.nodes if n.port == port and n.proc is not None)
        return out

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        view = self._nodes_view()
        mid = next(info["node_id"] for addr, info in view.items()
                   if int(addr.split("@")[0].rsplit(":", 1)[1]) == master.port)
        ports = [int(addr.split("@")[0].rsplit(":", 1)[1]) for addr, info in view.items()
                 if info.get("master_id") == mid and "fail" not in info["flags"] and info.get("connected")]
        return [n for n in self.nodes if n.port in ports and n.proc is not None]

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def redis_cli_binary() -> str | None:
    return shutil.which("redis-cli")


@contextlib.contextmanager
def sentinel_topology() -> Iterator[SentinelTopology]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (make sysdeps installs it)")
    topo = SentinelTopology(binary)
    try:
        topo.start()
        yield topo
    finally:
        topo.close()


@contextlib.contextmanager
def cluster_topology() -> Iterator[ClusterTopology]:
    binary, cli = redis_binary(), redis_cli_binary()
    if binary is None or cli is None:
        pytest.skip("redis-server / redis-cli are not installed (make sysdeps installs them)")
    topo = ClusterTopology(binary, cli)
    try:
        topo.start()
        yield topo
    finally:
        topo.close()


class LoopLag:
    """How late the event loop runs a 1 ms timer (the machine's other load, not the code under
    test): timing assertions allow for the lag measured over the same window."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []       # (when, lateness in seconds)
        self._task: Any = None

    async def _run(self) -> None:
        import asyncio

        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.001)
            self.samples.append((t0, max(0.0, time.monotonic() - t0 - 0.001)))

    def start(self) -> None:
        import asyncio

        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        import asyncio

        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def worst(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((lag for t, lag in self.samples if since <= t < until), default=0.0)

    def quantile(self, q: float, since: float = 0.0, until: float = float("inf")) -> float:
        xs = sorted(lag for t, lag in self.samples if since <= t < until)
        return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0
