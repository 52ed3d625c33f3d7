"""Worker processes under a supervisor: start, feed, ask, restart with back-off, stop  [edge].

Shared by both programs (the GSLB's gslb/supervisor.py; regional_lb's supervisor has the same
shape). One `WorkerPool` keeps `count` worker slots, each a `python -m <module> --fd FD --id N
[extra args]` process with one end of a socketpair (gslb/common/channel.py):

    pool = WorkerPool(2, module="gslb.worker", hello=lambda w: [...], name="gslb")
    await pool.start()                 # every worker started and "ready" (WorkerStartError if one
                                       # exits first, or is not ready in READY_TIMEOUT)
    pool.broadcast({"t": "regions", ...})         # to every worker with a channel, starting ones too
    replies = await pool.ask_all({"t": "metrics"}, reply="metrics_reply")
    await pool.stop()                  # SIGTERM to every worker (they drain), SIGKILL after STOP_TIMEOUT

The worker protocol: the pool sends a starting worker `hello(worker)` (its config and the
current state, nothing awaited in between so a broadcast sent meanwhile is queued after it),
then {"t": "go"}; the worker binds its listeners and answers {"t": "ready", "pid": ...} (kept
as the slot's `ready_info` while that run lasts: a worker may say there what it bound). A
request sent by `ask_all` carries an "id" that the reply repeats. When `generation` moved on
while a worker was starting (a reload), the pool sends it `hello(worker)` again at its "ready".

Worker death: a worker that exits without being asked is started again after a back-off
(RESTART_BACKOFF: 0.1 s doubling to 5 s; back to 0.1 s once it has run STABLE_AFTER s); the
others keep serving meanwhile. A worker that closes its channel is sent SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from gslb.common.channel import Channel

log = logging.getLogger("gslb.common.workers")

RESTART_BACKOFF = (0.1, 5.0)        # first delay, longest delay (doubling between)
STABLE_AFTER = 10.0                 # a worker up this long resets the back-off
READY_TIMEOUT = 30.0                # a worker that is not ready by then is killed and restarted
STOP_TIMEOUT = 30.0                 # SIGTERM -> SIGKILL for a worker still draining
REPLY_TIMEOUT = 5.0                 # answers to ask_all


class WorkerStartError(RuntimeError):
    """a worker process could not start (bind failed, crashed): the supervisor does not start either"""


class WorkerProcess:
    """One worker slot: its current process, channel and what it has answered."""

    def __init__(self, worker_id: int) -> None:
        self.id = worker_id
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.ready = False
        self.restarts = 0
        self.started_at = 0.0
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ready_event = asyncio.Event()          # set at the first "ready" (start() waits for it)
        self.run_ready = asyncio.Event()            # this run's "ready"
        self.generation = 0                         # the generation this run was given
        self.ready_info: dict[str, Any] = {}        # this run's "ready" message ({} until then): what the
                                                    # worker says of itself (pid, its listeners)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __repr__(self) -> str:
        state = "ready" if self.ready else "starting" if self.proc is not None else "down"
        return f"<Worker {self.id} pid={self.pid} {state}, {self.restarts} restarts>"


class WorkerPool:
    def __init__(self, count: int, *, module: str, hello: Callable[[WorkerProcess], Sequence[dict[str, Any]]],
                 name: str = "workers", args: Sequence[str] = (),
                 on_message: Callable[[WorkerProcess, dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if count < 1:
            raise ValueError("workers must be at least 1")
        self.workers = [WorkerProcess(i) for i in range(count)]
        self.module = module
        self.name = name
        self.args = list(args)
        self.hello = hello
        self.on_message = on_message
        self.clock = clock
        self.generation = 1
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ids = itertools.count(1)
        self._first_exit = asyncio.Event()

    def __repr__(self) -> str:
        ready = sum(1 for w in self.workers if w.ready)
        return f"<WorkerPool {self.module} [{ready}/{len(self.workers)} ready, generation {self.generation}]>"

    @property
    def ready_count(self) -> int:
        return sum(1 for w in self.workers if w.ready)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            for w in self.workers:
                self._tasks.append(asyncio.get_running_loop().create_task(self._keep_running(w)))
            waits = [asyncio.ensure_future(self._all_ready()), asyncio.ensure_future(self._first_exit.wait())]
            _done, pending = await asyncio.wait(waits, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if not all(w.ready_event.is_set() for w in self.workers):
                dead = [w.id for w in self.workers if w.restarts or (w.proc and w.proc.returncode is not None)]
                why = f"worker {dead[0]} exited before it was ready (its log says why)" if dead else \
                    f"the workers were not ready after {READY_TIMEOUT:.0f} s"
                raise WorkerStartError(f"{self.name}: {why}")
        except BaseException:
            await self.stop()
            raise

    async def _all_ready(self) -> None:
        for w in self.workers:
            await w.ready_event.wait()

    async def stop(self) -> None:
        """SIGTERM every worker (each finishes what is in flight), wait, then SIGKILL what is left."""
        self._stopping = True
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                try:
                    await asyncio.wait_for(w.proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("%s: worker %d still draining after %.0f s: killed", self.name, w.id, STOP_TIMEOUT)
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
                    await w.proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- messages ----------------------------------------------------------------------------------
    def broadcast(self, message: dict[str, Any]) -> None:
        for w in self.workers:
            if w.channel is not None:           # a starting worker too: it applies it after its hello
                w.channel.send(message)

    async def ask_all(self, message: dict[str, Any], *, reply: str) -> list[dict[str, Any]]:
        """Send `message` (with a fresh id) to every ready worker and gather the `reply` answers
        that come within REPLY_TIMEOUT (a worker that dies meanwhile is left out)."""
        waits = []
        for w in self.workers:
            if w.channel is None or not w.ready:
                continue
            rid = next(self._ids)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            w.replies[rid] = fut
            w.channel.send({**message, "id": rid})
            waits.append((w, rid, fut))
        out = []
        for w, rid, fut in waits:
            try:
                answer = await asyncio.wait_for(fut, REPLY_TIMEOUT)
                out.append({**answer, "worker": w.id})
            except (TimeoutError, asyncio.CancelledError):
                log.warning("%s: worker %d did not answer a %r in %.0f s", self.name, w.id, reply, REPLY_TIMEOUT)
            finally:
                w.replies.pop(rid, None)
        return out

    # -- one slot ----------------------------------------------------------------------------------
    async def _keep_running(self, w: WorkerProcess) -> None:
        delay = RESTART_BACKOFF[0]
        while not self._stopping:
            w.started_at = self.clock()
            try:
                code = await self._run_once(w)
            except OSError as exc:
                log.error("%s: worker %d could not be started: %s", self.name, w.id, exc)
                code = None
            if self._stopping:
                return
            if not w.ready_event.is_set():
                self._first_exit.set()          # start() gives up: a worker that cannot start once won't later
            if self.clock() - w.started_at >= STABLE_AFTER:
                delay = RESTART_BACKOFF[0]
            log.error("%s: worker %d (pid %s) exited with %s; starting it again in %.1f s",
                      self.name, w.id, w.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF[1])
            w.restarts += 1

    async def _run_once(self, w: WorkerProcess) -> int | None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            args = [sys.executable, "-m", self.module, "--fd", str(child.fileno()), "--id", str(w.id), *self.args]
            w.proc = await asyncio.create_subprocess_exec(*args, pass_fds=(child.fileno(),))
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        w.run_ready = asyncio.Event()
        w.generation = self.generation
        # from here to "go" nothing awaits but the channel's opening: a state change broadcast
        # once the channel is set is queued after the hello, so the worker misses none
        channel = w.channel = await Channel.open(parent)
        for message in self.hello(w):
            channel.send(message)
        channel.send({"t": "go"})
        reader = asyncio.get_running_loop().create_task(self._read(w, channel))
        try:
            exited = asyncio.ensure_future(w.proc.wait())
            ready = asyncio.ensure_future(w.run_ready.wait())
            await asyncio.wait((exited, ready), timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not exited.done() and not w.run_ready.is_set():
                log.error("%s: worker %d not ready after %.0f s: killed", self.name, w.id, READY_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
            return await exited
        finally:
            w.ready = False
            w.ready_info = {}
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            channel.close()
            w.channel = None
            for fut in w.replies.values():
                fut.cancel()
            w.replies.clear()

    async def _read(self, w: WorkerProcess, channel: Channel) -> None:
        while (message := await channel.recv()) is not None:
            kind = message.get("t")
            if kind == "ready":
                if w.generation != self.generation:      # a reload happened while it started
                    w.generation = self.generation
                    for hello in self.hello(w):
                        channel.send(hello)
                w.ready_info = message
                w.ready = True
                w.run_ready.set()
                w.ready_event.set()
                log.info("%s: worker %d ready (pid %s)", self.name, w.id, message.get("pid"))
            elif isinstance(rid := message.get("id"), int) and rid in w.replies:
                fut = w.replies[rid]
                if not fut.done():
                    fut.set_result(message)
            elif self.on_message is not None:
                self.on_message(w, message)
        if w.proc is not None and w.proc.returncode is None and not self._stopping:
            log.error("%s: worker %d closed its channel: stopping it", self.name, w.id)
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
