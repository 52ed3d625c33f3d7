"""The demo app server: sessions in Redis survive the app server that made them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient, TestServer

from deploy.demo_app import AppInfo, make_app
from tests.redis_helpers import RedisServer, free_port, redis_server

__all__ = ["redis_server"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[TestClient]:
    app = make_app(AppInfo("us-east-app-1", "us-east", session_ttl=60), redis_url=redis_server.url)
    async with TestClient(TestServer(app, host="127.0.0.1"), cookie_jar=aiohttp.DummyCookieJar()) as test_client:
        yield test_client


async def test_every_response_says_who_answered(client: TestClient) -> None:
    for path in ("/", "/healthz", "/static/app.css", "/static/nope", "/no-route", "/api/auth/me"):
        resp = await client.get(path, headers={"X-Forwarded-For": "175.45.176.9, 127.0.3.1"})
        assert resp.headers["X-App-Server"] == "us-east-app-1", path
        assert resp.headers["X-App-Region"] == "us-east"
        assert resp.headers["X-Seen-Client"] == "175.45.176.9, 127.0.3.1"
        assert resp.headers["X-Seen-Peer"] == "127.0.0.1"
    resp = await client.get("/")
    assert resp.headers["X-Seen-Client"] == ""
    assert "Hello from us-east-app-1 (region us-east)" in await resp.text()


async def test_static_health_and_echo(client: TestClient) -> None:
    resp = await client.get("/static/app.css")
    assert resp.status == 200
    assert resp.content_type == "text/css"
    assert b"font-family" in await resp.read()
    assert (await client.get("/static/missing.png")).status == 404
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["redis"] == "ok"
    resp = await client.post("/api/echo?x=1", data=b"12345", headers={"X-Forwarded-Proto": "https"})
    body = await resp.json()
    assert (body["method"], body["path"], body["body_bytes"]) == ("POST", "/api/echo?x=1", 5)
    assert body["headers"]["X-Forwarded-Proto"] == "https"


async def test_login_me_logout(client: TestClient, redis_server: RedisServer) -> None:
    assert (await client.get("/api/auth/me")).status == 401
    assert (await client.post("/api/auth/login", data={"nobody": "x"})).status == 400
    assert (await client.post("/api/auth/login", data=b"{not json", headers={
        "Content-Type": "application/json"})).status == 400
    resp = await client.post("/api/auth/login", json={"user": "alice"})
    assert resp.status == 200
    sid = resp.cookies["session"].value
    assert resp.cookies["session"]["httponly"]
    raw = redis.asyncio.from_url(redis_server.url, decode_responses=True)
    try:
        assert await raw.get(f"demo:session:{sid}") == "alice"
        assert 0 < await raw.ttl(f"demo:session:{sid}") <= 60
    finally:
        await raw.aclose()
    me = await client.get("/api/auth/me", headers={"Cookie": f"session={sid}"})
    assert (me.status, (await me.json())["user"]) == (200, "alice")
    assert (await client.get("/api/auth/me", headers={"Cookie": "session=forged"})).status == 401
    assert (await client.post("/api/auth/logout", headers={"Cookie": f"session={sid}"})).status == 200
    assert (await client.get("/api/auth/me", headers={"Cookie": f"session={sid}"})).status == 401
    resp = await client.post("/api/auth/login", data={"user": "bob"})        # a form works too
    assert (await resp.json())["user"] == "bob"


async def test_redis_down_is_a_503_not_a_crash(client: TestClient, redis_server: RedisServer) -> None:
    redis_server.stop()
    assert (await client.post("/api/auth/login", data={"user": "a"})).status == 503
    assert (await client.get("/api/auth/me", headers={"Cookie": "session=x"})).status == 503
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert "unavailable" in (await resp.json())["redis"]


def _start_app(port: int, name: str, redis_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.demo_app", "--listen", f"127.0.0.1:{port}", "--name", name,
         "--region", "us-east", "--redis", redis_url],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def _wait_healthy(session: aiohttp.ClientSession, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, "demo app exited at start"
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await _sleep(0.05)
    raise AssertionError(f"demo app on port {port} never became healthy")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.fixture
def apps(redis_server: RedisServer) -> Iterator[list[tuple[int, subprocess.Popen[bytes]]]]:
    started: list[tuple[int, subprocess.Popen[bytes]]] = []
    for name in ("us-east-app-1", "us-east-app-2"):
        port = free_port()
        started.append((port, _start_app(port, name, redis_server.url)))
    yield started
    for _port, proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_session_survives_the_app_server_that_made_it(apps: list[tuple[int, subprocess.Popen[bytes]]]) -> None:
    (port_a, proc_a), (port_b, proc_b) = apps
    async with aiohttp.ClientSession() as session:
        await _wait_healthy(session, port_a, proc_a)
        await _wait_healthy(session, port_b, proc_b)
        async with session.post(f"http://127.0.0.1:{port_a}/api/auth/login", data={"user": "carol"}) as resp:
            assert resp.status == 200
            assert resp.headers["X-App-Server"] == "us-east-app-1"
            sid = resp.cookies["session"].value
        proc_a.kill()
        proc_a.wait(timeout=10)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://127.0.0.1:{port_a}/api/auth/me"):
                pass
        async with session.get(f"http://127.0.0.1:{port_b}/api/auth/me",
                               headers={"Cookie": f"session={sid}"}) as resp:
            assert resp.status == 200
            assert resp.headers["X-App-Server"] == "us-east-app-2"
            assert (await resp.json())["user"] == "carol"
    # SIGTERM stops the survivor cleanly
    proc_b.send_signal(signal.SIGTERM)
    assert proc_b.wait(timeout=10) == 0
