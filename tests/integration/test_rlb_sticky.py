"""Stickiness through the real proxy: sticky cookies, tampering, drain, maintenance, reports."""

from __future__ import annotations

from http.cookies import SimpleCookie

import aiohttp

from tests.rlb_helpers import admin_url, backend_servers, lb_config, lb_url, running_lb

STICKY = [{"name": "auth", "match": {"path": "/api/auth/**"}, "pool": "app", "policy": "sticky_cookie",
           "options": {"cookie": "LBSESSIONID", "secrets": ["s3cret"], "first": "round_robin"}},
          {"name": "rest", "pool": "app", "policy": "round_robin"}]
TOKEN = {"Authorization": "Bearer test-token"}


def _cookie(resp: aiohttp.ClientResponse) -> str | None:
    for value in resp.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        jar.load(value)
        if "LBSESSIONID" in jar:
            return jar["LBSESSIONID"].value
    return None


async def _get(s: aiohttp.ClientSession, url: str, cookie: str | None = None) -> tuple[str, str | None, int]:
    headers = {"Cookie": f"LBSESSIONID={cookie}"} if cookie else {}
    async with s.get(url, headers=headers) as r:
        await r.read()
        return r.headers.get("X-Backend", "-"), _cookie(r), r.status


async def test_sticky_cookie_keeps_a_session_on_one_backend_and_others_spread() -> None:
    async with backend_servers(["a", "b", "c"]) as bs, running_lb(lb_config(bs, routes=STICKY)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        sessions = []
        for _ in range(6):
            backend, cookie, status = await _get(s, lb_url(lb, "/api/auth/login"))
            assert status == 200
            assert cookie is not None
            sessions.append((backend, cookie))
        assert {b for b, _ in sessions} == {"a", "b", "c"}          # new sessions spread
        for backend, cookie in sessions:
            for _ in range(3):
                got, _new, status = await _get(s, lb_url(lb, "/api/auth/me"), cookie)
                assert status == 200
                assert got == backend


async def test_tampered_or_unknown_cookie_gets_a_fresh_session() -> None:
    async with backend_servers(["a", "b"]) as bs, running_lb(lb_config(bs, routes=STICKY)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        _, cookie, _ = await _get(s, lb_url(lb, "/api/auth/x"))
        assert cookie
        for bad in (cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), "garbage", "", "a" * 5000):
            backend, new_cookie, status = await _get(s, lb_url(lb, "/api/auth/x"), bad or None)
            assert status == 200
            assert backend in ("a", "b")
            assert new_cookie
            assert new_cookie != bad


async def test_drain_keeps_sessions_maintenance_moves_them_and_report_counts() -> None:
    async with backend_servers(["a", "b"]) as bs, running_lb(lb_config(bs, routes=STICKY)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        on_a = None
        for _ in range(4):
            backend, cookie, _ = await _get(s, lb_url(lb, "/api/auth/x"))
            if backend == "a":
                on_a = cookie
        assert on_a
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain")) as r:
            assert r.status == 401                                        # no token
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/drain"), headers=TOKEN) as r:
            assert r.status == 200
            row = (await r.json())["backend"]
            assert row["admin"] == "drain"
            assert row["sticky_sessions"]["auth"] >= 1
        for _ in range(3):                       # the existing session stays on the draining backend
            backend, _, _ = await _get(s, lb_url(lb, "/api/auth/x"), on_a)
            assert backend == "a"
        for _ in range(4):                       # new sessions and non-sticky routes avoid it
            backend, _, _ = await _get(s, lb_url(lb, "/api/auth/x"))
            assert backend == "b"
            backend, _, _ = await _get(s, lb_url(lb, "/other"))
            assert backend == "b"
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/maintenance"), headers=TOKEN) as r:
            assert r.status == 200
        backend, moved_cookie, status = await _get(s, lb_url(lb, "/api/auth/x"), on_a)
        assert (backend, status) == ("b", 200)
        assert moved_cookie
        assert moved_cookie != on_a
        async with s.post(admin_url(lb, "/api/pools/app/backends/a/ready"), headers=TOKEN) as r:
            assert (await r.json())["backend"]["admin"] == "ready"
        async with s.post(admin_url(lb, "/api/pools/app/backends/zz/ready"), headers=TOKEN) as r:
            assert r.status == 404
        async with s.get(admin_url(lb, "/metrics")) as r:
            text = await r.text()
            assert 'rlb_sticky_decisions_total{reason=' in text
            assert 'rlb_requests_total{backend="a",code="2xx",pool="app",route="auth"}' in text
