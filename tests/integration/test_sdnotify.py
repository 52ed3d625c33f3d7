"""systemd Type=notify: `gslb serve` and `regional-lb serve` as real processes tell a NOTIFY_SOCKET
READY=1 only after their first health round, RELOADING=1 / READY=1 around SIGHUP, WATCHDOG=1 when
asked, and STOPPING=1 on SIGTERM (the datagrams systemd would read)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from gslb.common.sdnotify import Notifier
from tests.gslb_helpers import free_dns_port, free_port, gslb_config
from tests.rlb_helpers import lb_config_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def probe_target() -> Iterator[socket.socket]:
    """A TCP listener that the health checks connect to (never accepted until the test looks)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    yield sock
    sock.close()


async def next_message(sock: socket.socket) -> str:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 20)
    return data.decode()


async def expect(sock: socket.socket, prefix: str, *, skip: str = "WATCHDOG=1") -> str:
    """The next message that starts with `prefix`, skipping watchdog pings."""
    while True:
        message = await next_message(sock)
        if message.startswith(prefix):
            return message
        assert message.startswith(skip), f"expected {prefix!r}, got {message!r}"


def had_connection(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@contextlib.asynccontextmanager
async def process(*args: str, notify: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def lifecycle(proc: asyncio.subprocess.Process, sock: socket.socket, listener: socket.socket) -> None:
    ready = await expect(sock, "READY=1")
    assert had_connection(listener), "READY=1 came before the first health check"
    assert "STATUS=serving" in ready
    assert await expect(sock, "WATCHDOG=1", skip="") == "WATCHDOG=1"
    proc.send_signal(signal.SIGHUP)
    reloading = await expect(sock, "RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    await expect(sock, "READY=1")
    proc.send_signal(signal.SIGTERM)
    await expect(sock, "STOPPING=1")
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_gslb_serve_notifies_systemd(tmp_path: Path, notify_socket: socket.socket,
                                           probe_target: socket.socket) -> None:
    data = gslb_config(tmp_path, dns_port=free_dns_port(), admin_port=free_port(), lbs=None)
    port = probe_target.getsockname()[1]
    data["regions"]["us-east"]["probe"] = {"type": "tcp", "target": f"127.0.0.1:{port}", "interval": "30s"}
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    async with process("gslb", "serve", "-c", str(path), notify=tmp_path / "notify") as proc:
        await lifecycle(proc, notify_socket, probe_target)


async def test_regional_lb_serve_notifies_systemd(tmp_path: Path, notify_socket: socket.socket,
                                                  probe_target: socket.socket) -> None:
    host, port = probe_target.getsockname()
    doc = lb_config_dict([f"{host}:{port}"], health={"type": "tcp", "interval": "30s"},
                         listen=[{"address": f"127.0.0.1:{free_port()}"}],
                         admin={"listen": f"127.0.0.1:{free_port()}", "token": "t"})
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    async with process("regional_lb", "serve", "-c", str(path), notify=tmp_path / "notify") as proc:
        await lifecycle(proc, notify_socket, probe_target)


def test_notifier_is_off_without_notify_socket_and_watchdog_needs_our_pid() -> None:
    off = Notifier.from_environ({})
    assert not off.enabled
    assert off.ready() is False
    other = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    ours = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000",
                                  "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_interval == 0.5


def test_abstract_socket_names_and_a_missing_socket_does_not_raise(tmp_path: Path) -> None:
    name = f"@gslb-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        assert Notifier(name).ready()
        assert sock.recv(100).startswith(b"READY=1")
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.ready() is False                      # logged once, never raised
    assert gone.stopping() is False
