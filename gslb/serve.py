"""`gslb serve` in one process: a GslbServer, its admin API, signals and systemd notifications  [edge].

    await serve(config)                       # until SIGINT / SIGTERM; SIGHUP reloads the config file
    await serve(config, shutdown_trigger=ev)  # tests: until `ev` is set

`workers` above 1 runs gslb/supervisor.py's `serve_supervised` instead (gslb/cli.py picks). This
module is the wiring's top: it imports gslb.app (the server) and gslb.admin_api; neither imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gslb.admin_api import start_admin
from gslb.app import GslbServer
from gslb.common.configload import ConfigError
from gslb.common.sdnotify import Notifier
from gslb.config import GslbConfig
from gslb.geoip import GeoLocator

FIRST_ROUND_LIMIT = 30.0     # seconds READY=1 waits for the first probe of every region


async def serve(config: GslbConfig, *, shutdown_trigger: asyncio.Future[Any] | asyncio.Event | None = None,
                locator: GeoLocator | None = None, ready: Callable[[GslbServer], None] | None = None,
                notifier: Notifier | None = None) -> None:
    """Run the GSLB until `shutdown_trigger` fires (default: SIGINT / SIGTERM).

    `notifier` (systemd Type=notify, gslb/common/sdnotify.py): READY=1 once the listeners are bound
    and every region has had its first probe result (at most FIRST_ROUND_LIMIT seconds), RELOADING=1
    then READY=1 around a SIGHUP reload, STOPPING=1 on the way out, WATCHDOG=1 when systemd asks."""
    server = GslbServer(config, locator=locator)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if shutdown_trigger is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    reload_tasks: set[asyncio.Task[None]] = set()
    notify = notifier if notifier is not None else Notifier(None)

    async def reload_and_notify() -> None:
        notify.reloading()
        await _reload_quietly(server)
        notify.ready()

    def on_hup() -> None:
        task = loop.create_task(reload_and_notify())
        reload_tasks.add(task)
        task.add_done_callback(reload_tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    runner: web.AppRunner | None = None
    try:
        await server.start()
        runner = await start_admin(server)
        if ready is not None:
            ready(server)
        if notify.enabled:
            reload_tasks.add(loop.create_task(_announce(server, notify)))
        reload_tasks.add(loop.create_task(_snapshot_shares(server)))
        if shutdown_trigger is None:
            await stop.wait()
        elif isinstance(shutdown_trigger, asyncio.Event):
            await shutdown_trigger.wait()
        else:
            await shutdown_trigger
    finally:
        notify.stopping()
        for task in reload_tasks:
            task.cancel()
        loop.remove_signal_handler(signal.SIGHUP)
        if shutdown_trigger is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        await server.stop()


async def _announce(server: GslbServer, notify: Notifier) -> None:
    """READY=1 after the first probe round (or FIRST_ROUND_LIMIT), then the watchdog pings."""
    try:
        await asyncio.wait_for(server.checker.first_round(), FIRST_ROUND_LIMIT)
        notify.ready()
    except TimeoutError:
        notify.ready("serving (some regions not probed yet)")
    while notify.watchdog_interval is not None:
        notify.watchdog()
        await asyncio.sleep(notify.watchdog_interval)


async def _snapshot_shares(server: GslbServer) -> None:
    """Every `shares.interval` seconds, the per-region answer counters into the status page's ring."""
    while True:
        server.shares.snapshot(server.dns_stats.by_region, server.clock(), server.wall())
        await asyncio.sleep(server.shares.interval)


async def _reload_quietly(server: GslbServer) -> None:
    with contextlib.suppress(ConfigError):  # logged by reload
        await server.reload()
