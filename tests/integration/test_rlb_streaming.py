"""Streaming bodies, WebSocket relay and TLS termination through the real proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from regional_lb.config import load_config
from tests.rlb_helpers import backend_servers, lb_config, lb_config_dict, lb_url, running_lb

SIZE = 128 * 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@contextlib.asynccontextmanager
async def _peak_rss() -> AsyncIterator[dict[str, int]]:
    out = {"base": _rss(), "peak": 0}
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], _rss())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)

    task = asyncio.create_task(sample())
    try:
        yield out
    finally:
        stop.set()
        await task


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read memory use")
async def test_large_download_and_upload_are_streamed_not_buffered() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, limits={"max_body_size": "1g"})) as lb, aiohttp.ClientSession() as s:
        async with _peak_rss() as mem:
            got = 0
            async with s.get(lb_url(lb, f"/download?n={SIZE}")) as r:
                assert r.status == 200
                async for chunk in r.content.iter_any():
                    got += len(chunk)
            assert got == SIZE

            async def body() -> AsyncIterator[bytes]:
                block = b"z" * 256 * 1024
                for _ in range(SIZE // len(block)):
                    yield block

            async with s.post(lb_url(lb, "/upload"), data=body(), headers={"Content-Length": str(SIZE)}) as r:
                assert (await r.json())["received"] == SIZE
            async with s.post(lb_url(lb, "/upload"), data=body()) as r:          # chunked
                assert (await r.json())["received"] == SIZE
        assert mem["peak"] - mem["base"] < 48 * 1024 * 1024, "memory grew with the body size"


async def test_websocket_is_relayed_to_the_sticky_backend() -> None:
    routes = [{"match": {"path": "/ws"}, "pool": "app", "policy": "sticky_cookie",
               "options": {"secrets": ["k"], "first": "round_robin"}}]
    async with backend_servers(["a", "b"]) as bs, running_lb(lb_config(bs, routes=routes)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        async with s.get(lb_url(lb, "/ws")) as r:        # a plain request first to get a session cookie
            cookie = r.cookies["LBSESSIONID"].value
            backend = r.headers["X-LB-Backend"]
        for _ in range(3):
            async with s.ws_connect(lb_url(lb, "/ws"), headers={"Cookie": f"LBSESSIONID={cookie}"},
                                    protocols=("chat",)) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("hi")
                assert await ws.receive_str() == f"{backend}:hi"
                await ws.send_str("close")
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 4001           # the backend's close code is passed on


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a test certificate")
async def test_tls_termination(tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    routes = [{"pool": "app", "policy": "sticky_cookie", "options": {"secrets": ["k"], "secure": "auto"}}]
    async with backend_servers(["a"]) as bs:
        doc = lb_config_dict(bs, routes=routes, listen=[{"address": "127.0.0.1:0"},
                                                        {"address": "127.0.0.1:0",
                                                         "tls": {"cert": "cert.pem", "key": "key.pem"}}])
        (tmp_path / "lb.yaml").write_text(yaml.safe_dump(doc))
        cfg = load_config(tmp_path / "lb.yaml")
        ctx = ssl.create_default_context(cafile=str(cert))
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            async with s.get(lb_url(lb, "/x", listener=1, scheme="https"), ssl=ctx) as r:
                assert r.status == 200
                body = await r.json()
                assert body["headers"]["X-Forwarded-Proto"] == "https"
                assert "Secure" in r.headers["Set-Cookie"]
            async with s.get(lb_url(lb, "/x", listener=0)) as r:
                assert "Secure" not in r.headers["Set-Cookie"]
