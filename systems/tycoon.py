"""The tycoon game: plots with droppers and upgrades that generate income.

Every player owns a plot. A plot's droppers each yield ``dropper_income``
cents per tick, multiplied by ``1 + level`` of its conveyor upgrade. Players
build their plot by buying a ``dropper`` (the n-th costs ``n *
dropper_price``) or an ``upgrade`` (level L to L+1 costs ``upgrade_price *
2**L``) through ``Economy.purchase``, so every purchase is journalled,
debited at once and acknowledged once durable.

A plot is not stored here: it is the count of the items its owner bought,
which the economy keeps with the account (and the datastore rebuilds from the
purchases journal). The tycoon gives the economy its income model
(``plot_income``), so a purchase changes the owner's income at once, and
simulates the buyers: each tick about ``buy_rate * dt`` of the online players
try to buy the next step of their plot, if they can pay for it. A share
``cheat_rate`` of the attempts are exploits -- impossible amounts, bursts of
purchases -- for the ``security`` system to catch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from supervisor import Context

from .economy import Purchase
from .players import rng_state, set_rng_state, stochastic_round

if TYPE_CHECKING:
    from .economy import Economy
    from .players import Players

__all__ = ["Tycoon"]

#: What exploit attempts look like: a negative price, an absurd one, a burst.
_CHEATS = ("negative", "absurd", "burst")
_BURST = 12


# Options validated when built, not at every assignment (see ``Economy``).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Tycoon:
    """Plots, their income, and simulated players buying upgrades.

    Args:
        seed: the random seed of the buyers' decisions.
        buy_rate: purchase attempts per online player per second.
        dropper_price: cents for the first dropper; the n-th costs n times as much.
        upgrade_price: cents for upgrade level 1; each level doubles the price.
        dropper_income: cents per tick a dropper yields at level 0.
        max_droppers: droppers a plot can hold.
        max_level: the highest upgrade level.
        cheat_rate: the share of attempts that are exploits.
    """

    seed: int = 2
    buy_rate: float = 0.05
    dropper_price: int = 500
    upgrade_price: int = 2_000
    dropper_income: int = 1
    max_droppers: int = 20
    max_level: int = 10
    cheat_rate: float = 0.0
    name: str = "tycoon"

    critical: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ("economy",)
    priority: ClassVar[int] = 0

    attempts: int = attrs.field(init=False, default=0)
    bought: int = attrs.field(init=False, default=0)
    saving: int = attrs.field(init=False, default=0)
    refused: int = attrs.field(init=False, default=0)
    cheats: int = attrs.field(init=False, default=0)
    _rng: random.Random = attrs.field(init=False)
    _economy: Economy | None = attrs.field(init=False, default=None)
    _players: Players | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        for field in ("buy_rate", "cheat_rate"):
            value = getattr(self, field)
            if not 0 <= value <= (1 if field == "cheat_rate" else 1_000):
                raise ValueError(f"{field} is out of range: {value!r}")
        for field in ("dropper_price", "upgrade_price", "dropper_income"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1 cent")
        if self.max_droppers < 0 or self.max_level < 0:
            raise ValueError("max_droppers and max_level must be >= 0")
        self._rng = random.Random(self.seed)

    # ------------------------------------------------------------------ the game's rules

    def plot(self, items: Mapping[str, int]) -> tuple[int, int]:
        """``(droppers, level)`` of the plot whose owner bought ``items``."""
        return items.get("dropper", 0), items.get("upgrade", 0)

    def plot_income(self, items: Mapping[str, int]) -> int:
        """Cents per tick a plot yields: the economy's rate model."""
        droppers, level = self.plot(items)
        return droppers * self.dropper_income * (1 + level)

    def next_step(self, items: Mapping[str, int]) -> tuple[str, int] | None:
        """What the owner of ``items`` buys next and its price; None when the plot is complete.

        Droppers first, two per upgrade level, then the upgrade.
        """
        droppers, level = self.plot(items)
        if droppers < self.max_droppers and (droppers < 2 * (level + 1) or level >= self.max_level):
            return "dropper", self.dropper_price * (droppers + 1)
        if level < self.max_level:
            return "upgrade", self.upgrade_price * 2**level
        return None

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: Context) -> None:
        self._economy = ctx.system("economy")
        self._players = ctx.system("players")
        assert self._economy is not None
        self._economy.set_rate_model(self.plot_income)

    def tick(self, ctx: Context) -> None:
        players, economy = self._players, self._economy
        assert players is not None, "tycoon ticked before start"
        assert economy is not None
        online = players.online
        n = len(online)
        if not n:
            return
        rng = self._rng
        cheat_rate = self.cheat_rate
        for _ in range(stochastic_round(rng, self.buy_rate * n * ctx.dt)):
            pid = online[rng.randrange(n)]
            self.attempts += 1
            if cheat_rate and rng.random() < cheat_rate:
                self._cheat(economy, pid, rng.choice(_CHEATS))
                continue
            step = self.next_step(economy.items(pid))
            if step is None:
                continue
            item, price = step
            balance = economy.balance(pid)
            if balance is None or balance < price:
                self.saving += 1
                continue
            self._count(economy.purchase(pid, price, item))

    def _count(self, result: Any) -> None:
        if isinstance(result, Purchase):
            self.bought += 1
        else:
            self.refused += 1

    def _cheat(self, economy: Economy, pid: int, how: str) -> None:
        self.cheats += 1
        if how == "negative":
            self._count(economy.purchase(pid, -self.dropper_price, "dropper"))
        elif how == "absurd":
            self._count(economy.purchase(pid, 10**18, "upgrade"))
        else:  # a burst of cheap purchases: more than any rate limit allows
            for _ in range(_BURST):
                self._count(economy.purchase(pid, 1, ""))

    def snapshot(self) -> dict[str, Any]:
        return {
            "rng": rng_state(self._rng),
            "attempts": self.attempts,
            "bought": self.bought,
            "saving": self.saving,
            "refused": self.refused,
            "cheats": self.cheats,
        }

    def restore(self, state: dict[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        self.attempts = int(state["attempts"])
        self.bought = int(state["bought"])
        self.saving = int(state["saving"])
        self.refused = int(state["refused"])
        self.cheats = int(state["cheats"])
