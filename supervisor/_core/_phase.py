"""Phases of a supervisor's life."""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable

import attrs

from .._errors import PhaseError
from ._control import LifecycleEvent


class Phase(enum.StrEnum):
    """The phase a supervisor is in; values are the names used in config and the CLI."""

    DEVELOPMENT = "development"
    TESTING = "testing"
    PRODUCTION = "production"
    EMERGENCY_SHUTDOWN = "emergency_shutdown"

    @classmethod
    def parse(cls, text: str) -> Phase:
        """Return the phase named ``text`` (case-insensitive).

        Raises:
            ValueError: ``text`` names no phase; the message lists the valid names.
        """
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown phase {text!r} (expected one of: {names})") from None


#: Moves allowed by ``supervisor phase``. EMERGENCY_SHUTDOWN is entered by its
#: triggers, from any phase, and left only by ``restart`` (back to the phase
#: it interrupted).
ALLOWED_MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.DEVELOPMENT: frozenset({Phase.TESTING, Phase.PRODUCTION}),
    Phase.TESTING: frozenset({Phase.DEVELOPMENT, Phase.PRODUCTION}),
    Phase.PRODUCTION: frozenset({Phase.TESTING, Phase.DEVELOPMENT}),
    Phase.EMERGENCY_SHUTDOWN: frozenset(),
}


#: Why leaving DEVELOPMENT without tokens is refused, and how to fix it, in one line.
NO_TOKENS = (
    "refused: {target} requires an API token and the config has no [api] tokens, so every "
    'later command would be refused; add one ([[api.tokens]] name = "ops", role = "operator", '
    "sha256 = the output of `printf %s TOKEN | sha256sum`) and restart, or pass --force "
    "(recorded)"
)


class PhaseMachine:
    """The phase, the moves allowed from it, and the record of every move.

    Pure: the caller passes the time, tick, caller and reason of each move,
    and decides about the readiness gate; the machine checks the rules and
    keeps the history.
    """

    def __init__(self, initial: Phase, *, history: int = 100) -> None:
        if initial is Phase.EMERGENCY_SHUTDOWN:
            raise ValueError("a supervisor cannot start in emergency_shutdown")
        self.phase: Phase = initial
        #: The phase an emergency interrupted; ``restart`` returns to it.
        self.interrupted: Phase | None = None
        self.history: collections.deque[LifecycleEvent] = collections.deque(maxlen=history)

    def check(
        self, target: Phase, *, force: bool = False, reason: str = "", tokens: int | None = None
    ) -> None:
        """Whether ``supervisor phase TARGET`` may move now (the readiness gate aside).

        Args:
            target: the phase asked for.
            force: the caller passed ``--force``.
            reason: the caller's ``--reason``.
            tokens: how many ``[api] tokens`` the config gives the target phase
                (None: not checked).

        Raises:
            PhaseError: the move is not allowed; the one-line message says why
                and what to do.
        """
        if target is self.phase:
            raise PhaseError(f"already in {target.value}")
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            raise PhaseError(
                "in emergency_shutdown: use `supervisor restart` (back to "
                f"{self.interrupted.value if self.interrupted else 'the previous phase'}) "
                "or `supervisor shutdown`"
            )
        if target is Phase.EMERGENCY_SHUTDOWN:
            raise PhaseError("use `supervisor shutdown --emergency` to enter emergency_shutdown")
        if self.phase is Phase.PRODUCTION and not (force and reason.strip()):
            # Leaving production turns token checks on the socket and redaction off.
            raise PhaseError(
                f"leaving production for {target.value} needs --force and a --reason "
                "(it is recorded); only an emergency shutdown needs neither"
            )
        if self.phase is Phase.DEVELOPMENT and tokens == 0 and not force:
            raise PhaseError(NO_TOKENS.format(target=target.value))
        if (
            target not in ALLOWED_MOVES[self.phase]
        ):  # pragma: no cover - every other move is allowed
            raise PhaseError(f"cannot move from {self.phase.value} to {target.value}")

    def move(
        self,
        target: Phase,
        *,
        time: float,
        tick: int,
        caller: str,
        reason: str,
        action: str = "phase",
    ) -> LifecycleEvent:
        """Record and make the move (checked by the caller; emergencies always pass)."""
        before = self.phase
        if target is Phase.EMERGENCY_SHUTDOWN:
            if before is Phase.EMERGENCY_SHUTDOWN:
                raise PhaseError("already in emergency_shutdown")
            self.interrupted = before
        elif before is Phase.EMERGENCY_SHUTDOWN:
            self.interrupted = None
        self.phase = target
        return self.record(
            action=action,
            before=before.value,
            after=target.value,
            time=time,
            tick=tick,
            caller=caller,
            reason=reason,
        )

    def record(
        self,
        *,
        action: str,
        before: str,
        after: str,
        time: float,
        tick: int,
        caller: str,
        reason: str,
    ) -> LifecycleEvent:
        """Keep a lifecycle event (a move, or an action that is not one): the one place built."""
        event = LifecycleEvent(
            time=time,
            tick=tick,
            action=action,
            before=before,
            after=after,
            caller=caller,
            reason=reason,
        )
        self.history.append(event)
        return event

    def rewrite(self, text: Callable[[str], str]) -> None:
        """Pass every kept event's free text (caller, reason) through ``text`` (redaction)."""
        kept = [attrs.evolve(e, caller=text(e.caller), reason=text(e.reason)) for e in self.history]
        self.history.clear()
        self.history.extend(kept)
