"""gslb/common/framing.py and metrics_merge.py: the supervisor <-> worker pieces shared by both programs."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge

from gslb.common.framing import FrameDecoder, FramingError, encode
from gslb.common.metrics_merge import families_to_wire, merge, sample_total

messages = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4).map(
    lambda d: {**d, "t": "x"})


@given(st.lists(messages, max_size=5), st.integers(min_value=1, max_value=7))
def test_frames_cut_anywhere_decode_to_the_messages_sent(sent: list[dict[str, object]], step: int) -> None:
    data = b"".join(encode(m) for m in sent)
    decoder = FrameDecoder()
    got = [m for i in range(0, len(data), step) for m in decoder.feed(data[i:i + step])]
    assert got == sent


@given(st.binary(max_size=64))
def test_any_bytes_decode_to_messages_or_a_framing_error(data: bytes) -> None:
    decoder = FrameDecoder(max_frame=32)
    try:
        for message in decoder.feed(data):
            assert isinstance(message["t"], str)
    except FramingError:
        pass


def test_a_crafted_length_is_refused_before_anything_is_buffered() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(FramingError, match="over the 1024 byte limit"):
        list(decoder.feed(struct.pack(">I", 2**32 - 1)))
    with pytest.raises(FramingError, match="string \"t\""):
        list(FrameDecoder().feed(_frame(b"[1, 2]")))
    with pytest.raises(FramingError, match="not JSON"):
        list(FrameDecoder().feed(_frame(b"{nope")))
    with pytest.raises(FramingError, match="frame limit"):
        encode({"t": "x", "pad": "a" * 100}, max_frame=50)


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _registry(n: float, up: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("q", "queries", ["kind"], registry=registry).labels("a").inc(n)
    Gauge("state_up", "owned by the supervisor", registry=registry).set(up)
    return registry


def test_merge_sums_counters_and_keeps_supervisor_only_families_its_own() -> None:
    own, w1, w2 = (families_to_wire(_registry(n, up)) for n, up in ((0, 1), (5, 0), (7, 0)))
    merged = {m.name: m for m in merge(own, [w1, w2], supervisor_only={"state_up"})}
    assert [s.value for s in merged["q"].samples if s.name == "q_total"] == [12.0]
    assert [s.value for s in merged["state_up"].samples] == [1.0]
    assert sample_total(w2, "q") == 7.0
    assert all(not s.name.endswith("_created") for m in merged.values() for s in m.samples)
