"""Service levels from minute rows: indicators, error budgets, burn rates.

The three indicators, each ``good / total`` over a window (CONTRACT.md section 9):

* ``timeliness``: ticks that started within ``lateness_ms`` of their
  deadline, over all ticks. Read at the largest ``LATENCY_BUCKETS`` bound
  not above ``lateness_ms`` (so a threshold between bounds is judged
  strictly, never leniently).
* ``error_free_player_minutes``: player-minutes are the players gauge
  (``ctx.report("players", n)``) integrated over time. An error record
  spoils one player-minute (the player whose step failed), never more than
  the minute's player-minutes; a minute's share spent in
  EMERGENCY_SHUTDOWN spoils that share of its player-minutes. So
  ``bad = min(P, E + P * emergency / seconds)`` per minute, with P its
  player-minutes and E its error records. Records carry no player id, so
  an error is charged to one player: exact when each error concerns one
  player's action, an undercount when one error touches many.
* ``availability``: seconds the supervisor ran and was not in
  EMERGENCY_SHUTDOWN, over the seconds it ran (time it was stopped is not
  judged: the store cannot tell maintenance from an outage).

A burn rate is the bad share over a window divided by the budget share
``1 - target``: 1.0 spends the budget exactly over the SLO's window; the
SRE workbook pages on 14.4 over 1 h (and 5 min) and tickets on 6 over 6 h.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

import attrs

from .._core._config_sections import SloConfig
from .._core._histogram import LATENCY_BUCKETS
from ._db import MinuteRow

__all__ = ["Level", "burn_rate", "level", "measure"]


@attrs.frozen
class Level:
    """An indicator over a window: good and total events, and the budget they leave."""

    slo: SloConfig
    good: float
    total: float

    @property
    def ratio(self) -> float | None:
        """good / total, or None with no data."""
        return self.good / self.total if self.total > 0 else None

    @property
    def budget_left(self) -> float | None:
        """Share of the error budget left (1: untouched, 0: spent, below 0: overspent)."""
        allowed = (1.0 - self.slo.target) * self.total
        bad = self.total - self.good
        if self.total <= 0:
            return None
        if allowed <= 0:
            return 1.0 if bad <= 0 else -math.inf
        return 1.0 - bad / allowed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the objective it is measured against."""
        return {
            "name": self.slo.name,
            "kind": self.slo.kind,
            "target": self.slo.target,
            "window": self.slo.window,
            **({"lateness_ms": self.slo.lateness_ms} if self.slo.kind == "timeliness" else {}),
            "good": self.good,
            "total": self.total,
            "ratio": self.ratio,
            "met": None if self.ratio is None else self.ratio >= self.slo.target,
            "budget_left": self.budget_left,
        }


def _late_index(lateness_ms: float) -> int:
    return max(0, bisect_right(LATENCY_BUCKETS, lateness_ms / 1000.0 + 1e-12) - 1)


def measure(slo: SloConfig, rows: Iterable[MinuteRow]) -> tuple[float, float]:
    """(bad, total) of ``slo``'s indicator over ``rows``."""
    bad = total = 0.0
    if slo.kind == "timeliness":
        i = _late_index(slo.lateness_ms)
        for r in rows:
            total += r.ticks
            bad += r.late[i] if i < len(r.late) else 0
    elif slo.kind == "availability":
        for r in rows:
            total += r.seconds
            bad += r.emergency
    else:
        for r in rows:
            players = r.player_seconds / 60.0
            share = r.emergency / r.seconds if r.seconds > 0 else 0.0
            total += players
            bad += min(players, r.errors + players * share)
    return bad, total


def level(slo: SloConfig, rows: Iterable[MinuteRow]) -> Level:
    """The indicator of ``slo`` over ``rows``."""
    bad, total = measure(slo, rows)
    return Level(slo=slo, good=total - bad, total=total)


def burn_rate(slo: SloConfig, rows: Iterable[MinuteRow]) -> float:
    """How fast ``rows`` spend ``slo``'s budget: (bad / total) / (1 - target); 0 with no data."""
    bad, total = measure(slo, rows)
    if total <= 0 or bad <= 0:
        return 0.0
    budget = 1.0 - slo.target
    return math.inf if budget <= 0 else (bad / total) / budget
