"""A StateStore shared by several LB replicas through Redis, with a warm local copy  [edge].

    store = RedisStore("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/lb", budget=0.02)
    await store.get_sticky("auth", "JSESSIONID-value")     # one GET, or the local copy past 20 ms
    await store.set_sticky("auth", "JSESSIONID-value", "app-2", ttl=1800)
    store.incr_inflight("app", "app-2"); store.inflight("app", ["app-1", "app-2"])   # no I/O
    store.available          # False while Redis is unreachable (requests use local state)
    store.stats              # redis_errors, fallbacks, outages, conflicts, written_back, ...

URLs, pools and the exception edge: regional_lb/state/redis_client.py (plain, Sentinel, Cluster;
every redis-py exception becomes a StoreError there; bounded blocking pools of `pool_size`).

Round trips per request (the hot path)
  * sticky_learn: one GET of the session's key (within `budget`) -- none when Redis confirmed
    this replica's copy of the entry less than `fresh` seconds ago (`state.local_fresh`, default
    0: always ask; with 1 s a session's burst of requests costs one GET per second per replica,
    and a session another replica re-sticks is followed within 1 s); a hit's TTL refresh is written
    behind, batched in a pipeline by the store's background task, at most once per `refresh`
    per key.  A *new or changed* entry (a session's first response, a re-stick) is written with
    one SET before the response goes out, so the next request of that session -- on any
    replica -- finds it: such a request makes one more round trip (a request with a cookie that
    Redis did not know: GET + SET).  Index updates for `count_sticky` are written behind.
  * least_connections, bounded_load (and any policy reading in-flight counts): none.  Each
    replica counts its own requests (`incr_inflight` / `decr_inflight`: dict arithmetic) and the
    background task publishes them every `publish_interval` (100 ms) with a lease, reading back
    the other replicas' totals in the same pipeline (regional_lb/state/counters.py).
    `inflight()` = own live counts + others' as last published.
  * sticky_cookie, the hash policies, round robin, random: none.

The local copy (regional_lb/state/local.py, `local_entries` entries, each with its TTL) holds
every entry this replica read or wrote.  Redis unreachable, or slower than `budget`: the
request is answered from the local copy, so every session this replica has seen stays on its
backend.  An error, or `TIMEOUTS_DOWN` (3) budget overruns within a second, make Redis count as down:
it is skipped (no request pays the budget again) and probed in the background -- at once after
overruns (a stalled event loop is over quickly), else after a back-off (`backoff_initial`
doubling to `backoff_max`) -- until it answers.  A command past its budget is not cancelled: it
finishes in the background (regional_lb/state/redis_client.py says why).  A budget spent waiting
for a free pooled connection (a burst larger than `pool_size`: StoreBusy) is answered locally too
but is not Redis' fault and never counts towards an outage (stats["busy"]).  Entries learnt
while Redis was away are marked pending and written back when it answers again -- with a
script that keeps what Redis holds if another replica stored a different backend meanwhile
(Redis wins; the local copy takes Redis' value; counted in stats["conflicts"]).  A read that
finds nothing in Redis for a key the local copy knows (Redis restarted empty, or lost the key
in a fail-over) answers from the local copy and writes the entry back the same way.

Layout (prefix "lb:"; braces are Redis Cluster hash tags, so keys spread over slots per session
and per counter, and every multi-key operation stays in one slot)
  * ``lb:s:TABLE:{KEY}``  -> "BACKEND|EXPIRY" (expiry: wall-clock ms), SET with PX = the stick
    TTL; the expiry travels with the value so a replica that reads an entry copies it locally
    with the TTL it has left (one GET, no PTTL).  Keys longer than 200 characters are replaced
    by their SHA-256, here and in the index (bounded size whatever a client sends).
  * ``lb:i:{TABLE/BACKEND}`` sorted set: member KEY, score = expiry (wall-clock ms of the
    writing replica): `count_sticky` (drain reporting) trims passed scores and counts the rest;
    a moved key is removed from its old backend's set.  Replicas' clocks should roughly agree
    (NTP); a skew only shifts when an entry stops being counted.
  * ``lb:c:{POOL/BACKEND}`` hash: replica id -> "count:lease-expiry-ms" (expiry on Redis' own
    clock).  The publish script writes this replica's field (or deletes it at 0), drops fields
    whose lease has passed, and returns the sum of the others.  A replica that dies stops
    renewing: its counts vanish from every total within `lease` (default 3 s).  A replica
    closed cleanly deletes its fields at once.

Replica id: ``hostname:pid:random`` (a process = a replica; worker processes of one LB each
have their own).  Nothing here raises because Redis is down; time comes from `clock`
(monotonic) and `wall` (wall clock: the expiry stored with each entry and the index scores).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from regional_lb.errors import StoreBusy, StoreError, StoreTimeout
from regional_lb.state.counters import ReplicaCounters
from regional_lb.state.local import LocalStickTable
from regional_lb.state.redis_client import RedisEdge, close_client, cluster_nodes, make_client, prune_connections
from regional_lb.state.urls import RedisTarget, RedisUrlError, parse_redis_url

__all__ = ["RedisStore", "RedisTarget", "RedisUrlError", "make_client", "parse_redis_url"]

log = logging.getLogger("regional_lb.state.redis")

DEFAULT_TTL = 1800.0            # a table's TTL until this replica has written to it
MAX_KEY = 200                   # longer stick keys are stored as their SHA-256
BATCH = 512                     # entries per write-behind / write-back pipeline
TIMEOUTS_DOWN = 3               # budget overruns within TIMEOUTS_WINDOW that make Redis count as down
TIMEOUTS_WINDOW = 1.0           # seconds (successes between them do not reset the count: a hung
                                # cluster master slows only its slots, the others keep answering)

# KEYS[1] the stick key; ARGV: backend, ttl ms, the value to store.  Stores unless Redis holds another backend;
# returns what Redis holds then (a conflict), or false.
_WRITE_BACK = """
local old = redis.call('GET', KEYS[1])
if old then
  local backend = string.match(old, '^(.*)|%d+$') or old
  if backend ~= ARGV[1] then
    return old
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', tonumber(ARGV[2]))
return false
"""

# KEYS[1] a counter hash; ARGV: replica id, own count, lease ms.  Returns the others' live sum.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + lease))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, ':', 1, true)
  local count = tonumber(string.sub(v, 1, (sep or 1) - 1)) or 0
  local expiry = tonumber(string.sub(v, (sep or 0) + 1)) or 0
  if expiry <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then
    sum = sum + count
  end
end
if #all > 0 then
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
return sum
"""


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(value: str) -> tuple[str, float | None]:
    """A stick value "BACKEND|EXPIRY-MS" -> (backend, expiry in wall-clock seconds or None)."""
    backend, sep, expiry = value.rpartition("|")
    if sep and expiry.isdigit():
        return backend, int(expiry) / 1000.0
    return value, None


def _replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class RedisStore:
    """StateStore on Redis; never raises because Redis is down (see the module docstring)."""

    def __init__(self, url: str, *, key_prefix: str = "lb:", client: Any = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 budget: float = 0.02, pool_size: int = 64, lease: float = 3.0, publish_interval: float = 0.1,
                 local_entries: int = 100_000, refresh: float = 60.0, op_timeout: float = 1.0,
                 backoff_initial: float = 0.25, backoff_max: float = 2.0, replica_id: str | None = None,
                 fresh: float = 0.0) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.budget = budget
        self.fresh = fresh
        self.lease = lease
        self.publish_interval = publish_interval
        self.refresh = refresh
        self.op_timeout = op_timeout
        self.replica_id = replica_id or _replica_id()
        self._own_client = client is None
        op_timeout = max(op_timeout, budget)        # background work never has less time than a request
        self.op_timeout = op_timeout
        # every connection a Sentinel or Cluster client of our own opens (closed with it)
        self._connections: set[Any] = set()
        self.client = client if client is not None else make_client(url, timeout=op_timeout, pool_size=pool_size,
                                                                    connections=self._connections)
        # the topology comes from the URL, not from probing the client (which may be a wrapper)
        self._cluster = parse_redis_url(url).kind == "cluster"
        self.edge = RedisEdge(self.client, pool_size=pool_size, hard_timeout=op_timeout, clock=clock)
        self.local = LocalStickTable(max_entries=local_entries)
        self.counters = ReplicaCounters(lease=lease)
        self._clock = clock
        self._wall = wall
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._overruns: deque[float] = deque(maxlen=TIMEOUTS_DOWN)  # when the last budget overruns happened
        self.available = True
        self.stats: dict[str, int] = {"redis_errors": 0, "fallbacks": 0, "outages": 0, "conflicts": 0,
                                      "written_back": 0, "publish_errors": 0,
                                      "fallback_misses": 0, "redis_misses": 0, "fresh_hits": 0, "busy": 0}
        self._ttl: dict[str, float] = {}                            # table -> last TTL written
        self._dirty: dict[tuple[str, str], str | None] = {}        # (table, key) -> previous backend
        self._has_pending = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        self._nodes_seen: dict[str, Any] = {}                      # cluster nodes, closed at the end
        self._next_publish = 0.0
        self._closed = False
        self.published = 0                                          # successful publications

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Same as the constructor (the name the app calls it by)."""
        return cls(url, **kwargs)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> RedisStore:
        """From the config's `state:` section (regional_lb.config.StateConfig) and seams (clock, ...)."""
        if not settings.url:
            raise ValueError("the redis state backend needs a url")
        return cls(settings.url, key_prefix=settings.key_prefix, budget=settings.budget,
                   pool_size=settings.pool_size, lease=settings.lease, publish_interval=settings.publish_interval,
                   local_entries=settings.local_entries, fresh=settings.local_fresh, **kwargs)

    def __repr__(self) -> str:
        state = "up" if self.available else "down, using the local copy"
        return (f"<RedisStore {self.url} [{state}, {len(self.local)} local entries, "
                f"{self.stats['redis_errors']} errors]>")

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def _member(key: str) -> str:
        """A stick key as Redis stores it: keys longer than MAX_KEY as their SHA-256."""
        if len(key) > MAX_KEY:
            return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return key

    def _stick_key(self, table: str, key: str) -> str:
        return f"{self.key_prefix}s:{table}:{{{self._member(key)}}}"

    def _index_key(self, table: str, backend: str) -> str:
        return f"{self.key_prefix}i:{{{table}/{backend}}}"

    def _counter_key(self, pool: str, backend: str) -> str:
        return f"{self.key_prefix}c:{{{pool}/{backend}}}"

    # -- outage handling -------------------------------------------------------------------
    def _failed(self, exc: BaseException, now: float) -> None:
        if isinstance(exc, StoreBusy):
            self.stats["busy"] += 1             # our pool was the bottleneck, not Redis
            return
        self.stats["redis_errors"] += 1
        if isinstance(exc, StoreTimeout):
            self._overruns.append(now)
            if len(self._overruns) < TIMEOUTS_DOWN or now - self._overruns[0] > TIMEOUTS_WINDOW:
                return                  # one slow answer (a stalled event loop?) is not an outage yet
        if self.available:
            self.available = False
            self.stats["outages"] += 1
            self._down_since = now
            self._backoff = self._backoff_initial
            # slow rather than refusing: probe at once (a probe has op_timeout, no request waits on it)
            self._retry_at = now if isinstance(exc, StoreTimeout) else now + self._backoff
            log.warning("Redis %s unavailable (%s): using the local copy, probing in %.2fs",
                        self.url, exc, self._backoff)
            self._wake.set()

    def _recovered(self, now: float) -> None:
        self.available = True
        down = now - self._down_since if self._down_since is not None else 0.0
        self._down_since = None
        self._backoff = self._backoff_initial
        self._overruns.clear()
        self._has_pending = True
        self._next_publish = 0.0
        log.warning("Redis %s reachable again after %.1fs: shared state in use, writing back", self.url, down)

    async def start(self, *, warm: int = 8) -> None:
        """Connect before the first request: `warm` concurrent PINGs open that many pooled
        connections (a Sentinel look-up or a cluster slot map included), then the background task
        starts.  Redis unreachable: the store starts down (local state) and the task probes."""
        self._ensure_task()
        n = max(1, min(warm, self.edge.pool_size))
        results = await asyncio.gather(*(self.edge.call(self.op_timeout, self.client.ping) for _ in range(n)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self._failed(errors[0], self._clock())

    def _ensure_task(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._background(), name="redis-store")

    # -- stick table -----------------------------------------------------------------------
    async def get_sticky(self, table: str, key: str) -> str | None:
        if self._task is None:
            self._ensure_task()
        now = self._clock()
        entry = self.local.get(table, key, now)
        if entry is not None and now - entry.checked < self.fresh:
            self.stats["fresh_hits"] += 1
            return entry.backend                            # Redis confirmed it a moment ago
        if not self.available:
            self.stats["fallbacks"] += 1
            if entry is None:
                self.stats["fallback_misses"] += 1
            return entry.backend if entry is not None else None
        try:
            value = _text(await self.edge.call(self.budget, self.client.get, self._stick_key(table, key)))
        except StoreError as exc:
            self._failed(exc, self._clock())
            self.stats["fallbacks"] += 1
            if entry is None:
                self.stats["fallback_misses"] += 1
            return entry.backend if entry is not None else None
        if value is None:
            if entry is None:
                self.stats["redis_misses"] += 1
            if entry is not None and not entry.pending:
                entry.pending = True                        # Redis lost it: write it back
                self._has_pending = True
                self._wake.set()
            return entry.backend if entry is not None else None
        backend, expiry = _decode(value)
        if entry is None or entry.backend != backend:
            if entry is not None and entry.pending:
                self.stats["conflicts"] += 1                # learnt here while away; Redis wins
            left = expiry - self._wall() if expiry is not None else self._ttl.get(table, DEFAULT_TTL)
            self.local.put(table, key, backend, deadline=now + left, now=now, written=now, checked=now)
        else:
            entry.pending = False
            entry.checked = now
        return backend

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None:
        if self._task is None:
            self._ensure_task()
        now = self._clock()
        self._ttl[table] = ttl
        entry = self.local.get(table, key, now)
        if entry is not None and entry.backend == backend_id:
            entry.deadline = now + ttl                      # a hit: refresh, written behind
            if not entry.pending and now - entry.written >= self.refresh and self.available:
                self._mark_dirty(table, key, backend_id)
            return
        old = entry.backend if entry is not None else None
        entry = self.local.put(table, key, backend_id, deadline=now + ttl, now=now, pending=not self.available)
        if not self.available:
            self._has_pending = True
            return
        try:
            await self.edge.call(self.budget, self.client.set, self._stick_key(table, key),
                                 self._value(backend_id, ttl), px=max(1, int(ttl * 1000)))
        except StoreError as exc:
            self._failed(exc, self._clock())
            entry.pending = True
            self._has_pending = True
            return
        entry.written = entry.checked = now
        self._mark_dirty(table, key, old)                   # the index sets, written behind

    def _value(self, backend: str, ttl: float) -> str:
        return f"{backend}|{int((self._wall() + ttl) * 1000)}"

    def _mark_dirty(self, table: str, key: str, old: str | None) -> None:
        k = (table, key)
        if k not in self._dirty:
            self._dirty[k] = old
        self._wake.set()

    async def delete_sticky(self, table: str, key: str) -> None:
        entry = self.local.get(table, key, self._clock())
        self.local.delete(table, key)
        self._dirty.pop((table, key), None)
        if not self.available:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._stick_key(table, key))
        if entry is not None:
            pipe.zrem(self._index_key(table, entry.backend), self._member(key))
        try:
            await self.edge.call(self.op_timeout, pipe.execute)
        except StoreError as exc:
            self._failed(exc, self._clock())

    async def count_sticky(self, table: str, backend_id: str) -> int:
        """Live entries pointing at `backend_id` over all replicas (Redis' index; the local copy
        while Redis is away)."""
        now = self._clock()
        if self.available:
            try:
                pipe = self.client.pipeline(transaction=False)
                key = self._index_key(table, backend_id)
                pipe.zremrangebyscore(key, "-inf", int(self._wall() * 1000))
                pipe.zcard(key)
                results = await self.edge.call(self.op_timeout, pipe.execute)
                return int(results[-1])
            except StoreError as exc:
                self._failed(exc, self._clock())
        return self.local.count(table, backend_id, now)

    # -- in-flight counters ----------------------------------------------------------------
    def incr_inflight(self, pool: str, backend_id: str) -> None:
        if self._task is None:
            self._ensure_task()
        self.counters.incr(pool, backend_id)

    def decr_inflight(self, pool: str, backend_id: str) -> None:
        self.counters.decr(pool, backend_id)

    def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]:
        if self._task is None:
            self._ensure_task()
        return self.counters.totals(pool, backend_ids, self._clock())

    # -- the background task: write-behind, write-back, counters, probing ---------------------
    async def _background(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.publish_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:                 # never let the task die: log and carry on next period
                log.exception("Redis store background work failed")

    async def tick(self) -> None:
        """One round of background work (the task runs it every publish_interval or when woken;
        rounds never overlap)."""
        async with self._tick_lock:
            await self._tick()

    async def _tick(self) -> None:
        for node in cluster_nodes(self.client):
            self._nodes_seen.setdefault(node.name, node)
        prune_connections(self._connections)
        now = self._clock()
        if not self.available:
            if now < self._retry_at:
                return
            try:
                await self.edge.call(self.op_timeout, self._probe)
            except StoreError as exc:
                self.stats["redis_errors"] += 1
                self._backoff = min(self._backoff * 2, self._backoff_max)
                self._retry_at = self._clock() + self._backoff
                log.debug("Redis %s still unavailable (%s); next probe in %.2fs", self.url, exc, self._backoff)
                return
            self._recovered(self._clock())
        if self._has_pending:
            await self._write_back()
        if self._dirty and self.available:
            await self._flush()
        now = self._clock()
        if now >= self._next_publish and self.available:
            self._next_publish = now + self.publish_interval * 0.9
            await self._publish(now)

    async def _probe(self) -> Any:
        """PING -- on a cluster every master, so a master that died counts until its replica
        has taken over (else the store would flap between up and down meanwhile)."""
        if self._cluster:
            from redis.asyncio.cluster import RedisCluster

            return await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        return await self.client.ping()

    async def _flush(self) -> None:
        """Write behind: refreshed TTLs and the count_sticky index, one pipeline per BATCH keys."""
        now = self._clock()
        wall_ms = int(self._wall() * 1000)
        batch: list[tuple[str, str]] = []
        pipe = self.client.pipeline(transaction=False)
        for (table, key), old in list(self._dirty.items())[:BATCH]:
            del self._dirty[(table, key)]
            entry = self.local.get(table, key, now)
            if entry is None or entry.pending:
                continue
            ttl_ms = max(1, int((entry.deadline - now) * 1000))
            pipe.set(self._stick_key(table, key), f"{entry.backend}|{wall_ms + ttl_ms}", px=ttl_ms)
            index = self._index_key(table, entry.backend)
            pipe.zadd(index, {self._member(key): wall_ms + ttl_ms})
            pipe.pexpire(index, ttl_ms)
            if old is not None and old != entry.backend:
                pipe.zrem(self._index_key(table, old), self._member(key))
            batch.append((table, key))
        if not batch:
            return
        try:
            await self.edge.call(self.op_timeout, pipe.execute)
        except StoreError as exc:
            self._failed(exc, self._clock())
            for table, key in batch:
                entry = self.local.get(table, key, now)
                if entry is not None:
                    entry.pending = True
            self._has_pending = True
            return
        for table, key in batch:
            entry = self.local.get(table, key, now)
            if entry is not None:
                entry.written = now

    async def _write_back(self) -> None:
        """Entries learnt while Redis was away: stored unless Redis holds another backend (Redis wins)."""
        now = self._clock()
        wall_ms = int(self._wall() * 1000)
        todo = [(t, k, e) for t, k, e in self.local.pending()][:BATCH]
        if not todo:
            self._has_pending = False
            return
        pipe = self.client.pipeline(transaction=False)
        for table, key, entry in todo:
            ttl_ms = max(1, int((entry.deadline - now) * 1000))
            pipe.eval(_WRITE_BACK, 1, self._stick_key(table, key), entry.backend, ttl_ms,
                      f"{entry.backend}|{wall_ms + ttl_ms}")
        try:
            results = await self.edge.call(self.op_timeout, pipe.execute)
        except StoreError as exc:
            self._failed(exc, self._clock())
            return
        for (table, key, entry), held in zip(todo, results, strict=True):
            held_text = _text(held)
            entry.pending = False
            if held_text is not None:
                held_text = _decode(held_text)[0]
            if held_text is not None and held_text != entry.backend:
                self.stats["conflicts"] += 1
                log.info("stick table %s: %s learnt %s during the outage, Redis holds %s: Redis wins",
                         table, key[:40], entry.backend, held_text)
                entry.backend = held_text
            else:
                self.stats["written_back"] += 1
                entry.written = now
                self._mark_dirty(table, key, None)          # its index entry
        if len(todo) < BATCH:
            self._has_pending = False

    async def _publish(self, now: float) -> None:
        items = self.counters.to_publish()
        if not items:
            return
        await self._send_counts(items, now)

    async def _send_counts(self, items: list[tuple[str, str, int]], now: float) -> bool:
        pipe = self.client.pipeline(transaction=False)
        lease_ms = max(1, int(self.lease * 1000))
        for pool, backend, count in items:
            pipe.eval(_PUBLISH, 1, self._counter_key(pool, backend), self.replica_id, count, lease_ms)
        try:
            results = await self.edge.call(self.op_timeout, pipe.execute)
        except StoreError as exc:
            self.stats["publish_errors"] += 1
            self._failed(exc, self._clock())
            return False
        self.counters.published(((p, b, c, int(r or 0)) for (p, b, c), r in zip(items, results, strict=True)),
                                now)
        self.published += 1
        return True

    async def publish_now(self) -> bool:
        """Publish own counts and read the others' at once (tests; the task does it every period)."""
        items = self.counters.to_publish()
        return await self._send_counts(items, self._clock()) if items else True

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            if self.available:
                # leave nothing for the others to wait a lease for: our counts go to 0 now
                zeros = [(p, b, 0) for p, b, _ in self.counters.to_publish()]
                if zeros:
                    await self._send_counts(zeros, self._clock())
        finally:
            await self.edge.drain()
            if self._own_client:
                for node in cluster_nodes(self.client):
                    self._nodes_seen.pop(node.name, None)
                with contextlib.suppress(Exception):
                    await close_client(self.client, self._nodes_seen.values(), self._connections)
            self.local.clear()
