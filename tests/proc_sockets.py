"""Whether this process still holds a TCP socket (an open file descriptor), read from /proc (Linux).

A transport closed with bytes still queued stays open until a peer that does not read takes them,
i.e. for ever; one aborted is released at once. Sockets the kernel keeps after the descriptor is
closed (orphans, TIME_WAIT) show inode 0 in /proc/net/tcp and do not count.
"""

from __future__ import annotations

import os


def holds_tcp_socket(local_port: int, remote_port: int) -> bool:
    """True if one of this process's descriptors is the TCP socket local_port <-> remote_port."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port
                    and inode in inodes):
                return True
    return False
