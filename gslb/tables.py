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
from pathlib import Path
from typing import Any

from gslb.geoip import DatabaseFile
from gslb.steering.core import Steering
from gslb.steering.table import GeoTable, TableSpec, compile_database

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
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gslb.tables", database, stdin=asyncio.subprocess.PIPE,
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
        tables: Any = pickle.loads(out)
        if not isinstance(tables, dict):
            raise RuntimeError("the compile worker returned no tables")
        return tables


def _trim() -> None:
    """Give memory freed by the unpickling back to the system (glibc keeps large freed blocks in its heap)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _worker() -> int:
    """`python -m gslb.tables DATABASE`: pickled specs on stdin, pickled {spec: GeoTable} on stdout."""
    specs = pickle.loads(sys.stdin.buffer.read())
    try:
        tables = compile_database(sys.argv[1], specs)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(pickle.dumps(tables, protocol=pickle.HIGHEST_PROTOCOL))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"compiled {len(tables)} tables: {time.process_time():.2f} s CPU, {time.perf_counter() - _T0:.2f} s "
          f"since the worker started, peak RSS {usage.ru_maxrss / 1024:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
