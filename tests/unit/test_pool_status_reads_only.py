"""A status read (a Prometheus scrape, the admin API) changes nothing in a pool.

Two pools get the same events; one is also read with `status(now)` between them, at times
that may be past a drain deadline or an ejection's end. Both must then answer every query the
same: candidates, status rows, stats, repr. Before the fix, `status` applied the deadline and
the ejection's end itself (and counted the expired drain), so a scrape moved pool state.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.health import Health, Status
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import Pool, PoolSettings
from tests.unit.test_balancing_helpers import backend

SETTINGS = PoolSettings(
    outlier=OutlierSettings(consecutive_failures=2, base_ejection=5.0, max_ejection=20.0,
                            max_ejected_fraction=0.5),
    slow_start=10.0, panic_threshold=0.0)

events = st.lists(st.one_of(
    st.tuples(st.just("time"), st.floats(0.0, 12.0)),
    st.tuples(st.just("health"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("request"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("admin"), st.integers(0, 3), st.sampled_from(["ready", "drain", "maintenance"]),
              st.one_of(st.none(), st.floats(0.0, 10.0))),
    st.tuples(st.just("scrape"), st.floats(0.0, 30.0)),
), max_size=40)


def _view(pool: Pool, now: float) -> object:
    cands = pool.candidates(now)
    return ([(c.backend.id, c.inflight, round(c.weight, 9), c.accepting_new) for c in cands.list], cands.panic,
            pool.status(now), pool.stats, repr(pool))


@settings(max_examples=300, deadline=None)
@given(events)
def test_status_reads_change_nothing(script: list[tuple]) -> None:  # type: ignore[type-arg]
    read = Pool("p", [backend(i) for i in range(4)], SETTINGS, now=0.0)
    quiet = Pool("p", [backend(i) for i in range(4)], SETTINGS, now=0.0)
    now = 0.0
    for event in script:
        kind = event[0]
        if kind == "time":
            now += event[1]
            continue
        if kind == "scrape":
            read.status(now + event[1])         # possibly past a deadline or an ejection's end
            read.status(now)
            continue
        for pool in (read, quiet):
            bid = backend(event[1]).id
            if kind == "health":
                pool.set_health(bid, Health(Status.UP if event[2] else Status.DOWN, 0, True), now)
            elif kind == "request":
                pool.request_started(bid)
                pool.request_finished(bid, ok=event[2], latency=0.01, now=now)
            else:
                pool.set_admin(bid, event[2], now, None if event[3] is None else now + event[3])
    later = now + 100.0
    assert _view(read, now) == _view(quiet, now)
    assert _view(read, later) == _view(quiet, later)


def test_a_status_read_past_a_drain_deadline_shows_drained_without_applying_it() -> None:
    pool = Pool("p", [backend(0), backend(1)], SETTINGS, now=0.0)
    bid = backend(0).id
    pool.set_admin(bid, "drain", 0.0, 5.0)
    row = pool.status(6.0)[0]
    assert row["admin"] == "drained"
    assert not row["available"]
    assert pool.stats.drains_expired == 0            # the read counted nothing
    pool.candidates(6.0)                             # the pool's own clock passing the deadline does
    assert pool.stats.drains_expired == 1
