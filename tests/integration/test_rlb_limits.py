"""Bad input and failing backends: limits, timeouts, truncated responses, retries."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.rlb_helpers import backend_servers, lb_config, lb_url, raw_request, running_lb


async def test_oversized_header_is_431() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, limits={"max_header_size": 1024})) as lb, aiohttp.ClientSession() as s:
        async with s.get(lb_url(lb, "/"), headers={"X-Big": "v" * 2000}) as r:
            assert r.status == 431
        async with s.get(lb_url(lb, "/"), headers={"X-Small": "v" * 500}) as r:
            assert r.status == 200
    assert bs[0].hits["/"] == 1


async def test_body_over_the_limit_is_413_for_length_and_chunked() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, limits={"max_body_size": "100k"})) as lb, aiohttp.ClientSession() as s:
        async with s.post(lb_url(lb, "/upload"), data=b"x" * 200_000) as r:
            assert r.status == 413

        async def chunks():
            for _ in range(40):
                yield b"y" * 10_000

        async with s.post(lb_url(lb, "/upload"), data=chunks()) as r:
            assert r.status == 413
        async with s.post(lb_url(lb, "/upload"), data=b"x" * 90_000) as r:
            assert r.status == 200
            assert (await r.json())["received"] == 90_000


async def test_expect_100_continue() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, limits={"max_body_size": "1k"})) as lb:
        host, port = lb.listen_addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        await writer.drain()
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert final.startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
        answer = await raw_request(host, port, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                               b"Expect: 100-continue\r\n\r\n", read_timeout=2)
        assert answer.startswith(b"HTTP/1.1 413")                  # refused before the body is sent


async def test_slow_client_header_read_timeout() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, timeouts={"header_read": "200ms"})) as lb:
        host, port = lb.listen_addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")          # and never finishes the header block
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()
        await writer.wait_closed()
        # a keep-alive connection: the timer restarts for the second request too
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 200")
        length = int(re.search(rb"Content-Length: (\d+)", first).group(1))
        await reader.readexactly(length)
        writer.write(b"GET / HTTP/1.1\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()
        await writer.wait_closed()


async def test_backend_timeout_is_504_and_closing_mid_response_truncates() -> None:
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, timeouts={"backend_read": "200ms"})) as lb, aiohttp.ClientSession() as s:
        async with s.get(lb_url(lb, "/slow?s=2")) as r:
            assert r.status == 504
            assert "timed out" in await r.text()
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 100000" in head
        assert 0 < len(body) < 100_000                           # truncated, then closed
        async with s.get(lb_url(lb, "/after")) as r:              # and the proxy is fine
            assert r.status == 200


async def test_idempotent_request_retried_after_reset_post_is_not() -> None:
    async with backend_servers(["a", "b"]) as bs:
        _a, b = bs
        cfg = lb_config(bs, timeouts={"backend_read": "300ms"}, pool_extra={"retries": {"attempts": 2}})
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(2):      # /slow times out: a GET is not retried after a timeout either
                async with s.get(lb_url(lb, "/slow?s=0.6")) as r:
                    statuses.append(r.status)
            assert statuses == [504] * 2
            await b.stop()
            for _ in range(4):
                async with s.post(lb_url(lb, "/x"), data=b"body") as r:   # connect failure: retried
                    assert r.status == 200
            assert lb.metrics.retries.labels("app#0", "connect")._value.get() >= 1


async def test_reset_after_send_retries_get_but_not_post() -> None:
    async with backend_servers(["a", "b"]) as bs, running_lb(lb_config(bs)) as lb, \
            aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.get(lb_url(lb, "/drop?on=a")) as r:
                assert r.status == 200
                assert r.headers["X-Backend"] == "b"
        statuses = []
        for _ in range(4):
            async with s.post(lb_url(lb, "/drop?on=a"), data=b"not replayable") as r:
                statuses.append(r.status)
        assert sorted(statuses) == [200, 200, 502, 502]


async def test_every_member_down_is_503() -> None:
    async with backend_servers(["a", "b"]) as bs:
        cfg = lb_config(bs, health={"type": "http", "path": "/healthz", "interval": "50ms", "timeout": "1s",
                                    "rise": 1, "fall": 1}, pool_extra={"panic_threshold": 0.0})
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            for b in bs:
                b.set_healthy(False)
            for _ in range(100):
                async with s.get(lb_url(lb, "/lb/healthz")) as r:
                    if r.status == 503:
                        body = await r.json()
                        break
                await asyncio.sleep(0.02)
            assert body["status"] == "unhealthy"
            assert body["pools"]["app"] == {"healthy": 0, "total": 2}
            async with s.get(lb_url(lb, "/x")) as r:
                assert r.status == 503
                assert await r.text() == "no backend available\n"
            bs[0].set_healthy(True)
            for _ in range(100):
                async with s.get(lb_url(lb, "/x")) as r:
                    if r.status == 200:
                        assert r.headers["X-Backend"] == "a"
                        break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("a never came back")
