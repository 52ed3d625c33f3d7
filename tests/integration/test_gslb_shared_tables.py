"""`workers: 2`: the supervisor compiles the steering tables once; the workers map its file.

Real processes and sockets (the helpers of test_gslb_workers.py). Which worker answered and how:
/api/workers' per-worker rows (`compiled_answers`: answers taken from a mapped table, `table_maps`:
files mapped) and /proc/PID/maps (which table file a worker maps). The small test database is
compiled in a thread of the supervisor (gslb/tables.py PROCESS_ABOVE), so a compile takes
milliseconds here; the bundled database's figures are in bench/README.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.message
import pytest
import yaml

from gslb import feed
from gslb.supervisor import Supervisor
from tests.integration.test_gslb_workers import answer, ask, ecs, pinned_sockets, port_of, supervised, write

pytestmark = pytest.mark.timeout(90)


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 20.0) -> None:
    """Poll `check` (state in other processes: no event to await) until it holds."""
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)


async def rows(sup: Supervisor) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in await sup.workers_report()}


def mapped_tables(pid: int | None) -> set[str]:
    """The table files a process maps (read-only, shared)."""
    assert pid is not None
    out = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and os.path.basename(fields[5]).startswith("tables-"):
                assert fields[1].startswith("r-")         # read-only, not writable
                out.add(fields[5])
    return out


async def maps_reached(sup: Supervisor, n: int) -> bool:
    report = await rows(sup)
    return len(report) == 2 and all(r["ready"] and r["table_maps"] == n for r in report.values())


def miss(name: str, n: int, net: str = "3.120.{}.0/24") -> dns.message.Message:
    """A query for a client network no worker has answered yet (a cache miss)."""
    return ecs(name, net.format(n))


async def test_the_supervisor_compiles_once_and_both_workers_answer_misses_from_the_mapped_file(
        tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        await until(lambda: maps_reached(sup, 1), "both workers mapped the table file")
        assert sup.tables.compiles == 1
        current = sup.tables.current
        assert current is not None
        assert Path(current.path).parent == Path(sup._dir)
        for w in sup.workers:
            assert mapped_tables(w.pid) == {current.path}
        port = port_of(sup)
        pinned = await pinned_sockets(sup)
        before = await rows(sup)
        for worker, sock in pinned.items():
            for n in range(10):
                # Frankfurt's clients: eu-central, from the table (3.120.0.0/24 is a record of the fixture)
                got = answer(ask(sock, miss("www.example.test", n, "3.120.0.{}/32"), port))
                assert got == (["127.0.2.1"], 30), (worker, got)
            for n in range(1, 20):       # networks outside every record: unlocated, the default order
                assert answer(ask(sock, miss("www.example.test", n, "198.51.{}.0/24"), port))[1] == 30
        after = await rows(sup)
        for worker in pinned:
            assert after[worker]["compiled_answers"] - before[worker]["compiled_answers"] >= 20, (before, after)
        assert sup.tables.compiles == 1         # answering compiled nothing more
        for sock in pinned.values():
            sock.close()


async def test_a_reload_that_changes_the_regions_sends_a_new_file_and_both_workers_swap_to_it(
        tmp_path: Path) -> None:
    path = write(tmp_path, None)
    async with supervised(path) as sup:
        await until(lambda: maps_reached(sup, 1), "both workers mapped the first table file")
        first = sup.tables.current
        assert first is not None
        port = port_of(sup)
        pinned = await pinned_sockets(sup)
        assert all(answer(ask(s, miss("www.example.test", 0), port))[0] == ["127.0.2.1"] for s in pinned.values())
        # a reload that changes no table's inputs compiles nothing
        doc = yaml.safe_load(path.read_text())
        doc["services"]["www.example.test"]["ttl"] = 31
        path.write_text(yaml.safe_dump(doc))
        await sup.server.reload()
        assert sup.tables.compiles == 1
        assert (await rows(sup))[0]["table_maps"] == 1
        # without eu-central, Frankfurt's nearest region is us-east: a new table, compiled once, for both
        doc["services"]["www.example.test"]["regions"] = ["us-east", "ap-northeast"]
        path.write_text(yaml.safe_dump(doc))
        await sup.server.reload()
        await until(lambda: maps_reached(sup, 2), "both workers mapped the second table file")
        assert sup.tables.compiles == 2
        second = sup.tables.current
        assert second is not None
        assert second.path != first.path
        before = await rows(sup)
        for worker, sock in pinned.items():
            assert answer(ask(sock, miss("www.example.test", 1, "3.120.0.{}/32"), port)) == (["127.0.1.1"], 31)
            assert mapped_tables(sup.workers[worker].pid) == {second.path}, "the old file is still mapped"
        after = await rows(sup)
        assert all(after[w]["compiled_answers"] > before[w]["compiled_answers"] for w in pinned), (before, after)
        for sock in pinned.values():
            sock.close()


async def test_a_restarted_worker_maps_the_current_file_without_a_compile(tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        await until(lambda: maps_reached(sup, 1), "both workers mapped the table file")
        victim = sup.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def back() -> bool:
            return victim.ready and victim.pid != old_pid and await maps_reached(sup, 1)

        await until(back, "the worker came back with the table mapped")
        assert victim.restarts == 1
        assert sup.tables.compiles == 1
        current = sup.tables.current
        assert current is not None
        assert mapped_tables(victim.pid) == {current.path}
        pinned = await pinned_sockets(sup)
        before = (await rows(sup))[0]["compiled_answers"]
        assert answer(ask(pinned[0], miss("www.example.test", 0), port_of(sup)))[0] == ["127.0.2.1"]
        assert (await rows(sup))[0]["compiled_answers"] == before + 1
        for sock in pinned.values():
            sock.close()


async def test_a_corrupt_table_file_is_refused_and_the_workers_keep_answering_from_the_tables_they_had(
        tmp_path: Path) -> None:
    async with supervised(write(tmp_path, None)) as sup:
        await until(lambda: maps_reached(sup, 1), "both workers mapped the table file")
        current = sup.tables.current
        assert current is not None
        data = bytearray(await asyncio.to_thread(Path(current.path).read_bytes))
        data[len(data) // 2] ^= 0xFF
        bad = tmp_path / "tables-corrupt.bin"
        bad.write_bytes(bytes(data))
        sup.pool.broadcast(feed.tables_message(str(bad), current.source))
        truncated = tmp_path / "tables-short.bin"
        truncated.write_bytes(bytes(data[:100]))
        sup.pool.broadcast(feed.tables_message(str(truncated), current.source))

        async def refused() -> bool:
            await sup.refresh_metrics()
            return len(sup.by_worker) == 2 and all(
                feed_total(wire, "gslb_steering_table_refused") == 2 for wire in sup.by_worker.values())

        await until(refused, "both workers refused both files")
        report = await rows(sup)
        assert all(r["ready"] and r["table_maps"] == 1 for r in report.values())
        pinned = await pinned_sockets(sup)
        before = await rows(sup)
        for sock in pinned.values():
            assert answer(ask(sock, miss("www.example.test", 0), port_of(sup)))[0] == ["127.0.2.1"]
        after = await rows(sup)
        assert all(after[w]["compiled_answers"] == before[w]["compiled_answers"] + 1 for w in pinned)
        assert all(mapped_tables(w.pid) == {current.path} for w in sup.workers)
        for sock in pinned.values():
            sock.close()


def feed_total(wire: Any, family: str) -> float:
    from gslb.common.metrics_merge import sample_total
    return sample_total(wire, family)
