"""The system table: one slot per registered system, and the loop's shared marker.

A ``Slot`` is what the runtime keeps about one system (its resolved hooks,
breaker, step ring, health); ``LoopState`` is the handful of values the hot
path writes and the ``Context``, the watchdog and the rooms read (tick, time,
the step running now). Both are plain slotted objects: reading one of their
attributes costs what reading the supervisor's own did.
"""

from __future__ import annotations

import array
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._safecall import Breaker, BreakerState

if TYPE_CHECKING:
    from ._context import Context
    from ._plugins import SystemInfo

__all__ = ["RING_MASK", "STEP_RING", "LoopState", "Slot", "health_value", "ring_window"]

#: Each system's step times go to a ring of this many ticks on the hot path
#: (one store into an array of doubles); status, metrics and the optimizer
#: read windowed quantiles from it. A power of two.
STEP_RING = 1024
RING_MASK = STEP_RING - 1
_HEALTH_VALUES = ("healthy", "degraded", "unhealthy")


def health_value(value: object) -> str:
    """What ``health()`` returned, as one of the three words (anything else is unhealthy)."""
    # type() first: `in` would run a hostile object's __eq__.
    return value if type(value) is str and value in _HEALTH_VALUES else "unhealthy"


def new_ring() -> array.array[float]:
    """A ring of STEP_RING step (or tick) times, zeroed."""
    return array.array("d", bytes(8 * STEP_RING))


def ring_window(
    ring: array.array[float], start: int, end: int, every: int = 1, offset: int = 0
) -> list[float]:
    """The values of ``ring`` for ticks [start, end), oldest first (the one ring arithmetic).

    ``start`` is clamped to the ring's reach. A throttled system (``every``
    > 1) has values only for the ticks it ran on: ``(t + offset) % every == 0``.
    """
    start = max(start, end - STEP_RING)
    if every == 1:
        return [ring[t & RING_MASK] for t in range(start, end)]
    return [ring[t & RING_MASK] for t in range(start, end) if (t + offset) % every == 0]


@attrs.define(eq=False)
class LoopState:
    """What the tick loop shares with contexts and the watchdog: no more than this.

    ``current`` is the slot whose plugin code runs now and ``call_seq`` is
    bumped around every hook call: the watchdog thread reads the three of
    ``(current, tick, call_seq)`` to tell one long call from many short ones.
    """

    dt: float
    tick: int = 0
    now: float = 0.0
    current: Slot | None = None
    call_seq: int = 0


@attrs.define(eq=False, kw_only=True)
class Slot:
    """A registered system and everything the loop keeps about it."""

    name: str
    system: Any
    info: SystemInfo
    tick_fn: Callable[..., Any]
    tick_async: bool
    breaker: Breaker
    factory: Callable[[], Any] | None = None
    ctx: Context = attrs.field(init=False)
    every: int = 1
    #: Spreads throttled systems over ticks: a slot runs when (tick + offset) % every == 0.
    offset: int = 0
    started: bool = False
    ring: array.array[float] = attrs.field(factory=new_ring)
    failed_tick: int = -1
    #: The ring holds this system's steps for ticks [active_since, window_end).
    active_since: int = 0
    window_end: int | None = 0
    #: The loop thread's stack as the watchdog saw it when this system's call hung.
    hang_stack: str | None = None
    #: The last value of ``health()``, refreshed from the tick loop (never on request).
    cached_health: str = "healthy"
    #: The hook whose failure quarantined the system: its half-open retry calls it first.
    trial_hook: str | None = None
    #: When the last gauge error of this system was recorded (they are rate-limited).
    gauge_error_at: float = -math.inf
    #: Quarantined by an operator: out of the tick, never retried, until released.
    held: bool = False

    @property
    def state(self) -> str:
        """``stopped``, ``running``, ``quarantined`` (``(by operator)``) or ``retrying``."""
        if self.held:
            return "quarantined (by operator)"
        if not self.started and self.breaker.state is BreakerState.CLOSED:
            return "stopped"
        return self.breaker.state.value

    @property
    def quarantined(self) -> bool:
        """Whether the system is in quarantine now."""
        return self.breaker.state is BreakerState.QUARANTINED

    @property
    def health(self) -> str:
        """Health as of the last ``health()`` call: never calls plugin code."""
        return "unhealthy" if self.quarantined else self.cached_health

    def window(self, tick: int, since: int = 0) -> list[float]:
        """Step times over the last ticks (up to ``STEP_RING``) before ``tick``, oldest first."""
        end = tick if self.window_end is None else self.window_end
        return ring_window(self.ring, max(self.active_since, since), end, self.every, self.offset)

    def reset(self) -> None:
        """Forget the runtime state of the previous instance (a restart builds it afresh)."""
        self.every = 1
        self.started = False
        self.failed_tick = -1
        self.hang_stack = None
        self.cached_health = "healthy"
        self.trial_hook = None
        self.gauge_error_at = -math.inf
        self.held = False
