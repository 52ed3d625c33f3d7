"""Admin API, reload (POST and SIGHUP), discovery, sticky_learn and the CLI process."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import yaml

from regional_lb.config import load_config
from regional_lb.discovery import FakeResolver
from tests.rlb_helpers import (
    admin_url,
    backend_servers,
    free_port,
    lb_config,
    lb_config_dict,
    lb_url,
    running_lb,
)

TOKEN = {"Authorization": "Bearer test-token"}


async def test_reload_switches_routes_keeps_old_config_on_error_and_inflight_finishes(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    async with backend_servers(["a", "b"]) as (a, b):
        doc = lb_config_dict([a, b], routes=[{"pool": "app"}])
        path.write_text(yaml.safe_dump(doc))
        async with running_lb(load_config(path), config_path=path) as lb, aiohttp.ClientSession() as s:
            slow = asyncio.create_task(s.get(lb_url(lb, "/slow?s=0.3")))
            await asyncio.wait_for(a.hit.wait(), 5)
            doc["routes"] = [{"match": {"path": "/only-b/"}, "pool": "solo"}, {"pool": "app"}]
            doc["pools"]["solo"] = {"backends": [{"address": b.address, "id": "b-solo"}],
                                    "health": {"type": "none"}}
            path.write_text(yaml.safe_dump(doc))
            async with s.post(admin_url(lb, "/api/reload")) as r:
                assert r.status == 401
            async with s.post(admin_url(lb, "/api/reload"), headers=TOKEN) as r:
                assert r.status == 200
                assert (await r.json())["ok"] is True
            resp = await slow                                     # the request in flight finished
            assert resp.status == 200
            resp.release()
            async with s.get(lb_url(lb, "/only-b/x")) as r:
                assert r.headers["X-LB-Backend"] == "b-solo"
            path.write_text("region: r\nlisten: []\n")
            async with s.post(admin_url(lb, "/api/reload"), headers=TOKEN) as r:
                assert r.status == 400
                assert "listen" in (await r.json())["message"]
            async with s.get(lb_url(lb, "/only-b/x")) as r:      # still the last good config
                assert r.headers["X-LB-Backend"] == "b-solo"
            async with s.get(admin_url(lb, "/metrics")) as r:
                text = await r.text()
                assert 'rlb_config_reloads_total{result="ok"} 1.0' in text
                assert 'rlb_config_reloads_total{result="error"} 1.0' in text


async def test_discovery_feeds_the_pool_from_dns() -> None:
    async with backend_servers(["a", "b"]) as (a, b):
        resolver = FakeResolver({("app.svc.test", "A"): [("127.0.0.1", None, 1)]})
        doc = lb_config_dict([a])
        doc["pools"]["app"]["backends"] = [{"dns": "app.svc.test", "port": a.port, "type": "A"}]
        cfg = load_config_text(doc)
        async with running_lb(cfg, resolver=resolver) as lb, aiohttp.ClientSession() as s:
            async with s.get(lb_url(lb, "/x")) as r:
                assert r.headers["X-Backend"] == "a"
                assert r.headers["X-LB-Backend"] == a.address
            del resolver.answers[("app.svc.test", "A")]           # lookup fails: keep the last answer
            assert lb.discovery is not None
            assert await lb.discovery.resolve_once("app", cfg.pools["app"].dns[0]) is None
            async with s.get(lb_url(lb, "/x")) as r:
                assert r.headers["X-Backend"] == "a"
        srv = FakeResolver({("_http._tcp.app.test", "SRV"): [("127.0.0.1", a.port, 5)]})
        doc["pools"]["app"]["backends"] = [{"dns": "_http._tcp.app.test", "type": "SRV"}]
        cfg = load_config_text(doc)
        async with running_lb(cfg, resolver=srv) as lb, aiohttp.ClientSession() as s:
            async with s.get(lb_url(lb, "/x")) as r:
                assert r.headers["X-Backend"] == "a"
            srv.answers[("_http._tcp.app.test", "SRV")] = [("127.0.0.1", b.port, 5)]     # a moved to b
            assert lb.discovery is not None
            found = await lb.discovery.resolve_once("app", cfg.pools["app"].dns[0])
            assert found is not None
            assert [x.id for x in found] == [b.address]
            for _ in range(3):
                async with s.get(lb_url(lb, "/x")) as r:
                    assert r.headers["X-Backend"] == "b"


def load_config_text(doc: dict) -> object:
    from regional_lb.config import parse_config
    return parse_config(yaml.safe_dump(doc), file="t.yaml")


async def test_sticky_learn_follows_the_application_cookie() -> None:
    routes = [{"name": "learn", "pool": "app", "policy": "sticky_learn",
               "options": {"cookie": "JSESSIONID", "first": "round_robin"}}]
    async with backend_servers(["a", "b", "c"]) as bs, running_lb(lb_config(bs, routes=routes)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        owners = {}
        for sid in ("s1", "s2", "s3"):
            async with s.get(lb_url(lb, f"/set-cookie?name=JSESSIONID&value={sid}")) as r:
                owners[sid] = r.headers["X-Backend"]
        assert len(set(owners.values())) == 3
        for sid, owner in owners.items():
            for _ in range(3):
                async with s.get(lb_url(lb, "/page"), headers={"Cookie": f"JSESSIONID={sid}"}) as r:
                    assert r.headers["X-Backend"] == owner
        async with s.get(admin_url(lb, "/api/pools")) as r:
            rows = (await r.json())["app"]["backends"]
            assert sum(row["sticky_sessions"]["learn"] for row in rows) == 3


async def test_active_health_checks_and_admin_errors() -> None:
    async with backend_servers(["a", "b"]) as bs:
        health = {"type": "http", "path": "/healthz", "interval": "50ms", "rise": 1, "fall": 1}
        async with running_lb(lb_config(bs, health=health, pool_extra={"panic_threshold": 0.0})) as lb, \
                aiohttp.ClientSession() as s:
            bs[1].set_healthy(False)
            for _ in range(200):
                async with s.get(admin_url(lb, "/api/pools")) as r:
                    rows = {row["id"]: row for row in (await r.json())["app"]["backends"]}
                if rows["b"]["health"] == "down":
                    break
                await asyncio.sleep(0.02)
            assert rows["b"]["health"] == "down"
            # a backend that stayed up was probed too: the API says so (not "assumed" for ever)
            assert rows["a"]["health"] == "up"
            assert rows["a"]["health_probed"] is True
            for _ in range(4):
                async with s.get(lb_url(lb, "/x")) as r:
                    assert r.headers["X-Backend"] == "a"
            async with s.post(admin_url(lb, "/api/pools/nope/backends/a/drain"), headers=TOKEN) as r:
                assert r.status == 404
            async with s.post(admin_url(lb, "/api/pools/app/backends/a/explode"), headers=TOKEN) as r:
                assert r.status == 404
            async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain"), headers=TOKEN,
                              data=b"{bad") as r:
                assert r.status == 400
            async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain"), headers=TOKEN,
                              json={"deadline": 60}) as r:
                assert (await r.json())["backend"]["drain_deadline"] is not None
            async with s.get(admin_url(lb, "/metrics")) as r:
                assert 'rlb_health_transitions_total{backend="b",pool="app",to="down"} 1.0' in await r.text()


async def test_cli_process_serves_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    port, admin_port = free_port(), free_port()
    async with backend_servers(["a", "b"]) as (a, b):
        doc = lb_config_dict([a], listen=[{"address": f"127.0.0.1:{port}"}],
                             admin={"listen": f"127.0.0.1:{admin_port}", "token": "t"})
        path.write_text(yaml.safe_dump(doc))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "regional_lb", "serve", "-c", str(path),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as s:
                async def backend_seen() -> str | None:
                    try:
                        async with s.get(f"http://127.0.0.1:{port}/x") as r:
                            return r.headers.get("X-Backend")
                    except aiohttp.ClientConnectionError:
                        return None

                for _ in range(200):
                    if await backend_seen() == "a":
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the process never served")
                doc["pools"]["app"]["backends"] = [{"address": b.address, "id": "b"}]
                path.write_text(yaml.safe_dump(doc))
                proc.send_signal(signal.SIGHUP)
                for _ in range(200):
                    if await backend_seen() == "b":
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("SIGHUP did not reload")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
