"""HTTP details through the real proxy: HEAD, 204, chunked passthrough, garbage input, keep-alive reuse."""

from __future__ import annotations

import random
import re

import aiohttp

from tests.rlb_helpers import backend_servers, lb_config, lb_url, raw_request, running_lb


async def test_head_204_and_chunked_download() -> None:
    async with backend_servers(["a"]) as bs, running_lb(lb_config(bs)) as lb, aiohttp.ClientSession() as s:
        async with s.head(lb_url(lb, "/x")) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) > 0
            assert await r.read() == b""
        async with s.get(lb_url(lb, "/status/204")) as r:
            assert r.status == 204
            assert await r.read() == b""
        async with s.get(lb_url(lb, "/download?n=300000")) as r:
            assert r.headers.get("Transfer-Encoding") == "chunked"
            assert len(await r.read()) == 300000
        for _ in range(5):                                     # the connection pool is reused and sane
            async with s.get(lb_url(lb, "/x")) as r:
                assert (await r.json())["path"] == "/x"


async def test_head_then_get_on_one_backend_connection() -> None:
    async with backend_servers(["a"]) as bs, running_lb(lb_config(bs)) as lb:
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"
                                               b"GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200") == 2
        assert b'"path": "/y"' in answer


async def test_garbage_never_crashes_the_proxy() -> None:
    rng = random.Random(7)
    samples = [b"", b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nHost\r\n\r\n",
               b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
               b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
               b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
               b"GET /\x00 HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(20)]
    async with backend_servers(["a"]) as bs, running_lb(lb_config(bs)) as lb:
        host, port = lb.listen_addresses[0]
        for data in samples:
            answer = await raw_request(host, port, data, read_timeout=0.3)
            assert answer == b"" or re.match(rb"HTTP/1\.[01] (4\d\d|200|404)", answer), (data, answer[:80])
        answer = await raw_request(host, port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")


async def test_http10_request_without_host_gets_one_upstream() -> None:
    async with backend_servers(["a"]) as bs, running_lb(lb_config(bs)) as lb:
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, b"GET /x HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200")
        assert f'"Host": "{bs[0].address}"'.encode() in answer
