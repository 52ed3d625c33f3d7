"""The status pages' HTTP side, without a browser: the page and its files come from the package,
readable without the token; the JSON the pages poll; actions refused without the token; and the
files travel in the wheel (found with importlib.resources from the wheel itself)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import dns.message

from tests.gslb_helpers import ASHBURN_NET, FRANKFURT_NET, SEOUL_NET, TOKEN, running_gslb, wait_for
from tests.integration.test_gslb_server import ecs_query, udp
from tests.rlb_helpers import admin_url, backend_servers, lb_config, lb_url, running_lb

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ("gslb/status/index.html", "gslb/status/status.js", "gslb/status/gslb.css", "gslb/status/world.json",
          "gslb/common/static/status.css", "gslb/common/static/status-common.js",
          "regional_lb/status/index.html", "regional_lb/status/stats.js")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_gslb_page_and_files_are_public_with_a_strict_csp(tmp_path):
    async with running_gslb(tmp_path, with_lbs=False) as g, aiohttp.ClientSession() as s:
        async with s.get(g.admin + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            page = await r.text()
        for ref in ("/static/status.css", "/static/gslb.css", "/static/status-common.js", "/static/status.js"):
            assert ref in page
            async with s.get(g.admin + ref) as r:
                assert r.status == 200
                assert r.content_type in ("text/css", "text/javascript")
        async with s.get(g.admin + "/static/world.json") as r:
            world = await r.json()
            assert world["viewBox"] == [0, 0, 360, 180]
            assert world["rings"] > 200
        for bad in ("/static/nope.js", "/static/index.html", "/static/..%2fadmin_api.py", "/static/"):
            async with s.get(g.admin + bad) as r:
                assert r.status == 404, bad


async def test_gslb_overview_clients_shares_and_why_not(tmp_path):
    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as s:
        server = g.server
        server.answer_sample.every = 1
        for net in (SEOUL_NET, FRANKFURT_NET, ASHBURN_NET, "100.64.0.0/24"):
            await udp(ecs_query("www.example.test", net), g.dns_port)
        server.shares.snapshot(server.dns_stats.by_region, server.clock(), server.wall())
        async with s.get(g.admin + "/api/status/clients") as r:
            clients = {c["network"]: c for c in (await r.json())["clients"]}
        assert clients[SEOUL_NET]["regions"] == ["ap-northeast"]
        assert (clients[SEOUL_NET]["lat"], clients[SEOUL_NET]["lon"]) == (37.57, 126.98)
        assert clients["100.64.0.0/24"]["regions"] == ["eu-central"]          # Paris -> Frankfurt
        async with s.get(g.admin + "/api/status/overview") as r:
            view = await r.json()
        assert sorted(x["name"] for x in view["regions"]) == ["ap-northeast", "eu-central", "us-east"]
        assert view["services"]["www.example.test"]["policy"] == "geo"
        assert view["answers"] == {"ap-northeast": 1, "eu-central": 2, "us-east": 1}
        assert view["shares"]["points"][-1]["answers"] == {"ap-northeast": 1, "eu-central": 2, "us-east": 1}
        assert view["sample"] == {"every": 1, "kept": 4, "max": 2000, "seen": 4}
        assert {k: [w["kind"] for w in v] for k, v in view["why_not"].items()} == \
            {"us-east": ["ok"], "eu-central": ["ok"], "ap-northeast": ["ok"]}

        # eu-central's LB fails: the page says it is down, with the probe's result, and that its
        # nearby clients (Frankfurt, Paris) spill elsewhere by capacity
        g.lbs["eu-central"].status = 503
        async with s.get(g.admin + "/api/status/overview") as r:
            assert r.status == 200
        await wait_for(lambda: not server.regions["eu-central"].health.up)     # the probes run every 50 ms
        await udp(ecs_query("www.example.test", FRANKFURT_NET), g.dns_port)
        async with s.get(g.admin + "/api/status/overview") as r:
            why = (await r.json())["why_not"]["eu-central"]
        kinds = [w["kind"] for w in why]
        assert kinds[0] == "down"
        assert "last probe failed" in why[0]["text"]
        assert "elsewhere" in kinds
        assert "spread by capacity" in why[kinds.index("elsewhere")]["text"]


async def test_gslb_actions_need_the_token_reading_does_not(tmp_path):
    async with running_gslb(tmp_path, with_lbs=False) as g, aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            async with s.post(g.admin + "/api/regions/eu-central/drain", headers=headers) as r:
                assert r.status == 401
        assert g.server.regions["eu-central"].drained_since is None
        async with s.post(g.admin + "/api/regions/eu-central/drain", headers=AUTH) as r:
            assert r.status == 200
        async with s.get(g.admin + "/api/status/overview") as r:
            view = await r.json()
        assert view["token_required"] is True
        # no client sampled yet: the decision for a client at eu-central's own coordinates says where
        # its clients go instead (by capacity: the nearest region is not eligible)
        why = view["why_not"]["eu-central"]
        assert [w["kind"] for w in why] == ["drained", "elsewhere"]
        assert why[1]["text"].startswith("so its nearby clients go to ")
        assert "eu-central's own location" in why[1]["text"]
        assert [w["kind"] for w in view["why_not"]["us-east"]] == ["ok"]
        reply = await udp(ecs_query("www.example.test", FRANKFURT_NET), g.dns_port)
        assert isinstance(reply, dns.message.Message)


async def test_lb_stats_page_and_json_with_per_backend_requests_and_errors():
    async with backend_servers(["a", "b"]) as bs, running_lb(lb_config(bs)) as lb, aiohttp.ClientSession() as s:
        async with s.get(admin_url(lb, "/")) as r:
            assert r.status == 200
            assert "/static/stats.js" in await r.text()
        async with s.get(admin_url(lb, "/static/stats.js")) as r:
            assert r.status == 200
        for path in ("/one", "/status/500", "/two", "/status/502"):
            async with s.get(lb_url(lb, path)) as r:
                await r.read()
        async with s.get(admin_url(lb, "/api/status/pools")) as r:
            data = await r.json()
        assert data["region"] == "test-region"
        rows = {b["id"]: b for b in data["pools"]["app"]["backends"]}
        assert sum(b["requests"] for b in rows.values()) == 4
        assert sum(b["errors"] for b in rows.values()) == 2
        assert data["pools"]["app"]["routes"][0]["policy"] == "round_robin"
        async with s.get(admin_url(lb, "/api/pools")) as r:        # unchanged: no new fields there
            assert "requests" not in (await r.json())["app"]["backends"][0]
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain")) as r:
            assert r.status == 401
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain"),
                          headers={"Authorization": "Bearer test-token"}) as r:
            assert r.status == 200
            assert (await r.json())["backend"]["admin"] == "drain"


def test_the_wheel_carries_the_page_files_and_serves_them_from_itself(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "gslb", "regional_lb", "geo_data"):
        path = ROOT / name
        if path.is_dir():
            # the GeoIP database is not what this test is about: leave it out to keep the build fast
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "*.mmdb"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(dist), str(src)], check=True, cwd=tmp_path, capture_output=True, text=True)
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert set(ASSETS) <= names
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import json, gslb; "
            "from gslb.common.statuspage import read_asset; "
            "print(json.dumps([gslb.__file__, len(read_asset('gslb', 'status/world.json')), "
            "len(read_asset('gslb.common', 'static/status.css')), "
            "len(read_asset('regional_lb', 'status/stats.js'))]))")
    out = subprocess.run([sys.executable, "-c", code, str(wheel)], cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    where, world, css, js = json.loads(out.stdout)
    assert where.startswith(str(wheel))
    assert world == (ROOT / "gslb/status/world.json").stat().st_size
    assert css > 1000
    assert js > 1000
