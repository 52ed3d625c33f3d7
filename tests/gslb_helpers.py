"""Start a real GSLB on free loopback ports with a small deterministic GeoIP database.

Regions get addresses of their own (127.0.1.1, 127.0.2.1, 127.0.3.1) and each can have a
fake regional-LB health endpoint (`FakeRegionLB`) whose answer a test flips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gslb.app import GslbServer
from gslb.config import load_config
from gslb.serve import serve
from tests.geo_fixtures import City, write_city_db

SEOUL_NET = "168.126.63.0/24"
FRANKFURT_NET = "3.120.0.0/24"
ASHBURN_NET = "3.208.0.0/24"
SEOUL_V6_NET = "2001:db8:1::/48"

CITIES = {
    SEOUL_NET: City(37.57, 126.98, country="KR", continent="AS", city="Seoul"),
    FRANKFURT_NET: City(50.11, 8.68, country="DE", continent="EU", city="Frankfurt"),
    ASHBURN_NET: City(39.04, -77.49, country="US", continent="NA", city="Ashburn"),
    "100.64.0.0/16": City(48.85, 2.35, country="FR", continent="EU", city="Paris"),
    SEOUL_V6_NET: City(37.57, 126.98, country="KR", continent="AS", city="Seoul"),
}

REGIONS = {
    "us-east": ((39.04, -77.49), "127.0.1.1"),
    "eu-central": ((50.11, 8.68), "127.0.2.1"),
    "ap-northeast": ((37.57, 126.98), "127.0.3.1"),
}
TOKEN = "test-token"


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dns_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 and ::1."""
    for _ in range(50):
        port = free_port()
        try:
            for host in ("127.0.0.1", "::1"):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    with socket.socket(family, kind) as s:
                        s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free DNS port")


class FakeRegionLB:
    """A regional LB's /lb/healthz on the region's own loopback address."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.status = 200
        self.healthy_fraction = 1.0
        self.hits = 0
        self._runner: web.AppRunner | None = None

    async def _health(self, _request: web.Request) -> web.Response:
        self.hits += 1
        body = {"status": "ok" if self.status == 200 else "unhealthy", "healthy_fraction": self.healthy_fraction}
        return web.Response(status=self.status, text=json.dumps(body), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/lb/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port(self.host)
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def gslb_config(tmp: Path, *, dns_port: int, admin_port: int, lbs: dict[str, FakeRegionLB] | None,
                services: dict[str, Any] | None = None, interval: str = "50ms", fall: int = 2,
                rise: int = 1) -> dict[str, Any]:
    db = tmp / "test-city.mmdb"
    if not db.exists():
        write_city_db(db, CITIES)
    regions: dict[str, Any] = {}
    for name, ((lat, lon), addr) in REGIONS.items():
        region: dict[str, Any] = {"location": [lat, lon], "addresses": [addr]}
        if lbs is not None:
            lb = lbs[name]
            region["probe"] = {"type": "http", "url": f"http://{lb.host}:{lb.port}/lb/healthz",
                               "interval": interval, "timeout": "1s", "rise": rise, "fall": fall}
        regions[name] = region
    return {
        "dns": {"listen": [f"127.0.0.1:{dns_port}", f"[::1]:{dns_port}"], "tcp_idle_timeout": "2s"},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
        "geoip": {"database": str(db)},
        "regions": regions,
        "zones": {"example.test": {
            "ttl": 3600,
            "soa": {"mname": "ns1.example.test", "rname": "hostmaster.example.test", "serial": 1,
                    "refresh": 3600, "retry": 600, "expire": 86400, "minimum": 60},
            "ns": ["ns1.example.test", "ns2.example.test"],
            "records": {"ns1": {"A": ["127.0.0.1"]}, "ns2": {"A": ["127.0.0.2"]}, "app": {"CNAME": "www"},
                        "@": {"MX": ["10 mail.example.test."], "TXT": ["hello"]}, "mail": {"A": ["127.0.0.25"]}},
        }},
        "services": services if services is not None else {
            "www.example.test": {"policy": "geo", "count": 1, "ttl": 30, "degraded_ttl": 5},
            "fast.example.test": {"policy": "latency", "count": 1, "ttl": 20},
            "two.example.test": {"policy": "geo", "count": 2, "ttl": 30},
        },
    }


@dataclass
class RunningGslb:
    server: GslbServer
    dns_port: int
    admin_port: int
    config_path: Path
    lbs: dict[str, FakeRegionLB] = field(default_factory=dict)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_config(self, data: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(data))


@contextlib.asynccontextmanager
async def running_gslb(tmp: Path, *, with_lbs: bool = True, **kwargs: Any) -> AsyncIterator[RunningGslb]:
    lbs = {name: FakeRegionLB(addr) for name, (_loc, addr) in REGIONS.items()} if with_lbs else {}
    for lb in lbs.values():
        await lb.start()
    dns_port, admin_port = free_dns_port(), free_port()
    path = tmp / "gslb.yaml"
    path.write_text(yaml.safe_dump(gslb_config(tmp, dns_port=dns_port, admin_port=admin_port,
                                               lbs=lbs if with_lbs else None, **kwargs)))
    try:
        async with serving(path) as server:
            yield RunningGslb(server, dns_port, admin_port, path, lbs)
    finally:
        for lb in lbs.values():
            await lb.stop()


@contextlib.asynccontextmanager
async def serving(path: Path) -> AsyncIterator[GslbServer]:
    """The real server (`gslb.serve.serve`) on the config file at `path`, once its listeners are bound;
    stopped (and awaited) on exit. A server that fails to start raises here."""
    stop = asyncio.Event()
    started: asyncio.Future[GslbServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(load_config(path), shutdown_trigger=stop, ready=started.set_result))
    try:
        done, _ = await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield started.result()
    finally:
        stop.set()
        await task


async def wait_for(predicate: Any, within: float = 5.0, interval: float = 0.02) -> None:
    """Poll `predicate` (sync or async) until true: for state that changes in another task or process."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
