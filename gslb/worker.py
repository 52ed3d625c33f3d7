"""A GSLB worker process: the DNS listeners, with state told by the supervisor  [edge].

    python -m gslb.worker --fd 5 --id 0 [--log-level info]     # by gslb/supervisor.py

The supervisor hands the worker one end of a socketpair (`--fd`) and sends, in order, the
config generation to serve ("config": the YAML text it validated, the DNS ports it resolved),
the current state (every region's state as answered, the latency table), the steering tables
if the supervisor has compiled them ("tables") and "go" (gslb/feed.py). The worker builds its
GslbServer (steering, responder, response cache, RRL) with a MappedTables (gslb/tables.py): it
compiles no table; it maps the file the supervisor compiled once for all workers, read-only (the
pages are shared by every worker through the page cache), and answers misses from the reference
path until the first file comes (a few seconds after the supervisor starts; at once for a
worker restarted later). It binds every dns.listen address, UDP and
TCP, with SO_REUSEPORT (the kernel spreads datagrams and connections over the workers by a
hash of the client's address and port), answers "ready" naming the UDP listeners it bound
(the supervisor's /api/status shows them), and applies every later message as
it arrives:

    regions     the region states as answered (up, drained, degraded): into its steering at once
    latency     measurements into its latency table (LatencyTable.merge_rows)
    tables      a table file to map and install (MappedTables.use_file, off the event loop: the
                CRC reads the file); a file refused (corrupt, another database) is logged and
                counted (gslb_steering_table_refused) and the worker keeps what it had
    config      a reload to that text (GslbServer.reload: listeners stay bound, so a reload
                leaves no moment without one; the last region states are applied again at once)
    metrics     answered with its metric families (gslb/common/metrics_merge.py)
    answers     answered with its client sample and answers per region (the status page)
    stop        as SIGTERM

The worker runs no probes, no peers, no admin API and writes no state file: its GslbServer
is built with admin.state_file off and only `start_dns` started. Its /metrics families include
gslb_steering_compiled_answers (answers from a table) and gslb_steering_table_maps (files mapped).
SIGTERM (or "stop", or the supervisor's end of the channel closing): stop answering, close
the listeners, exit 0. SIGINT and SIGHUP are the supervisor's: a worker ignores them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from gslb import feed
from gslb.app import GslbServer
from gslb.common.channel import Channel
from gslb.common.configload import ConfigError
from gslb.common.metrics_merge import families_to_wire
from gslb.config import GslbConfig, Listen, parse_config
from gslb.metrics import GslbCollector
from gslb.steering.base import RegionState
from gslb.tables import MappedTables, TablesCollector

log = logging.getLogger("gslb.worker")


def config_of(message: dict[str, Any]) -> GslbConfig:
    """The GslbConfig of a "config" message: its DNS ports as the supervisor resolved them, no state file."""
    config = parse_config(str(message["text"]), str(message["file"]))
    ports = [Listen(str(h), int(p)) for h, p in message.get("listen") or ()]
    if len(ports) == len(config.dns.listen):
        config = dataclasses.replace(config, dns=dataclasses.replace(config.dns, listen=tuple(ports)))
    return dataclasses.replace(config, admin=dataclasses.replace(config.admin, state_file=None))


class Worker:
    """A GslbServer that answers DNS and takes its state from the feed."""

    def __init__(self, config: GslbConfig, worker_id: int) -> None:
        self.id = worker_id
        self.tables = MappedTables()
        self.server = GslbServer(config, tables=self.tables)
        self.states: dict[str, RegionState] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GslbCollector(self.server))
        self.registry.register(TablesCollector(self.tables))

    def __repr__(self) -> str:
        return f"<gslb Worker {self.id} pid={os.getpid()} {len(self.states)} region states>"

    async def apply(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """One feed message; the reply to send, if it asks for one (FeedError, ConfigError if bad)."""
        kind = message["t"]
        server = self.server
        if kind == "regions":
            self.states = feed.regions_of(message)
            server.steering.update_region_states(self.states)
        elif kind == "latency":
            server.latency.merge_rows(message.get("rows"), server.clock(), server.regions)
        elif kind == "tables":
            await self.tables.use_file(*feed.tables_of(message))
        elif kind == "config":
            ok, text = True, "reloaded"
            try:
                await server.reload(str(message["file"]), text=str(message["text"]))
                if "states" in message:
                    self.states = feed.regions_of(message)
                server.steering.update_region_states(self.states)
            except ConfigError as exc:
                ok, text = False, str(exc)
            return {"t": "reloaded", "id": message.get("id"), "generation": message.get("generation"),
                    "ok": ok, "message": text}
        elif kind == "metrics":
            return {"t": "metrics_reply", "id": message.get("id"), "families": families_to_wire(self.registry)}
        elif kind == "answers":
            return {"t": "answers_reply", "id": message.get("id"), **feed.answers_payload(
                server.answer_sample, server.dns_stats.by_region, server.dns_stats.all_down)}
        else:
            log.warning("worker %d: unexpected %r message ignored", self.id, kind)
        return None


async def run(fd: int, worker_id: int) -> int:
    channel = await Channel.open(socket.socket(fileno=fd))
    first = await channel.recv()
    if first is None or first.get("t") != "config":
        log.error("worker %d: no config from the supervisor", worker_id)
        return 1
    worker = Worker(config_of(first), worker_id)
    worker.states = feed.regions_of(first)
    worker.server.steering.update_region_states(worker.states)
    while (message := await channel.recv()) is not None and message["t"] != "go":
        await worker.apply(message)
    if message is None:
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    for sig in (signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)
    server = worker.server
    await server.start_dns(reuse_port=True)
    gc.freeze()
    channel.send(feed.ready_message(worker_id, os.getpid(), server.udp_listener_rows()))
    reader = loop.create_task(_serve_feed(worker, channel, stop))
    try:
        await stop.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await server.stop()
        channel.close()
    return 0


async def _serve_feed(worker: Worker, channel: Channel, stop: asyncio.Event) -> None:
    while (message := await channel.recv()) is not None:
        if message["t"] == "stop":
            break
        try:
            reply = await worker.apply(message)
        except (ConfigError, feed.FeedError, KeyError, TypeError, ValueError) as exc:
            log.error("worker %d: bad %r message from the supervisor: %s", worker.id, message["t"], exc)
            continue
        if reply is not None:
            channel.send(reply)
    stop.set()                          # the supervisor is gone (EOF) or said stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gslb worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {args.id}]: %(message)s")
    gc.set_threshold(100_000, 50, 1000)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop
        runner = uvloop.run
    try:
        return int(runner(run(args.fd, args.id)))
    except (OSError, ConfigError) as exc:
        print(f"gslb worker {args.id}: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
