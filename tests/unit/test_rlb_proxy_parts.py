"""Small pure parts of the edge: cookie parsing, request serialization, metrics, session tracking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendConnectError, BackendTimeout, NoBackend
from regional_lb.metrics import Metrics, status_class
from regional_lb.proxy.handler import LazyCookies
from regional_lb.proxy.upstream import serialize_head, translate
from regional_lb.runtime import SessionTracker


def test_lazy_cookies() -> None:
    c = LazyCookies('a=1; b="two"; bad; a=ignored; =x;c=')
    assert dict(c) == {"a": "1", "b": "two", "c": ""}
    assert c.get("zz") is None
    assert LazyCookies("").get("a", "d") == "d"


@given(st.text(max_size=60))
def test_lazy_cookies_never_raise(header: str) -> None:
    assert isinstance(dict(LazyCookies(header)), dict)


def test_serialize_head_and_injection_refused() -> None:
    assert serialize_head("GET", "/x?y", [("Host", "h"), ("A", "b")]) == \
        b"GET /x?y HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n"
    for bad in (("A", "b\r\nX: y"), ("A", "b\n"), ("A\r", "b")):
        with pytest.raises(ValueError, match="line break"):
            serialize_head("GET", "/", [bad])
    with pytest.raises(ValueError, match="line break"):
        serialize_head("GET", "/ HTTP/1.1\r\nX: y", [])


def test_translate_errors() -> None:

    import aiohttp

    b = Backend("b1", "127.0.0.1", 1)
    assert isinstance(translate(aiohttp.ConnectionTimeoutError(), backend=b), BackendConnectError)
    assert isinstance(translate(TimeoutError(), backend=b), BackendTimeout)
    assert str(NoBackend()) == "no backend available"
    assert NoBackend.status == 503


def test_metrics_export_requests_and_latency() -> None:
    m = Metrics()
    m.observe("r", "p", "b", 200, 0.003)
    m.observe("r", "p", "b", 502, 0.2)
    text = generate_latest(m.registry).decode()
    assert 'rlb_requests_total{backend="b",code="2xx",pool="p",route="r"} 1.0' in text
    assert 'rlb_requests_total{backend="b",code="5xx",pool="p",route="r"} 1.0' in text
    assert 'rlb_request_duration_seconds_bucket{le="0.005",route="r"} 1.0' in text
    assert 'rlb_request_duration_seconds_bucket{le="+Inf",route="r"} 2.0' in text
    assert [status_class(s) for s in (101, 200, 399, 404, 599, 700)] == ["1xx", "2xx", "3xx", "4xx", "5xx", "5xx"]


def test_session_tracker_counts_live_sessions_and_is_bounded() -> None:
    t = SessionTracker(max_idle=10, cap=3)
    for i, now in enumerate((0, 1, 2, 3)):
        t.touch("a", f"s{i}", now)
    assert t.count("a", 5) == 3            # capped: s0 forgotten
    assert t.count("a", 12.5) == 1         # s1, s2 idle > 10 s
    t.forget("a", "s3")
    assert t.count("a", 12.5) == 0
    assert t.count("nobody", 0) == 0
