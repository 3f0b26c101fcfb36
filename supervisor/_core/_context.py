"""The ``ctx`` every hook receives."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ._flags import Flags
from ._phase import Phase

__all__ = ["GAUGE_NAME", "MAX_GAUGES", "MAX_GAUGE_NAME", "Context", "GaugeError"]

#: What a gauge name may be: an identifier (a valid Prometheus label value and
#: metric-like name), at most ``MAX_GAUGE_NAME`` characters.
GAUGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_GAUGE_NAME = 64
#: Distinct gauges kept, all systems together; more are refused and counted.
MAX_GAUGES = 64
#: Integer gauges must fit in 64 bits (a float beyond that loses the value anyway).
GAUGE_INT_LIMIT = 2**63
assert GAUGE_INT_LIMIT == 9223372036854775808  # spelt out in Context.report (the hot path)


class GaugeError(ValueError):
    """A gauge a system reported was refused (bad name, bad value, too many gauges).

    Never raised into the system: it is recorded as that system's error, of
    kind ``"gauge"``, and the gauge is not published.
    """


class _Loop(Protocol):
    tick: int
    now: float
    dt: float


class _Slot(Protocol):
    name: str
    every: int


class ContextHost(Protocol):
    """The narrow part of the runtime a ``Context`` reads (the runtime's shared kernel)."""

    loop: Any  # a _Loop: tick, now, dt (an attribute, read on every ``ctx.tick``)
    gauges: dict[str, float]
    gauge_keys: dict[str, str]
    state_dir: Path
    flags: Flags

    @property
    def phase(self) -> Phase:
        """The current phase."""
        ...

    def system(self, name: str) -> Any:
        """A registered system by name (KeyError when there is none)."""
        ...

    def report_gauge(self, slot: Any, name: object, value: object) -> None:
        """``ctx.report`` off its fast path."""
        ...

    def request_emergency(self, reason: str, *, source: str = ...) -> None:
        """An emergency, after the current step."""
        ...


class Context:
    """What a system sees of the supervisor: the tick, time, phase, its peers.

    One per system, made at registration; ``tick``, ``dt``, ``now`` and
    ``phase`` read the supervisor's current values, so nothing is copied
    into 50 contexts on every tick.
    """

    __slots__ = ("_flags", "_host", "_key_of", "_loop", "_slot", "_values", "flag", "log", "name",
                 "variant")  # fmt: skip

    #: ``flag(name, player_id=None) -> bool``: whether ``[flags.NAME]`` is on for
    #: ``player_id`` (without one: whether it is on for everyone, enabled at
    #: 100 %). A stable hash of the flag and the player, so a player keeps the
    #: answer while the percent grows, and the int 42 is the same player as
    #: ``"42"``; a player in one of the flag's ``segments`` always has it. Costs
    #: well under a microsecond and keeps nothing per player. Raises
    #: ``UnknownFlagError`` (a KeyError naming the nearest flag) for an unknown
    #: name, TypeError for a player id that is not an int or a str. It is the
    #: supervisor's ``Flags.flag`` itself, bound here: the hot path makes one call.
    flag: Callable[[str, int | str | None], bool]
    #: ``variant(experiment, player_id) -> str``: the arm of ``[experiments.NAME]``
    #: the player is in (``"a"``, ``"b"``...), by the same stable hash with the
    #: experiment's name. Counts the player for that arm and this system's next
    #: error as that arm's: read it just before serving the player. Raises
    #: ``UnknownExperimentError`` (a KeyError) for an unknown name, TypeError
    #: for a player id that is not an int or a str. This system's own
    #: ``Reader.variant``, bound here: the hot path makes one call.
    variant: Callable[[str, int | str], str]

    def __init__(self, host: ContextHost, slot: _Slot, log: Any) -> None:
        self._host = host
        self._loop: _Loop = host.loop
        self._slot = slot
        # The runtime's gauge tables, mutated in place and never rebound.
        self._key_of = host.gauge_keys.get
        self._values = host.gauges
        self._flags = host.flags
        self.flag = host.flags.flag
        self.variant = host.flags.reader(slot.name, host.loop, slot).variant
        self.name = slot.name
        #: A structlog logger bound to this system's name.
        self.log = log

    @property
    def tick(self) -> int:
        """The number of this tick; it continues across restore."""
        return self._loop.tick

    @property
    def dt(self) -> float:
        """The simulated time this step covers, in seconds (the fixed step, times the throttle)."""
        return self._loop.dt * self._slot.every

    @property
    def now(self) -> float:
        """This tick's scheduled time on the supervisor's (trio's) clock."""
        return self._loop.now

    @property
    def phase(self) -> Phase:
        """The supervisor's phase (a ``str`` enum: equal to ``"development"``, ...)."""
        return self._host.phase

    @property
    def state_dir(self) -> Path:
        """The supervisor's state folder (snapshots live in ``state_dir/snapshots``)."""
        return self._host.state_dir

    def system(self, name: str) -> Any:
        """Another registered system, by name.

        Raises:
            KeyError: no system of that name is registered.
        """
        return self._host.system(name)

    def report(self, name: str, value: float) -> None:
        """Publish a gauge (``players``, ...): shown in status and metrics, recorded with errors.

        ``name`` is an identifier (``[A-Za-z_][A-Za-z0-9_]*``, at most 64
        characters; at most 64 gauges in all). ``value`` is an ``int`` (within
        64 bits) or a finite ``float``; a ``bool`` counts as 0 or 1. Anything
        else is recorded as this system's error (kind ``"gauge"``) and not
        published; nothing is raised.

        The hot path: a name seen before (one dict lookup, checked only the
        first time) and a plain number. Everything else goes the slow way.
        """
        key = self._key_of(name) if type(name) is str else None
        number: object = value  # the annotation is the contract, not a guarantee
        if key is not None:
            kind = type(number)
            if kind is int:
                # GAUGE_INT_LIMIT as literals: a global lookup each would cost ~10 ns.
                if -9223372036854775808 < number < 9223372036854775808:  # type: ignore[operator]
                    self._values[key] = number  # type: ignore[assignment]
                    return
            elif kind is float and number - number == 0.0:  # type: ignore[operator]
                # (finite: inf - inf and nan - nan are nan)
                self._values[key] = number  # type: ignore[assignment]
                return
        self._host.report_gauge(self._slot, name, number)

    def request_emergency(self, reason: str) -> None:
        """Ask for an emergency shutdown; it begins once the current step returns."""
        self._host.request_emergency(f"{self.name}: {reason}", source=f"system:{self.name}")

    def player_segments(self, player_id: int | str, segments: Iterable[str]) -> None:
        """Tell the supervisor the segments a player is in (``()`` when the player leaves).

        A flag is always on for players in one of its ``segments``. At most
        100,000 players are kept; past that a call is refused and counted.

        Raises:
            TypeError: the player id is not an int or a str, or a segment not a str.
        """
        self._flags.set_segments(player_id, segments)
