"""`workers: 2` for the GSLB: a supervisor in the test process, two real worker processes, real sockets.

Which worker answered: each worker's own metric families as the supervisor collects them
(`sup.by_worker`). A UDP socket bound to one source port always reaches the same worker (the
kernel's SO_REUSEPORT hash of the client's address and port), so `pinned_sockets` finds one
socket per worker by sending a query and seeing whose counter moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.query
import pytest
import yaml

from gslb.common.configload import ConfigError
from gslb.common.metrics_merge import sample_total
from gslb.config import load_config
from gslb.supervisor import Supervisor, serve_supervised
from tests.gslb_helpers import (
    FRANKFURT_NET,
    REGIONS,
    SEOUL_NET,
    TOKEN,
    FakeRegionLB,
    free_dns_port,
    free_port,
    gslb_config,
)

pytestmark = pytest.mark.timeout(90)


def ecs(name: str, net: str = FRANKFURT_NET) -> dns.message.Message:
    import dns.edns
    return dns.message.make_query(name, "A", use_edns=0,
                                  options=[dns.edns.ECSOption.from_text(net)])


def answer(reply: dns.message.Message) -> tuple[list[str], int]:
    rrs = [rr for rrset in reply.answer for rr in rrset]
    return sorted(str(rr) for rr in rrs), reply.answer[0].ttl if reply.answer else -1


@contextlib.asynccontextmanager
async def lbs_up() -> AsyncIterator[dict[str, FakeRegionLB]]:
    lbs = {name: FakeRegionLB(addr) for name, (_loc, addr) in REGIONS.items()}
    for lb in lbs.values():
        await lb.start()
    try:
        yield lbs
    finally:
        for lb in lbs.values():
            await lb.stop()


def write(tmp: Path, lbs: dict[str, FakeRegionLB] | None, *, dns_port: int | None = None,
          admin_port: int | None = None, **changes: Any) -> Path:
    dns_port = dns_port or free_dns_port()
    doc = gslb_config(tmp, dns_port=dns_port, admin_port=admin_port or free_port(), lbs=lbs)
    doc["dns"]["listen"] = [f"127.0.0.1:{dns_port}"]
    doc["dns"]["rrl"] = {"enabled": False}      # the load here comes from one /24
    doc["workers"] = 2
    for key, value in changes.items():
        doc[key] = value
    path = tmp / "gslb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.asynccontextmanager
async def supervised(path: Path) -> AsyncIterator[Supervisor]:
    """serve_supervised on `path` (admin API included) until the block ends."""
    stop = asyncio.Event()
    started: asyncio.Future[Supervisor] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_supervised(load_config(path), shutdown_trigger=stop, log_level="warning",
                                                ready=started.set_result))
    try:
        done, _ = await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        yield started.result()
    finally:
        stop.set()
        await task


def port_of(sup: Supervisor) -> int:
    return sup.ports[0][1]


def admin_url(sup: Supervisor, path: str) -> str:
    listen = sup.server.config.admin.listen
    return f"http://{listen.host}:{listen.port}{path}"


async def per_worker_queries(sup: Supervisor) -> dict[int, int]:
    await sup.refresh_metrics()
    return {w: int(sample_total(wire, "gslb_dns_queries")) for w, wire in sup.by_worker.items()}


def ask(sock: socket.socket, q: dns.message.Message, port: int, timeout: float = 2.0) -> dns.message.Message:
    reply, _ = dns.query.udp_with_fallback(q, "127.0.0.1", port=port, timeout=timeout, udp_sock=sock)
    return reply


async def pinned_sockets(sup: Supervisor) -> dict[int, socket.socket]:
    """worker id -> a UDP socket whose queries reach that worker."""
    port = port_of(sup)
    found: dict[int, socket.socket] = {}
    for _ in range(64):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        before = await per_worker_queries(sup)
        await asyncio.to_thread(ask, sock, dns.message.make_query("ns1.example.test", "A"), port)
        after = await per_worker_queries(sup)
        moved = [w for w in after if after[w] > before.get(w, 0)]
        if len(moved) == 1 and moved[0] not in found:
            found[moved[0]] = sock
        else:
            sock.close()
        if len(found) == 2:
            return found
    raise AssertionError(f"queries reached only workers {sorted(found)}")


async def test_two_workers_both_answer_and_metrics_add_up(tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        assert len({w.pid for w in sup.workers}) == 2
        port = port_of(sup)
        for i in range(200):                    # a new socket (source port) per query
            reply = await dns.asyncquery.udp(dns.message.make_query("ns1.example.test", "A", id=i),
                                             "127.0.0.1", port=port, timeout=2)
            assert answer(reply)[0] == ["127.0.0.1"]
        tcp = await dns.asyncquery.tcp(dns.message.make_query("ns1.example.test", "A"), "127.0.0.1", port=port,
                                       timeout=2)
        assert answer(tcp)[0] == ["127.0.0.1"]
        counts = await per_worker_queries(sup)
        assert sum(counts.values()) == 201
        assert len(counts) == 2
        assert all(n > 0 for n in counts.values()), counts     # both answered
        async with aiohttp.ClientSession() as s:
            async with s.get(admin_url(sup, "/metrics")) as r:
                text = await r.text()
            async with s.get(admin_url(sup, "/api/workers")) as r:
                rows = (await r.json())["workers"]
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("gslb_dns_queries_total{"))
        assert total == 201
        assert "gslb_workers 2.0" in text
        assert text.count("gslb_region_up{") == len(REGIONS)         # the supervisor's, not summed
        assert [r["id"] for r in rows] == [0, 1]
        assert all(r["ready"] and r["rss_bytes"] > 0 for r in rows)
        assert sum(r["queries"] for r in rows) == 201
        # a scrape changes nothing: the same numbers twice
        again = await per_worker_queries(sup)
        assert again == counts


async def test_a_health_change_and_a_drain_reach_both_workers(tmp_path: Path) -> None:
    async with lbs_up() as lbs, supervised(write(tmp_path, lbs)) as sup:
        port = port_of(sup)
        pinned = await pinned_sockets(sup)
        q = ecs("www.example.test")
        eu = REGIONS["eu-central"][1]

        async def until_both(expect: Any, limit: float) -> float:
            t0 = time.monotonic()
            passed: set[int] = set()
            while passed != {0, 1}:
                for w, sock in pinned.items():
                    if w not in passed and expect(answer(await asyncio.to_thread(ask, sock, q, port))[0]):
                        passed.add(w)
                assert time.monotonic() - t0 < limit, f"workers {sorted({0, 1} - passed)} never showed it"
            return time.monotonic() - t0

        await until_both(lambda a: a == [eu], 10)
        sent = asyncio.Event()
        broadcast = sup.regions

        def watch(states: Any) -> None:
            broadcast(states)
            if not states["eu-central"].up:
                sent.set()

        sup.regions = watch                     # type: ignore[method-assign]
        lbs["eu-central"].status = 500          # the probes (supervisor only) see it fail
        await asyncio.wait_for(sent.wait(), 10)
        took = await until_both(lambda a: a != [eu], 5)
        assert took < 0.25, took                # applied within 100 ms (a few ms here); room for a slow CI

        lbs["eu-central"].status = 200
        await until_both(lambda a: a == [eu], 10)
        async with aiohttp.ClientSession() as s, \
                s.post(admin_url(sup, "/api/regions/eu-central/drain"),
                       headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            t0 = time.monotonic()
        took = await until_both(lambda a: a != [eu], 5)
        assert time.monotonic() - t0 < 0.5, took
        for sock in pinned.values():
            sock.close()


async def test_sigkill_of_a_worker_under_load_fails_only_what_was_on_it_and_it_comes_back(tmp_path: Path) -> None:
    concurrency = 8
    async with supervised(write(tmp_path, None)) as sup:
        port = port_of(sup)
        victim = sup.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        ok = failed = 0
        stop = asyncio.Event()
        warmed = asyncio.Event()

        async def client() -> None:
            nonlocal ok, failed
            while not stop.is_set():
                try:
                    reply = await dns.asyncquery.udp(dns.message.make_query("ns1.example.test", "A"), "127.0.0.1",
                                                     port=port, timeout=1.0)
                    ok += answer(reply)[0] == ["127.0.0.1"]
                    if ok >= 200:
                        warmed.set()
                except dns.exception.Timeout:
                    failed += 1

        clients = [asyncio.create_task(client()) for _ in range(concurrency)]
        await asyncio.wait_for(warmed.wait(), 30)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = ok
        deadline = time.monotonic() + 30
        while not (victim.ready and victim.pid != old_pid and ok > killed_at + 300):
            assert time.monotonic() < deadline, "the worker did not come back"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
        assert failed <= concurrency, f"{failed} queries failed, at most {concurrency} were in flight"
        assert victim.restarts == 1
        counts = await per_worker_queries(sup)
        assert counts.get(0, 0) > 0, counts     # the restarted worker answers again
        before = counts[0]
        for _ in range(100):
            await dns.asyncquery.udp(dns.message.make_query("ns1.example.test", "A"), "127.0.0.1", port=port,
                                     timeout=2)
        assert (await per_worker_queries(sup))[0] > before


async def test_reload_with_two_workers_keeps_answering_and_reaches_both(tmp_path: Path) -> None:
    path = write(tmp_path, None)
    async with supervised(path) as sup:
        port = port_of(sup)
        pinned = await pinned_sockets(sup)
        q = ecs("www.example.test")
        assert all(answer(ask(s, q, port))[1] == 30 for s in pinned.values())
        failed = 0
        done = asyncio.Event()

        async def client() -> None:
            nonlocal failed
            while not done.is_set():
                try:
                    await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1.0)
                except dns.exception.Timeout:
                    failed += 1

        clients = [asyncio.create_task(client()) for _ in range(4)]
        doc = yaml.safe_load(path.read_text())
        doc["services"]["www.example.test"]["ttl"] = 42
        path.write_text(yaml.safe_dump(doc))
        await sup.server.reload()
        # the reload returns once both workers answered "reloaded"
        assert all(answer(ask(s, q, port))[1] == 42 for s in pinned.values())
        assert all(w.generation == 2 for w in sup.workers)
        assert sup.pool.generation == 2
        done.set()
        await asyncio.gather(*clients)
        assert failed == 0
        # a bad config is refused by the supervisor; the workers keep serving the last good one
        path.write_text("dns: [")
        with pytest.raises(ConfigError, match=r"gslb\.yaml"):
            await sup.server.reload()
        assert all(answer(ask(s, q, port))[1] == 42 for s in pinned.values())
        for sock in pinned.values():
            sock.close()


async def test_serve_sighup_reloads_every_worker_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    dns_port, admin_port = free_dns_port(), free_port()
    path = write(tmp_path, None, dns_port=dns_port, admin_port=admin_port)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gslb", "serve", "-c", str(path),
                                                "--log-level", "warning")
    q = ecs("www.example.test")
    try:
        deadline = time.monotonic() + 30
        pids: list[int] = []
        async with aiohttp.ClientSession() as s:
            while len(pids) < 2:
                assert time.monotonic() < deadline, "two workers never became ready"
                try:
                    async with s.get(f"http://127.0.0.1:{admin_port}/api/workers") as r:
                        rows = (await r.json())["workers"]
                        pids = [row["pid"] for row in rows if row["ready"]]
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        reply = await dns.asyncquery.udp(q, "127.0.0.1", port=dns_port, timeout=2)
        assert answer(reply)[1] == 30
        doc = yaml.safe_load(path.read_text())
        doc["services"]["www.example.test"]["ttl"] = 43
        path.write_text(yaml.safe_dump(doc))
        proc.send_signal(signal.SIGHUP)
        streak = 0
        deadline = time.monotonic() + 15
        while streak < 40:                      # 40 in a row from new source ports: both workers reloaded
            assert time.monotonic() < deadline, "the reload did not reach every worker"
            reply = await dns.asyncquery.udp(q, "127.0.0.1", port=dns_port, timeout=2)
            streak = streak + 1 if answer(reply)[1] == 43 else 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_latency_pushed_to_the_supervisor_steers_both_workers_and_a_new_one_gets_the_table(
        tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        port = port_of(sup)
        pinned = await pinned_sockets(sup)
        q = ecs("fast.example.test", SEOUL_NET)
        assert all(answer(ask(s, q, port))[0] == ["127.0.3.1"] for s in pinned.values())   # geo fallback
        batch = {"measurements": [{"network": SEOUL_NET, "region": "ap-northeast", "rtt_ms": 180.0},
                                  {"network": SEOUL_NET, "region": "us-east", "rtt_ms": 20.0}]}
        async with aiohttp.ClientSession() as s, \
                s.post(admin_url(sup, "/api/latency"), json=batch, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200, await r.text()
        for sock in pinned.values():
            deadline = time.monotonic() + 1
            while answer(await asyncio.to_thread(ask, sock, q, port))[0] != ["127.0.1.1"]:
                assert time.monotonic() < deadline, "a worker never took the measurements in"
        # a restarted worker starts from the supervisor's table
        victim = sup.workers[1]
        old = victim.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (victim.ready and victim.pid != old):
            assert time.monotonic() < deadline, "the worker did not come back"
            await asyncio.sleep(0.05)
        for _ in range(40):                     # new source ports: both workers, the new one included
            reply = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            assert answer(reply)[0] == ["127.0.1.1"]
        assert (await per_worker_queries(sup))[1] > 0
        for sock in pinned.values():
            sock.close()


async def test_a_worker_that_cannot_bind_fails_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:      # no SO_REUSEPORT: workers cannot join
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        path = write(tmp_path, None, dns_port=port)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gslb", "serve", "-c", str(path),
                                                    "--log-level", "error", stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert b"cannot start: gslb: worker" in err
    assert b"exited before it was ready" in err


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    admin_port = free_port()
    path = write(tmp_path, None, admin_port=admin_port)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gslb", "serve", "-c", str(path),
                                                "--log-level", "warning")
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as s:
            while len(pids) < 2:
                assert time.monotonic() < deadline, "two workers never became ready"
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"http://127.0.0.1:{admin_port}/api/workers") as r:
                        pids = {row["pid"] for row in (await r.json())["workers"] if row["ready"]}
                await asyncio.sleep(0.05)
        proc.kill()
        await proc.wait()
        deadline = time.monotonic() + 15
        while pids:                             # each sees its channel close and exits
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


async def test_the_status_page_shows_the_workers_answers_and_clients(tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        port = port_of(sup)
        for i in range(64):                     # 64 client networks, new source ports: misses on both workers
            reply = await dns.asyncquery.udp(ecs("www.example.test", f"100.64.{i}.0/24"), "127.0.0.1",
                                             port=port, timeout=2)
            assert answer(reply)[0] == [REGIONS["eu-central"][1]]      # Paris -> eu-central
        counts = await per_worker_queries(sup)
        assert all(n > 0 for n in counts.values())
        async with aiohttp.ClientSession() as s:
            async with s.get(admin_url(sup, "/api/status/overview")) as r:
                overview = await r.json()
            async with s.get(admin_url(sup, "/api/status/clients")) as r:
                clients = (await r.json())["clients"]
        assert overview["answers"] == {"eu-central": 64}
        # each worker counts what it saw up to the last answer it kept (1 in 16)
        assert overview["sample"]["seen"] == sum(n // 16 * 16 for n in counts.values())
        assert overview["sample"]["kept"] == sum(n // 16 for n in counts.values())     # 1 in 16 per worker
        assert len(clients) == overview["sample"]["kept"]


async def test_api_status_lists_the_listeners_the_workers_serve(tmp_path: Path) -> None:
    dns_port = free_dns_port()
    path = write(tmp_path, None, dns_port=dns_port)
    doc = yaml.safe_load(path.read_text())
    doc["dns"]["listen"] = [f"127.0.0.1:{dns_port}", f"[::1]:{dns_port}"]
    path.write_text(yaml.safe_dump(doc))
    both = [{"address": ["127.0.0.1", dns_port], "reply_source": "bound", "workers": 2},
            {"address": ["::1", dns_port, 0, 0], "reply_source": "bound", "workers": 2}]
    async with supervised(path) as sup, aiohttp.ClientSession() as s:
        # one TCP connection, held open by whichever worker accepted it (a reply read: it was accepted)
        reader, writer = await asyncio.open_connection("127.0.0.1", dns_port)
        wire = dns.message.make_query("ns1.example.test", "A").to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(await reader.readexactly(2), "big")
        assert answer(dns.message.from_wire(await reader.readexactly(size)))[0] == ["127.0.0.1"]
        async with s.get(admin_url(sup, "/api/status")) as r:
            status = await r.json()
        assert status["dns"]["udp"] == both
        assert status["dns"]["tcp"]["open"] == 1
        assert status["dns"]["tcp"]["idle_timeout"] == 2.0
        writer.close()
        await writer.wait_closed()
        # a worker being restarted is not counted; once ready again, it is
        victim = sup.workers[1]
        old = victim.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while not (victim.ready and victim.pid != old):
            assert time.monotonic() < deadline, "the worker did not come back"
            rows = sup.udp_listeners()
            if rows and (not seen or seen[-1] != rows[0]["workers"]):
                seen.append(rows[0]["workers"])
            await asyncio.sleep(0.01)
        assert 1 in seen, seen
        async with s.get(admin_url(sup, "/api/status")) as r:
            assert (await r.json())["dns"]["udp"] == both
