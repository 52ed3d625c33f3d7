"""`regional-lb ctl`: the running load balancer's admin API from the command line (as HAProxy's
runtime API `set server ... state ready|drain|maint`).

    regional-lb ctl pools                              every pool's backends: health, admin state, load
    regional-lb ctl drain POOL BACKEND [--deadline S]  no new sessions; sticky ones finish (token needed)
    regional-lb ctl ready POOL BACKEND                 back in service
    regional-lb ctl maint POOL BACKEND                 out of service at once
    regional-lb ctl reload                             re-read the config file (a bad one is refused)
    regional-lb ctl workers                            worker processes (workers: N): pid, ready, restarts

The admin address and token come from the config file (`-c`, default /etc/regional-lb/edge.yaml):
`admin.listen` and `admin.token`; `--url` and `--token` override them. `--json` prints the API's
JSON as it is; otherwise a readable table. Exit status 0, or 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from gslb.common.ctl import AdminClient, add_ctl_parser, dump, run_ctl, table

DEFAULT_CONFIG = "/etc/regional-lb/edge.yaml"
STATES = {"drain": "drain", "ready": "ready", "maint": "maintenance"}
BACKEND_COLUMNS = ("pool", "id", "address", "health", "admin", "available", "ejected", "effective_weight",
                   "inflight", "ewma_ms", "sticky_sessions")

WORKER_COLUMNS = ("id", "pid", "ready", "restarts", "generation", "requests")


def add_parser(sub: Any) -> None:
    what = add_ctl_parser(sub, "regional-lb", help="talk to a running load balancer's admin API (pools, drain, ...)",
                          description=__doc__, default_config=DEFAULT_CONFIG)
    what.add_parser("pools", help="every pool's backends")
    for name, state in STATES.items():
        p = what.add_parser(name, help=f"set a backend's admin state to {state}")
        p.add_argument("pool")
        p.add_argument("backend")
        if name == "drain":
            p.add_argument("--deadline", type=float, help="seconds after which the drain becomes maintenance")
    what.add_parser("reload", help="re-read the config file")
    what.add_parser("workers", help="worker processes: pid, ready, restarts, config generation, requests")


def client_from(config_path: str, token: str | None) -> AdminClient:
    from regional_lb.config import load_config

    config = load_config(config_path)          # ConfigError names the file and the reason
    return AdminClient.from_listen(config.admin.host, config.admin.port, token or config.admin.token)


def run(args: argparse.Namespace) -> int:
    return run_ctl(args, client_from, _command)


def _command(client: AdminClient, args: argparse.Namespace) -> str:
    command = args.ctl_command
    if command == "pools":
        data = client.get("/api/pools")
        return dump(data) if args.json else pools_table(data)
    if command == "workers":
        data = client.get("/api/workers")
        if args.json:
            return dump(data)
        return table(data["workers"], WORKER_COLUMNS) if data["workers"] else "one process (workers: 1)"
    if command == "reload":
        data = client.post("/api/reload")
        return dump(data) if args.json else f"reloaded: {data.get('message') or 'ok'}"
    body = {"deadline": args.deadline} if getattr(args, "deadline", None) is not None else None
    data = client.post(f"/api/pools/{args.pool}/backends/{args.backend}/{STATES[command]}", body)
    if args.json:
        return dump(data)
    return table([{"pool": data["pool"], **data["backend"]}], BACKEND_COLUMNS)


def pools_table(pools: dict[str, Any]) -> str:
    rows = [{"pool": name, **backend} for name, pool in pools.items() for backend in pool["backends"]]
    summary = "\n".join(f"{name}: {pool['healthy']}/{pool['total']} available  {pool.get('repr', '')}"
                        for name, pool in pools.items())
    return f"{table(rows, BACKEND_COLUMNS)}\n\n{summary}"
