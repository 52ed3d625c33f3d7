"""gslb/tables.py SharedTables (the supervisor's one compile) and MappedTables (a worker's mapping).

In one process, with a small database (compiled in a thread): what is compiled when, which files
are kept, what a worker installs, refuses and lets go of. The same parts with real processes:
tests/integration/test_gslb_shared_tables.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gslb.common.configload import Section
from gslb.geoip import MaxMindLocator
from gslb.latency_table import LatencyTable
from gslb.steering import Steering
from gslb.steering.config import load_services
from gslb.tables import MappedTables, SharedTables, TableFile
from tests.unit.test_steering_table import REGIONS
from tests.unit.test_steering_table_file import database  # noqa: F401  (the module-scoped fixture)

ONE = """
services:
  geo.test: {policy: geo, regions: [us-east, eu-central, ap-northeast]}
  same.test: {policy: geo, regions: [us-east, eu-central, ap-northeast], ttl: 7}
"""
TWO = ONE + """
  other.test: {policy: geo, regions: [us-east, ap-northeast]}
"""
THREE = TWO + """
  third.test: {policy: geo, regions: [eu-central, ap-northeast]}
"""


def steering_of(text: str, locator: MaxMindLocator) -> Steering:
    services = load_services(Section.from_yaml_text(text, file="t.yaml").section("services"), REGIONS)
    return Steering(REGIONS, services, locator, LatencyTable())


async def test_the_supervisor_compiles_once_per_new_table_and_keeps_two_files(
        database: Path, tmp_path: Path) -> None:  # noqa: F811
    published: list[TableFile] = []
    shared = SharedTables(str(tmp_path), published.append)
    locator = MaxMindLocator(database)
    own = steering_of(ONE, locator)
    shared.install(own, locator)
    assert shared.compiles == 0         # nothing before start
    shared.start()
    await shared.ready()
    assert shared.compiles == 1
    assert len(published) == 1
    assert published[0].specs == frozenset(own.table_specs())
    assert own.compiled_services == ()        # the supervisor's own steering gets no tables
    shared.install(steering_of(ONE.replace("ttl: 7", "ttl: 8"), locator), locator)     # no new table
    await shared.ready()
    assert shared.compiles == 1
    for text in (TWO, THREE):
        shared.install(steering_of(text, locator), locator)
        await shared.ready()
    assert shared.compiles == 3
    assert [f.path for f in published] == [str(tmp_path / f"tables-{n}.bin") for n in (1, 2, 3)]
    assert sorted(os.listdir(tmp_path)) == ["tables-2.bin", "tables-3.bin"]
    assert len(published[-1].specs) == 3        # every table the configuration needs, in one file
    await shared.stop()


async def test_a_worker_maps_installs_refuses_and_lets_go(database: Path, tmp_path: Path) -> None:  # noqa: F811
    published: list[TableFile] = []
    shared = SharedTables(str(tmp_path), published.append)
    locator = MaxMindLocator(database)
    shared.install(steering_of(TWO, locator), locator)
    shared.start()
    await shared.ready()
    current = published[-1]

    mapped = MappedTables()
    first = steering_of(ONE, locator)
    mapped.install(first, locator)
    assert first.compiled_services == ()      # no file yet: the reference path
    assert await mapped.use_file(current.path, current.source)
    assert first.compiled_services == ("geo.test", "same.test")
    assert mapped.maps == 1

    # another database's file, a corrupt file, a missing file: refused, the tables it had stay
    assert not await mapped.use_file(current.path, (current.source[0], current.source[1] + 1, current.source[2]))
    bad = tmp_path / "tables-bad.bin"
    data = bytearray(await asyncio.to_thread(Path(current.path).read_bytes))
    data[-1] ^= 1
    await asyncio.to_thread(bad.write_bytes, bytes(data))
    assert not await mapped.use_file(str(bad), current.source)
    assert "CRC-32" in mapped.last_error
    assert not await mapped.use_file(str(tmp_path / "gone.bin"), current.source)
    assert mapped.refused == 3
    assert first.compiled_services == ("geo.test", "same.test")

    # a reload: the new steering gets the tables (all three services), the old one lets go of them
    assert first.fast_answer("geo.test", 4, 0xC6120005, None) is not None
    second = steering_of(TWO, locator)
    mapped.install(second, locator)
    assert second.compiled_services == ("geo.test", "same.test", "other.test")
    assert first.compiled_services == ()
    assert mapped.compiled_answers == 1         # counted across the reload
    assert second.fast_answer("other.test", 4, 0xC6120005, None) is not None
    assert mapped.compiled_answers == 2
    await shared.stop()


async def test_a_file_for_another_database_is_used_once_a_reload_opens_that_database(
        database: Path, tmp_path: Path) -> None:  # noqa: F811
    """The "tables" of a reload to a new database may reach a worker before its "config": the file
    stays mapped, unused while the worker reads the old database, and is installed at the reload."""
    published: list[TableFile] = []
    shared = SharedTables(str(tmp_path / "run"), published.append)
    await asyncio.to_thread(os.mkdir, tmp_path / "run")
    copy = tmp_path / "old.mmdb"
    await asyncio.to_thread(copy.write_bytes, await asyncio.to_thread(database.read_bytes))
    new_db, old_db = MaxMindLocator(database), MaxMindLocator(copy)
    shared.install(steering_of(ONE, new_db), new_db)
    shared.start()
    await shared.ready()
    current = published[-1]
    assert current.source == new_db.source != old_db.source

    mapped = MappedTables()
    before = steering_of(ONE, old_db)
    mapped.install(before, old_db)
    assert await mapped.use_file(current.path, current.source)
    assert before.compiled_services == ()           # not the database this worker reads
    after = steering_of(ONE, new_db)
    mapped.install(after, new_db)                   # the reload's "config" opens it
    assert after.compiled_services == ("geo.test", "same.test")
    back = steering_of(ONE, old_db)
    mapped.install(back, old_db)                    # and back: not used
    assert back.compiled_services == ()
    assert mapped.refused == 0
    await shared.stop()
