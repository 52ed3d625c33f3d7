"""Micro-benchmark: `Responder.respond` on cache hits, optionally beside the responder of another revision.

Every query is asked once (a miss that fills the cache), then timed on its hits: CPU time
(`time.process_time`, steadier than wall time on a busy machine) per call, best of `--repeat` runs.
Cases: a static A without EDNS, a service A with EDNS (a per-client answer), with ECS /24, the same
with the name in another case (a normalised-key hit), with a client cookie only and with a full
client + server cookie (a fresh server cookie made per reply; the second also checked).

Usage: python bench/dns_cache_hit.py [--against REV] [--number 100000] [--repeat 7]
(`--against HEAD~3` loads gslb/dns/responder.py as it was at that revision, same zones and steering.)
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dns.edns  # noqa: E402
import dns.message  # noqa: E402

from gslb.dns.cookies import ServerCookies  # noqa: E402
from gslb.dns.responder import Responder  # noqa: E402
from tests.unit.dns_helpers import CLIENT, default_steering, load_test_zones, query  # noqa: E402

SECRET = bytes(range(16))
NOW = 1_700_000_000.0


def _cookie_query(cookie: bytes) -> bytes:
    return dns.message.make_query("www.example.test", "A", use_edns=0,
                                  options=[dns.edns.GenericOption(dns.edns.COOKIE, cookie)]).to_wire()


def cases() -> dict[str, tuple[bytes, bytes | None]]:
    """name -> (the query that fills the cache, the query timed: None = the same)."""
    full = b"\x01" * 8 + ServerCookies([SECRET]).make(b"\x01" * 8, CLIENT, NOW)
    return {
        "static A, no EDNS": (query("mail.example.test", "A", edns=None), None),
        "service A, EDNS (per client)": (query("www.example.test", "A"), None),
        "service A, ECS /24": (query("www.example.test", "A", ecs="1.2.3.0/24"), None),
        "service A, ECS /24, other case": (query("www.example.test", "A", ecs="1.2.3.0/24"),
                                           query("WwW.example.TEST", "A", ecs="1.2.3.0/24")),
        "service A, client cookie": (_cookie_query(b"\x01" * 8), None),
        "service A, client+server cookie": (_cookie_query(full), None),
    }


def load_revision(rev: str) -> ModuleType:
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:gslb/dns/responder.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "responder_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("responder_at_rev", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["responder_at_rev"] = module
    spec.loader.exec_module(module)
    return module


def measure(responder: Any, fill: bytes, timed: bytes, number: int, repeat: int) -> float:
    responder.respond(fill, CLIENT, NOW)
    responder.respond(timed, CLIENT, NOW)
    runs = timeit.repeat(lambda: responder.respond(timed, CLIENT, NOW), number=number, repeat=repeat,
                         timer=time.process_time)
    return min(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="a git revision whose responder.py to time too")
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    zones = load_test_zones()
    builders: dict[str, Any] = {
        "now": lambda: Responder(zones, default_steering(), cookies=ServerCookies([SECRET]))}
    if args.against:
        old = load_revision(args.against)
        builders[args.against] = lambda: old.Responder(zones, default_steering())
    print(f"| case | {' | '.join(f'{name} µs/hit' for name in builders)} |")
    print(f"| --- | {' | '.join('---:' for _ in builders)} |")
    for name, (fill, timed) in cases().items():
        row = [f"{measure(build(), fill, timed or fill, args.number, args.repeat):.2f}" for build in builders.values()]
        print(f"| {name} | {' | '.join(row)} |")
    print(f"\nPython {sys.version.split()[0]}; client {ipaddress.ip_address(CLIENT)}; best of {args.repeat} x "
          f"{args.number} calls, CPU time")


if __name__ == "__main__":
    main()
