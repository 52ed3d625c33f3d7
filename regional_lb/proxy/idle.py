"""The idle timer of an established tunnel: CONNECT and WebSocket relays  [edge: the loop's timer].

HAProxy's `timeout tunnel` (config `timeouts.tunnel`): a tunnel that carries nothing in either
direction for `idle` seconds is closed. Without it a client could open tunnels on a route that
allows them and stay silent, holding a client socket, a backend connection and an in-flight
count each, for ever (aiohttp's keep-alive timeout does not apply after an upgrade).

    timer = IdleTimer(idle, on_idle)     # armed now, on the running loop's clock
    timer.touch()                        # on every chunk or message, either way
    timer.cancel()                       # when the tunnel ends for another reason

`touch()` is one clock read and one store: the timer is not re-armed per chunk (a busy tunnel
would push and cancel a heap entry for each). It fires at the deadline of the last touch it
knew; if a touch came since, it re-arms for the new deadline, so a busy tunnel costs one wake-up
per `idle` seconds. When a deadline passes with no touch, `on_idle()` is called, once.
The deadline is the event loop's monotonic time (asyncio's timers run on it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    __slots__ = ("_handle", "_loop", "_on_idle", "fired", "idle", "last")

    def __init__(self, idle: float, on_idle: Callable[[], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.idle = idle
        self._on_idle = on_idle
        self.fired = False
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + idle, self._check)

    def touch(self) -> None:
        """Traffic: the wait starts again."""
        self.last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        deadline = self.last + self.idle
        if self._loop.time() < deadline:               # touched since: wait for the new deadline
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self._handle = None
        self.fired = True
        self._on_idle()

    def __repr__(self) -> str:
        state = "fired" if self.fired else "cancelled" if self._handle is None else \
            f"{max(0.0, self.last + self.idle - self._loop.time()):.3f}s left"
        return f"<IdleTimer {self.idle}s [{state}]>"
