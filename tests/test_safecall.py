"""SafeCall: error records, the restart budget, quarantine, backoff and escalation."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]
import pytest
import trio

from supervisor import Config, Phase, StartupError
from supervisor._core._safecall import Breaker, BreakerState, ErrorLog, make_record
from supervisor.testing import make_supervisor, run_systems


def _recovery(**recovery: Any) -> Config:
    return Config.from_mapping({"recovery": recovery}, env={})


class Flaky:
    """Raises on chosen ticks; records recover() calls and the ticks it ran."""

    def __init__(
        self,
        fail_on: set[int] | None = None,
        *,
        name: str = "flaky",
        critical: bool = False,
        fail_from: int | None = None,
        exc: type[BaseException] = RuntimeError,
    ) -> None:
        self.name = name
        self.critical = critical
        self.fail_on = fail_on or set()
        self.fail_from = fail_from
        self.exc = exc
        self.ran: list[int] = []
        self.ran_at: list[float] = []
        self.recovered: list[int] = []
        self.stopped = False

    def tick(self, ctx: Any) -> None:
        self.ran.append(ctx.tick)
        self.ran_at.append(ctx.now)
        if ctx.tick in self.fail_on or (self.fail_from is not None and ctx.tick >= self.fail_from):
            raise self.exc(f"boom at tick {ctx.tick}")

    def recover(self, ctx: Any, error: Any) -> None:
        self.recovered.append(error.tick)

    def stop(self, ctx: Any) -> None:
        self.stopped = True


class Steady:
    """Never fails; counts its ticks."""

    def __init__(self, name: str = "steady") -> None:
        self.name = name
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        self.ticks += 1
        ctx.report("players", 42)


class TestRestartBudget:
    def test_max_restarts_failures_pass(self) -> None:
        """MaxR failures within the window: each is recovered, the system keeps ticking."""
        flaky = Flaky({0, 1, 2})
        result = run_systems(
            flaky, ticks=10, tick_rate=10, config=_recovery(max_restarts=3, window_seconds=10)
        )
        assert flaky.recovered == [0, 1, 2]
        assert flaky.ran == list(range(10))
        assert result.summary.quarantined == ()
        assert result.summary.errors == {"flaky": 3}

    def test_one_more_failure_quarantines(self) -> None:
        """MaxR + 1 failures within the window: quarantined, no longer ticked, unhealthy."""
        flaky = Flaky({0, 1, 2, 3})
        steady = Steady()
        result = run_systems(
            flaky,
            steady,
            ticks=10,
            tick_rate=10,
            config=_recovery(max_restarts=3, window_seconds=10, backoff_initial=60),
        )
        assert flaky.ran == [0, 1, 2, 3]
        assert flaky.recovered == [0, 1, 2]
        assert steady.ticks == 10
        assert result.summary.quarantined == ("flaky",)
        stats = {s.name: s for s in result.supervisor.statistics().systems}
        assert stats["flaky"].state == "quarantined"
        assert stats["flaky"].health == "unhealthy"
        assert stats["steady"].health == "healthy"

    def test_old_failures_age_out_of_the_window(self) -> None:
        """Failures further apart than the window never add up to a quarantine."""
        # 10 Hz, window 0.5 s: three failures, a quiet second, three more.
        flaky = Flaky({0, 1, 2, 15, 16, 17})
        result = run_systems(
            flaky, ticks=25, tick_rate=10, config=_recovery(max_restarts=3, window_seconds=0.5)
        )
        assert result.summary.quarantined == ()
        assert flaky.recovered == [0, 1, 2, 15, 16, 17]

    def test_the_same_failures_inside_the_window_quarantine(self) -> None:
        """The control case: the same pattern with a long window does quarantine."""
        flaky = Flaky({0, 1, 2, 15, 16, 17})
        result = run_systems(
            flaky,
            ticks=25,
            tick_rate=10,
            config=_recovery(max_restarts=3, window_seconds=5, backoff_initial=60),
        )
        assert result.summary.quarantined == ("flaky",)

    def test_a_failing_recover_counts_against_the_budget(self) -> None:
        """recover() raising is recorded and uses up the restart budget too."""

        class BadRecover(Flaky):
            def recover(self, ctx: Any, error: Any) -> None:
                raise ValueError("cannot reset")

        flaky = BadRecover({0, 1})
        result = run_systems(
            flaky,
            ticks=5,
            tick_rate=10,
            config=_recovery(max_restarts=2, window_seconds=10, backoff_initial=60),
        )
        hooks = [r.hook for r in result.errors]
        assert hooks == ["tick", "recover", "tick"]
        assert result.summary.quarantined == ("flaky",)

    def test_system_exit_from_a_system_is_a_failure_not_an_exit(self) -> None:
        """A plugin calling sys.exit() fails its step; the world keeps running."""
        flaky = Flaky({1}, exc=SystemExit)
        result = run_systems(flaky, ticks=4, tick_rate=10)
        assert flaky.ran == [0, 1, 2, 3]
        assert result.errors[0].exc_type == "SystemExit"


class TestQuarantineBackoff:
    def test_half_open_retry_after_backoff_then_closes(self) -> None:
        """Quarantined at t=0.1, retried at t=0.1 + backoff_initial; success closes the breaker."""
        flaky = Flaky({0, 1})
        result = run_systems(
            flaky,
            ticks=30,
            tick_rate=10,
            config=_recovery(max_restarts=1, window_seconds=10, backoff_initial=1.0),
        )
        # Ticks 0 and 1 fail (the second quarantines at t=0.1); the retry is
        # the first tick at or after t=1.1, i.e. tick 12 (t=1.2), which follows
        # the retry check made after tick 11 (t=1.1).
        assert flaky.ran[:2] == [0, 1]
        assert flaky.ran_at[2] == pytest.approx(1.2)
        assert result.summary.quarantined == ()
        assert flaky.ran[-1] == 29

    def test_backoff_doubles_while_retries_fail(self) -> None:
        """Each failed half-open retry re-quarantines with twice the backoff, up to the cap."""
        flaky = Flaky(fail_from=0)
        run_systems(
            flaky,
            ticks=100,
            tick_rate=10,
            config=_recovery(
                max_restarts=0, window_seconds=10, backoff_initial=1.0, backoff_max=3.0
            ),
        )
        # Fails at 0 -> retry 1 s later, fails -> 2 s later, fails -> 3 s (capped), ...
        gaps = [round(b - a, 6) for a, b in zip(flaky.ran_at, flaky.ran_at[1:], strict=False)]
        assert gaps[:4] == [1.1, 2.1, 3.1, 3.1]


class TestEscalation:
    def test_critical_system_exhausting_its_budget_is_an_emergency(self) -> None:
        """A critical system past its restart budget: EMERGENCY_SHUTDOWN, ticking stops."""
        bomb = Flaky(name="bomb", critical=True, fail_from=3)
        steady = Steady()
        result = run_systems(
            bomb,
            steady,
            ticks=50,
            tick_rate=10,
            config=_recovery(max_restarts=1, critical_error_limit=100),
        )
        assert result.supervisor.phase is Phase.EMERGENCY_SHUTDOWN
        assert result.summary.phase == "emergency_shutdown"
        assert result.summary.emergency
        # No state_dir, so no snapshot: 4 ("emergency, state not preserved"), never 3.
        assert not result.summary.snapshot_written
        assert result.summary.exit_code == 4
        assert "exhausted its recovery budget" in (result.supervisor.emergency_reason or "")
        assert bomb.ran == [0, 1, 2, 3, 4]
        assert bomb.stopped
        assert result.summary.ticks == 5

    def test_critical_error_limit(self) -> None:
        """critical_error_limit critical errors within the window escalate, whatever the budget."""
        bomb = Flaky({2, 4, 6}, name="bomb", critical=True)
        result = run_systems(
            bomb, ticks=50, tick_rate=10, config=_recovery(max_restarts=100, critical_error_limit=3)
        )
        assert result.summary.emergency
        assert "critical_error_limit" in (result.supervisor.emergency_reason or "")
        assert bomb.ran[-1] == 6

    def test_non_critical_failures_never_escalate(self) -> None:
        """Quarantine of a non-critical system leaves the phase alone."""
        flaky = Flaky(fail_from=0)
        result = run_systems(flaky, ticks=20, tick_rate=10, config=_recovery(max_restarts=0))
        assert not result.summary.emergency
        assert result.summary.phase == "development"

    def test_request_emergency_from_a_system(self) -> None:
        """ctx.request_emergency stops ticking after the current step; systems stop in reverse."""
        order: list[str] = []

        class Asker:
            name = "asker"
            priority = 1

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 3:
                    ctx.request_emergency("the sky is falling")

            def stop(self, ctx: Any) -> None:
                order.append("asker")

        class First:
            name = "first"

            def tick(self, ctx: Any) -> None:
                pass

            def stop(self, ctx: Any) -> None:
                order.append("first")

        result = run_systems(First(), Asker(), ticks=50, tick_rate=10)
        assert result.summary.ticks == 4
        assert result.supervisor.emergency_reason == "asker: the sky is falling"
        assert order == ["asker", "first"]
        assert result.summary.exit_reason.startswith("emergency")


class TestStartAndStop:
    def test_critical_start_failure_aborts_startup(self) -> None:
        """A critical system whose start raises aborts start-up with one clear error."""
        started: list[str] = []

        class Base:
            def tick(self, ctx: Any) -> None:
                pass

        class Ok(Base):
            name = "ok"

            def start(self, ctx: Any) -> None:
                started.append("ok")

            def stop(self, ctx: Any) -> None:
                started.append("ok-stopped")

        class Bad(Base):
            name = "bad"
            critical = True
            depends_on = ("ok",)

            def start(self, ctx: Any) -> None:
                raise OSError("database unreachable")

        with pytest.raises(StartupError, match=r"'bad' failed to start: OSError: database"):
            run_systems(Ok(), Bad(), ticks=3)
        assert started == ["ok", "ok-stopped"]

    def test_non_critical_start_failure_quarantines_only_that_system(self) -> None:
        """A non-critical start failure quarantines it; the others tick."""

        class Bad:
            name = "bad"

            def start(self, ctx: Any) -> None:
                raise RuntimeError("nope")

            def tick(self, ctx: Any) -> None:
                raise AssertionError("never ticked")

        steady = Steady()
        result = run_systems(Bad(), steady, ticks=5, config=_recovery(backoff_initial=60))
        assert steady.ticks == 5
        assert result.summary.quarantined == ("bad",)
        assert result.errors[0].hook == "start"

    def test_async_stop_past_its_deadline_is_abandoned(self) -> None:
        """A stop() that never returns is cancelled at stop_timeout; the next stop still runs."""
        stopped: list[str] = []

        class Hangs:
            name = "hangs"
            depends_on = ("other",)

            def tick(self, ctx: Any) -> None:
                pass

            async def stop(self, ctx: Any) -> None:
                await trio.sleep_forever()

        class Other:
            name = "other"

            def tick(self, ctx: Any) -> None:
                pass

            async def stop(self, ctx: Any) -> None:
                stopped.append("other")

        config = Config.from_mapping({"supervisor": {"stop_timeout": 0.5}}, env={})
        result = run_systems(Hangs(), Other(), ticks=2, config=config)
        assert stopped == ["other"]
        [record] = result.errors
        assert (record.system, record.hook, record.kind) == ("hangs", "stop", "timeout")


class TestErrorRecords:
    def test_a_record_carries_its_context(self) -> None:
        """The record has tick, system, hook, phase, type, message, traceback, gauges, health."""
        flaky = Flaky({2})
        result = run_systems(Steady(), flaky, ticks=4, tick_rate=10, phase="testing")
        [record] = result.errors
        assert record.tick == 2
        assert (record.system, record.hook, record.phase) == ("flaky", "tick", "testing")
        assert record.exc_type == "RuntimeError"
        assert record.message == "boom at tick 2"
        assert "in tick" in record.traceback
        assert record.gauges == {"players": 42}
        assert record.health == "healthy"
        assert record.time > 0
        assert len(record.fingerprint) == 12

    def test_the_fingerprint_is_the_failure_site_not_the_message(self) -> None:
        """Two failures at one site group together even with different messages."""
        flaky = Flaky({1, 3})
        result = run_systems(flaky, ticks=5, tick_rate=10)
        first, second = result.errors
        assert first.message != second.message
        assert first.fingerprint == second.fingerprint
        [group] = result.supervisor.errors.groups()
        assert group.count == 2
        assert (group.first_tick, group.last_tick) == (1, 3)

    def test_traceback_is_bounded(self) -> None:
        """Only the innermost traceback_limit frames are kept."""

        def recurse(n: int) -> None:
            if n == 0:
                raise RecursionError("deep")
            recurse(n - 1)

        exc: BaseException | None = None
        try:
            recurse(50)
        except RecursionError as e:
            exc = e
        assert exc is not None
        record = make_record(
            exc,
            time=0.0,
            tick=0,
            system="s",
            hook="tick",
            phase="development",
            gauges={},
            health="healthy",
            traceback_limit=5,
        )
        # Five frames at most (identical ones are folded by the traceback module).
        assert record.traceback.count('File "') <= 5
        assert 'raise RecursionError("deep")' in record.traceback
        assert "test_traceback_is_bounded" not in record.traceback

    def test_the_ring_keeps_the_last_history_records(self) -> None:
        """history bounds the ring; counts and groups keep the totals."""
        flaky = Flaky(fail_from=0)
        result = run_systems(
            flaky, ticks=30, tick_rate=10, config=_recovery(max_restarts=1000, history=5)
        )
        log = result.supervisor.errors
        assert len(log.records) == 5
        assert [r.tick for r in log.recent()] == [29, 28, 27, 26, 25]
        assert log.counts["flaky"] == 30
        assert log.groups()[0].count == 30
        assert log.recent(limit=2, system="nobody") == []

    def test_groups_are_bounded(self) -> None:
        """A storm of distinct fingerprints keeps at most max_groups groups."""
        log = ErrorLog(history=10, max_groups=3)
        for i in range(10):
            try:
                exec(compile("raise KeyError(1)", f"<gen{i}>", "exec"))  # a distinct site each
            except KeyError as exc:
                log.add(
                    make_record(
                        exc,
                        time=float(i),
                        tick=i,
                        system="s",
                        hook="tick",
                        phase="development",
                        gauges={},
                        health="healthy",
                        traceback_limit=3,
                    )
                )
        assert [g.last_tick for g in log.groups()] == [9, 8, 7]


class TestBreaker:
    def test_window_is_sliding(self) -> None:
        """Failures older than the window are forgotten one by one."""
        breaker = Breaker(max_restarts=2, window=1.0, backoff_initial=1, backoff_max=8)
        assert breaker.failure(0.0)
        assert breaker.failure(0.5)
        assert not breaker.failure(0.9)
        breaker = Breaker(max_restarts=2, window=1.0, backoff_initial=1, backoff_max=8)
        assert breaker.failure(0.0)
        assert breaker.failure(0.5)
        assert breaker.failure(1.0)  # the failure at 0.0 is out of (0.0, 1.0]

    def test_backoff_is_capped_exponential(self) -> None:
        """1, 2, 4, 8, 8 ... seconds, and a success resets it."""
        breaker = Breaker(max_restarts=0, window=1.0, backoff_initial=1, backoff_max=8)
        retries = [breaker.quarantine(0.0) for _ in range(5)]
        assert retries == [1, 2, 4, 8, 8]
        breaker.half_open()
        assert not breaker.failure(0.0)  # any failure while half-open re-opens
        breaker.success()
        assert breaker.state is BreakerState.CLOSED
        assert breaker.quarantine(0.0) == 1


def test_make_supervisor_registers_a_mapping_under_its_keys() -> None:
    """supervisor.testing.make_supervisor names systems by the mapping's keys."""
    sup = make_supervisor({"a": Steady(), "b": Steady()})
    assert sup.names == ["a", "b"]


def test_record_as_dict_is_plain() -> None:
    """as_dict() gives plain types (for JSON and msgpack)."""
    result = run_systems(Flaky({0}), ticks=1)
    d = result.errors[0].as_dict()
    assert d["system"] == "flaky"
    assert isinstance(d["gauges"], dict)
    assert json.loads(json.dumps(d)) == d
    assert msgpack.unpackb(msgpack.packb(d)) == d


class TestErrorStorm:
    def test_instances_of_one_class_share_a_fingerprint_but_not_a_group(self) -> None:
        """Two systems of one class failing alike: one fingerprint, two groups."""
        result = run_systems(
            named={"a": Flaky({1}, name="a"), "b": Flaky({1}, name="b")}, ticks=3, tick_rate=10
        )
        first, second = result.errors
        assert first.fingerprint == second.fingerprint
        groups = result.supervisor.errors.groups()
        assert sorted(g.system for g in groups) == ["a", "b"]

    def test_a_storm_reuses_the_formatted_traceback(self) -> None:
        """Within a second, repeated failures reuse the traceback text formatted first."""
        flaky = Flaky(fail_from=0)
        result = run_systems(
            flaky, ticks=20, tick_rate=100, config=_recovery(max_restarts=1000, history=20)
        )
        tracebacks = {id(r.traceback) for r in result.errors}
        assert len(tracebacks) == 1  # the very same string object, formatted once
        assert "boom at tick 0" in result.errors[0].traceback

    def test_format_budget_bounds_the_work_of_a_storm(self) -> None:
        """Past FORMAT_BUDGET formats in one second, records keep coming without tracebacks."""
        import supervisor._core._failures as core

        class Distinct:
            name = "distinct"

            def tick(self, ctx: Any) -> None:
                # A new failure site every tick: a new fingerprint each time.
                exec(compile("raise ValueError('x')", f"<site{ctx.tick}>", "exec"))

        result = run_systems(
            Distinct(),
            ticks=core.FORMAT_BUDGET + 50,
            tick_rate=1000,
            config=_recovery(max_restarts=100_000, history=1000),
        )
        log = result.supervisor.errors
        assert log.total == core.FORMAT_BUDGET + 50
        assert log.dropped["traceback_budget"] > 0
        unformatted = [r for r in log.records if r.traceback.startswith("(traceback not")]
        assert len(unformatted) == log.dropped["traceback_budget"]

    def test_log_lines_fold_per_fingerprint(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A storm logs its first failure and then one storm line with the count."""
        from supervisor import configure_logging

        configure_logging("json", "info", stream=sys.stdout)
        run_systems(
            Flaky(fail_from=0), ticks=50, tick_rate=100, config=_recovery(max_restarts=1000)
        )
        out = capsys.readouterr().out
        assert out.count('"system.error"') == 1
        assert '"system.error_storm"' in out
        assert '"suppressed": 49' in out


class TestTokenBucket:
    def test_burst_then_rate(self) -> None:
        """A full bucket gives its burst at once, then tokens at the rate, never above the burst."""
        from supervisor._core._safecall import TokenBucket

        bucket = TokenBucket(rate=10, burst=3)
        assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
        assert bucket.take(0.1)  # one token a tenth of a second
        assert not bucket.take(0.1)
        assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


class Watcher:
    """Ticks after the others (lowest priority last) and notes what the error log held then."""

    name = "watcher"
    priority = 1_000

    def __init__(self, sup_ref: list[Any]) -> None:
        self.sup_ref = sup_ref
        self.totals: dict[int, int] = {}

    def tick(self, ctx: Any) -> None:
        self.totals[ctx.tick] = self.sup_ref[0].errors.total


class TestDeferredRecords:
    """A tick failure costs the tick a few stores; its record is made by the errors chore."""

    def _run(self, *systems: Any, ticks: int, **kwargs: Any) -> tuple[Any, Watcher]:
        """Run ``systems`` and a Watcher that reads the error log from inside each tick."""
        ref: list[Any] = []
        watcher = Watcher(ref)

        async def main() -> Any:
            from supervisor.testing import make_supervisor

            sup = make_supervisor([*systems, watcher], **kwargs)
            ref.append(sup)
            await sup.run(ticks=ticks)
            return sup

        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)), watcher

    def test_no_record_is_made_inside_the_tick(self) -> None:
        """A later system of the same tick sees no record yet; the next tick sees it kept."""

        class Failing:  # no recover(): nothing asks for the record in the tick
            name = "failing"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 1:
                    raise ValueError("once")

        sup, watcher = self._run(Failing(), ticks=4, tick_rate=10)
        assert watcher.totals == {0: 0, 1: 0, 2: 1, 3: 1}
        [record] = sup.errors.records
        assert record.tick == 1

    def test_the_record_shows_the_gauges_and_health_as_they_were(self) -> None:
        """Gauges changed later in the same tick do not leak into the record."""

        class Before:
            name = "before"
            priority = -10

            def tick(self, ctx: Any) -> None:
                ctx.report("level", ctx.tick)

        class After:
            name = "after"
            priority = 10

            def tick(self, ctx: Any) -> None:
                ctx.report("level", 1000 + ctx.tick)

        result = run_systems(Before(), Flaky({2}), After(), ticks=4, tick_rate=10)
        [record] = result.errors
        assert record.gauges == {"level": 2}
        assert record.health == "healthy"
        assert record.tick == 2

    def test_a_recover_hook_gets_its_record_in_order(self) -> None:
        """A system with recover() has its record made in the tick, after the earlier ones."""

        class Plain:
            name = "plain"
            priority = -10

            def tick(self, ctx: Any) -> None:
                raise KeyError(ctx.tick)

        flaky = Flaky({1})
        result = run_systems(
            Plain(), flaky, ticks=3, tick_rate=10, config=_recovery(max_restarts=100)
        )
        assert flaky.recovered == [1]
        records = result.errors
        assert [(r.system, r.tick) for r in records] == [
            ("plain", 0),
            ("plain", 1),
            ("flaky", 1),
            ("plain", 2),
        ]
        ids = [r.id for r in records]
        assert ids == sorted(ids)

    def test_a_storm_wider_than_the_ring_is_counted_not_made_in_the_tick(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """More failures in one tick than the ring holds: the rest are counted, not kept."""
        import supervisor._core._failures as core

        class Failing:  # no recover(): nothing asks for the record in the tick
            def tick(self, ctx: Any) -> None:
                raise ValueError("storm")

        monkeypatch.setattr(core, "PENDING", 4)
        systems = {f"s{i}": Failing() for i in range(10)}
        result = run_systems(
            named=systems, ticks=2, tick_rate=10, config=_recovery(max_restarts=100)
        )
        assert [(r.system, r.tick) for r in result.errors] == [
            (f"s{i}", tick) for tick in (0, 1) for i in range(4)
        ]
        assert result.supervisor.errors.dropped["ring_full"] == 2 * 6

    def test_the_chore_stops_within_its_share_of_the_slack(self) -> None:
        """``settle(until)`` past ``until`` makes the oldest only; without one, them all."""
        import math

        sup = make_supervisor([Flaky()], tick_rate=10)
        recorder = sup._recorder
        slot = sup._k.slots["flaky"]
        for i in range(37):
            recorder.defer(slot, "tick", ValueError(i))
        recorder.settle(until=-math.inf)
        assert recorder.pending == 36
        assert recorder.chore.next_due == -math.inf
        recorder.settle()
        assert recorder.pending == 0
        assert recorder.chore.next_due == math.inf
        assert [r.message for r in sup.errors.records][-3:] == ["34", "35", "36"]

    def test_production_records_are_redacted_when_made_after_the_tick(self) -> None:
        """Redaction happens once, where the record is made: now the errors chore."""

        class Leaky:
            name = "leaky"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 1:
                    raise ValueError("password=hunter22 in the request")

        result = run_systems(Leaky(), ticks=3, tick_rate=10, phase="production")
        [record] = result.errors
        assert "hunter22" not in record.message
        assert "hunter22" not in record.traceback

    def test_records_pending_at_the_end_of_a_run_are_made(self) -> None:
        """A failure on the last tick is recorded before run() returns."""
        result = run_systems(Flaky({4}), ticks=5, tick_rate=10)
        assert [r.tick for r in result.errors] == [4]
