"""The state every room of the runtime shares, and the state of one run.

``Kernel`` is the narrow object the rooms (recovery, failures, snapshots,
lifecycle, the loop...) are given instead of the whole ``Supervisor``
(hypercorn's WorkerContext habit): the system table, the loop marker, the
phase machine, the active config, the error log. ``RunState`` is made fresh
by every ``run()``: a second run never sees the first one's stop reason.
"""

from __future__ import annotations

import array
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import ConfigError
from ._config import Config
from ._flags import Flags
from ._histogram import Histogram
from ._phase import Phase, PhaseMachine
from ._safecall import MESSAGE_CHARS, BreakerState, ErrorLog, ErrorRecord, bounded
from ._slots import LoopState, Slot, new_ring

if TYPE_CHECKING:
    from .._errors import SupervisorError
    from ._control import Caller
    from ._redact import Redactor
    from ._snapshot_format import Snapshot

__all__ = ["Kernel", "RunState"]


def validate_rate(hz: float) -> None:
    """Refuse a tick rate outside 0.1 to 10000 Hz (ConfigError)."""
    if isinstance(hz, bool) or not isinstance(hz, int | float) or not 0.1 <= hz <= 10_000:
        raise ConfigError(f"tick rate must be between 0.1 and 10000 Hz, got {hz!r}")


@attrs.define(eq=False)
class RunState:
    """One ``run()``: made fresh at its start, kept after it for ``summary`` and ``status``."""

    running: bool = False
    #: When ``run()`` began and ended (the trio clock): status's uptime counts between them.
    started_at: float | None = None
    ended_at: float | None = None
    #: The tick loop ends after the current tick (a stop, an emergency or a restart is due).
    stopping: bool = False
    #: ``stop()`` was called (its reason may be empty).
    stop_requested: bool = False
    stop_reason: str = ""
    #: A second signal cancelled the run.
    force: bool = False
    #: Set once the run has ended (not when a stop is asked for).
    stopped: trio.Event = attrs.field(factory=trio.Event)
    startup_error: SupervisorError | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    nursery: trio.Nursery | None = None
    tick_limit: int | None = None
    end_time: float = math.inf
    last_tick_at: float | None = None
    emergency_reason: str | None = None
    emergency_source: str | None = None
    emergency_at: float | None = None
    #: Set when the emergency has happened: systems stopped, the snapshot written.
    emergency_done: trio.Event = attrs.field(factory=trio.Event)
    emergency_info: dict[str, Any] | None = None
    snapshot_written: bool = False
    #: A snapshot captured before a restart whose critical system could not be
    #: built: the emergency that follows writes it instead of capturing again.
    preserved: Snapshot | None = None
    restart_requested: Caller | None = None
    restart_done: trio.Event = attrs.field(factory=trio.Event)
    restart_result: dict[str, Any] = attrs.field(factory=dict)
    wake: trio.Event = attrs.field(factory=trio.Event)

    @property
    def uptime(self) -> float | None:
        """Seconds since the run began (until it ended); None before any run."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else trio.current_time()
        return end - self.started_at

    @property
    def exit_reason(self) -> str:
        """Why the run ended (or will): the emergency, a forced stop, the stop's reason."""
        if self.emergency_reason is not None:
            return f"emergency: {self.emergency_reason}"
        if self.force:
            return "forced stop"
        return self.stop_reason or "completed"


@attrs.define(eq=False, kw_only=True)
class Kernel:
    """What the rooms of the runtime share (built and wired by ``Supervisor``)."""

    config: Config
    #: The base config with the current phase's overlay applied: what readiness,
    #: recovery, the watchdog and the API server all judge by.
    active: Config
    phases: PhaseMachine
    loop: LoopState
    redactor: Redactor
    errors: ErrorLog
    log: Any
    timer: Callable[[], float]
    wall: Callable[[], float]
    state_dir: Path
    persist: bool
    rate: float
    budget_fraction: float
    budget: float
    pending_rate: float | None = None
    slots: dict[str, Slot] = attrs.field(factory=dict)
    order: list[Slot] = attrs.field(factory=list)
    active_slots: list[Slot] = attrs.field(factory=list)
    #: What the next tick steps: the active systems, less throttled ones off their
    #: turn. Never the same list object as ``active_slots``: an emergency empties
    #: it in place, which ends the tick after the current step.
    runnable: list[Slot] = attrs.field(factory=list)
    #: The list the hot path steps through now (``runnable`` as the tick began:
    #: a quarantine mid-tick rebinds ``runnable``, not this one).
    stepping: list[Slot] = attrs.field(factory=list)
    throttled: bool = False
    # Gauge values by published name, and each name a system reported -> its
    # published (validated, redacted) name. Mutated in place, never rebound:
    # every Context holds both.
    gauges: dict[str, float] = attrs.field(factory=dict)
    gauge_keys: dict[str, str] = attrs.field(factory=dict)
    last_record: ErrorRecord | None = None
    #: The loop's own counters and histograms (tick lateness and work).
    lateness: Histogram = attrs.field(factory=Histogram)
    work: Histogram = attrs.field(factory=Histogram)
    work_ring: array.array[float] = attrs.field(factory=new_ring)
    overruns: int = 0
    dropped_ticks: int = 0
    run: RunState = attrs.field(factory=RunState)
    #: Set by the supervisor: the gauge desk's ``report`` (``ctx.report`` off its fast path).
    gauge_reporter: Callable[[Slot, object, object], None] | None = None
    #: Flags and experiments (``sup.flags``; ``ctx.flag``, ``ctx.variant``).
    flags: Flags = attrs.field(factory=Flags)

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self.phases.phase

    @property
    def tick_rate(self) -> float:
        """The tick rate in Hz (a pending change counts)."""
        return self.pending_rate or self.rate

    @property
    def stop_timeout(self) -> float:
        """Seconds a ``stop`` (and, five times, a ``start``) hook gets."""
        return self.active.supervisor.stop_timeout

    @property
    def redaction(self) -> bool:
        """Whether personal data is redacted: the flag, else on outside DEVELOPMENT."""
        flag = self.active.features.redaction
        if flag is not None:
            return flag
        phase = self.phases.phase
        if phase is Phase.EMERGENCY_SHUTDOWN:
            phase = self.phases.interrupted or phase
        return phase is not Phase.DEVELOPMENT

    def text(self, text: str) -> str:
        """Free text someone else wrote (a reason, a caller): redacted once, then bounded."""
        plain = str.__str__(text) if isinstance(text, str) else "<not text>"
        return bounded(plain, MESSAGE_CHARS, self.redactor)

    def system(self, name: str) -> Any:
        """The registered system called ``name`` (KeyError when there is none)."""
        return self.slots[name].system

    def report_gauge(self, slot: Slot, name: object, value: object) -> None:
        """``ctx.report`` off its fast path: a new name, or a value that is not a plain number."""
        assert self.gauge_reporter is not None
        self.gauge_reporter(slot, name, value)

    def apply_rate(self) -> None:
        """Take the pending tick rate, if any."""
        if self.pending_rate is not None:
            self.rate = self.pending_rate
            self.pending_rate = None
            self.loop.dt = 1.0 / self.rate
            self.budget = self.budget_fraction * self.loop.dt

    def set_tick_rate(self, hz: float) -> None:
        """Ask for a new rate: taken now when not running, else by the loop at its next tick.

        Raises:
            ConfigError: ``hz`` is out of range.
        """
        validate_rate(hz)
        self.pending_rate = float(hz)
        if not self.run.running:
            self.apply_rate()

    def stop(self, reason: str) -> None:
        """The run ends gracefully after the current tick."""
        run = self.run
        if not run.stop_reason:
            run.stop_reason = self.text(reason)
        run.stop_requested = True
        run.stopping = True
        run.wake.set()

    def request_emergency(self, reason: str, *, source: str = "operator") -> None:
        """EMERGENCY_SHUTDOWN after the current step: the rest of this tick does not step."""
        run = self.run
        if run.emergency_reason is not None:
            return
        # Redacted once, here: every surface (status, snapshots, summary) shows this text.
        run.emergency_reason = self.text(reason)
        run.emergency_source = self.text(source)
        run.emergency_at = time.perf_counter()
        run.stopping = True
        # Emptied in place: the hot path's `for` over this very list ends after
        # the step running now (no check per step). Rebuilt when systems start.
        self.stepping.clear()
        self.runnable.clear()
        run.wake.set()

    def quarantined(self) -> tuple[str, ...]:
        """Names of the systems in quarantine now."""
        return tuple(s.name for s in self.slots.values() if s.quarantined)

    def rebuild_active(self) -> None:
        """Recompute the active systems (started, not quarantined) after a change."""
        tick = self.loop.tick
        active = [
            s
            for s in self.order
            if s.started and s.breaker.state in (BreakerState.CLOSED, BreakerState.HALF_OPEN)
        ]
        for slot in self.active_slots:
            if slot not in active:
                slot.window_end = tick
        for slot in active:
            if slot.window_end is not None:
                slot.window_end = None
                slot.active_since = tick
        self.active_slots = active
        self.runnable = list(active)

    def public_record(self, record: ErrorRecord) -> dict[str, Any]:
        """A record as callers and snapshots see it: no traceback in production.

        Records are redacted when made (and the kept ones when a redacting
        phase begins), so nothing is redacted here.
        """
        d = record.as_dict()
        if self.phase is Phase.PRODUCTION or self.phases.interrupted is Phase.PRODUCTION:
            d["traceback"] = None
            d["stack"] = None
        return d
