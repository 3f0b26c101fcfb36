"""One staged rollout of one flag: its plan, its state and its transitions, with no I/O.

Pure, so every rule is tested with exact times (``tests/test_rollout_plan.py``):
each transition is given the monotonic time (``now``, what waiting is measured
on) and the wall time (``wall``, what the durable record and the operator read).

Time model. A step is *watched* for ``every`` seconds before the next one:
``watched`` holds the seconds watched so far and ``since`` the monotonic time
the current watch began (None while paused or finished). Only time the
supervisor was running counts: after a kill -9 and a restart the step goes on
with what it still owed, since nothing watched the flag's health while the
process was down. The durable copy stores ``watched`` as of its last save, so
a crash costs at most one checkpoint's worth of re-watching, never a skipped
step.

States: ``running`` and ``paused`` are *active* (the flag is at the current
step's percent, and a named rule firing rolls it back); ``completed`` (the
last step was watched in full), ``rolled_back`` (a rule fired: the flag is at
``safe``, the percent of the last step watched in full, or the percent the
flag had before the rollout) and ``aborted`` (an operator stopped it: the flag
is back at ``initial``) are final.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._core._config_fields import parse_duration

__all__ = [
    "EVERY_MAX",
    "EVERY_MIN",
    "MAX_EVENTS",
    "MAX_STEPS",
    "Rollout",
    "RolloutInputError",
    "State",
    "parse_every",
    "parse_steps",
]

#: More steps than this is a typo, not a plan.
MAX_STEPS: Final = 20
#: Shortest and longest watch per step (seconds).
EVERY_MIN: Final = 1.0
EVERY_MAX: Final = 30 * 86400.0
#: Events kept per rollout (the oldest go first): the file stays small.
MAX_EVENTS: Final = 64
_STEP: Final = re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?", re.ASCII)
#: A flag's or rule's name as it may appear in a path or a file.
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", re.ASCII)


class RolloutInputError(ValueError):
    """Raised for a rollout request that cannot be carried out as given (a 400, exit 2).

    The message is one line naming the value at fault.
    """


class State(enum.Enum):
    """Where a rollout is."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        """Still moving (or held): its flag follows its steps, and its rules can roll it back."""
        return self in (State.RUNNING, State.PAUSED)


def check_name(kind: str, name: object) -> str:
    """``name`` if it is a plausible flag or rule name.

    Raises:
        RolloutInputError: not a string of letters, digits, ``_.-`` (128 at most).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name)[:40]
        raise RolloutInputError(f"{kind} {shown} is not a {kind} name")
    return name


def parse_steps(text: object, *, above: float = 0.0) -> tuple[float, ...]:
    """The percents of ``"1,5,25,100"``: increasing, each in (``above``, 100].

    Args:
        above: the flag's percent now; the first step must raise it.

    Raises:
        RolloutInputError: not such a list, not increasing, above 100, or too many.
    """
    if not isinstance(text, str) or not text.strip():
        raise RolloutInputError("--steps must be percents such as 1,5,25,100")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > MAX_STEPS:
        raise RolloutInputError(f"--steps: at most {MAX_STEPS} steps, got {len(parts)}")
    steps: list[float] = []
    for part in parts:
        if not _STEP.fullmatch(part):
            raise RolloutInputError(
                f"--steps: {part[:20]!r} is not a percent (0-100, two decimals at most)"
            )
        value = float(part)
        if value > 100:
            raise RolloutInputError(f"--steps: {part} is above 100")
        if value <= 0:
            raise RolloutInputError("--steps: a step must be above 0")
        if steps and value <= steps[-1]:
            raise RolloutInputError(
                f"--steps: {part} comes after {steps[-1]:g}: they must increase"
            )
        steps.append(value)
    if steps[0] <= above:
        raise RolloutInputError(
            f"--steps: the first step ({steps[0]:g}) must be above the flag's percent now "
            f"({above:g}): a rollout only raises it"
        )
    return tuple(steps)


def parse_every(text: object) -> float:
    """Seconds in ``"10m"`` (each step is watched this long), from 1 s to 30 days.

    Raises:
        RolloutInputError: not a duration, or out of bounds.
    """
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise RolloutInputError(f"--every: {exc}") from None
    if not EVERY_MIN <= seconds <= EVERY_MAX:
        raise RolloutInputError(f"--every: {text!r} must be from 1s to 30d")
    return seconds


def _event(wall: float, what: str, **more: Any) -> dict[str, Any]:
    return {"at": wall, "event": what, **more}


@attrs.define(eq=False, kw_only=True)
class Rollout:
    """The plan and the state of one flag's rollout; see the module docstring."""

    flag: str
    steps: tuple[float, ...]
    every: float
    rollback_on: tuple[str, ...]
    #: The flag's percent before the rollout (where ``abort`` puts it back).
    initial: float
    state: State = State.RUNNING
    #: Index of the current step in ``steps``.
    step: int = 0
    #: The percent of the last step watched in full without a named rule firing.
    safe: float = 0.0
    watched: float = 0.0
    since: float | None = None
    started_at: float = 0.0
    started_by: str = ""
    updated_at: float = 0.0
    #: Why it is paused or finished ("" while running).
    reason: str = ""
    events: list[dict[str, Any]] = attrs.field(factory=list)
    #: Counts changes, so a command saved meanwhile can tell it was overtaken (not recorded).
    version: int = 0

    @classmethod
    def begin(
        cls,
        *,
        flag: str,
        steps: tuple[float, ...],
        every: float,
        rollback_on: Iterable[str],
        initial: float,
        now: float,
        wall: float,
        by: str,
        reason: str,
    ) -> Rollout:
        """A rollout at its first step, watched from ``now``."""
        rollout = cls(
            flag=flag,
            steps=steps,
            every=every,
            rollback_on=tuple(rollback_on),
            initial=initial,
            safe=initial,
            since=now,
            started_at=wall,
            started_by=by,
            updated_at=wall,
        )
        rollout._note(wall, "started", percent=steps[0], by=by, reason=reason)
        return rollout

    @property
    def percent(self) -> float:
        """The percent this rollout holds its flag at."""
        if self.state is State.ROLLED_BACK:
            return self.safe
        if self.state is State.ABORTED:
            return self.initial
        return self.steps[self.step]

    def watched_at(self, now: float) -> float:
        """Seconds of the current step watched by ``now``."""
        return self.watched + (0.0 if self.since is None else max(0.0, now - self.since))

    def due(self) -> float | None:
        """The monotonic time the current step has been watched in full (None unless running)."""
        if self.state is not State.RUNNING or self.since is None:
            return None
        return self.since + (self.every - self.watched)

    def advance(self, now: float, wall: float) -> bool:
        """Move on if the current step was watched in full by ``now``; True if it did.

        The last step watched in full completes the rollout.
        """
        if self.state is not State.RUNNING or self.watched_at(now) < self.every:
            return False
        self.safe = self.steps[self.step]
        if self.step + 1 == len(self.steps):
            self._finish(State.COMPLETED, now, wall, "every step was watched in full")
            return True
        self.step += 1
        self.watched, self.since = 0.0, now
        self._note(wall, "step", percent=self.steps[self.step])
        return True

    def pause(self, now: float, wall: float, *, by: str, reason: str) -> None:
        """Hold the current percent; the step's watch stops until :meth:`resume`."""
        self.watched, self.since = min(self.every, self.watched_at(now)), None
        self.state = State.PAUSED
        self.reason = reason or f"paused by {by}"
        self._note(wall, "paused", percent=self.percent, by=by, reason=reason)

    def resume(self, now: float, wall: float, *, by: str, reason: str) -> None:
        """Watch the current step again for what it still owes."""
        self.state, self.since, self.reason = State.RUNNING, now, ""
        self._note(wall, "resumed", percent=self.percent, by=by, reason=reason)

    def abort(self, now: float, wall: float, *, by: str, reason: str) -> None:
        """Stop; the flag goes back to where it was before the rollout."""
        self._finish(State.ABORTED, now, wall, reason or f"aborted by {by}", by=by)

    def roll_back(self, now: float, wall: float, *, rule: str) -> None:
        """A named rule fired during a step: back to the last safe percent, stopped."""
        at = self.steps[self.step]
        self._finish(
            State.ROLLED_BACK,
            now,
            wall,
            f"alert rule {rule!r} fired at step {self.step + 1} ({at:g} %); "
            f"back to the last safe percent ({self.safe:g} %)",
            rule=rule,
        )

    def _finish(self, state: State, now: float, wall: float, reason: str, **more: Any) -> None:
        self.watched, self.since = min(self.every, self.watched_at(now)), None
        self.state, self.reason = state, reason
        self._note(wall, state.value, percent=self.percent, reason=reason, **more)

    def _note(self, wall: float, what: str, **more: Any) -> None:
        self.version += 1
        self.updated_at = wall
        self.events.append(_event(wall, what, **more))
        del self.events[:-MAX_EVENTS]

    # ------------------------------------------------------------ durable form

    def as_dict(self, now: float) -> dict[str, Any]:
        """The JSON of this rollout as of ``now`` (the file's record and the API's view)."""
        return {
            "flag": self.flag,
            "state": self.state.value,
            "percent": self.percent,
            "steps": list(self.steps),
            "step": self.step,
            "every": self.every,
            "rollback_on": list(self.rollback_on),
            "initial": self.initial,
            "safe": self.safe,
            "watched": self.watched_at(now),
            "started_at": self.started_at,
            "started_by": self.started_by,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "events": list(self.events),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, now: float) -> Rollout:
        """The rollout a file recorded, running again from ``now`` if it was running.

        Raises:
            ValueError: the record is not one :meth:`as_dict` could have written.
        """
        try:
            steps = tuple(float(s) for s in data["steps"])
            rollout = cls(
                flag=check_name("flag", data["flag"]),
                steps=steps,
                every=float(data["every"]),
                rollback_on=tuple(check_name("rule", r) for r in data["rollback_on"]),
                initial=float(data["initial"]),
                state=State(data["state"]),
                step=int(data["step"]),
                safe=float(data["safe"]),
                watched=float(data["watched"]),
                started_at=float(data["started_at"]),
                started_by=str(data["started_by"]),
                updated_at=float(data["updated_at"]),
                reason=str(data["reason"]),
                events=[dict(e) for e in data["events"]][-MAX_EVENTS:],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a rollout record ({type(exc).__name__}: {exc})") from None
        numbers = (*steps, rollout.every, rollout.initial, rollout.safe, rollout.watched)
        if (
            not steps
            or not all(math.isfinite(n) for n in numbers)
            or not 0 <= rollout.step < len(steps)
            or list(steps) != sorted(set(steps))
            or not 0 <= rollout.initial <= 100
            or not 0 <= rollout.safe <= 100
            or not EVERY_MIN <= rollout.every <= EVERY_MAX
        ):
            raise ValueError("not a rollout record (values out of range)")
        rollout.watched = min(max(rollout.watched, 0.0), rollout.every)
        if rollout.state is State.RUNNING:
            rollout.since = now
        return rollout
