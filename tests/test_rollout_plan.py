"""One rollout's rules with exact times: steps, watching, pause, rollback, abort, the record."""

from __future__ import annotations

import pytest

from supervisor._rollout._plan import (
    MAX_EVENTS,
    MAX_STEPS,
    Rollout,
    RolloutInputError,
    State,
    check_name,
    parse_every,
    parse_steps,
)


def _begin(**kw: object) -> Rollout:
    args: dict[str, object] = {
        "flag": "new_shop",
        "steps": (1.0, 5.0, 25.0, 100.0),
        "every": 600.0,
        "rollback_on": ("error_rate_high",),
        "initial": 0.0,
        "now": 1000.0,
        "wall": 1.7e9,
        "by": "alice",
        "reason": "launch",
    }
    args.update(kw)
    return Rollout.begin(**args)  # type: ignore[arg-type]


class TestInput:
    def test_steps_parse(self) -> None:
        """Increasing percents up to 100, two decimals at most."""
        assert parse_steps("1,5,25,100") == (1.0, 5.0, 25.0, 100.0)
        assert parse_steps(" 0.5, 2.25 ,100") == (0.5, 2.25, 100.0)

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("5,1", "must increase"),
            ("1,1", "must increase"),
            ("1,101", "above 100"),
            ("0,5", "above 0"),
            ("1,x", "'x' is not a percent"),
            ("1,-5", "'-5' is not a percent"),
            ("1,nan", "'nan' is not a percent"),
            ("1.001", "not a percent"),
            ("", "percents such as"),
            ("1,,5", "'' is not a percent"),
            (",".join(str(i) for i in range(1, MAX_STEPS + 2)), "at most"),
        ],
    )
    def test_bad_steps(self, text: str, says: str) -> None:
        """Each bad list is one line naming what is wrong."""
        with pytest.raises(RolloutInputError, match=says) as info:
            parse_steps(text)
        assert "\n" not in str(info.value)

    def test_first_step_must_raise_the_flag(self) -> None:
        """A rollout only raises a percent: its first step is above the flag's percent now."""
        with pytest.raises(RolloutInputError, match=r"above the flag's percent now \(10\)"):
            parse_steps("5,25,100", above=10)
        assert parse_steps("25,100", above=10) == (25.0, 100.0)

    def test_every(self) -> None:
        """A duration from 1 s to 30 days."""
        assert parse_every("10m") == 600.0
        assert parse_every("1s") == 1.0
        for bad in ("0s", "500ms", "31d", "ten", "", "10", "1h x"):
            with pytest.raises(RolloutInputError, match="--every"):
                parse_every(bad)

    def test_names(self) -> None:
        """A flag or rule name is short and plain: it goes in a path, a file, a log line."""
        assert check_name("flag", "new_shop") == "new_shop"
        for bad in ("", "a/b", "x" * 200, "new shop", "é", 3, None, "../x"):
            with pytest.raises(RolloutInputError, match="is not a flag name"):
                check_name("flag", bad)


class TestSteps:
    def test_climbs_one_step_per_period(self) -> None:
        """Each step is watched `every` seconds, exactly, before the next one."""
        r = _begin()
        assert (r.state, r.percent, r.due()) == (State.RUNNING, 1.0, 1600.0)
        assert not r.advance(1599.999, 0)
        assert r.advance(1600.0, 0)
        assert (r.step, r.percent, r.safe, r.due()) == (1, 5.0, 1.0, 2200.0)
        assert r.advance(2200.0, 0)
        assert r.advance(2800.0, 0)
        assert (r.percent, r.safe) == (100.0, 25.0)
        assert r.state is State.RUNNING  # the last step is watched too
        assert r.advance(3400.0, 0)
        assert (r.state, r.percent, r.safe, r.due()) == (State.COMPLETED, 100.0, 100.0, None)
        assert not r.advance(9999.0, 0)

    def test_a_late_look_moves_one_step_only(self) -> None:
        """Looking long after a step was due moves one step, and the next is watched in full."""
        r = _begin()
        assert r.advance(5000.0, 0)
        assert (r.percent, r.due()) == (5.0, 5600.0)

    def test_pause_holds_the_time_owed(self) -> None:
        """A paused step's watch stops; resumed, it owes what it owed."""
        r = _begin()
        r.pause(1400.0, 0, by="bob", reason="weekend")
        assert (r.state, r.due(), r.watched) == (State.PAUSED, None, 400.0)
        assert not r.advance(99999.0, 0)
        r.resume(5000.0, 0, by="bob", reason="")
        assert r.due() == 5200.0
        assert r.advance(5200.0, 0)
        assert r.percent == 5.0

    def test_rollback_goes_to_the_last_step_watched_in_full(self) -> None:
        """At step 3 (25 %) the flag returns to step 2's percent (5 %), and the reason says so."""
        r = _begin()
        r.advance(1600.0, 0)
        r.advance(2200.0, 0)
        r.roll_back(2300.0, 0, rule="error_rate_high")
        assert (r.state, r.percent) == (State.ROLLED_BACK, 5.0)
        assert "error_rate_high" in r.reason
        assert "step 3 (25 %)" in r.reason
        assert "last safe percent (5 %)" in r.reason

    def test_rollback_at_the_first_step_goes_to_the_start(self) -> None:
        """No step watched in full yet: back to the percent before the rollout."""
        r = _begin(initial=0.5, steps=(1.0, 100.0))
        r.roll_back(1001.0, 0, rule="error_rate_high")
        assert r.percent == 0.5

    def test_abort_goes_to_the_start(self) -> None:
        """Abort puts the flag back where it was before the rollout."""
        r = _begin(initial=2.0, steps=(5.0, 50.0))
        r.advance(1600.0, 0)
        r.abort(1700.0, 0, by="bob", reason="wrong build")
        assert (r.state, r.percent, r.reason) == (State.ABORTED, 2.0, "wrong build")

    def test_events_are_bounded(self) -> None:
        """A rollout paused and resumed forever keeps MAX_EVENTS events."""
        r = _begin()
        for i in range(200):
            r.pause(1000.0 + i, 0, by="b", reason="")
            r.resume(1000.0 + i, 0, by="b", reason="")
        assert len(r.events) == MAX_EVENTS
        assert r.events[-1]["event"] == "resumed"


class TestRecord:
    def test_round_trip_keeps_the_time_owed(self) -> None:
        """Read back after a restart, a running step owes what it owed at the save."""
        r = _begin()
        r.advance(1600.0, 0)
        record = r.as_dict(1900.0)  # 300 s of step 2 watched
        back = Rollout.from_dict(record, now=50.0)  # a new process: a new monotonic clock
        assert (back.state, back.step, back.percent, back.safe) == (State.RUNNING, 1, 5.0, 1.0)
        assert back.due() == 50.0 + 300.0
        assert back.events == r.events

    def test_finished_rollouts_stay_finished(self) -> None:
        """A rolled-back rollout read back is still rolled back, with its reason."""
        r = _begin()
        r.roll_back(1100.0, 0, rule="error_rate_high")
        back = Rollout.from_dict(r.as_dict(1100.0), now=0.0)
        assert (back.state, back.reason, back.due()) == (State.ROLLED_BACK, r.reason, None)

    @pytest.mark.parametrize(
        "change",
        [
            {"steps": [5, 1]},
            {"steps": []},
            {"step": 7},
            {"every": 0.0},
            {"safe": 101},
            {"state": "exploded"},
            {"flag": "../../etc"},
            {"rollback_on": [3]},
            {"watched": "nan"},
            {"events": 5},
        ],
    )
    def test_a_bad_record_is_refused(self, change: dict[str, object]) -> None:
        """A hand-edited record that could not have been written is a ValueError, one line."""
        record = {**_begin().as_dict(1000.0), **change}
        with pytest.raises(ValueError, match="not a rollout record"):
            Rollout.from_dict(record, now=0.0)

    def test_a_missing_key_is_refused(self) -> None:
        """A record missing a key is refused, naming it."""
        record = _begin().as_dict(1000.0)
        del record["initial"]
        with pytest.raises(ValueError, match="initial"):
            Rollout.from_dict(record, now=0.0)
