"""Frozen views of the runtime: statistics, status, errors, and the answers of actions.

Each is an attrs frozen class built at one moment; ``as_dict()`` gives the
JSON the API and ``--summary-json`` write (the contract's shapes). Readers
outside the core (the API, metrics, the live line) read these, never the
runtime's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._control import LifecycleEvent
from ._histogram import HistogramStats
from ._profiles import MachineFacts
from ._windows import Windowed

__all__ = [
    "ErrorView",
    "PhaseChange",
    "RestartResult",
    "RunSummary",
    "ShutdownResult",
    "SnapshotStatus",
    "SnapshotTaken",
    "StatusView",
    "SupervisorStats",
    "SystemAction",
    "SystemStats",
]


@attrs.frozen(kw_only=True)
class SystemStats:
    """One system at one moment."""

    name: str
    state: str
    health: str
    critical: bool
    priority: int
    depends_on: tuple[str, ...]
    origin: str
    errors: int
    step: HistogramStats
    every: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        d = attrs.asdict(self, recurse=False)
        d["step"] = self.step.as_dict()
        d["depends_on"] = list(self.depends_on)
        return d


@attrs.frozen(kw_only=True)
class SupervisorStats:
    """The supervisor at one moment: what ``status`` shows."""

    phase: str
    tick: int
    tick_rate: float
    budget: float
    lateness: HistogramStats
    work: HistogramStats
    overruns: int
    dropped_ticks: int
    systems: tuple[SystemStats, ...]
    gauges: Mapping[str, float]
    errors: Mapping[str, int]
    quarantined: tuple[str, ...]
    profile: str
    profile_reason: str
    emergency_reason: str | None
    #: Lateness and work over the last 10 s and 60 s, and the rate measured over 10 s.
    windowed: Windowed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        d = attrs.asdict(self, recurse=False)
        del d["windowed"]
        d["measured_tick_rate"] = self.windowed.measured_tick_rate
        d["windows"] = self.windowed.windows_dict()
        d["lateness"] = self.lateness.as_dict()
        d["work"] = self.work.as_dict()
        d["systems"] = [s.as_dict() for s in self.systems]
        d["gauges"] = dict(self.gauges)
        d["errors"] = dict(self.errors)
        d["quarantined"] = list(self.quarantined)
        return d


@attrs.frozen(kw_only=True)
class RunSummary:
    """What a finished run reports (``--summary-json`` writes ``as_dict()``)."""

    ticks: int
    tick_rate: float
    lateness: HistogramStats
    work: HistogramStats
    overruns: int
    dropped_ticks: int
    errors: Mapping[str, int]
    quarantined: tuple[str, ...]
    phase: str
    optimizer_adjustments: int
    exit_reason: str
    emergency: bool
    snapshot_written: bool

    def as_dict(self) -> dict[str, Any]:
        """The contract's summary object (plus a few extra keys)."""
        lat = self.lateness
        return {
            "ticks": self.ticks,
            "tick_rate": self.tick_rate,
            "lateness": {"p50": lat.p50, "p99": lat.p99, "p999": lat.p999, "max": lat.max},
            "work": {"p50": self.work.p50, "p99": self.work.p99, "max": self.work.max},
            "overruns": self.overruns,
            "dropped_ticks": self.dropped_ticks,
            "errors": dict(self.errors),
            "quarantined": list(self.quarantined),
            "phase": self.phase,
            "optimizer_adjustments": self.optimizer_adjustments,
            "exit_reason": self.exit_reason,
            "emergency": self.emergency,
        }

    @property
    def exit_code(self) -> int:
        """0 for a clean stop, 3 for an emergency with state preserved, 4 without."""
        if not self.emergency:
            return 0
        return 3 if self.snapshot_written else 4


@attrs.frozen(kw_only=True)
class SnapshotStatus:
    """The snapshotter at one moment."""

    folder: str
    last: str | None
    #: When ``last`` was written (Unix seconds).
    last_time: float | None
    stall: HistogramStats
    write: HistogramStats
    failures: int
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "folder": self.folder,
            "last": self.last,
            "last_time": self.last_time,
            "stall": self.stall.as_dict(),
            "write": self.write.as_dict(),
            "failures": self.failures,
            "problems": list(self.problems),
        }


@attrs.frozen(kw_only=True)
class StatusView:
    """Everything ``supervisor status`` shows."""

    stats: SupervisorStats
    alive: bool
    alive_detail: str
    ready: bool
    not_ready: tuple[str, ...]
    next_step: str
    emergency: Mapping[str, Any] | None
    lifecycle: tuple[LifecycleEvent, ...]
    machine: MachineFacts
    resources: Mapping[str, float]
    snapshots: SnapshotStatus
    redaction: bool
    service_failures: Mapping[str, int]
    optimizer: Mapping[str, Any]
    version: str
    pid: int
    #: Seconds since ``run()`` began (the trio clock); None before the first run.
    uptime_seconds: float | None
    #: The config file's absolute path, or what the config came from (``<built-in demo world>``).
    config_file: str
    #: The API address actually bound (``unix:/abs/path``, ``http://host:port``); None when off.
    listen: str | None
    #: The capabilities' own sections (``Supervisor.status_sections``), by name.
    sections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the statistics, then the rest)."""
        d = self.stats.as_dict()
        d.update(
            alive=self.alive,
            alive_detail=self.alive_detail,
            ready=self.ready,
            not_ready=list(self.not_ready),
            next_step=self.next_step,
            emergency=None if self.emergency is None else dict(self.emergency),
            lifecycle=[e.as_dict() for e in self.lifecycle],
            machine=self.machine.as_dict(),
            resources=dict(self.resources),
            snapshots=self.snapshots.as_dict(),
            redaction=self.redaction,
            services={"failures": dict(self.service_failures)},
            optimizer=dict(self.optimizer),
            version=self.version,
            pid=self.pid,
            uptime_seconds=self.uptime_seconds,
            config_file=self.config_file,
            listen=self.listen,
        )
        for name, section in self.sections.items():
            d.setdefault(name, dict(section))  # a section never hides a core key
        return d


@attrs.frozen(kw_only=True)
class ErrorView:
    """Recent error records (newest first) and groups by fingerprint, redacted when made."""

    records: tuple[Mapping[str, Any], ...]
    groups: tuple[Mapping[str, Any], ...]
    counts: Mapping[str, int]
    total: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "records": [dict(r) for r in self.records],
            "groups": [dict(g) for g in self.groups],
            "counts": dict(self.counts),
            "total": self.total,
        }


@attrs.frozen(kw_only=True)
class ShutdownResult:
    """The answer of ``shutdown``: stopping gracefully, or the emergency that happened."""

    tick: int
    phase: str
    #: The emergency's record (reason, source, tick, snapshot, timing); None for a graceful stop.
    emergency: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"stopping": true, "tick": n}``, or ``{"phase": ..., **emergency}``."""
        if self.emergency is None:
            return {"stopping": True, "tick": self.tick}
        return {"phase": self.phase, **self.emergency}


@attrs.frozen(kw_only=True)
class RestartResult:
    """The answer of ``restart``, once the systems tick again."""

    tick: int
    phase: str
    restored: tuple[str, ...]
    from_snapshot: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "tick": self.tick,
            "phase": self.phase,
            "restored": list(self.restored),
            "from_snapshot": self.from_snapshot,
        }


@attrs.frozen(kw_only=True)
class PhaseChange:
    """The answer of ``change_phase``, once the phase has changed."""

    before: str
    after: str
    forced: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {"before": self.before, "after": self.after, "forced": self.forced}


@attrs.frozen(kw_only=True)
class SystemAction:
    """The answer of ``quarantine`` and ``release``, once done (after the current tick)."""

    system: str
    state: str
    tick: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; ``detail`` is the line the CLI prints and the audit log keeps."""
        return {**attrs.asdict(self), "detail": f"{self.system} {self.state} at tick {self.tick}"}


@attrs.frozen(kw_only=True)
class SnapshotTaken:
    """The answer of ``snapshot``, once the file is written."""

    path: str
    tick: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return attrs.asdict(self)
