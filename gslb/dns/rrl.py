"""Response rate limiting (RRL) for UDP replies, as BIND, Knot and NSD do it  [pure].

    limiter = RateLimiter(RrlSettings(), stats=RrlStats())
    action = limiter.decide(response, client, now)         # Action.SEND / DROP / SLIP
    reply = limiter.limit(response, client, now, query=data, exempt=check)   # bytes, or None
    udp = RateLimitedResponder(responder, limiter, exempt) # what the UDP listener calls

Why: a spoofed query makes us send our answer to the victim, up to ~4x larger (apex NS
with glue). RRL bounds how many *identical* responses one client network gets per second,
so we stop being a useful amplifier while real resolvers, which ask each name once per
TTL, never notice. bench/dns_rrl_cost.py: an `example.test NS` flood at 2,000 q/s from one
address reflects 2.66 bytes per byte sent with RRL off, 0.52 with the defaults.

The key (derived from OUR response bytes, which are well-formed; never from the query):

    (client network, response class, name, qtype)

* client network: the address masked to `ipv4_prefix` (/24) or `ipv6_prefix` (/56);
* class and name, from the header and the first records:
      NOERROR   answer section not empty, or       name = qname,  qtype
                truncated (TC) for UDP
      NODATA    NOERROR, no answer, AA set         name = qname,  qtype
      REFERRAL  NOERROR, no answer, AA clear       name = the delegation (NS owner), qtype 0
      NXDOMAIN  rcode 3                            name = the zone (SOA owner), qtype 0
                                                   (random subdomains share one bucket)
      ERROR     any other rcode (REFUSED, FORMERR, SERVFAIL, NOTIMP, BADVERS, ...)
                                                   one bucket per client network (no name)
  Names are compared case-insensitively (0x20 randomisation does not make new buckets).

The bucket (BIND's "account", ARM "rate-limit"): it earns `rate` credits per second, can
hold at most `rate` (the burst), and every response debits one; a response is sent while
the balance stays >= 0. Over the limit the balance keeps falling, down to -rate * window,
so a network that floods stays limited until its average over `window` seconds is under
the rate again. Hence in any interval of T seconds one bucket sends at most
rate * T + rate responses. The rate is `responses_per_second` for NOERROR, NODATA and
REFERRAL, `nxdomains_per_second` for NXDOMAIN, `errors_per_second` for ERROR; 0 means
unlimited for that class.

Over the limit: every `slip`-th limited response of a bucket (the first, then every
slip-th after it) is SLIPPED: sent as header + question + our OPT, TC=1, other sections
empty, so a real resolver retries over TCP (never limited) and gets its answer; the
others are DROPPED (and a real resolver retries). slip 0: always drop; slip 1: always slip
(a slip is about the query's size: reflection without amplification). ERROR responses
are never slipped (as BIND: a truncated REFUSED helps nobody). A query with a valid DNS
server cookie (RFC 7873/9018) cannot come from a spoofed source, so it is exempt; the
`exempt` callable is asked only on the over-limit path, so the cookie is checked only there.
Limited replies are logged (logger `gslb.dns.rrl`) at most once per LOG_INTERVAL (10 s):
how many since the last line, and the latest one's network, class, name and type.

Cost per reply: a few bytes read from the response header and question, a tuple, one
OrderedDict lookup and move_to_end, a few float operations: O(1). bench/dns_rrl_cost.py
measures it: decide() about 1.3 µs of CPU, and the UDP path through RateLimitedResponder
about 1.5 µs more than a responder cache hit (1.1-1.7 µs) on a loaded 2-core machine.
Memory: at most `max_table_size` buckets; when full, the least recently
used bucket is evicted (a bucket left alone for window + 1 seconds is full again, so
forgetting it changes nothing; a busy one is recent and kept). Each bucket
costs about 340 bytes (key tuple, name bytes, bucket object, OrderedDict link; measured
with tracemalloc over 100,000 buckets), up to about 570 with a 250-byte name (only a wildcard
lets a client pick long names that get answers).

Defaults (on, generous): responses 100/s, nxdomains 25/s, errors 10/s per client network
and response, slip 2, window 15 s, /24 and /56, 100,000 buckets (35 MB; 57 MB with the longest names).
100/s is between BIND's examples (5-10) and NSD's built-in default (200): a resolver asks
for one name and type once per TTL per cache, so one /24 reaching 100/s for one name means
3,000 independent caches (or ECS client subnets, with ECS) refreshing it within a 30 s TTL.
A busy resolver that still crosses it loses little: half the over-limit replies are TC=1
and are answered over TCP, the other half time out and are asked again. NXDOMAIN and
errors are rarer for real resolvers and are the shapes random-subdomain and junk floods
take, hence the lower rates. Benchmarks that blast one name from one address must set
`dns.rrl.enabled: false`.

Not limited: TCP (the listener calls the limiter for UDP only). Known gap: answers
synthesised from a wildcard are keyed by their qname (the response bytes do not say
"wildcard"), so random names under a wildcard each get a bucket, as NXDOMAINs would
without the zone key.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
log = logging.getLogger("gslb.dns.rrl")

LOG_INTERVAL = 10.0     # seconds between two "rate limiting" log lines (the count covers those between)

_OPT = 41
_TC = 0x02          # in the third header byte
_AA = 0x04          # in the third header byte
_MAX_RECORDS = 256  # records walked when building a slip reply or finding an owner name
_MAX_STEPS = 128    # labels + pointers followed when reading one name


class Action(enum.IntEnum):
    SEND = 0
    DROP = 1
    SLIP = 2


class ResponseClass(enum.IntEnum):
    NOERROR = 0
    NODATA = 1
    REFERRAL = 2
    NXDOMAIN = 3
    ERROR = 4


_NOERROR, _NODATA, _REFERRAL, _NXDOMAIN, _ERROR = (int(c) for c in ResponseClass)   # plain ints: cheaper keys
_CLASS_NAMES = tuple(c.name for c in ResponseClass)
_SEND, _DROP, _SLIP = Action.SEND, Action.DROP, Action.SLIP


@dataclass(frozen=True, slots=True)
class RrlSettings:
    """What `dns.rrl` configures; valid once built (ValueError names the field)."""

    enabled: bool = True
    responses_per_second: int = 100
    nxdomains_per_second: int = 25
    errors_per_second: int = 10
    window: float = 15.0
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    max_table_size: int = 100_000

    def __post_init__(self) -> None:
        for name in ("responses_per_second", "nxdomains_per_second", "errors_per_second"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
                raise ValueError(f"{name}: must be an integer in [0, 1000000] (0: unlimited), got {value!r}")
        if not 1.0 <= self.window <= 3600.0:
            raise ValueError(f"window: must be in [1s, 3600s], got {self.window!r}")
        if not 0 <= self.slip <= 10:
            raise ValueError(f"slip: must be in [0, 10] (0: always drop, 1: always truncate), got {self.slip!r}")
        if not 0 <= self.ipv4_prefix <= 32:
            raise ValueError(f"ipv4_prefix: must be in [0, 32], got {self.ipv4_prefix!r}")
        if not 0 <= self.ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix: must be in [0, 128], got {self.ipv6_prefix!r}")
        if not 1 <= self.max_table_size <= 10_000_000:
            raise ValueError(f"max_table_size: must be in [1, 10000000], got {self.max_table_size!r}")


@dataclass(eq=False)
class RrlStats:
    """Plain counters, kept by the server across reloads; /metrics exports them."""

    limited: int = 0            # responses over their bucket's limit (dropped + slipped + exempt)
    dropped: int = 0
    slipped: int = 0            # sent truncated (TC=1)
    exempt_cookie: int = 0      # over the limit but sent: the query had a valid server cookie
    evicted: int = 0            # buckets evicted because the table was full
    by_class: Counter[str] = field(default_factory=Counter)    # limited responses by class name

    def __repr__(self) -> str:
        return (f"<RrlStats {self.limited} limited: {self.dropped} dropped, {self.slipped} slipped, "
                f"{self.exempt_cookie} exempt by cookie, {self.evicted} evicted>")


class _Bucket:
    __slots__ = ("balance", "slips", "stamp")

    def __init__(self, balance: float, stamp: float) -> None:
        self.balance = balance
        self.stamp = stamp
        self.slips = 0


def _skip_name(data: bytes, pos: int) -> int:
    """The offset after the name at `pos` (-1 if it is not a sound name)."""
    n = len(data)
    for _ in range(_MAX_STEPS):
        if pos >= n:
            return -1
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2 if pos + 2 <= n else -1
        if length > 63:
            return -1
        pos += 1 + length
    return -1


def _read_name(data: bytes, pos: int) -> bytes | None:
    """The name at `pos`, decompressed, as lower-case wire labels (None if it is not sound)."""
    n = len(data)
    out = bytearray()
    for _ in range(_MAX_STEPS):
        if pos >= n:
            return None
        length = data[pos]
        if length == 0:
            out.append(0)
            return bytes(out).lower()
        if length >= 0xC0:
            if pos + 1 >= n:
                return None
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:       # only backwards: no loops
                return None
            pos = target
            continue
        if length > 63 or pos + 1 + length > n:
            return None
        out += data[pos:pos + 1 + length]
        pos += 1 + length
    return None


def _name_text(wire: bytes) -> str:
    """Uncompressed wire labels as text, for a log line (bytes outside printable ASCII escaped)."""
    labels, pos = [], 0
    while pos < len(wire) and wire[pos]:
        labels.append(wire[pos + 1:pos + 1 + wire[pos]].decode("ascii", "backslashreplace"))
        pos += 1 + wire[pos]
    return ".".join(labels) + "."


def _skip_records(data: bytes, pos: int, count: int) -> int:
    """The offset after `count` records from `pos` (-1 if they do not fit)."""
    if count > _MAX_RECORDS:
        return -1
    n = len(data)
    for _ in range(count):
        pos = _skip_name(data, pos)
        if pos < 0 or pos + 10 > n:
            return -1
        pos += 10 + ((data[pos + 8] << 8) | data[pos + 9])
        if pos > n:
            return -1
    return pos


def _question_end(data: bytes) -> int:
    """The offset after the question (12 when there is none); -1 if it is not sound."""
    if data[4] == 0 and data[5] == 0:
        return 12
    pos = _skip_name(data, 12)
    if pos < 0 or pos + 4 > len(data):
        return -1
    return pos + 4


def classify(response: bytes) -> tuple[ResponseClass, bytes, int]:
    """(class, name, qtype) of one of our responses, for its bucket key; never raises.

    Anything unexpected is ERROR with no name (one bucket per client network)."""
    cls, name, qtype = _classify(response)
    return ResponseClass(cls), name, qtype


def _classify(response: bytes) -> tuple[int, bytes, int]:
    n = len(response)
    if n < 12:
        return _ERROR, b"", 0
    rcode = response[3] & 0x0F
    if (rcode != 0 and rcode != 3) or not (response[4] or response[5]):
        return _ERROR, b"", 0
    pos = 12
    while True:             # our question name is never compressed; each step moves forward
        if pos >= n:
            return _ERROR, b"", 0
        length = response[pos]
        if length == 0:
            break
        if length > 63:
            return _ERROR, b"", 0
        pos += length + 1
    end = pos + 5
    if end > n:
        return _ERROR, b"", 0
    if rcode == 0:
        if response[6] or response[7]:
            return _NOERROR, response[12:end - 4].lower(), (response[end - 4] << 8) | response[end - 3]
        if not (response[8] or response[9]):
            if response[2] & _TC:                   # an answer too big for UDP: truncated, still an answer
                return _NOERROR, response[12:end - 4].lower(), (response[end - 4] << 8) | response[end - 3]
            return _ERROR, b"", 0                   # nothing at all: BADVERS and the like
        if response[2] & _AA:
            return _NODATA, response[12:end - 4].lower(), (response[end - 4] << 8) | response[end - 3]
        owner = _read_name(response, end)           # the NS owner: the delegation point
        if owner is None:
            return _ERROR, b"", 0
        return _REFERRAL, owner, 0
    pos = _skip_records(response, end, (response[6] << 8) | response[7])   # past a CNAME chain, to the SOA
    owner = _read_name(response, pos) if pos > 0 and (response[8] or response[9]) else None
    return _NXDOMAIN, owner if owner is not None else b"", 0


def slip_reply(response: bytes) -> bytes | None:
    """`response` cut to header + question + its OPT record, TC set, counts fixed; None if unsound."""
    if len(response) < 12:
        return None
    end = _question_end(response)
    if end < 0:
        return None
    an = (response[6] << 8) | response[7]
    ns = (response[8] << 8) | response[9]
    ar = (response[10] << 8) | response[11]
    pos = _skip_records(response, end, an + ns)
    if pos < 0 or ar > _MAX_RECORDS:
        return None
    opt = b""
    n = len(response)
    for _ in range(ar):
        start = pos
        pos = _skip_name(response, pos)
        if pos < 0 or pos + 10 > n:
            return None
        rtype = (response[pos] << 8) | response[pos + 1]
        pos += 10 + ((response[pos + 8] << 8) | response[pos + 9])
        if pos > n:
            return None
        if rtype == _OPT and not opt:
            opt = response[start:pos]
    return (response[:2] + bytes([response[2] | _TC, response[3]]) + response[4:6]
            + b"\x00\x00\x00\x00\x00" + (b"\x01" if opt else b"\x00") + response[12:end] + opt)


class RateLimiter:
    """Token buckets per (client network, response class, name, qtype); see the module docstring."""

    def __init__(self, settings: RrlSettings, *, stats: RrlStats | None = None, share: int = 1) -> None:
        """`share`: the number of processes the rates are shared by (the GSLB's workers). Each enforces
        1/share of every rate, with a burst of at least one response: the kernel's SO_REUSEPORT hash
        spreads a network's source ports over the workers, so together they send the configured rate
        (a client that sticks to one source port reaches one worker and gets 1/share of it)."""
        if share < 1:
            raise ValueError(f"share must be >= 1, got {share!r}")
        self.settings = settings
        self.share = share
        self.stats = stats if stats is not None else RrlStats()
        self._table: OrderedDict[tuple[int, int, bytes, int], _Bucket] = OrderedDict()
        self._max = settings.max_table_size
        self._window = settings.window
        self._slip = settings.slip
        self._v4_shift = 32 - settings.ipv4_prefix
        self._v6_shift = 128 - settings.ipv6_prefix
        responses = settings.responses_per_second / share
        self._rates = (responses, responses, responses, settings.nxdomains_per_second / share,
                       settings.errors_per_second / share)
        self._bursts = tuple(max(rate, 1.0) for rate in self._rates)   # (= the rate unless shared below 1/s)
        self._unlogged = 0                      # limited replies not yet reported in the log
        self._log_after = -math.inf

    def __repr__(self) -> str:
        s = self.settings
        shared = f" shared by {self.share}" if self.share > 1 else ""
        return (f"<RateLimiter {s.responses_per_second}/s answers, {s.nxdomains_per_second}/s nxdomain, "
                f"{s.errors_per_second}/s errors{shared}, slip {s.slip} [{len(self._table)}/{self._max} buckets]>")

    def __len__(self) -> int:
        return len(self._table)

    def network(self, client: IPAddress) -> int:
        """The client's network as an int (IPv6 networks are negative, so they never equal an IPv4 one).

        An IPv4-mapped IPv6 address (::ffff:a.b.c.d, from a dual-stack socket) counts as its IPv4
        address: otherwise every IPv4 client would share one /56."""
        if client.version == 4:
            return int(client) >> self._v4_shift
        mapped = client.ipv4_mapped
        if mapped is not None:
            return int(mapped) >> self._v4_shift
        return -1 - (int(client) >> self._v6_shift)

    def decide(self, response: bytes, client: IPAddress, now: float) -> Action:
        """SEND, DROP or SLIP for `response` to `client` at `now` (seconds, monotonic)."""
        cls, name, qtype = _classify(response)
        rate = self._rates[cls]
        if rate <= 0.0:
            return _SEND
        if type(client) is ipaddress.IPv4Address:
            key = (int(client) >> self._v4_shift, cls, name, qtype)
        else:
            key = (self.network(client), cls, name, qtype)
        table = self._table
        bucket = table.get(key)
        if bucket is None:
            if len(table) >= self._max:
                table.popitem(last=False)
                self.stats.evicted += 1
            table[key] = _Bucket(self._bursts[cls] - 1.0, now)
            return _SEND
        table.move_to_end(key)
        balance = bucket.balance
        elapsed = now - bucket.stamp
        if elapsed > 0.0:               # a clock that goes back earns nothing
            balance += elapsed * rate
            burst = self._bursts[cls]
            if balance > burst:
                balance = burst
            bucket.stamp = now
        balance -= 1.0
        if balance >= 0.0:
            bucket.balance = balance
            return _SEND
        floor = -rate * self._window
        bucket.balance = balance if balance > floor else floor
        stats = self.stats
        stats.limited += 1
        stats.by_class[_CLASS_NAMES[cls]] += 1
        slip = self._slip
        if slip == 0 or cls == _ERROR:
            return _DROP
        slips = bucket.slips
        bucket.slips = (slips + 1) % slip
        return _SLIP if slips == 0 else _DROP

    def limit(self, response: bytes, client: IPAddress, now: float, *, query: bytes = b"",
              exempt: Callable[[bytes, Any, float], bool] | None = None) -> bytes | None:
        """The bytes to send for `response` (itself, its slip reply) or None to drop it.

        `exempt(query, client, now)` is called only when over the limit: True (e.g. the query
        carried a valid server cookie) sends the response whole."""
        action = self.decide(response, client, now)
        if action is _SEND:
            return response
        stats = self.stats
        if exempt is not None and exempt(query, client, now):
            stats.exempt_cookie += 1
            return response
        self._unlogged += 1
        if now >= self._log_after:
            self._log(response, client, now, action)
        if action is _SLIP:
            reply = slip_reply(response)
            if reply is not None:
                stats.slipped += 1
                return reply
        stats.dropped += 1
        return None

    def _log(self, response: bytes, client: IPAddress, now: float, action: Action) -> None:
        """One line per LOG_INTERVAL at most: how many replies were limited, and the latest one."""
        cls, name, qtype = _classify(response)
        v4 = client.ipv4_mapped if isinstance(client, ipaddress.IPv6Address) else client
        if v4 is not None:
            net = ipaddress.ip_network((v4, self.settings.ipv4_prefix), strict=False)
        else:
            net = ipaddress.ip_network((client, self.settings.ipv6_prefix), strict=False)
        log.warning("rate limiting UDP replies: %d limited since the last report; latest to %s: %s %s type %d, %s",
                    self._unlogged, net, _CLASS_NAMES[cls], _name_text(name) if name else "-", qtype,
                    "slipped (TC=1)" if action is _SLIP else "dropped")
        self._unlogged = 0
        self._log_after = now + LOG_INTERVAL


class _Answering(Protocol):
    def respond(self, data: bytes, client: Any, now: float, *, tcp: bool = False) -> bytes | None: ...


class RateLimitedResponder:
    """A responder whose UDP replies go through a RateLimiter; TCP replies never do.

    `exempt(query, client, now)` says whether a query is exempt: `Responder.cookie_valid` (a
    valid server cookie, see cookies.py); it is called only for replies over the limit."""

    __slots__ = ("exempt", "limiter", "responder")

    def __init__(self, responder: _Answering, limiter: RateLimiter,
                 exempt: Callable[[bytes, Any, float], bool] | None = None) -> None:
        self.responder = responder
        self.limiter = limiter
        self.exempt = exempt

    def __repr__(self) -> str:
        return f"<RateLimitedResponder {self.responder!r} {self.limiter!r}>"

    def respond(self, data: bytes, client: Any, now: float, *, tcp: bool = False) -> bytes | None:
        reply = self.responder.respond(data, client, now, tcp=tcp)
        if reply is None or tcp:
            return reply
        return self.limiter.limit(reply, client, now, query=data, exempt=self.exempt)
