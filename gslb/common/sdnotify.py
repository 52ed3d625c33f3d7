"""systemd's service notification protocol (sd_notify(3)), for `Type=notify` units  [edge].

    notifier = Notifier.from_environ()          # does nothing when NOTIFY_SOCKET is not set
    notifier.ready()                            # READY=1: listeners bound, first health round done
    notifier.reloading(now_usec)                # RELOADING=1 + MONOTONIC_USEC (a SIGHUP reload starts)
    notifier.ready()                            # ... and is over (kept or refused)
    notifier.stopping()                         # STOPPING=1: draining before exit
    notifier.watchdog_interval                  # seconds between WATCHDOG=1 pings, or None

The protocol is one datagram of newline-separated assignments sent to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or an abstract name when it starts with '@'); a send that fails is logged
once and never stops the program. The watchdog is on when systemd sets $WATCHDOG_USEC (WatchdogSec=
in the unit) for this process ($WATCHDOG_PID, when set, must be ours); the program pings at half
that period from its event loop, so a wedged loop is restarted by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("gslb.sdnotify")


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._warned = False
        self.sent: list[str] = []             # what was sent (for logs and tests)

    def __repr__(self) -> str:
        return f"<Notifier {self.address or 'off'}{' watchdog' if self.watchdog_interval else ''}>"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "serving") -> bool:
        return self.send(f"READY=1\nSTATUS={status}")

    def reloading(self, monotonic_usec: int | None = None) -> bool:
        usec = monotonic_usec if monotonic_usec is not None else time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config")

    def stopping(self) -> bool:
        return self.send("STOPPING=1\nSTATUS=stopping: letting in-flight work finish")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
