"""The store's edge to Redis: URLs, clients with blocking pools, and one budgeted call  [edge].

    target = parse_redis_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/lb")
    client = make_client(url, pool_size=64)
    edge = RedisEdge(client, pool_size=64)
    value = await edge.call(0.02, client.get, "rlb:s:auth:{abc}")     # StoreError past 20 ms

Accepted URLs (parsed by regional_lb/state/urls.py)
  * ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path/redis.sock?db=0``
    -- anything `redis.asyncio.from_url` takes;
  * ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/SERVICE[/db]`` -- Sentinel: the current
    master of SERVICE, followed across fail-overs (``rediss+sentinel://`` for TLS to the data nodes);
  * ``redis+cluster://[[user]:password@]host1:7000[,host2:7001]`` -- Redis Cluster (seed nodes).

Pools: every URL form gets a bounded pool that *waits* for a free connection instead of failing
("Too many connections" / MaxConnectionsError once made a burst look like an outage): plain URLs a
redis-py BlockingConnectionPool, Sentinel a blocking SentinelConnectionPool, Cluster one pool per
node.  On top, `RedisEdge` lets at most `pool_size` commands (or pipelines) be under way at once
(an asyncio semaphore), so no pool is ever asked for more connections than it has; waiting for
the semaphore counts against the caller's budget.  No client-side retries: the store backs off.

A call still waiting for a connection when its budget runs out is dropped (nothing was sent) and
raises StoreBusy: the pool, not Redis, was the bottleneck, and the store does not count it
towards an outage.

`RedisEdge.call` is where redis-py meets the store: whatever it raises -- RedisError and its
family (ConnectionError, TimeoutError, ClusterDownError, MasterNotFoundError, ...), OSError, and
the RuntimeError / AttributeError / IndexError a RedisCluster raises while it re-reads the
topology -- and a budget overrun become one `StoreError` (regional_lb/errors.py).  Cancellation
of the caller is not an error and passes through.  Each call's duration goes into a histogram
(`rtt_buckets`, upper bounds in seconds: `RTT_BOUNDS`) exported by regional_lb/metrics.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from regional_lb.errors import StoreBusy, StoreError, StoreTimeout
from regional_lb.state.urls import RedisTarget, RedisUrlError, parse_redis_url

__all__ = ["RTT_BOUNDS", "RedisEdge", "RedisTarget", "RedisUrlError", "close_client", "cluster_nodes", "make_client",
           "parse_redis_url", "prune_connections"]

RTT_BOUNDS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


def _blocking_sentinel_pool() -> type:
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import SentinelConnectionPool

    class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
        """A Sentinel-managed pool that waits for a free connection (BlockingConnectionPool's
        get_connection) instead of raising when all `max_connections` are in use."""

    return BlockingSentinelConnectionPool


def _tracked(base: type, registry: set[Any]) -> type:
    """`base` (a redis-py connection class) whose instances join `registry`, so that closing the
    store disconnects every connection it ever opened -- including those redis-py stops tracking
    after a fail-over (a Sentinel pool's connections to the old master, a cluster's dropped nodes)."""

    class Tracked(base):  # type: ignore[misc]
        async def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
            registry.add(self)              # held (strongly) until closed: see prune_connections
            # redis-py cleans up a handshake that fails with a RedisError, not one that is
            # cancelled (a hung server, a hard timeout): the socket would stay open, unowned
            try:
                return await super().connect_check_health(*args, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.disconnect(nowait=True)
                raise

    return Tracked


def make_client(url: str, *, timeout: float = 1.0, pool_size: int = 64,
                connections: set[Any] | None = None) -> Any:
    """A redis-py asyncio client for `url` with a bounded, blocking pool and no client-side retries.

    `timeout`: socket connect / read timeout (the edge's budget usually cuts a call shorter).
    `connections`: a Sentinel or Cluster client adds every connection it opens to this set (the
    caller's: `prune_connections` and `close_client` take it), so closing disconnects them all;
    a plain URL's pool keeps track of its own."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    target = parse_redis_url(url)
    common: dict[str, Any] = {"decode_responses": True, "socket_timeout": timeout,
                              "socket_connect_timeout": timeout}
    if target.kind == "url":
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            target.url, max_connections=pool_size, timeout=timeout, retry=Retry(NoBackoff(), 0), **common)
        return redis.asyncio.Redis.from_pool(pool)
    from redis.asyncio.connection import Connection, SSLConnection

    registry: set[Any] = connections if connections is not None else set()
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    client: Any
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

        sentinel_side = {"socket_timeout": min(timeout, 0.25), "socket_connect_timeout": min(timeout, 0.25),
                         "decode_responses": True, **auth}
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_side,  # type: ignore[no-untyped-call]
                            ssl=target.tls, retry=Retry(NoBackoff(), 0), **common)
        for side in sentinel.sentinels:         # Redis() takes no connection_class: set it on its pool
            side.connection_pool.connection_class = _tracked(Connection, registry)
        managed = SentinelManagedSSLConnection if target.tls else SentinelManagedConnection
        client = sentinel.master_for(target.service, db=target.db, connection_pool_class=_blocking_sentinel_pool(),
                                     connection_class=_tracked(managed, registry), max_connections=pool_size,
                                     timeout=timeout, **auth)
    else:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        conn_class = _tracked(SSLConnection if target.tls else Connection, registry)
        # the edge's semaphore keeps concurrent use at pool_size; the slack covers connections
        # still being handed back by calls that ran past their budget
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], ssl=target.tls,
                              max_connections=pool_size + 8, retry=Retry(NoBackoff(), 0), **common, **auth)
        # RedisCluster takes no connection_class: set it where nodes are made (none has connected yet)
        client.connection_kwargs["connection_class"] = conn_class
        client.nodes_manager.connection_kwargs["connection_class"] = conn_class
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = conn_class
    return client


def prune_connections(connections: set[Any]) -> None:
    """Forget tracked connections (make_client's `connections`) that are closed (they join again
    when they reconnect)."""
    for conn in [c for c in connections if not c.is_connected]:
        connections.discard(conn)


def cluster_nodes(client: Any) -> list[Any]:
    """A RedisCluster's current nodes (none for other clients, a wrapper around one included)."""
    from redis.asyncio.cluster import RedisCluster

    return list(client.nodes_manager.nodes_cache.values()) if isinstance(client, RedisCluster) else []


async def close_client(client: Any, extra_nodes: Iterable[Any] = (), connections: Iterable[Any] = ()) -> None:
    """Close a client made by `make_client`, with the Sentinel clients behind a Sentinel pool,
    the `connections` make_client tracked for it and, for a cluster, `extra_nodes`: nodes it
    dropped from its map after a fail-over, whose connections redis-py leaves open when a command
    was under way on them at the time."""
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import SentinelConnectionPool

    try:
        await client.aclose()
    finally:
        if isinstance(client, Redis) and isinstance(client.connection_pool, SentinelConnectionPool):
            for sentinel in client.connection_pool.sentinel_manager.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()
        for node in extra_nodes:
            with contextlib.suppress(Exception):
                await node.disconnect()
        for conn in list(connections):
            with contextlib.suppress(Exception):
                await conn.disconnect()


class RedisEdge:
    """Runs one Redis call (a command or a pipeline) within a time budget; StoreError otherwise.

    Past the caller's budget the caller gets StoreTimeout at once, but the command itself is not
    cancelled: it finishes (or fails) in the background within `hard_timeout`, so its connection
    goes back to the pool in a known state.  Cancelling redis-py mid-command closes the connection,
    and every reconnection (a Sentinel look-up, a cluster slot refresh) then makes the next calls
    slow too: a brief stall of the event loop would snowball into an outage."""

    rtt_bounds = RTT_BOUNDS

    def __init__(self, client: Any, *, pool_size: int = 64, hard_timeout: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.pool_size = pool_size
        self.hard_timeout = hard_timeout
        self._sem = asyncio.Semaphore(pool_size)
        self._clock = clock
        self.rtt_buckets = [0] * (len(RTT_BOUNDS) + 1)      # the last one: +Inf
        self.rtt_sum = 0.0
        self.late = 0                                        # calls still running past their budget
        self._late: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        busy = self.pool_size - self._sem._value
        return f"<RedisEdge [{busy}/{self.pool_size} busy, {self.late} past their budget]>"

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   started: list[bool]) -> Any:
        async with asyncio.timeout(self.hard_timeout):
            async with self._sem:
                started.append(True)
                return await fn(*args, **kwargs)

    def _late_done(self, task: asyncio.Task[Any]) -> None:
        self.late -= 1
        self._late.discard(task)
        if not task.cancelled():
            task.exception()                # retrieved: a late failure is not "never retrieved"

    async def drain(self) -> None:
        """Wait (at most hard_timeout) for the calls still running past their budget."""
        if self._late:
            await asyncio.wait(list(self._late), timeout=self.hard_timeout)

    async def call(self, budget: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        clock = self._clock
        t0 = clock()
        started: list[bool] = []
        task = asyncio.get_running_loop().create_task(self._run(fn, args, kwargs, started))
        try:
            async with asyncio.timeout(budget):
                return await asyncio.shield(task)
        except TimeoutError as exc:
            if not started:                 # still waiting for a connection: nothing sent, drop it
                task.cancel()
                raise StoreBusy(f"no Redis connection free within {budget * 1000:.0f} ms") from None
            if not task.done():
                self.late += 1
                self._late.add(task)
                task.add_done_callback(self._late_done)
                raise StoreTimeout(f"Redis did not answer within {budget * 1000:.0f} ms") from None
            raise StoreError(f"Redis did not answer within {self.hard_timeout:.1f} s") from exc
        except asyncio.CancelledError:
            if not task.done():             # the caller went away: let the command finish quietly
                self.late += 1
                self._late.add(task)
                task.add_done_callback(self._late_done)
            raise
        except StoreError:
            raise
        except Exception as exc:        # the point: nothing redis-py raises gets past here
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            elapsed = clock() - t0
            self.rtt_buckets[bisect_left(RTT_BOUNDS, elapsed)] += 1
            self.rtt_sum += elapsed
