"""Whether this process still holds a TCP socket (an open file descriptor), read from /proc (Linux).

A transport closed with bytes still queued stays open until a peer that does not read takes them,
i.e. for ever; one aborted is released at once. Sockets the kernel keeps after the descriptor is
closed (orphans, TIME_WAIT) show inode 0 in /proc/net/tcp and do not count.
"""

from __future__ import annotations

import os


def own_tcp_sockets() -> list[tuple[int, int]]:
    """(local port, remote port) of every TCP socket one of this process's descriptors is."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes:
                found.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)))
    return found


def holds_tcp_socket(local_port: int, remote_port: int) -> bool:
    """True if one of this process's descriptors is the TCP socket local_port <-> remote_port."""
    return (local_port, remote_port) in own_tcp_sockets()


def sockets_to(ports: set[int]) -> int:
    """How many of this process's descriptors are TCP sockets connected to one of `ports`."""
    return sum(1 for _local, remote in own_tcp_sockets() if remote in ports)
