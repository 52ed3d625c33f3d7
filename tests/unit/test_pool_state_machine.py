"""Pool invariants under any sequence of events (hypothesis stateful testing)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gslb.common.health import Health, Status
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import Pool, PoolSettings
from tests.unit.test_balancing_helpers import backend

IDS = [f"b{i}" for i in range(6)]
backend_ids = st.sampled_from(IDS)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.settings = PoolSettings(
            outlier=OutlierSettings(consecutive_failures=2, base_ejection=5.0, max_ejection=20.0,
                                    max_ejected_fraction=0.34),
            slow_start=10.0, panic_threshold=0.5)
        self.pool = Pool("p", [backend(i) for i in range(6)], self.settings, now=0.0)
        self.now = 0.0
        self.admin: dict[str, str] = dict.fromkeys(IDS, "ready")

    @rule(dt=st.floats(0.0, 15.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(bid=backend_ids, up=st.booleans())
    def health(self, bid: str, up: bool) -> None:
        self.pool.set_health(bid, Health(Status.UP if up else Status.DOWN, 0, True), self.now)

    @rule(bid=backend_ids, ok=st.booleans())
    def request(self, bid: str, ok: bool) -> None:
        self.pool.request_started(bid)
        self.pool.request_finished(bid, ok=ok, latency=0.01, now=self.now)

    @rule(bid=backend_ids, state=st.sampled_from(["ready", "drain", "maintenance"]),
          deadline=st.one_of(st.none(), st.floats(0.0, 30.0)))
    def admin_change(self, bid: str, state: str, deadline: float | None) -> None:
        self.pool.set_admin(bid, state, self.now, None if deadline is None else self.now + deadline)

    @invariant()
    def candidates_are_consistent(self) -> None:
        cands = self.pool.candidates(self.now)
        status = {s["id"]: s for s in self.pool.status(self.now)}
        live = [i for i in IDS if status[i]["admin"] not in ("maintenance", "drained")]
        available = [i for i in live if status[i]["available"]]
        ids = [c.backend.id for c in cands.list]
        for c in cands.list:
            assert status[c.backend.id]["admin"] not in ("maintenance", "drained")
            assert c.accepting_new is (status[c.backend.id]["admin"] == "ready")
            assert 0.0 < c.weight <= 1.0
        if live and len(available) / len(live) < 0.5:
            assert cands.panic
            assert ids == live
        else:
            assert not cands.panic
            assert ids == available
        ejected = sum(1 for i in live if status[i]["ejected"])
        assert ejected <= self.settings.outlier.max_ejected(len(IDS))   # the cap at the largest size
        assert all(s["inflight"] == 0 for s in status.values())

    @invariant()
    def repr_counts_add_up(self) -> None:
        text = repr(self.pool)
        numbers = [int(w) for w in text.replace("[", " ").replace(",", " ").split() if w.isdigit()]
        assert sum(numbers) == len(IDS)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
