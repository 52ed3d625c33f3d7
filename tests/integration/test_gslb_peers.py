"""GSLB servers that agree (issue 13): three real `gslb serve` processes on loopback, peers of each
other, and three regions' health endpoints, asked with dnspython.

Each region's endpoint answers each server on its own path (/lb/healthz/<server>), so a test can
cut one server's path to one region (a partition between that server and the region) while the
others still see it healthy. Probe interval 0.2 s, fall 2, peer interval 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import yaml
from aiohttp import web

from tests.gslb_helpers import (
    ASHBURN_NET,
    FRANKFURT_NET,
    REGIONS,
    SEOUL_NET,
    TOKEN,
    free_dns_port,
    free_port,
    gslb_config,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
PROBE_INTERVAL = 0.2
FALL = 2
PEER_INTERVAL = 0.2
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENTS = {"frankfurt": FRANKFURT_NET, "seoul": SEOUL_NET, "ashburn": ASHBURN_NET}
EU = "eu-central"
EU_ADDRESS = REGIONS[EU][1]
# Slack for a loaded 2-core machine (four test suites at once): scheduling, not the design's bound.
SLACK = 1.0


class RegionHealth:
    """One region's health endpoint, answering each GSLB server on its own path."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.status = 200
        self.by_server: dict[str, int] = {}     # a server's path cut: its probes get this status
        self._runner: web.AppRunner | None = None

    async def _health(self, request: web.Request) -> web.Response:
        status = self.by_server.get(request.match_info["server"], self.status)
        body = {"status": "ok" if status == 200 else "unhealthy", "healthy_fraction": 1.0}
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/lb/healthz/{server}", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port(self.host)
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Node:
    name: str
    dir: Path
    dns_port: int
    admin_port: int
    proc: asyncio.subprocess.Process | None = None
    log: Any = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def config(self) -> Path:
        return self.dir / "gslb.yaml"

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.log = (self.dir / "gslb.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gslb", "serve", "-c", str(self.config), "--log-level", "warning",
            cwd=ROOT, stdout=self.log, stderr=self.log)

        async def ready() -> bool:
            assert self.proc is not None
            assert self.proc.returncode is None, (self.dir / "gslb.log").read_text()
            try:
                async with session.get(f"{self.admin}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, within=30, interval=0.05)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    async def answer(self, client: str, name: str = "www.example.test") -> list[str]:
        address, prefix = CLIENTS[client].split("/")
        query = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=self.dns_port, timeout=2)
        return sorted(rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == 1)


@dataclass
class Cluster:
    nodes: dict[str, Node]
    regions: dict[str, RegionHealth]
    session: aiohttp.ClientSession
    answers: list[float] = field(default_factory=list)

    async def get(self, node: str, path: str, **kw: Any) -> Any:
        async with self.session.get(f"{self.nodes[node].admin}{path}", **kw) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, node: str, path: str) -> Any:
        async with self.session.post(f"{self.nodes[node].admin}{path}", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def region(self, node: str, region: str) -> dict[str, Any]:
        data = await self.get(node, "/api/regions")
        return next(r for r in data["regions"] if r["name"] == region)

    async def frankfurt_gets_eu(self, node: str) -> bool:
        return EU_ADDRESS in await self.nodes[node].answer("frankfurt")


def write_config(node: Node, regions: dict[str, RegionHealth], peers: dict[str, str], **peer_keys: Any) -> None:
    data = gslb_config(node.dir, dns_port=node.dns_port, admin_port=node.admin_port, lbs=None)
    data["dns"]["rrl"] = {"enabled": False}         # the sampling asks hundreds of times from one address
    for name, region in data["regions"].items():
        health = regions[name]
        region["probe"] = {"type": "http", "url": f"http://{health.host}:{health.port}/lb/healthz/{node.name}",
                           "interval": f"{PROBE_INTERVAL}s", "timeout": "150ms", "rise": 1, "fall": FALL}
    # a request to a peer may take up to 1 s on a loaded machine (the default would be the 0.2 s interval)
    data["peers"] = {"name": node.name, "servers": peers, "interval": f"{PEER_INTERVAL}s", "timeout": "1s",
                     **peer_keys}
    node.config.write_text(yaml.safe_dump(data))


@contextlib.asynccontextmanager
async def cluster(tmp: Path, names: tuple[str, ...] = ("a", "b", "c"),
                  peers: dict[str, dict[str, str]] | None = None) -> AsyncIterator[Cluster]:
    regions = {name: RegionHealth(addr) for name, (_loc, addr) in REGIONS.items()}
    for health in regions.values():
        await health.start()
    nodes = {}
    for name in names:
        (tmp / name).mkdir()
        nodes[name] = Node(name, tmp / name, free_dns_port(), free_port())
    everyone = {n: node.admin for n, node in nodes.items()}
    for name, node in nodes.items():
        write_config(node, regions, peers[name] if peers is not None else everyone)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    try:
        await asyncio.gather(*(node.start(session) for node in nodes.values()))
        c = Cluster(nodes, regions, session)
        if peers is None:             # every server hears every other before the test starts
            for name in nodes:
                await wait_for(lambda n=name: _hears_all(c, n, len(nodes) - 1), within=15)
        yield c
    finally:
        await asyncio.gather(*(node.stop() for node in nodes.values()))
        await session.close()
        for health in regions.values():
            await health.stop()


async def _hears_all(c: Cluster, node: str, count: int) -> bool:
    return len((await c.get(node, "/api/peers"))["reachable"]) == count


async def metric(c: Cluster, node: str, name: str) -> float:
    async with c.session.get(f"{c.nodes[node].admin}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def test_one_servers_lost_path_is_outvoted_and_answers_agree(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        c.regions[EU].by_server["a"] = 503          # a's path to eu-central is cut; b and c see it healthy
        await wait_for(lambda: _own_state(c, "a", EU, "down"), within=10)
        rows = await c.region("a", EU)
        assert rows["state"] == "up"
        assert rows["own_state"] == "down"
        assert rows["vote"]["up_votes"] == 2
        assert rows["vote"]["down_votes"] == 1
        assert await metric(c, "a", "gslb_regions_disagreeing") == 1
        assert await metric(c, "a", 'gslb_region_vote_disagrees{region="eu-central"}') == 1
        assert await metric(c, "b", "gslb_regions_disagreeing") == 0

        async def b_sees_a_disagree() -> bool:
            row_a = next(p for p in (await c.get("b", "/api/peers"))["peers"] if p["name"] == "a")
            return row_a["fresh"] is True and row_a["agrees"][EU] is False and row_a["verdicts"][EU]["up"] is False

        await wait_for(b_sees_a_disagree, within=PEER_INTERVAL + SLACK)

        # sample answers: every client at every server, many rounds, for several probe intervals
        rounds = agree = 0
        with_eu = 0
        started = time.monotonic()
        while time.monotonic() - started < 10 * PROBE_INTERVAL or rounds < 60:
            for client in CLIENTS:
                got = [await c.nodes[n].answer(client) for n in ("a", "b", "c")]
                rounds += 1
                agree += got[0] == got[1] == got[2]
                with_eu += client == "frankfurt" and all(EU_ADDRESS in g for g in got)
        print(f"partition: {agree} of {rounds} sampled answers agree across the three servers")
        assert agree / rounds >= 0.99, f"{agree} of {rounds} sampled answers agree"
        assert with_eu == rounds // len(CLIENTS)       # all three keep answering with the region
        assert (await c.region("a", EU))["own_state"] == "down"     # the path stayed cut throughout


async def _own_state(c: Cluster, node: str, region: str, state: str) -> bool:
    return (await c.region(node, region))["own_state"] == state


async def test_a_region_really_down_leaves_every_server_within_fall_and_one_peer_interval(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        assert all([await c.frankfurt_gets_eu(n) for n in c.nodes])
        c.regions[EU].status = 503
        cut = time.monotonic()
        gone: dict[str, float] = {}

        async def all_gone() -> bool:
            for n in c.nodes:
                if n not in gone and not await c.frankfurt_gets_eu(n):
                    gone[n] = time.monotonic() - cut
            return len(gone) == len(c.nodes)

        await wait_for(all_gone, within=10, interval=0.01)
        bound = PROBE_INTERVAL * FALL + PEER_INTERVAL
        print(f"region down: left every server after {gone} s (bound {bound:.1f} s + one probe period)")
        # + one probe interval: the cut lands anywhere in a probe period
        assert max(gone.values()) <= bound + PROBE_INTERVAL + SLACK, gone
        for n in c.nodes:
            info = await c.region(n, EU)
            assert info["state"] == "down"
            assert info["eligible"] is False
        # back up: every server answers with it again
        c.regions[EU].status = 200
        for n in c.nodes:
            await wait_for(lambda n=n: c.frankfurt_gets_eu(n), within=10)


async def test_a_drain_reaches_every_server_and_survives_a_restart(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        assert all([await c.frankfurt_gets_eu(n) for n in c.nodes])
        reply = await c.post("a", f"/api/regions/{EU}/drain")
        sent = time.monotonic()
        assert reply["admin"] == "drain"
        assert reply["peers"] == {"b": "ok", "c": "ok"}
        reached: dict[str, float] = {}

        async def drained_everywhere() -> bool:
            for n in ("b", "c"):
                if n not in reached and not await c.frankfurt_gets_eu(n):
                    reached[n] = time.monotonic() - sent
            return len(reached) == 2

        await wait_for(drained_everywhere, within=5, interval=0.01)
        print(f"drain sent to a: reached b, c after {reached} s")
        assert max(reached.values()) <= PEER_INTERVAL, reached
        assert not await c.frankfurt_gets_eu("a")
        for n in ("b", "c"):
            info = await c.region(n, EU)
            assert info["admin"] == "drain"
            assert info["drained"] is True
        saved = json.loads((c.nodes["a"].dir / "admin_state.json").read_text())
        assert saved["regions"][EU]["state"] == "drain"
        assert saved["regions"][EU]["origin"] == "a"

        # an edge's latency push reached only b; a restarted a pulls it from its peers
        async with c.session.post(f"{c.nodes['b'].admin}/api/latency", headers=AUTH, json={"measurements": [
                {"network": SEOUL_NET, "region": "us-east", "rtt_ms": 3.0}]}) as resp:
            assert resp.status == 200

        # a crash of a (SIGKILL: nothing written on the way out); it starts with the drain held
        await c.nodes["a"].stop(signal.SIGKILL)
        await c.nodes["a"].start(c.session)
        assert (await c.region("a", EU))["admin"] == "drain"
        assert not await c.frankfurt_gets_eu("a")
        await wait_for(lambda: _latency_networks(c, "a", 1), within=5)
        assert await c.nodes["a"].answer("seoul", "fast.example.test") == ["127.0.1.1"]

        # undrain sent to c reaches a and b
        await c.post("c", f"/api/regions/{EU}/undrain")
        for n in c.nodes:
            await wait_for(lambda n=n: c.frankfurt_gets_eu(n), within=PEER_INTERVAL + SLACK, interval=0.01)
        assert json.loads((c.nodes["a"].dir / "admin_state.json").read_text())["regions"][EU]["state"] == "ready"


async def _latency_networks(c: Cluster, node: str, count: int) -> bool:
    return (await c.get(node, "/api/latency"))["networks"] == count


async def test_a_server_down_during_a_drain_catches_up_when_it_starts(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.nodes["c"].stop()
        reply = await c.post("a", f"/api/regions/{EU}/maintenance")
        assert reply["peers"]["b"] == "ok"
        assert reply["peers"]["c"] != "ok"               # c is down: the push failed, and says why
        assert reply["state"] == "down"
        assert not await c.frankfurt_gets_eu("b")
        (c.nodes["c"].dir / "admin_state.json").unlink(missing_ok=True)
        await c.nodes["c"].start(c.session)
        # its first pull of a's or b's report brings the entry (no bound claimed: a generous deadline)
        await wait_for(lambda: _admin(c, "c", EU, "maintenance"), within=10)
        assert not await c.frankfurt_gets_eu("c")


async def _admin(c: Cluster, node: str, region: str, state: str) -> bool:
    return (await c.region(node, region))["admin"] == state


async def test_a_server_whose_peers_are_all_unreachable_answers_on_its_own_view(tmp_path: Path) -> None:
    nowhere = {"b": f"http://127.0.0.1:{free_port()}", "c": f"http://127.0.0.1:{free_port()}"}
    async with cluster(tmp_path, names=("a",), peers={"a": nowhere}) as c:
        await wait_for(lambda: _pulls_failed(c, "a"), within=5)
        peers = await c.get("a", "/api/peers")
        assert peers["alone"] is True
        assert peers["reachable"] == []
        assert all(p["last_error"] for p in peers["peers"])
        assert await metric(c, "a", "gslb_peers_alone") == 1
        assert await metric(c, "a", "gslb_peers_reachable") == 0
        out = await ctl(c.nodes["a"], "peers")
        assert "ALONE (no peer heard)" in out
        assert "ClientConnectorError" in out
        assert await c.frankfurt_gets_eu("a")
        c.regions[EU].status = 503
        await wait_for(lambda: _not(c.frankfurt_gets_eu("a")), within=PROBE_INTERVAL * (FALL + 1) + SLACK)
        assert (await c.get("a", "/api/regions"))["peers"] == {"configured": 2, "reachable": 0, "alone": True}
        info = await c.region("a", EU)
        assert info["vote"]["alone"] is True
        assert info["state"] == "down"
        table = await ctl(c.nodes["a"], "regions")
        assert "0 up / 1 down (quorum) alone" in next(line for line in table.splitlines() if line.startswith(EU))
        c.regions[EU].status = 200
        await wait_for(lambda: c.frankfurt_gets_eu("a"), within=PROBE_INTERVAL * 2 + SLACK)


async def ctl(node: Node, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gslb", "ctl", "--url", node.admin, "--token", TOKEN, *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _pulls_failed(c: Cluster, node: str) -> bool:
    peers = (await c.get(node, "/api/peers"))["peers"]
    return all(p.get("pulls_failed", 0) >= 2 for p in peers)


async def _not(awaitable: Any) -> bool:
    return not await awaitable


async def test_peer_endpoints_need_the_peer_token_and_bound_what_they_take(tmp_path: Path) -> None:
    async with cluster(tmp_path, names=("a",), peers={"a": {}}) as c:
        admin = c.nodes["a"].admin
        for method, path in (("GET", "/api/peers/verdicts"), ("POST", "/api/peers/admin"),
                             ("GET", "/api/peers/latency")):
            async with c.session.request(method, admin + path) as resp:
                assert resp.status == 401
            async with c.session.request(method, admin + path, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
        verdicts = await c.get("a", "/api/peers/verdicts", headers=AUTH)
        assert verdicts["server"] == "a"
        assert set(verdicts["regions"]) == set(REGIONS)
        url = admin + "/api/peers/admin"
        async with c.session.post(url, headers=AUTH, data=b"x" * 70_000) as resp:
            assert resp.status == 413
        async with c.session.post(url, headers=AUTH, json={"admin": {EU: {"state": "gone"}}}) as resp:
            assert resp.status == 400
            assert "admin.eu-central.state" in (await resp.json())["error"]
        entry = {"state": "drain", "at": time.time() + 5, "origin": "z"}
        async with c.session.post(url, headers=AUTH, json={"server": "z", "admin": {EU: entry}}) as resp:
            assert (await resp.json()) == {"changed": [EU]}
        assert (await c.region("a", EU))["admin"] == "drain"
        async with c.session.post(f"{admin}/api/regions/{EU}/undrain", headers=AUTH) as resp:
            assert (await resp.json())["admin"] == "ready"      # later than the peer's, though its clock ran ahead


async def test_a_corrupt_state_file_stops_the_start_naming_file_and_reason(tmp_path: Path) -> None:
    node = Node("a", tmp_path, free_dns_port(), free_port())
    regions = {name: RegionHealth(addr) for name, (_loc, addr) in REGIONS.items()}
    write_config(node, regions, {})
    state = tmp_path / "admin_state.json"
    state.write_text('{"version": 1, "regions": {"eu-central": {"state": "drained", "at": 1, "origin": "a"}}}')
    for args in (["serve", "-c", str(node.config)], ["check-config", str(node.config)]):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gslb", *args, cwd=ROOT,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert f"{state}: regions.eu-central.state: must be one of ready, drain, maintenance" in err.decode()


async def test_a_reload_starts_and_stops_the_peer_pulls(tmp_path: Path) -> None:
    from tests.gslb_helpers import running_gslb

    async with running_gslb(tmp_path) as g, aiohttp.ClientSession() as session:
        assert g.server.peer_sync is None
        data = yaml.safe_load(g.config_path.read_text())
        data["peers"] = {"name": "a", "interval": "50ms", "servers": {"b": f"http://127.0.0.1:{free_port()}"}}
        g.write_config(data)
        await g.server.reload()
        assert g.server.peer_sync is not None

        async def failing() -> bool:
            async with session.get(f"{g.admin}/api/peers") as resp:
                peers = (await resp.json())["peers"]
            return peers[0].get("pulls_failed", 0) >= 1

        await wait_for(failing, within=5)
        del data["peers"]
        g.write_config(data)
        await g.server.reload()
        assert g.server.peer_sync is None
        async with session.get(f"{g.admin}/api/peers") as resp:
            assert (await resp.json())["peers"] == []
