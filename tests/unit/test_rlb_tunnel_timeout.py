"""`timeouts.tunnel`: parsed like the other timeouts (errors name file, line, key path and reason), and the
IdleTimer behind it (regional_lb/proxy/idle.py) on a fake loop: time is passed in, no sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gslb.common.configload import ConfigError
from regional_lb.cli import main
from regional_lb.config import parse_config
from regional_lb.proxy.idle import IdleTimer

BASE: dict[str, Any] = {
    "region": "r1",
    "listen": [{"address": "127.0.0.1:8080"}],
    "pools": {"app": {"backends": [{"address": "127.0.0.1:9001"}]}},
    "routes": [{"pool": "app"}],
}


def _parse(timeouts: dict[str, Any] | None) -> Any:
    doc = dict(BASE)
    if timeouts is not None:
        doc["timeouts"] = timeouts
    return parse_config(yaml.safe_dump(doc), file="t.yaml")


def test_default_is_an_hour_and_a_duration_is_read() -> None:
    assert _parse(None).timeouts.tunnel == 3600.0
    assert _parse({"tunnel": "250ms"}).timeouts.tunnel == 0.25
    assert _parse({"tunnel": "2m"}).timeouts.tunnel == 120.0
    assert _parse({"tunnel": 0.001}).timeouts.tunnel == 0.001


@pytest.mark.parametrize(("value", "reason"), [
    ("-1s", "must be >= 0.001s, got -1.0s"),
    (0, "must be >= 0.001s, got 0.0s"),
    ("soon", "expected a duration"),
    ([1], "expected a duration"),
    (True, "expected a duration"),
    ("inf", "expected a duration such as"),
    ("nan", "expected a duration such as"),
])
def test_a_bad_tunnel_timeout_is_refused_with_key_path_and_reason(value: Any, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse({"tunnel": value})
    assert str(info.value).startswith("t.yaml")
    assert "timeouts.tunnel: " + reason in str(info.value)


def test_check_config_names_file_line_key_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = dict(BASE, timeouts={"connect": "1s", "tunnel": "-5s"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "tunnel:" in text)
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:{line}: timeouts.tunnel: must be >= 0.001s, got -5.0s"
    assert out[-1] == f"{path}: 1 error"


class FakeLoop:
    """call_at and time, as IdleTimer uses them; `advance(t)` runs what falls due in time order."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeHandle] = []
        self.scheduled = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.timers.append(handle)
        self.scheduled += 1
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while due := sorted((h for h in self.timers if not h.cancelled and h.when <= end), key=lambda h: h.when):
            handle = due[0]
            self.timers.remove(handle)
            self.now = max(self.now, handle.when)
            handle.callback()
        self.now = end


class FakeHandle:
    def __init__(self, when: float, callback: Any) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _timer(idle: float = 10.0) -> tuple[IdleTimer, FakeLoop, list[float]]:
    loop = FakeLoop()
    fired: list[float] = []
    timer = IdleTimer(idle, lambda: fired.append(loop.now), loop)  # type: ignore[arg-type]
    return timer, loop, fired


def test_fires_once_when_nothing_happens_for_idle_seconds() -> None:
    timer, loop, fired = _timer()
    loop.advance(9.999)
    assert fired == []
    loop.advance(0.001)
    assert fired == [110.0]
    assert timer.fired
    loop.advance(100)
    assert fired == [110.0]
    assert "fired" in repr(timer)


def test_touches_move_the_deadline_without_a_timer_per_touch() -> None:
    timer, loop, fired = _timer()
    for _ in range(1000):                        # traffic every 0.05 s for 50 s
        loop.advance(0.05)
        timer.touch()
    assert fired == []
    assert loop.scheduled <= 7                   # one wake-up per idle period of traffic, not one per touch
    last = loop.now
    loop.advance(9.99)
    assert fired == []
    loop.advance(0.02)
    assert fired == [pytest.approx(last + 10.0)]


def test_cancel_stops_it() -> None:
    timer, loop, fired = _timer()
    loop.advance(5)
    assert "5.000s left" in repr(timer)
    timer.cancel()
    timer.cancel()                               # twice is harmless
    loop.advance(100)
    assert fired == []
    assert not timer.fired
    assert "cancelled" in repr(timer)
