"""Shared parts of the hostile-traffic DNS scripts (bench/dns_attack.py, dns_fuzz.py, dns_memory.py).

* crafted datagrams: the costly-to-parse 64 KB queries (`chain_datagram`, `labels_datagram`) and the
  seed queries the fuzzer mutates (`seed_queries`);
* starting gdnsd and our GSLB beside each other on free loopback ports, from the same configs as
  bench/dns_bench.py, with extra `dns:` keys for ours (e.g. rate limiting off for a one-source load);
* what a server holds: RSS now and at peak from /proc, counters from the GSLB's /metrics.

Benchmarks are scripts, not tests: nothing here is imported by the test suite.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO_DIR, BenchError, Server, free_port, started
from dns_bench import QNAME, SERVER_CPU, dns_ready, render, start_gdnsd

__all__ = ["QNAME", "Target", "chain_datagram", "gdnsd_target", "gslb_target", "labels_datagram",
           "metrics", "rss_kib", "seed_queries"]

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
POINTER_LIMIT = 0x3FFF          # a compression pointer holds 14 bits of offset
MAX_UDP = 65_507                # largest IPv4 UDP payload


def _question(name: str = QNAME, qtype: int = 1) -> bytes:
    out = bytearray()
    for label in name.split("."):
        out.append(len(label))
        out += label.encode()
    out += b"\x00" + struct.pack("!HH", qtype, 1)
    return bytes(out)


def chain_datagram(size: int = 65_000, qid: int = 0x5151) -> bytes:
    """A query for www whose additional section holds thousands of records whose owner names are
    one compression pointer into a chain of pure pointers (each points at the one 2 bytes before it,
    the first at a root label): a parser that decompresses every owner name and does not bound
    pointer hops walks the whole chain (~8,000 hops) for every record (~4,000 records)."""
    head_len = 12 + len(_question())
    # first additional record: root owner, type NULL (10), rdata = root label + the pointer chain
    rdata_start = head_len + 1 + _RR.size
    chain_bytes = POINTER_LIMIT - rdata_start - 2
    chain_bytes -= chain_bytes % 2
    links = chain_bytes // 2
    rdata = bytearray(b"\x00")
    for k in range(links):
        target = rdata_start if k == 0 else rdata_start + 1 + 2 * (k - 1)
        rdata += struct.pack("!H", 0xC000 | target)
    last = rdata_start + 1 + 2 * (links - 1)
    body = bytearray(b"\x00" + _RR.pack(10, 1, 0, len(rdata)) + rdata)
    owner = struct.pack("!H", 0xC000 | last)
    record = owner + _RR.pack(1, 1, 0, 0)
    count = max(0, (size - head_len - len(body)) // len(record))
    body += record * count
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 1 + count) + _question() + bytes(body)


def labels_datagram(size: int = 65_000, qid: int = 0x5152) -> bytes:
    """A query for www whose additional section starts with a name of 127 one-byte labels (the
    most a 255-byte name holds) and then holds thousands of records whose owner is one pointer to
    it: every owner name a decompressing parser reads is 127 labels long."""
    head = _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + _question()
    name_at = len(head)
    body = bytearray(b"\x01a" * 127 + b"\x00" + _RR.pack(1, 1, 0, 0))
    record = struct.pack("!H", 0xC000 | name_at) + _RR.pack(1, 1, 0, 0)
    count = max(0, (size - len(head) - len(body)) // len(record))
    body += record * count
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 1 + count) + _question() + bytes(body)


def seed_queries() -> list[bytes]:
    """Real queries the fuzzer starts from: plain, EDNS, ECS v4/v6, DO, COOKIE, NSID, padding,
    CHAOS, several types and names (built with dnspython)."""
    import dns.edns
    import dns.flags
    import dns.message
    import dns.rdataclass

    def q(name: str, rdtype: str = "A", *, edns: int | bool = 0, options=None, want_dnssec: bool = False,
          rdclass: str = "IN", payload: int = 1232) -> bytes:
        msg = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=edns, options=options,
                                     want_dnssec=want_dnssec, payload=payload)
        msg.id = 0x1234
        return msg.to_wire()

    cookie = dns.edns.GenericOption(10, bytes(range(8)))
    cookie_full = dns.edns.GenericOption(10, bytes(range(8)) + b"\x01\x00\x00\x00" + bytes(12))
    nsid = dns.edns.GenericOption(3, b"")
    pad = dns.edns.GenericOption(12, bytes(64))
    return [
        q(QNAME, edns=False),
        q(QNAME),
        q(QNAME, "AAAA", options=[dns.edns.ECSOption("81.2.69.0", 24)]),
        q(QNAME, options=[dns.edns.ECSOption("2001:db8::", 56)]),
        q(QNAME, options=[dns.edns.ECSOption("12.0.1.0", 24), cookie]),
        q(QNAME, options=[cookie_full, nsid], want_dnssec=True),
        q(QNAME, options=[pad], payload=4096),
        q("example.test", "SOA"),
        q("example.test", "NS"),
        q("example.test", "ANY"),
        q("ns1.example.test", "A", edns=False),
        q("nothere.example.test", "TXT"),
        q("WwW.ExAmPlE.tEsT", "A"),
        q("id.server", "TXT", rdclass="CH", edns=False),
        q("version.bind", "TXT", rdclass="CH"),
        q("example.org", "A"),
    ]


# ---------------------------------------------------------------- servers under test


@dataclass
class Target:
    """A server under test: its name, its DNS port (UDP and TCP) and, for ours, the admin port."""

    name: str
    port: int
    server: Server
    admin_port: int | None = None

    @property
    def pid(self) -> int:
        return self.server.pid

    def alive(self) -> bool:
        return self.server.proc.poll() is None


def gslb_config(port: int, admin_port: int, geoip: Path, extra_dns: dict[str, object]) -> str:
    """bench/configs/gslb.yaml.tmpl with keys of its `dns:` section replaced (flow-style YAML values);
    a key given as None is removed (e.g. a key that an older --gslb-src does not know)."""
    import json

    lines = render("gslb.yaml.tmpl", port=port, admin_port=admin_port, geoip_db=geoip).splitlines()
    start = lines.index("dns:") + 1
    end = start
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    section = [ln for ln in lines[start:end] if ln.split(":", 1)[0].strip() not in extra_dns]
    section += [f"  {key}: {json.dumps(value)}" for key, value in extra_dns.items() if value is not None]
    return "\n".join([*lines[:start], *section, *lines[end:]]) + "\n"


def gslb_target(workdir: Path, geoip: Path, extra_dns: dict[str, object] | None = None,
                cpus: str | None = SERVER_CPU,
                src: Path | None = None) -> tuple[int, int, AbstractContextManager[Server]]:
    """(DNS port, admin port, context that runs `python -m gslb serve` until exit).

    `src`: a directory holding the `gslb` package to run instead of this checkout's (e.g. an older
    commit unpacked with `git archive COMMIT gslb geo_data | tar -x -C DIR`, for before/after figures)."""
    src = (src or REPO_DIR).resolve()
    port = free_port(udp_too=True)
    admin_port = free_port()
    cfg = workdir / "gslb.yaml"
    cfg.write_text(gslb_config(port, admin_port, geoip, extra_dns or {}))
    env = {"PYTHONPATH": str(src)}
    check = subprocess.run([sys.executable, "-m", "gslb", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=src, check=False, env={**os.environ, **env})
    if check.returncode != 0:
        raise BenchError(f"gslb check-config failed: {(check.stderr or check.stdout).strip()[-1500:]}")
    ctx = started("gslb", [sys.executable, "-m", "gslb", "serve", "-c", str(cfg), "--log-level", "warning"],
                  workdir, cpus=cpus, ready=dns_ready(port), env=env)
    return port, admin_port, ctx


def gdnsd_target(workdir: Path, geoip: Path) -> tuple[int, AbstractContextManager[Server]]:
    return start_gdnsd(workdir, geoip)


def gslb_source(text: str | None) -> tuple[Path | None, str]:
    """The --gslb-src argument: (directory or None for this checkout, how the report names it)."""
    if not text:
        return None, "this checkout"
    path = Path(text).resolve()
    if not (path / "gslb" / "__init__.py").exists():
        raise SystemExit(f"--gslb-src {text}: no gslb package there")
    return path, f"`{text}` (given with --gslb-src)"


def rss_parts_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a process in KiB: heap and stacks vs mapped files (libraries, the mmdb)."""
    anon = file = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("RssFile:"):
                file = int(line.split()[1])
    except OSError:
        pass
    return anon, file


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: resident memory now and its peak since start."""
    now = peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return now, peak


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


def metrics(admin_port: int) -> dict[str, float]:
    """Every sample of the GSLB's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def internal_errors(samples: dict[str, float]) -> float | None:
    """The internal-error count /metrics exports (None when no such metric exists yet)."""
    found = [v for k, v in samples.items() if "internal" in k and not k.endswith("_created")]
    return sum(found) if found else None


def ecs_wire_template(qname: str = QNAME) -> tuple[bytes, int]:
    """A query for `qname` A with ECS 0.0.0.0/24 as its last bytes, and the offset of the 3 address bytes."""
    import dns.edns
    import dns.message

    msg = dns.message.make_query(qname, "A", use_edns=0, options=[dns.edns.ECSOption("1.2.3.0", 24)])
    msg.id = 0
    wire = msg.to_wire()
    assert wire.endswith(bytes([1, 2, 3]))
    return wire, len(wire) - 3


def distinct_global_24s(count: int, seed: int) -> Iterator[int]:
    """`count` distinct random public IPv4 /24 networks (as the top 24 bits), fixed by `seed`."""
    import random

    rng = random.Random(seed)
    seen: set[int] = set()
    while len(seen) < count:
        net = rng.randrange(1 << 24)
        if net in seen or not ipaddress.IPv4Address(net << 8).is_global:
            continue
        seen.add(net)
        yield net
