"""`regional-lb` command line  [edge].

    regional-lb serve -c edge.yaml [--log-level info] [--access-log]
    regional-lb check-config edge.yaml      # prints OK, or FILE: key.path: reason and exits 1
    regional-lb --version
    regional-lb ctl pools | drain POOL BACKEND | ready ... | maint ... | reload     # regional_lb/ctl.py

`serve` runs until SIGINT/SIGTERM (in-flight requests finish) and reloads the config on
SIGHUP (a bad new config is logged and the running one kept). uvloop is used when installed.
With `workers: auto | N` (N > 1) `serve` is a supervisor with N worker processes
(regional_lb/supervisor.py): SIGTERM drains every worker, SIGHUP reloads every worker, a worker
that dies is started again; with `workers: 1` (the default) one process does it all.

Garbage collection, as in `gslb serve`: a proxied request leaves almost no cyclic garbage
(its objects die by reference count), yet with the default thresholds the collector ran a
young pass every ~50 requests and a full pass over the ~47,000 objects of the started process
every ~7,000, about a fifth of the CPU under load (bench/README.md, http section). `serve` from
the command line collects the young generation every 100,000 allocations instead of 700, and
freezes what startup built (`gc.freeze()` once the listeners are up) so that full passes no
longer walk it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from gslb import __version__
from gslb.common.configload import ConfigError, by_line
from gslb.common.sdnotify import Notifier
from regional_lb.config import load_config

log = logging.getLogger("regional_lb")


FIRST_ROUND_LIMIT = 30.0     # seconds READY=1 waits for the first health check of every backend
GC_THRESHOLDS = (100_000, 50, 1000)     # the command line's collector thresholds (see the docstring)


async def serve(path: str, *, shutdown_trigger: asyncio.Event | None = None,
                started: asyncio.Event | None = None, notifier: Notifier | None = None,
                freeze_heap: bool = False, log_level: str = "info", access_log: bool = False) -> int:
    """Run until SIGINT/SIGTERM or `shutdown_trigger`. `notifier` (systemd Type=notify): READY=1 once
    the listeners are bound and every backend has had its first health check, RELOADING=1 then READY=1
    around a SIGHUP reload, STOPPING=1 on the way out, WATCHDOG=1 when systemd asks for it.
    `freeze_heap`: gc.freeze() once started (the command line; see the module docstring).
    `workers` above 1 in the config: a Supervisor and its worker processes (regional_lb/supervisor.py)
    instead of one LoadBalancer; the signals mean the same."""
    from regional_lb.app import LoadBalancer
    from regional_lb.supervisor import Supervisor

    config = load_config(path)
    lb: LoadBalancer | Supervisor
    if config.workers > 1:
        lb = Supervisor(config, config_path=path, log_level=log_level, access_log=access_log)
    else:
        lb = LoadBalancer(config, config_path=path, server=config.server)
    stop = shutdown_trigger or asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()
    notify = notifier if notifier is not None else Notifier(None)

    async def reload_and_notify() -> None:
        notify.reloading()
        await lb.reload()
        notify.ready()

    def on_hup() -> None:
        task = loop.create_task(reload_and_notify())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    installed = []
    for sig, cb in ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set), (signal.SIGHUP, on_hup)):
        try:
            loop.add_signal_handler(sig, cb)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    await lb.start()
    if freeze_heap:
        gc.freeze()                     # startup's objects: out of every later collection
    announce = loop.create_task(_announce(lb, notify)) if notify.enabled else None
    try:
        if started is not None:
            started.set()
        await stop.wait()
        log.info("shutting down: letting in-flight requests finish")
    finally:
        notify.stopping()
        if announce is not None:
            announce.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await lb.stop()
    return 0


async def _announce(lb: Any, notify: Notifier) -> None:
    """READY=1 after every pool's first health round (or FIRST_ROUND_LIMIT), then the watchdog pings."""
    checkers = [pr.checker for pr in lb.rt.pools.values() if pr.checker is not None]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.first_round() for c in checkers)), FIRST_ROUND_LIMIT)
        notify.ready()
    except TimeoutError:
        notify.ready("serving (some backends not checked yet)")
    while notify.watchdog_interval is not None:
        notify.watchdog()
        await asyncio.sleep(notify.watchdog_interval)


def _check(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        for error in sorted(exc.errors, key=by_line):   # every problem, "FILE:LINE: key.path: reason"
            print(error.where(), file=sys.stdout)
        count = len(exc.errors)
        print(f"{path}: {count} error{'s' if count > 1 else ''}", file=sys.stdout)
        return 1
    print("OK")
    return 0


def _run(coro: object) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regional-lb", description="Sticky L7 regional load balancer")
    parser.add_argument("--version", action="version", version=f"regional-lb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the load balancer")
    p_serve.add_argument("-c", "--config", required=True, help="YAML config file")
    p_serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p_serve.add_argument("--access-log", action="store_true", help="log every request (regional_lb.access)")
    p_check = sub.add_parser("check-config", help="validate a config file")
    p_check.add_argument("file")
    from regional_lb import ctl
    ctl.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "ctl":
        return ctl.run(args)
    if args.command == "check-config":
        return _check(args.file)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("regional_lb.access").setLevel(logging.INFO if args.access_log else logging.WARNING)
    gc.set_threshold(*GC_THRESHOLDS)
    from regional_lb.supervisor import WorkerStartError
    try:
        return _run(serve(args.config, notifier=Notifier.from_environ(), freeze_heap=True,
                          log_level=args.log_level, access_log=args.access_log))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except WorkerStartError as exc:      # a worker could not start (its own log line says why)
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
