"""gslb/status.py: the status page's pure parts (sampler, share ring, client rows, why-not)."""

from __future__ import annotations

import ipaddress

import pytest

from gslb.status import AnswerSampler, NearDecision, Place, ShareHistory, client_rows, network_of, why_not
from tests.unit.dns_helpers import CLIENT, ask, make_responder, query

A = ipaddress.ip_address


def test_sampler_keeps_what_it_is_told_of_bounded_and_counts_what_each_stands_for():
    s = AnswerSampler(every=4, size=3)
    for i in range(5):
        s.add(A(f"10.0.{i}.1"), ("r",), float(i), 4)
    assert s.seen == 20
    assert [str(a) for a, _r, _t in s.samples] == ["10.0.2.1", "10.0.3.1", "10.0.4.1"]
    assert s.recent(4.0, 1.0) == [s.samples[1], s.samples[2]]
    assert "1/4, 3/3 kept, 20 seen" in repr(s)
    with pytest.raises(ValueError, match=">= 1"):
        AnswerSampler(every=0)


class Sink:
    """An AnswerSink that records every call."""

    def __init__(self, every: int = 1, fail: bool = False) -> None:
        self.every = every
        self.fail = fail
        self.told: list[tuple[str, tuple[str, ...], float, int]] = []

    def add(self, client, regions, now, seen):
        if self.fail:
            raise RuntimeError("observer bug")
        self.told.append((str(client), regions, now, seen))


def test_the_responder_tells_its_sink_of_one_answer_in_every():
    responder, _ = make_responder()
    responder.on_answer = sink = Sink(every=3)
    for i in range(7):      # distinct networks: 7 cache misses, every 3rd one told with the 3 it stands for
        ask(responder, query("www.example.test", ecs=f"203.0.{i}.0/24", qid=i), now=float(i))
    assert [(client, now, seen) for client, _r, now, seen in sink.told] == [
        ("203.0.2.0", 2.0, 3), ("203.0.5.0", 5.0, 3)]
    sink.every = 1          # read at every answer: a change takes effect at once
    ask(responder, query("www.example.test", ecs="203.0.9.0/24", qid=9), now=9.0)
    assert sink.told[-1][0] == "203.0.9.0"
    assert sink.told[-1][3] == 2        # the one pending, and this one


def test_share_history_deltas_ring_and_counter_reset():
    h = ShareHistory(interval=10, keep=3)
    assert h.due(0.0)
    h.snapshot({"a": 5}, 0.0, 1000.0)
    assert not h.due(9.9)
    assert h.due(10.0)
    assert h.points() == []
    h.snapshot({"a": 8, "b": 2}, 10.0, 1010.0)
    h.snapshot({"a": 3, "b": 4}, 20.0, 1020.0)          # a went back (new stats): counts from zero
    assert h.points() == [{"t": 1010.0, "seconds": 10.0, "answers": {"a": 3, "b": 2}},
                          {"t": 1020.0, "seconds": 10.0, "answers": {"a": 3, "b": 2}}]
    h.snapshot({"a": 4, "b": 4}, 30.0, 1030.0)          # keep=3: the oldest snapshot falls out
    assert len(h) == 3
    assert repr(h) == "<ShareHistory every 10 s, 3/3 snapshots>"
    assert [p["t"] for p in h.points()] == [1020.0, 1030.0]
    with pytest.raises(ValueError, match="interval"):
        ShareHistory(interval=0)


def test_client_rows_group_by_network_and_locate_once_each():
    calls = []

    def locate(address):
        calls.append(str(address))
        return None if str(address).startswith("192.0.2.") else Place(50.0, 8.0, "DE")

    samples = [(A("198.51.100.7"), ("eu",), 1.0), (A("198.51.100.9"), ("us",), 5.0),
               (A("198.51.100.1"), ("ap",), 3.0), (A("192.0.2.1"), ("us",), 2.0),
               (A("2001:db8:1:2::1"), ("eu",), 4.0)]
    rows = client_rows(samples, locate, now=10.0)
    assert rows == [
        {"network": "192.0.2.0/24", "regions": ["us"], "seconds_ago": 8.0, "samples": 1},
        {"network": "198.51.100.0/24", "regions": ["us"], "seconds_ago": 5.0, "samples": 3,
         "lat": 50.0, "lon": 8.0, "where": "DE"},
        {"network": "2001:db8:1::/48", "regions": ["eu"], "seconds_ago": 6.0, "samples": 1,
         "lat": 50.0, "lon": 8.0, "where": "DE"},
    ]
    assert len(calls) == 3
    assert network_of(A("2001:db8:1:2::1")) == "2001:db8:1::/48"


def region(name, **kw):
    info = {"name": name, "state": "up", "eligible": True, "drained": False, "degraded": False}
    info.update(kw)
    return info


def test_why_not_reasons_from_state():
    regions = [
        region("down", state="down", eligible=False,
               last_probe={"ok": False, "detail": "connect refused", "seconds_ago": 2.4}),
        region("drained", drained=True, eligible=False, safe_to_stop_in=12.0),
        region("deg", degraded=True),
        region("fine"),
        region("lonely"),
    ]
    services = {"www": ["down", "drained", "deg", "fine"]}
    why = why_not(regions, services, [])
    assert why["down"] == [{"kind": "down", "text": "down by its health probe: last probe failed connect refused "
                                                    "(2 s ago)"}]
    assert why["drained"] == [{"kind": "drained", "text": "drained by an operator; safe to stop in 12 s"}]
    assert [w["kind"] for w in why["deg"]] == ["degraded"]
    assert why["fine"] == [{"kind": "ok", "text": "eligible: nearby clients get it"}]
    assert why["lonely"] == [{"kind": "unused", "text": "in no service"}]


def test_why_not_all_down_and_near_client_decisions():
    regions = [region("a", state="down", eligible=False), region("b", state="down", eligible=False)]
    why = why_not(regions, {"www": ["a", "b"]}, [
        NearDecision("a", "198.51.100.0/24", "www", (), True, "resolver x -> DE", ("a  down", "b  down"))])
    assert [w["kind"] for w in why["a"]] == ["down", "all_down", "all_down"]
    assert "www for 198.51.100.0/24 -> no region" in why["a"][2]["text"]

    regions = [region("a"), region("b"), region("c", drained=True, eligible=False)]
    near = [
        NearDecision("a", "n1", "fast", ("b",), False, "x: lowest measured RTT first", ("b  rtt 3.0 ms  up",)),
        NearDecision("a", "n2", "fast", ("b",), False, "x: lowest measured RTT first", ("b  rtt 3.0 ms  up",)),
        NearDecision("a", "n3", "www", ("a",), False, "x: nearest first", ()),          # got it: no reason
        NearDecision("c", "n4", "www", ("a",), False, "x: nearest first",
                     ("c  0 km  drained", "c is not eligible: its clients spill over a, b by capacity (hash)")),
        NearDecision("zz", "n5", "www", ("a",), False, "", ()),                         # unknown region
    ]
    why = why_not(regions, {"www": ["a", "b", "c"], "fast": ["a", "b"]}, near)
    assert [w["kind"] for w in why["a"]] == ["latency"]              # one line per (kind, service)
    assert "fast for n1 -> b" in why["a"][0]["text"]
    assert why["b"] == [{"kind": "ok", "text": "eligible: nearby clients get it"}]
    assert [w["kind"] for w in why["c"]] == ["drained", "elsewhere"]
    assert why["c"][1]["text"] == "so its nearby clients go to a, spread by capacity (e.g. www for n4)"

    # another region's spill lands on an eligible one's nearby clients: said as such
    why = why_not([region("a"), region("b")], {"www": ["a", "b"]}, [
        NearDecision("a", "n6", "www", ("b",), False, "x: nearest first",
                     ("z  drained", "z is not eligible: its clients spill over b, a by capacity (hash)"))])
    assert [w["kind"] for w in why["a"]] == ["spill"]
    assert why["a"][0]["text"].endswith("z is not eligible: its clients spill over b, a by capacity (hash)")


def test_responder_tells_on_answer_of_misses_only_with_the_located_client():
    responder, _ = make_responder()
    assert responder.on_answer is None
    ask(responder, query("www.example.test"), now=1.0)              # no hook: nothing to call, no error
    responder.on_answer = sink = Sink()
    ask(responder, query("www.example.test", ecs="203.0.113.77/24", qid=1), now=2.0)   # miss
    ask(responder, query("www.example.test", ecs="203.0.113.77/24", qid=2), now=3.0)   # cache hit
    ask(responder, query("mail.example.test", qid=3), now=4.0)                          # static: no regions
    ask(responder, query("down.example.test", qid=4), now=5.0)                          # all down: no regions
    ask(responder, query("weighted.example.test", qid=5), now=6.0)                      # never cached
    ask(responder, query("weighted.example.test", qid=6), now=7.0)
    assert sink.told == [("203.0.113.0", ("eu",), 2.0, 1), (str(CLIENT), ("eu", "us"), 6.0, 1),
                         (str(CLIENT), ("eu", "us"), 7.0, 1)]


def test_an_on_answer_that_raises_costs_no_reply():
    responder, _ = make_responder()

    responder.on_answer = Sink(fail=True)
    reply = ask(responder, query("www.example.test", ecs="203.0.113.77/24"), now=2.0)
    assert reply.answer                                             # answered all the same
    assert responder.stats.internal_errors == 1
