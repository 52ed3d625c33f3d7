"""DNS fuzzing against the real servers: our GSLB and gdnsd, one run.

For each server (freshly started):

  * UDP: `--count` datagrams (default 1,000,000), mutations of real queries (bit flips, byte
    changes, truncations and junk tails, header counts and flags, compression-pointer loops and
    chains, label abuse, OPT / ECS / COOKIE / NSID abuse, splices) and random bytes, from a fixed
    seed. They go out in batches of `--batch`; after each batch a valid probe query is sent and its
    answer awaited, so the server has handled the whole batch (one socket, in order) before the
    next one goes: nothing is lost to a full socket queue, and a server that stops answering is
    seen at once.
  * TCP: `--tcp` connections (default 20,000), `--concurrency` at a time: queries (valid and
    mutated) pipelined, random framing (a length larger or smaller than what follows, zero),
    partial messages then close, early resets (SO_LINGER 0), silence then close.

Every reply is parsed with dnspython (`dns.message.from_wire`) and its ID must be one we sent in
that batch / on that connection. Reported per server: crashes (the process died), internal errors
(our /metrics), error lines in the server's log, RSS before / peak / after, replies dnspython
cannot parse, replies with an ID we did not send, probes unanswered.

Usage: python bench/dns_fuzz.py [--count 1000000] [--tcp 20000] [--seed 8] [--only gdnsd|gslb]
                                [--gslb-src DIR] [--no-readme]
       python bench/dns_fuzz.py --count 20000 --tcp 1000 --no-readme     # a quick check
Results go to stdout and to the dns-fuzz section of bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchError, CpuMeter, command_line, fmt, machine_lines, markdown_table, tool_version, write_section
from dns_bench import CLIENT_CPU, choose_geoip, pin_self
from dns_hostile import (
    gdnsd_target,
    gslb_source,
    gslb_target,
    internal_errors,
    metrics,
    rss_kib,
    seed_queries,
)

DEFAULT_GSLB_DNS = {"rrl": {"enabled": False}}
PROBE_ID = 0xFFFF      # fuzzed datagrams never carry this ID (the probe's answer ends a batch)

# ---------------------------------------------------------------- mutations

_HDR = struct.Struct("!HHHHHH")


def _qname_end(data: bytes) -> int:
    """Offset after the question name of a well-formed seed (12 if none)."""
    pos = 12
    while pos < len(data) and data[pos] != 0:
        pos += 1 + data[pos]
    return min(pos + 1, len(data))


def _opt_rdata_at(data: bytes) -> int:
    """Offset of the OPT RDLENGTH field in a seed (its OPT record is last), or -1."""
    i = data.rfind(b"\x00\x00\x29")
    return i + 9 if i >= 0 and i + 11 <= len(data) else -1


def m_bitflip(rng: random.Random, d: bytearray) -> bytearray:
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        if d:
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
    return d


def m_bytes(rng: random.Random, d: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 6)):
        if d:
            d[rng.randrange(len(d))] = rng.choice((0, 0xFF, 0xC0, 0x3F, 0x40, 0x80, rng.randrange(256)))
    return d


def m_truncate(rng: random.Random, d: bytearray) -> bytearray:
    return d[: rng.randrange(len(d) + 1)]


def m_extend(rng: random.Random, d: bytearray) -> bytearray:
    return d + rng.randbytes(rng.choice((1, 2, 4, 11, 12, rng.randrange(1, 600))))


def m_counts(rng: random.Random, d: bytearray) -> bytearray:
    if len(d) < 12:
        return d
    field_at = rng.choice((4, 6, 8, 10))
    d[field_at:field_at + 2] = rng.choice((0, 1, 2, 3, 0x7FFF, 0xFFFF, rng.randrange(65536))).to_bytes(2, "big")
    return d


def m_flags(rng: random.Random, d: bytearray) -> bytearray:
    if len(d) >= 4:
        d[2:4] = rng.choice((0x8000, 0x7800, 0x2800, 0x0200, 0x0040, 0x000F, rng.randrange(65536))).to_bytes(2, "big")
    return d


def m_pointer(rng: random.Random, d: bytearray) -> bytearray:
    """Compression pointers in the question: to itself, forward, past the end, into the header, a chain."""
    end = _qname_end(d)
    at = rng.randrange(12, max(13, end))
    kind = rng.randrange(5)
    if kind == 0:
        ptr = at                                  # a loop onto itself
    elif kind == 1:
        ptr = at + rng.randrange(2, 40)           # forward
    elif kind == 2:
        ptr = rng.randrange(0x3FFF)               # anywhere, usually past the end
    elif kind == 3:
        ptr = rng.randrange(12)                   # into the header
    else:                                         # a chain of pointers appended, the name pointing to its end
        chain = bytearray()
        base = len(d)
        for k in range(rng.randint(2, 200)):
            chain += struct.pack("!H", 0xC000 | (base + 2 * (k - 1) if k else at))
        d = d[:at] + struct.pack("!H", 0xC000 | (base + len(chain) - 2)) + d[at + 2:] + chain
        return d
    return d[:at] + struct.pack("!H", 0xC000 | (ptr & 0x3FFF)) + d[at + 2:]


def m_labels(rng: random.Random, d: bytearray) -> bytearray:
    """Label abuse in the question: 63/64-byte labels, reserved label types, 127+ labels, > 255 bytes."""
    end = _qname_end(d)
    tail = d[end:]
    kind = rng.randrange(5)
    if kind == 0:
        name = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00"
    elif kind == 1:
        name = bytes([rng.choice((0x40, 0x41, 0x7F, 0x80, 0xBF))]) + b"x" * 10 + b"\x00"
    elif kind == 2:
        name = b"\x01a" * rng.choice((126, 127, 128, 200)) + b"\x00"
    elif kind == 3:
        name = b"\x03www\x07example\x04test" + bytes([rng.randrange(1, 64)]) + rng.randbytes(rng.randrange(0, 70))
    else:
        name = bytes(rng.choice((b"\x04w.w\\\x07example\x04test\x00", b"\x00", b"\x01\x00\x00",
                                 b"\x03WWW\x07EXAMPLE\x04TEST\x00", b"\x03\xff\xfe\x00\x07example\x04test\x00")))
    return d[:12] + bytearray(name) + tail


def _replace_opt(d: bytearray, rdata: bytes, *, udp: int = 1232, ttl: int = 0, owner: bytes = b"\x00") -> bytearray:
    i = _opt_rdata_at(d)
    if i < 0:            # no OPT: add one
        if len(d) >= 12:
            d[10:12] = ((int.from_bytes(d[10:12], "big") + 1) & 0xFFFF).to_bytes(2, "big")
        return d + owner + struct.pack("!HHIH", 41, udp, ttl, len(rdata)) + rdata
    start = i - 9 - 1
    return d[:start] + owner + struct.pack("!HHIH", 41, udp, ttl, len(rdata)) + rdata


def m_opt(rng: random.Random, d: bytearray) -> bytearray:
    """OPT abuse: wrong RDLENGTH, options running past it, version, flags, sizes, owners, two OPTs."""
    kind = rng.randrange(8)
    if kind == 0:
        i = _opt_rdata_at(d)
        if i >= 0:
            d[i:i + 2] = rng.choice((0, 1, 3, 0xFFFF, rng.randrange(100))).to_bytes(2, "big")
        return d
    if kind == 1:
        return _replace_opt(d, struct.pack("!HH", rng.randrange(65536), rng.choice((0, 1, 100, 0xFFFF)))
                            + rng.randbytes(rng.randrange(8)))
    if kind == 2:
        return _replace_opt(d, b"", ttl=rng.choice((1 << 16, 0xFF << 16, 0x8000, 0x7FFF, rng.randrange(1 << 32))))
    if kind == 3:
        return _replace_opt(d, b"", udp=rng.choice((0, 1, 511, 512, 65535)))
    if kind == 4:
        return _replace_opt(d, b"", owner=rng.choice((b"\x01a\x00", b"\xc0\x0c")))
    if kind == 5:                         # a second OPT
        if len(d) >= 12:
            d[10:12] = ((int.from_bytes(d[10:12], "big") + 1) & 0xFFFF).to_bytes(2, "big")
        return d + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    if kind == 6:                         # OPT in the answer section
        if len(d) >= 12:
            d[6:8] = b"\x00\x01"
            d[10:12] = b"\x00\x00"
        return d[:_qname_end(d) + 4] + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    many = b"".join(struct.pack("!HH", rng.randrange(65536), 0) for _ in range(rng.randint(10, 2000)))
    return _replace_opt(d, many)


def m_ecs(rng: random.Random, d: bytearray) -> bytearray:
    """Client Subnet abuse: family, prefix lengths, scope, address length, trailing bits, two of them."""
    family = rng.choice((1, 1, 2, 2, 0, 3, 0xFFFF))
    source = rng.choice((0, 1, 24, 32, 33, 56, 128, 129, 255))
    scope = rng.choice((0, 0, 0, 1, 24, 255))
    addr = rng.randbytes(rng.choice((0, 1, 3, 4, 5, 16, 17, (source + 7) // 8)))
    option = struct.pack("!HHBB", 8, family, source, scope) + addr
    option = struct.pack("!HH", 8, len(option) - 4 + rng.choice((0, 0, 0, -1, 1))) + option[4:]
    if rng.random() < 0.2:
        option += option
    return _replace_opt(d, option)


def m_cookie(rng: random.Random, d: bytearray) -> bytearray:
    """COOKIE (10) of every length 0..48, two of them, with NSID (3) of odd lengths."""
    length = rng.choice((0, 1, 7, 8, 9, 15, 16, 24, 40, 41, 48, rng.randrange(49)))
    option = struct.pack("!HH", 10, length) + rng.randbytes(length)
    if rng.random() < 0.2:
        option += option
    if rng.random() < 0.3:
        n = rng.choice((0, 0, 1, 4))
        option += struct.pack("!HH", 3, n) + rng.randbytes(n)
    return _replace_opt(d, option)


def m_splice(rng: random.Random, d: bytearray, seeds: list[bytes]) -> bytearray:
    other = rng.choice(seeds)
    return d[: rng.randrange(len(d) + 1)] + other[rng.randrange(len(other)):]


def m_random(rng: random.Random, _: bytearray) -> bytearray:
    n = rng.choice((0, 1, 11, 12, 13, 17, 30, rng.randrange(600), rng.randrange(4096)))
    return bytearray(rng.randbytes(n))


MUTATORS: list[Callable[[random.Random, bytearray], bytearray]] = [
    m_bitflip, m_bytes, m_truncate, m_extend, m_counts, m_flags, m_pointer, m_labels, m_opt, m_ecs, m_cookie,
    m_random]


class Fuzzer:
    """A deterministic stream of mutated queries: the same seed gives the same datagrams."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seeds = seed_queries()
        self.kinds: Counter[str] = Counter()

    def next(self) -> bytes:
        rng = self.rng
        d = bytearray(rng.choice(self.seeds))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            if rng.random() < 0.05:
                d = m_splice(rng, d, self.seeds)
                self.kinds["splice"] += 1
            else:
                m = rng.choice(MUTATORS)
                try:
                    d = m(rng, d)
                except (ValueError, OverflowError, IndexError, struct.error):    # a mutator's own bug:
                    self.kinds["mutator failed"] += 1                          # keep d as it was
                    continue
                self.kinds[m.__name__[2:]] += 1
        if len(d) >= 2 and d[:2] == b"\xff\xff":
            d[1] = 0xFE
        if len(d) > 65_000:
            d = d[:65_000]
        return bytes(d)


# ---------------------------------------------------------------- checking replies


@dataclass
class Check:
    replies: int = 0
    unparsable: int = 0
    unparsable_opcode: int = 0      # of those: parse once the opcode is set to QUERY (see reply())
    foreign_id: int = 0
    examples: list[str] = field(default_factory=list)
    _good: set[bytes] = field(default_factory=set)

    def reply(self, data: bytes, ids: set[int] | None, query: bytes | None = None) -> None:
        """Check one reply; `ids`: the IDs it may carry (None: any, e.g. a message cut out of junk)."""
        import dns.exception
        import dns.message

        self.replies += 1
        if len(data) < 2 or (ids is not None and int.from_bytes(data[:2], "big") not in ids):
            self.foreign_id += 1
            self._example(f"reply ID not sent: {data[:40].hex()}")
        body = data[2:]
        if body in self._good:
            return
        errors = (dns.exception.DNSException, ValueError, IndexError, UnicodeError, struct.error)
        try:
            dns.message.from_wire(data)
        except errors as exc:
            self.unparsable += 1
            # dnspython reads the sections of an UPDATE (opcode 5) reply as zone / prerequisites /
            # updates and rejects an echoed question of another type than SOA: count apart a reply
            # that parses once its opcode is QUERY (header-only replies to other opcodes avoid it)
            if len(data) >= 4 and data[2] & 0x78:
                fixed = bytearray(data)
                fixed[2] &= 0x87
                try:
                    dns.message.from_wire(bytes(fixed))
                except errors:
                    pass
                else:
                    self.unparsable_opcode += 1
                    return
            self._example(f"unparsable ({type(exc).__name__}: {exc}): reply {data[:60].hex()}"
                          + (f" to query {query[:60].hex()}" if query else ""))
            return
        if len(self._good) < 200_000:
            self._good.add(body)

    def _example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


# ---------------------------------------------------------------- UDP


def probe_query() -> bytes:
    import dns.message

    msg = dns.message.make_query("probe.example.test", "A")
    msg.id = PROBE_ID
    return msg.to_wire()


@dataclass
class UdpResult:
    sent: int = 0
    batches: int = 0
    probes_lost: int = 0
    seconds: float = 0.0
    check: Check = field(default_factory=Check)
    died_at: int | None = None


def fuzz_udp(port: int, count: int, batch: int, seed: int, alive: Callable[[], bool],
             progress: Callable[[int], None]) -> tuple[UdpResult, Fuzzer]:
    fuzzer = Fuzzer(seed)
    res = UdpResult()
    probe = probe_query()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    t0 = time.monotonic()
    try:
        while res.sent < count:
            n = min(batch, count - res.sent)
            ids: set[int] = set()
            last: dict[int, bytes] = {}
            for _ in range(n):
                d = fuzzer.next()
                if len(d) >= 2:
                    qid = int.from_bytes(d[:2], "big")
                    ids.add(qid)
                    last[qid] = d
                sock.send(d)
            res.sent += n
            res.batches += 1
            sock.send(probe)
            sock.settimeout(2.0)
            while True:
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    res.probes_lost += 1
                    break
                except ConnectionRefusedError:   # ICMP port unreachable: nothing listens any more
                    res.probes_lost += 1
                    break
                if data[:2] == b"\xff\xff":
                    break
                res.check.reply(data, ids, last.get(int.from_bytes(data[:2], "big")))
            if res.batches % 500 == 0:
                progress(res.sent)
                if not alive():
                    res.died_at = res.sent
                    break
    finally:
        sock.close()
    res.seconds = time.monotonic() - t0
    return res, fuzzer


# ---------------------------------------------------------------- TCP


@dataclass
class TcpResult:
    connections: int = 0
    refused: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    answered_queries: int = 0
    valid_unanswered: int = 0
    seconds: float = 0.0
    check: Check = field(default_factory=Check)


async def _read_replies(reader: asyncio.StreamReader, res: TcpResult, ids: set[int] | None, want: int,
                        seconds: float) -> int:
    got = 0
    try:
        async with asyncio.timeout(seconds):
            while got < want:
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
                res.check.reply(data, ids)
                got += 1
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    return got


def _frame(d: bytes) -> bytes:
    return len(d).to_bytes(2, "big") + d


async def tcp_connection(port: int, rng: random.Random, fuzzer: Fuzzer, valid: bytes, res: TcpResult,
                         source: str) -> None:
    kind = rng.choice(("valid", "pipelined", "mutated", "long-length", "short-length", "zero-length", "partial",
                       "reset-early", "reset-after-query", "silent", "junk", "one-byte"))
    res.kinds[kind] += 1
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)),
                                                5)
    except (OSError, TimeoutError):
        res.refused += 1
        return
    res.connections += 1
    sock = writer.get_extra_info("socket")
    reset = False
    try:
        qid = rng.randrange(0xFFFF)
        query = qid.to_bytes(2, "big") + valid[2:]
        if kind == "valid":
            writer.write(_frame(query))
            got = await _read_replies(reader, res, {qid}, 1, 2.0)
            res.answered_queries += got
            res.valid_unanswered += 1 - got
        elif kind == "pipelined":
            queries = [rng.randrange(0xFFFF).to_bytes(2, "big") + valid[2:] for _ in range(rng.randint(2, 20))]
            writer.write(b"".join(_frame(q) for q in queries))
            want = len(queries)
            got = await _read_replies(reader, res, {int.from_bytes(q[:2], "big") for q in queries}, want, 2.0)
            res.answered_queries += got
            res.valid_unanswered += want - got
        elif kind == "mutated":
            queries = [fuzzer.next() for _ in range(rng.randint(1, 5))]
            writer.write(b"".join(_frame(q) for q in queries))
            ids = {int.from_bytes(q[:2], "big") for q in queries if len(q) >= 2}
            res.answered_queries += await _read_replies(reader, res, ids, len(queries), 0.5)
        elif kind == "long-length":
            writer.write((len(query) + rng.randint(1, 1000)).to_bytes(2, "big") + query)
            await _read_replies(reader, res, {qid}, 1, 0.2)
        elif kind == "short-length":
            writer.write((rng.randrange(1, len(query))).to_bytes(2, "big") + query)
            await _read_replies(reader, res, None, 2, 0.3)    # the rest is read as a message of its own
        elif kind == "zero-length":
            writer.write(b"\x00\x00" + _frame(query))
            await _read_replies(reader, res, {qid}, 1, 0.3)
        elif kind == "partial":
            writer.write(_frame(query)[: rng.randrange(1, len(query) + 2)])
        elif kind == "reset-early":
            reset = True
        elif kind == "reset-after-query":
            writer.write(_frame(query) * rng.randint(1, 50))
            reset = True
        elif kind == "silent":
            await asyncio.sleep(rng.uniform(0, 0.2))
        elif kind == "junk":
            writer.write(rng.randbytes(rng.randrange(1, 3000)))
            await _read_replies(reader, res, None, 1, 0.2)
        else:
            writer.write(b"\x00")
        if reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2)


async def fuzz_tcp(port: int, count: int, concurrency: int, seed: int) -> TcpResult:
    rng = random.Random(seed + 1)
    fuzzer = Fuzzer(seed + 2)
    import dns.message

    valid = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    res = TcpResult()
    sources = [f"127.0.{3 + i // 250}.{1 + i % 250}" for i in range(64)]
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        async with sem:
            await tcp_connection(port, rng, fuzzer, valid, res, sources[i % len(sources)])

    await asyncio.gather(*(one(i) for i in range(count)))
    res.seconds = time.monotonic() - t0
    return res


# ---------------------------------------------------------------- a run


@dataclass
class Result:
    server: str
    udp: UdpResult | None = None
    tcp: TcpResult | None = None
    rss_before: int = 0
    rss_after: int = 0
    peak: int = 0
    alive: bool = True
    internal_errors: float | None = None
    log_errors: int = 0
    log_examples: list[str] = field(default_factory=list)
    cpu: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)


def measure(name: str, starter, args) -> Result:
    res = Result(name)
    ctx, port, admin_port = starter()
    with ctx as server:
        time.sleep(0.5)
        res.rss_before = rss_kib(server.pid)[0]
        meter = CpuMeter(server.pid)
        meter.start()
        alive = lambda: server.proc.poll() is None  # noqa: E731

        def progress(sent: int) -> None:
            if sent % 100_000 == 0:
                print(f"    {name}: {sent:,} datagrams, RSS {rss_kib(server.pid)[0] / 1024:.1f} MB", flush=True)

        res.udp, fuzzer = fuzz_udp(port, args.count, args.batch, args.seed, alive, progress)
        res.kinds = fuzzer.kinds
        print(f"  {name} UDP: {res.udp.sent:,} datagrams in {res.udp.seconds:.0f} s, {res.udp.check.replies:,} "
              f"replies, {res.udp.check.unparsable} unparsable, {res.udp.probes_lost} probes lost", flush=True)
        if args.tcp and alive():
            res.tcp = asyncio.run(fuzz_tcp(port, args.tcp, args.concurrency, args.seed))
            print(f"  {name} TCP: {res.tcp.connections:,} connections in {res.tcp.seconds:.0f} s, "
                  f"{res.tcp.check.replies:,} replies, {res.tcp.check.unparsable} unparsable, "
                  f"{res.tcp.valid_unanswered} valid queries unanswered", flush=True)
        res.cpu = meter.stop()
        time.sleep(0.5)
        res.rss_after, res.peak = rss_kib(server.pid)
        res.alive = alive()
        if admin_port is not None and res.alive:
            try:
                res.internal_errors = internal_errors(metrics(admin_port))
            except OSError as exc:
                print(f"  {name}: /metrics unreadable: {exc}", flush=True)
        for line in server.log.read_text(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or "CRITICAL" in line:
                res.log_errors += 1
                if len(res.log_examples) < 3:
                    res.log_examples.append(line[:300])
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000, help="UDP datagrams per server (default 1000000)")
    p.add_argument("--batch", type=int, default=100, help="datagrams between two probes (default 100)")
    p.add_argument("--tcp", type=int, default=20_000, help="TCP connections per server (default 20000)")
    p.add_argument("--concurrency", type=int, default=32, help="TCP connections open at once (default 32)")
    p.add_argument("--seed", type=int, default=8, help="random seed (default 8)")
    p.add_argument("--gslb-dns", default=json.dumps(DEFAULT_GSLB_DNS),
                   help=f"JSON object of extra dns: keys for our server (default {json.dumps(DEFAULT_GSLB_DNS)})")
    p.add_argument("--gslb-src", help="directory holding the gslb package to run (default: this checkout)")
    p.add_argument("--geoip", help="GeoIP .mmdb for both servers (default: geo_data/*.mmdb)")
    p.add_argument("--only", choices=["gdnsd", "gslb"], help="measure one server only")
    p.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    p.add_argument("--section", default="dns-fuzz",
                   help="README section to rewrite (default dns-fuzz; e.g. dns-fuzz-before with --gslb-src)")
    args = p.parse_args()
    extra_dns = json.loads(args.gslb_dns)
    src, src_text = gslb_source(args.gslb_src)
    pin_self(CLIENT_CPU)

    results: list[Result] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dns-fuzz-") as tmp:
        workdir = Path(tmp)
        geoip, geoip_text = choose_geoip(args.geoip, workdir)
        for name in ("gdnsd", "gslb"):
            if args.only and args.only != name:
                continue
            run_dir = workdir / name
            run_dir.mkdir()
            print(f"fuzzing {name} ...", flush=True)

            def starter(name=name, run_dir=run_dir):
                if name == "gdnsd":
                    port, ctx = gdnsd_target(run_dir, geoip)
                    return ctx, port, None
                port, admin_port, ctx = gslb_target(run_dir, geoip, extra_dns, src=src)
                return ctx, port, admin_port
            try:
                results.append(measure(name, starter, args))
            except BenchError as exc:
                notes[name] = str(exc).strip()
                print(f"  {name}: not measured: {notes[name]}", file=sys.stderr, flush=True)

    body = report(args, results, notes, geoip_text, extra_dns, src_text)
    print(body)
    if not args.no_readme and results:
        write_section(args.section, body)
    return 0 if results and not notes else 1


def report(args, results: list[Result], notes: dict[str, str], geoip_text: str, extra_dns: dict,
           src_text: str) -> str:
    mb = lambda kib: fmt(kib / 1024, 1)  # noqa: E731
    versions = {"gdnsd": tool_version(["gdnsd", "-h"]), "dnspython": _dnspython_version()}
    title = "### Fuzzing: crashes, internal errors, RSS, unparsable replies"
    if args.gslb_src:
        title += f" — before (our server from `{args.gslb_src}`)"
    out = [title, ""]
    out += machine_lines(versions, command_line())
    out += [f"- GeoIP database (both servers): {geoip_text}; our server's code: {src_text}; extra `dns:` keys "
            f"`{json.dumps(extra_dns)}`.",
            f"- UDP: {args.count:,} datagrams per server (seed {args.seed}), mutations of "
            f"{len(seed_queries())} real queries, batches of {args.batch} each followed by a probe whose answer "
            "is awaited (2 s). TCP: "
            f"{args.tcp:,} connections per server, {args.concurrency} at a time, from 64 loopback addresses.",
            "- unparsable = replies `dns.message.from_wire` rejects (in brackets: those that parse once their "
            "opcode is set to QUERY: dnspython reads an UPDATE reply's sections as zone / prerequisites / updates "
            "and rejects an echoed question whose type is not SOA); foreign ID = a reply whose ID was not in "
            "the batch (UDP) or on the connection (TCP); log errors = lines with Traceback / ERROR / CRITICAL "
            "in the server's log; internal errors from our /metrics (n/a: not exported by that server).", ""]
    rows = []
    for r in results:
        u, t = r.udp, r.tcp
        rows.append([
            r.server, "no" if r.alive else "YES", fmt(r.internal_errors, 0), str(r.log_errors),
            f"{u.sent:,}" if u else "-", f"{u.check.replies:,}" if u else "-",
            _unparsable(u.check, t.check if t else None) if u else "-",
            str(u.check.foreign_id + (t.check.foreign_id if t else 0)) if u else "-",
            str(u.probes_lost) if u else "-",
            f"{t.connections:,}" if t else "-", f"{t.check.replies:,}" if t else "-",
            str(t.valid_unanswered) if t else "-",
            mb(r.rss_before), mb(r.peak), mb(r.rss_after), fmt(r.cpu, 1)])
    out += [markdown_table(["server", "crashed", "internal errors", "log errors", "UDP datagrams", "UDP replies",
                            "unparsable replies", "foreign ID", "probes lost", "TCP conns", "TCP replies",
                            "valid TCP queries unanswered", "RSS before MB", "peak MB", "after MB",
                            "server CPU s"], rows), ""]
    for r in results:
        examples = (r.udp.check.examples if r.udp else []) + (r.tcp.check.examples if r.tcp else [])
        if examples or r.log_examples:
            out += [f"{r.server} examples:", "", "```", *examples, *r.log_examples, "```", ""]
    if results and results[0].kinds:
        kinds = results[0].kinds
        out += ["Mutations applied (UDP, per server): " + ", ".join(f"{k} {v:,}" for k, v in kinds.most_common()), ""]
    if results and results[0].tcp:
        tk = results[0].tcp.kinds
        out += ["TCP connection kinds: " + ", ".join(f"{k} {v:,}" for k, v in tk.most_common()), ""]
    for name, why in notes.items():
        out += [f"**{name}: not measured**: {why.splitlines()[0][:500]}", ""]
    return "\n".join(out)


def _unparsable(*checks: Check | None) -> str:
    total = sum(c.unparsable for c in checks if c)
    opcode = sum(c.unparsable_opcode for c in checks if c)
    return f"{total} ({opcode} opcode ≠ QUERY)" if opcode else str(total)


def _dnspython_version() -> str:
    import dns.version

    return dns.version.version


if __name__ == "__main__":
    sys.exit(main())
