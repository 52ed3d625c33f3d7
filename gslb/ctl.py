"""`gslb ctl`: the running server's admin API from the command line, as `gdnsdctl` is for gdnsd.

    gslb ctl status                          version, config, generation, zones, services, reloads
    gslb ctl regions                         each region: state, drain, last probe (a table)
    gslb ctl drain REGION / undrain REGION   stop / resume answering with a region (token needed)
    gslb ctl maintenance REGION              the region counts as down whatever its probes say
                                             (all three reach every peer and are kept in admin.state_file)
    gslb ctl peers                           the peers: reachable, age of their reports, agreement
    gslb ctl reload                          re-read the config file (a bad one is refused)
    gslb ctl explain NAME --client IP        which regions NAME gets for that client, and why

The admin address and token come from the config file (`-c`, default /etc/gslb/gslb.yaml):
`admin.listen` and `admin.token`; `--url` and `--token` override them. `--json` prints the API's
JSON as it is; otherwise a readable table. Exit status 0, or 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from gslb.common.ctl import AdminClient, add_ctl_parser, cell, dump, run_ctl, table

DEFAULT_CONFIG = "/etc/gslb/gslb.yaml"
REGION_COLUMNS = ("name", "state", "eligible", "drained", "degraded", "addresses", "probe_result", "probe_rtt_ms",
                  "own_state", "admin", "votes")


def add_parser(sub: Any) -> None:
    what = add_ctl_parser(sub, "gslb", help="talk to a running server's admin API (status, regions, drain, ...)",
                          description=__doc__, default_config=DEFAULT_CONFIG)
    what.add_parser("status", help="version, config file, generation, zones, services")
    what.add_parser("regions", help="each region's state")
    for name in ("drain", "undrain", "maintenance"):
        p = what.add_parser(name, help=f"{name} a region (on every peer too)")
        p.add_argument("region")
    what.add_parser("peers", help="the peers: reachable, age of their reports, agreement with ours")
    what.add_parser("reload", help="re-read the config file")
    p = what.add_parser("explain", help="which regions NAME gets for a client, and why")
    p.add_argument("name")
    p.add_argument("--client", required=True, help="client IP address")


def client_from(config_path: str, token: str | None) -> AdminClient:
    from gslb.config import load_config

    config = load_config(config_path)          # ConfigError names the file and the reason
    return AdminClient.from_listen(config.admin.listen.host, config.admin.listen.port, token or config.admin.token)


def run(args: argparse.Namespace) -> int:
    return run_ctl(args, client_from, _command)


def _command(client: AdminClient, args: argparse.Namespace) -> str:
    command = args.ctl_command
    if command == "status":
        data = client.get("/api/status")
        return dump(data) if args.json else _pairs(data)
    if command == "regions":
        data = client.get("/api/regions")
        return dump(data) if args.json else regions_table(data["regions"])
    if command == "peers":
        data = client.get("/api/peers")
        return dump(data) if args.json else _peers_table(data)
    if command in ("drain", "undrain", "maintenance"):
        data = client.post(f"/api/regions/{args.region}/{command}")
        return dump(data) if args.json else regions_table([data])
    if command == "reload":
        data = client.post("/api/reload")
        return dump(data) if args.json else f"reloaded: generation {data.get('generation')}"
    data = client.get("/api/explain", {"name": args.name, "client": args.client})
    if args.json:
        return dump(data)
    lines = [f"service   {data['service']} (policy {data['policy']})", f"client    {args.client}: {data['location']}"]
    lines += [f"  {line}" for line in data["lines"]]
    lines.append(f"answer    {', '.join(data['regions']) or '(none)'}  ttl={data['ttl']}  "
                 f"ecs-scope=/{data['scope_prefix']}{'  ALL REGIONS DOWN: rule applied' if data['all_down'] else ''}")
    return "\n".join(lines)


def regions_table(regions: list[dict[str, Any]]) -> str:
    rows = []
    for region in regions:
        row = dict(region)
        last = region.get("last_probe")
        if last:
            row["probe_result"] = f"{'ok' if last['ok'] else 'FAILED'} {last['detail']}"
            row["probe_rtt_ms"] = last.get("rtt_ms")
        vote = region.get("vote")
        if vote:
            row["votes"] = f"{vote['up_votes']} up / {vote['down_votes']} down ({vote['policy']})" + \
                (" alone" if vote["alone"] else "")
        if region.get("drained") and region.get("safe_to_stop_at"):
            row["drained"] = f"yes (safe to stop at {region['safe_to_stop_at']:.0f})"
        rows.append(row)
    return table(rows, REGION_COLUMNS, ["REGION", "STATE", "ELIGIBLE", "DRAINED", "DEGRADED", "ADDRESSES",
                                        "LAST PROBE", "RTT MS", "OWN PROBES", "ADMIN", "VOTE"])


def _pairs(data: dict[str, Any]) -> str:
    width = max((len(k) for k in data), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in data.items())


def _peers_table(data: dict[str, Any]) -> str:
    head = f"{data['name']}: {'ALONE (no peer heard): own probes decide' if data['alone'] else 'voting'}, " \
           f"policy {data['policy']}, every {data['interval']}s"
    if data["disagreeing"]:
        head += f"; own view differs from the vote on {', '.join(data['disagreeing'])}"
    rows = [{"peer": p["name"], "url": p["url"], "fresh": bool(p.get("fresh")), "age_s": p.get("age"),
             "disagrees_on": ", ".join(r for r, ok in sorted(p.get("agrees", {}).items()) if not ok) or None,
             "last_error": p.get("last_error")} for p in data["peers"]]
    return head + "\n" + table(rows, ("peer", "url", "fresh", "age_s", "disagrees_on", "last_error"))
