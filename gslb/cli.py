"""Command line: `gslb serve -c FILE`, `gslb check-config FILE`, `gslb explain -c FILE NAME --client IP`,
`gslb ctl COMMAND` (the running server's admin API: gslb/ctl.py).

`explain --probe` probes each region as a running server would if the result stayed the same:
repeatedly while the result argues against the current state, until rise/fall flips it (or a result
agrees), and prints every result; without --probe the state is the assumed one and says so."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gslb import __version__
from gslb.common.configload import ConfigError, by_line

if TYPE_CHECKING:       # (imported when a command needs it: `--version` and `--help` stay quick)
    from gslb.config import GslbConfig


def _version() -> str:
    from gslb.geoip import ATTRIBUTION
    return f"gslb {__version__}\nGeoIP data: {ATTRIBUTION}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gslb", description="Authoritative DNS GSLB: nearest healthy region.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve DNS and the admin API")
    serve.add_argument("-c", "--config", required=True, help="YAML config file")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate a config file; exit 1 with the reason if it is bad")
    check.add_argument("file")
    explain = sub.add_parser("explain", help="print which regions NAME would get for a client, and why")
    explain.add_argument("-c", "--config", required=True)
    explain.add_argument("name")
    explain.add_argument("--client", required=True, help="client IP address (as if sent in ECS)")
    explain.add_argument("--probe", action="store_true",
                         help="probe every region until rise/fall settles first (else: assumed state)")
    from gslb import ctl
    ctl.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "ctl":
        from gslb import ctl
        return ctl.run(args)
    from gslb.config import load_config
    from gslb.geoip import GeoIPError

    try:
        if args.command == "check-config":
            config = load_config(args.file)
            from gslb.geoip import MaxMindLocator
            MaxMindLocator(config.geoip_database)
            if config.admin.state_file is not None:      # a corrupt admin state file would stop `serve`
                from gslb.peers import admin_state
                admin_state.load(config.admin.state_file, config.regions)
            print(f"{args.file}: OK ({len(config.zones)} zones, {len(config.services)} services, "
                  f"{len(config.regions)} regions)")
            return 0
        config = load_config(args.config)
        if args.command == "explain":
            return _explain(config, args.name, args.client, args.probe)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _serve(config, args.log_level)
    except ConfigError as exc:
        if args.command == "check-config":
            for error in sorted(exc.errors, key=by_line):   # every problem, "FILE:LINE: key.path: reason"
                print(error.where(), file=sys.stderr)
            count = len(exc.errors)
            print(f"{args.file}: {count} error{'s' if count > 1 else ''}", file=sys.stderr)
        else:
            print(f"config error: {exc}", file=sys.stderr)
        return 1
    except GeoIPError as exc:
        print(f"geoip error: {exc}", file=sys.stderr)
        return 1


def _serve(config: GslbConfig, log_level: str = "info") -> int:
    """One process (`workers: 1`, gslb/app.py), or a supervisor and its workers (gslb/supervisor.py)."""
    from gslb.common.workers import WorkerStartError
    from gslb.serve import serve
    from gslb.supervisor import serve_supervised

    runner: Callable[..., object]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    # The query path allocates many short-lived objects: collect the young generation less often, and
    # keep what startup built (zones, GeoIP reader, caches' first entries) out of every collection.
    gc.set_threshold(100_000, 50, 1000)
    try:
        from gslb.common.sdnotify import Notifier
        if config.workers > 1:
            runner(serve_supervised(config, log_level=log_level, ready=lambda _sup: gc.freeze(),
                                    notifier=Notifier.from_environ()))
        else:
            runner(serve(config, ready=lambda _server: gc.freeze(), notifier=Notifier.from_environ()))
    except (OSError, WorkerStartError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _explain(config: GslbConfig, name: str, client_text: str, probe: bool) -> int:
    from gslb.app import GslbServer

    try:
        client = ipaddress.ip_address(client_text)
    except ValueError:
        print(f"--client: not an IP address: {client_text!r}", file=sys.stderr)
        return 2
    server = GslbServer(config)
    name = name.rstrip(".").lower()
    if not server.steering.is_service(name):
        print(f"{name} is not a service in this config", file=sys.stderr)
        return 1
    probes: dict[str, list[str]] = {}
    if probe:
        asyncio.run(_probe_until_settled(server, probes))
    # As if a resolver sent the client's address in ECS (at the /24 or /56 that resolvers send).
    source_prefix = 24 if client.version == 4 else 56
    decision = server.steering.explain(name, client, source_prefix, time.monotonic())
    print(f"service   {decision.service} (policy {decision.policy})")
    print(f"client    {client}: {decision.location}")
    for region, rt in server.regions.items():
        if region in probes:
            note = f"probed {len(probes[region])}x: {', '.join(probes[region])}"
        elif probe:
            note = "no probe configured: always up"
        else:
            note = "assumed (run with --probe to check)"
        drained = ", drained" if rt.drained_since is not None else ""
        print(f"region    {region}: {rt.health.status.value} [{note}{drained}]")
    for line in decision.lines:
        print(f"  {line}")
    print(f"answer    {', '.join(decision.regions) or '(none)'}  ttl={decision.ttl}  "
          f"ecs-scope=/{decision.scope_prefix}{'  ALL REGIONS DOWN: rule applied' if decision.all_down else ''}")
    return 0


async def _probe_until_settled(server: object, probes: dict[str, list[str]]) -> None:
    """Probe every region as a running server would while its result stays the same: again and again
    while the result argues against the current state, until `rise` / `fall` flips it or a result
    agrees (so an unreachable region shows as down after `fall` failures, not "up [probed]")."""
    checker = server.checker  # type: ignore[attr-defined]
    for region, target in checker.targets.items():
        seen = probes.setdefault(region, [])
        for _ in range(max(target.thresholds.rise, target.thresholds.fall)):
            before = checker.states[region]
            after = await checker.check_once(region)
            result = checker.last[region]
            seen.append(f"{'ok' if result.ok else 'failed'} ({result.detail})")
            if after.status is not before.status or after.streak == 0:
                break
