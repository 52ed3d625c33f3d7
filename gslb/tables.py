"""Compiling the steering's decision tables in the background, and swapping them in  [edge].

    compiler = TableCompiler()
    compiler.install(steering, locator)     # at every (re)install: known tables now, a compile for the rest
    await compiler.ready()                  # wait for the current compile (the server does at start:
    await compiler.ready_within(60)         #   its first misses then use the tables; reloads do not wait)
    await compiler.stop()                   # the worker process is killed if one runs

A table (gslb/steering/table.py) is compiled from the GeoIP database file for each distinct
TableSpec the configuration's services need. Compiling the bundled database takes a few seconds
and a few hundred MB for a moment, so it runs in a worker process (`python -m gslb.tables`:
specs in on stdin, tables out on stdout, both pickled) for a database of PROCESS_ABOVE bytes or
more, in a thread for smaller ones (test fixtures). Queries keep flowing meanwhile: a service
without its table takes the reference path (GeoIP lookup, ranking, widening: the same answers,
slower). When the compile ends the tables are installed in the steering that is current *then*
(`Steering.install_tables`: one dict assignment), so a reload during a compile loses nothing.

Tables are kept per spec while the configuration uses it: a reload that keeps a service's regions
and map reuses its table at once. A table is used only with the database it was compiled from:
the locator's `source` (path, size, mtime when it was opened) must equal the table's; a file
replaced under the same path is compiled, found different from what the locator reads, and
dropped with a warning (reload with a new path, or restart, to use it). Locators without a
`source` (FakeLocator) get no tables. A failed compile is logged and counted; the reference path
keeps answering.

With workers (gslb/supervisor.py, gslb/worker.py) two subclasses split that job:

    SharedTables(directory, publish)   # the supervisor's: compiles every table its services need
                                       #   once, into one file (table.py write_tables), checks it
                                       #   (map_tables), publish(TableFile) -> a feed "tables" message
    MappedTables()                     # a worker's: compiles nothing; use_file(path, source) maps the
                                       #   file read-only and installs its tables (now and at reloads)
    TablesCollector(tables)            # their metrics: compiles (supervisor); maps, refusals and
                                       #   answers from a table (worker)

so the compile runs once per start or reload that needs a new table, not once per worker, and the
tables' pages are shared by all workers (see gslb/supervisor.py for the flow).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gslb.geoip import DatabaseFile
from gslb.steering.core import Steering
from gslb.steering.table import GeoTable, TableFileError, TableSpec, compile_database, map_tables, write_tables

log = logging.getLogger("gslb.tables")

PROCESS_ABOVE = 4 * 1024 * 1024     # database bytes from which the compile runs in a worker process
_ROOT = str(Path(__file__).resolve().parent.parent)     # the directory holding the gslb package
_T0 = time.perf_counter()           # (the worker reports its time since start-up)


class TableCompiler:
    def __init__(self, *, process_above: int = PROCESS_ABOVE) -> None:
        self.process_above = process_above
        self._tables: dict[TableSpec, GeoTable] = {}
        self._steering: Steering | None = None
        self._database: str | None = None
        self._source: tuple[str, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._started = False       # `start` or `ready` was called: installs compile what they miss
        self.compiles = 0           # compiles that ended with tables installed
        self.failures = 0
        self.last_seconds = 0.0     # wall time of the last compile
        self.last_error = ""
        self.worker_report = ""     # the worker's last line: its CPU time

    def __repr__(self) -> str:
        state = "compiling" if self._task is not None and not self._task.done() else "idle"
        return f"<TableCompiler {state}, {len(self._tables)} tables, {self.compiles} compiles, {self.failures} failed>"

    @property
    def tables(self) -> dict[TableSpec, GeoTable]:
        return dict(self._tables)

    def install(self, steering: Steering, locator: object) -> None:
        """Give `steering` the tables already compiled for it; once `start` (or `ready`) was called,
        compile the missing ones in the background (before that, a server being built or a worker
        waiting for its turn to compile starts nothing)."""
        self._steering = steering
        if not isinstance(locator, DatabaseFile):       # (a FakeLocator has no file to compile)
            self._database = self._source = None
            return
        source, path = locator.source, locator.path
        if source != self._source:
            self._tables = {}
        self._database, self._source = str(path), source
        specs = steering.table_specs()
        self._tables = {spec: t for spec, t in self._tables.items() if spec in specs}
        steering.install_tables(self._tables)
        if self._started and any(spec not in self._tables for spec in specs):
            self._schedule()

    def start(self) -> None:
        """Compile what the installed steering misses, and from now on at every `install` (reloads)."""
        self._started = True
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    async def ready(self) -> None:
        """Wait until the current configuration's tables are compiled (or their compile failed)."""
        self._started = True
        if self._task is None or self._task.done():
            self._schedule()
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def ready_within(self, seconds: float) -> bool:
        """`ready`, waiting at most `seconds` (the compile goes on after that); True if ready."""
        try:
            async with asyncio.timeout(seconds):
                await self.ready()
        except TimeoutError:
            log.warning("steering tables not compiled after %.0f s: serving from the reference path meanwhile",
                        seconds)
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            steering, database, source = self._steering, self._database, self._source
            if steering is None or database is None:
                return
            missing = [spec for spec in steering.table_specs() if spec not in self._tables]
            if not missing:
                return
            started = time.monotonic()
            try:
                tables = await self._compile(database, missing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                log.error("compiling the steering tables from %s failed (answering from the reference "
                          "path): %s", database, self.last_error)
                return
            self.last_seconds = time.monotonic() - started
            if (self._database, self._source) != (database, source):
                continue                    # the database changed meanwhile: compile for the new one
            if any(table.source != source for table in tables.values()):
                self.failures += 1
                self.last_error = f"{database} changed on disk since it was opened"
                log.warning("steering tables not used: %s (reload with a new path, or restart)", self.last_error)
                return
            self._tables.update(tables)
            del tables
            _trim()                         # the worker's reply (tens of MB) was read and dropped
            current = self._steering
            if current is not None:
                used = current.install_tables(self._tables)
                self.compiles += 1
                log.info("steering tables compiled from %s in %.1f s (%s): %d services answer misses from them",
                         database, self.last_seconds, self.worker_report or "in a thread", used)

    async def _compile(self, database: str, specs: list[TableSpec]) -> dict[TableSpec, GeoTable]:
        if self._source is not None and self._source[1] < self.process_above:
            return await asyncio.to_thread(compile_database, database, specs)
        tables: Any = pickle.loads(await self._spawn([database], specs))
        if not isinstance(tables, dict):
            raise RuntimeError("the compile worker returned no tables")
        return tables

    async def _spawn(self, args: list[str], specs: list[TableSpec]) -> bytes:
        """`python -m gslb.tables ARGS` with the pickled specs on stdin: its stdout (RuntimeError: its
        last line of stderr if it failed); its last line of stderr (CPU time) kept in worker_report."""
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gslb.tables", *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            out, err = await proc.communicate(pickle.dumps(specs))
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._proc = None
        lines = err.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0:
            raise RuntimeError(lines[-1] if lines else f"exit status {proc.returncode}")
        if lines:
            self.worker_report = lines[-1]
        return out


@dataclass(frozen=True, slots=True)
class TableFile:
    """A table file the supervisor wrote: where, from which database, for which specs."""

    path: str
    source: tuple[str, int, int]
    specs: frozenset[TableSpec]


def compile_to_file(database: str, specs: Sequence[TableSpec], out: str) -> None:
    """compile_database + write_tables (what SharedTables runs in a thread or a process)."""
    write_tables(out, compile_database(database, specs))


class SharedTables(TableCompiler):
    """The supervisor's compiler (workers > 1): every table its configuration needs, compiled once
    (a process, or a thread for a small database, as TableCompiler) into one file in `directory`
    (gslb/steering/table.py write_tables), checked by mapping it once (map_tables), then handed
    to `publish` (the supervisor sends it to every worker). A reload whose services need a table
    the current file lacks (or a new database) compiles a new file with all of them; one that
    needs no new table compiles nothing. The current file and the one before it are kept (a
    worker may still be reading the older message); older ones are deleted (a worker that still
    maps one keeps its pages until it lets go). The supervisor's own steering gets no tables:
    it answers no query (its explain takes the reference path)."""

    def __init__(self, directory: str, publish: Callable[[TableFile], None], *,
                 process_above: int = PROCESS_ABOVE) -> None:
        super().__init__(process_above=process_above)
        self.directory = directory
        self.publish = publish
        self.current: TableFile | None = None
        self._files: list[str] = []
        self._serial = 0

    def __repr__(self) -> str:
        state = "compiling" if self._task is not None and not self._task.done() else "idle"
        return f"<SharedTables {state}, file {self.current.path if self.current else None}, " \
               f"{self.compiles} compiles, {self.failures} failed>"

    def install(self, steering: Steering, locator: object) -> None:
        self._steering = steering
        if not isinstance(locator, DatabaseFile):
            self._database = self._source = None
            return
        self._database, self._source = str(locator.path), locator.source
        if self._started and self._missing():
            self._schedule()

    def _missing(self) -> list[TableSpec]:
        """The specs the current configuration needs that the current file lacks (all of them for
        another database)."""
        if self._steering is None:
            return []
        specs = self._steering.table_specs()
        current = self.current
        if current is None or current.source != self._source:
            return specs
        return [spec for spec in specs if spec not in current.specs]

    async def _run(self) -> None:
        while True:
            steering, database, source = self._steering, self._database, self._source
            if steering is None or database is None or not self._missing():
                return
            specs = steering.table_specs()
            self._serial += 1
            out = os.path.join(self.directory, f"tables-{self._serial}.bin")
            started = time.monotonic()
            try:
                if source is not None and source[1] < self.process_above:
                    await asyncio.to_thread(compile_to_file, database, specs, out)
                else:
                    await self._spawn([database, out], specs)
                written = await asyncio.to_thread(map_tables, out)      # checked as a worker will
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                log.error("compiling the steering tables from %s failed (the workers answer from the "
                          "reference path): %s", database, self.last_error)
                with contextlib.suppress(OSError):
                    os.unlink(out)
                return
            self.last_seconds = time.monotonic() - started
            got = {table.source for table in written.values()}
            del written                         # the supervisor keeps no mapping
            if (self._database, self._source) != (database, source):
                os.unlink(out)
                continue                        # the database changed meanwhile: compile for the new one
            if got != {source}:
                self.failures += 1
                self.last_error = f"{database} changed on disk since it was opened"
                log.warning("steering tables not used: %s (reload with a new path, or restart)", self.last_error)
                os.unlink(out)
                return
            assert source is not None
            self.current = TableFile(out, source, frozenset(specs))
            self.compiles += 1
            self._files.append(out)
            while len(self._files) > 2:
                with contextlib.suppress(OSError):
                    os.unlink(self._files.pop(0))
            # (not "steering tables compiled": bench/dns_workers.py counts that phrase, once per answering process)
            log.info("compiled the steering tables once from %s in %.1f s (%s) into %s: %d tables for the workers",
                     database, self.last_seconds, self.worker_report or "in a thread", out, len(specs))
            self.publish(self.current)


class MappedTables(TableCompiler):
    """A worker's tables (workers > 1): it compiles nothing; it maps the file its supervisor names
    (`use_file`, from the feed's "tables" message) and installs its tables in the current steering,
    now and at every reload. Tables are used only with the database the worker's own locator
    opened (the file's source must equal it: a file for another one stays mapped, unused, until a
    reload opens that database). A file that cannot be mapped (TableFileError) is logged and
    counted, and the worker keeps what it had: the tables of the previous file, or the reference
    path. At a reload the steering left behind gives up its tables, so the mapping
    of a replaced file goes with the last steering that used it."""

    def __init__(self) -> None:
        super().__init__()
        self.file: str | None = None    # the file whose tables are installed
        self.maps = 0                   # files mapped and installed
        self.refused = 0                # files refused (corrupt, another database)
        self._mapped_source: tuple[str, int, int] | None = None
        self._answered_before = 0       # compiled answers of the steerings replaced by reloads

    def __repr__(self) -> str:
        return f"<MappedTables {self.file}: {len(self._tables)} tables, {self.maps} mapped, {self.refused} refused>"

    @property
    def compiled_answers(self) -> int:
        """Answers from a compiled table since the worker started (across reloads)."""
        steering = self._steering
        return self._answered_before + (steering.compiled_answers if steering is not None else 0)

    def install(self, steering: Steering, locator: object) -> None:
        old = self._steering
        if old is not None and old is not steering:
            self._answered_before += old.compiled_answers
            old.install_tables({})      # let go of the mapping (the old steering may live on a while)
        self._steering = steering
        self._source = locator.source if isinstance(locator, DatabaseFile) else None
        self._install_current()

    def _install_current(self) -> int:
        if self._steering is None:
            return 0
        usable = self._source is not None and self._mapped_source == self._source
        return self._steering.install_tables(self._tables if usable else {})

    def start(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def use_file(self, path: str, source: tuple[str, int, int]) -> bool:
        """Map `path` (off the event loop: the CRC reads every page) and install its tables; False
        (logged, counted) if it is refused."""
        if path == self.file and source == self._mapped_source:
            return True                 # (the same message again: a hello sent twice)
        try:
            tables = await asyncio.to_thread(map_tables, path)
            got = {table.source for table in tables.values()}
            if got != {source}:
                raise TableFileError(f"{path}: compiled from {sorted(got)}, the supervisor said {source}")
        except TableFileError as exc:
            self.refused += 1
            self.last_error = str(exc)
            log.error("steering tables refused, answering from %s meanwhile: %s",
                      self.file if self.file else "the reference path", exc)
            return False
        self._tables, self._mapped_source, self.file = tables, source, path
        self.maps += 1
        used = self._install_current()
        if source != self._source:
            # (a reload to another database whose "tables" came before its "config": used at that reload)
            log.warning("steering tables compiled by the supervisor, mapped from %s, are for %s as it was then; "
                        "this worker reads %s: not used until it opens that database", path, source[0],
                        self._source[0] if self._source else "no database file")
        else:
            log.info("steering tables compiled by the supervisor, mapped from %s: %d services answer misses "
                     "from them", path, used)
        return True


class TablesCollector(Collector):
    """Metrics of a SharedTables (the supervisor) or a MappedTables (a worker)."""

    def __init__(self, tables: TableCompiler) -> None:
        self.tables = tables

    def collect(self) -> Iterator[Metric]:
        t = self.tables
        if isinstance(t, SharedTables):
            compiles = CounterMetricFamily("gslb_steering_table_compiles",
                                           "steering table files compiled by the supervisor")
            compiles.add_metric([], t.compiles)
            yield compiles
            failed = CounterMetricFamily("gslb_steering_table_compile_failures",
                                         "steering table compiles that failed or were not used")
            failed.add_metric([], t.failures)
            yield failed
        elif isinstance(t, MappedTables):
            answers = CounterMetricFamily("gslb_steering_compiled_answers",
                                          "answers taken from a compiled steering table (no GeoIP lookup)")
            answers.add_metric([], t.compiled_answers)
            yield answers
            maps = CounterMetricFamily("gslb_steering_table_maps", "steering table files mapped by the workers")
            maps.add_metric([], t.maps)
            yield maps
            refused = CounterMetricFamily("gslb_steering_table_refused",
                                          "steering table files a worker refused (corrupt, another database)")
            refused.add_metric([], t.refused)
            yield refused


def _trim() -> None:
    """Give memory freed by the unpickling back to the system (glibc keeps large freed blocks in its heap)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _worker() -> int:
    """`python -m gslb.tables DATABASE [OUT]`: pickled specs on stdin; pickled {spec: GeoTable} on
    stdout, or with OUT the tables written there (write_tables) and nothing on stdout."""
    specs = pickle.loads(sys.stdin.buffer.read())
    try:
        tables = compile_database(sys.argv[1], specs)
        if len(sys.argv) > 2:
            write_tables(sys.argv[2], tables)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if len(sys.argv) <= 2:
        sys.stdout.buffer.write(pickle.dumps(tables, protocol=pickle.HIGHEST_PROTOCOL))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"compiled {len(tables)} tables: {time.process_time():.2f} s CPU, {time.perf_counter() - _T0:.2f} s "
          f"since the worker started, peak RSS {usage.ru_maxrss / 1024:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
