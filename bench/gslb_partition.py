"""Partition benchmark (issue 13): do two authoritative servers of one NS set give the same answers
while one of them has lost its path to a region? gdnsd 3 (http_status monitors) beside our GSLB
without peers and with peers, in one run.

    PYTHONPATH=. .venv/bin/python bench/gslb_partition.py [--partition 30] [--no-readme]

Three region health endpoints (127.0.1.1, 127.0.2.1, 127.0.3.1, one port) answer each server on
its own path (/lb/healthz/<server>). For each setup, two servers start with the same regions,
probe interval 2 s (gdnsd's least), down after 3 failures, up after 1 success; once both answer eu-central to a
London client, server 1's path to eu-central answers 503 for `--partition` seconds while server 2's
stays healthy; clients in London, Tokyo and New York (ECS) ask both servers every 10 ms. Reported:
the share of sampled answer pairs that differ during the partition, and for how long they differed.
The GSLB with peers pulls its peer's verdicts every 2 s (the default) and votes with `quorum`
(with two servers a 1-1 split keeps the region). Writes the `gslb_partition` section of
bench/README.md unless --no-readme.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from common import (
    REPO_DIR,
    BenchError,
    Server,
    command_line,
    free_port,
    machine_lines,
    markdown_table,
    started,
    tool_version,
    write_section,
)

REGIONS = {"us-east": ((39.04, -77.49), "127.0.1.1"), "eu-central": ((50.11, 8.68), "127.0.2.1"),
           "ap-northeast": ((37.57, 126.98), "127.0.3.1")}
CLIENTS = {"London": "81.2.69.0/24", "Tokyo": "133.11.0.0/24", "New York": "12.0.1.0/24"}
CUT_REGION = "eu-central"
QNAME = "www.example.test"
INTERVAL, FALL = 2, 3          # gdnsd allows no probe interval under 2 s


# ---------------------------------------------------------------- region health endpoints


class Health:
    """The regions' health endpoints: one port on each region address; a status per (region, server)."""

    def __init__(self) -> None:
        self.cut: set[tuple[str, str]] = set()       # (region, server) paths answering 503
        self.port = self._common_port()
        self.servers: list[ThreadingHTTPServer] = []
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                region = next(n for n, (_loc, addr) in REGIONS.items() if addr == self.server.server_address[0])
                who = self.path.rsplit("/", 1)[-1]
                status = 503 if (region, who) in health.cut else 200
                body = b'{"status": "ok", "healthy_fraction": 1.0}' if status == 200 else b'{"status": "down"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):     # a monitor that gave up (timeout)
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        for _loc, addr in REGIONS.values():
            server = ThreadingHTTPServer((addr, self.port), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    @staticmethod
    def _common_port() -> int:
        import socket
        for _ in range(50):
            port = free_port(REGIONS["us-east"][1])
            try:
                for _loc, addr in REGIONS.values():
                    with socket.socket() as s:
                        s.bind((addr, port))
                return port
            except OSError:
                continue
        raise BenchError("no port free on every region address")

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------- the servers under test


def dns_answer(port: int, client: str) -> tuple[str, ...] | None:
    import dns.edns
    import dns.exception
    import dns.message
    import dns.query
    address, prefix = CLIENTS[client].split("/")
    query = dns.message.make_query(QNAME, "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None
    return tuple(sorted(rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == 1))


def wait_answering(port: int, server: Server, want: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        got = dns_answer(port, "London")
        if got is not None and want in got:
            return
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer {want} for London within {timeout:.0f} s:\n{server.tail()}")


def gdnsd_config(root: Path, name: str, port: int, health_port: int) -> None:
    (root / "zones").mkdir(parents=True)
    dcs = ", ".join(REGIONS)
    coords = "\n".join(f"          {n} => [ {lat}, {lon} ]" for n, ((lat, lon), _a) in REGIONS.items())
    dcmap = ", ".join(f"{n} => {addr}" for n, (_loc, addr) in REGIONS.items())
    db = sorted((REPO_DIR / "geo_data").glob("*.mmdb"))[0]
    (root / "config").write_text(f"""
options => {{
  listen => [ 127.0.0.1:{port} ]
  run_dir => {root / 'run'}
  state_dir => {root / 'state'}
}}
service_types => {{
  region_health => {{
    plugin => http_status
    port => {health_port}
    url_path => /lb/healthz/{name}
    ok_codes => [ 200 ]
    interval => {INTERVAL}
    timeout => 1
    up_thresh => 1
    ok_thresh => 1
    down_thresh => {FALL}
  }}
}}
plugins => {{
  geoip => {{
    maps => {{
      regions => {{
        geoip2_db => {db}
        datacenters => [ {dcs} ]
        auto_dc_coords => {{
{coords}
        }}
      }}
    }}
    resources => {{
      www => {{
        map => regions
        service_types => [ region_health ]
        dcmap => {{ {dcmap} }}
      }}
    }}
  }}
}}
""")
    (root / "zones" / "example.test").write_text("""$TTL 3600
@     SOA ns1 hostmaster 2026112401 3600 600 1209600 60
@     NS  ns1
@     NS  ns2
ns1   A   127.0.0.1
ns2   A   127.0.0.1
www   30  DYNA geoip!www
""")


def gslb_config(path: Path, name: str, port: int, admin_port: int, health_port: int,
                peers: dict[str, str] | None) -> None:
    data: dict[str, Any] = {
        "dns": {"listen": [f"127.0.0.1:{port}"], "rrl": {"enabled": False}},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "bench-token"},
        "regions": {n: {"location": list(loc), "addresses": [addr],
                        "probe": {"url": f"http://{addr}:{health_port}/lb/healthz/{name}", "interval": INTERVAL,
                                  "timeout": "1s", "fall": FALL, "rise": 1}}
                    for n, (loc, addr) in REGIONS.items()},
        "zones": {"example.test": {
            "ttl": 3600, "soa": {"mname": "ns1.example.test", "rname": "hostmaster.example.test",
                                 "serial": 1, "refresh": 3600, "retry": 600, "expire": 1209600, "minimum": 60},
            "ns": ["ns1.example.test", "ns2.example.test"],
            "records": {"ns1": {"A": ["127.0.0.1"]}, "ns2": {"A": ["127.0.0.1"]}}}},
        "services": {QNAME: {"policy": "geo", "count": 1, "ttl": 30}},
    }
    if peers is not None:
        data["peers"] = {"name": name, "servers": peers}      # interval 2 s, quorum: the defaults
    path.write_text(yaml.safe_dump(data))


def start_pair(kind: str, workdir: Path, health: Health) -> tuple[list[int], list[Any]]:
    """Two servers of `kind` (gdnsd, gslb, gslb-peers): their DNS ports and context managers."""
    names = ("s1", "s2")
    ports = [free_port(udp_too=True) for _ in names]
    managers: list[Any] = []
    if kind == "gdnsd":
        gdnsd = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
        for name, port in zip(names, ports, strict=True):
            root = workdir / f"gdnsd-{name}"
            gdnsd_config(root, name, port, health.port)
            check = subprocess.run([gdnsd, "-c", str(root), "checkconf"], capture_output=True, text=True,
                                   check=False)
            if check.returncode != 0:
                raise BenchError(f"gdnsd checkconf failed:\n{check.stderr[-3000:]}")
            managers.append(started(f"gdnsd-{name}", [gdnsd, "-c", str(root), "start"], workdir))
    else:
        admin_ports = [free_port() for _ in names]
        urls = {n: f"http://127.0.0.1:{p}" for n, p in zip(names, admin_ports, strict=True)}
        for name, port, admin_port in zip(names, ports, admin_ports, strict=True):
            cfg = workdir / f"{kind}-{name}.yaml"
            gslb_config(cfg, name, port, admin_port, health.port, urls if kind == "gslb-peers" else None)
            managers.append(started(f"{kind}-{name}", [sys.executable, "-m", "gslb", "serve", "-c", str(cfg),
                                                       "--log-level", "warning"], workdir,
                                    env={"PYTHONPATH": str(REPO_DIR)}))
    return ports, managers


def measure(kind: str, workdir: Path, health: Health, partition: float) -> dict[str, Any]:
    ports, managers = start_pair(kind, workdir, health)
    servers = [m.__enter__() for m in managers]
    try:
        eu = REGIONS[CUT_REGION][1]
        for port, server in zip(ports, servers, strict=True):
            wait_answering(port, server, eu)
        time.sleep(3 * INTERVAL)        # a few probe rounds (and peer pulls) before the cut
        health.cut.add((CUT_REGION, "s1"))
        start = time.monotonic()
        pairs = differ = lost = near = near_differ = 0
        first = last = None
        while (now := time.monotonic()) - start < partition:
            for client in CLIENTS:
                a, b = dns_answer(ports[0], client), dns_answer(ports[1], client)
                if a is None or b is None:
                    lost += 1
                    continue
                pairs += 1
                near += client == "London"
                if a != b:
                    differ += 1
                    near_differ += client == "London"
                    first = now - start if first is None else first
                    last = now - start
            time.sleep(0.01)
        health.cut.discard((CUT_REGION, "s1"))
        return {"pairs": pairs, "differ": differ, "lost": lost, "near": near, "near_differ": near_differ,
                "window": None if first is None else last - first, "first": first}
    finally:
        for m in reversed(managers):
            m.__exit__(None, None, None)
        health.cut.clear()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partition", type=float, default=30.0, help="seconds server 1's path stays cut")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args()
    health = Health()
    results: dict[str, dict[str, Any]] = {}
    labels = {"gdnsd": "gdnsd 3 ×2 (http_status monitors)", "gslb": "GSLB ×2, no peers",
              "gslb-peers": "GSLB ×2, peers (2 s, quorum)"}
    try:
        for kind in labels:
            with tempfile.TemporaryDirectory(prefix=f"bench-partition-{kind}-") as tmp:
                results[kind] = r = measure(kind, Path(tmp), health, args.partition)
                print(f"{kind}: {r['differ']} of {r['pairs']} answer pairs differ "
                      f"({100 * r['differ'] / max(1, r['pairs']):.1f} %), window {r['window']}", flush=True)
    finally:
        health.close()
    rows = [[labels[k], r["pairs"], r["differ"], f"{100 * r['differ'] / max(1, r['pairs']):.1f} %",
             f"{100 * r['near_differ'] / max(1, r['near']):.1f} %",
             "none" if r["window"] is None else f"{r['first']:.1f} → {r['first'] + r['window']:.1f} s",
             r["lost"]] for k, r in results.items()]
    body = "\n".join([
        "## GSLB servers that agree: a partition between one server and one region (issue 13)", "",
        f"Two servers of one NS set; server 1's path to {CUT_REGION} is cut for {args.partition:g} s while "
        "server 2 still sees it healthy. Clients in London, Tokyo and New York (ECS) ask both every 10 ms. "
        f"Probes every {INTERVAL} s, down after {FALL} failures. `bench/gslb_partition.py`:", "",
        markdown_table(["servers", "answer pairs", "differ", "share", "London's share", "differing (since the cut)",
                        "no reply"],
                       rows), "",
        "Only London's nearest region is cut, so only its answers can differ (at most a third of all pairs). "
        "Without peers each server answers on its own probes, as gdnsd does: once server 1's monitor marks "
        "the region down it sends London elsewhere while server 2 keeps it there, for the whole partition. "
        "With peers, server 1's own view is outvoted (quorum: with two servers a 1-1 split keeps the region).",
        "", *machine_lines({"gdnsd": tool_version(["gdnsd", "-h"])}, command_line()),
    ])
    print(body)
    if not args.no_readme:
        write_section("gslb_partition", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
