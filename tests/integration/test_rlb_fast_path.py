"""The fast client-facing path and its hand-offs to aiohttp, through the real proxy on loopback."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from regional_lb.config import load_config
from tests.rlb_helpers import backend_servers, lb_config, lb_config_dict, lb_url, raw_request, running_lb


async def test_pipelined_requests_answered_in_order_across_a_hand_off() -> None:
    async with backend_servers(["a"]) as backends, running_lb(lb_config(backends)) as lb:
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, (
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /second HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"))
        statuses = re.findall(rb"HTTP/1\.1 (\d{3})", answer)
        assert statuses == [b"200", b"200", b"204", b"200"]
        assert answer.count(b'"backend": "a"') == 2          # GET and POST bodies; HEAD and 204 none
        assert b'"received": 5' in answer
        assert [r["path"] for r in backends[0].requests] == ["/first", "/second"]


async def test_chunked_and_large_responses_stream_through_the_fast_path() -> None:
    async with backend_servers(["a"]) as backends, running_lb(lb_config(backends)) as lb, \
            aiohttp.ClientSession() as s:
        for n in (0, 1, 200_000):
            async with s.get(lb_url(lb, f"/download?n={n}")) as r:
                assert r.status == 200
                assert len(await r.read()) == n
        async with s.get(lb_url(lb, "/plain")) as r:          # the same kept-alive connection
            assert (await r.json())["headers"]["X-Forwarded-For"] == "127.0.0.1"


async def test_connection_close_from_the_client_is_honoured() -> None:
    async with backend_servers(["a"]) as backends, running_lb(lb_config(backends)) as lb:
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                               b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nConnection: close\r\n" in answer
        assert answer.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_both_servers_proxy_the_same_way(server: str) -> None:
    async with backend_servers(["a"]) as backends, running_lb(lb_config(backends), server=server) as lb, \
            aiohttp.ClientSession() as s:
        async with s.get(lb_url(lb, "/p?q=1"), headers={"Keep-Alive": "5", "X-Real-IP": "1.2.3.4"}) as r:
            data = await r.json()
            assert r.headers["X-LB-Backend"] == "a"
        assert data["path"] == "/p?q=1"
        assert "X-Real-IP" not in data["headers"]
        assert "Keep-Alive" not in data["headers"]
        assert data["headers"]["Via"] == "1.1 regional-lb"
        async with s.post(lb_url(lb, "/upload"), data=b"x" * 100_000) as r:
            assert (await r.json())["received"] == 100_000


def test_an_unknown_server_kind_is_refused() -> None:
    from regional_lb.app import LoadBalancer
    with pytest.raises(ValueError, match="server must be"):
        LoadBalancer(lb_config(["127.0.0.1:1"]), server="nginx")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a test certificate")
async def test_a_tls_connection_is_handed_off_and_back_to_back_requests_still_work(tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    async with backend_servers(["a"]) as backends:
        doc = lb_config_dict(backends, listen=[{"address": "127.0.0.1:0",
                                                "tls": {"cert": "cert.pem", "key": "key.pem"}}])
        (tmp_path / "lb.yaml").write_text(yaml.safe_dump(doc))
        ctx = ssl.create_default_context(cafile=str(cert))
        connector = aiohttp.TCPConnector(limit=1)            # one connection: GET, POST (hand-off), GET
        async with running_lb(load_config(tmp_path / "lb.yaml")) as lb, \
                aiohttp.ClientSession(connector=connector) as s:
            url = lb_url(lb, "/x", scheme="https")
            async with s.get(url, ssl=ctx) as r:
                assert (await r.json())["headers"]["X-Forwarded-Proto"] == "https"
            async with s.post(lb_url(lb, "/upload", scheme="https"), data=b"z" * 70_000, ssl=ctx) as r:
                assert (await r.json())["received"] == 70_000
            async with s.get(url, ssl=ctx) as r:
                assert r.status == 200
