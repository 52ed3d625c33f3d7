"""LoadBalancer's state store and upstream client are typed seams that exist from construction
(regional_lb/app.py): start() connects the store, stop() closes what the LoadBalancer built --
once, however often it is called -- and leaves a store passed in to its owner. /metrics reads
the store through the StateStore protocol."""

from __future__ import annotations

import asyncio

import aiohttp

from regional_lb.app import LoadBalancer
from regional_lb.proxy.upstream import Upstream
from regional_lb.state.memory import MemoryStore
from regional_lb.state.redis import RedisStore
from tests.rlb_helpers import admin_url, backend_servers, free_port, lb_config, lb_url, running_lb

LEARN = [{"name": "learn", "pool": "app", "policy": "sticky_learn",
          "options": {"cookie": "JSESSIONID", "first": "round_robin"}}]


async def test_store_and_upstream_exist_before_start_and_an_own_store_is_closed_once() -> None:
    async with backend_servers(["a"]) as (a,):
        lb = LoadBalancer(lb_config([a], routes=LEARN))
        assert isinstance(lb.store, MemoryStore)
        assert isinstance(lb.upstream, Upstream)
        store = lb.store
        closes = 0
        close = store.close

        async def counted_close() -> None:
            nonlocal closes
            closes += 1
            await close()

        store.close = counted_close  # type: ignore[method-assign]
        await lb.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(lb_url(lb, "/set-cookie?name=JSESSIONID&value=v1")) as r:
                    assert r.status == 200
                async with s.get(admin_url(lb, "/metrics")) as r:
                    assert "rlb_state_local_entries 1.0" in await r.text()
        finally:
            await lb.stop()
        assert lb.store is store
        assert len(store.local) == 0                     # closed: its own store is cleared
        await lb.stop()                                  # a second stop closes nothing again
        assert closes == 1


async def test_a_store_passed_in_is_used_and_left_open() -> None:
    store = MemoryStore()
    async with backend_servers(["a"]) as (a,):
        async with running_lb(lb_config([a], routes=LEARN), store=store) as lb, aiohttp.ClientSession() as s:
            assert lb.store is store
            async with s.get(lb_url(lb, "/set-cookie?name=JSESSIONID&value=v1")) as r:
                assert r.status == 200
        assert await store.get_sticky("learn", "v1") == "a"     # not closed by the LoadBalancer
        await store.close()


async def test_a_redis_store_is_built_with_the_lb_and_connects_nothing_until_start() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"                   # nothing listens there
    lb = LoadBalancer(lb_config(["127.0.0.1:9"], state={"backend": "redis", "url": url}))
    assert isinstance(lb.store, RedisStore)
    assert lb.store.url == url
    assert lb.store.available                                    # not tried yet
    assert lb.store.stats["redis_errors"] == 0
    await lb.stop()                                              # never started: nothing to close


async def test_aiohttp_server_sweeps_its_connections_for_header_timeouts() -> None:
    """ProxyServer's sweep reads each connection's typed `header_since` (no getattr probe): a
    client that never finishes its header block gets a 408, one that does is served."""
    async with backend_servers(["a"]) as bs, \
            running_lb(lb_config(bs, timeouts={"header_read": "200ms"}), server="aiohttp") as lb:
        host, port = lb.listen_addresses[0]
        slow_reader, slow_writer = await asyncio.open_connection(host, port)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")           # and never finishes
        await slow_writer.drain()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        assert (await asyncio.wait_for(slow_reader.read(), 5)).startswith(b"HTTP/1.1 408")
        for w in (writer, slow_writer):
            w.close()
            await w.wait_closed()
