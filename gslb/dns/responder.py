"""The authoritative responder: datagram in, datagram out  [pure].

    responder = Responder(zones, steering, max_udp_size=1232, stats=ResponderStats(),
                          cookies=ServerCookies([secret]), nsid=b"ns1", identity="ns1", version="gslb")
    reply = responder.respond(data, client, now, tcp=False)    # bytes, or None: drop
    responder.cookie_valid(data, client, now)                  # for rate limiting (see cookies.py)
    responder.on_answer = sampler     # optional AnswerSink, told of 1 in `sampler.every` cache-miss service
                                      # answers (the status page's gslb/status.py AnswerSampler)

Two paths give the same bytes:

* the reference path (`respond_uncached`): parse the query (wire.py), resolve it
  against the zones and the steering (`_resolve`), pack the response
  (`_pack`: compression, EDNS options, truncation);
* the fast path (`respond`): a cache keyed by the *normalised question*
  (`_cache_key`: the name lower-cased, type, class, RD and CD, and with EDNS
  the UDP limit it gives, DO, the ECS option, NSID and whether a COOKIE came;
  plus the client's /24 or /56 when the answer came from steering without
  ECS). Only the usual query shape gets a key (one uncompressed question, an
  OPT record at most, version 0, sound options); anything else is parsed.
  An entry keeps the reply's header and what follows the question; a hit
  splices the query's ID and its own question (its case) between them, and for
  a query with a cookie appends its client cookie and a fresh server cookie
  (the COOKIE option is always the last bytes of a reply), so queries that
  differ in case, padding or client cookie share one entry and nobody is ever
  served another client's cookie. A cookie-free query's own bytes (up to 512)
  also point at its entry, so an identical repeat skips the key scan.
  The cache is bounded by entries (`cache_size`) and by bytes
  (`cache_max_bytes`: keys, kept bytes and a per-entry overhead estimate) and is
  emptied when either is reached; `stats.cache_entries` / `cache_bytes` say
  how full it is. An entry lives while `steering.generation` is unchanged
  and, for service answers, for `ServiceAnswer.cache_for` seconds (0: never
  cached). An answer that carries `ServiceAnswer.data_generation` (a latency
  service: it used measured RTTs) is reused only while
  `steering.data_generation` equals it, so a latency push drops those entries
  alone. A miss whose query ends with an ECS option skips the parser when a
  query of the same *shape* (the same bytes except the ID and the ECS address;
  at most 512 bytes, no cookie) was parsed before: the shape keeps the parsed
  question, EDNS fields and the writer state after the question; only the
  address is new (its trailing bits are checked as the parser would). A shape
  is learnt only after a second parse with every address bit flipped proved
  that the tail is the ECS address and nothing else.
  A UDP miss of a known shape whose question is a service name the steering has
  a compiled table for (`steering.fast_answer`, gslb/steering/table.py) skips
  the parser, the zone walk and packing: the steering returns its interned
  ServiceAnswer, and the reply is the query's ID, a template made once per
  (shape, answer object) by the reference path, and the query's ECS address.
  Such queries are remembered by their bytes (FAST_RAW_SIZE entries, emptied
  when full) with their template while the steering's generation (and for a
  latency service its data_generation) lasts: a compiled answer does not age
  otherwise. They never enter the response cache.

EDNS (RFC 6891, 7873, 9018, 5001): every reply to a query whose OPT record
could be read carries OPT (FORMERR, NOTIMP, BADVERS, REFUSED, SERVFAIL too);
header-only error replies copy the opcode and RD, nothing else. With
`cookies`, a query's client cookie is echoed with a fresh server cookie; a
missing or invalid server cookie still gets the answer unless
`require_cookies`, then UDP queries with a cookie but no valid server cookie
get BADCOOKIE (23) with a fresh cookie and no answer; TCP queries and queries
without any cookie are answered (RFC 7873 §5.2.1, §5.2.3: rate limiting deals
with those). Cookie times come from `wall()` (Unix time), or `now` without it.
NSID is echoed with the configured bytes when asked; CHAOS TXT id.server /
hostname.bind answer `identity`, version.bind / version.server `version`;
off (REFUSED) when not configured.

Resolution (RFC 1034 §4.3.2 with RFC 2308, 4592, 6604, 6891, 7871, 8482):
REFUSED outside our zones; referral (AA=0, NS in authority, glue in
additional) at or below a delegation; CNAME chains followed through our
zones (into service names too) with loop protection; service names answered
by `steering.answer`; static records, wildcards and empty non-terminals from
the zone; NXDOMAIN / NODATA with the SOA in authority at the negative TTL.
A name's static A/AAAA win over the steering; a service name that also holds
other static data (the apex with SOA/NS/MX, or a name with TXT) gets its A/AAAA
from the steering. ANY is answered with one RRset (HINFO "RFC8482" for a
service name, without asking the steering).
`respond` never raises: an unexpected error is counted in
`stats.internal_errors`, logged (logger "gslb.dns", one line with the
exception and the query in hex, at most one line a second by `now`, the
others counted in the next line) and the query dropped.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import struct
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Protocol

from gslb.dns.cookies import COOKIE_OPTION, ServerCookies, query_cookie_valid
from gslb.dns.ecs import (
    ECS_OPTION,
    V4_CAP,
    V6_CAP,
    ClientSubnet,
    IPAddress,
    _embedded_v4,
    client_network,
    echo_scope,
    locate,
)
from gslb.dns.errors import BadVersion, FormError, NotImplementedOpcode, Unanswerable, WireError
from gslb.dns.records import (
    AAAA,
    ANY,
    AXFR,
    CNAME,
    DS,
    HINFO,
    IXFR,
    NS,
    OPT,
    SOA,
    TXT,
    TYPE_NAMES,
    A,
    RRset,
    check_name,
    in_zone,
)
from gslb.dns.wire import (
    AA,
    BADVERS,
    CD,
    FORMERR,
    HEADER,
    NOTIMP,
    NXDOMAIN,
    OPCODE_MASK,
    QR,
    RCODE_NAMES,
    RD,
    REFUSED,
    SERVFAIL,
    TC,
    Edns,
    MessageWriter,
    Query,
    Question,
    name_text,
    parse_query,
)
from gslb.dns.zone import Zone
from gslb.steering.base import ServiceAnswer, ServiceSteering

_RR_HEAD = struct.Struct("!HHIH")     # type, class, ttl, rdlength

MAX_CHAIN = 8          # CNAME hops followed before giving up
TCP_LIMIT = 65535
MAX_SHAPES = 1024      # query shapes remembered by the fast path (cleared when full)
MAX_TEMPLATES = 256    # compiled-answer templates per shape (cleared when full)
FAST_RAW_SIZE = 16_384  # compiled answers remembered by the query's bytes (cleared when full)
# ECS address lengths tried at the end of a query, the usual first (/24 v4, /56 v6, /32, /64)
_ECS_TAIL_LENGTHS = (3, 7, 4, 8, 16, 6, 2, 5, 1, 9, 10, 11, 12, 13, 14, 15, 0)


def _ecs_tail(data: bytes) -> int:
    """The length of the ECS address if `data` may end with a Client Subnet option, else -1."""
    n = len(data)
    for length in _ECS_TAIL_LENGTHS:
        p = n - length - 8
        if p >= 12 and data[p] == 0 and data[p + 1] == 8 and data[p + 2] == 0 and data[p + 3] == length + 4 \
                and (data[p + 6] + 7) >> 3 == length:
            return length
    return -1


_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"      # QD=1, AN=NS=AR=0
_COUNTS_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"        # QD=1, AR=1 (the OPT record)
NSID_OPTION = 3
BADCOOKIE = 23
_RCODE_LABELS = {**RCODE_NAMES, BADCOOKIE: "BADCOOKIE"}
CHAOS = 3
MAX_SHAPE_QUERY = 512          # longer queries never become shapes (a shape keeps the query's bytes)
MAX_ALIAS_QUERY = 512          # longer queries are found by their normalised key only
ALIAS_OVERHEAD = 120           # bytes an alias costs beyond the query's bytes (bytes object, dict slot)
ENTRY_OVERHEAD = 320           # bytes an entry costs beyond its key and response bytes (objects, dict slot)
_LOG_QUERY_BYTES = 256         # an internal error logs at most this much of the query (in hex)

log = logging.getLogger("gslb.dns")
_OPT_FIXED = struct.Struct("!BHHBBBBH")     # root owner, type, UDP size, ext. rcode, version, flags, rdlength
_OPTION_HEAD = struct.Struct("!HH")
_KEY_TAIL = struct.Struct("!BBH")           # RD|CD, DO|NSID|COOKIE, UDP limit
_FLAGS_BYTE = tuple(bytes((i,)) for i in range(256))


def _cache_key(data: bytes, max_udp_size: int) -> tuple[bytes, int, bytes | None] | None:
    """The normalised question of the usual query, or None (then the query takes the slow path).

    (key, end of the question, COOKIE option data or None). The key holds what the response
    depends on and nothing else: the question with its name lower-cased, RD and CD, and with
    an OPT record the UDP limit it gives, DO, the ECS option as received, NSID, a COOKIE's
    presence. Padding, other options, the ID, other flag bits and the client cookie's value are
    left out, so such queries share one entry. Only the shape the parser reads the same way
    qualifies: opcode QUERY, one uncompressed question, nothing but one OPT record after it,
    EDNS version 0, sound options; everything else (and every error) goes to the parser.
    """
    n = len(data)
    if n < 17 or data[2] & 0xF8:            # QR or an opcode: the parser decides
        return None
    counts = data[4:12]
    p = 12
    try:
        length = data[12]
        while length:
            if length > 63:                 # a pointer or a reserved label type
                return None
            p += length + 1
            length = data[p]
    except IndexError:
        return None
    if p > 266:                             # a name over 255 bytes: FORMERR from the parser
        return None
    qend = p + 5
    flags = (data[2] & 0x01) | (data[3] & 0x10)
    if counts == _COUNTS_PLAIN:
        if qend != n:
            return None
        return data[12:p].lower() + data[p:qend] + _FLAGS_BYTE[flags], qend, None
    if counts != _COUNTS_OPT or qend + 11 > n:
        return None
    root, rtype, udp, _, version, high, _, rdlength = _OPT_FIXED.unpack_from(data, qend)
    o = qend + 11
    if root or rtype != OPT or version or o + rdlength != n:
        return None
    limit = 512 if udp < 512 else (udp if udp < max_udp_size else max_udp_size)
    bits = high >> 7                        # DO
    ecs = b""
    cookie: bytes | None = None
    while o < n:
        if o + 4 > n:
            return None
        code, size = _OPTION_HEAD.unpack_from(data, o)
        o += 4
        if o + size > n:
            return None
        if code == ECS_OPTION:
            if ecs:
                return None
            ecs = data[o - 4:o + size]
        elif code == COOKIE_OPTION:
            if cookie is not None or (size != 8 and not 16 <= size <= 40):
                return None
            cookie = data[o:o + size]
            bits |= 4
        elif code == NSID_OPTION:
            bits |= 2
        o += size
    return data[12:p].lower() + data[p:qend] + _KEY_TAIL.pack(flags, bits, limit) + ecs, qend, cookie


class _Shape:
    """A query layout seen before: all but the ID and the ECS address at its end is known."""

    __slots__ = ("do", "family", "fast", "flags", "question", "source", "trailing", "udp_size", "version", "writer")

    def __init__(self, query: Query, ecs: ClientSubnet, writer: tuple[bytes, dict[str, int], list[int]]) -> None:
        assert query.edns is not None
        self.fast: _FastShape | bool | None = None     # compiled-table answers: None = not yet asked
        self.flags = query.flags
        self.question = query.question
        self.udp_size = query.edns.udp_size
        self.version = query.edns.version
        self.do = query.edns.do
        self.family = ecs.family
        self.source = ecs.source
        self.trailing = 0xFF >> (ecs.source % 8) if ecs.source % 8 else 0   # bits that must be 0
        self.writer = writer

    def query(self, msg_id: int, address: bytes) -> Query:
        ecs = ClientSubnet(self.family, self.source, 0, address)
        return Query(msg_id, self.flags, self.question, Edns(self.udp_size, self.version, self.do, ecs))


class _FastShape:
    """A shape whose question is a service answered straight from the steering's compiled table:
    the reply is the query's ID, a template per answer, and the query's ECS address."""

    __slots__ = ("name", "qtype", "source", "templates", "version")

    def __init__(self, name: str, qtype: str, version: int, source: int) -> None:
        self.name = name
        self.qtype = qtype              # label for the stats
        self.version = version
        self.source = source            # SOURCE PREFIX-LENGTH as sent (capped when located)
        self.templates: dict[int, _Template] = {}       # id(ServiceAnswer) -> template


class _Template:
    """The bytes of a reply between the ID and the ECS address, for one ServiceAnswer object (the
    steering keeps it while its generation lasts); what it counts is its `tally`."""

    __slots__ = ("all_down", "answer", "data_generation", "generation", "qtype", "rcode", "regions", "rest",
                 "tail", "tally", "truncated")

    def __init__(self, answer: ServiceAnswer, rest: bytes, generation: int, rcode: str, qtype: str,
                 regions: tuple[str, ...], all_down: tuple[str, ...]) -> None:
        self.answer = answer
        self.rest = rest
        self.generation = generation
        self.rcode = rcode
        self.qtype = qtype
        self.regions = regions
        self.all_down = all_down
        self.truncated = False
        self.tally: Tally | None = None     # set by the responder: what its answers add to
        self.data_generation = answer.data_generation     # latency data used (None: none)
        self.tail = 0                   # bytes of the query's ECS address that end the reply


class AnswerSink(Protocol):
    """What the responder tells of cache-miss service answers (gslb/status.py AnswerSampler): one in
    `every`, with the located client, and `seen`, the answers since the last one it was told of."""

    every: int

    def add(self, client: IPAddress, regions: tuple[str, ...], now: float, seen: int) -> None: ...


class Tally:
    """The counts of one outcome: rcode, qtype, the regions answered, the services whose all-down
    rule applied, truncated or not. Every cached entry and compiled template with that outcome holds
    the same Tally, and its hot path adds 1 to `hits` or `misses` instead of updating the five
    counters of ResponderStats (which fold the tallies in when read)."""

    __slots__ = ("all_down", "hits", "misses", "qtype", "rcode", "regions", "truncated")

    def __init__(self, rcode: str, qtype: str, regions: tuple[str, ...], all_down: tuple[str, ...],
                 truncated: bool) -> None:
        self.rcode = rcode
        self.qtype = qtype
        self.regions = regions
        self.all_down = all_down
        self.truncated = truncated
        self.hits = 0       # served from a cached reply or a remembered compiled answer
        self.misses = 0     # answered by the compiled table (a cache miss)

    def __repr__(self) -> str:
        return f"<Tally {self.rcode} {self.qtype} {self.regions} {self.hits} hits {self.misses} misses>"


MAX_TALLIES = 4096      # distinct outcomes counted by tally; past it, entries count directly (slower)


class ResponderStats:
    """Plain counters; the server exports them (labels are bounded: known names or OTHER).

    `queries`, `cache_hits`, `cache_misses`, `truncated` and the four `by_*` / `all_down` Counters
    are read-only views: the slow path counts into the direct fields (`count`), the hot paths into
    their outcome's Tally, and a read adds both up (O(distinct outcomes), a scrape's cost, not a
    query's). The other fields are plain ints the responder and server set."""

    __slots__ = ("_all_down", "_by_qtype", "_by_rcode", "_by_region", "_hits", "_misses", "_queries", "_tallies",
                 "_truncated", "cache_bytes", "cache_clears", "cache_entries", "cookies", "cookies_valid",
                 "dropped", "internal_errors", "nsid", "steering_errors")

    def __init__(self) -> None:
        self.dropped = 0            # no reply: garbage, responses, internal errors
        self.steering_errors = 0    # steering.answer raised: SERVFAIL
        self.internal_errors = 0    # a bug: the query was dropped (logged, at most one line a second)
        self.cookies = 0            # queries with a COOKIE option (cookies enabled)
        self.cookies_valid = 0      # ... whose server cookie was valid (ours, this client, in its time window)
        self.nsid = 0               # NSID options answered
        self.cache_entries = 0      # responses in the cache now (both transports, per-client answers each)
        self.cache_bytes = 0        # their estimated size (keys, bytes, overhead)
        self.cache_clears = 0       # the cache reached its entries or bytes limit and was emptied
        self._queries = self._hits = self._misses = self._truncated = 0
        self._by_rcode: Counter[str] = Counter()
        self._by_qtype: Counter[str] = Counter()
        self._by_region: Counter[str] = Counter()      # answers holding each region
        self._all_down: Counter[str] = Counter()       # all-down rule applied, by service
        self._tallies: dict[tuple[str, str, tuple[str, ...], tuple[str, ...], bool], Tally] = {}

    # -- counting ---------------------------------------------------------------------
    def query(self) -> None:
        """A query reached the slow path (it may still be dropped)."""
        self._queries += 1
        self._misses += 1

    def count(self, rcode: str, qtype: str, regions: tuple[str, ...], all_down: tuple[str, ...],
              truncated: bool) -> None:
        """An answer of the slow path (its query was counted by `query`)."""
        self._by_rcode[rcode] += 1
        self._by_qtype[qtype] += 1
        if truncated:
            self._truncated += 1
        for region in regions:
            self._by_region[region] += 1
        for service in all_down:
            self._all_down[service] += 1

    def count_direct(self, entry: _Entry | _Template, *, hit: bool) -> None:
        """One answer of an entry or template that has no Tally (past MAX_TALLIES)."""
        self._queries += 1
        if hit:
            self._hits += 1
        else:
            self._misses += 1
        self.count(entry.rcode, entry.qtype, entry.regions, entry.all_down, entry.truncated)

    def tally(self, rcode: str, qtype: str, regions: tuple[str, ...], all_down: tuple[str, ...],
              truncated: bool) -> Tally | None:
        """The shared Tally of this outcome; None once MAX_TALLIES outcomes are known (count directly)."""
        key = (rcode, qtype, regions, all_down, truncated)
        found = self._tallies.get(key)
        if found is None and len(self._tallies) < MAX_TALLIES:
            found = self._tallies[key] = Tally(rcode, qtype, regions, all_down, truncated)
        return found

    # -- reading ----------------------------------------------------------------------
    @property
    def queries(self) -> int:
        return self._queries + sum(t.hits + t.misses for t in self._tallies.values())

    @property
    def cache_hits(self) -> int:
        return self._hits + sum(t.hits for t in self._tallies.values())

    @property
    def cache_misses(self) -> int:
        return self._misses + sum(t.misses for t in self._tallies.values())

    @property
    def truncated(self) -> int:
        """TC=1 sent."""
        return self._truncated + sum(t.hits + t.misses for t in self._tallies.values() if t.truncated)

    def _fold(self, direct: Counter[str], labels: Callable[[Tally], Iterable[str]]) -> Counter[str]:
        out = Counter(direct)
        for t in self._tallies.values():
            n = t.hits + t.misses
            if n:
                for label in labels(t):
                    out[label] += n
        return out

    @property
    def by_rcode(self) -> Counter[str]:
        return self._fold(self._by_rcode, lambda t: (t.rcode,))

    @property
    def by_qtype(self) -> Counter[str]:
        return self._fold(self._by_qtype, lambda t: (t.qtype,))

    @property
    def by_region(self) -> Counter[str]:
        """Answers holding each region."""
        return self._fold(self._by_region, lambda t: t.regions)

    @property
    def all_down(self) -> Counter[str]:
        """The all-down rule applied, by service."""
        return self._fold(self._all_down, lambda t: t.all_down)

    def __repr__(self) -> str:
        return (f"<ResponderStats {self.queries} queries, {self.cache_hits} hits, "
                f"{self.dropped} dropped, rcodes={dict(self.by_rcode)}>")


class _Result:
    """What resolution decided, before packing."""

    __slots__ = ("aa", "additional", "all_down", "answer", "authority", "cache_for", "client_dependent",
                 "data_generation", "located", "rclass", "rcode", "referral", "regions", "scope")

    def __init__(self) -> None:
        self.rcode = 0
        self.rclass = 1             # CHAOS for the id.server / version.bind answers
        self.aa = True
        self.referral = False
        self.answer: list[tuple[str, RRset]] = []
        self.authority: list[tuple[str, RRset]] = []
        self.additional: list[tuple[str, RRset]] = []
        self.scope = 0
        self.cache_for = math.inf
        self.client_dependent = False
        self.data_generation: int | None = None
        self.located: tuple[IPAddress, int | None, int] | None = None
        self.regions: tuple[str, ...] = ()
        self.all_down: tuple[str, ...] = ()


class _Entry:
    """A packed response and what to count when it is served again. The reply is the query's ID,
    `head` (flags and counts), the query's own question, `tail`, and for a query with a cookie
    its client cookie and a fresh server cookie (the COOKIE option is the message's last bytes)."""

    __slots__ = ("all_down", "data_generation", "expires", "generation", "head", "per_client", "qend", "qtype",
                 "rcode", "regions", "tail", "tally", "truncated")

    def __init__(self, head: bytes, tail: bytes, generation: int, expires: float, rcode: str, qtype: str,
                 regions: tuple[str, ...], all_down: tuple[str, ...], truncated: bool) -> None:
        self.head = head
        self.tail = tail
        self.qend = 0                   # where the question ends (the query's own is spliced in)
        self.generation = generation
        self.expires = expires
        self.rcode = rcode
        self.qtype = qtype
        self.regions = regions
        self.all_down = all_down
        self.truncated = truncated
        self.tally: Tally | None = None     # set when stored: what serving it adds to
        self.per_client: dict[int, _Entry] | None = None
        self.data_generation: int | None = None     # reuse only while steering.data_generation equals it


class _SteeringFailed(Exception):
    """steering.answer raised or returned something unusable."""


@lru_cache(maxsize=4096)
def _packed_address(rtype: int, text: str) -> bytes:
    if rtype == A:
        return ipaddress.IPv4Address(text).packed
    return ipaddress.IPv6Address(text).packed


_NEW_V4 = object.__new__


def _v4_address(value: int) -> ipaddress.IPv4Address:
    """IPv4Address(value) for a value known to be in range, without the constructor's checks (the
    compiled miss path tells `on_answer` the client per query; the checks cost more than the rest)."""
    address = _NEW_V4(ipaddress.IPv4Address)
    address._ip = value  # type: ignore[attr-defined]  # the slot IPv4Address reads (ipaddress, 3.3+)
    return address


def _qtype_label(qtype: int) -> str:
    return TYPE_NAMES.get(qtype, "OTHER")


class Responder:
    """Answers queries for `zones`, asking `steering` about service names.

    `cookies` (ServerCookies) turns DNS Cookies on; `require_cookies` answers BADCOOKIE to UDP
    queries whose server cookie is missing or invalid; `nsid` is echoed to queries with an NSID
    option; `identity` / `version` answer CHAOS TXT id.server + hostname.bind / version.bind +
    version.server. `wall` gives Unix time for cookies (default: the `now` passed in).
    """

    def __init__(self, zones: Iterable[Zone], steering: ServiceSteering, *, max_udp_size: int = 1232,
                 stats: ResponderStats | None = None, cache_size: int = 50_000,
                 cache_max_bytes: int = 64 * 1024 * 1024, cookies: ServerCookies | None = None,
                 require_cookies: bool = False, nsid: bytes | None = None, identity: str | None = None,
                 version: str | None = None, wall: Callable[[], float] | None = None) -> None:
        self.zones = tuple(zones)
        self._zones = {zone.origin: zone for zone in self.zones}
        self._steering = steering
        self.max_udp_size = max(512, min(int(max_udp_size), TCP_LIMIT))
        self.stats = stats if stats is not None else ResponderStats()
        self.cache_size = cache_size
        self.cache_max_bytes = cache_max_bytes
        self._cookies = cookies
        self._require_cookies = bool(require_cookies and cookies is not None)
        self._nsid = None if nsid is None else struct.pack("!HH", NSID_OPTION, len(nsid)) + nsid
        self._chaos: dict[str, RRset] = {}
        for names, text in ((("id.server", "hostname.bind"), identity), (("version.bind", "version.server"), version)):
            if text is not None:
                raw = text.encode()[:255]
                for chaos_name in names:
                    self._chaos[chaos_name] = RRset(TXT, 0, ((bytes([len(raw)]) + raw,),))
        self._wall = wall
        # on_answer.add(client, regions, now, seen): told of 1 in `on_answer.every` cache-miss service
        # answers (the status page's sample); the responder counts down, so the other answers cost no call
        # page's sampler, gslb/status.py); None: nothing is called
        self.on_answer: AnswerSink | None = None
        self._unsampled = 0                 # answers since the last one on_answer was told of
        self._caching = cache_size > 0 and cache_max_bytes > 0
        self._udp_cache: dict[bytes, _Entry] = {}          # normalised question -> entry
        self._tcp_cache: dict[bytes, _Entry] = {}
        self._udp_raw: dict[bytes, _Entry] = {}            # a query's bytes after the ID -> the same entry
        self._tcp_raw: dict[bytes, _Entry] = {}
        self._aliases = 0
        self._cached = 0
        self._cached_bytes = 0
        self.stats.cache_entries = self.stats.cache_bytes = 0
        self._log_after = -math.inf         # the next internal error may be logged from then on
        self._log_suppressed = 0
        self._shapes: dict[bytes, _Shape] = {}
        self._fast_answer = steering.fast_answer     # the compiled-table seam (None: use `answer`)
        # query bytes after the ID -> its compiled template (a miss), then (template, reply bytes after the ID)
        self._fast_raw: dict[bytes, _Template | tuple[_Template, bytes]] = {}
        self._rrsets: dict[tuple[int, int, tuple[str, ...]], RRset] = {}
        self._negative_soa = {zone.origin: RRset(SOA, zone.negative_ttl, zone.soa_rrset.rdatas)
                              for zone in self.zones}
        # Names above a service name exist (empty non-terminals): NODATA for them, never NXDOMAIN.
        self._service_parents = frozenset(
            parent for service in steering.services for parent in _parents(service))

    def __repr__(self) -> str:
        return (f"<Responder {', '.join(self._zones) or 'no zones'} "
                f"[cache {self._cached}/{self.cache_size}, {self._cached_bytes}/{self.cache_max_bytes} bytes]>")

    # -- fast path ------------------------------------------------------------------
    def respond(self, data: bytes, client: IPAddress, now: float, *, tcp: bool = False) -> bytes | None:
        """The response to `data` from `client` (the resolver's address), or None to drop it."""
        if type(data) is not bytes:
            data = bytes(data)
        if not self._caching:
            return self._respond_slow(data, client, now, tcp, None)
        raw = data[2:]
        entry = (self._tcp_raw if tcp else self._udp_raw).get(raw)
        if entry is not None:           # these very bytes were answered before (inline: the hot path)
            if entry.per_client is not None:
                entry = entry.per_client.get(client_network(client))
            if entry is not None and now < entry.expires and entry.generation == self._steering.generation \
                    and (entry.data_generation is None
                         or entry.data_generation == self._steering.data_generation):
                tally = entry.tally
                if tally is not None:
                    tally.hits += 1
                else:
                    self.stats.count_direct(entry, hit=True)
                return data[:2] + entry.head + data[12:entry.qend] + entry.tail
        if not tcp:
            hit = self._fast_raw.get(raw)
            if hit is not None:
                if isinstance(hit, tuple):
                    template, rest = hit
                else:                           # its first repeat: keep the reply's bytes from now on
                    template, rest = hit, b""
                if template.generation == self._steering.generation \
                        and (template.data_generation is None
                             or template.data_generation == self._steering.data_generation):
                    self._count_hit(template)
                    if not rest:
                        rest = template.rest + data[len(data) - template.tail:]
                        self._fast_raw[raw] = (template, rest)
                    return data[:2] + rest
            reply = self._fast_miss(data, raw, client, now)
            if reply is not None:
                return reply
        scanned = _cache_key(data, self.max_udp_size)
        if scanned is None:
            return self._respond_slow(data, client, now, tcp, None)
        key, qend, cookie = scanned
        holder = (self._tcp_cache if tcp else self._udp_cache).get(key)
        entry = self._fresh(holder, client, now) if holder is not None else None
        if entry is None:
            return self._respond_slow(data, client, now, tcp, scanned)
        cookies = self._cookies
        if cookie is not None and cookies is not None:
            wall = self._wall() if self._wall is not None else now
            if len(cookie) > 8 and cookies.valid(cookie, client, wall):
                self.stats.cookies_valid += 1
            elif self._require_cookies and not tcp:
                return self._respond_slow(data, client, now, tcp, scanned)      # BADCOOKIE
            self.stats.cookies += 1
            client_part = cookie[:8]
            reply = (data[:2] + entry.head + data[12:qend] + entry.tail + client_part
                     + cookies.make(client_part, client, wall))
        else:
            reply = data[:2] + entry.head + data[12:qend] + entry.tail
            self._alias(raw, holder, tcp)   # type: ignore[arg-type]
        self._count_hit(entry)
        return reply

    def _fast_miss(self, data: bytes, raw: bytes, client: IPAddress, now: float) -> bytes | None:
        """A miss answered from the steering's compiled table (UDP, a known ECS shape whose question
        is a service name): the table's answer object picks a template made by the reference path
        the first time, the query's ID and ECS address go around it. None: take the usual path."""
        if len(data) < 23 or data[11] != 1 or data[10]:
            return None                 # not exactly one additional record: no OPT at the end
        if data[-11] == 0 and data[-10] == 8 and data[-9] == 0 and data[-8] == 7 and data[-5] == 24:
            length = 3                  # the usual: an IPv4 /24 (what _ecs_tail tries first)
        else:
            length = _ecs_tail(data)
            if length <= 0:
                return None
        end = len(data) - length
        shape = self._shapes.get(data[2:end])
        if shape is None:
            return None
        fast = shape.fast
        if fast is None:
            fast = shape.fast = self._fast_shape(shape)
        if fast is False:
            return None
        assert isinstance(fast, _FastShape)
        address = data[end:]
        if address[-1] & shape.trailing:
            return None                 # the parser's FORMERR
        source = fast.source
        if fast.version == 4:
            source = source if source < V4_CAP else V4_CAP
            value = int.from_bytes(address, "big") << (32 - 8 * length) >> (32 - source) << (32 - source)
        else:
            value = int.from_bytes(address, "big") << (128 - 8 * length)
            if _embedded_v4(value, source) is not None:
                return None
            source = source if source < V6_CAP else V6_CAP
            value = value >> (128 - source) << (128 - source)
        answer = self._fast_answer(fast.name, fast.version, value, source)
        if answer is None:
            return None
        template = fast.templates.get(id(answer))
        if template is None or template.answer is not answer:     # (a template keeps its answer alive:
            steering = self._steering                               # the id is not reused meanwhile)
            reply = self._respond_slow(data, client, now, False, None)      # counts the miss itself
            if reply is None or reply[-length:] != address or reply[2] & 0x02 or answer.cname is not None \
                    or (len(reply) >= 4 and reply[3] & 0x0F == SERVFAIL):
                return reply
            if len(fast.templates) >= MAX_TEMPLATES:
                fast.templates.clear()
            decision = answer.decision
            fast.templates[id(answer)] = template = _Template(
                answer, reply[2:-length], steering.generation, _RCODE_LABELS.get(reply[3] & 0x0F, "OTHER"),
                fast.qtype, tuple(decision.regions), (fast.name,) if decision.all_down else ())
            template.tail = length
            template.tally = self.stats.tally(template.rcode, template.qtype, template.regions, template.all_down,
                                              False)
        else:
            tally = template.tally
            if tally is not None:
                tally.misses += 1
            else:
                self.stats.count_direct(template, hit=False)
            on_answer = self.on_answer
            if on_answer is not None and template.regions:
                self._unsampled += 1
                if self._unsampled >= on_answer.every:
                    self._tell(on_answer, _v4_address(value) if fast.version == 4 else ipaddress.IPv6Address(value),
                               template.regions, now)
            reply = data[:2] + template.rest + address
        fast_raw = self._fast_raw
        if len(fast_raw) >= FAST_RAW_SIZE:
            fast_raw.clear()
        fast_raw[raw] = template        # (a compiled answer does not age: the generations say when it moves)
        return reply

    def _fast_shape(self, shape: _Shape) -> _FastShape | bool:
        """Whether the shape's question goes straight to a compiled service: class IN, A or AAAA, a
        service name the zones resolve to the steering (no delegation, no static A/AAAA/CNAME there)."""
        question = shape.question
        name = question.name
        if question.qclass != 1 or question.qtype not in (A, AAAA) or "\\" in name or not shape.source \
                or shape.family not in (1, 2) or not self._steering.is_service(name):
            return False
        zone = self._zone_for(name)
        if zone is None or zone.find_cut(name) is not None:
            return False
        node = zone.nodes.get(name)
        if node is not None and (A in node or AAAA in node or CNAME in node):
            return False
        return _FastShape(name, _qtype_label(question.qtype), 4 if shape.family == 1 else 6, shape.source)

    def _fresh(self, entry: _Entry, client: IPAddress, now: float) -> _Entry | None:
        """The entry (or the client network's, for a per-client holder) if it may still be served."""
        if entry.per_client is not None:
            found = entry.per_client.get(client_network(client))
            if found is None:
                return None
            entry = found
        if now < entry.expires and entry.generation == self._steering.generation \
                and (entry.data_generation is None
                     or entry.data_generation == self._steering.data_generation):
            return entry
        return None

    def _tell(self, on_answer: AnswerSink, client: IPAddress, regions: tuple[str, ...], now: float) -> None:
        seen, self._unsampled = self._unsampled, 0
        try:
            on_answer.add(client, regions, now, seen)
        except Exception:       # an observer's bug must not cost the reply: `respond` never raises
            self.stats.internal_errors += 1

    def _count_hit(self, entry: _Entry | _Template) -> None:
        tally = entry.tally
        if tally is not None:
            tally.hits += 1
        else:
            self.stats.count_direct(entry, hit=True)

    def _alias(self, raw: bytes, holder: _Entry, tcp: bool) -> None:
        """Remember a cookie-free query's own bytes (after the ID) for the entry that answers them:
        the next identical query is served without computing its key. Counted in the bytes."""
        if len(raw) > MAX_ALIAS_QUERY:
            return
        aliases = self._tcp_raw if tcp else self._udp_raw
        if raw in aliases:
            aliases[raw] = holder
            return
        cost = len(raw) + ALIAS_OVERHEAD
        if self._aliases >= self.cache_size or self._cached_bytes + cost > self.cache_max_bytes:
            return                          # the responses matter more; a clear comes with the next store
        aliases[raw] = holder
        self._aliases += 1
        self._cached_bytes += cost
        self.stats.cache_bytes = self._cached_bytes

    def respond_uncached(self, data: bytes, client: IPAddress, now: float, *, tcp: bool = False
                         ) -> bytes | None:
        """The reference path: the same bytes as `respond`, built from scratch every time."""
        return self._respond_slow(bytes(data), client, now, tcp, None, reference=True)

    def cookie_valid(self, data: bytes, client: IPAddress, now: float) -> bool:
        """True when the query `data` carries a valid server cookie for `client` (for rate limiting:
        such a query is not spoofed). Parses the query: call it only when the answer matters."""
        if self._cookies is None:
            return False
        try:
            query = parse_query(bytes(data))
        except WireError:
            return False
        return query_cookie_valid(query, self._cookies, client, self._wall() if self._wall is not None else now)

    def clear_cache(self) -> None:
        self._fast_raw.clear()
        self._udp_cache.clear()
        self._tcp_cache.clear()
        self._udp_raw.clear()
        self._tcp_raw.clear()
        self._cached = self._cached_bytes = self._aliases = 0
        self.stats.cache_entries = self.stats.cache_bytes = 0

    def _respond_slow(self, data: bytes, client: IPAddress, now: float, tcp: bool,
                      scanned: tuple[bytes, int, bytes | None] | None, *, reference: bool = False
                      ) -> bytes | None:
        stats = self.stats
        stats.query()
        try:
            generation = self._steering.generation
            response, res, qtype, rcode_value = self._answer(data, client, now, tcp, not reference)
        except Exception as exc:  # the robustness net: never raise into the server loop
            stats.internal_errors += 1
            stats.dropped += 1
            self._log_internal_error(data, exc, now)
            return None
        if response is None:
            stats.dropped += 1
            return None
        rcode = _RCODE_LABELS.get(rcode_value, "OTHER")
        truncated = bool(response[2] & 0x02)
        if res is None:
            stats.count(rcode, qtype, (), (), truncated)
            return response
        stats.count(rcode, qtype, res.regions, res.all_down, truncated)
        on_answer = self.on_answer
        if on_answer is not None and res.regions and res.located is not None:
            self._unsampled += 1
            if self._unsampled >= on_answer.every:
                self._tell(on_answer, res.located[0], res.regions, now)
        if scanned is not None and res.rcode != SERVFAIL and res.cache_for > 0:
            self._store(data, scanned, response, res, generation, now, tcp, client, rcode, qtype, truncated)
        return response

    def _store(self, data: bytes, scanned: tuple[bytes, int, bytes | None], response: bytes, res: _Result,
               generation: int, now: float, tcp: bool, client: IPAddress, rcode: str, qtype: str,
               truncated: bool) -> None:
        key, qend, cookie = scanned
        tail_end = len(response)
        if cookie is not None and self._cookies is not None:
            tail_end -= 24                  # the client cookie and our server cookie: fresh on every hit
            if response[tail_end:tail_end + 8] != cookie[:8]:
                return
        if response[12:qend] != data[12:qend] or tail_end < qend:
            return                          # the reply does not echo the question as asked
        head, tail = response[2:12], response[qend:tail_end]
        cost = len(key) + len(tail) + ENTRY_OVERHEAD
        if self._cached >= self.cache_size or self._cached_bytes + cost > self.cache_max_bytes:
            self.clear_cache()
            self.stats.cache_clears += 1
            if cost > self.cache_max_bytes:
                return
        entry = _Entry(head, tail, generation, now + res.cache_for, rcode, qtype, res.regions, res.all_down,
                       truncated)
        entry.tally = self.stats.tally(rcode, qtype, res.regions, res.all_down, truncated)
        entry.data_generation = res.data_generation
        entry.qend = qend
        cache = self._tcp_cache if tcp else self._udp_cache
        old = cache.get(key)
        replaced: _Entry | None = None      # an expired entry this one takes the place of
        if res.client_dependent:
            holder = old
            if holder is None or holder.per_client is None:
                holder = _Entry(b"", b"", generation, math.inf, rcode, qtype, (), (), False)
                holder.per_client = {}
                cache[key] = holder
                cost += ENTRY_OVERHEAD
                replaced = old
            network = client_network(client)
            replaced = holder.per_client.get(network, replaced)
            holder.per_client[network] = entry
        else:
            holder = cache[key] = entry
            replaced = old if old is not None and old.per_client is None else None
        if replaced is not None:            # (a replaced per-client holder's other answers stay counted)
            self._cached -= 1
            self._cached_bytes -= len(key) + len(replaced.tail) + ENTRY_OVERHEAD
        if cookie is None:
            self._alias(data[2:], holder, tcp)
        self._cached += 1
        self._cached_bytes += cost
        self.stats.cache_entries = self._cached
        self.stats.cache_bytes = self._cached_bytes

    def _log_internal_error(self, data: bytes, exc: Exception, now: float) -> None:
        """One line per internal error, at most one a second (`now`); the others are counted."""
        if now < self._log_after:
            self._log_suppressed += 1
            return
        self._log_after = now + 1.0
        suppressed, self._log_suppressed = self._log_suppressed, 0
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
        shown = data[:_LOG_QUERY_BYTES].hex()
        more = f"...({len(data)} bytes)" if len(data) > _LOG_QUERY_BYTES else ""
        log.error("DNS internal error %s: %s%s; query %s%s%s", type(exc).__name__, exc, where, shown, more,
                  f" ({suppressed} more since the last line)" if suppressed else "")

    # -- reference path ---------------------------------------------------------------
    def _shaped(self, data: bytes) -> tuple[Query, _Shape] | None:
        """The parsed query from a known shape, or None (then parse it)."""
        length = _ecs_tail(data)
        if length < 0:
            return None
        end = len(data) - length
        shape = self._shapes.get(data[2:end])
        if shape is None:
            return None
        address = data[end:]
        if length and address[-1] & shape.trailing:
            return None         # the parser's FORMERR
        return shape.query((data[0] << 8) | data[1], address), shape

    def _learn_shape(self, data: bytes, query: Query) -> None:
        edns = query.edns
        ecs = edns.ecs if edns is not None else None
        if ecs is None or len(data) > MAX_SHAPE_QUERY or edns.cookie is not None or edns.nsid:  # type: ignore[union-attr]
            return
        length = len(ecs.address)
        end = len(data) - length
        if _ecs_tail(data) != length or data[end:] != ecs.address:
            return
        trailing = 0xFF >> (ecs.source % 8) if ecs.source % 8 else 0
        flipped = bytes(b ^ 0xFF for b in ecs.address)
        if length:
            flipped = flipped[:-1] + bytes([flipped[-1] & ~trailing & 0xFF])
        writer = MessageWriter()
        writer.question(query.question)
        shape = _Shape(query, ecs, writer.snapshot())
        try:    # the tail is the ECS address and nothing else: flipping it changes only that
            again = parse_query(data[:end] + flipped)
        except WireError:
            return
        if again != shape.query(query.msg_id, flipped):
            return
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        self._shapes[data[2:end]] = shape

    def _answer(self, data: bytes, client: IPAddress, now: float, tcp: bool, fast: bool = False
                ) -> tuple[bytes | None, _Result | None, str, int]:
        shaped = self._shaped(data) if fast else None
        if shaped is not None:
            query, shape = shaped
            return self._answer_query(query, client, now, tcp, shape.writer)
        try:
            query = parse_query(data)
        except Unanswerable:
            return None, None, "OTHER", 0
        except BadVersion as exc:
            return self._error(exc, BADVERS, tcp), None, self._exc_qtype(exc), BADVERS
        except NotImplementedOpcode as exc:
            if exc.edns is None:
                exc.edns = _edns_of(data)
            return self._error(exc, NOTIMP, tcp), None, self._exc_qtype(exc), NOTIMP
        except FormError as exc:
            return self._error(exc, FORMERR, tcp), None, self._exc_qtype(exc), FORMERR
        if fast:
            self._learn_shape(data, query)
        return self._answer_query(query, client, now, tcp, None)

    def _answer_query(self, query: Query, client: IPAddress, now: float, tcp: bool,
                      writer: tuple[bytes, dict[str, int], list[int]] | None
                      ) -> tuple[bytes | None, _Result | None, str, int]:
        question = query.question
        edns = query.edns
        cookie = edns.cookie if edns is not None and self._cookies is not None else None
        wall = now
        valid = False
        if cookie is not None:
            self.stats.cookies += 1
            if self._wall is not None:
                wall = self._wall()
            if len(cookie) > 8 and self._cookies.valid(cookie, client, wall):     # type: ignore[union-attr]
                valid = True
                self.stats.cookies_valid += 1
        if cookie is not None and not valid and self._require_cookies and not tcp:
            res = _Result()             # RFC 7873 §5.2.3-4: no answer, a fresh cookie to retry with
            res.rcode, res.aa, res.cache_for = BADCOOKIE, False, 0
        elif question.qclass != 1:
            res = self._chaos_answer(question)
        else:
            try:
                res = self._resolve(question, edns, client, now)
            except _SteeringFailed:
                self.stats.steering_errors += 1
                res = _Result()
                res.rcode, res.aa = SERVFAIL, False
        options = self._options(edns, res, client, wall) if edns is not None else b""
        packed = self._pack_answer(query, res, tcp, writer, options) if writer is not None else None
        if packed is None:
            packed = self._pack(query, res, tcp, writer, options)
        return packed, res, _qtype_label(question.qtype), res.rcode

    def _chaos_answer(self, question: Question) -> _Result:
        """CHAOS TXT id.server / hostname.bind / version.bind / version.server when configured;
        REFUSED for anything else outside class IN."""
        res = _Result()
        rrset = self._chaos.get(question.name) if question.qclass == CHAOS else None
        if rrset is None or question.qtype not in (TXT, ANY):
            res.rcode, res.aa = REFUSED, False
            return res
        res.rclass = CHAOS
        res.answer.append((question.name, rrset))
        return res

    def _options(self, edns: Edns, res: _Result, client: IPAddress, wall: float) -> bytes:
        """The reply's EDNS options: ECS echo, NSID, COOKIE (last: the cache splices it per query)."""
        options = b""
        ecs = edns.ecs
        if ecs is not None:
            scope = 0
            if ecs.source and res.located is not None:
                scope = echo_scope(res.scope, res.located[2])
            options = ecs.to_wire(scope)
        if edns.nsid and self._nsid is not None:
            self.stats.nsid += 1
            options += self._nsid
        cookies = self._cookies
        if edns.cookie is not None and cookies is not None:
            client_part = edns.cookie[:8]
            server = cookies.make(client_part, client, wall)
            options += struct.pack("!HH", COOKIE_OPTION, 8 + len(server)) + client_part + server
        return options

    @staticmethod
    def _exc_qtype(exc: WireError) -> str:
        return _qtype_label(exc.question.qtype) if exc.question is not None else "OTHER"

    def _error(self, exc: WireError, rcode: int, tcp: bool) -> bytes:
        """FORMERR / NOTIMP / BADVERS: the question when it was read, OPT when it was sound."""
        writer = MessageWriter()
        if exc.question is not None:
            writer.question(exc.question)
        edns: Edns | None = exc.edns
        if edns is not None:
            writer.opt(self.max_udp_size, rcode >> 4, edns.do, b"")
        # RFC 1035 §4.1.1: the opcode is copied and RD may be; nothing else of the query's flags
        flags = QR | (exc.flags & (OPCODE_MASK | RD)) | (rcode & 0xF)
        return writer.finish(exc.msg_id, flags)

    def _zone_for(self, name: str) -> Zone | None:
        zones = self._zones
        while True:
            zone = zones.get(name)
            if zone is not None:
                return zone
            if not name:
                return None
            name = name.partition(".")[2]

    def _resolve(self, question: Question, edns: Edns | None, client: IPAddress, now: float) -> _Result:
        res = _Result()
        name = question.name
        qtype = question.qtype
        if "\\" in name:
            return self._resolve_odd(question, res)
        zone = self._zone_for(name)
        if zone is None or qtype in (AXFR, IXFR):
            res.rcode, res.aa = REFUSED, False
            return res
        seen = {name}
        for hop in range(MAX_CHAIN + 1):
            cut = zone.find_cut(name)
            if cut is not None and not (qtype == DS and cut == name):
                if hop == 0:
                    self._referral(res, zone, cut)
                return res
            node = zone.nodes.get(name)
            target: str | None = None
            if (node is not None and qtype in (A, AAAA) and A not in node and AAAA not in node
                    and CNAME not in node and self._steering.is_service(name)):
                # a service at a name that also holds static data (e.g. the apex with SOA/NS/MX)
                target = self._service(res, zone, name, qtype, edns, client, now)
                if target is None:
                    return res
                node = None
            elif node is None:
                if self._steering.is_service(name):
                    target = self._service(res, zone, name, qtype, edns, client, now)
                    if target is None:
                        return res
                elif name in zone.names or name in self._service_parents:
                    self._negative(res, zone, nxdomain=False)
                    return res
                else:
                    wildcard = zone.wildcard(name)
                    if wildcard is None:
                        self._negative(res, zone, nxdomain=True)
                        return res
                    node = zone.nodes[wildcard]
            if node is not None:
                cname = node.get(CNAME)
                if cname is None or qtype == CNAME:
                    self._static(res, zone, name, node, qtype)
                    return res
                res.answer.append((name, cname))
                if qtype == ANY:
                    return res
                target = str(cname.rdatas[0][0])
            assert target is not None
            if target in seen or hop == MAX_CHAIN:
                return res
            seen.add(target)
            next_zone = self._zone_for(target)
            if next_zone is None:
                return res
            zone, name = next_zone, target
        return res  # pragma: no cover - the loop returns

    def _resolve_odd(self, question: Question, res: _Result) -> _Result:
        """A name with a label holding '.' or '\\': it exists nowhere; only the zone and cuts matter."""
        labels = question.labels
        suffixes = [name_text(labels[i:]) for i in range(len(labels) + 1)]
        zone = next((self._zones[s] for s in suffixes if s in self._zones), None)
        if zone is None or question.qtype in (AXFR, IXFR):
            res.rcode, res.aa = REFUSED, False
            return res
        for suffix in reversed(suffixes):
            if suffix in zone.cuts:
                self._referral(res, zone, suffix)
                return res
        self._negative(res, zone, nxdomain=True)
        return res

    def _static(self, res: _Result, zone: Zone, name: str, node: Mapping[int, RRset], qtype: int) -> None:
        # RFC 8482: ANY gets one RRset
        rrset = next(iter(node.values())) if qtype == ANY else node.get(qtype)
        if rrset is None:
            self._negative(res, zone, nxdomain=False)
            return
        res.answer.append((name, rrset))
        if rrset.rtype == NS:
            for target in rrset.names():
                if in_zone(target, zone.origin):
                    res.additional.extend(zone.addresses(target))

    def _negative(self, res: _Result, zone: Zone, *, nxdomain: bool, soa: RRset | None = None) -> None:
        res.rcode = NXDOMAIN if nxdomain else 0
        res.authority.append((zone.origin, soa or self._negative_soa[zone.origin]))

    def _referral(self, res: _Result, zone: Zone, cut: str) -> None:
        res.aa = False
        res.referral = True
        ns = zone.nodes[cut][NS]
        res.authority.append((cut, ns))
        for target in ns.names():
            if in_zone(target, zone.origin):
                res.additional.extend(zone.addresses(target))

    def _service(self, res: _Result, zone: Zone, name: str, qtype: int, edns: Edns | None,
                 client: IPAddress, now: float) -> str | None:
        """Answer a service name; returns a CNAME target to follow, if the answer is one."""
        if qtype == ANY:
            res.answer.append((name, RRset(HINFO, zone.ttl, ((b"\x07RFC8482\x00",),))))
            return None
        if qtype not in (A, AAAA):
            self._negative(res, zone, nxdomain=False)
            return None
        if res.located is None:
            res.located = locate(edns.ecs if edns is not None else None, client)
        address, source, _ = res.located
        try:
            answer = self._steering.answer(name, address, source, now)
            decision = answer.decision
            ttl = max(0, min(int(answer.ttl), 2**31 - 1))
            res.client_dependent = res.client_dependent or source is None
            res.scope = max(res.scope, int(answer.scope_prefix))
            res.cache_for = min(res.cache_for, float(answer.cache_for))
            if answer.data_generation is not None:
                res.data_generation = int(answer.data_generation)
            res.regions += tuple(decision.regions)
            if decision.all_down:
                res.all_down += (name,)
            if answer.cname:
                target = answer.cname.rstrip(".").lower()
                if check_name(target) or not target:
                    raise _SteeringFailed(f"bad cname {answer.cname!r}")
                res.answer.append((name, RRset(CNAME, ttl, ((target,),))))
                return target
            if answer.negative_ttl is not None:
                negative_ttl = max(0, min(int(answer.negative_ttl), 2**31 - 1))
                self._negative(res, zone, nxdomain=False,
                               soa=RRset(SOA, negative_ttl, zone.soa_rrset.rdatas))
                return None
            texts = answer.v4 if qtype == A else answer.v6
            if not texts:
                self._negative(res, zone, nxdomain=False)
                return None
            rrset = self._rrsets.get((qtype, ttl, texts))
            if rrset is None:       # the same few address sets come back: build each RRset once
                rrset = RRset(qtype, ttl, tuple((_packed_address(qtype, text),) for text in texts))
                if len(self._rrsets) >= 4096:
                    self._rrsets.clear()
                self._rrsets[(qtype, ttl, texts)] = rrset
        except _SteeringFailed:
            raise
        except Exception as exc:  # a steering bug or bad data: SERVFAIL, not a crash
            raise _SteeringFailed(repr(exc)) from exc
        res.answer.append((name, rrset))
        return None

    # -- packing --------------------------------------------------------------------
    def _pack_answer(self, query: Query, res: _Result, tcp: bool,
                     after_question: tuple[bytes, dict[str, int], list[int]], options: bytes) -> bytes | None:
        """`_pack` for the usual service answer (NOERROR, one A/AAAA RRset at the question name,
        nothing else, EDNS): the same bytes written directly; None when the case is another."""
        edns = query.edns
        if res.rcode or res.authority or res.additional or len(res.answer) != 1 or edns is None \
                or res.rclass != 1:
            return None
        owner, rrset = res.answer[0]
        rtype = rrset.rtype
        pointer = after_question[1].get(owner)
        if (rtype != A and rtype != AAAA) or pointer is None or pointer >= 0x4000:
            return None
        flags = QR | (query.flags & (OPCODE_MASK | RD | CD))
        if res.aa:
            flags |= AA
        buf = bytearray(after_question[0])
        head = (0xC000 | pointer).to_bytes(2, "big")
        for rdata in rrset.rdatas:
            if len(rdata) != 1 or type(rdata[0]) is not bytes:
                return None
            buf += head + _RR_HEAD.pack(rtype, 1, rrset.ttl, len(rdata[0])) + rdata[0]
        buf += b"\x00" + _RR_HEAD.pack(OPT, self.max_udp_size, 0x8000 if edns.do else 0, len(options)) + options
        limit = TCP_LIMIT if tcp else min(max(edns.udp_size, 512), self.max_udp_size)
        if len(buf) > limit:
            return None
        HEADER.pack_into(buf, 0, query.msg_id, flags, 1, len(rrset.rdatas), 0, 1)
        return bytes(buf)

    def _pack(self, query: Query, res: _Result, tcp: bool,
              after_question: tuple[bytes, dict[str, int], list[int]] | None = None, options: bytes = b"") -> bytes:
        """The response; `after_question`: the writer's state after this question (from a shape)."""
        question = query.question
        edns = query.edns
        flags = QR | (query.flags & (OPCODE_MASK | RD | CD)) | (res.rcode & 0xF)
        if res.aa:
            flags |= AA
        if after_question is not None:
            writer = MessageWriter.from_snapshot(after_question)
        else:
            writer = MessageWriter()
            writer.question(question)
        for owner, rrset in res.answer:
            for rdata in rrset.rdatas:
                writer.record(1, owner, rrset.rtype, rrset.ttl, rdata, res.rclass)
        for owner, rrset in res.authority:
            for rdata in rrset.rdatas:
                writer.record(2, owner, rrset.rtype, rrset.ttl, rdata)
        before_additional = writer.mark()
        for owner, rrset in res.additional:
            for rdata in rrset.rdatas:
                writer.record(3, owner, rrset.rtype, rrset.ttl, rdata)
        if edns is not None:
            limit = TCP_LIMIT if tcp else min(max(edns.udp_size, 512), self.max_udp_size)
            writer.opt(self.max_udp_size, res.rcode >> 4, edns.do, options)
        else:
            limit = TCP_LIMIT if tcp else 512
        message = writer.finish(query.msg_id, flags)
        if len(message) <= limit:
            return message
        if res.additional and not res.referral:   # additional data is optional: drop it first
            writer.rollback(before_additional)
            if edns is not None:
                writer.opt(self.max_udp_size, res.rcode >> 4, edns.do, options)
            message = writer.finish(query.msg_id, flags)
            if len(message) <= limit:
                return message
        writer = MessageWriter()
        writer.question(question)
        if edns is not None:
            writer.opt(self.max_udp_size, res.rcode >> 4, edns.do, options)
        return writer.finish(query.msg_id, flags | TC)


def _edns_of(data: bytes) -> Edns | None:
    """The OPT record of a query the parser stopped reading early (another opcode): read as if it
    were a QUERY, so the error reply can carry OPT when the query's was sound (RFC 6891 §7)."""
    if len(data) < 12 or data[10:12] == b"\x00\x00":
        return None
    try:
        return parse_query(data[:2] + bytes((data[2] & 0x87,)) + data[3:]).edns
    except WireError as exc:
        return exc.edns if isinstance(exc.edns, Edns) else None


def _parents(name: str) -> list[str]:
    """Every proper ancestor of `name` ("a.b.c" -> ["b.c", "c"])."""
    out = []
    while "." in name:
        name = name.partition(".")[2]
        out.append(name)
    return out
