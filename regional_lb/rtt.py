"""Passive client round-trip times: the kernel's estimate per connection, aggregated per network.

The edge LB sees every client's TCP connection; the kernel already measures its round-trip time
(the handshake gives the first sample, every ACK refines it).  `tcp_rtt_ms` reads that estimate,
`RttAggregator` [pure] keeps a median per client network (/24 IPv4, /48 IPv6 -- the networks a
resolver's ECS option names), and `regional_lb.latency_push.LatencyPusher` sends the batches to the
GSLB, whose latency steering then answers each network with the region that is closest in RTT,
not only in kilometres.

TCP_INFO layout (linux/tcp.h, ``struct tcp_info``, stable since 2.6): eight one-byte fields, then
32-bit fields ``rto ato snd_mss rcv_mss unacked sacked lost retrans fackets last_data_sent
last_ack_sent last_data_recv last_ack_recv pmtu rcv_ssthresh rtt rttvar ...`` -- so ``tcpi_rtt``
(smoothed RTT, microseconds) is the u32 at byte offset 68 and ``tcpi_rttvar`` at 72, in native
byte order.  We ask for 104 bytes (what every kernel since 2.6 returns at least).
"""

from __future__ import annotations

import ipaddress
import math
import socket
import statistics
import struct
import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

TCP_INFO_LEN = 104
TCPI_RTT_OFFSET = 68          # u32 tcpi_rtt, microseconds
_U32 = struct.Struct("=I")


def tcp_rtt_ms(sock: Any) -> float | None:
    """The kernel's smoothed RTT of a connected TCP socket, in ms; None off Linux or on any error."""
    if sock is None or not sys.platform.startswith("linux"):
        return None
    opt = getattr(socket, "TCP_INFO", 11)
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, opt, TCP_INFO_LEN)
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    if not isinstance(raw, bytes) or len(raw) < TCPI_RTT_OFFSET + 4:
        return None
    (rtt_us,) = _U32.unpack_from(raw, TCPI_RTT_OFFSET)
    return int(rtt_us) / 1000.0


def transport_rtt_ms(transport: Any) -> float | None:
    """`tcp_rtt_ms` of an asyncio transport's socket (the default RTT source of the pusher)."""
    if transport is None:
        return None
    try:
        sock = transport.get_extra_info("socket")
    except Exception:
        return None
    return tcp_rtt_ms(sock)


def client_network(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """"1.2.3.4" -> "1.2.3.0/24", "2001:db8:1:2::5" -> "2001:db8:1::/48", v4-mapped as IPv4; None if not an IP."""
    try:
        addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(slots=True)
class _Samples:
    rtts: deque[tuple[float, float]]     # (time, rtt ms), the most recent `max_samples`
    count: int = 0                       # samples seen since the last drain (may exceed len(rtts))
    first: float = field(default=0.0)


class RttAggregator:
    """Median RTT and sample count per client network over a window  [pure: `now` is passed in].

    Memory is bounded: at most `max_networks` networks (the least recently observed is dropped)
    and `max_samples` samples each (the oldest dropped; the count still counts them).
    `drain_batch(now)` returns what was observed within `window` seconds and starts afresh.
    """

    def __init__(self, *, window: float = 60.0, max_networks: int = 10_000, max_samples: int = 64) -> None:
        if window <= 0 or max_networks < 1 or max_samples < 1:
            raise ValueError("window, max_networks and max_samples must be positive")
        self.window = window
        self.max_networks = max_networks
        self.max_samples = max_samples
        self._nets: OrderedDict[str, _Samples] = OrderedDict()
        self.dropped_networks = 0

    def __len__(self) -> int:
        return len(self._nets)

    def __repr__(self) -> str:
        return f"<RttAggregator {len(self._nets)} networks, window {self.window:g}s>"

    def observe(self, client_ip: str, rtt_ms: float | None, now: float) -> None:
        """One RTT sample for a client; bad addresses and non-finite or negative RTTs are ignored."""
        if rtt_ms is None or not math.isfinite(rtt_ms) or rtt_ms < 0:
            return
        net = client_network(client_ip)
        if net is None:
            return
        samples = self._nets.get(net)
        if samples is None:
            if len(self._nets) >= self.max_networks:
                self._nets.popitem(last=False)
                self.dropped_networks += 1
            samples = self._nets[net] = _Samples(deque(maxlen=self.max_samples), first=now)
        else:
            self._nets.move_to_end(net)
        samples.rtts.append((now, float(rtt_ms)))
        samples.count += 1

    def drain_batch(self, now: float) -> list[dict[str, Any]]:
        """[{"network": "1.2.3.0/24", "rtt_ms": 23.5, "count": 12}, ...] for samples within the window."""
        since = now - self.window
        batch = []
        for net, samples in self._nets.items():
            recent = [rtt for t, rtt in samples.rtts if t >= since]
            if not recent:
                continue
            # samples beyond the kept ones count only if the whole run is recent
            count = samples.count if samples.first >= since else len(recent)
            batch.append({"network": net, "rtt_ms": round(statistics.median(recent), 3), "count": count})
        self._nets.clear()
        return batch
