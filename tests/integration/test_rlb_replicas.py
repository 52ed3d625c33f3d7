"""Two edge LB replicas of one region sharing a real Redis: learned and cookie stickiness stay consistent
when requests alternate between them, and a Redis outage never fails a request."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.redis_helpers import redis_server  # noqa: F401  (pytest fixture)
from tests.rlb_helpers import backend_servers, lb_config, lb_url, running_lb

ROUTES = [
    {"name": "auth", "match": {"path": "/api/auth/**"}, "pool": "app", "policy": "sticky_cookie",
     "options": {"cookie": "LBSESSIONID", "secrets": ["shared-secret"], "first": "round_robin"}},
    {"name": "learn", "match": {"path": "/"}, "pool": "app", "policy": "sticky_learn",
     "options": {"cookie": "JSESSIONID", "first": "round_robin"}},
]


def replica_config(backends, redis_url: str):
    return lb_config(backends, routes=ROUTES,
                     state={"backend": "redis", "url": redis_url, "key_prefix": "rlb:test:"})


async def get(session: aiohttp.ClientSession, url: str, cookie: str | None = None) -> tuple[int, str, list[str]]:
    headers = {"Cookie": cookie} if cookie else {}
    async with session.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Backend", ""), resp.headers.getall("Set-Cookie", [])


async def test_alternating_replicas_see_one_backend_per_session(redis_server):  # noqa: F811
    async with backend_servers(["a", "b", "c"]) as bs, \
            running_lb(replica_config(bs, redis_server.url)) as one, \
            running_lb(replica_config(bs, redis_server.url)) as two, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        replicas = (one, two)
        # Put the replicas' round robins out of step, so agreement can only come from the shared table.
        assert (await get(http, lb_url(two, "/page")))[0] == 200
        # Learned stickiness: the app's session cookie is learnt by whichever replica saw the Set-Cookie.
        owners = {}
        for i, sid in enumerate(f"s{n}" for n in range(6)):
            status, owner, _ = await get(http, lb_url(replicas[i % 2], f"/set-cookie?name=JSESSIONID&value={sid}"))
            assert status == 200
            owners[sid] = owner
        assert len(set(owners.values())) == 3
        for sid, owner in owners.items():
            for k in range(4):
                status, backend, _ = await get(http, lb_url(replicas[k % 2], "/page"), f"JSESSIONID={sid}")
                assert status == 200
                assert backend == owner, (sid, k)
        # Cookie stickiness: a cookie issued by one replica is honoured by the other.
        for first in replicas:
            status, owner, cookies = await get(http, lb_url(first, "/api/auth/login"))
            lb_cookie = next(c.split(";")[0] for c in cookies if c.startswith("LBSESSIONID="))
            for k in range(4):
                status, backend, _ = await get(http, lb_url(replicas[k % 2], "/api/auth/me"), lb_cookie)
                assert status == 200
                assert backend == owner


async def test_redis_outage_never_fails_a_request_and_sharing_resumes(redis_server):  # noqa: F811
    async with backend_servers(["a", "b", "c"]) as bs, \
            running_lb(replica_config(bs, redis_server.url)) as one, \
            running_lb(replica_config(bs, redis_server.url)) as two, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        await get(http, lb_url(one, "/set-cookie?name=JSESSIONID&value=before"))
        await asyncio.to_thread(redis_server.stop)
        for k in range(10):                                  # Redis down: local state, no failed request
            status, _, _ = await get(http, lb_url((one, two)[k % 2], "/page"), "JSESSIONID=before")
            assert status == 200
        status, _, _ = await get(http, lb_url(two, "/set-cookie?name=JSESSIONID&value=during"))
        assert status == 200
        assert one.store.available is False or two.store.available is False
        await asyncio.to_thread(redis_server.start)
        # Back: a session learnt by one replica is followed by the other again (after the store's back-off).
        _, new_owner, _ = await get(http, lb_url(one, "/set-cookie?name=JSESSIONID&value=after"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while True:
            status, backend, _ = await get(http, lb_url(two, "/page"), "JSESSIONID=after")
            assert status == 200
            if backend == new_owner and one.store.available and two.store.available:
                # `one` may still have been in back-off when it learnt 'after': learn again once it is back.
                break
            assert loop.time() < deadline, "shared stickiness did not resume after Redis came back"
            _, new_owner, _ = await get(http, lb_url(one, "/set-cookie?name=JSESSIONID&value=after"))
            await asyncio.sleep(0.1)
