"""Fault injection: one hostile plugin per fault; the run goes on and the fault is recorded.

Each test would have ended (or frozen) the process on the old main: an
exception whose ``__str__`` raises, ``KeyboardInterrupt`` / ``GeneratorExit``
in ``tick``, ``SystemExit`` in ``start``, a constructor that raises when
``restart`` rebuilds the systems, a hanging ``health()``, a hanging or
failing ``snapshot()``, a failing ``restore()``, non-numeric gauges and
10,000 gauge names. Ticks are counted exactly on a MockClock where the fault
allows; the faults that need the hang watchdog (a real thread) hang in real
time for a fraction of a second.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import (
    Caller,
    Config,
    ConfigError,
    Phase,
    Refused,
    StartRefused,
    StartupError,
    StepInterrupted,
    Supervisor,
    SupervisorConfig,
    WatchdogConfig,
)
from supervisor._core._context import MAX_GAUGES
from supervisor._core._plugins import build
from supervisor._core._safecall import (
    MESSAGE_CHARS,
    TRACEBACK_CHARS,
    fingerprint,
    is_runtime_cancel,
    make_record,
    safe_message,
)
from supervisor._core._slots import LoopState
from supervisor._core._snapshot_format import MAX_TICK
from supervisor._core._watchdog import Watchdog
from supervisor._server._metrics import SupervisorMetrics
from supervisor.testing import Ticking, make_supervisor, run_systems

OPERATOR = Caller("ops", "operator")
#: Watchdog settings for the faults that hang in real time: short, so a test stays fast.
FAST_WATCHDOG = {"hang_timeout": 0.02, "kill_timeout": 0.05}


def _config(**sections: Any) -> Config:
    return Config.from_mapping(sections, env={})


def _mock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# ---------------------------------------------------------------- hostile exceptions


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class StrInterrupts(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


class StrNotAString(Exception):
    def __str__(self) -> Any:
        return 42  # noqa: PLE0307 - the fault under test


class StrEnormous(Exception):
    def __str__(self) -> str:
        return "x" * 5_000_000


class EvilText(str):
    """A str subclass whose own methods all fail: only plain-str code may touch it."""

    def __str__(self) -> str:
        raise RuntimeError("subclass __str__")

    def __len__(self) -> int:
        raise RuntimeError("subclass __len__")

    def __getitem__(self, item: Any) -> Any:
        raise RuntimeError("subclass __getitem__")


class StrSubclass(Exception):
    def __str__(self) -> str:
        return EvilText("looks fine")


class ReprAndNotesHostile(Exception):
    """Breaks what traceback formatting reads besides __str__."""

    __notes__ = 5  # type: ignore[assignment]  # not a sequence of strings

    def __str__(self) -> str:
        raise ValueError("no")

    def __repr__(self) -> str:
        raise ValueError("no repr either")


class StrHangs(Exception):
    def __str__(self) -> str:  # noqa: PLE0307 - never returns: the fault under test
        while True:  # the hang watchdog interrupts it
            time.sleep(0.001)


class Raiser:
    """Raises ``make()`` on every tick."""

    def __init__(self, make: Any, name: str = "hostile") -> None:
        self.name = name
        self.make = make
        self.ran = 0

    def tick(self, ctx: Any) -> None:
        self.ran += 1
        raise self.make()


LOTS = {"recovery": {"max_restarts": 1_000, "window_seconds": 1.0}}


class TestHostileExceptions:
    @pytest.mark.parametrize(
        ("exc", "message"),
        [
            (StrRaises, "<unprintable StrRaises>"),
            (StrInterrupts, "<unprintable StrInterrupts>"),
            (StrNotAString, "<unprintable StrNotAString>"),
            (ReprAndNotesHostile, "<unprintable ReprAndNotesHostile>"),
            (StrSubclass, "looks fine"),
        ],
    )
    def test_a_hostile_str_is_recorded_and_the_run_goes_on(
        self, exc: type[BaseException], message: str
    ) -> None:
        """make_record never lets a plugin's __str__ escape: 30 ticks, 30 records."""
        hostile, steady = Raiser(exc), Ticking()
        result = run_systems(hostile, steady, ticks=30, tick_rate=30, config=_config(**LOTS))
        assert result.summary.ticks == 30
        assert (hostile.ran, steady.ticks) == (30, 30)
        assert result.summary.errors == {"hostile": 30}
        record = result.errors[-1]
        assert record.message == message
        assert type(record.message) is str
        assert record.exc_type == exc.__qualname__
        assert "Traceback" in record.traceback
        assert record.fingerprint

    def test_an_enormous_message_is_bounded(self) -> None:
        """A 5 MB __str__ becomes a record of at most MESSAGE_CHARS (+ '...')."""
        result = run_systems(Raiser(StrEnormous), ticks=3, tick_rate=30, config=_config(**LOTS))
        assert result.summary.ticks == 3
        record = result.errors[-1]
        assert len(record.message) == MESSAGE_CHARS + 3
        assert len(record.traceback) <= TRACEBACK_CHARS + 4

    def test_a_hanging_str_is_interrupted_by_the_watchdog(self) -> None:
        """__str__ that never returns: the watchdog interrupts it; 3 ticks, 3 records."""
        hostile = Raiser(StrHangs)
        started = time.monotonic()
        result = run_systems(
            hostile, ticks=3, tick_rate=30, config=_config(watchdog=FAST_WATCHDOG, **LOTS)
        )
        assert result.summary.ticks == 3
        assert [r.message for r in result.errors] == ["<unprintable StrHangs>"] * 3
        # One interrupt per record: __str__ is not called a second time to format the traceback.
        assert time.monotonic() - started < 3 * 1.0

    def test_make_record_guards_every_plugin_call(self) -> None:
        """Unit: message, traceback and fingerprint of hostile exceptions, never raising."""
        for exc_type in (StrRaises, StrInterrupts, StrNotAString, ReprAndNotesHostile):
            try:
                raise exc_type()
            except exc_type as caught:
                exc = caught
            record = make_record(
                exc,
                time=0.0,
                tick=1,
                system="s",
                hook="tick",
                phase="development",
                gauges={},
                health="healthy",
                traceback_limit=20,
            )
            assert record.message == f"<unprintable {exc_type.__qualname__}>"
            assert "test_make_record_guards_every_plugin_call" in record.traceback
            assert fingerprint(exc) == record.fingerprint
            assert safe_message(exc) == record.message

    def test_a_hostile_module_attribute_does_not_break_the_fingerprint(self) -> None:
        """type(exc).__module__ is plugin-controlled: a non-str one is ignored."""

        class Odd(Exception):
            pass

        Odd.__module__ = 12345  # type: ignore[assignment]
        assert len(fingerprint(Odd())) == 12

    def test_a_hostile_metaclass_is_never_called(self) -> None:
        """An exception class whose metaclass breaks hashing, equality and names: recorded."""

        class Meta(type):
            def __hash__(cls) -> int:
                raise RuntimeError("hash")

            def __eq__(cls, other: object) -> bool:
                raise RuntimeError("eq")

            @property
            def __module__(cls) -> str:  # type: ignore[override]
                raise RuntimeError("module")

        class Odd(Exception, metaclass=Meta):
            pass

        steady = Ticking()
        result = run_systems(Raiser(Odd), steady, ticks=3, tick_rate=30, config=_config(**LOTS))
        assert (result.summary.ticks, steady.ticks) == (3, 3)
        assert {r.exc_type.rsplit(".", 1)[-1] for r in result.errors} == {"Odd"}
        assert len({r.fingerprint for r in result.errors}) == 1

    def test_a_hostile_class_property_is_never_called(self) -> None:
        """isinstance() reads exc.__class__ when it fails: SafeCall never calls isinstance on it."""

        class LiesAboutItsClass(Exception):
            @property  # type: ignore[misc]
            def __class__(self) -> type:
                raise RuntimeError("__class__")

        class StartsBadly(Ticking):
            def start(self, ctx: Any) -> None:
                raise LiesAboutItsClass

        steady = Ticking("steady")
        result = run_systems(
            Raiser(LiesAboutItsClass),
            StartsBadly("starts"),
            steady,
            ticks=3,
            tick_rate=30,
            config=_config(**LOTS),
        )
        assert (result.summary.ticks, steady.ticks) == (3, 3)
        assert {(r.system, r.hook) for r in result.errors} == {
            ("hostile", "tick"),
            ("starts", "start"),
        }

    def test_a_constructor_error_with_hostile_str_is_one_config_line(self) -> None:
        """build(): a ValueError whose __str__ raises still gives one ConfigError line."""

        class BadValue(ValueError):
            def __str__(self) -> str:
                raise RuntimeError("no")

        def factory() -> Any:
            raise BadValue

        with pytest.raises(
            ConfigError, match=r"rejected its arguments: <unprintable \S*BadValue>$"
        ):
            build("econ", factory, {})


# ---------------------------------------------------------------- BaseExceptions in hooks


class RaisesOn:
    """Raises ``exc`` in ``hook`` on chosen ticks (sync or async tick)."""

    def __init__(self, exc: type[BaseException], ticks: set[int], *, name: str = "base") -> None:
        self.name = name
        self.exc = exc
        self.fail_ticks = ticks
        self.ran = 0

    def tick(self, ctx: Any) -> None:
        self.ran += 1
        if ctx.tick in self.fail_ticks:
            raise self.exc("raised by a plugin")


class AsyncRaisesOn(RaisesOn):
    async def tick(self, ctx: Any) -> None:  # type: ignore[override]
        self.ran += 1
        await trio.lowlevel.checkpoint()
        if ctx.tick in self.fail_ticks:
            raise self.exc("raised by a plugin")


class TestBaseExceptionsInHooks:
    @pytest.mark.parametrize("system_type", [RaisesOn, AsyncRaisesOn])
    @pytest.mark.parametrize("exc", [KeyboardInterrupt, GeneratorExit, SystemExit])
    def test_raised_in_tick_it_is_that_systems_failure(
        self, exc: type[BaseException], system_type: type[RaisesOn]
    ) -> None:
        """KeyboardInterrupt/GeneratorExit/SystemExit in tick: recorded, recovered, 30 ticks."""
        system, steady = system_type(exc, {3, 7}), Ticking()
        result = run_systems(system, steady, ticks=30, tick_rate=30)
        assert result.summary.ticks == 30
        assert (system.ran, steady.ticks) == (30, 30)
        assert [(r.tick, r.hook, r.exc_type) for r in result.errors] == [
            (3, "tick", exc.__name__),
            (7, "tick", exc.__name__),
        ]
        assert result.summary.quarantined == ()

    def test_system_exit_in_start_quarantines_a_non_critical_system(self) -> None:
        """SystemExit in start(): that system is quarantined; the world ticks on."""

        class ExitsOnStart(Ticking):
            def start(self, ctx: Any) -> None:
                raise SystemExit(3)

        broken, steady = ExitsOnStart("broken"), Ticking()
        result = run_systems(broken, steady, ticks=30, tick_rate=30)
        assert result.summary.ticks == 30
        assert steady.ticks == 30
        assert (result.errors[0].hook, result.errors[0].exc_type) == ("start", "SystemExit")
        assert broken.ticks < 30  # quarantined, retried once its backoff (1 s) is over

    def test_system_exit_in_a_critical_start_is_a_startup_error(self) -> None:
        """SystemExit in a critical start(): StartupError, not an exit of the process."""

        class CriticalExit(Ticking):
            critical = True

            def start(self, ctx: Any) -> None:
                raise SystemExit(3)

        with pytest.raises(StartupError, match="failed to start: SystemExit: 3"):
            run_systems(CriticalExit("core"), ticks=5)

    def test_a_cancelled_leaked_by_a_plugin_is_its_failure(self) -> None:
        """A trio.Cancelled kept from the plugin's own scope and raised later is recorded."""

        class Leaky:
            name = "leaky"

            def __init__(self) -> None:
                self.kept: BaseException | None = None

            async def tick(self, ctx: Any) -> None:
                with trio.CancelScope() as scope:
                    scope.cancel()
                    try:
                        await trio.sleep(1)
                    except trio.Cancelled as exc:
                        self.kept = exc
                        raise
                if ctx.tick == 4 and self.kept is not None:
                    raise self.kept

        steady = Ticking()
        result = run_systems(Leaky(), steady, ticks=10, tick_rate=30)
        assert result.summary.ticks == 10
        assert steady.ticks == 10
        assert [(r.tick, r.exc_type) for r in result.errors] == [(4, "Cancelled")]

    def test_the_runtimes_cancellation_still_propagates(self) -> None:
        """A forced stop (the run's scope cancelled) in an async tick ends the run, unrecorded."""

        class Forcer:
            name = "forcer"

            def __init__(self, sup_box: list[Supervisor]) -> None:
                self.box = sup_box

            async def tick(self, ctx: Any) -> None:
                if ctx.tick == 5:
                    self.box[0].run_state.scope.cancel()
                await trio.lowlevel.checkpoint()

        box: list[Supervisor] = []
        sup = make_supervisor([Forcer(box)], tick_rate=30)
        box.append(sup)
        trio.run(sup.run, clock=_mock())
        assert sup.tick == 5
        assert list(sup.errors.records) == []

    def test_a_plugins_own_nursery_past_the_budget_is_a_timeout(self) -> None:
        """Our deadline cancels a tick's nursery: its Cancelled are ours, the rest theirs."""

        class Nest:
            name = "nest"

            async def tick(self, ctx: Any) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    nursery.start_soon(trio.sleep_forever)

        class Mixed:
            name = "mixed"

            async def tick(self, ctx: Any) -> None:
                async def boom() -> None:
                    await trio.sleep(0.001)
                    raise ValueError("x")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    nursery.start_soon(boom)

        steady = Ticking()
        result = run_systems(Nest(), Mixed(), steady, ticks=5, tick_rate=30, config=_config(**LOTS))
        assert (result.summary.ticks, steady.ticks) == (5, 5)
        kinds = {(r.system, r.exc_type, r.kind) for r in result.errors}
        assert kinds == {("nest", "StepTimeout", "timeout"), ("mixed", "ExceptionGroup", "error")}
        assert len(result.errors) == 10

    def test_is_runtime_cancel_outside_trio(self) -> None:
        """Outside a trio run nothing is the runtime's to take back."""
        assert not is_runtime_cancel(KeyboardInterrupt())
        assert not is_runtime_cancel(RuntimeError())


# ---------------------------------------------------------------- restart: the constructor


class Counted:
    """A stateful system built by a factory that may be told to fail."""

    def __init__(self, name: str, critical: bool = False) -> None:
        self.name = name
        self.critical = critical
        self.count = 0
        self.started = 0

    def start(self, ctx: Any) -> None:
        self.started += 1

    def tick(self, ctx: Any) -> None:
        self.count += 1

    def snapshot(self) -> dict[str, int]:
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self.count = state["count"]


class Factory:
    """Builds ``Counted`` systems; raises once ``fail`` is set."""

    def __init__(self, name: str, *, critical: bool = False) -> None:
        self.name = name
        self.critical = critical
        self.fail = False
        self.built: list[Counted] = []

    def __call__(self) -> Counted:
        if self.fail:
            raise StrRaises
        system = Counted(self.name, self.critical)
        self.built.append(system)
        return system


def _factory_sup(tmp_path: Path, *factories: Factory) -> Supervisor:
    sup = make_supervisor([], tick_rate=10, state_dir=tmp_path)
    for factory in factories:
        sup.register(factory(), name=factory.name, factory=factory)
    return sup


class TestConstructorOnRestart:
    async def test_a_non_critical_constructor_failure_keeps_the_old_instance(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """restart with a failing factory: recorded (hook 'build'), old instance quarantined."""
        econ, world = Factory("econ"), Factory("world")
        sup = _factory_sup(tmp_path, econ, world)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: sup.run(task_status=task_status))
            await trio.sleep(1.05)  # ticks 0..10
            old = sup.system("econ")
            econ.fail = True
            result = (await sup.restart(caller=OPERATOR)).as_dict()
            assert result["tick"] == 11
            assert sup.system("econ") is old
            assert sup.quarantined() == ("econ",)
            assert sup.system("world") is world.built[-1]  # rebuilt and restored
            assert result["restored"] == ["econ", "world"]
            assert sup.system("world").count == sup.tick  # (11, or 12 if a tick ran already)
            record = sup.errors.recent(1)[0]
            assert (record.system, record.hook, record.message) == (
                "econ",
                "build",
                "<unprintable StrRaises>",
            )
            await trio.sleep(2.0)  # its backoff (1 s) passes: the old instance starts again
            assert sup.quarantined() == ()
            assert old.started == 2
            assert sup.system("world").count == sup.tick
            sup.stop()

    async def test_a_critical_constructor_failure_is_an_emergency_with_state_preserved(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A running world whose critical factory fails on restart: EMERGENCY, its state written."""
        core, world = Factory("core", critical=True), Factory("world")
        sup = _factory_sup(tmp_path, core, world)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(1.05)
            core.fail = True
            with pytest.raises(Refused, match="critical system core could not be built"):
                await sup.restart(caller=OPERATOR)
            await sup.run_state.emergency_done.wait()
            assert sup.phase is Phase.EMERGENCY_SHUTDOWN
            snap, problems = sup.snapshots.latest()
            assert problems == []
            assert snap is not None
            assert snap.tick == 11
            assert snap.reason.startswith("emergency: restart failed")
            # The state captured before the systems stopped, not the rebuilt (empty) ones.
            assert set(snap.systems) == {"core", "world"}
            core.fail = False
            restarted = (await sup.restart(caller=OPERATOR)).as_dict()
            assert restarted["tick"] == 11
            assert sup.system("core").count == sup.tick >= 11
            sup.stop()

    async def test_after_an_emergency_a_failed_rebuild_keeps_the_snapshot_untouched(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """In EMERGENCY_SHUTDOWN, restart with a failing critical factory: refused, files kept."""
        core = Factory("core", critical=True)
        sup = _factory_sup(tmp_path, core)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(1.05)
            await sup.shutdown(emergency=True, reason="drill", caller=OPERATOR)
            files = {p.name: p.read_bytes() for p in (tmp_path / "snapshots").iterdir()}
            core.fail = True
            with pytest.raises(Refused, match="could not be built"):
                await sup.restart(caller=OPERATOR)
            assert sup.phase is Phase.EMERGENCY_SHUTDOWN
            assert sup.liveness() == (True, "emergency_shutdown")
            assert {p.name: p.read_bytes() for p in (tmp_path / "snapshots").iterdir()} == files
            core.fail = False
            assert (await sup.restart(caller=OPERATOR)).as_dict()["tick"] == 11
            assert sup.phase.value == "development"
            sup.stop()


# ---------------------------------------------------------------- health


class SlowHealth:
    """Counts its health() calls."""

    name = "slow"

    def __init__(self, answer: Any = "healthy") -> None:
        self.calls = 0
        self.answer = answer

    def tick(self, ctx: Any) -> None:
        pass

    def health(self) -> Any:
        self.calls += 1
        return self.answer


class TestHealth:
    async def test_health_runs_at_most_once_a_second_however_often_readiness_is_asked(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """10 s of ticks, 10,000 readiness asks: exactly 10 health() calls, from the tick loop."""
        system = SlowHealth()
        sup = make_supervisor([system], tick_rate=30)
        asked = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: sup.run(duration=10, task_status=task_status))
            await trio.sleep(0.01)  # the first tick
            while sup.run_state.running:
                for _ in range(10):
                    assert sup.readiness_gate() == (True, [])
                    sup.status()
                    asked += 1
                await trio.sleep(0.01)
        assert asked >= 9_000
        assert sup.tick == 300
        assert system.calls == 10

    @pytest.mark.parametrize("answer", ["unhealthy", 42, None, "HEALTHY"])
    async def test_an_unhealthy_answer_is_cached_for_probes(
        self, answer: Any, autojump_clock: trio.testing.MockClock
    ) -> None:
        """health() says 'unhealthy' (or something else): readiness names the system, no text."""
        system = SlowHealth(answer)
        sup = make_supervisor([system], tick_rate=30)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.5)
            assert sup.statistics().systems[0].health == "unhealthy"
            assert sup.readiness_gate() == (False, ["unhealthy: slow"])
            assert system.calls == 1
            sup.stop()

    def test_a_failing_health_counts_against_the_budget(self) -> None:
        """health() that raises: recorded each second; past the budget the system is quarantined."""

        class Broken(SlowHealth):
            def health(self) -> Any:
                self.calls += 1
                raise StrRaises

        system, steady = Broken(), Ticking()
        result = run_systems(
            system,
            steady,
            ticks=None,
            duration=10,
            tick_rate=10,
            config=_config(recovery={"max_restarts": 2, "window_seconds": 60}),
        )
        assert result.summary.ticks == 100
        assert steady.ticks == 100
        assert result.summary.quarantined == ("slow",)
        # t=0,1,2 fail (the third exceeds 2 restarts); half-open trials at 3, 5, 9 (backoff 1,2,4).
        assert system.calls == 6
        assert {(r.hook, r.message) for r in result.errors} == {
            ("health", "<unprintable StrRaises>")
        }

    def test_a_hanging_health_is_interrupted_and_sigterm_still_stops_the_run(self) -> None:
        """A health() that never returns: interrupted by the watchdog; probes answer; SIGTERM works.

        Real clock (the watchdog is a thread): 20 Hz, kill_timeout 0.05 s.
        """

        class Hangs(SlowHealth):
            def health(self) -> Any:
                self.calls += 1
                while True:
                    time.sleep(0.001)

        system = Hangs()
        sup = make_supervisor(
            [system, Ticking()],
            tick_rate=20,
            config=_config(watchdog=FAST_WATCHDOG, recovery={"max_restarts": 100}),
        )
        probes: list[tuple[float, bool, list[str], int]] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: sup.run(handle_signals=True, task_status=task_status)
                )
                threading.Timer(1.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
                while sup.run_state.running:
                    calls = system.calls
                    began = time.perf_counter()
                    ready, reasons = sup.readiness_gate()
                    probes.append((time.perf_counter() - began, ready, reasons, calls))
                    assert system.calls == calls  # the probe never calls plugin code
                    await trio.sleep(0.05)

        began = time.monotonic()
        trio.run(main)
        elapsed = time.monotonic() - began
        assert sup.summary().exit_reason == "signal SIGTERM"
        assert elapsed < 1.3 + 1.0
        assert 1 <= system.calls <= 3  # once a second of the clock
        health = [r for r in sup.errors.records if r.hook == "health"]
        assert len(health) == system.calls
        assert {r.kind for r in health} == {"interrupted"}
        assert max(p[0] for p in probes) < 0.02  # microseconds, but the machine may preempt
        assert (False, ["unhealthy: slow"]) in [(p[1], p[2]) for p in probes]


# ---------------------------------------------------------------- snapshot and restore


class SnapshotFails:
    """Its snapshot() raises (or hangs, in real time, until the watchdog interrupts it)."""

    name = "snapfail"

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.calls = 0
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        self.ticks += 1

    def snapshot(self) -> Any:
        self.calls += 1
        while self.hang:
            time.sleep(0.001)
        raise StrRaises


class TestSnapshotHook:
    @pytest.mark.parametrize("hang", [False, True])
    def test_a_failing_snapshot_is_quarantined_after_its_budget(
        self, tmp_path: Path, hang: bool
    ) -> None:
        """30 periodic snapshots: snapshot() is called 7 times, not 31; the others are captured.

        Failures at t=1,2,3 exhaust max_restarts=2; half-open trials at 4, 6, 10 and 18
        (backoff 1, 2, 4, 8 s) fail; the final snapshot at stop skips it. (Writes are
        replaced by an in-memory list: a write on a worker thread would let the
        MockClock jump and skip periodic snapshots at random.)
        """
        system, steady = SnapshotFails(hang=hang), Counted("steady")
        config = _config(
            supervisor={"snapshot_interval": 1.0},
            recovery={"max_restarts": 2, "window_seconds": 60},
            watchdog=FAST_WATCHDOG,
        )
        sup = make_supervisor([system, steady], tick_rate=10, config=config, state_dir=tmp_path)
        written: list[Any] = []

        async def write(snap: Any) -> Path:
            written.append(snap)
            return tmp_path / "snapshot"

        sup._snapshotter.write = write  # type: ignore[method-assign]
        trio.run(functools.partial(sup.run, duration=30), clock=_mock())
        assert sup.tick == 300
        assert steady.count == 300
        assert system.calls == 7
        assert system.ticks == 31  # t = 0 .. 3.0, then quarantined
        assert sup.quarantined() == ("snapfail",)
        kinds = {(r.hook, r.kind) for r in sup.errors.records}
        assert kinds == {("snapshot", "interrupted" if hang else "error")}
        assert len(written) == 30  # 29 periodic and the final one, every one without snapfail
        assert [set(snap.systems) for snap in written] == [{"steady"}] * 30
        assert written[-1].tick == 300

    def test_a_state_that_explodes_while_packed_is_recorded(self) -> None:
        """snapshot() returns a mapping whose methods raise KeyboardInterrupt inside msgpack."""

        class Explodes(dict[str, int]):
            def items(self) -> Any:
                raise KeyboardInterrupt

            def __iter__(self) -> Any:
                raise KeyboardInterrupt

            def __len__(self) -> int:
                raise KeyboardInterrupt

        class Packs(Ticking):
            def snapshot(self) -> Any:
                return Explodes(a=1)

        result = run_systems(Packs("packs"), ticks=5, tick_rate=30)  # captured at stop
        assert result.summary.ticks == 5
        assert [(r.hook, r.exc_type) for r in result.errors] == [("snapshot", "KeyboardInterrupt")]

    def test_a_failing_restore_is_recorded_and_the_run_goes_on(self, tmp_path: Path) -> None:
        """Resume where one system's restore() raises: recorded, counted, the others restored."""

        class RestoreFails(Counted):
            def restore(self, state: dict[str, int]) -> None:
                raise StrRaises

        run_systems(Counted("a"), Counted("b"), ticks=20, tick_rate=10, state_dir=tmp_path)
        second = [Counted("a"), RestoreFails("b")]
        sup = make_supervisor(second, tick_rate=10, state_dir=tmp_path)
        trio.run(functools.partial(sup.run, ticks=10, resume=True), clock=_mock())
        assert sup.tick == 30
        assert second[0].count == 30
        assert second[1].count == 10  # ran from its fresh state
        assert [(r.system, r.hook) for r in sup.errors.records] == [("b", "restore")]
        assert len(sup._k.slots["b"].breaker.failures) == 1

    def test_a_snapshot_tick_past_2_to_the_53_is_refused(self, tmp_path: Path) -> None:
        """A snapshot whose tick is >= 2**53 (forged or corrupt) is never continued from."""
        from supervisor._core._snapshot_format import Snapshot

        sup = make_supervisor([Counted("a")], tick_rate=10, state_dir=tmp_path)
        forged = Snapshot(tick=MAX_TICK, phase="development", reason="x", time=0.0, systems={})

        class ForgedStore:
            directory = tmp_path

            def latest(self) -> tuple[Snapshot, list[str]]:
                return forged, []

        sup._snapshotter.store = ForgedStore()  # type: ignore[assignment]
        assert trio.run(sup._snapshotter.latest) is None
        assert "2**53" in sup.snapshot_problems[0]


# ---------------------------------------------------------------- gauges


class Reports:
    """Reports ``gauges`` (name -> value) on every tick."""

    name = "reporter"

    def __init__(self, gauges: dict[Any, Any]) -> None:
        self.gauges = gauges
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        self.ticks += 1
        for name, value in self.gauges.items():
            ctx.report(name, value)


class NumberLike:
    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class TestGauges:
    @pytest.mark.parametrize(
        "value",
        ["12", None, NumberLike(), math.nan, math.inf, -math.inf, 10**30, [1], 1j],
        ids=["str", "none", "object", "nan", "inf", "-inf", "huge-int", "list", "complex"],
    )
    def test_a_non_numeric_gauge_is_the_systems_error_not_the_scrapes(self, value: Any) -> None:
        """A bad value: recorded once a second (kind 'gauge'), never published, /metrics fine."""
        system = Reports({"players": 3, "bad": value})
        result = run_systems(system, ticks=30, tick_rate=30)
        sup = result.supervisor
        assert result.summary.ticks == 30
        assert sup.gauges == {"players": 3}
        assert [(r.hook, r.kind) for r in result.errors] == [("report", "gauge")]
        assert "finite int or float" in result.errors[0].message
        assert sup.errors.dropped["gauge_error"] == 29
        body, _ = SupervisorMetrics(sup).exposition()
        assert b"players" in body

    def test_a_bool_is_a_number_and_ints_and_floats_pass(self) -> None:
        """True/False are published as 1/0; ints and finite floats as they are."""
        result = run_systems(Reports({"up": True, "down": False, "n": 7, "x": 0.5}), ticks=2)
        assert result.supervisor.gauges == {"up": 1, "down": 0, "n": 7, "x": 0.5}
        assert result.errors == []

    @pytest.mark.parametrize(
        "name",
        ["has space", "9lives", "", "x" * 65, "naïve", EvilText("fine"), 42, None],
        ids=["space", "digit", "empty", "long", "non-ascii", "str-subclass", "int", "none"],
    )
    def test_a_bad_name_is_refused(self, name: Any) -> None:
        """Names outside [A-Za-z_][A-Za-z0-9_]{0,63} (or not a str) are refused and recorded."""
        result = run_systems(Reports({name: 1, "ok": 2}), ticks=3, tick_rate=30)
        assert result.supervisor.gauges == {"ok": 2}
        assert [r.kind for r in result.errors] == ["gauge"]

    def test_ten_thousand_gauge_names_keep_64(self) -> None:
        """10,000 names a tick: 64 kept, the rest refused and counted; one record a second."""
        system = Reports({f"g{i}": i for i in range(10_000)})
        result = run_systems(system, ticks=3, tick_rate=30)
        sup = result.supervisor
        assert result.summary.ticks == 3
        assert sup.gauges == {f"g{i}": i for i in range(MAX_GAUGES)}
        assert sup.errors.dropped["gauge_limit"] == (10_000 - MAX_GAUGES) * 3
        assert len(result.errors) == 1
        assert "at most 64 gauges" in result.errors[0].message
        body, _ = SupervisorMetrics(sup).exposition()
        assert body.count(b'supervisor_gauge{name="g') == MAX_GAUGES

    def test_a_gauge_name_is_redacted_once_when_first_seen(self) -> None:
        """In testing, a gauge named like an API key is published under its redacted name."""
        name = "sk_live_" + "a1" * 12
        result = run_systems(Reports({name: 5}), ticks=3, tick_rate=30, phase="testing")
        assert list(result.supervisor.gauges) == ["[token]"]


# ---------------------------------------------------------------- start refused


class TestStartRefused:
    @pytest.mark.parametrize("critical", [False, True])
    def test_start_refused_is_a_refused_startup_error(self, critical: bool) -> None:
        """StartRefused from start(), critical or not: StartupError(refused=True), its message."""

        class Refuses(Ticking):
            def start(self, ctx: Any) -> None:
                raise StartRefused("the database lost 185 acknowledged purchases")

        system = Refuses("store")
        system.critical = critical  # type: ignore[attr-defined]
        started = Counted("first")
        with pytest.raises(StartupError) as raised:
            run_systems(started, system, ticks=5)
        assert raised.value.refused
        assert raised.value.system == "store"
        assert str(raised.value) == "the database lost 185 acknowledged purchases"


# ---------------------------------------------------------------- NaN from a public Config


class TestNaNGuards:
    @pytest.mark.parametrize(
        ("section", "key"),
        [
            (SupervisorConfig, "stop_timeout"),
            (SupervisorConfig, "snapshot_interval"),
            (SupervisorConfig, "memory_limit_mb"),
            (WatchdogConfig, "hang_timeout"),
            (WatchdogConfig, "kill_timeout"),
        ],
    )
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
    def test_no_nan_infinity_or_negative_reaches_a_deadline(
        self, section: Any, key: str, bad: float
    ) -> None:
        """The core takes these values as they are: the config, even built in code, refuses them."""
        with pytest.raises(ConfigError, match=key):
            section(**{key: bad})

    def test_the_watchdog_takes_its_config(self) -> None:
        """hang_timeout = NaN would switch the watchdog off: it can only get checked values."""
        wd = Watchdog(LoopState(dt=0.1), WatchdogConfig(hang_timeout=0.1, kill_timeout=0.5))
        assert (wd.hang_timeout, wd.kill_timeout) == (0.1, 0.5)
        wd.configure(WatchdogConfig())
        assert (wd.hang_timeout, wd.kill_timeout) == (0.25, 1.0)


def test_a_gauge_error_inside_a_step_leaves_the_step_watched() -> None:
    """Recording a bad gauge mid-tick must not unmark the step: a hang after it is interrupted."""

    class BadGaugeThenSpin:
        name = "spin"

        def tick(self, ctx: Any) -> None:
            ctx.report("bad", "not a number")
            if ctx.tick == 1:
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    time.sleep(0.001)

    result = run_systems(
        BadGaugeThenSpin(), ticks=3, tick_rate=30, config=_config(watchdog=FAST_WATCHDOG)
    )
    assert result.summary.ticks == 3
    assert [(r.tick, r.kind) for r in result.errors] == [(0, "gauge"), (1, "interrupted")]


def test_step_interrupted_stays_interrupted() -> None:
    """The watchdog's own interrupt is still a failure of kind 'interrupted'."""

    class Spins:
        name = "spins"

        def __init__(self) -> None:
            self.ticks = 0

        def tick(self, ctx: Any) -> None:
            self.ticks += 1
            if ctx.tick == 1:
                while True:
                    time.sleep(0.001)

    result = run_systems(Spins(), ticks=4, tick_rate=30, config=_config(watchdog=FAST_WATCHDOG))
    assert result.summary.ticks == 4
    assert [(r.tick, r.kind, r.exc_type) for r in result.errors] == [
        (1, "interrupted", StepInterrupted.__name__)
    ]
