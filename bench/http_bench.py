"""HTTP benchmark: our regional LB (`python -m regional_lb serve`) against HAProxy, one run.

Three fixed-response backends (one HAProxy process answering with `http-request return`) listen on
loopback. Both proxies sit in front of the same backends with the same routes: `/rr/...` round robin,
everything else round robin with cookie stickiness (LBSESSIONID). For each proxy, wrk (keep-alive,
`-t1 -c50 --latency`, small GETs) measures:
  * sticky route, new clients (no cookie: every request is a pick and a Set-Cookie),
  * sticky route, cookie already set (the sticky hit path; the cookie comes from a first request),
  * the round-robin route.
The proxy's CPU time (utime+stime of its process tree from /proc) over each run, divided by the
requests answered, gives CPU µs per request. The proxy is pinned to CPU 1; wrk and the backends to
CPU 0 (taskset) when there are two CPUs.

`--before REF` also measures the regional LB as it was at git revision REF (a `git archive` copy
of that tree, run the same way), in the same run: the report then gives before -> after figures
measured under the same conditions, which is what a change's effect should be judged by on a
machine whose load varies. The target (issue 7): the regional LB's CPU per request at most
TARGET (3.0) x HAProxy's on every route.

Usage: python bench/http_bench.py [--duration 10] [--connections 50] [--only NAME] [--before REF] [--no-readme]
Results go to stdout and to the http section of bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    REPO_DIR,
    BenchError,
    CpuMeter,
    Server,
    command_line,
    fmt,
    free_port,
    machine_lines,
    markdown_table,
    run,
    started,
    tool_version,
    wait_tcp,
)
from common import write_section as write_readme_section

PROXY_CPU, CLIENT_CPU = "1", "0"
N_BACKENDS = 3
COOKIE = "LBSESSIONID"
TARGET = 3.0                # regional LB CPU/request <= TARGET x HAProxy's, every route (issue 7)


def render(template: str, **values: object) -> str:
    return string.Template((BENCH_DIR / "configs" / template).read_text()).substitute(values)


def haproxy_bin() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def ready_tcp(port: int, timeout: float = 30.0):
    def wait(server: Server) -> None:
        wait_tcp("127.0.0.1", port, timeout, server.proc)
    return wait


# ---------------------------------------------------------------- servers


def start_backends(workdir: Path) -> tuple[list[int], object]:
    ports = [free_port() for _ in range(N_BACKENDS)]
    frontends = "\n".join(
        f"frontend b{i}\n  bind 127.0.0.1:{port}\n"
        f"  http-request return status 200 content-type text/plain string \"backend b{i}\\n\" "
        f"hdr X-Backend b{i}\n"
        for i, port in enumerate(ports, 1))
    cfg = workdir / "backends.cfg"
    cfg.write_text(render("haproxy-backends.cfg.tmpl", frontends=frontends))
    return ports, started("backends", [haproxy_bin(), "-f", str(cfg), "-db"], workdir, cpus=CLIENT_CPU,
                          ready=ready_tcp(ports[-1]))


def start_haproxy(workdir: Path, backends: list[int]):
    port = free_port()
    sticky = "\n".join(f"  server b{i} 127.0.0.1:{p} cookie b{i}" for i, p in enumerate(backends, 1))
    rr = "\n".join(f"  server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends, 1))
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(render("haproxy-proxy.cfg.tmpl", port=port, sticky_servers=sticky, rr_servers=rr))
    check = run([haproxy_bin(), "-c", "-f", str(cfg)], timeout=30)
    del check
    return port, started("haproxy", [haproxy_bin(), "-f", str(cfg), "-db"], workdir, cpus=PROXY_CPU,
                         ready=ready_tcp(port))


def start_regional_lb(workdir: Path, backends: list[int], *, tree: Path = REPO_DIR, name: str = "regional-lb"):
    """The regional LB from source tree `tree` (this checkout, or a --before copy)."""
    port = free_port()
    lines = "\n".join(f'      - {{address: "127.0.0.1:{p}", id: b{i}}}' for i, p in enumerate(backends, 1))
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(render("regional_lb.yaml.tmpl", port=port, admin_port=free_port(), backends=lines))
    env = {"PYTHONPATH": str(tree)}
    check = subprocess.run([sys.executable, "-m", "regional_lb", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=tree, env={**os.environ, **env}, check=False)
    if check.returncode != 0:
        raise BenchError(f"{name} check-config failed: {(check.stderr or check.stdout).strip()[-1500:]}")
    return port, started(name, [sys.executable, "-m", "regional_lb", "serve", "-c", str(cfg),
                                "--log-level", "warning"],
                         workdir, cpus=PROXY_CPU, ready=ready_tcp(port), env=env)


def source_tree(ref: str, into: Path) -> tuple[Path, str]:
    """A copy of the repository at git revision `ref` (git archive), and its short commit."""
    commit = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if commit.returncode != 0:
        raise BenchError(f"--before {ref}: {commit.stderr.strip()}")
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_DIR), "archive", "--format=tar", ref], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref} failed: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into, commit.stdout.strip()


FLOOR_APP = """
import sys
from aiohttp import web
import uvloop
async def hello(request):
    return web.Response(text="backend floor\\n", headers={"Set-Cookie": "LBSESSIONID=floor; Path=/"})
app = web.Application()
app.router.add_get("/{tail:.*}", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=uvloop.new_event_loop())
"""


def start_aiohttp_floor(workdir: Path, backends: list[int]):
    """Not a proxy: a bare aiohttp server answering itself, the floor under any aiohttp-based proxy's cost."""
    port = free_port()
    return port, started("aiohttp-floor", [sys.executable, "-c", FLOOR_APP, str(port)], workdir, cpus=PROXY_CPU,
                         ready=ready_tcp(port))


# ---------------------------------------------------------------- checks


def get(port: int, path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
    """(status, body, LBSESSIONID value set by the response or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace").strip()
        set_cookie = None
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith(COOKIE + "="):
                set_cookie = value.split(";", 1)[0].split("=", 1)[1]
        return resp.status, body, set_cookie
    finally:
        conn.close()


def check_proxy(port: int) -> tuple[str, dict[str, str]]:
    """The cookie to use for the sticky-hit run, and facts for the report."""
    status, body, cookie = get(port, "/")
    if body.startswith("backend floor"):
        return cookie or "floor", {}
    if status != 200 or not cookie:
        raise BenchError(f"GET / answered {status} {body!r} with cookie {cookie!r}; expected 200 and {COOKIE}")
    sticky = {get(port, "/", cookie)[1] for _ in range(6)}
    rr = [get(port, "/rr/x")[1] for _ in range(6)]
    facts = {
        "first GET /": f"{status}, {body}, Set-Cookie {COOKIE}",
        "6 GETs / with that cookie": ", ".join(sorted(sticky)),
        "6 GETs /rr/x": ", ".join(rr),
    }
    if len(sticky) != 1:
        raise BenchError(f"sticky cookie did not stick: {facts}")
    return cookie, facts


# ---------------------------------------------------------------- wrk


@dataclass
class Result:
    proxy: str
    scenario: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50: float | None = None
    p99: float | None = None
    errors: int = 0
    non2xx: int = 0
    cpu: float = 0.0

    @property
    def cpu_us(self) -> float | None:
        return self.cpu * 1e6 / self.requests if self.requests else None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str, result: Result) -> None:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise BenchError(f"cannot read wrk output:\n{out[-1500:]}")
    result.requests = int(m.group(1))
    result.seconds = _ms(m.group(2) + m.group(3)) / 1e3
    if rps := re.search(r"Requests/sec:\s*([\d.]+)", out):
        result.rps = float(rps.group(1))
    for q, attr in (("50", "p50"), ("99", "p99")):
        if lat := re.search(rf"^\s*{q}%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M):
            setattr(result, attr, _ms(lat.group(1)))
    if err := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result.errors = sum(int(g) for g in err.groups())
    if non := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result.non2xx = int(non.group(1))


def wrk(server: Server, port: int, path: str, scenario: str, args, cookie: str | None = None) -> Result:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency", "--timeout", "5s"]
    if cookie:
        argv += ["-H", f"Cookie: {COOKIE}={cookie}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    meter = CpuMeter(server.pid)
    meter.start()
    res = run(argv, timeout=args.duration + 60, cpus=CLIENT_CPU)
    result = Result(server.name, scenario)
    result.cpu = meter.stop()
    parse_wrk(res.stdout, result)
    print(f"  {server.name} {scenario}: {result.rps:,.0f} req/s, {fmt(result.cpu_us, 1)} µs CPU/request",
          flush=True)
    return result


@dataclass
class Running:
    name: str
    server: Server
    port: int
    cookie: str


def start_measured(name: str, starter, workdir: Path, backends: list[int], args, stack: contextlib.ExitStack
                   ) -> tuple[Running, dict]:
    """Start one server (stopped when `stack` closes), check it, warm it up."""
    port, ctx = starter(workdir, backends)
    server = stack.enter_context(ctx)
    cookie, facts = check_proxy(port)
    warm = argparse.Namespace(**{**vars(args), "duration": 1.0})
    wrk(server, port, "/", "warm-up", warm)
    return Running(name, server, port, cookie), facts


def measure_round(run: Running, args) -> list[Result]:
    """The three scenarios once."""
    server, port = run.server, run.port
    results = [
        wrk(server, port, "/", "sticky route, no cookie (pick + Set-Cookie)", args),
        wrk(server, port, "/", "sticky route, cookie set (sticky hit)", args, cookie=run.cookie),
        wrk(server, port, "/rr/x", "round_robin route", args),
    ]
    if server.proc.poll() is not None:
        raise BenchError(f"{run.name} died during the run:\n{server.tail()}")
    return results


def best(old: list[Result] | None, new: list[Result]) -> list[Result]:
    """Per scenario, the round with the least CPU per request (the least disturbed by other load)."""
    if old is None:
        return new
    return [a if (a.cpu_us or float("inf")) <= (b.cpu_us or float("inf")) else b for a, b in zip(old, new, strict=True)]


HEADERS = ["proxy", "scenario", "requests", "requests/s", "p50 ms", "p99 ms", "errors", "non-2xx",
           "proxy CPU s", "CPU µs/request"]


def row(r: Result) -> list[object]:
    return [r.proxy, r.scenario, f"{r.requests:,}", fmt(r.rps, 0), fmt(r.p50, 2), fmt(r.p99, 2), r.errors,
            r.non2xx, fmt(r.cpu, 2), fmt(r.cpu_us, 1)]


def report(args, results: dict[str, list[Result]], facts: dict[str, dict], notes: dict[str, str],
           before: str | None = None) -> str:
    versions = {"HAProxy": tool_version([haproxy_bin(), "-v"], r"version ([\d.]+[\w.+~-]*)"),
                "wrk": tool_version(["wrk", "-v"], r"wrk ([\w./+~-]+)")}
    out = ["## HTTP: regional LB vs HAProxy", ""]
    out += machine_lines(versions, command_line())
    out += [f"- Backends: {N_BACKENDS} fixed-response HTTP servers (one HAProxy 1-thread process, "
            "`http-request return`, ~20-byte body) on 127.0.0.1, pinned to CPU 0 with wrk; the proxy under "
            "test pinned to CPU 1. HAProxy proxy: 1 thread, `cookie LBSESSIONID insert indirect nocache`, "
            "`option forwardfor`; regional LB: `sticky_cookie` (first pick round_robin, HMAC-signed cookie), "
            "`lb_headers: false`, memory state; configs in `bench/configs/`.",
            f"- wrk: `wrk -t1 -c{args.connections} -d{args.duration:g}s --latency` (keep-alive GETs), "
            + ("one run per row after a 1 s warm-up" if args.repeat == 1 else
               f"{args.repeat} rounds over all servers (interleaved, every server started and warmed up "
               "for 1 s first); each row is its round with the least CPU per request, the one least disturbed by "
               "other work on the machine")
            + "; the sticky-hit run sends `-H 'Cookie: LBSESSIONID=...'` with a cookie from a first request to "
            "the same proxy.",
            "- CPU µs/request = proxy utime+stime (/proc, whole process tree) over the run ÷ requests.", ""]
    facts = {n: f for n, f in facts.items() if f}
    if facts:
        out += ["### Same behaviour", ""]
        names = list(facts)
        keys = list(next(iter(facts.values())))
        out += [markdown_table(["check", *names], [[k, *[facts[n].get(k, "") for n in names]] for k in keys]), ""]
    if results:
        out += ["### Throughput, latency and CPU", "",
                markdown_table(HEADERS, [row(r) for n in results for r in results[n]]), ""]
    if "aiohttp-floor" in results:
        out += ["`aiohttp-floor` is not a proxy: a bare aiohttp (uvloop) server answering every GET itself with a "
                "fixed body and a Set-Cookie, in one process pinned like the proxies. It is the floor under the "
                "CPU per request of any proxy built on aiohttp's server (which then also runs an HTTP client).", ""]
    if "haproxy" in results and "regional-lb" in results:
        out += ["### Ratio", ""]
        for ours, theirs in zip(results["regional-lb"], results["haproxy"], strict=True):
            ratio = (ours.cpu_us or 0) / (theirs.cpu_us or 1)
            verdict = "meets" if ratio <= TARGET else "MISSES"
            out.append(f"- {ours.scenario}: regional LB CPU/request ÷ HAProxy CPU/request = **{ratio:.2f}×** "
                       f"(target ≤ {TARGET:g}×: {verdict}); requests/s {ours.rps:,.0f} vs {theirs.rps:,.0f}")
        out.append("")
    if before and before in results and "regional-lb" in results:
        out += [f"### Before -> after (`{before}` measured in this run, then this checkout)", ""]
        haproxy = results.get("haproxy")
        for i, (old, new) in enumerate(zip(results[before], results["regional-lb"], strict=True)):
            change = ((new.cpu_us or 0) / (old.cpu_us or 1) - 1) * 100
            line = (f"- {new.scenario}: {fmt(old.cpu_us, 1)} -> {fmt(new.cpu_us, 1)} µs CPU/request "
                    f"({change:+.0f} %)")
            if haproxy:
                base = haproxy[i].cpu_us or 1
                line += f"; ÷ HAProxy {(old.cpu_us or 0) / base:.2f}× -> {(new.cpu_us or 0) / base:.2f}×"
            out.append(line)
        out.append("")
    for name, why in notes.items():
        out += [f"**{name}: not yet measured**: {why.splitlines()[0][:500]}", ""]
        detail = "\n".join(why.splitlines()[1:])[-1500:]
        if detail:
            out += ["```", detail, "```", ""]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--only", choices=["haproxy", "regional-lb", "aiohttp-floor"], help="measure one server only")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="skip the bare-aiohttp reference (a server answering itself, no proxying)")
    p.add_argument("--before", metavar="REF", help="also measure the regional LB at git revision REF (same run)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds over all servers; each row keeps its round with the least CPU/request (default 1)")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    args = p.parse_args()

    results: dict[str, list[Result]] = {}
    facts: dict[str, dict] = {}
    notes: dict[str, str] = {}
    before: str | None = None
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        workdir = Path(tmp)
        servers = [("haproxy", start_haproxy), ("regional-lb", start_regional_lb)]
        if args.before:
            tree, commit = source_tree(args.before, workdir / "before")
            before = f"regional-lb@{commit}"
            servers.insert(1, (before, functools.partial(start_regional_lb, tree=tree, name=before)))
        ports, backend_ctx = start_backends(workdir)
        with backend_ctx:
            if args.floor:
                servers.append(("aiohttp-floor", start_aiohttp_floor))
            with contextlib.ExitStack() as stack:
                running: list[Running] = []
                for name, starter in servers:
                    if args.only and args.only != name and not (name == before and args.only == "regional-lb"):
                        continue
                    print(f"starting {name} ...", flush=True)
                    try:
                        run, facts[name] = start_measured(name, starter, workdir, ports, args, stack)
                        running.append(run)
                    except BenchError as exc:
                        notes[name] = str(exc).strip()
                        print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)
                for round_ in range(1, args.repeat + 1):
                    for run in list(running):       # servers interleaved: a burst of load hits each round once
                        print(f"round {round_}/{args.repeat}: {run.name}", flush=True)
                        try:
                            results[run.name] = best(results.get(run.name), measure_round(run, args))
                        except BenchError as exc:
                            notes[run.name] = str(exc).strip()
                            results.pop(run.name, None)
                            running.remove(run)
                            print(f"  {run.name}: not measured: {notes[run.name]}", file=sys.stderr, flush=True)
    body = report(args, results, facts, notes, before)
    print(body)
    if not args.no_readme:
        write_readme_section("http", body)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
