"""The tables' lifecycle in the server (gslb/tables.py, GslbServer): background compile, swap while
queries flow, reuse across reloads, the worker process, failures (no sockets: the responder is called)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import pytest
import yaml

from gslb.app import GslbServer
from gslb.config import load_config
from gslb.geoip import MaxMindLocator, database_source
from gslb.latency_table import LatencyTable
from gslb.steering import Steering
from gslb.tables import TableCompiler
from tests.geo_fixtures import write_city_db
from tests.unit.test_steering_table import _layout

RESOLVER = ipaddress.IPv4Address("127.0.0.1")


def _config(tmp: Path, database: Path, services: dict[str, Any]) -> Path:
    path = tmp / "gslb.yaml"
    path.write_text(yaml.safe_dump({
        "dns": {"listen": ["127.0.0.1:5353"]},
        "geoip": {"database": str(database)},
        "regions": {
            "us-east": {"location": [39.04, -77.49], "addresses": ["127.0.1.1"]},
            "eu-central": {"location": [50.11, 8.68], "addresses": ["127.0.2.1"]},
            "ap-northeast": {"location": [37.57, 126.98], "addresses": ["127.0.3.1"]},
        },
        "zones": {"example.test": {
            "ttl": 3600, "soa": {"mname": "ns1.example.test", "rname": "hostmaster.example.test", "serial": 1},
            "ns": ["ns1.example.test"], "records": {"ns1": {"A": ["127.0.0.1"]}}}},
        "services": services,
    }))
    return path


SERVICES = {"www.example.test": {"policy": "geo"}, "map.example.test": {
    "policy": "geo_map", "map": {"continent": {"EU": ["eu-central", "us-east"]}, "default": ["us-east"]}}}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_db(tmp_path_factory.mktemp("geo") / "dense.mmdb", _layout())


def _ecs_query(name: str, n: int) -> bytes:
    """The n-th client /24: the database's 512 networks first, then 10.0.0.0/8 (unlocated), so
    a long run keeps asking for networks the response cache has not seen."""
    address = 0xC6120000 + (n << 8) if n < 512 else 0x0A000000 + ((n % 65536) << 8)
    query = dns.message.make_query(name, "A", use_edns=0, options=[
        dns.edns.ECSOption(str(ipaddress.IPv4Address(address)), 24)])
    query.id = n & 0xFFFF
    return query.to_wire()


async def test_tables_compile_in_the_background_and_swap_in_while_queries_flow(tmp_path: Path,
                                                                               database: Path) -> None:
    config = load_config(_config(tmp_path, database, SERVICES))
    server = GslbServer(config)
    reference = GslbServer(config)          # never compiles (no loop task started for it)
    assert server.steering.compiled_services == ()      # nothing yet: the reference path answers
    answered = {"before": 0, "after": 0}
    stop = asyncio.Event()
    swapped: list[int] = []                 # compiled_answers when the pump first saw the tables

    async def pump() -> None:
        n = 0
        while not stop.is_set():
            for name in SERVICES:
                data = _ecs_query(name, n)
                got = server.responder.respond(data, RESOLVER, 1.0)
                assert got == reference.responder.respond_uncached(data, RESOLVER, 1.0)
                answered["after" if server.steering.compiled_services else "before"] += 1
            if server.steering.compiled_services and not swapped:
                swapped.append(server.steering.compiled_answers)
            elif swapped and server.steering.compiled_answers > swapped[0]:
                stop.set()                  # the compiled path answers the networks that follow
            n += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(pump())
    server.tables.start()
    await server.tables.ready()
    async with asyncio.timeout(10):
        await task
    assert set(server.steering.compiled_services) == set(SERVICES)
    assert answered["before"] > 0           # served before the swap
    assert answered["after"] > 0
    assert server.steering.compiled_answers > swapped[0]
    assert server.tables.compiles == 1
    assert "1 compiles" in repr(server.tables)
    await server.tables.stop()


async def test_a_reload_reuses_unchanged_tables_and_compiles_the_new_ones(tmp_path: Path, database: Path) -> None:
    path = _config(tmp_path, database, SERVICES)
    server = GslbServer(load_config(path))
    await server.tables.ready()
    assert set(server.steering.compiled_services) == set(SERVICES)
    changed = dict(SERVICES, **{"map.example.test": {"policy": "geo_map", "map": {"default": ["eu-central"]}},
                                "new.example.test": {"policy": "geo", "regions": ["us-east", "eu-central"]}})
    _config(tmp_path, database, changed)
    await server.reload()
    assert server.steering.compiled_services == ("www.example.test",)     # at once: its table is kept
    await server.tables.ready()
    assert set(server.steering.compiled_services) == set(changed)
    assert len(server.tables.tables) == 3           # the old map's table is gone
    await server.tables.stop()


async def test_the_worker_process_compiles_the_same_tables(tmp_path: Path, database: Path) -> None:
    config = load_config(_config(tmp_path, database, SERVICES))
    locator = MaxMindLocator(database)
    in_thread, in_process = TableCompiler(), TableCompiler(process_above=0)
    steerings = [Steering(config.region_models(), config.services, locator, LatencyTable()) for _ in range(2)]
    for compiler, steering in zip((in_thread, in_process), steerings, strict=True):
        compiler.install(steering, locator)
        await compiler.ready()
        assert set(steering.compiled_services) == set(SERVICES)
    assert "CPU" in in_process.worker_report
    assert in_thread.worker_report == ""
    for spec, table in in_thread.tables.items():
        other = in_process.tables[spec]
        assert (table.chains, table.orders, table.source) == (other.chains, other.orders, other.source)
        assert table.chain_ids4 == other.chain_ids4
        assert table.chain_ids6 == other.chain_ids6
        assert list(table.records4.starts) == list(other.records4.starts)


class _Locator:
    def __init__(self, path: Path, source: tuple[str, int, int]) -> None:
        self.path, self.source = path, source


@pytest.mark.parametrize("process_above", [0, 1 << 30])
async def test_a_failed_compile_is_counted_and_the_reference_path_keeps_answering(
        tmp_path: Path, database: Path, process_above: int) -> None:
    config = load_config(_config(tmp_path, database, SERVICES))
    steering = Steering(config.region_models(), config.services, MaxMindLocator(database), LatencyTable())
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"\0" * 5000)
    compiler = TableCompiler(process_above=process_above)
    compiler.install(steering, _Locator(bad, database_source(bad)))
    await compiler.ready()
    assert (compiler.failures, steering.compiled_services) == (1, ())
    assert "cannot" in compiler.last_error.lower() or "error" in compiler.last_error.lower()
    client = ipaddress.IPv4Address("198.18.1.0")
    assert steering.answer("www.example.test", client, 24, 0.0) == steering.decide("www.example.test", client, 24, 0.0)


async def test_tables_of_a_file_changed_since_the_locator_opened_it_are_not_used(tmp_path: Path,
                                                                                database: Path) -> None:
    config = load_config(_config(tmp_path, database, SERVICES))
    steering = Steering(config.region_models(), config.services, MaxMindLocator(database), LatencyTable())
    path, size, mtime = database_source(database)
    compiler = TableCompiler()
    compiler.install(steering, _Locator(database, (path, size, mtime - 1)))     # opened before a change
    await compiler.ready()
    assert (compiler.failures, steering.compiled_services) == (1, ())
    assert "changed on disk" in compiler.last_error


async def test_a_locator_without_a_source_gets_no_tables(tmp_path: Path, database: Path) -> None:
    from gslb.geoip import FakeLocator

    config = load_config(_config(tmp_path, database, SERVICES))
    steering = Steering(config.region_models(), config.services, FakeLocator(), LatencyTable())
    compiler = TableCompiler()
    compiler.install(steering, FakeLocator())
    await compiler.ready()
    assert (compiler.compiles, compiler.failures, steering.compiled_services) == (0, 0, ())


async def test_ready_within_gives_up_waiting_but_not_compiling(tmp_path: Path, database: Path) -> None:
    config = load_config(_config(tmp_path, database, SERVICES))
    steering = Steering(config.region_models(), config.services, MaxMindLocator(database), LatencyTable())
    compiler = TableCompiler()
    compiler.install(steering, MaxMindLocator(database))
    assert not await compiler.ready_within(0.0)         # too short: the compile goes on
    assert await compiler.ready_within(60.0)
    assert set(steering.compiled_services) == set(SERVICES)
