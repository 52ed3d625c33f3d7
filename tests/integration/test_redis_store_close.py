"""A RedisStore on Sentinel and on Cluster: its probe after an outage pings the right nodes, and
closing it leaves this process no socket to any sentinel or data node.

The store learns the topology from its URL and keeps the connections its own client opens in a
set of its own (regional_lb/state/redis_client.py: `make_client(connections=...)`), instead of
probing the redis-py client with getattr; the Sentinel clients behind a Sentinel pool and a
cluster's nodes are found with isinstance.  Sockets are read from /proc (Linux).

What this cannot tell apart: the sentinel sockets are closed both through the tracked connections
and by closing the Sentinel clients (either alone suffices; with neither the test fails), and a
cluster answers a plain PING as well as one to every master (the probe's target is not observed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from regional_lb.state.redis import RedisStore
from regional_lb.state.redis_client import cluster_nodes
from tests.proc_sockets import sockets_to
from tests.redis_helpers import ClusterTopology, SentinelTopology, cluster_topology, sentinel_topology

Topology = SentinelTopology | ClusterTopology


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    starter = sentinel_topology if request.param == "sentinel" else cluster_topology
    with starter() as topo:
        yield topo


def ports_of(topo: Topology) -> set[int]:
    if isinstance(topo, SentinelTopology):
        return {s.port for s in (*topo.sentinels, *topo.data_nodes)}
    return {n.port for n in topo.nodes}


async def test_probe_and_close_on_a_real_topology(topology: Topology) -> None:
    ports = ports_of(topology)
    assert sockets_to(ports) == 0
    store = RedisStore(topology.url, budget=1.0)
    try:
        await store.start()
        assert store.available
        await store.set_sticky("t", "k", "app-1", ttl=60)
        assert await store.get_sticky("t", "k") == "app-1"
        await store.tick()
        assert store._connections                                 # tracked: opened by our own client
        assert bool(cluster_nodes(store.client)) is isinstance(topology, ClusterTopology)
        store.available = False                                   # as after an outage: the next round probes
        store._retry_at = 0.0
        await store.tick()
        assert store.available                                    # the probe (cluster: every master) answered
        assert store.stats["redis_errors"] == 0
        assert sockets_to(ports) > 0
    finally:
        await store.close()
    assert sockets_to(ports) == 0
