"""The rollouts of one supervisor, in a trio run on a MockClock: exact step times, rollbacks,
refusals that change nothing, the durable record and what a restart reads from it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from supervisor._core._config import Config
from supervisor._core._flags import FlagChange, Flags
from supervisor._rollout._file import FILE_NAME, RolloutFile
from supervisor._rollout._manager import CHECKPOINT_EVERY, RolloutRefused, Rollouts, UnknownFlag
from supervisor._rollout._plan import RolloutInputError, State


def _flags(**percents: float) -> Flags:
    """The supervisor's real flags, configured with these percents."""
    flags = Flags()
    flags.configure(
        Config.from_mapping({"flags": {n: {"percent": p} for n, p in percents.items()}})
    )
    return flags


@attrs.define
class World:
    """A manager, its flags, its folder, the rules firing, and the audit lines it wrote."""

    rollouts: Rollouts
    flags: Flags
    folder: Path
    firing: set[str]
    audit: list[tuple[str, dict[str, Any], str]]
    changes: list[FlagChange]

    def percent(self, flag: str = "new_shop") -> float:
        return self.flags.percent(flag)

    def record(self) -> list[dict[str, Any]]:
        doc = json.loads((self.folder / FILE_NAME).read_text())
        rollouts = doc["rollouts"]
        assert isinstance(rollouts, list)
        return rollouts


async def _inline(fn: Any, *args: Any) -> Any:
    """Saves and audit writes in the trio thread: the MockClock never jumps during one."""
    return fn(*args)


def _world(folder: Path, flags: Flags | None = None) -> World:
    flags = flags or _flags(new_shop=0.0, other=50.0)
    changes: list[FlagChange] = []
    flags.listeners.append(changes.append)
    firing: set[str] = set()
    audit: list[tuple[str, dict[str, Any], str]] = []

    def write(action: str, arguments: Mapping[str, Any], detail: str) -> bool:
        audit.append((action, dict(arguments), detail))
        return True

    rollouts = Rollouts(
        offload=_inline,
        flags=flags,
        file=RolloutFile(folder),
        rules=frozenset({"error_rate_high", "lateness"}),
        firing=lambda: sorted(firing),
        audit=write,
    )
    return World(rollouts, flags, folder, firing, audit, changes)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A manager whose service runs until the test ends."""
    w = _world(tmp_path)
    closing = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.rollouts.serve, closing)
        yield w
        closing.set()


async def _start(w: World, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "steps": "1,5,25,100",
        "every": "10m",
        "rollback_on": ["error_rate_high"],
        "reason": "launch",
        "by": "alice",
    }
    args.update(kw)
    return await w.rollouts.start("new_shop", **args)


async def _sleep_until(t: float) -> None:
    await trio.sleep_until(t)
    await trio.testing.wait_all_tasks_blocked()


class TestSchedule:
    async def test_climbs_at_exact_times(self, world: World, clock: trio.testing.MockClock) -> None:
        """1 % now, 5 % at +10 min, 25 % at +20, 100 % at +30, completed at +40."""
        t0 = trio.current_time()
        answer = await _start(world)
        assert answer["rollout"]["percent"] == 1.0
        assert world.percent() == 1.0
        seen = []
        for minutes in (9.99, 10, 19.99, 20, 30, 40):
            await _sleep_until(t0 + minutes * 60)
            seen.append((minutes, world.percent()))
        assert seen == [(9.99, 1.0), (10, 5.0), (19.99, 5.0), (20, 25.0), (30, 100.0), (40, 100.0)]
        assert world.rollouts.rollouts["new_shop"].state is State.COMPLETED
        assert [a for a, _, _ in world.audit] == ["rollout_step"] * 3 + ["rollout_complete"]
        assert world.record()[0]["state"] == "completed"
        assert {c.source for c in world.changes} == {"rollout"}  # what the listeners hear

    async def test_pause_and_resume(self, world: World, clock: trio.testing.MockClock) -> None:
        """A pause stops the watch; resumed an hour later, the step owes what it owed."""
        t0 = trio.current_time()
        await _start(world)
        await _sleep_until(t0 + 240)
        await world.rollouts.pause("new_shop", reason="weekend", by="bob")
        assert world.record()[0]["state"] == "paused"
        await _sleep_until(t0 + 3840)
        assert world.percent() == 1.0
        await world.rollouts.resume("new_shop", by="bob")
        await _sleep_until(t0 + 3840 + 359.9)
        assert world.percent() == 1.0
        await _sleep_until(t0 + 3840 + 360)
        assert world.percent() == 5.0

    async def test_checkpoints_the_time_watched(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """While running, the record's watched time is at most one checkpoint behind.

        A checkpoint is 5 % of the step (30 s of 10 min), 5 s at least.
        """
        t0 = trio.current_time()
        await _start(world)
        await _sleep_until(t0 + 123.0)
        assert world.rollouts.checkpoint_every() == 30.0
        assert 123.0 - 30.0 <= world.record()[0]["watched"] <= 123.0
        await world.rollouts.abort("new_shop", by="bob")
        await _start(world, steps="1,2", every="10s")
        assert world.rollouts.checkpoint_every() == CHECKPOINT_EVERY

    async def test_someone_else_setting_the_flag_pauses(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """Code setting the percent by hand pauses the rollout instead of being overwritten."""
        t0 = trio.current_time()
        await _start(world)
        world.flags.listeners.append(world.rollouts.flag_changed)
        world.flags.set_percent("new_shop", 3.0, reason="hotfix", source="code")
        rollout = world.rollouts.rollouts["new_shop"]
        assert rollout.state is State.PAUSED
        assert rollout.reason == "percent set to 3 by code (hotfix)"
        await _sleep_until(t0 + 99999)
        assert world.percent() == 3.0  # never overwritten
        assert world.record()[0]["state"] == "paused"
        assert world.audit[-1][0] == "rollout_pause"


class TestRollback:
    async def test_rule_firing_rolls_back_to_the_last_safe_percent(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """At step 3 (25 %) a named rule fires: 5 % at once, stopped, recorded, audited."""
        t0 = trio.current_time()
        await _start(world)
        await _sleep_until(t0 + 1300)
        assert world.percent() == 25.0
        world.rollouts.rule_fired("error_rate_high")
        assert world.percent() == 5.0  # at once, in the engine's call
        await trio.testing.wait_all_tasks_blocked()
        rollout = world.record()[0]
        assert (rollout["state"], rollout["percent"]) == ("rolled_back", 5.0)
        assert "error_rate_high" in rollout["reason"]
        action, arguments, _detail = world.audit[-1]
        assert (action, arguments["percent"], arguments["rule"]) == (
            "rollout_rollback",
            5.0,
            "error_rate_high",
        )
        await _sleep_until(t0 + 99999)
        assert world.percent() == 5.0  # stopped: never climbs again

    async def test_other_rules_do_nothing(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """A rule the rollout does not name leaves it running."""
        await _start(world)
        world.rollouts.rule_fired("lateness")
        assert world.rollouts.rollouts["new_shop"].state is State.RUNNING

    async def test_a_rule_still_firing_at_a_step_boundary(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """A named rule firing when the step is due rolls back instead of climbing."""
        t0 = trio.current_time()
        await _start(world)
        await _sleep_until(t0 + 500)
        world.firing.add("error_rate_high")  # firing, its transition not seen (a restart)
        await _sleep_until(t0 + 600)
        assert world.rollouts.rollouts["new_shop"].state is State.ROLLED_BACK
        assert world.percent() == 0.0

    async def test_a_paused_rollout_rolls_back_too(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """Paused, the flag is still exposed: a named rule still rolls it back."""
        await _start(world)
        await world.rollouts.pause("new_shop", by="bob")
        world.rollouts.rule_fired("error_rate_high")
        assert world.rollouts.rollouts["new_shop"].state is State.ROLLED_BACK


class TestRefusals:
    async def _unchanged(self, w: World, call: Any, kind: type[Exception], says: str) -> None:
        before = (w.percent(), w.percent("other"), (w.folder / FILE_NAME).read_bytes())
        with pytest.raises(kind, match=says):
            await call
        assert (w.percent(), w.percent("other"), (w.folder / FILE_NAME).read_bytes()) == before

    async def test_bad_input_changes_nothing(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """Unknown flag or rule, bad steps or duration: one line, flags and record as they were."""
        await _start(world, rollback_on=[])
        await world.rollouts.abort("new_shop", by="bob")
        r = world.rollouts
        cases = [
            (r.start("nope", steps="1,5", every="1m"), UnknownFlag, "no flag 'nope'"),
            (r.start("other", steps="10,60", every="1m"), RolloutInputError, r"percent now \(50\)"),
            (r.start("new_shop", steps="5,1", every="1m"), RolloutInputError, "must increase"),
            (r.start("new_shop", steps="1,500", every="1m"), RolloutInputError, "above 100"),
            (r.start("new_shop", steps="1,5", every="1x"), RolloutInputError, "--every"),
            (
                r.start("new_shop", steps="1,5", every="1m", rollback_on=["typo_rule"]),
                RolloutInputError,
                "no such alert rule",
            ),
            (r.pause("nope"), UnknownFlag, "no rollout"),
            (r.resume("new_shop"), RolloutRefused, "is aborted: nothing to resume"),
        ]
        for call, kind, says in cases:
            await self._unchanged(world, call, kind, says)

    async def test_one_active_rollout_per_flag(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """A second start while one is active is refused; after it finished, it replaces it."""
        await _start(world)
        await self._unchanged(world, _start(world), RolloutRefused, "abort it before")
        await world.rollouts.abort("new_shop", reason="restart", by="bob")
        await _start(world, steps="2,100")
        assert world.percent() == 2.0

    async def test_a_firing_rule_refuses_the_start(
        self, world: World, clock: trio.testing.MockClock
    ) -> None:
        """Starting while a named rule fires would roll back at once: refused."""
        world.firing.add("error_rate_high")
        with pytest.raises(RolloutRefused, match="'error_rate_high' is firing now"):
            await _start(world)
        assert world.percent() == 0.0

    async def test_not_recorded_not_done(
        self, tmp_path: Path, clock: trio.testing.MockClock
    ) -> None:
        """The record cannot be saved (state_dir is a file): start refused, nothing changed."""
        blocker = tmp_path / "state"
        blocker.write_text("a file where the folder should be")
        w = _world(blocker)
        with pytest.raises(RolloutRefused, match="could not be saved"):
            await _start(w)
        assert w.percent() == 0.0
        assert w.rollouts.rollouts == {}
        assert w.rollouts.save_failures == 1

    async def test_a_command_overtaken_by_a_rollback(
        self, world: World, clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rollback while a pause is being saved wins: the pause is refused, the record fixed."""
        await _start(world)

        async def slow_save(fn: Any, *args: Any) -> Any:
            world.rollouts.rule_fired("error_rate_high")  # meanwhile (from the engine)
            return fn(*args)

        monkeypatch.setattr(world.rollouts, "offload", slow_save)
        with pytest.raises(RolloutRefused, match="changed while this was being recorded"):
            await world.rollouts.pause("new_shop", by="bob")
        monkeypatch.setattr(world.rollouts, "offload", _inline)
        world.rollouts.rule_fired("nothing")  # (wakes nothing: the rollback already woke it)
        await trio.testing.wait_all_tasks_blocked()
        assert world.record()[0]["state"] == "rolled_back"
        assert world.percent() == 0.0


class TestRestore:
    async def test_a_restart_resumes_with_the_time_owed(
        self, tmp_path: Path, clock: trio.testing.MockClock
    ) -> None:
        """Killed 4 min into step 2 (checkpointed), the next process owes 6 min, flag at 5 %."""
        first = _world(tmp_path)
        closing = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.rollouts.serve, closing)
            t0 = trio.current_time()
            await _start(first)
            await _sleep_until(t0 + 600 + 240)
            nursery.cancel_scope.cancel()  # no goodbye save: as after a kill -9
        second = _world(tmp_path, _flags(new_shop=0.0, other=50.0))
        second.rollouts.restore()
        assert second.percent() == 5.0  # before the run: the first tick sees it
        closing = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.rollouts.serve, closing)
            t1 = trio.current_time()
            await _sleep_until(t1 + 359.9)
            assert second.percent() == 5.0
            await _sleep_until(t1 + 360)
            assert second.percent() == 25.0
            closing.set()

    async def test_a_rolled_back_rollout_stays_rolled_back(
        self, tmp_path: Path, clock: trio.testing.MockClock
    ) -> None:
        """After a restart the flag is at the safe percent and the reason is kept."""
        first = _world(tmp_path)
        await _start(first)
        first.rollouts.rule_fired("error_rate_high")
        assert await first.rollouts.save()
        second = _world(tmp_path, _flags(new_shop=30.0, other=50.0))
        second.rollouts.restore()
        assert second.percent() == 0.0
        view = second.rollouts.view()["rollouts"][0]
        assert view["state"] == "rolled_back"
        assert "error_rate_high" in view["reason"]

    def test_a_bad_file_is_moved_aside(self, tmp_path: Path) -> None:
        """A file that is not a record is kept aside, said in status, and nothing is restored."""
        (tmp_path / FILE_NAME).write_text("{not json")
        w = _world(tmp_path)
        w.rollouts.restore()
        assert w.rollouts.rollouts == {}
        assert "moved aside" in w.rollouts.view()["problems"][0]
        assert [p.name.startswith(f"{FILE_NAME}.bad-") for p in tmp_path.iterdir()] == [True]

    def test_a_flag_gone_from_the_config(self, tmp_path: Path) -> None:
        """A rollout of a flag the config no longer has is kept, not applied, and said."""
        record = {"flag": "gone", "steps": [1.0], "every": 60.0, "rollback_on": [],
                  "initial": 0.0, "state": "running", "step": 0, "safe": 0.0, "watched": 1.0,
                  "started_at": 0.0, "started_by": "a", "updated_at": 0.0, "reason": "",
                  "events": []}  # fmt: skip
        RolloutFile(tmp_path).save([record])
        w = _world(tmp_path)
        w.rollouts.restore()
        assert "no such flag" in w.rollouts.problems[0]
        assert w.changes == []
