"""The leaderboard: the top online players by lifetime earnings.

Refreshed every ``every`` ticks by ``heapq.nlargest`` over the online
players' accounts (keyed by a C-level ``attrgetter``), instead of being kept
sorted on every payout. A pass ranks at most ``max(chunk, online / every)``
players a tick, carrying the best so far to the next slice: a world of up to
``chunk`` players is ranked within one tick, exactly; 100,000 players are
ranked over the ``every`` ticks (about 0.5 ms a tick instead of one 13 ms
tick), and ``top`` then shows the pass's winners with their earnings at its
last tick (a player whose earnings grew, or who joined, during the pass may be
missing until the next). The pass walks a copy of the players' int64 ids
(one memory copy) and looks each slice's accounts up: holding a list of
100,000 accounts across ticks instead made every young-generation garbage
collection visit all of them (several ms each, inside ticks and snapshots).
Ties go to the higher player id, so the order does not depend on the order
accounts were loaded in (which differs after a restore). Its
``priority`` is above the profile's ``throttle_priority``: under load the
optimizer may refresh it less often, which a leaderboard tolerates.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from array import array
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from supervisor import Context

if TYPE_CHECKING:
    from .economy import Account, Economy
    from .players import Players

__all__ = ["Leaderboard"]


#: Best first: more earnings, then the higher id.
_rank = operator.attrgetter("earnings", "pid")
_online = operator.attrgetter("online")


def _at_least_one(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


# Options validated when built, not at every assignment (see ``Economy``).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Leaderboard:
    """Top ``size`` online players by earnings, refreshed every ``every`` ticks.

    Args:
        size: how many players are ranked.
        every: ticks between refreshes.
    """

    size: int = attrs.field(default=10, validator=_at_least_one)
    every: int = attrs.field(default=30, validator=_at_least_one)
    chunk: int = attrs.field(default=4_096, validator=_at_least_one)
    name: str = "leaderboard"

    critical: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ("players", "economy")
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
    _players: Players | None = attrs.field(init=False, default=None)
    #: The pass under way: the players it ranks, how far it got, the best so far.
    _pass: array[int] | None = attrs.field(init=False, default=None)
    _at: int = attrs.field(init=False, default=0)
    _best: list[Account] = attrs.field(init=False, factory=list)

    def start(self, ctx: Context) -> None:
        self._economy = ctx.system("economy")
        self._players = ctx.system("players")

    def tick(self, ctx: Context) -> None:
        if self._pass is None:
            if ctx.tick < self._next:
                return
            self._next = ctx.tick + self.every
            self.snapshot_version += 1
        self.refresh(ctx.tick)

    def refresh(self, tick: int) -> None:
        """Rank the next slice of the accounts; publish ``top`` when the pass is complete."""
        economy, players = self._economy, self._players
        assert economy is not None, "leaderboard used before start"
        assert players is not None
        ranked = self._pass
        if ranked is None:
            ranked = self._pass = array("q", players.online)
            self._at, self._best = 0, []
        start = self._at
        end = self._at = start + max(self.chunk, -(-len(ranked) // self.every))
        # A player who left during the pass may have no account any more (None).
        accounts = filter(None, map(economy.accounts.get, ranked[start:end]))
        online = filter(_online, accounts)
        self._best = heapq.nlargest(self.size, itertools.chain(self._best, online), key=_rank)
        if end < len(ranked):
            return
        # Earnings may have grown, and players left, during the pass.
        best = sorted(filter(_online, self._best), key=_rank, reverse=True)
        self.top = [(a.pid, a.earnings) for a in best]
        self._pass, self._best = None, []
        self.refreshed_tick = tick
        self.refreshes += 1
        self.snapshot_version += 1

    def recover(self, ctx: Context, error: Any) -> None:
        """Rank again on the next tick, from scratch."""
        self.top = []
        self._pass, self._best = None, []
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
        self._pass, self._best = None, []
        self.snapshot_version += 1
