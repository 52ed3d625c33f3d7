"""A worker process: the listeners, with state told by the supervisor  [edge].

    python -m regional_lb.worker --fd 5 --id 0 [--log-level info]     # started by regional_lb/supervisor.py

The supervisor hands the worker one end of a socketpair (`--fd`) and sends, in order, the
config generation to serve ("config": the YAML text it validated, the listener ports it
resolved), the current pool state (feed.snapshot: health, drains, discovered backends) and
"go". The worker then builds its LoadBalancer(role="worker"), binds every listener with
SO_REUSEPORT (the kernel spreads new connections over the workers), answers "ready", and
applies every later message as it arrives (regional_lb/feed.py):

    health / admin      applied to its pools at once (the supervisor runs the checks and the admin API)
    discovered          the pool's membership, as LoadBalancer.set_discovered
    config              a reload (LoadBalancer.reload: pools and policies that did not change are
                        kept; listeners stay bound, so a reload leaves no moment without one)
    metrics             answered with its metric families (gslb/common/metrics_merge.py)
    stop                as SIGTERM

SIGTERM (or "stop", or the supervisor's end of the channel closing): stop accepting, let the
requests in flight finish (LoadBalancer.stop), exit 0. SIGINT and SIGHUP are the supervisor's
business: a worker ignores them (Ctrl-C reaches the whole process group; the supervisor then
stops the workers itself).

Each worker counts its own requests, runs its own passive outlier detection and load (EWMA,
in-flight) per backend, and pushes its own client RTTs when `latency_push` is configured.
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
from pathlib import Path
from typing import Any

from gslb.common.channel import Channel
from gslb.common.configload import ConfigError
from gslb.common.metrics_merge import families_to_wire
from regional_lb import feed
from regional_lb.app import LoadBalancer
from regional_lb.cli import GC_THRESHOLDS, _run
from regional_lb.config import Config, parse_config

log = logging.getLogger("regional_lb.worker")


def config_of(message: dict[str, Any]) -> Config:
    """The Config of a "config" message, its listener ports as the supervisor resolved them."""
    file = str(message["file"])
    config = parse_config(str(message["text"]), file=file, base_dir=Path(file).parent)
    ports = [(str(h), int(p)) for h, p in message.get("listen") or ()]
    if len(ports) == len(config.listeners):
        config = dataclasses.replace(config, listeners=tuple(
            dataclasses.replace(lst, host=host, port=port) for lst, (host, port) in zip(config.listeners, ports,
                                                                                        strict=True)))
    return config


async def apply(lb: LoadBalancer, message: dict[str, Any]) -> None:
    """A health, admin or discovered message (see the module docstring)."""
    kind = message["t"]
    if kind == "discovered":
        pool, key, backends = feed.discovered_of(message)
        await lb.set_discovered(pool, key, backends)
    elif kind in ("health", "admin"):
        feed.apply(lb.rt, message, lb.clock())
    else:
        log.warning("worker: unexpected %r message ignored", kind)


def pools_view(lb: LoadBalancer) -> dict[str, dict[str, dict[str, Any]]]:
    """What only this worker knows of each backend: requests in flight, sticky-cookie sessions seen
    per route, passive ejection (the supervisor adds these up in its pool report)."""
    now = lb.clock()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, pr in lb.rt.pools.items():
        rows = out[name] = {}
        for row in pr.status_rows(now):
            bid = str(row["id"])
            sessions = {rr.route.name: rr.sessions.count(bid, now) for rr in lb.rt.routes.values()
                        if rr.pool is pr and rr.sessions is not None}
            rows[bid] = {"inflight": int(row.get("inflight", 0)), "sessions": sessions,
                         "ejected": bool(row.get("ejected"))}
    return out


async def run(fd: int, worker_id: int) -> int:
    channel = await Channel.open(socket.socket(fileno=fd))
    first = await channel.recv()
    if first is None or first.get("t") != "config":
        log.error("worker %d: no config from the supervisor", worker_id)
        return 1
    config = config_of(first)
    lb = LoadBalancer(config, server=config.server, role="worker", reuse_port=True, worker_id=worker_id)
    while (message := await channel.recv()) is not None and message["t"] != "go":
        await apply(lb, message)
    if message is None:
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    for sig in (signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)
    await lb.start()
    gc.freeze()
    channel.send({"t": "ready", "worker": worker_id, "pid": os.getpid(),
                  "listen": [list(a) for a in lb.listen_addresses]})
    reader = loop.create_task(_serve_feed(lb, channel, stop))
    try:
        await stop.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await lb.stop()
        channel.close()
    return 0


async def _serve_feed(lb: LoadBalancer, channel: Channel, stop: asyncio.Event) -> None:
    while (message := await channel.recv()) is not None:
        kind = message["t"]
        try:
            if kind == "config":
                ok, text = await lb.reload(config_of(message))
                channel.send({"t": "reloaded", "id": message.get("id"), "generation": message.get("generation"),
                              "ok": ok, "message": text})
            elif kind == "metrics":
                channel.send({"t": "metrics_reply", "id": message.get("id"), "worker": lb.worker_id,
                              "families": families_to_wire(lb.metrics.registry)})
            elif kind == "pools":
                channel.send({"t": "pools_reply", "id": message.get("id"), "worker": lb.worker_id,
                              "pools": pools_view(lb)})
            elif kind == "stop":
                break
            else:
                await apply(lb, message)
        except (ConfigError, feed.FeedError, KeyError, TypeError, ValueError) as exc:
            log.error("worker %s: bad %r message from the supervisor: %s", lb.worker_id, kind, exc)
            if kind == "config":
                channel.send({"t": "reloaded", "id": message.get("id"), "generation": message.get("generation"),
                              "ok": False, "message": str(exc)})
    stop.set()                          # the supervisor is gone (EOF) or said stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regional-lb worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {args.id}]: %(message)s")
    logging.getLogger("regional_lb.access").setLevel(logging.INFO if args.access_log else logging.WARNING)
    gc.set_threshold(*GC_THRESHOLDS)
    return _run(run(args.fd, args.id))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
