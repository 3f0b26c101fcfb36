"""Lifecycle: the phase machine, readiness, emergency with snapshot, restart and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import Caller, Config, Phase, PhaseError, Refused, Supervisor
from supervisor._core._phase import PhaseMachine
from supervisor._core._readiness import ReadinessFacts, assess
from supervisor.testing import make_supervisor

OPERATOR = Caller("ops", "operator")


class Counter:
    """A stateful system: counts ticks; its state survives snapshots."""

    name = "counter"

    def __init__(self) -> None:
        self.count = 0
        self.restored: list[int] = []

    def tick(self, ctx: Any) -> None:
        self.count += 1
        ctx.report("players", self.count)

    def snapshot(self) -> dict[str, int]:
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self.count = state["count"]
        self.restored.append(state["count"])


class Bomb:
    """Critical; fails from a given tick on."""

    name = "bomb"
    critical = True

    def __init__(self, from_tick: int) -> None:
        self.from_tick = from_tick

    def tick(self, ctx: Any) -> None:
        if self.from_tick <= ctx.tick:
            raise RuntimeError("kaboom")


def _sup(tmp_path: Path, *systems: Any, **config: Any) -> Supervisor:
    return make_supervisor(
        list(systems),
        config=Config.from_mapping(config, env={}),
        tick_rate=10,
        state_dir=tmp_path,
    )


class TestPhaseMachine:
    def test_allowed_moves_are_recorded_with_who_when_why(self) -> None:
        """Every move is an event: before, after, caller, reason, time, tick."""
        machine = PhaseMachine(Phase.DEVELOPMENT)
        machine.check(Phase.TESTING)
        event = machine.move(Phase.TESTING, time=5.0, tick=7, caller="ops", reason="qa")
        assert machine.phase is Phase.TESTING
        assert (event.before, event.after, event.caller, event.reason, event.tick) == (
            "development",
            "testing",
            "ops",
            "qa",
            7,
        )
        assert list(machine.history) == [event]

    def test_refused_moves(self) -> None:
        """Same phase, leaving production without force and reason, leaving an emergency."""
        machine = PhaseMachine(Phase.PRODUCTION)
        with pytest.raises(PhaseError, match="already in production"):
            machine.check(Phase.PRODUCTION)
        for force, reason in [(False, ""), (False, "rollback"), (True, ""), (True, "  ")]:
            with pytest.raises(PhaseError, match="needs --force and a --reason"):
                machine.check(Phase.DEVELOPMENT, force=force, reason=reason)
        machine.check(Phase.TESTING, force=True, reason="rollback")  # allowed
        with pytest.raises(PhaseError, match="shutdown --emergency"):
            machine.check(Phase.EMERGENCY_SHUTDOWN)
        machine.move(Phase.EMERGENCY_SHUTDOWN, time=0, tick=0, caller="x", reason="y")
        assert machine.interrupted is Phase.PRODUCTION
        with pytest.raises(PhaseError, match="supervisor restart"):
            machine.check(Phase.TESTING)

    def test_cannot_start_in_emergency(self) -> None:
        """EMERGENCY_SHUTDOWN is entered, never started in."""
        with pytest.raises(ValueError, match="emergency"):
            PhaseMachine(Phase.EMERGENCY_SHUTDOWN)


class TestReadinessChecks:
    GOOD = ReadinessFacts(
        window_ticks=100, work_p95=0.001, budget=0.02, tokens=1, socket_mode=0o600
    )

    def test_all_good(self) -> None:
        """Healthy systems, work in budget, sinks writable, tokens, private socket: ready."""
        report = assess(self.GOOD)
        assert report.ok
        assert [c.name for c in report.checks] == [
            "systems_ready",
            "performance",
            "error_handling",
            "security",
        ]
        assert all(c.recommendation is None for c in report.checks)

    @pytest.mark.parametrize(
        ("change", "check", "advice"),
        [
            ({"quarantined": ("economy",)}, "systems_ready", "supervisor errors --system economy"),
            ({"unhealthy": ("chat",)}, "systems_ready", "restart"),
            ({"not_started": ("db",)}, "systems_ready", "enabled"),
            ({"work_p95": 0.05}, "performance", "tick_rate"),
            ({"dropped_in_window": 3}, "performance", "optimizer"),
            ({"window_ticks": 0}, "performance", "run for a few seconds"),
            (
                {"sink_problem": "the snapshot folder /x is not writable"},
                "error_handling",
                "writable",
            ),
            ({"tokens": 0}, "security", "[api] tokens"),
            ({"tokens": 0, "api_tcp": True, "target_phase": "development"}, "security", "tokens"),
            ({"socket_mode": 0o666}, "security", "chmod 700"),
            ({"redaction": False}, "security", "redaction"),
        ],
    )
    def test_each_failure_carries_a_recommendation(
        self, change: dict[str, Any], check: str, advice: str
    ) -> None:
        """One bad fact fails exactly its check, with a concrete recommendation."""
        import attrs

        report = assess(attrs.evolve(self.GOOD, **change))
        failed = [c for c in report.checks if not c.ok]
        assert [c.name for c in failed] == [check]
        assert failed[0].recommendation is not None
        assert advice in failed[0].recommendation

    async def test_errors_having_happened_is_not_a_failure(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Error handling is judged by SafeCall and writable sinks, not by the absence of errors.

        A running supervisor whose system has failed (and recovered): errors
        are recorded, yet ``error_handling`` passes.
        """

        class Hiccup:
            """Not critical; its tick fails once, on tick 2, and it carries on."""

            name = "hiccup"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 2:
                    raise RuntimeError("hiccup")

        sup = _sup(tmp_path, Counter(), Hiccup())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.5)
            assert [(r.system, r.tick) for r in sup.errors.records] == [("hiccup", 2)]
            assert sup.phase is Phase.DEVELOPMENT
            assert sup.readiness().check("error_handling").ok
            sup.stop()


class TestEmergencyAndRestart:
    async def test_emergency_writes_a_snapshot_and_restart_continues(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Emergency: ticking stops, snapshot on disk, readyz-gate red; restart restores state."""
        counter = Counter()
        sup = _sup(tmp_path, counter)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(1.05)  # ticks 0..10 at 10 Hz
            result = (await sup.shutdown(emergency=True, reason="drill", caller=OPERATOR)).as_dict()
            assert sup.phase is Phase.EMERGENCY_SHUTDOWN
            assert result["snapshot"] is not None
            assert Path(result["snapshot"]).name == f"snapshot-{sup.tick}.msgpack"
            ticks_at_emergency = sup.tick
            assert counter.count == ticks_at_emergency
            ready, reasons = sup.readiness_gate()
            assert not ready
            # No free text for anonymous probes; the reason is in status().
            assert reasons == ["emergency_shutdown"]
            assert sup.liveness() == (True, "emergency_shutdown")
            assert sup.status().as_dict()["emergency"]["reason"] == "operator ops: drill"
            assert "supervisor restart" in sup.next_step()
            await trio.sleep(1.0)
            assert sup.tick == ticks_at_emergency  # nothing ticks in an emergency

            restarted = (await sup.restart(caller=OPERATOR)).as_dict()
            assert restarted["tick"] == ticks_at_emergency
            assert restarted["phase"] == "development"
            assert sup.phase.value == "development"  # (a property: mypy would narrow "is")
            await trio.sleep(0.5)
            assert sup.tick > ticks_at_emergency
            assert counter.restored == [ticks_at_emergency]
            assert counter.count == sup.tick
            sup.stop("test over")
        actions = [e.action for e in sup.phase_history]
        assert actions == ["emergency", "restart"]

    def test_critical_failure_exit_code_3_with_snapshot(self, tmp_path: Path) -> None:
        """A critical system's escalation preserves state: exit code 3, snapshot on disk."""
        sup = _sup(tmp_path, Counter(), Bomb(from_tick=4), recovery={"max_restarts": 1})
        summary = trio.run(sup.run, clock=trio.testing.MockClock(autojump_threshold=0))
        assert summary.exit_code == 3
        assert summary.phase == "emergency_shutdown"
        snap, problems = sup.snapshots.latest()
        assert problems == []
        assert snap is not None
        assert snap.reason.startswith("emergency: critical system 'bomb'")
        assert snap.phase == "emergency_shutdown"
        assert sup.emergency_info is not None
        assert sup.emergency_info["trigger_to_snapshot_seconds"] > 0  # measured, not the fallback

    def test_unwritable_state_is_exit_code_4(self, tmp_path: Path) -> None:
        """When the snapshot cannot be written the emergency exits with 4."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        sup = _sup(blocker, Counter(), Bomb(from_tick=2), recovery={"max_restarts": 0})
        summary = trio.run(sup.run, clock=trio.testing.MockClock(autojump_threshold=0))
        assert summary.exit_code == 4
        assert sup.snapshot_failures == 1

    async def test_restart_while_running_keeps_state(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """restart in a normal phase: systems rebuilt (same state), tick count goes on."""
        counter = Counter()
        sup = _sup(tmp_path, counter)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.55)
            result = (await sup.restart(caller=OPERATOR)).as_dict()
            assert result["restored"] == ["counter"]
            assert counter.restored == [result["tick"]]
            sup.stop()
        assert counter.count == sup.tick

    async def test_restart_after_emergency_without_snapshot_is_refused(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """No valid snapshot: restart is refused with advice, nothing changes."""
        sup = make_supervisor([Counter()], tick_rate=10)  # persist=False
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(0.3)
            await sup.shutdown(emergency=True, reason="x", caller=OPERATOR)
            with pytest.raises(Refused, match="no valid snapshot"):
                await sup.restart(caller=OPERATOR)
            assert sup.phase is Phase.EMERGENCY_SHUTDOWN
            sup.stop()


class TestSnapshots:
    def test_graceful_stop_writes_a_final_snapshot_and_resume_continues(
        self, tmp_path: Path
    ) -> None:
        """A graceful stop leaves a snapshot; run(resume=True) restores state and tick count."""
        first = Counter()
        sup = _sup(tmp_path, first)
        trio.run(lambda: sup.run(ticks=25), clock=trio.testing.MockClock(autojump_threshold=0))
        assert sup.last_snapshot is not None
        second = Counter()
        sup2 = _sup(tmp_path, second)
        summary = trio.run(
            lambda: sup2.run(ticks=5, resume=True),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        assert second.restored == [25]
        assert summary.ticks == 30
        assert second.count == 30
        assert [e.action for e in sup2.phase_history] == ["resume"]

    def test_periodic_snapshots_every_interval(self, tmp_path: Path) -> None:
        """snapshot_interval = 1 s at 10 Hz: a snapshot about every 10 ticks, generations kept."""
        sup = _sup(
            tmp_path,
            Counter(),
            supervisor={"snapshot_interval": 1.0, "snapshot_generations": 2},
        )
        # Writes happen on a worker thread: let virtual time wait for real I/O.
        trio.run(lambda: sup.run(ticks=45), clock=trio.testing.MockClock(autojump_threshold=0.01))
        assert sup.snapshot_stall.count == 4
        assert sup.snapshots_skipped == 0
        names = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
        assert len(names) == 2  # generations, the final one included

    def test_corrupt_latest_falls_back_to_the_previous_generation(self, tmp_path: Path) -> None:
        """A truncated newest snapshot is reported, and resume uses the one before it."""
        sup = _sup(tmp_path, Counter(), supervisor={"snapshot_interval": 1.0})
        trio.run(lambda: sup.run(ticks=25), clock=trio.testing.MockClock(autojump_threshold=0.01))
        newest = sup.last_snapshot
        assert newest is not None
        newest.write_bytes(newest.read_bytes()[:10])
        counter = Counter()
        sup2 = _sup(tmp_path, counter)
        trio.run(
            lambda: sup2.run(ticks=1, resume=True),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        assert counter.restored == [21]  # the periodic snapshot after tick 20 ran
        assert len(sup2.snapshot_problems) == 1
        assert "truncated" in sup2.snapshot_problems[0]


class TestPhaseChanges:
    async def test_promotion_is_gated_by_readiness(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without tokens, 'phase production' is refused in one line; --force passes."""
        sup = _sup(tmp_path, Counter())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.5)
            with pytest.raises(Refused, match=r"no \[api\] tokens") as refused:
                await sup.change_phase("production", force=False, reason="go", caller=OPERATOR)
            assert "\n" not in refused.value.detail
            assert "printf %s TOKEN | sha256sum" in refused.value.detail
            assert "--force" in refused.value.detail
            assert sup.phase is Phase.DEVELOPMENT
            result = (
                await sup.change_phase("production", force=True, reason="go", caller=OPERATOR)
            ).as_dict()
            assert result == {"before": "development", "after": "production", "forced": True}
            with pytest.raises(Refused, match="needs --force and a --reason"):
                await sup.change_phase("testing", force=True, reason="", caller=OPERATOR)
            with pytest.raises(Refused, match="unknown phase"):
                await sup.change_phase("staging", force=False, reason="", caller=OPERATOR)
            sup.stop()
        assert sup.phase_history[-1].reason == (
            "go (forced without [api] tokens; forced past the readiness gate)"
        )

    async def test_promotion_with_tokens_is_gated_by_the_readiness_report(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With tokens, a failed readiness gate refuses 'phase production' with the report."""
        token = {"name": "ops", "role": "operator", "sha256": "ab" * 32}
        sup = _sup(tmp_path, Counter(), api={"tokens": [token]}, features={"redaction": False})
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.5)
            with pytest.raises(Refused) as refused:
                await sup.change_phase("production", force=False, reason="go", caller=OPERATOR)
            report = refused.value.payload["readiness"]
            security = next(c for c in report["checks"] if c["name"] == "security")
            assert not security["ok"]
            assert "redaction" in security["detail"]
            assert sup.phase is Phase.DEVELOPMENT
            sup.stop()

    async def test_leaving_development_without_tokens_forced_is_recorded(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """'phase testing --force' with no tokens passes; the lifecycle event says it was forced."""
        sup = _sup(tmp_path, Counter())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with pytest.raises(Refused, match=r"no \[api\] tokens"):
                await sup.change_phase("testing", force=False, reason="qa", caller=OPERATOR)
            await sup.change_phase("testing", force=True, reason="qa", caller=OPERATOR)
            sup.stop()
        assert sup.phase_history[-1].reason == "qa (forced without [api] tokens)"

    async def test_leaving_production_needs_force_and_reason(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Production -> development is refused without --force and a reason; with both it moves."""
        token = {"name": "ops", "role": "operator", "sha256": "ab" * 32}
        sup = _sup(tmp_path, Counter(), api={"tokens": [token]})
        sup._k.phases.phase = Phase.PRODUCTION  # (started in production: no readiness needed here)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for force, reason in [(False, ""), (False, "rollback"), (True, "")]:
                with pytest.raises(Refused, match="needs --force and a --reason"):
                    await sup.change_phase(
                        "development", force=force, reason=reason, caller=OPERATOR
                    )
            assert sup.phase is Phase.PRODUCTION
            await sup.change_phase("development", force=True, reason="rollback", caller=OPERATOR)
            assert sup.phase.value == "development"
            sup.stop()
        assert sup.phase_history[-1].reason == "rollback (forced out of production)"

    async def test_overlay_applies_on_entry(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """[phases.testing] changes the recovery policy and pins the rate when entered."""
        sup = _sup(
            tmp_path,
            Counter(),
            phases={"testing": {"supervisor": {"tick_rate": 20}, "recovery": {"max_restarts": 9}}},
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.change_phase("testing", force=True, reason="", caller=OPERATOR)
            await trio.sleep(0.2)
            assert sup.tick_rate == 20
            assert sup._k.slots["counter"].breaker.max_restarts == 9
            assert sup.redaction
            sup.stop()


class TestResourceLimit:
    async def test_memory_limit_is_an_emergency(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """RSS above memory_limit_mb (sampled once a second) triggers an emergency."""
        sup = _sup(tmp_path, Counter(), supervisor={"memory_limit_mb": 1.0})
        summary = await sup.run(duration=10)
        assert summary.emergency
        assert "memory_limit_mb" in (sup.emergency_reason or "")
        assert summary.ticks <= 12


class TestLiveness:
    async def test_a_stalled_loop_turns_liveness_red_then_green(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A hanging async recover() stalls ticks: liveness red; after its deadline, green."""

        class Stuck:
            name = "stuck"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 2:
                    raise RuntimeError("fail once")

            async def recover(self, ctx: Any, error: Any) -> None:
                await trio.sleep_forever()

        sup = _sup(tmp_path, Stuck(), supervisor={"stop_timeout": 3.0})
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.2 + 1.5)  # tick 2 at t=0.2, then recover hangs
            alive, detail = sup.liveness()
            assert not alive
            assert "no tick for" in detail
            await trio.sleep(2.0)  # the recover deadline (3 s) has passed
            assert sup.liveness()[0]
            assert sup.tick > 3
            sup.stop()
        kinds = [(r.hook, r.kind) for r in sup.errors.records]
        assert kinds == [("tick", "error"), ("recover", "timeout")]
