"""What alert rules are evaluated against: a reading of the supervisor once a second, in a ring.

:func:`read` is the one place this package reads the core (public views
only, nothing per tick): error counts, the tick histograms' bucket counts,
dropped ticks, quarantines, resources and the ``players`` gauge. A reading
is cheap (two tuple copies of the histograms' buckets, a dict copy of
per-system error counts) and happens off the tick, in the evaluator's service.

:class:`Window` keeps the last ``[alerts] window`` seconds (default 60) of
readings and answers each metric of :data:`ALERT_METRICS` over it: rates
are differences between the newest reading and the oldest one within the
window, per minute ("errors in the last minute", not since start, never
extrapolated from a shorter history: a fresh start under-reports rather
than pages); p99 is read from the
difference of the histograms' bucket counts, so a slow start an hour ago
does not hold the alert up.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from .._core._histogram import Histogram, WindowStats

if TYPE_CHECKING:
    from .._core._runtime import Supervisor

__all__ = ["BurnRate", "Fingerprints", "Reading", "Window", "read"]

#: ``slo_burn_rate(slo, window) -> float``: given by the SLO store (None: no such rules).
BurnRate = Callable[[str, str], float]


def _empty() -> Sequence[int]:
    """The bucket counts of a histogram nothing was recorded into."""
    return Histogram().counts()


#: Fingerprints remembered to tell a new one (the oldest forgotten first).
MAX_FINGERPRINTS: Final = 100_000


@attrs.frozen
class Reading:
    """The supervisor's counters at one moment (``at``: trio time, seconds)."""

    at: float
    errors: int = 0
    by_system: Mapping[str, int] = attrs.field(factory=dict)
    #: Fingerprints first seen since the process started (cumulative).
    new_fingerprints: int = 0
    lateness: Sequence[int] = attrs.field(factory=_empty)
    work: Sequence[int] = attrs.field(factory=_empty)
    dropped_ticks: int = 0
    quarantined: int = 0
    rss_mb: float | None = None
    cpu_percent: float | None = None
    players: float | None = None
    #: Live memory per system (MB), while ``[features] memory_tracking`` samples it.
    memory_mb: Mapping[str, float] = attrs.field(factory=dict)


class Fingerprints:
    """Fingerprints seen so far, to count the ones seen for the first time.

    Fed from the error ring's records newer than the last look (the ring
    holds ``[recovery] history`` records): a fingerprint that occurs only
    while more records than that are made in one second is counted when it
    recurs, or missed. Bounded by :data:`MAX_FINGERPRINTS`.
    """

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_id = 0
        self.new = 0

    def feed(self, records: Iterable[tuple[int, str]]) -> None:
        """Look at ``(record id, fingerprint)`` pairs, newest first; stop at the last seen."""
        newest = self._last_id
        for record_id, fingerprint in records:
            if record_id <= self._last_id:
                break
            newest = max(newest, record_id)
            if fingerprint not in self._seen:
                self._seen[fingerprint] = None
                self.new += 1
                if len(self._seen) > MAX_FINGERPRINTS:
                    self._seen.popitem(last=False)
        self._last_id = newest


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def read(sup: Supervisor, fingerprints: Fingerprints, now: float) -> Reading:
    """Read ``sup``'s public counters: the only place alerts touch the core."""
    errors = sup.errors
    fingerprints.feed((r.id, r.fingerprint) for r in reversed(errors.records))
    rss = _number(sup.resources.get("rss_bytes"))
    return Reading(
        at=now,
        errors=errors.total,
        by_system=dict(errors.counts),
        new_fingerprints=fingerprints.new,
        lateness=sup.lateness.counts(),
        work=sup.work.counts(),
        dropped_ticks=sup.dropped_ticks,
        quarantined=len(sup.quarantined()),
        rss_mb=None if rss is None else rss / (1024 * 1024),
        cpu_percent=_number(sup.resources.get("cpu_percent")),
        players=_number(sup.gauges.get("players")),
        memory_mb={name: size / (1024 * 1024) for name, size in sup.system_memory.items()},
    )


class Window:
    """The last ``seconds`` of readings, and each alert metric over them."""

    def __init__(self, seconds: float = 60.0, burn_rate: BurnRate | None = None) -> None:
        self.seconds = seconds
        self.burn_rate = burn_rate
        self._ring: collections.deque[Reading] = collections.deque()

    def push(self, reading: Reading) -> None:
        """Add the newest reading; drop those the window no longer needs."""
        ring = self._ring
        ring.append(reading)
        # Keep one reading at or past the window's start: the base of the differences.
        while len(ring) > 2 and reading.at - ring[1].at >= self.seconds:
            ring.popleft()

    def value(self, metric: str, labels: Mapping[str, str]) -> float | None:
        """The metric now; None when there is nothing to read it from yet.

        Raises:
            Exception: whatever ``burn_rate`` raises (the evaluator counts it).
        """
        if not self._ring:
            return None
        new, old = self._ring[-1], self._ring[0]
        per_minute = 60.0 / self.seconds
        if metric == "errors_per_minute":
            system = labels.get("system")
            if system is None:
                return per_minute * (new.errors - old.errors)
            return per_minute * (new.by_system.get(system, 0) - old.by_system.get(system, 0))
        if metric == "new_fingerprints":
            return float(new.new_fingerprints - old.new_fingerprints)
        if metric == "dropped_ticks_per_minute":
            return per_minute * (new.dropped_ticks - old.dropped_ticks)
        if metric == "tick_lateness_p99_ms":
            return 1000.0 * WindowStats.between(new.lateness, old.lateness, math.inf).p99
        if metric == "tick_work_p99_ms":
            return 1000.0 * WindowStats.between(new.work, old.work, math.inf).p99
        if metric == "quarantined_systems":
            return float(new.quarantined)
        if metric == "system_memory_mb":
            return new.memory_mb.get(labels["system"])
        if metric == "system_memory_growth_mb":
            now, then = new.memory_mb.get(labels["system"]), old.memory_mb.get(labels["system"])
            return None if now is None or then is None else now - then
        if metric == "slo_burn_rate":
            if self.burn_rate is None:
                return None
            slo, short = labels["slo"], labels.get("short")
            burn = float(self.burn_rate(slo, labels["window"]))
            # Multi-window: both burn above a threshold exactly when the smaller one does.
            return burn if short is None else min(burn, float(self.burn_rate(slo, short)))
        instant: dict[str, float | None] = {
            "rss_mb": new.rss_mb,
            "cpu_percent": new.cpu_percent,
            "players": new.players,
        }
        return instant[metric]
