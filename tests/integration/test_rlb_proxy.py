"""The real proxy between a real client and real aiohttp backends on loopback."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest

from tests.rlb_helpers import admin_url, backend_servers, lb_config, lb_url, raw_request, running_lb


async def test_round_robin_spreads_and_headers_are_rewritten() -> None:
    async with backend_servers(["a", "b"]) as (a, b), running_lb(lb_config([a, b])) as lb, \
            aiohttp.ClientSession() as s:
        seen = []
        for _ in range(4):
            async with s.get(lb_url(lb, "/hello?x=1"), headers={"X-Forwarded-For": "6.6.6.6",
                                                                 "Connection": "keep-alive, X-Drop",
                                                                 "X-Drop": "secret"}) as r:
                assert r.status == 200
                assert r.headers["X-LB-Region"] == "test-region"
                assert r.headers["X-LB-Backend"] == r.headers["X-Backend"]
                body = await r.json()
                seen.append(body["backend"])
                assert body["path"] == "/hello?x=1"
                assert body["headers"]["X-Forwarded-For"] == "127.0.0.1"    # untrusted peer: replaced
                assert body["headers"]["X-Forwarded-Proto"] == "http"
                assert "X-Drop" not in body["headers"]
                assert body["headers"]["Via"] == "1.1 regional-lb"
        assert sorted(seen) == ["a", "a", "b", "b"]


async def test_no_route_is_404_and_healthz_reports_pools() -> None:
    async with backend_servers(["a"]) as (a,), \
            running_lb(lb_config([a], routes=[{"match": {"path": "/api/"}, "pool": "app"}])) as lb, \
            aiohttp.ClientSession() as s:
        async with s.get(lb_url(lb, "/other")) as r:
            assert r.status == 404
            assert "no route" in await r.text()
        async with s.get(lb_url(lb, "/lb/healthz")) as r:
            assert r.status == 200
            assert await r.json() == {"region": "test-region", "role": "edge",
                                      "pools": {"app": {"healthy": 1, "total": 1}},
                                      "healthy_fraction": 1.0, "status": "ok"}
        async with s.get(admin_url(lb, "/api/pools")) as r:
            report = await r.json()
            assert report["app"]["backends"][0]["id"] == "a"


async def test_all_backends_down_is_503_and_connect_failure_is_retried() -> None:
    async with backend_servers(["a", "b"]) as (a, b):
        cfg = lb_config([a, b], pool_extra={"panic_threshold": 0.0})
        await b.stop()                         # b refuses connections
        async with running_lb(cfg) as lb, aiohttp.ClientSession() as s:
            for _ in range(4):                 # every request lands on a, some after a retry
                async with s.get(lb_url(lb, "/x")) as r:
                    assert r.status == 200
                    assert r.headers["X-Backend"] == "a"
            await a.stop()
            async with s.get(lb_url(lb, "/x")) as r:
                assert r.status == 502
                assert "connect" in await r.text()


async def test_malformed_request_gets_400_and_server_survives() -> None:
    async with backend_servers(["a"]) as (a,), running_lb(lb_config([a])) as lb:
        host, port = lb.listen_addresses[0]
        answer = await raw_request(host, port, b"\x16\x03\x01garbage\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", answer)
        assert answer.endswith(b"bad request\n")
        answer = await raw_request(host, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=1.0)
        assert answer.startswith(b"HTTP/1.1 200")


async def test_trusted_proxy_chain_feeds_ip_hash_and_access_log(caplog: pytest.LogCaptureFixture) -> None:
    routes = [{"name": "hashed", "pool": "app", "policy": "ip_hash"}]
    async with backend_servers(["a", "b", "c"]) as bs, \
            running_lb(lb_config(bs, routes=routes, trusted_proxies=["127.0.0.0/8"])) as lb, \
            aiohttp.ClientSession() as s:
        owners: dict[str, set[str]] = {}
        with caplog.at_level(logging.INFO, logger="regional_lb.access"):
            for i in range(30):
                client = f"203.0.113.{i % 10}"
                async with s.get(lb_url(lb, "/x"), headers={"X-Forwarded-For": f"6.6.6.{i}, {client}"}) as r:
                    body = await r.json()
                    assert body["headers"]["X-Forwarded-For"] == f"6.6.6.{i}, {client}, 127.0.0.1"
                    owners.setdefault(client, set()).add(r.headers["X-Backend"])
        assert all(len(v) == 1 for v in owners.values())          # keyed on the right-most untrusted hop
        assert len({next(iter(v)) for v in owners.values()}) > 1
        lines = [r.getMessage() for r in caplog.records if r.name == "regional_lb.access"]
        assert len(lines) == 30
        assert "route=hashed" in lines[0]
        assert "status=200" in lines[0]
        assert "pick=" in lines[0]
