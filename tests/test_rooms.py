"""Unit tests of the runtime's rooms, each on its own (no tick loop, no clock)."""

from __future__ import annotations

import array
from pathlib import Path

from supervisor import Phase, RecoveryConfig
from supervisor._core._histogram import HistogramStats
from supervisor._core._kernel import RunState
from supervisor._core._phase import PhaseMachine
from supervisor._core._safecall import Breaker, BreakerState
from supervisor._core._slots import STEP_RING, ring_window
from supervisor._core._views import PhaseChange, RestartResult, ShutdownResult
from supervisor.testing import make_supervisor


class TestRingWindow:
    def test_the_last_ticks_oldest_first(self) -> None:
        """Ticks [start, end) of a ring, clamped to the ring's reach."""
        ring = array.array("d", [float(t) for t in range(STEP_RING)])
        assert ring_window(ring, 3, 6) == [3.0, 4.0, 5.0]
        # Past one lap the oldest values are gone: the window starts STEP_RING back.
        window = ring_window(ring, 0, STEP_RING + 2)
        assert len(window) == STEP_RING
        assert window[-2:] == [0.0, 1.0]

    def test_a_throttled_system_has_values_only_on_its_turns(self) -> None:
        """every=3, offset=1: the ticks t with (t + 1) % 3 == 0."""
        ring = array.array("d", [float(t) for t in range(STEP_RING)])
        assert ring_window(ring, 0, 10, every=3, offset=1) == [2.0, 5.0, 8.0]


class TestBreakerFromConfig:
    def test_of_and_configure_take_the_budget(self) -> None:
        """One place builds a breaker from [recovery]; configure keeps its state."""
        breaker = Breaker.of(RecoveryConfig(max_restarts=2, window_seconds=5.0))
        assert (breaker.max_restarts, breaker.window) == (2, 5.0)
        breaker.quarantine(0.0)
        breaker.configure(RecoveryConfig(max_restarts=9))
        assert breaker.max_restarts == 9
        assert breaker.state is BreakerState.QUARANTINED


class TestPhaseMachineEvents:
    def test_moves_and_actions_are_recorded_by_the_machine(self) -> None:
        """record() keeps an action; move() records through it; rewrite() redacts in place."""
        machine = PhaseMachine(Phase.DEVELOPMENT, history=10)
        machine.record(
            action="resume", before="testing", after="development", time=1.0, tick=3,
            caller="run --resume", reason="from tick 3",
        )  # fmt: skip
        machine.move(Phase.TESTING, time=2.0, tick=4, caller="ops", reason="qa")
        assert [(e.action, e.before, e.after) for e in machine.history] == [
            ("resume", "testing", "development"),
            ("phase", "development", "testing"),
        ]
        machine.rewrite(str.upper)
        assert [e.caller for e in machine.history] == ["RUN --RESUME", "OPS"]

    def test_phase_is_a_str_enum(self) -> None:
        """Phase compares equal to its name: systems may compare ctx.phase to either."""
        assert isinstance(Phase.EMERGENCY_SHUTDOWN, str)
        assert (
            "emergency_shutdown" == Phase.EMERGENCY_SHUTDOWN.value == str(Phase.EMERGENCY_SHUTDOWN)
        )
        assert f"{Phase.TESTING}" == "testing"


class TestRunState:
    def test_exit_reason_in_order_of_precedence(self) -> None:
        """The emergency, then a forced stop, then the stop's reason, else completed."""
        assert RunState().exit_reason == "completed"
        assert RunState(stop_reason="x").exit_reason == "x"
        assert RunState(stop_reason="x", force=True).exit_reason == "forced stop"
        assert RunState(force=True, emergency_reason="e").exit_reason == "emergency: e"

    def test_an_emergency_empties_the_runnable_list_in_place(self) -> None:
        """The hot path's ``for`` over that very list ends after the current step."""

        class Noop:
            def tick(self, ctx: object) -> None:
                pass

        sup = make_supervisor({"a": Noop(), "b": Noop()})
        kernel = sup._k
        kernel.order = list(kernel.slots.values())
        for slot in kernel.order:
            slot.started = True
        kernel.rebuild_active()
        runnable = kernel.runnable
        assert runnable == kernel.active_slots
        assert runnable is not kernel.active_slots
        sup.request_emergency("x")
        assert runnable == []
        assert [s.name for s in kernel.active_slots] == ["a", "b"]
        assert sup.run_state.stopping


class TestActionViews:
    def test_their_json_is_the_contracts(self) -> None:
        """as_dict() gives the shapes the API answered with before the views were typed."""
        assert ShutdownResult(tick=5, phase="development").as_dict() == {
            "stopping": True,
            "tick": 5,
        }
        emergency = {"reason": "r", "source": "s", "tick": 5, "snapshot": None}
        assert ShutdownResult(
            tick=5, phase="emergency_shutdown", emergency=emergency
        ).as_dict() == {
            "phase": "emergency_shutdown",
            **emergency,
        }
        assert RestartResult(
            tick=7, phase="development", restored=("a",), from_snapshot=5
        ).as_dict() == {"tick": 7, "phase": "development", "restored": ["a"], "from_snapshot": 5}
        assert PhaseChange(before="development", after="testing", forced=False).as_dict() == {
            "before": "development",
            "after": "testing",
            "forced": False,
        }

    def test_status_as_dict_keeps_every_key(self) -> None:
        """The status view's JSON: the statistics' keys, then the rest, as before."""
        sup = make_supervisor([])
        d = sup.status().as_dict()
        assert list(d)[: len(sup.statistics().as_dict())] == list(sup.statistics().as_dict())
        for key in ("alive", "ready", "not_ready", "next_step", "emergency", "lifecycle"):
            assert key in d
        assert d["snapshots"]["stall"] == HistogramStats.from_values([]).as_dict()
        assert d["services"] == {"failures": {}}


def test_a_capability_adds_a_status_section_and_a_broken_one_cannot_break_status(
    tmp_path: Path,
) -> None:
    """``status_sections``: a capability's own key in status; one that raises says why."""
    from supervisor import Supervisor
    from supervisor._core._config import Config

    sup = Supervisor(Config(), state_dir=tmp_path, persist=False)
    sup.status_sections["fleet"] = lambda: {"members": 3}

    def broken() -> dict[str, int]:
        raise RuntimeError("redis went away")

    sup.status_sections["agones"] = broken
    sup.status_sections["phase"] = lambda: {"not": "this"}
    d = sup.status().as_dict()
    assert d["fleet"] == {"members": 3}
    assert d["agones"] == {"error": "RuntimeError: redis went away"}
    assert isinstance(d["phase"], str)  # a section never hides a core key
