"""The ``ctx`` every hook receives."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._supervisor import Supervisor, _Slot

__all__ = ["Context"]


class Context:
    """What a system sees of the supervisor: the tick, time, phase, its peers.

    One per system, made at registration; ``tick``, ``dt``, ``now`` and
    ``phase`` read the supervisor's current values, so nothing is copied
    into 50 contexts on every tick.
    """

    __slots__ = ("_slot", "_sup", "log", "name")

    def __init__(self, sup: Supervisor, slot: _Slot, log: Any) -> None:
        self._sup = sup
        self._slot = slot
        self.name = slot.name
        #: A structlog logger bound to this system's name.
        self.log = log

    @property
    def tick(self) -> int:
        """The number of this tick; it continues across restore."""
        return self._sup._tick

    @property
    def dt(self) -> float:
        """The simulated time this step covers, in seconds (the fixed step, times the throttle)."""
        return self._sup._dt * self._slot.every

    @property
    def now(self) -> float:
        """This tick's scheduled time on the supervisor's (trio's) clock."""
        return self._sup._now

    @property
    def phase(self) -> str:
        """The supervisor's phase name (``"development"``, ...)."""
        return self._sup.phase.value

    @property
    def state_dir(self) -> Path:
        """The supervisor's state folder (snapshots live in ``state_dir/snapshots``)."""
        return self._sup.state_dir

    def system(self, name: str) -> Any:
        """Another registered system, by name.

        Raises:
            KeyError: no system of that name is registered.
        """
        return self._sup.system(name)

    def report(self, name: str, value: float) -> None:
        """Publish a gauge (``players``, ...): shown in status and metrics, recorded with errors."""
        self._sup._gauges[name] = value

    def request_emergency(self, reason: str) -> None:
        """Ask for an emergency shutdown; it begins once the current step returns."""
        self._sup.request_emergency(f"{self.name}: {reason}", source=f"system:{self.name}")
