"""The alert state machine: inactive -> pending -> firing -> resolved, with hysteresis.

Pure and clock-free: :meth:`Evaluator.evaluate` takes the time (trio's, for
the holds) and the wall time (for ``startsAt``/``endsAt``) and the value of
each rule's metric, and returns the transitions it made. A rule whose
condition holds becomes *pending*; once it has held ``for`` seconds it is
*firing*; a firing rule whose condition stops holding keeps firing until the
condition has been false ``keep_firing_for`` seconds (default: ``for``), then
it is *resolved* -- so a value hovering at the threshold pages once, not on
every crossing. A pending rule whose condition stops holding goes back to
inactive without a notification. No value (a missing gauge, a failing SLO
store) does not hold.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._core._config_alerts import AlertRule

__all__ = ["AlertState", "Evaluator", "State", "Transition"]


class State(enum.StrEnum):
    """Where a rule is in its cycle (``resolved`` is inactive after firing)."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@attrs.frozen
class Transition:
    """A rule changed state: what the logs, the API and the notifiers are told."""

    rule: AlertRule
    before: State
    after: State
    value: float | None
    #: Wall-clock seconds when it started firing (None before it fired).
    starts_at: float | None
    #: Wall-clock seconds when it resolved (None unless it did).
    ends_at: float | None


@attrs.define
class AlertState:
    """One rule's state and the times that drive it (trio time, seconds)."""

    rule: AlertRule
    state: State = State.INACTIVE
    value: float | None = None
    #: When the condition started holding (pending since), or None.
    holding_since: float | None = None
    #: When it started firing (while it fires), or None.
    firing_since: float | None = None
    #: When a firing rule's condition stopped holding, or None.
    clear_since: float | None = None
    #: Wall-clock seconds of the last time it started firing, and resolved.
    starts_at: float | None = None
    ends_at: float | None = None
    #: Times it has fired since the start.
    fired: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        """JSON-ready: the rule, its state and value, and for how long in each (seconds)."""

        def age(since: float | None) -> float | None:
            return None if since is None else now - since

        return {
            "rule": self.rule.name,
            "severity": self.rule.severity,
            "when": self.rule.when,
            "for": self.rule.for_seconds,
            "keep_firing_for": self.rule.keep_firing,
            "state": self.state.value,
            "value": self.value,
            "holding_for": age(self.holding_since),
            "firing_for": age(self.firing_since),
            "clearing_for": age(self.clear_since),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "fired": self.fired,
        }


class Evaluator:
    """Every rule's state; ``evaluate`` moves them on, once a second."""

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self.states = [AlertState(rule) for rule in rules]

    def firing(self) -> list[AlertState]:
        """The rules firing now."""
        return [s for s in self.states if s.state is State.FIRING]

    def evaluate(
        self, now: float, wall: float, values: Mapping[str, float | None]
    ) -> list[Transition]:
        """Move every rule on at time ``now``, given each rule's value by rule name."""
        out: list[Transition] = []
        for st in self.states:
            value = values.get(st.rule.name)
            st.value = value
            before = st.state
            self._step(st, now, wall, value is not None and st.rule.holds(value))
            if st.state is not before:
                out.append(
                    Transition(
                        rule=st.rule,
                        before=before,
                        after=st.state,
                        value=value,
                        starts_at=st.starts_at,
                        ends_at=st.ends_at if st.state is State.RESOLVED else None,
                    )
                )
        return out

    @staticmethod
    def _step(st: AlertState, now: float, wall: float, holds: bool) -> None:
        rule = st.rule
        if st.state is State.FIRING:
            if holds:
                st.clear_since = None
                return
            if st.clear_since is None:
                st.clear_since = now
            if now - st.clear_since >= rule.keep_firing:
                st.state, st.ends_at = State.RESOLVED, wall
                st.holding_since = st.clear_since = st.firing_since = None
            return
        if not holds:
            st.holding_since = None
            if st.state is State.PENDING:
                st.state = State.INACTIVE
            return
        if st.holding_since is None:
            st.holding_since = now
        if now - st.holding_since >= rule.for_seconds:
            st.state, st.starts_at, st.ends_at = State.FIRING, wall, None
            st.firing_since = now
            st.fired += 1
        elif st.state is not State.PENDING:
            st.state = State.PENDING
