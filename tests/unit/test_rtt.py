"""Client RTT: reading the kernel's estimate, and the per-network aggregator."""

from __future__ import annotations

import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regional_lb.rtt import TCPI_RTT_OFFSET, RttAggregator, client_network, tcp_rtt_ms, transport_rtt_ms


@pytest.mark.parametrize(("ip", "net"), [
    ("1.2.3.4", "1.2.3.0/24"),
    ("175.45.176.99", "175.45.176.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("::ffff:10.9.8.7", "10.9.8.0/24"),
    ("fe80::1%eth0", "fe80::/48"),
    ("not-an-ip", None),
    ("", None),
])
def test_client_network(ip: str, net: str | None) -> None:
    assert client_network(ip) == net


def test_median_and_count_per_network() -> None:
    agg = RttAggregator(window=60)
    for rtt in (10.0, 30.0, 20.0):
        agg.observe("1.2.3.4", rtt, now=100.0)
    agg.observe("1.2.3.200", 40.0, now=101.0)          # same /24
    agg.observe("2001:db8::1", 5.0, now=101.0)
    agg.observe("bogus", 5.0, now=101.0)
    agg.observe("9.9.9.9", None, now=101.0)
    agg.observe("9.9.9.9", float("nan"), now=101.0)
    agg.observe("9.9.9.9", -1.0, now=101.0)
    assert len(agg) == 2
    batch = sorted(agg.drain_batch(now=110.0), key=lambda m: m["network"])
    assert batch == [{"network": "1.2.3.0/24", "rtt_ms": 25.0, "count": 4},
                     {"network": "2001:db8::/48", "rtt_ms": 5.0, "count": 1}]
    assert agg.drain_batch(now=111.0) == []             # drained


def test_samples_older_than_the_window_are_left_out() -> None:
    agg = RttAggregator(window=10)
    agg.observe("1.2.3.4", 100.0, now=0.0)
    agg.observe("1.2.3.4", 10.0, now=15.0)
    agg.observe("5.6.7.8", 50.0, now=1.0)
    assert agg.drain_batch(now=20.0) == [{"network": "1.2.3.0/24", "rtt_ms": 10.0, "count": 1}]


def test_memory_is_bounded() -> None:
    agg = RttAggregator(window=60, max_networks=3, max_samples=4)
    for i in range(10):
        agg.observe("1.1.1.1", float(i), now=1.0)
    for n in range(2, 6):
        agg.observe(f"10.0.{n}.1", 1.0, now=2.0)
    assert len(agg) == 3
    assert agg.dropped_networks == 2
    batch = {m["network"]: m for m in agg.drain_batch(now=3.0)}
    assert "1.1.1.0/24" not in batch                     # least recently observed went first
    assert set(batch) == {"10.0.3.0/24", "10.0.4.0/24", "10.0.5.0/24"}


def test_count_includes_samples_beyond_the_kept_ones() -> None:
    agg = RttAggregator(window=60, max_samples=3)
    for i in range(10):
        agg.observe("1.1.1.1", float(i), now=1.0)
    assert agg.drain_batch(now=2.0) == [{"network": "1.1.1.0/24", "rtt_ms": 8.0, "count": 10}]


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        RttAggregator(window=0)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.floats(0, 10_000), st.floats(0, 100)), max_size=60))
def test_batch_invariants(samples: list[tuple[int, float, float]]) -> None:
    agg = RttAggregator(window=30, max_networks=8, max_samples=5)
    for ip, rtt, t in samples:
        agg.observe(str(socket.inet_ntoa(ip.to_bytes(4, "big"))), rtt, now=t)
    assert len(agg) <= 8
    batch = agg.drain_batch(now=100.0)
    nets = [m["network"] for m in batch]
    assert len(nets) == len(set(nets))
    for m in batch:
        assert m["count"] >= 1
        assert 0 <= m["rtt_ms"] <= 10_000
        assert m["network"].endswith("/24")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux only")
def test_tcp_rtt_of_a_real_loopback_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            client.sendall(b"x")
            assert conn.recv(1) == b"x"
            rtt = tcp_rtt_ms(conn)
            assert rtt is not None
            assert 0 <= rtt < 100                          # loopback: well under a millisecond usually
            raw = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            assert int.from_bytes(raw[TCPI_RTT_OFFSET:TCPI_RTT_OFFSET + 4], sys.byteorder) == round(rtt * 1000)


def test_tcp_rtt_is_none_when_there_is_no_tcp_info() -> None:
    assert tcp_rtt_ms(None) is None
    assert tcp_rtt_ms(object()) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcp_rtt_ms(udp) is None

    class Transport:
        def get_extra_info(self, name: str) -> object:
            raise RuntimeError("closed")

    assert transport_rtt_ms(None) is None
    assert transport_rtt_ms(Transport()) is None
