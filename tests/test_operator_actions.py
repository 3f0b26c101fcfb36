"""The operator's hands on a running supervisor: quarantine, release, snapshot; and the windows.

Each action is a command run after the current tick, and its caller is
answered once it has happened; on a MockClock the ticks are exact. The
windowed figures (issue 10): a system that burns 40 ms per tick for 3 s,
then nothing: 15 s later the 10 s p99 is back under 5 ms while the
since-start p99 is not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from supervisor import Caller, Refused
from supervisor._core._control import Unknown
from supervisor.testing import Ticking, make_supervisor, run_systems

OPERATOR = Caller(name="uid:0(root)", role="operator")
RATE = 20.0


class Failing:
    """Fails every tick (so the supervisor quarantines it itself)."""

    name = "failing"

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        self.ticks += 1
        raise RuntimeError("always")


async def _started(sup: Any, nursery: trio.Nursery, **kwargs: Any) -> None:
    await nursery.start(lambda task_status: sup.run(task_status=task_status, **kwargs))
    await trio.sleep(0.5)


def _state(sup: Any, name: str) -> str:
    return str(next(s["state"] for s in sup.status().as_dict()["systems"] if s["name"] == name))


class TestQuarantine:
    async def test_held_out_until_released(self, autojump_clock: trio.testing.MockClock) -> None:
        """Out after the answer, never retried (a minute of backoffs), back in once released."""
        a, b = Ticking("a"), Ticking("b")
        sup = make_supervisor([a, b], tick_rate=RATE)
        async with trio.open_nursery() as nursery:
            await _started(sup, nursery)
            held = await sup.quarantine("b", reason="slow query", caller=OPERATOR)
            assert held.as_dict() == {
                "system": "b",
                "state": "quarantined (by operator)",
                "tick": held.tick,
                "detail": f"b quarantined (by operator) at tick {held.tick}",
            }
            assert held.tick == b.ticks  # b stepped every tick before the answer, none since
            stepped = b.ticks
            await trio.sleep(60.0)  # past every half-open backoff
            assert b.ticks == stepped
            assert a.ticks > stepped + 1000
            assert _state(sup, "b") == "quarantined (by operator)"
            assert sup.quarantined() == ("b",)
            assert "quarantined: b" in sup.readiness_gate()[1]
            assert "supervisor release b" in sup.next_step()
            event = sup.phase_history[-1]
            assert (event.action, event.before, event.after, event.caller, event.reason) == (
                "quarantine",
                "b running",
                "b quarantined (by operator)",
                "uid:0(root)",
                "slow query",
            )
            back = await sup.release("b", reason="", caller=OPERATOR)
            assert back.state == "running"
            await trio.sleep(1.0)
            assert b.ticks - stepped >= RATE - 2  # (about) every tick since the answer
            assert sup.phase_history[-1].action == "release"
            sup.stop()

    async def test_refusals(self, autojump_clock: trio.testing.MockClock) -> None:
        """No such system is Unknown (the API's 404); twice, or releasing a running one, Refused."""
        sup = make_supervisor([Ticking("a")], tick_rate=RATE)
        async with trio.open_nursery() as nursery:
            await _started(sup, nursery)
            with pytest.raises(Unknown, match=r"no such system: 'nosuch' \(systems: a\)"):
                await sup.quarantine("nosuch", reason="", caller=OPERATOR)
            with pytest.raises(Unknown):
                await sup.release("nosuch", reason="", caller=OPERATOR)
            with pytest.raises(Refused, match="a is not quarantined"):
                await sup.release("a", reason="", caller=OPERATOR)
            await sup.quarantine("a", reason="", caller=OPERATOR)
            with pytest.raises(Refused, match="already quarantined by an operator"):
                await sup.quarantine("a", reason="", caller=OPERATOR)
            sup.stop()

    async def test_release_resets_the_budget(self, autojump_clock: trio.testing.MockClock) -> None:
        """A system the supervisor quarantined is released at once, its failures forgotten."""
        failing = Failing()
        sup = make_supervisor([failing, Ticking("a")], tick_rate=RATE)
        async with trio.open_nursery() as nursery:
            await _started(sup, nursery)
            assert _state(sup, "failing") == "quarantined"
            slot = sup._k.slots["failing"]
            assert slot.breaker.quarantines >= 1
            await sup.release("failing", reason="fixed", caller=OPERATOR)
            assert slot.breaker.quarantines == 0
            ticks = failing.ticks
            await trio.sleep(0.5)
            assert failing.ticks > ticks  # stepped again (and failed again)
            sup.stop()


class TestSnapshotNow:
    async def test_answered_once_written(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The answer names a file that exists, of a tick after the request; status knows when."""
        sup = make_supervisor([Ticking("a")], tick_rate=RATE, state_dir=tmp_path)
        async with trio.open_nursery() as nursery:
            await _started(sup, nursery)
            asked_at = sup.tick
            taken = await sup.snapshot(reason="before the season reset", caller=OPERATOR)
            assert taken.tick >= asked_at
            snaps = sup.status().as_dict()["snapshots"]
            assert snaps["last"] == taken.path
            assert isinstance(snaps["last_time"], float)
            sup.stop()
        assert await trio.Path(taken.path).is_file()

    async def test_refused_when_not_ticking(self, tmp_path: Path) -> None:
        sup = make_supervisor([Ticking("a")], tick_rate=RATE, state_dir=tmp_path)
        with pytest.raises(Refused, match="not ticking"):
            await sup.snapshot(reason="", caller=OPERATOR)
        off = make_supervisor([Ticking("a")], tick_rate=RATE)
        with pytest.raises(Refused, match="snapshots are off"):
            await off.snapshot(reason="", caller=OPERATOR)

    async def test_periodic_snapshots_log_at_debug(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """One every few seconds is noise at info; an operator's is not."""
        sup = make_supervisor(
            [Ticking("a")],
            tick_rate=RATE,
            state_dir=tmp_path,
            config={"supervisor": {"snapshot_interval": 1.0}},
        )
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await _started(sup, nursery)
                await trio.sleep(3.0)
                await sup.snapshot(reason="now", caller=OPERATOR)
                sup.stop()
        written = [e for e in logs if e["event"] == "snapshot.written"]
        periodic = {e["log_level"] for e in written if e["reason"] == "periodic"}
        assert periodic == {"debug"}
        mine = [e["log_level"] for e in written if e["reason"].startswith("operator")]
        assert mine == ["info"]


class Burner:
    """Burns 40 ms of the (mock) clock per tick until ``until``, then nothing."""

    name = "burner"

    def __init__(self, clock: trio.testing.MockClock, until: float) -> None:
        self.clock = clock
        self.until = until

    def tick(self, ctx: Any) -> None:
        if trio.current_time() < self.until:
            self.clock.jump(0.040)


class TestWindows:
    def test_a_bad_spell_leaves_the_10s_window(self) -> None:
        """40 ms per tick for 3 s, then 15 s of nothing: the 10 s p99 < 5 ms, since-start not."""
        clock = trio.testing.MockClock(autojump_threshold=0)
        seen: dict[str, Any] = {}

        async def main() -> None:
            sup = make_supervisor([Burner(clock, until=3.0)], tick_rate=30, timer=trio.current_time)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.run)
                await trio.sleep(18.0)
                seen.update(sup.status().as_dict())
                seen["metrics"] = sup.windows()
                sup.stop()

        trio.run(main, clock=clock)
        ten, sixty = seen["windows"]["10s"], seen["windows"]["60s"]
        assert ten["lateness"]["p99"] < 0.005
        assert ten["work"]["p99"] < 0.005
        assert seen["lateness"]["p99"] > 0.005
        assert seen["work"]["p99"] >= 0.039
        assert sixty["work"]["p99"] >= 0.039  # the bad spell is within the minute
        assert ten["lateness"]["count"] == pytest.approx(300, abs=31)
        assert seen["measured_tick_rate"] == pytest.approx(30, abs=3.1)
        assert seen["uptime_seconds"] == pytest.approx(18.0)
        assert set(ten["lateness"]) == {"count", "p50", "p99", "max"}

    def test_after_the_run(self) -> None:
        """Read outside trio once the run is over: uptime is the run's length, windows stay."""
        run = run_systems(Ticking("a"), ticks=100, tick_rate=RATE)
        d = run.supervisor.status().as_dict()
        assert d["uptime_seconds"] == pytest.approx(100 / RATE, abs=0.2)
        assert d["windows"]["10s"]["lateness"]["count"] > 0
        assert d["measured_tick_rate"] == pytest.approx(RATE, rel=0.1)

    def test_status_who_and_where(self) -> None:
        """version, pid, config file and listen are there before any run; uptime only after."""
        d = make_supervisor([Ticking("a")]).status().as_dict()
        assert isinstance(d["version"], str)
        assert d["version"]
        assert isinstance(d["pid"], int)
        assert d["uptime_seconds"] is None
        assert d["config_file"] == "<defaults>"
        assert d["listen"] is None
        assert d["measured_tick_rate"] is None
        assert d["windows"] == {}
        assert not math.isnan(d["tick_rate"])
