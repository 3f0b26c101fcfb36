"""The rollouts of one supervisor: operator commands, automatic steps and rollbacks, the record.

Everything here runs in the supervisor's trio run, off the tick: the API
handlers call :meth:`Rollouts.start` (and pause, resume, abort), the alert
engine calls :meth:`Rollouts.rule_fired` when a rule starts firing, and the
service (:meth:`Rollouts.serve`) sleeps until the next step is due, moves
flags on, and saves the record. A flag's percent changes only through the
narrow :class:`FlagControl` (``sup.flags``), which the tick reads.

Order of effects. An operator's command is recorded durably *before* it
takes effect, and refused (nothing changed) if it cannot be: the command is
applied to a copy, the copy is saved, then swapped in. A rollback is the
opposite: the flag goes back to its safe percent at once, in the alert
engine's call, and the record, the audit line and the notification follow
within milliseconds from the service; a crash in between leaves the record
at the step that failed, and the rule fires again after the restart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol

import attrs
import trio

from .._core._control import Refused, Unknown
from .._logging import get_logger
from ._file import RolloutFile
from ._plan import Rollout, RolloutInputError, State, check_name, parse_every, parse_steps

__all__ = [
    "CHECKPOINT_EVERY",
    "AuditSink",
    "FlagControl",
    "RolloutRefused",
    "Rollouts",
    "UnknownFlag",
]

#: Seconds between saves of a running rollout's watched time, at least, and
#: as a share of the shortest step: a crash costs at most that much
#: re-watching of the current step (30 s of a 10 min step), never a skipped one.
CHECKPOINT_EVERY: Final = 5.0
CHECKPOINT_SHARE: Final = 0.05
#: Seconds between retries of a failed save.
RETRY_SAVE: Final = 1.0
#: Audit lines waiting for the service; past this the oldest are dropped (counted).
MAX_PENDING_AUDIT: Final = 256

#: ``audit(action, arguments, detail) -> written``: blocking, called from a worker thread.
AuditSink = Callable[[str, Mapping[str, Any], str], bool]


class FlagControl(Protocol):
    """What a rollout needs of the supervisor's flags (``sup.flags``)."""

    def names(self) -> Iterable[str]:
        """Every configured flag."""
        ...

    def percent(self, name: str) -> float:
        """The share of players a flag is on for now (0-100)."""
        ...

    def set_percent(self, name: str, pct: float, *, reason: str, source: str = ...) -> None:
        """Change a flag's share of players (``source``: who, for its listeners)."""
        ...


class RolloutRefused(Refused):
    """Raised for a command that does not fit the rollout's state now (the API's 409)."""


class UnknownFlag(Unknown):
    """Raised for a flag the config does not define, or one with no rollout (the API's 404)."""


def _verb(action: str) -> str:
    return {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]


@attrs.define(eq=False, kw_only=True)
class Rollouts:
    """Every flag's rollout, what moves them, and their durable record."""

    flags: FlagControl
    file: RolloutFile
    #: Alert rules a rollout may name, and the ones firing now.
    rules: frozenset[str] = frozenset()
    firing: Callable[[], Iterable[str]] = tuple
    audit: AuditSink | None = None
    #: Told of each rollback (an incident for the report, an alert to Alertmanager).
    on_rollback: list[Callable[[Rollout], None]] = attrs.field(factory=list)
    clock: Callable[[], float] = trio.current_time
    wall: Callable[[], float] = time.time
    #: Runs the blocking saves and audit writes off the trio thread (tests run them inline,
    #: so a MockClock does not jump while a worker thread holds the run).
    offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync
    rollouts: dict[str, Rollout] = attrs.field(factory=dict)
    #: Problems met reading the record or restoring it (shown in status).
    problems: list[str] = attrs.field(factory=list)
    saves: int = 0
    save_failures: int = 0
    audit_dropped: int = 0
    _dirty: bool = attrs.field(default=False, init=False)
    _saved_at: float = attrs.field(default=0.0, init=False)
    _pending: list[tuple[str, dict[str, Any], str]] = attrs.field(factory=list, init=False)
    _wake: trio.Event = attrs.field(factory=trio.Event, init=False)
    _lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    _log: Any = attrs.field(factory=get_logger, init=False)

    # ------------------------------------------------------------ restore

    def restore(self) -> None:
        """Read the record and put each flag back where its rollout holds it.

        Called once before the run starts, so the first tick already sees
        the restored percents. Running rollouts are watched again from the
        service's start (:meth:`serve`).
        """
        records, problem = self.file.load()
        if problem is not None:
            self._problem("rollout.record_unreadable", problem)
        known = set(self.flags.names())
        for record in records:
            try:
                rollout = Rollout.from_dict(record, now=0.0)
            except ValueError as exc:
                self._problem("rollout.record_skipped", f"{self.file.path}: {exc}")
                continue
            rollout.since = None  # watched again from serve()
            self.rollouts[rollout.flag] = rollout
            if rollout.flag not in known:
                self._problem(
                    "rollout.flag_gone",
                    f"rollout of {rollout.flag!r}: no such flag in the config any more",
                )
                continue
            self._set(
                rollout.flag, rollout.percent, reason=f"rollout restored ({rollout.state.value})"
            )
            self._log.info(
                "rollout.restored",
                flag=rollout.flag,
                state=rollout.state.value,
                percent=rollout.percent,
                step=rollout.step + 1,
                watched=round(rollout.watched, 3),
            )

    def _set(self, flag: str, pct: float, *, reason: str) -> None:
        self.flags.set_percent(flag, pct, reason=reason, source="rollout")

    def _problem(self, event: str, text: str) -> None:
        self.problems.append(text)
        del self.problems[:-16]
        self._log.warning(event, detail=text)

    # ------------------------------------------------------------ operator commands

    async def start(
        self,
        flag: str,
        *,
        steps: object,
        every: object,
        rollback_on: Iterable[object] = (),
        reason: str = "",
        by: str = "",
    ) -> dict[str, Any]:
        """Start rolling ``flag`` out: its first step now, the next every ``every``.

        Raises:
            UnknownFlag: no such flag.
            RolloutInputError: bad steps, duration or rule name.
            RolloutRefused: a rollout of the flag is active, a named rule is
                firing now, or the record could not be saved.
        """
        async with self._lock:
            name = self._known_flag(flag)
            previous = self.rollouts.get(name)
            if previous is not None and previous.state.active:
                raise RolloutRefused(
                    f"the rollout of {name!r} is {previous.state.value}: "
                    "abort it before starting another"
                )
            plan_steps = parse_steps(steps, above=self.flags.percent(name))
            seconds = parse_every(every)
            rules = self._rules(rollback_on)
            firing = sorted(set(rules) & set(self.firing()))
            if firing:
                raise RolloutRefused(
                    f"alert rule {firing[0]!r} is firing now: start once it has resolved"
                )
            now = self.clock()
            rollout = Rollout.begin(
                flag=name,
                steps=plan_steps,
                every=seconds,
                rollback_on=rules,
                initial=self.flags.percent(name),
                now=now,
                wall=self.wall(),
                by=by,
                reason=reason,
            )
            await self._commit(name, previous, rollout, f"rollout started by {by}")
            return {"detail": f"rollout of {name!r} started at {rollout.percent:g} %",
                    "rollout": rollout.as_dict(now)}  # fmt: skip

    async def pause(self, flag: str, *, reason: str = "", by: str = "") -> dict[str, Any]:
        """Hold ``flag`` at its current step (rules still roll it back)."""
        return await self._command("pause", flag, reason=reason, by=by)

    async def resume(self, flag: str, *, reason: str = "", by: str = "") -> dict[str, Any]:
        """Watch a paused rollout's current step again, for what it still owes."""
        return await self._command("resume", flag, reason=reason, by=by)

    async def abort(self, flag: str, *, reason: str = "", by: str = "") -> dict[str, Any]:
        """Stop the rollout; ``flag`` goes back to its percent before the rollout."""
        return await self._command("abort", flag, reason=reason, by=by)

    async def _command(self, action: str, flag: str, *, reason: str, by: str) -> dict[str, Any]:
        """Raises: UnknownFlag, RolloutRefused (wrong state, or not recorded)."""
        async with self._lock:
            current = self.rollouts.get(flag) if isinstance(flag, str) else None
            if current is None:
                raise UnknownFlag(f"no rollout of flag {str(flag)[:64]!r}")
            allowed = {"pause": (State.RUNNING,), "resume": (State.PAUSED,),
                       "abort": (State.RUNNING, State.PAUSED)}[action]  # fmt: skip
            if current.state not in allowed:
                raise RolloutRefused(
                    f"the rollout of {flag!r} is {current.state.value}: nothing to {action}"
                )
            copy = attrs.evolve(current, events=list(current.events))
            now, wall = self.clock(), self.wall()
            getattr(copy, action)(now, wall, by=by, reason=reason)
            await self._commit(flag, current, copy, f"rollout {_verb(action)} by {by}")
            return {"detail": f"rollout of {flag!r} {_verb(action)} at {copy.percent:g} %",
                    "rollout": copy.as_dict(now)}  # fmt: skip

    def _known_flag(self, flag: object) -> str:
        name = check_name("flag", flag) if isinstance(flag, str) and flag else flag
        if not isinstance(name, str) or name not in set(self.flags.names()):
            known = ", ".join(sorted(self.flags.names())) or "none"
            raise UnknownFlag(f"no flag {str(flag)[:64]!r} in the config (flags: {known})")
        return name

    def _rules(self, names: Iterable[object]) -> tuple[str, ...]:
        rules: list[str] = []
        for raw in names:
            name = check_name("rule", raw)
            if name not in self.rules:
                known = ", ".join(sorted(self.rules)) or "none: add [[alerts.rules]]"
                raise RolloutInputError(
                    f"--rollback-on {name!r}: no such alert rule (rules: {known})"
                )
            if name not in rules:
                rules.append(name)
        return tuple(rules)

    async def _commit(self, flag: str, before: Rollout | None, after: Rollout, why: str) -> None:
        """Save the record with ``after`` in place of ``before``, then make it so.

        Raises:
            RolloutRefused: not saved (nothing changed), or the rollout moved
                (a rollback) while it was being saved.
        """
        version = None if before is None else before.version
        records = [r.as_dict(self.clock()) for f, r in self.rollouts.items() if f != flag]
        records.append(after.as_dict(self.clock()))
        try:
            await self.offload(self.file.save, records)
        except Exception as exc:
            self.save_failures += 1
            self._log.error("rollout.save_failed", flag=flag, error=f"{type(exc).__name__}: {exc}")
            raise RolloutRefused(
                f"the rollout record could not be saved ({type(exc).__name__}): nothing changed"
            ) from None
        self.saves += 1
        if self.rollouts.get(flag) is not before or (
            before is not None and before.version != version
        ):
            # Rolled back while the save was in flight: the file holds
            # `after`, so the service writes the truth again.
            self._dirty = True
            self._wake.set()
            raise RolloutRefused(
                f"the rollout of {flag!r} changed while this was being recorded "
                f"(now {self.rollouts[flag].state.value}): nothing changed"
            )
        self.rollouts[flag] = after
        self._set(flag, after.percent, reason=why)
        self._log.info(
            "rollout.changed", flag=flag, state=after.state.value, percent=after.percent, why=why
        )
        self._wake.set()

    # ------------------------------------------------------------ automatic moves

    def rule_fired(self, rule: str) -> None:
        """Alert rule ``rule`` started firing: roll back every active rollout naming it.

        Called by the alert engine, between ticks; the flag moves at once,
        the record and the audit line follow from the service.
        """
        for rollout in list(self.rollouts.values()):
            if rollout.state.active and rule in rollout.rollback_on:
                try:
                    self._roll_back(rollout, rule)
                except Exception:  # never break the alert engine; the service retries
                    self._log.exception("rollout.rollback_failed", flag=rollout.flag, rule=rule)
                    self._wake.set()

    def _roll_back(self, rollout: Rollout, rule: str) -> None:
        rollout.roll_back(self.clock(), self.wall(), rule=rule)
        self._set(rollout.flag, rollout.percent, reason=rollout.reason)
        self._log.warning(
            "rollout.rolled_back",
            flag=rollout.flag,
            rule=rule,
            percent=rollout.percent,
            detail=rollout.reason,
        )
        self._queue_audit("rollout_rollback", rollout, rollout.reason, rule=rule)
        for listener in self.on_rollback:
            try:
                listener(rollout)
            except Exception:  # a notification lost, never a rollback
                self._log.exception("rollout.notify_failed", flag=rollout.flag)
        self._dirty = True
        self._wake.set()

    def flag_changed(self, change: Any) -> None:
        """A flag's percent was set (a ``FlagChange``): by someone else, its running rollout pauses.

        Climbing on would overwrite what they set; paused, it waits for an
        operator's resume (or abort), and a named rule firing still rolls it back.
        """
        source = getattr(change, "source", "rollout")
        rollout = self.rollouts.get(getattr(change, "flag", None))  # type: ignore[arg-type]
        if source == "rollout" or rollout is None or rollout.state is not State.RUNNING:
            return
        reason = f"percent set to {change.new:g} by {source} ({change.reason})"
        rollout.pause(self.clock(), self.wall(), by=str(source), reason=reason)
        self._log.warning("rollout.paused", flag=rollout.flag, detail=reason)
        self._queue_audit("rollout_pause", rollout, reason)
        self._dirty = True
        self._wake.set()

    def _queue_audit(self, action: str, rollout: Rollout, detail: str, **more: Any) -> None:
        if self.audit is None:
            return
        arguments = {"flag": rollout.flag, "percent": rollout.percent, **more}
        self._pending.append((action, arguments, detail))
        if len(self._pending) > MAX_PENDING_AUDIT:
            del self._pending[0]
            self.audit_dropped += 1

    def step(self) -> None:
        """Roll back on rules firing now, then move every rollout whose step is due."""
        firing = set(self.firing())
        now, wall = self.clock(), self.wall()
        for rollout in list(self.rollouts.values()):
            if not rollout.state.active:
                continue
            fired = sorted(firing & set(rollout.rollback_on))
            if fired:
                self._roll_back(rollout, fired[0])
                continue
            if not rollout.advance(now, wall):
                continue
            self._set(rollout.flag, rollout.percent, reason=f"rollout {rollout.state.value}")
            if rollout.state is State.COMPLETED:
                detail = f"completed at {rollout.percent:g} %"
                self._queue_audit("rollout_complete", rollout, detail)
            else:
                detail = f"step {rollout.step + 1} of {len(rollout.steps)}: {rollout.percent:g} %"
                self._queue_audit("rollout_step", rollout, detail)
            self._log.info("rollout.step", flag=rollout.flag, detail=detail)
            self._dirty = True

    def next_wake(self) -> float:
        """The monotonic time the service must look again (a due step or a checkpoint)."""
        due = [d for r in self.rollouts.values() if (d := r.due()) is not None]
        if not due:
            return self.clock() + 3600.0
        return min(*due, self._saved_at + self.checkpoint_every())

    def checkpoint_every(self) -> float:
        """Seconds between saves of the watched time while a rollout is running."""
        steps = [r.every for r in self.rollouts.values() if r.state is State.RUNNING]
        return max(CHECKPOINT_EVERY, CHECKPOINT_SHARE * min(steps, default=0.0))

    async def save(self) -> bool:
        """Write the record (and any audit lines waiting); False if the record could not be."""
        async with self._lock:
            now = self.clock()
            self._dirty = False
            records = [r.as_dict(now) for r in self.rollouts.values()]
            try:
                await self.offload(self.file.save, records)
            except Exception as exc:
                self._dirty = True
                self.save_failures += 1
                self._log.error("rollout.save_failed", error=f"{type(exc).__name__}: {exc}")
                return False
            self.saves += 1
            self._saved_at = now
        pending, self._pending = self._pending, []
        if pending and self.audit is not None:
            audit = self.audit
            await self.offload(lambda: [audit(*line) for line in pending])
        return True

    async def serve(self, closing: trio.Event) -> None:
        """Move rollouts on until ``closing`` is set; save once more on the way out."""
        now = self.clock()
        for rollout in self.rollouts.values():
            if rollout.state is State.RUNNING and rollout.since is None:
                rollout.since = now
        self._saved_at = now
        try:
            while not closing.is_set():
                # A fresh event before looking: a wake-up from now on is never lost.
                self._wake = trio.Event()
                self.step()
                running = any(r.state is State.RUNNING for r in self.rollouts.values())
                checkpoint = running and self.clock() - self._saved_at >= self.checkpoint_every()
                if (self._dirty or checkpoint) and not await self.save():
                    await trio.sleep(RETRY_SAVE)
                    continue
                with trio.move_on_at(self.next_wake()):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_set_when, closing, self._wake)
                        await self._wake.wait()
                        nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await self.save()

    # ------------------------------------------------------------ views

    def view(self) -> dict[str, Any]:
        """``GET /v1/rollouts`` and the ``rollouts`` section of status."""
        try:
            now = self.clock()
        except RuntimeError:  # outside the run (a summary at exit)
            now = 0.0
        rollouts = []
        for rollout in self.rollouts.values():
            item = rollout.as_dict(now)
            due = rollout.due()
            item["next_step_in"] = None if due is None else max(0.0, due - now)
            rollouts.append(item)
        return {
            "rollouts": rollouts,
            "problems": list(self.problems),
            "saves": self.saves,
            "save_failures": self.save_failures,
            "audit_dropped": self.audit_dropped,
        }


async def _set_when(event: trio.Event, then: trio.Event) -> None:
    await event.wait()
    then.set()
