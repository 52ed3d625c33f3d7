"""`workers: 2`: a Supervisor in the test process, two real worker processes, real sockets.

Which worker answered: /lb/healthz on a listener carries {"worker": id, "pid": pid}; which
worker proxied what: each worker's own metric families as the supervisor collects them
(`sup.metrics.snapshots`, in worker order). Every request here opens its own connection, so
the kernel's SO_REUSEPORT hashing spreads them over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from regional_lb.config import load_config
from regional_lb.supervisor import Supervisor
from tests.rlb_helpers import TestBackend, backend_servers, lb_config_dict

pytestmark = pytest.mark.timeout(90)
STICKY = {"name": "sticky", "match": {"path": "/s/**"}, "pool": "app", "policy": "sticky_cookie",
          "options": {"cookie": "LBSESSIONID", "secrets": ["s3cret"], "first": "round_robin"}}
HASHED = {"name": "hashed", "match": {"path": "/h/**"}, "pool": "app", "policy": "uri_hash"}
REST = {"name": "rest", "pool": "app", "policy": "round_robin"}


def write_config(path: Path, backends: list[TestBackend], **kw: Any) -> Path:
    doc = lb_config_dict(backends, workers=2, **kw)
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.asynccontextmanager
async def supervised(path: Path) -> AsyncIterator[Supervisor]:
    config = load_config(path)
    sup = Supervisor(config, config_path=path, log_level="warning")
    await sup.start()
    try:
        yield sup
    finally:
        await sup.stop()


def url(sup: Supervisor, path: str) -> str:
    host, port = sup.listen_addresses[0]
    return f"http://{host}:{port}{path}"


def fresh_connections() -> aiohttp.ClientSession:
    """Every request on a new connection (the kernel picks a worker per connection)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def healthz(session: aiohttp.ClientSession, sup: Supervisor) -> dict[str, Any]:
    async with session.get(url(sup, "/lb/healthz")) as r:
        body: dict[str, Any] = json.loads(await r.read())
        return body


async def until_both_workers(sup: Supervisor, check: Any, *, limit: float) -> float:
    """Ask /lb/healthz on new connections until both workers' answers pass `check`; the seconds taken."""
    t0 = time.monotonic()
    passed: set[int] = set()
    async with fresh_connections() as s:
        while passed != {0, 1}:
            body = await healthz(s, sup)
            if check(body):
                passed.add(body["worker"])
            assert time.monotonic() - t0 < limit, f"workers {sorted({0, 1} - passed)} never showed it"
    return time.monotonic() - t0


def per_worker_requests(sup: Supervisor, route: str) -> list[dict[str, float]]:
    """backend -> requests on `route`, per worker (from the snapshots of the last refresh_metrics)."""
    out = []
    for wire in sup.metrics.snapshots:
        counts: dict[str, float] = {}
        for name, _typ, _doc, samples in wire:
            if name == "rlb_requests":
                for sample_name, labels, value in samples:
                    if sample_name.endswith("_total") and labels["route"] == route:
                        counts[labels["backend"]] = counts.get(labels["backend"], 0) + value
        out.append(counts)
    return out


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_two_workers_both_serve_and_metrics_add_up(tmp_path: Path, server: str) -> None:
    async with backend_servers(["a", "b"]) as backends, \
            supervised(write_config(tmp_path / "edge.yaml", backends, server=server)) as sup:
        assert len({w.pid for w in sup.workers}) == 2
        async with fresh_connections() as s:
            seen = set()
            for _ in range(200):
                body = await healthz(s, sup)
                seen.add((body["worker"], body["pid"]))
                if len(seen) == 2:
                    break
            assert seen == {(w.id, w.pid) for w in sup.workers}
            for _ in range(40):
                async with s.get(url(sup, "/x")) as r:
                    assert r.status == 200
        await sup.refresh_metrics()
        per_worker = per_worker_requests(sup, "app#0")
        assert len(per_worker) == 2
        assert sum(sum(c.values()) for c in per_worker) == 40
        assert all(sum(c.values()) > 0 for c in per_worker), per_worker        # both proxied
        async with aiohttp.ClientSession() as s, s.get(admin(sup, "/metrics")) as r:
            text = await r.text()
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("rlb_requests_total{"))
        assert total == 40
        assert "rlb_workers 2.0" in text
        async with aiohttp.ClientSession() as s, s.get(admin(sup, "/api/workers")) as r:
            rows = (await r.json())["workers"]
        assert [(row["id"], row["pid"], row["ready"]) for row in rows] == [(w.id, w.pid, True) for w in sup.workers]
        assert sum(row["requests"] for row in rows) == 40


def admin(sup: Supervisor, path: str) -> str:
    assert sup.admin_address is not None
    host, port = sup.admin_address
    return f"http://{host}:{port}{path}"


async def test_sticky_cookie_and_hash_pick_the_same_backend_whichever_worker_serves(tmp_path: Path) -> None:
    async with backend_servers(["a", "b", "c"]) as backends, \
            supervised(write_config(tmp_path / "edge.yaml", backends, routes=[STICKY, HASHED, REST])) as sup:
        async with fresh_connections() as s:
            async with s.get(url(sup, "/s/login")) as r:
                first = r.headers["X-Backend"]
                cookie = r.cookies["LBSESSIONID"].value
            hashed = set()
            for i in range(60):
                async with s.get(url(sup, "/s/page"), headers={"Cookie": f"LBSESSIONID={cookie}"}) as r:
                    assert r.headers["X-Backend"] == first
                async with s.get(url(sup, "/h/one/key")) as r:
                    hashed.add(r.headers["X-Backend"])
                if i >= 20:
                    await sup.refresh_metrics()
                    served = per_worker_requests(sup, "sticky")
                    if all(served):
                        break
        await sup.refresh_metrics()
        sticky = per_worker_requests(sup, "sticky")
        assert all(sticky), f"one worker served every sticky request: {sticky}"
        assert all(set(c) == {first} for c in sticky)
        assert len(hashed) == 1
        hashes = per_worker_requests(sup, "hashed")
        assert all(hashes), hashes
        assert {b for c in hashes for b in c} == hashed
        # the drain report counts the session the workers saw (the supervisor proxies nothing itself)
        report = await sup.pools_report()
        row = next(r for r in report["app"]["backends"] if r["id"] == first)
        assert row["sticky_sessions"]["sticky"] >= 1


async def test_the_pool_report_shows_the_workers_requests_in_flight(tmp_path: Path) -> None:
    async with backend_servers(["a"]) as (a,), supervised(write_config(tmp_path / "edge.yaml", [a])) as sup:
        async with fresh_connections() as s:
            a.hit.clear()
            slow = asyncio.create_task(s.get(url(sup, "/slow?s=1")))
            await asyncio.wait_for(a.hit.wait(), 10)
            report = await sup.pools_report()
            assert report["app"]["backends"][0]["inflight"] == 1
            assert report["app"]["backends"][0]["ejected_in_workers"] == []
            (await slow).release()
        report = await sup.pools_report()
        assert report["app"]["backends"][0]["inflight"] == 0


async def test_a_health_change_and_a_drain_reach_both_workers(tmp_path: Path) -> None:
    health = {"type": "http", "path": "/healthz", "interval": "100ms", "timeout": "1s", "rise": 1, "fall": 1}
    async with backend_servers(["a", "b"]) as (a, b), \
            supervised(write_config(tmp_path / "edge.yaml", [a, b], health=health)) as sup:
        await until_both_workers(sup, lambda body: body["pools"]["app"]["healthy"] == 2, limit=10)
        changed = asyncio.Event()
        applied_at: list[float] = []
        broadcast = sup.lb._feed
        assert broadcast is not None

        def watch(message: dict[str, Any]) -> None:
            broadcast(message)
            if message["t"] == "health" and message["id"] == "b" and message["status"] == "down":
                applied_at.append(time.monotonic())
                changed.set()

        sup.lb._feed = watch
        b.set_healthy(False)
        await asyncio.wait_for(changed.wait(), 10)
        took = await until_both_workers(sup, lambda body: body["pools"]["app"]["healthy"] == 1, limit=5)
        # applied within 100 ms: 2-8 ms measured here (healthz round trips included) on a loaded
        # 2-core machine; the bound leaves room for a slow CI scheduler
        assert took < 0.25

        # a drain sent through the admin API: no new request reaches "a" on either worker
        b.set_healthy(True)
        await until_both_workers(sup, lambda body: body["pools"]["app"]["healthy"] == 2, limit=10)
        async with aiohttp.ClientSession() as s:
            async with s.post(admin(sup, "/api/pools/app/backends/a/drain"),
                              headers={"Authorization": "Bearer test-token"}) as r:
                assert r.status == 200
            await sup.refresh_metrics()
            before = per_worker_requests(sup, "app#0")
        async with fresh_connections() as s:
            for _ in range(40):
                async with s.get(url(sup, "/after-drain")) as r:
                    assert r.headers["X-Backend"] == "b"
        await sup.refresh_metrics()
        after = per_worker_requests(sup, "app#0")
        assert all(after[i].get("b", 0) > before[i].get("b", 0) for i in range(2)), (before, after)
        assert all(after[i].get("a", 0) == before[i].get("a", 0) for i in range(2))


async def test_sigkill_of_a_worker_under_load_fails_only_what_was_on_it_and_it_comes_back(tmp_path: Path) -> None:
    concurrency = 8
    async with backend_servers(["a", "b"]) as backends, \
            supervised(write_config(tmp_path / "edge.yaml", backends)) as sup:
        victim = sup.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        ok = failed = 0
        stop = asyncio.Event()
        warmed = asyncio.Event()

        async def client(s: aiohttp.ClientSession) -> None:
            nonlocal ok, failed
            while not stop.is_set():
                try:
                    async with s.get(url(sup, "/load")) as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                            if ok >= 100:
                                warmed.set()
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1

        async with fresh_connections() as s:
            clients = [asyncio.create_task(client(s)) for _ in range(concurrency)]
            await asyncio.wait_for(warmed.wait(), 30)
            os.kill(old_pid, signal.SIGKILL)
            killed_at = ok
            deadline = time.monotonic() + 30
            while not (victim.ready and victim.pid != old_pid and ok > killed_at + 200):
                assert time.monotonic() < deadline, "the worker did not come back"
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*clients)
        assert failed <= concurrency, f"{failed} failed requests, at most {concurrency} were in flight"
        assert victim.restarts == 1
        async with fresh_connections() as s:
            seen = set()
            for _ in range(200):
                body = await healthz(s, sup)
                seen.add((body["worker"], body["pid"]))
                if len(seen) == 2:
                    break
        assert (0, victim.pid) in seen


async def test_reload_with_two_workers_keeps_listening_and_reaches_both(tmp_path: Path) -> None:
    async with backend_servers(["a", "b"]) as (a, b):
        path = write_config(tmp_path / "edge.yaml", [a])
        async with supervised(path) as sup:
            failed = 0
            done = asyncio.Event()

            async def client(s: aiohttp.ClientSession) -> None:
                nonlocal failed
                while not done.is_set():
                    try:
                        async with s.get(url(sup, "/during")) as r:
                            await r.read()
                            failed += r.status != 200
                    except aiohttp.ClientError:
                        failed += 1

            async with fresh_connections() as s:
                clients = [asyncio.create_task(client(s)) for _ in range(4)]
                write_config(path, [b])
                ok, message = await sup.reload()
                assert ok, message
                assert "2 workers" in message
                done.set()
                await asyncio.gather(*clients)
                assert failed == 0
                await sup.refresh_metrics()
                before = per_worker_requests(sup, "app#0")
                for _ in range(40):
                    async with s.get(url(sup, "/after")) as r:
                        assert r.headers["X-Backend"] == "b"
            await sup.refresh_metrics()
            after = per_worker_requests(sup, "app#0")
            assert all(after[i].get("b", 0) > before[i].get("b", 0) for i in range(2)), (before, after)
            # a bad config is refused by the supervisor; the workers keep serving the last good one
            path.write_text("region: [")
            ok, _message = await sup.reload()
            assert not ok
            async with fresh_connections() as s, s.get(url(sup, "/still")) as r:
                assert r.headers["X-Backend"] == "b"


async def test_serve_sigterm_drains_every_worker_and_sighup_reloads(tmp_path: Path) -> None:
    from tests.rlb_helpers import free_port

    async with backend_servers(["a", "b"]) as (a, b):
        port = free_port()
        path = write_config(tmp_path / "edge.yaml", [a], listen=[{"address": f"127.0.0.1:{port}"}])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "regional_lb", "serve", "-c", str(path),
            "--log-level", "warning", stderr=asyncio.subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            async with fresh_connections() as s:
                pids = set()
                deadline = time.monotonic() + 30
                while len(pids) < 2:
                    assert time.monotonic() < deadline, "two workers never answered"
                    try:
                        async with s.get(base + "/lb/healthz") as r:
                            pids.add(json.loads(await r.read())["pid"])
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
                # SIGHUP: every worker reloads to the new file
                write_config(path, [b], listen=[{"address": f"127.0.0.1:{port}"}])
                proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 15
                streak = 0
                while streak < 40:          # 40 in a row from b: both workers switched
                    assert time.monotonic() < deadline, "the reload did not reach every worker"
                    async with s.get(base + "/x") as r:
                        streak = streak + 1 if r.headers["X-Backend"] == "b" else 0
                # SIGTERM: a request in flight finishes, then every process exits
                b.hit.clear()
                slow = asyncio.create_task(s.get(base + "/slow?s=1"))
                await asyncio.wait_for(b.hit.wait(), 10)
                proc.send_signal(signal.SIGTERM)
                r = await slow
                assert r.status == 200
                r.release()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            for pid in pids:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_worker_that_cannot_bind_fails_the_start_with_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:                  # no SO_REUSEPORT: the workers cannot join it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with backend_servers(["a"]) as backends:
            path = write_config(tmp_path / "edge.yaml", backends, listen=[{"address": f"127.0.0.1:{port}"}])
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "regional_lb", "serve", "-c", str(path), "--log-level", "error",
                stderr=asyncio.subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 1
    assert b"exited before it was ready" in err
    assert b"Traceback" not in err.split(b"exited before it was ready")[-1]


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    from tests.rlb_helpers import free_port

    async with backend_servers(["a"]) as backends:
        port = free_port()
        path = write_config(tmp_path / "edge.yaml", backends, listen=[{"address": f"127.0.0.1:{port}"}])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "regional_lb", "serve", "-c", str(path), "--log-level", "warning")
        try:
            pids: set[int] = set()
            deadline = time.monotonic() + 30
            async with fresh_connections() as s:
                while len(pids) < 2:
                    assert time.monotonic() < deadline, "two workers never answered"
                    try:
                        async with s.get(f"http://127.0.0.1:{port}/lb/healthz") as r:
                            pids.add(json.loads(await r.read())["pid"])
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
            proc.kill()
            await proc.wait()
            deadline = time.monotonic() + 15
            while pids:                     # each sees its channel close, drains, exits
                assert time.monotonic() < deadline, f"workers {pids} outlived their supervisor"
                for pid in list(pids):
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        pids.discard(pid)
                await asyncio.sleep(0.05)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_restarted_worker_starts_from_the_supervisors_state(tmp_path: Path) -> None:
    async with backend_servers(["a", "b"]) as backends, \
            supervised(write_config(tmp_path / "edge.yaml", backends)) as sup:
        await sup.set_admin("app", "b", "maintenance", None)
        await until_both_workers(sup, lambda body: body["pools"]["app"]["healthy"] == 1, limit=5)
        victim = sup.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (victim.ready and victim.pid != old_pid):
            assert time.monotonic() < deadline, "the worker did not come back"
            await asyncio.sleep(0.05)
        # the new process got the snapshot with its config: b is still in maintenance there
        await until_both_workers(sup, lambda body: body["pid"] in {w.pid for w in sup.workers}
                                 and body["pools"]["app"]["healthy"] == 1, limit=10)
        async with fresh_connections() as s:
            for _ in range(20):
                async with s.get(url(sup, "/x")) as r:
                    assert r.headers["X-Backend"] == "a"


async def test_ctl_workers_lists_the_worker_processes(tmp_path: Path) -> None:
    async with backend_servers(["a"]) as backends, \
            supervised(write_config(tmp_path / "edge.yaml", backends)) as sup:
        base = admin(sup, "")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "regional_lb", "ctl", "-c", str(tmp_path / "edge.yaml"), "--url", base,
            "--token", "test-token", "workers", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        header, *rows = out.decode().splitlines()
        assert header.split() == ["ID", "PID", "READY", "RESTARTS", "GENERATION", "REQUESTS"]
        assert [(int(r.split()[0]), int(r.split()[1])) for r in rows] == [(w.id, w.pid) for w in sup.workers]


async def test_discovery_runs_once_in_the_supervisor_and_reaches_both_workers(tmp_path: Path) -> None:
    from regional_lb.discovery import FakeResolver

    async with backend_servers(["a", "b"]) as (a, b):
        srv = FakeResolver({("_http._tcp.app.test", "SRV"): [("127.0.0.1", a.port, 5)]})
        path = write_config(tmp_path / "edge.yaml", [a],
                            pool_extra={"backends": [{"dns": "_http._tcp.app.test", "type": "SRV"}]})
        config = load_config(path)
        sup = Supervisor(config, config_path=path, log_level="warning", resolver=srv)
        await sup.start()
        try:
            async with fresh_connections() as s:
                for _ in range(20):
                    async with s.get(url(sup, "/x")) as r:
                        assert r.headers["X-Backend"] == "a"
                srv.answers[("_http._tcp.app.test", "SRV")] = [("127.0.0.1", b.port, 5)]     # a moved to b
                assert sup.lb.discovery is not None
                assert await sup.lb.discovery.resolve_once("app", config.pools["app"].dns[0]) is not None
                # both workers switched: every new connection, whichever worker takes it, reaches b.
                # (a worker answers the metrics request after applying what was sent before it: the
                # channel keeps order, so this round trip is the barrier)
                await sup.refresh_metrics()
                before = per_worker_requests(sup, "app#0")
                for _ in range(40):
                    async with s.get(url(sup, "/x")) as r:
                        assert r.headers["X-Backend"] == "b"
            await sup.refresh_metrics()
            after = per_worker_requests(sup, "app#0")
            b_id = f"127.0.0.1:{b.port}"
            assert all(after[i].get(b_id, 0) > before[i].get(b_id, 0) for i in range(2)), (before, after)
        finally:
            await sup.stop()
