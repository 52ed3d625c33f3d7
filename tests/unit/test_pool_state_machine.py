"""Pool invariants under any sequence of events (hypothesis stateful testing).

Besides the candidate rules: a slow-start ramp never starts before the backend could take
traffic again (health up and not ejected) -- the weight is never above the ramp that would have
started when it last entered that state."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gslb.common.health import Health, Status, Thresholds
from regional_lb.outlier import OutlierSettings
from regional_lb.pool import Pool, PoolSettings, slow_start_factor
from tests.unit.test_balancing_helpers import backend

IDS = [f"b{i}" for i in range(6)]
backend_ids = st.sampled_from(IDS)


class PoolMachine(RuleBasedStateMachine):
    UNEJECT = "recovery"

    def __init__(self) -> None:
        super().__init__()
        self.settings = PoolSettings(
            outlier=OutlierSettings(consecutive_failures=2, base_ejection=5.0, max_ejection=20.0,
                                    max_ejected_fraction=0.34, uneject=self.UNEJECT),
            slow_start=10.0, panic_threshold=0.5)
        self.pool = Pool("p", [backend(i) for i in range(6)], self.settings, now=0.0)
        self.now = 0.0
        self.admin: dict[str, str] = dict.fromkeys(IDS, "ready")
        self.entered: dict[str, float | None] = dict.fromkeys(IDS)     # last entry into "serving"
        self.health_of = {i: Health.initial() for i in IDS}

    def _serving(self) -> dict[str, tuple[bool, float | None]]:
        return {r["id"]: (r["health"] == "up" and not r["ejected"], r["ejected_until"])
                for r in self.pool.status(self.now)}

    def _step(self, action) -> None:  # type: ignore[no-untyped-def]
        before = self._serving()
        action()
        after = self._serving()
        for bid, (serving, _until) in after.items():
            was, until = before[bid]
            if serving and not was:
                # an ejection that ran out while time passed ended at its own time; else now
                self.entered[bid] = until if until is not None and until <= self.now else self.now

    @rule(dt=st.floats(0.0, 15.0))
    def time_passes(self, dt: float) -> None:
        def act() -> None:
            self.now += dt
        self._step(act)

    @rule(bid=backend_ids, up=st.booleans())
    def health(self, bid: str, up: bool) -> None:
        self.health_of[bid] = Health(Status.UP if up else Status.DOWN, 0, True)
        self._step(lambda: self.pool.set_health(bid, self.health_of[bid], self.now))

    @rule(bid=backend_ids, ok=st.booleans())
    def probe(self, bid: str, ok: bool) -> None:
        self.health_of[bid] = self.health_of[bid].observe(ok, Thresholds(rise=2, fall=2))
        self._step(lambda: self.pool.set_health(bid, self.health_of[bid], self.now, probe_ok=ok))

    @rule(bid=backend_ids, ok=st.booleans())
    def request(self, bid: str, ok: bool) -> None:
        self.pool.request_started(bid)
        self._step(lambda: self.pool.request_finished(bid, ok=ok, latency=0.01, now=self.now))

    @rule(bid=backend_ids, state=st.sampled_from(["ready", "drain", "maintenance"]),
          deadline=st.one_of(st.none(), st.floats(0.0, 30.0)))
    def admin_change(self, bid: str, state: str, deadline: float | None) -> None:
        self._step(lambda: self.pool.set_admin(bid, state, self.now,
                                               None if deadline is None else self.now + deadline))

    @invariant()
    def no_ramp_starts_before_traffic_can_reach_the_backend(self) -> None:
        for r in self.pool.status(self.now):
            entered = self.entered[r["id"]]
            if r["health"] == "up" and not r["ejected"] and entered is not None:
                limit = slow_start_factor(entered, self.now, self.settings.slow_start)
                assert r["effective_weight"] <= round(limit, 3) + 1e-9

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


class UnejectOnSuccess(PoolMachine):
    UNEJECT = "success"


class NeverUneject(PoolMachine):
    UNEJECT = "never"


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestUnejectOnSuccess = UnejectOnSuccess.TestCase
TestUnejectOnSuccess.settings = settings(max_examples=25, stateful_step_count=40, deadline=None)
TestNeverUneject = NeverUneject.TestCase
TestNeverUneject.settings = settings(max_examples=25, stateful_step_count=40, deadline=None)
