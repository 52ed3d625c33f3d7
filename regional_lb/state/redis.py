"""A StateStore shared by several LB replicas through Redis, with a local fallback  [edge].

    store = RedisStore("redis://10.0.0.5:6379/0")            # key_prefix "lb:"
    await store.set_sticky("auth", "JSESSIONID=abc", "app-2", ttl=1800)
    ...
    store.available          # False while Redis is unreachable
    store.stats              # {"redis_errors": .., "fallback_calls": .., "outages": ..}

Accepted URLs
  * ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path/redis.sock?db=0``
    -- anything `redis.asyncio.from_url` takes;
  * ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/SERVICE[/db]`` -- Sentinel: the current
    master of SERVICE, followed across fail-overs (``rediss+sentinel://`` for TLS to the data nodes);
  * ``redis+cluster://[[user]:password@]host1:7000[,host2:7001]`` -- Redis Cluster.  Every key of one
    stick table (and of one pool's counters) carries the same hash tag ``{name}`` so the Lua scripts
    below touch a single slot.

Layout (prefix "lb:")
  * ``lb:stick:{TABLE}:k:KEY``  -> backend id, SET with PX = the stick TTL;
  * ``lb:stick:{TABLE}:b:BACKEND`` sorted set: member KEY, score = expiry (Redis server ms clock).
    `count_sticky` trims members whose score has passed (ZREMRANGEBYSCORE) and counts the rest
    (ZCARD); moving a key to another backend removes it from the old set in the same script.
    Trade-off: one extra ZADD per `set_sticky` and a set per backend, against the alternative --
    SCAN over every key of the table and GET each -- which writes nothing extra but costs
    O(table size) round trips per count and is useless on a big table.  Counting is for drain
    reporting, called rarely; stickiness writes are frequent but a ZADD is cheap.  Expiry uses
    Redis' own clock (``TIME`` in the script) so replicas' clocks need not agree.
  * ``lb:inflight:{POOL}`` hash: backend id -> in-flight requests over all replicas (HINCRBY;
    the decrement is a script that never goes below 0 and drops the field at 0).  A replica that
    dies with requests in flight leaves its increments behind; they are bounded by what it had in
    flight and vanish with the hash's idle expiry (`inflight_idle_expiry`, refreshed on every
    increment).

Redis unreachable (refused, timed out, any RedisError): the call is answered by the `fallback`
store (a local MemoryStore by default) and never raises.  One warning is logged per outage, not
per call; `stats["redis_errors"]` counts failed calls.  After a failure Redis is skipped until a
back-off expires (`backoff_initial`, doubling to `backoff_max`), then tried again; the first
success ends the outage (logged) and Redis is used from then on.  Continuity across an outage:
  * in-flight: a decrement goes where its increment went (this replica remembers how many of its
    increments are in Redis); decrements owed to Redis during an outage are paid on recovery;
    `inflight()` adds the local counts of requests started during the outage;
  * stickiness: keys learnt during an outage live in the fallback; `get_sticky` consults it when
    Redis has no entry.  A Redis restarted without persistence has forgotten its stick table:
    sticky_learn sessions re-learn (sticky_cookie sessions carry their backend in the cookie).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from regional_lb.state.base import StateStore

log = logging.getLogger("regional_lb.state.redis")

T = TypeVar("T")

_SET_STICKY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local old = redis.call('GET', KEYS[1])
if old and old ~= ARGV[1] then
  redis.call('ZREM', ARGV[3] .. old, ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""

_DELETE_STICKY = """
local old = redis.call('GET', KEYS[1])
if old then
  redis.call('ZREM', ARGV[1] .. old, ARGV[2])
end
return redis.call('DEL', KEYS[1])
"""

_COUNT_STICKY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

_INCR = """
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
"""

_DECR = """
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
if v <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return v
"""


class RedisUrlError(ValueError):
    """The Redis URL is not one this store understands."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a state URL points at: a plain server (URL as redis-py takes it), a Sentinel service,
    or a cluster."""

    kind: str                                   # "url" | "sentinel" | "cluster"
    url: str = ""                               # kind "url": passed to redis.asyncio.from_url
    nodes: tuple[tuple[str, int], ...] = ()     # sentinels or cluster seed nodes
    service: str = ""                           # sentinel service (master) name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Classify a state URL (see the module docstring for the accepted forms)  [pure]."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("url", url=url)
    if scheme not in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: scheme must be redis, rediss, unix, "
                            "redis+sentinel or redis+cluster")
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, pw = auth.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) or None)
    default_port = 26379 if "sentinel" in scheme else 6379
    nodes = tuple(_host_port(item, default_port, url) for item in netloc.split(",") if item)
    if not nodes:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: no host")
    segments = [s for s in parts.path.split("/") if s]
    tls = scheme.startswith("rediss")
    if "cluster" in scheme:
        if segments:
            raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: a cluster URL has no path (db is 0)")
        return RedisTarget("cluster", nodes=nodes, username=username, password=password, tls=tls)
    if not segments or len(segments) > 2:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: expected /SERVICE or /SERVICE/DB after hosts")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: db must be a number")
        db = int(segments[1])
    return RedisTarget("sentinel", nodes=nodes, service=unquote(segments[0]), db=db,
                       username=username, password=password, tls=tls)


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: empty host in {item!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: bad port in {item!r}")
    return host, int(port_text) if port_text else default_port


def make_client(url: str, *, timeout: float = 0.5, max_connections: int = 64) -> Any:
    """A redis-py asyncio client for `url` that fails fast (no client-side retries: the store backs off).

    Plain URLs get a *blocking* pool of `max_connections`: a burst of concurrent requests waits
    (up to 2 x `timeout`) for a connection instead of failing with "Too many connections"."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    target = parse_redis_url(url)
    common: dict[str, Any] = {"decode_responses": True, "socket_timeout": timeout,
                              "socket_connect_timeout": timeout}
    if target.kind == "url":
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=2 * timeout, retry=Retry(NoBackoff(), 0),
            **common)
        return redis.asyncio.Redis.from_pool(pool)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(list(target.nodes), sentinel_kwargs={**common, **auth},  # type: ignore[no-untyped-call]
                            ssl=target.tls, retry=Retry(NoBackoff(), 0), **common)
        return sentinel.master_for(target.service, db=target.db, **auth)
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], ssl=target.tls,
                        max_connections=max_connections, retry=Retry(NoBackoff(), 0), **common, **auth)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def _default_fallback(clock: Callable[[], float]) -> StateStore:
    from regional_lb.state.memory import MemoryStore

    return MemoryStore(clock=clock)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """StateStore on Redis; never raises because Redis is down (see the module docstring)."""

    def __init__(self, url: str, *, key_prefix: str = "lb:", fallback: StateStore | None = None,
                 clock: Callable[[], float] = time.monotonic, client: Any = None,
                 timeout: float = 0.5, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 inflight_idle_expiry: float = 3600.0) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self._own_client = client is None
        self._client = client if client is not None else make_client(url, timeout=timeout)
        self._fallback = fallback if fallback is not None else _default_fallback(clock)
        self._clock = clock
        self._errors = _redis_errors()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._inflight_expiry = max(1, int(inflight_idle_expiry))
        self.available = True
        self.stats: dict[str, int] = {"redis_errors": 0, "fallback_calls": 0, "outages": 0}
        # increments this replica made in Redis and has not yet taken back, per (pool, backend)
        self._owned: dict[tuple[str, str], int] = {}
        # decrements owed to Redis that could not be sent during an outage
        self._debt: dict[tuple[str, str], int] = {}
        self._set_sticky = self._client.register_script(_SET_STICKY)
        self._delete_sticky = self._client.register_script(_DELETE_STICKY)
        self._count_sticky = self._client.register_script(_COUNT_STICKY)
        self._incr = self._client.register_script(_INCR)
        self._decr = self._client.register_script(_DECR)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Same as the constructor (the name the proxy calls it by)."""
        return cls(url, **kwargs)

    def __repr__(self) -> str:
        state = "up" if self.available else "down, using local state"
        return f"<RedisStore {self.url} [{state}, {self.stats['redis_errors']} errors]>"

    # -- keys ----------------------------------------------------------------------------
    def _stick_base(self, table: str) -> str:
        return f"{self.key_prefix}stick:{{{table}}}:"

    def _inflight_key(self, pool: str) -> str:
        return f"{self.key_prefix}inflight:{{{pool}}}"

    # -- outage handling -------------------------------------------------------------------
    async def _run(self, op: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        now = self._clock()
        if not self.available and now < self._retry_at:
            self.stats["fallback_calls"] += 1
            return await fallback()
        try:
            result = await op()
        except self._errors as exc:
            self._failed(exc, now)
            self.stats["fallback_calls"] += 1
            return await fallback()
        if not self.available:
            self._recovered(self._clock())
            await self._pay_debt()
        return result

    def _failed(self, exc: BaseException, now: float) -> None:
        self.stats["redis_errors"] += 1
        if self.available:
            self.available = False
            self.stats["outages"] += 1
            self._down_since = now
            self._backoff = self._backoff_initial
            log.warning("Redis %s unreachable (%s: %s): using local state, retrying in %.1fs",
                        self.url, type(exc).__name__, exc, self._backoff)
        elif now >= self._retry_at:
            # a retry after the back-off failed (calls that were already under way when the outage
            # was noticed, or concurrent retries, do not grow the back-off again)
            self._backoff = min(self._backoff * 2, self._backoff_max)
            log.debug("Redis %s still unreachable (%s); next try in %.1fs", self.url, exc, self._backoff)
        else:
            return
        self._retry_at = now + self._backoff

    def _recovered(self, now: float) -> None:
        self.available = True
        down = now - self._down_since if self._down_since is not None else 0.0
        self._down_since = None
        self._backoff = self._backoff_initial
        log.warning("Redis %s reachable again after %.1fs: shared state in use", self.url, down)

    async def _pay_debt(self) -> None:
        debt, self._debt = self._debt, {}
        for (pool, backend_id), amount in debt.items():
            try:
                await self._decr(keys=[self._inflight_key(pool)], args=[backend_id, amount])
            except self._errors as exc:
                self._debt[(pool, backend_id)] = self._debt.get((pool, backend_id), 0) + amount
                self._failed(exc, self._clock())
                return

    # -- stick table -----------------------------------------------------------------------
    async def get_sticky(self, table: str, key: str) -> str | None:
        async def op() -> str | None:
            value = _text(await self._client.get(self._stick_base(table) + "k:" + key))
            return value if value is not None else await self._fallback.get_sticky(table, key)

        return await self._run(op, lambda: self._fallback.get_sticky(table, key))

    async def set_sticky(self, table: str, key: str, backend_id: str, ttl: float) -> None:
        base = self._stick_base(table)
        ttl_ms = max(1, int(ttl * 1000))

        async def op() -> None:
            await self._set_sticky(keys=[base + "k:" + key, base + "b:" + backend_id],
                                   args=[backend_id, ttl_ms, base + "b:", key])

        await self._run(op, lambda: self._fallback.set_sticky(table, key, backend_id, ttl))

    async def delete_sticky(self, table: str, key: str) -> None:
        base = self._stick_base(table)

        async def op() -> None:
            await self._delete_sticky(keys=[base + "k:" + key], args=[base + "b:", key])
            await self._fallback.delete_sticky(table, key)

        await self._run(op, lambda: self._fallback.delete_sticky(table, key))

    async def count_sticky(self, table: str, backend_id: str) -> int:
        async def op() -> int:
            return int(await self._count_sticky(keys=[self._stick_base(table) + "b:" + backend_id]))

        return await self._run(op, lambda: self._fallback.count_sticky(table, backend_id))

    # -- in-flight counters ----------------------------------------------------------------
    async def incr_inflight(self, pool: str, backend_id: str) -> int:
        async def op() -> int:
            key = self._inflight_key(pool)
            value = int(await self._incr(keys=[key], args=[backend_id, self._inflight_expiry]))
            self._owned[(pool, backend_id)] = self._owned.get((pool, backend_id), 0) + 1
            return value

        return await self._run(op, lambda: self._fallback.incr_inflight(pool, backend_id))

    async def decr_inflight(self, pool: str, backend_id: str) -> int:
        slot = (pool, backend_id)
        if self._owned.get(slot, 0) <= 0:
            return await self._fallback.decr_inflight(pool, backend_id)
        self._owned[slot] -= 1
        if self._owned[slot] == 0:
            del self._owned[slot]

        async def op() -> int:
            return int(await self._decr(keys=[self._inflight_key(pool)], args=[backend_id, 1]))

        async def owe() -> int:
            self._debt[slot] = self._debt.get(slot, 0) + 1
            return 0

        return await self._run(op, owe)

    async def inflight(self, pool: str, backend_ids: Sequence[str]) -> dict[str, int]:
        ids = list(backend_ids)
        local = await self._fallback.inflight(pool, ids)
        if not ids:
            return {}

        async def op() -> dict[str, int]:
            values = await self._client.hmget(self._inflight_key(pool), ids)
            return {bid: max(0, int(v or 0)) + local.get(bid, 0) for bid, v in zip(ids, values, strict=True)}

        async def only_local() -> dict[str, int]:
            return {bid: local.get(bid, 0) for bid in ids}

        return await self._run(op, only_local)

    async def close(self) -> None:
        try:
            if self._own_client:
                await self._client.aclose()
        finally:
            await self._fallback.close()
