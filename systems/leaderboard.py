"""The leaderboard: the top online players by lifetime earnings.

Refreshed every ``every`` ticks with one ``heapq.nlargest`` over the accounts
in memory (keyed by a C-level ``attrgetter``), instead of being kept sorted on
every payout: ranking 10,000 players costs under a millisecond, paid once
every ``every`` ticks. Ties go to the higher player id, so the order does not
depend on the order accounts were loaded in (which differs after a restore). Its
``priority`` is above the profile's ``throttle_priority``: under load the
optimizer may refresh it less often, which a leaderboard tolerates.
"""

from __future__ import annotations

import heapq
import operator
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from supervisor import Context

if TYPE_CHECKING:
    from .economy import Economy

__all__ = ["Leaderboard"]


#: Best first: more earnings, then the higher id.
_rank = operator.attrgetter("earnings", "pid")


def _at_least_one(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


@attrs.define(eq=False)
class Leaderboard:
    """Top ``size`` online players by earnings, refreshed every ``every`` ticks.

    Args:
        size: how many players are ranked.
        every: ticks between refreshes.
    """

    size: int = attrs.field(default=10, validator=_at_least_one)
    every: int = attrs.field(default=30, validator=_at_least_one)
    name: str = "leaderboard"

    critical: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ("economy",)
    priority: ClassVar[int] = 20

    #: ``(player, earnings)``, best first, as of ``refreshed_tick``.
    top: list[tuple[int, int]] = attrs.field(init=False, factory=list)
    refreshed_tick: int = attrs.field(init=False, default=-1)
    refreshes: int = attrs.field(init=False, default=0)
    #: Bumped whenever the snapshot state changes (refresh, recover, restore):
    #: between refreshes the snapshotter reuses the bytes it packed last time.
    snapshot_version: int = attrs.field(init=False, default=0)
    _next: int = attrs.field(init=False, default=0)
    _economy: Economy | None = attrs.field(init=False, default=None)

    def start(self, ctx: Context) -> None:
        self._economy = ctx.system("economy")

    def tick(self, ctx: Context) -> None:
        if ctx.tick < self._next:
            return
        self._next = ctx.tick + self.every
        self.snapshot_version += 1
        self.refresh(ctx.tick)

    def refresh(self, tick: int) -> None:
        """Rank the online players now."""
        economy = self._economy
        assert economy is not None, "leaderboard used before start"
        accounts = economy.accounts
        # Leavers stay in memory until their last save: rank enough accounts
        # that the best ``size`` online ones are among them, then drop the offline.
        offline = len(accounts) - economy.online_count
        best = heapq.nlargest(self.size + offline, accounts.values(), key=_rank)
        self.top = [(a.pid, a.earnings) for a in best if a.online][: self.size]
        self.refreshed_tick = tick
        self.refreshes += 1
        self.snapshot_version += 1

    def recover(self, ctx: Context, error: Any) -> None:
        """Rank again on the next tick, from scratch."""
        self.top = []
        self._next = ctx.tick + 1
        self.snapshot_version += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "top": [list(row) for row in self.top],
            "refreshed_tick": self.refreshed_tick,
            "refreshes": self.refreshes,
            "next": self._next,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.top = [(int(p), int(e)) for p, e in state["top"]]
        self.refreshed_tick = int(state["refreshed_tick"])
        self.refreshes = int(state["refreshes"])
        self._next = int(state["next"])
        self.snapshot_version += 1
