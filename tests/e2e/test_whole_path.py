"""The whole path, every piece a real process started by the demo launcher:

dig-like DNS query with ECS from Seoul -> GSLB -> ap-northeast edge LB -> internal LB -> app server,
sticky cookie from the edge (keeping a user on one of the region's two internal groups, while fresh
clients reach both), session in Redis; then ap-northeast's edge dies, the GSLB stops answering with
it within interval x fall (+1 s), and the client sent to the next region keeps its session.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest
import redis

from deploy.launcher import running_demo

SEOUL_CLIENT_NET = "168.126.63.0"     # KR: KT's public DNS network in Seoul
PROBE_INTERVAL, PROBE_FALL = 1.0, 2  # deploy/local/gslb.yaml
# ap-northeast's internal groups (deploy/local/internal-ap-northeast-{a,b}.yaml): the app servers behind each
APP_GROUPS = ({"ap-northeast-app-1", "ap-northeast-app-2"}, {"ap-northeast-app-3", "ap-northeast-app-4"})


def resolve(dns_port: int) -> list[str]:
    query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(SEOUL_CLIENT_NET, 24)])
    reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=2)
    return sorted(rd.address for rrset in reply.answer for rd in rrset)


class Client:
    """A browser-ish HTTP client: keeps cookies by name (the demo's hosts share cookies by design)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, url: str, data: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body)
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            resp = self.opener.open(req, timeout=5)
        except urllib.error.HTTPError as err:
            resp = err
        with resp:
            for header in resp.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    self.cookies[name] = morsel.value
            return resp.status, dict(resp.headers.items()), resp.read().decode()


@pytest.mark.timeout(180)
def test_seoul_client_walks_the_whole_path_and_survives_region_failure(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        assert demo["healthy"], demo["output"]()
        ports, regions = demo["ports"], demo["regions"]

        # 1. The GSLB sends a Seoul client to ap-northeast's edge.
        edge = regions["ap-northeast"]["edge"]
        assert resolve(ports["dns"]) == [edge.split(":")[0]]

        # 2. Log in through edge -> internal -> app: sticky cookie from the edge, session cookie from the app.
        client = Client()
        status, headers, _ = client.request(f"http://{edge}/api/auth/login", {"user": "alice"})
        assert status == 200
        assert headers["X-App-Region"] == "ap-northeast"
        assert "LBSESSIONID" in client.cookies
        assert "session" in client.cookies
        groups, servers = set(), set()
        for _ in range(6):
            status, headers, body = client.request(f"http://{edge}/api/auth/me")
            assert status == 200
            assert "alice" in body
            groups.add(headers["X-LB-Backend"])                      # the edge's pick: an internal LB
            servers.add(headers["X-App-Server"])
        assert len(groups) == 1                                        # sticky to one group
        assert servers <= APP_GROUPS[0] or servers <= APP_GROUPS[1], servers   # ...whose app servers answered

        # Fresh clients (no LBSESSIONID yet) are spread over both groups.
        seen: set[str] = set()
        for i in range(20):
            status, headers, _ = Client().request(f"http://{edge}/api/auth/login", {"user": f"user{i}"})
            assert status == 200
            seen.add(headers["X-App-Server"])
        assert seen & APP_GROUPS[0], seen
        assert seen & APP_GROUPS[1], seen
        # The app saw the real client address through both tiers.
        assert headers["X-Seen-Client"].split(",")[0].strip() == "127.0.0.1"
        # The session lives in Redis, not in the app server.
        store = redis.Redis.from_url(demo["redis_url"] + "/0")
        try:
            assert store.get("demo:session:" + client.cookies["session"]) == b"alice"
        finally:
            store.close()

        # 3. ap-northeast's edge dies: the GSLB stops answering with it within interval x fall (+1 s).
        os.killpg(demo["pids"]["edge-ap-northeast"], signal.SIGKILL)
        killed = time.monotonic()
        while resolve(ports["dns"]) == [edge.split(":")[0]]:
            assert time.monotonic() - killed <= PROBE_INTERVAL * PROBE_FALL + 1.0, "GSLB still answers a dead region"
            time.sleep(0.05)
        (next_address,) = resolve(ports["dns"])
        next_region = next(name for name, r in regions.items() if r["edge"].split(":")[0] == next_address)
        assert next_region != "ap-northeast"

        # 4. The client, sent to the next region, still has its session (it is in Redis).
        next_edge = regions[next_region]["edge"]
        status, headers, body = client.request(f"http://{next_edge}/api/auth/me")
        assert status == 200
        assert "alice" in body
        assert headers["X-App-Region"] == next_region
