"""The supervisor: registration, the fixed-tick loop, SafeCall, emergency.

The loop schedules tick k at ``t0 + k / rate`` on trio's clock, so tests on
``trio.testing.MockClock`` see exact times. The hot path -- one tick, one
system step -- makes no call it can avoid: hooks were resolved at
registration, a step is a call in ``try``, timing is two reads of the
timer, and nothing is logged when a step succeeds.
"""

from __future__ import annotations

import array
import collections
import contextlib
import functools
import gc
import math
import os
import signal
import time
import types
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import msgpack
import psutil
import trio

from .._errors import (
    ConfigError,
    DependencyError,
    PhaseError,
    PluginError,
    StartRefused,
    StartupError,
    StepInterrupted,
    StepTimeout,
    SupervisorError,
)
from .._logging import get_logger
from ._config import Config
from ._context import GAUGE_INT_LIMIT, GAUGE_NAME, MAX_GAUGE_NAME, MAX_GAUGES, Context, GaugeError
from ._control import Caller, LifecycleEvent, ReadinessReport, Refused
from ._histogram import Histogram, HistogramStats
from ._optimizer import Decision, Observation, Optimizer, SystemLoad
from ._phase import Phase, PhaseMachine
from ._plugins import SystemInfo, build, discover, inspect_system, is_import_string, load_target
from ._plugins import order as dependency_order
from ._profiles import MachineFacts, choose_profile, detect_facts
from ._readiness import ReadinessFacts, assess, security_only
from ._redact import Redactor
from ._safecall import (
    MESSAGE_CHARS,
    Breaker,
    BreakerState,
    ErrorLog,
    ErrorRecord,
    TokenBucket,
    bounded,
    fingerprint,
    is_a,
    is_runtime_cancel,
    make_record,
    redact_kept,
    safe_message,
    safe_type_name,
)
from ._snapshot import SnapshotStore
from ._snapshot_format import MAX_TICK, Snapshot
from ._timing import make_sleeper
from ._watchdog import Watchdog

if TYPE_CHECKING:
    from .._server._metrics import SupervisorMetrics

__all__ = ["RunSummary", "Supervisor", "SupervisorStats", "SystemStats"]

_HEALTH_VALUES = ("healthy", "degraded", "unhealthy")
#: Each system's step times go to a ring of this many ticks on the hot path
#: (one store into an array of doubles); status, metrics and the optimizer
#: read windowed quantiles from it. A power of two.
STEP_RING = 1024
_RING_MASK = STEP_RING - 1
#: Seconds between the background samples of resources (never per tick).
HOUSEKEEPING_INTERVAL = 1.0
#: Seconds of the clock between optimizer observations, and the fewest ticks one needs.
OPTIMIZE_INTERVAL = 0.25
OPTIMIZE_MIN_TICKS = 5
#: Tracebacks formatted per second across all fingerprints (a storm reuses them),
#: and at most this many at once.
FORMAT_BUDGET = 200
FORMAT_BURST = 10
#: Seconds during which further failures of one fingerprint fold into one storm line.
LOG_FOLD_INTERVAL = 5.0
#: Error log lines per second at most (and at once); storm lines report the rest.
LOG_BUDGET = 20
LOG_BURST = 5
#: Fingerprints folded at once (bounded memory); storms wider than STORM_LINES
#: are reported in one aggregate line.
MAX_LOG_FOLDS = 5_000
STORM_LINES = 10
#: Seconds of the clock between two calls of each system's ``health()`` (from the tick loop).
HEALTH_INTERVAL = 1.0
#: A crashed service is restarted after this backoff (seconds), doubling up to the maximum;
#: a service that ran for SERVICE_BACKOFF_MAX before crashing starts again from the initial one.
SERVICE_BACKOFF_INITIAL = 0.1
SERVICE_BACKOFF_MAX = 10.0
#: Seconds services get to return on their own once ``closing`` is set, before they are cancelled.
SERVICE_GRACE = 2.0
#: Lifecycle events kept (a ring: the oldest go first).
LIFECYCLE_HISTORY = 1000
#: Used when a timeout read from a (public, unvalidated) Config is NaN, negative or infinite.
DEFAULT_STOP_TIMEOUT = 2.0
DEFAULT_SNAPSHOT_INTERVAL = 5.0
#: Gauge errors recorded per system per second at most; the rest are counted in errors.dropped.
GAUGE_ERROR_INTERVAL = 1.0


def _non_negative(value: float, default: float) -> float:
    """``value`` if it is a finite, non-negative number (of seconds, of MB), else ``default``.

    ``Config`` is public and may be built without the file's validators: a
    NaN must never reach ``trio.move_on_after`` or a deadline comparison
    (where it silently disables the check).
    """
    return value if isinstance(value, int | float) and 0 <= value < math.inf else default


def _health_value(value: object) -> str:
    """What ``health()`` returned, as one of the three words (anything else is unhealthy)."""
    # type() first: `in` would run a hostile object's __eq__.
    return value if type(value) is str and value in _HEALTH_VALUES else "unhealthy"


def _valid_tick(tick: object) -> bool:
    """Whether a snapshot's tick is one a run can continue from.

    Below the store's MAX_TICK (2**53): beyond it a tick no longer survives a
    float (JSON, Prometheus), so such a snapshot is corrupt or forged.
    """
    return type(tick) is int and 0 <= tick < MAX_TICK


def _gauge_number(value: object) -> float | None:
    """``value`` if it is a gauge's number (an int within 64 bits, a finite float), else None."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int and -GAUGE_INT_LIMIT < value < GAUGE_INT_LIMIT:
        return value
    return None


def _overran(message: str) -> NoReturn:
    """Raise the StepTimeout of an async hook or tick that overran (a function: ruff TRY301)."""
    raise StepTimeout(message)


def _service_name(service: Any) -> str:
    """A service's name for logs and ``service_failures``: its function's name."""
    target = getattr(service, "func", service)  # a functools.partial names its function
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(service).__name__


class _ServiceStatus:
    """The ``task_status`` a supervised service gets: only its first ``started()`` counts.

    A restarted service calls ``started()`` again; by then the run is long
    past start-up, so the call is ignored.
    """

    __slots__ = ("_outer", "done")

    def __init__(self, outer: trio.TaskStatus[Any]) -> None:
        self._outer = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._outer.started(value)


@attrs.define(eq=False, kw_only=True)
class _Slot:
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
    ring: array.array[float] = attrs.field(factory=lambda: array.array("d", bytes(8 * STEP_RING)))
    failed_tick: int = -1
    #: The ring holds this system's steps for ticks [active_since, window_end).
    active_since: int = 0
    window_end: int | None = 0
    hang_stack: str | None = None
    #: The last value of ``health()``, refreshed from the tick loop (never on request).
    health: str = "healthy"
    #: The hook whose failure quarantined the system: its half-open retry calls it first.
    trial_hook: str | None = None
    #: When the last gauge error of this system was recorded (they are rate-limited).
    gauge_error_at: float = -math.inf

    @property
    def state(self) -> str:
        if not self.started and self.breaker.state is BreakerState.CLOSED:
            return "stopped"
        return self.breaker.state.value


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        d = attrs.asdict(self, recurse=False)
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


def _default_name(factory: Any, target: str) -> str:
    """The name an import-string system runs under: its ``name`` default, else its class name."""
    if attrs.has(factory):
        field = attrs.fields_dict(factory).get("name")
        default = field.default if field is not None else None
    else:
        default = getattr(factory, "name", None)
    if isinstance(default, str) and default:
        return default
    return target.rpartition(":")[2].lower()


class Supervisor:
    """Hosts game systems and ticks them at a fixed rate.

    Args:
        config: the validated config (default: all defaults).
        phase: the starting phase (default: the config's).
        tick_rate: overrides the config and the profile.
        timer: reads real elapsed time to measure work (default
            ``time.perf_counter``); tests inject a fake to drive the optimizer.
        wall: wall-clock time for error records (default ``time.time``).
        facts: the machine's facts (default: read with psutil once).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        phase: Phase | str | None = None,
        tick_rate: float | None = None,
        profile: str | None = None,
        timer: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
        facts: MachineFacts | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        persist: bool = True,
    ) -> None:
        self.config = config if config is not None else Config()
        if phase is None:
            phase = self.config.supervisor.phase
        start = Phase.parse(phase) if isinstance(phase, str) else phase
        if start is Phase.EMERGENCY_SHUTDOWN:
            raise ConfigError("cannot start in emergency_shutdown", key="supervisor.phase")
        self._phases = PhaseMachine(start, history=LIFECYCLE_HISTORY)
        self._effective = self.config.for_phase(start)
        self.facts = facts if facts is not None else detect_facts()
        self.profile, self.profile_reason = choose_profile(
            self._effective.profiles, profile or self._effective.supervisor.profile, self.facts
        )
        rate = tick_rate or self._effective.supervisor.tick_rate or self.profile.tick_rate
        self._validate_rate(rate)
        self._rate = float(rate)
        self._budget_fraction = (
            self._effective.supervisor.budget_fraction or self.profile.budget_fraction
        )
        self._dt = 1.0 / self._rate
        self._budget = self._budget_fraction * self._dt
        self._pending_rate: float | None = None
        self._timer = timer
        self._wall = wall
        self._log = get_logger()

        self._slots: dict[str, _Slot] = {}
        self._order: list[_Slot] = []
        self._active: list[_Slot] = []
        # What the next tick steps: the active systems, less throttled ones off their turn.
        self._runnable: list[_Slot] = []
        self._throttled = False
        self._half_open: list[_Slot] = []
        self._next_retry = math.inf

        self._tick = 0
        self._now = 0.0
        # Gauge values by published name, and each name a system reported -> its
        # published (validated, redacted) name. Mutated in place, never rebound:
        # every Context holds both.
        self._gauges: dict[str, float] = {}
        self._gauge_keys: dict[str, str] = {}
        self._last_record: ErrorRecord | None = None
        self._reused_tb: str | None = None
        self._next_health = math.inf
        self.errors = ErrorLog(history=self._effective.recovery.history)
        self.lateness = Histogram()
        self.work = Histogram()
        self.overruns = 0
        self.dropped_ticks = 0
        self.optimizer_adjustments = 0
        self._critical_errors: list[float] = []

        # Read by the watchdog thread: the slot whose hook runs now, and a
        # counter bumped around every non-tick hook call.
        self._current: _Slot | None = None
        self._call_seq = 0
        self._watchdog: Watchdog | None = None

        self._running = False
        self._stopping = False
        self._stop_reason = ""
        self._emergency_reason: str | None = None
        self._emergency_source: str | None = None
        self._snapshot_written = False
        self._stopped = trio.Event()
        self._force = False
        self._startup_error: SupervisorError | None = None
        self._run_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._tick_limit: int | None = None
        self._end_time = math.inf
        self._last_tick_at: float | None = None
        self._work_ring = array.array("d", bytes(8 * STEP_RING))
        self._dropped_marks: collections.deque[tuple[int, int]] = collections.deque(maxlen=60)
        self._emergency_at: float | None = None
        self._emergency_done = trio.Event()
        self.emergency_info: dict[str, Any] | None = None
        # A snapshot captured before a restart whose critical system could not be
        # built: the emergency that follows writes it instead of capturing again.
        self._preserved: Snapshot | None = None
        self._restart_requested: Caller | None = None
        self._restart_done = trio.Event()
        self._restart_result: dict[str, Any] = {}
        self._wake = trio.Event()
        self._format_tokens = TokenBucket(FORMAT_BUDGET, FORMAT_BURST)
        self._log_folds: dict[str, tuple[float, int, str, str]] = {}
        self._log_tokens = TokenBucket(LOG_BUDGET, LOG_BURST)
        self.optimizer: Optimizer | None = None
        self._next_observe = math.inf
        self._observed = (0, 0.0, 0)  # (tick, time, dropped) at the last observation

        #: Whether snapshots are written (``supervisor.testing`` turns it off).
        self.persist = persist
        self.state_dir = (
            Path(state_dir)
            if state_dir is not None
            else self.config.path(self._effective.supervisor.state_dir)
        )
        self.snapshots = SnapshotStore(
            self.state_dir / "snapshots",
            generations=self._effective.supervisor.snapshot_generations,
            key=self._effective.supervisor.snapshot_key_bytes,
        )
        self.last_snapshot: Path | None = None
        self.snapshot_problems: list[str] = []
        self.snapshot_failures = 0
        self.snapshot_stall = Histogram()
        self.snapshot_write = Histogram()
        self._next_snapshot = math.inf
        self._snapshot_lock = trio.Lock()
        self.snapshots_skipped = 0
        self.resources: dict[str, float] = {}
        self.redactor = Redactor(enabled=self.redaction)
        self._metrics: SupervisorMetrics | None = None

        #: Long-running services started with the run, each
        #: ``async def svc(sup, task_status=trio.TASK_STATUS_IGNORED)`` (the HTTP API
        #: registers itself here; the core does not import it). Each runs supervised:
        #: a crash after ``task_status.started()`` is logged, counted and restarted
        #: with backoff; the tick goes on.
        self.services: list[Callable[..., Awaitable[Any]]] = []
        #: Crashes of each service (by its function's name).
        self.service_failures: collections.Counter[str] = collections.Counter()
        #: Set when the run is ending (graceful stop, exit after an emergency, forced
        #: stop): services should return; they are cancelled SERVICE_GRACE seconds later.
        self.closing = trio.Event()
        self._services_running = 0
        self._services_idle = trio.Event()
        #: Called with the new phase after every phase change.
        self.phase_listeners: list[Callable[[Phase], None]] = []
        #: Called with every record right after it is made (the durable store's
        #: queue): each must be O(1), never block; one that raises is counted in
        #: ``errors.dropped["sink_failed"]`` and removed.
        self.record_sinks: list[Callable[[ErrorRecord], None]] = []
        #: Extra error-sink checks for readiness: each returns a problem or None.
        self.sink_checks: list[Callable[[], str | None]] = []

    # ------------------------------------------------------------------ registration

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Supervisor:
        """A supervisor with the systems of ``config``'s ``[systems]`` section registered.

        With no ``enabled`` list, every system found by entry point is enabled.

        Raises:
            ConfigError: a system's arguments are wrong.
            PluginError: a system cannot be found or is invalid.
        """
        sup = cls(config, **kwargs)
        sup.register_from_config()
        return sup

    def register_from_config(self) -> None:
        """Register the systems named by the config (see ``from_config``)."""
        cfg = self._effective.systems
        found = discover()
        enabled = cfg.enabled if cfg.enabled is not None else tuple(found)
        source = self.config.source
        configured: set[str] = set()
        for entry in enabled:
            options = dict(cfg.options.get(entry, {}))
            target = options.pop("use", None) or entry
            if is_import_string(target):
                factory = load_target(target, system=entry)
                origin = f"import string ({target})"
                name = entry
                if is_import_string(entry):
                    name = _default_name(factory, target)
                    options = dict(cfg.options.get(name, {}))
                    options.pop("use", None)
                    configured.add(name)
            elif target in found:
                src = found[target]
                factory = src.load()
                origin = f"{src.origin}: {src.target}"
                name = entry
            else:
                known = ", ".join(sorted(found)) or "none installed"
                raise ConfigError(
                    f"unknown system {target!r} (discoverable: {known}; or use 'pkg.module:Class')",
                    source=source,
                    key="systems.enabled",
                )
            configured.add(entry)
            # The same factory builds it now and again on every restart.
            make = functools.partial(build, name, factory, options, source=source)
            self.register(make(), name=name, origin=origin, factory=make)
        try:
            dependency_order(s.info for s in self._slots.values())
        except DependencyError as exc:
            # Found here, before anything starts, and reported against the config.
            raise ConfigError(str(exc), source=source, key="systems") from None
        for name in cfg.options:
            if name not in configured:
                raise ConfigError(
                    "configures a system that is not enabled (add it to [systems] enabled)",
                    source=source,
                    key=f"systems.{name}",
                )

    def register(
        self,
        system: Any,
        *,
        name: str | None = None,
        origin: str = "code",
        factory: Callable[[], Any] | None = None,
    ) -> None:
        """Register a system instance; its hooks are resolved now, once.

        Args:
            system: any object with a ``tick(ctx)`` method.
            name: the name to run it under (default: its ``name`` attribute,
                else its class name in lower case).
            origin: where it came from, for ``supervisor systems`` and status.
            factory: builds a fresh instance for ``restart``; without one the
                same instance is kept and only its state restored.

        Raises:
            PluginError: the system is invalid or the name is taken.
        """
        if self._running:
            raise PluginError("cannot register while running", system=name)
        if name is None:
            name = getattr(system, "name", None) or type(system).__name__.lower()
        if name in self._slots:
            raise PluginError("a system of this name is already registered", system=name)
        info = inspect_system(system, name, origin)
        cfg = self._effective.recovery
        slot = _Slot(
            name=name,
            system=system,
            info=info,
            tick_fn=info.tick.fn,
            tick_async=info.tick.is_async,
            factory=factory,
            breaker=Breaker(
                max_restarts=cfg.max_restarts,
                window=cfg.window_seconds,
                backoff_initial=cfg.backoff_initial,
                backoff_max=cfg.backoff_max,
            ),
        )
        slot.ctx = Context(self, slot, get_logger(system=name))
        slot.offset = len(self._slots)
        self._slots[name] = slot
        # The system's own name, when it keeps one, is the name it runs under.
        if getattr(system, "name", name) != name:
            with contextlib.suppress(AttributeError, TypeError):
                system.name = name

    def system(self, name: str) -> Any:
        """The registered system called ``name``.

        Raises:
            KeyError: no such system.
        """
        return self._slots[name].system

    @property
    def names(self) -> list[str]:
        """Registered system names, in tick order once running."""
        return [s.name for s in self._order] if self._order else list(self._slots)

    # ------------------------------------------------------------------ control

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._phases.phase

    @property
    def access_phase(self) -> Phase:
        """The phase whose API access rules apply: during an emergency, the one it interrupted."""
        return self._phases.interrupted or self._phases.phase

    @property
    def gauges(self) -> dict[str, float]:
        """The gauges systems reported with ``ctx.report``."""
        return self._gauges

    @property
    def phase_history(self) -> tuple[LifecycleEvent, ...]:
        """Every phase change and lifecycle action, oldest first."""
        return tuple(self._phases.history)

    @property
    def tick(self) -> int:
        """Ticks run so far (continues across restore)."""
        return self._tick

    @property
    def tick_rate(self) -> float:
        """The current tick rate in Hz."""
        return self._pending_rate or self._rate

    @property
    def budget(self) -> float:
        """The work budget of one tick, in seconds."""
        return self._budget

    @staticmethod
    def _validate_rate(hz: float) -> None:
        if isinstance(hz, bool) or not isinstance(hz, int | float) or not 0.1 <= hz <= 10_000:
            raise ConfigError(f"tick rate must be between 0.1 and 10000 Hz, got {hz!r}")

    def set_tick_rate(self, hz: float) -> None:
        """Change the tick rate; the schedule re-anchors at the next tick.

        Raises:
            ConfigError: ``hz`` is out of range.
        """
        self._validate_rate(hz)
        self._pending_rate = float(hz)
        if not self._running:
            self._apply_rate()

    def _apply_rate(self) -> None:
        if self._pending_rate is not None:
            self._rate = self._pending_rate
            self._pending_rate = None
            self._dt = 1.0 / self._rate
            self._budget = self._budget_fraction * self._dt

    def stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully after the current tick (systems stopped in reverse order)."""
        if not self._stop_reason:
            self._stop_reason = self._text(reason)
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    def request_emergency(self, reason: str, *, source: str = "operator") -> None:
        """Enter EMERGENCY_SHUTDOWN after the current step: ticking stops, systems stop."""
        if self._emergency_reason is not None:
            return
        # Redacted once, here: every surface (status, snapshots, summary) shows this text.
        self._emergency_reason = self._text(reason)
        self._emergency_source = self._text(source)
        self._emergency_at = time.perf_counter()
        self._stopping = True

    def _text(self, text: str) -> str:
        """Free text someone else wrote (a reason, a caller): redacted once, then bounded."""
        plain = str.__str__(text) if isinstance(text, str) else "<not text>"
        return bounded(plain, MESSAGE_CHARS, self.redactor)

    @property
    def emergency_reason(self) -> str | None:
        """Why the supervisor entered EMERGENCY_SHUTDOWN, if it did."""
        return self._emergency_reason

    # ------------------------------------------------------------------ SafeCall

    @staticmethod
    def _health(slot: _Slot) -> str:
        """The system's health as of its last ``health()`` call: never calls plugin code."""
        if slot.breaker.state is BreakerState.QUARANTINED:
            return "unhealthy"
        return slot.health

    async def _check_health(self, now: float) -> None:
        """Call every active system's ``health()`` and cache it: once a HEALTH_INTERVAL, post-tick.

        Under SafeCall (a hanging sync one is interrupted by the watchdog, an
        async one gets the tick budget) and against the system's restart
        budget. Probes and status read the cache (``tests/test_faults_plugins.py``).
        """
        self._next_health = now + HEALTH_INTERVAL
        for slot in self._active:
            if "health" in slot.info.hooks:
                await self._probe_health(slot, now)

    async def _probe_health(self, slot: _Slot, now: float) -> None:
        ok, value = await self._call(slot, "health", timeout=self._budget)
        if ok:
            slot.health = _health_value(value)
        else:
            slot.health = "unhealthy"
            self._count_failure(slot, "health", now)

    def _record(
        self,
        slot: _Slot,
        hook: str,
        exc: BaseException,
        *,
        kind: str = "error",
        failed: bool = True,
    ) -> ErrorRecord:
        """Make, redact and keep the record of ``exc``; ``failed`` marks the step as failed.

        Building it runs plugin code (``__str__``, ``__notes__``...), guarded in
        ``make_record``; the slot is marked meanwhile so that the watchdog
        interrupts a ``__str__`` that hangs. (A gauge error is recorded from
        inside the system's own step: the marker is put back as it was.)
        """
        marked = self._current
        self._current = slot
        self._call_seq += 1
        try:
            record = self._make_record(slot, hook, exc, kind)
        except StepInterrupted:  # landed between make_record's own guards
            record = self._make_record(
                slot, hook, StepInterrupted("recording this error hung and was interrupted"), kind
            )
        finally:
            self._current = marked
            self._call_seq += 1
        self._last_record = record
        self.errors.add(record, formatted=record.traceback is not self._reused_tb)
        for sink in self.record_sinks:
            self._to_sink(sink, record)
        if failed:
            slot.failed_tick = self._tick
        return record

    def _to_sink(self, sink: Callable[[ErrorRecord], None], record: ErrorRecord) -> None:
        try:
            sink(record)
        except Exception:
            self.errors.dropped["sink_failed"] += 1
            # Rebound, not edited in place: the loop over the old list goes on.
            self.record_sinks = [s for s in self.record_sinks if s is not sink]

    def _make_record(self, slot: _Slot, hook: str, exc: BaseException, kind: str) -> ErrorRecord:
        stack = None
        if is_a(exc, StepInterrupted):
            kind = "interrupted"
            stack, slot.hang_stack = slot.hang_stack, None
        elif is_a(exc, StepTimeout):
            kind = "timeout"
        now = self._wall()
        fp = fingerprint(exc)
        # Formatting a traceback is the costly part of a record: an error storm
        # reuses its fingerprint's, formatted at most once a second, and all
        # fingerprints together at most FORMAT_BUDGET times a second, evenly.
        tb = self.errors.recent_traceback(fp, now, 1.0)
        if tb is None and not self._format_tokens.take(now):
            tb = "(traceback not formatted: error storm)"
            self.errors.dropped["traceback_budget"] += 1
        self._reused_tb = tb
        return make_record(
            exc,
            fingerprint_value=fp,
            traceback_text=tb,
            time=now,
            tick=self._tick,
            system=slot.name,
            hook=hook,
            phase=self.phase.value,
            gauges=self._gauges,
            health=self._health(slot),
            traceback_limit=self._effective.recovery.traceback_limit,
            kind=kind,
            stack=stack,
            redactor=self.redactor,
            checkpoint=self._new_call,
        )

    def _new_call(self) -> None:
        """A new call into plugin code on the marked slot: the watchdog's clock starts afresh."""
        self._call_seq += 1

    def _report_gauge(self, slot: _Slot, name: object, value: object) -> None:
        """``ctx.report`` off its fast path: a new name, or a value that is not a plain number.

        A bad gauge is the reporting system's error (kind ``"gauge"``), never
        raised into it and never published, so ``/metrics`` cannot fail on it.
        A ``bool`` is published as 0 or 1.
        """
        if type(value) is bool:
            value = int(value)
        key = self._gauge_keys.get(name) if type(name) is str else None
        problem = None
        if not isinstance(name, str) or type(name) is not str:
            problem = f"a gauge name must be a str, not {safe_type_name(name)}"
        elif key is None:
            if len(name) > MAX_GAUGE_NAME or GAUGE_NAME.fullmatch(name) is None:
                shown = name[:MAX_GAUGE_NAME] + ("..." if len(name) > MAX_GAUGE_NAME else "")
                problem = (
                    f"gauge name {shown!r} refused: it must match [A-Za-z_][A-Za-z0-9_]* "
                    f"and be at most {MAX_GAUGE_NAME} characters"
                )
            elif len(self._gauge_keys) >= MAX_GAUGES:
                self.errors.dropped["gauge_limit"] += 1
                problem = f"gauge {name!r} refused: at most {MAX_GAUGES} gauges in all"
        number = _gauge_number(value)
        if problem is None and number is None:
            what = "a non-finite float" if type(value) is float else safe_type_name(value)
            problem = (
                f"gauge {key or name!r} refused: its value must be a finite int or float, "
                f"not {what}"
            )
        if problem is not None or number is None:
            self._gauge_error(slot, problem or "gauge refused")
            return
        if key is None:
            assert isinstance(name, str)
            key = self.redactor.text(name)
            self._gauge_keys[name] = key
        self._gauges[key] = number

    def _gauge_error(self, slot: _Slot, problem: str) -> None:
        """Record a refused gauge, at most once a GAUGE_ERROR_INTERVAL per system."""
        now = self._now
        if now - slot.gauge_error_at < GAUGE_ERROR_INTERVAL:
            self.errors.dropped["gauge_error"] += 1
            return
        slot.gauge_error_at = now
        record = self._record(slot, "report", GaugeError(problem), kind="gauge", failed=False)
        self._log_failure(record)

    def _log_failure(self, record: ErrorRecord) -> None:
        """Log a failure, folding storms.

        One line per fingerprint per ``LOG_FOLD_INTERVAL``, and at most
        ``LOG_BUDGET`` such lines a second in all: past it, a new fingerprint
        is counted (and reported by the next storm line) instead of logged.
        """
        folds = self._log_folds
        fold = folds.get(record.fingerprint)
        now = record.time
        # Folds are tuples of plain values: the cyclic GC stops tracking them,
        # so thousands of them cost a full collection nothing.
        if fold is not None and now - fold[0] < LOG_FOLD_INTERVAL:
            folds[record.fingerprint] = (fold[0], fold[1] + 1, fold[2], fold[3])
            return
        if fold is not None and fold[1]:
            self._log_storm(record.fingerprint, fold)
        if not self._log_tokens.take(now):
            folds[record.fingerprint] = (now, 1, record.system, record.exc_type)
        else:
            folds[record.fingerprint] = (now, 0, record.system, record.exc_type)
            self._log.error(
                "system.error",
                system=record.system,
                hook=record.hook,
                tick=record.tick,
                error=record.exc_type,
                message=record.message,
                fingerprint=record.fingerprint,
                kind=record.kind,
            )
        if len(folds) > MAX_LOG_FOLDS:
            folds.pop(next(iter(folds)))
            self.errors.dropped["log_fold_evicted"] += 1

    def _log_storm(self, fp: str, fold: tuple[float, int, str, str]) -> None:
        self._log.error(
            "system.error_storm",
            fingerprint=fp,
            system=fold[2],
            error=fold[3],
            suppressed=fold[1],
            interval=LOG_FOLD_INTERVAL,
        )

    def _flush_log_folds(self, *, all_folds: bool = False) -> None:
        """Report folded failures: a line per fingerprint, or one line for a wide storm."""
        now = self._wall()
        due = [
            (fp, fold)
            for fp, fold in self._log_folds.items()
            if all_folds or now - fold[0] >= LOG_FOLD_INTERVAL
        ]
        storms = [(fp, fold) for fp, fold in due if fold[1]]
        if len(storms) <= STORM_LINES:
            for fp, fold in storms:
                self._log_storm(fp, fold)
        else:
            storms.sort(key=lambda item: item[1][1], reverse=True)
            self._log.error(
                "system.error_storm",
                fingerprints=len(storms),
                suppressed=sum(fold[1] for _, fold in storms),
                top=[
                    {"fingerprint": fp, "system": f[2], "error": f[3], "suppressed": f[1]}
                    for fp, f in storms[:STORM_LINES]
                ],
                interval=LOG_FOLD_INTERVAL,
            )
        for fp, _ in due:
            del self._log_folds[fp]

    @types.coroutine
    def _watched(self, slot: _Slot, coro: Any) -> Any:
        """Await ``coro``, marking ``slot`` as the running step only while its own code runs.

        While the coroutine waits, the loop thread runs trio's scheduler (and
        other tasks): the hang watchdog must not count that time against the
        system, nor interrupt the scheduler. So the coroutine is driven step
        by step, and the marker is set around each step only.
        """
        value: Any = None
        error: BaseException | None = None
        while True:
            self._current = slot
            self._call_seq += 1
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                self._current = None
                self._call_seq += 1
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # passed on into the coroutine
                value, error = None, exc

    async def _call(
        self, slot: _Slot, hook: str, *args: Any, timeout: float | None = None
    ) -> tuple[bool, Any]:
        """Call an optional hook through SafeCall: ``(True, result)`` or ``(False, exception)``.

        Everything the hook raises is its failure (``KeyboardInterrupt``,
        ``SystemExit`` and ``GeneratorExit`` included), except the runtime's
        own cancellation (``is_runtime_cancel``). A sync hook is bounded by the
        watchdog's ``kill_timeout`` (the slot is marked while it runs), an
        async one by ``timeout``.
        """
        resolved = slot.info.hooks.get(hook)
        if resolved is None:
            return True, None
        self._call_seq += 1
        self._current = slot
        try:
            if resolved.is_async:
                limit = (
                    math.inf if timeout is None else _non_negative(timeout, DEFAULT_STOP_TIMEOUT)
                )
                with trio.move_on_after(limit):
                    return True, await self._watched(slot, resolved.fn(*args))
                _overran(f"{hook} overran its {limit:g} s deadline and was abandoned")
            return True, resolved.fn(*args)
        except BaseException as exc:
            self._current = None
            if is_runtime_cancel(exc):
                raise
            self._log_failure(self._record(slot, hook, exc))
            return False, exc
        finally:
            self._current = None
            self._call_seq += 1

    @property
    def _stop_timeout(self) -> float:
        return _non_negative(self._effective.supervisor.stop_timeout, DEFAULT_STOP_TIMEOUT)

    def _count_failure(self, slot: _Slot, hook: str, now: float) -> None:
        """A hook other than ``tick`` failed: it counts against the system's restart budget.

        Past the budget the system is quarantined, and its half-open retry
        calls that hook again before the system ticks (see ``_retry_quarantined``).
        """
        if slot.breaker.state is BreakerState.QUARANTINED:
            return
        if not slot.breaker.failure(now):
            self._quarantine(slot, now, trial=hook)

    async def _step_failed(self, slot: _Slot, hook: str, exc: BaseException) -> None:
        """A tick step failed: record, then recover, quarantine or escalate."""
        record = self._record(slot, hook, exc)
        now = trio.current_time()
        self._log_failure(record)
        recovery = self._effective.recovery
        if slot.info.critical:
            horizon = now - recovery.window_seconds
            self._critical_errors = [t for t in self._critical_errors if t > horizon]
            self._critical_errors.append(now)
            if len(self._critical_errors) >= recovery.critical_error_limit:
                self.request_emergency(
                    f"critical_error_limit reached: {len(self._critical_errors)} critical errors "
                    f"within {recovery.window_seconds:g} s (last: {slot.name}.{hook}: "
                    f"{record.exc_type})",
                    source=f"system:{slot.name}",
                )
                return
        if slot.breaker.failure(now):
            # Within budget: let the system reset itself. A recover() that
            # fails is one more failure against the same budget.
            ok, _ = await self._call(
                slot,
                "recover",
                slot.ctx,
                record,
                timeout=self._stop_timeout,
            )
            if ok or slot.breaker.failure(now):
                return
        self._quarantine(slot, now)

    def _quarantine(self, slot: _Slot, now: float, *, trial: str | None = None) -> None:
        slot.trial_hook = trial
        if slot.info.critical:
            self.request_emergency(
                f"critical system {slot.name!r} exhausted its recovery budget "
                f"({slot.breaker.max_restarts} restarts within {slot.breaker.window:g} s)",
                source=f"system:{slot.name}",
            )
            return
        retry_at = slot.breaker.quarantine(now)
        self._next_retry = min(self._next_retry, retry_at)
        if slot in self._half_open:
            self._half_open.remove(slot)
        self._rebuild_active()
        self._log.warning(
            "system.quarantined",
            system=slot.name,
            retry_in=round(retry_at - now, 3),
            quarantines=slot.breaker.quarantines,
        )

    async def _retry_quarantined(self, now: float) -> None:
        """Half-open every quarantined system whose backoff is over."""
        self._next_retry = math.inf
        for slot in self._order:
            breaker = slot.breaker
            if breaker.state is not BreakerState.QUARANTINED:
                continue
            if breaker.retry_at > now:
                self._next_retry = min(self._next_retry, breaker.retry_at)
                continue
            breaker.half_open()
            trial, slot.trial_hook = slot.trial_hook, None
            if not slot.started:
                ok, _ = await self._call(slot, "start", slot.ctx, timeout=self._stop_timeout * 5)
                if not ok:
                    breaker.state = BreakerState.CLOSED  # quarantine() counts from CLOSED
                    self._quarantine(slot, now)
                    continue
                slot.started = True
            if not await self._trial(slot, trial, now):
                breaker.state = BreakerState.CLOSED
                self._quarantine(slot, now, trial=trial)
                continue
            self._half_open.append(slot)
            self._log.info("system.retry", system=slot.name)
        self._rebuild_active()

    async def _trial(self, slot: _Slot, hook: str | None, now: float) -> bool:
        """Call again the hook (``snapshot`` or ``health``) whose failures quarantined ``slot``.

        Without this, a system whose ``snapshot()`` hangs would pass its
        half-open tick, close, and hang the next snapshot again, forever.
        """
        if hook == "health":
            ok, value = await self._call(slot, "health", timeout=self._budget)
            if ok:
                slot.health = _health_value(value)
        elif hook == "snapshot":
            ok, _ = await self._call(slot, "snapshot", timeout=self._stop_timeout)
        else:
            return True
        return ok

    def _close_half_open(self) -> None:
        """Close the breaker of every half-open system whose trial tick just passed."""
        ran = self._tick - 1
        for slot in list(self._half_open):
            if slot.breaker.state is BreakerState.HALF_OPEN and slot.failed_tick != ran:
                slot.breaker.success()
                self._half_open.remove(slot)
                self._log.info("system.recovered", system=slot.name)

    def step_window(self, name: str, since: int = 0) -> list[float]:
        """Step times of system ``name`` over its last ticks (up to ``STEP_RING``), oldest first.

        ``since`` leaves out the ticks before it (the optimizer reads only
        what happened since its last observation).
        """
        slot = self._slots[name]
        end = self._tick if slot.window_end is None else slot.window_end
        start = max(slot.active_since, end - STEP_RING, since)
        ring = slot.ring
        every, offset = slot.every, slot.offset
        if every == 1:
            return [ring[t & _RING_MASK] for t in range(start, end)]
        # A throttled system's ring holds only the ticks it ran on.
        return [ring[t & _RING_MASK] for t in range(start, end) if (t + offset) % every == 0]

    def _rebuild_active(self) -> None:
        active = [
            s
            for s in self._order
            if s.started and s.breaker.state in (BreakerState.CLOSED, BreakerState.HALF_OPEN)
        ]
        for slot in self._active:
            if slot not in active:
                slot.window_end = self._tick
        for slot in active:
            if slot.window_end is not None:
                slot.window_end = None
                slot.active_since = self._tick
        self._active = active
        self._runnable = active

    # ------------------------------------------------------------------ the tick loop

    async def _run_tick(self) -> None:
        """Step every active system once. The hot path.

        One timer read per step: each step's time is the difference with the
        previous read, stored in the system's ring (see ``step_window``).
        """
        timer = self._timer
        idx = self._tick & _RING_MASK
        t = timer()
        for slot in self._runnable:
            self._current = slot
            try:
                if slot.tick_async:
                    with trio.move_on_after(self._budget) as scope:
                        await self._watched(slot, slot.tick_fn(slot.ctx))
                    if scope.cancelled_caught:
                        _overran(f"async tick overran the {self._budget * 1e3:.3g} ms budget")
                else:
                    slot.tick_fn(slot.ctx)
            except BaseException as exc:
                self._current = None
                if is_runtime_cancel(exc):
                    raise
                await self._step_failed(slot, "tick", exc)
            now = timer()
            slot.ring[idx] = now - t
            t = now
        self._current = None

    async def _tick_loop(self) -> None:
        cfg = self._effective.supervisor
        sleep_until, sleeper = make_sleeper(precise=self._effective.features.precise_timing)
        current_time = trio.current_time
        timer = self._timer
        lateness = self.lateness
        work = self.work
        skip = cfg.overrun == "skip"
        max_catch_up = cfg.max_catch_up
        work_ring = self._work_ring
        anchor = current_time()
        end = self._end_time
        last_tick = self._tick_limit
        k = 0
        rate = self._rate
        if sleeper is not None:
            sleeper.set_period(1.0 / rate)
        try:
            while not self._stopping:
                if self._pending_rate is not None:
                    if k:
                        # Re-anchor on the last tick's deadline: the next one is a new period later.
                        anchor += (k - 1) / rate
                        k = 1
                    self._apply_rate()
                    rate = self._rate
                    if sleeper is not None:
                        sleeper.set_period(1.0 / rate)
                deadline = anchor + k / rate
                now = current_time()
                if now < deadline:
                    await sleep_until(deadline)
                    now = current_time()
                else:
                    behind = int((now - deadline) * rate)
                    if behind:
                        if skip:
                            k += behind + 1
                            self.dropped_ticks += behind + 1
                            continue
                        if behind > max_catch_up:
                            self.dropped_ticks += behind - max_catch_up
                            k += behind - max_catch_up
                            deadline = anchor + k / rate
                    await trio.lowlevel.checkpoint()
                if self._stopping or deadline >= end:
                    break
                lateness.record(now - deadline)
                self._now = deadline
                self._last_tick_at = now
                if self._throttled:
                    tick = self._tick
                    self._runnable = [s for s in self._active if (tick + s.offset) % s.every == 0]
                t0 = timer()
                await self._run_tick()
                elapsed = timer() - t0
                work.record(elapsed)
                work_ring[self._tick & _RING_MASK] = elapsed
                if elapsed > self._budget:
                    self.overruns += 1
                self._tick += 1
                k += 1
                if self._half_open:
                    self._close_half_open()
                if self._watchdog is not None and self._watchdog.events:
                    self._drain_watchdog()
                if self._next_retry <= deadline:
                    await self._retry_quarantined(deadline)
                if self._next_health <= deadline:
                    await self._check_health(deadline)
                if self._next_snapshot <= deadline:
                    await self._periodic_snapshot()
                if self._next_observe <= deadline:
                    self._optimize(deadline)
                if last_tick is not None and self._tick >= last_tick:
                    break
        finally:
            if sleeper is not None:
                sleeper.close()

    def _drain_watchdog(self) -> None:
        assert self._watchdog is not None
        events = self._watchdog.events
        while events:
            event = events.popleft()
            self._log.warning(
                "system.hang",
                system=event.system,
                tick=event.tick,
                elapsed=round(event.elapsed, 3),
            )

    # ------------------------------------------------------------------ run

    async def _start_systems(self) -> None:
        self._order = [
            self._slots[n] for n in dependency_order(s.info for s in self._slots.values())
        ]
        timeout = self._stop_timeout * 5
        for slot in self._order:
            if slot.breaker.state is BreakerState.QUARANTINED:
                continue  # its constructor failed on restart: it is retried after its backoff
            ok, exc = await self._call(slot, "start", slot.ctx, timeout=timeout)
            if ok:
                slot.started = True
                continue
            record = self._last_record
            assert record is not None
            if is_a(exc, StartRefused):
                # Refused on purpose, critical or not: the operator decides (exit 2).
                await self._stop_systems()
                raise StartupError(record.message, system=slot.name, refused=True)
            if slot.info.critical:
                await self._stop_systems()
                raise StartupError(
                    f"critical system {slot.name!r} failed to start: "
                    f"{record.exc_type}: {record.message}",
                    system=slot.name,
                )
            self._quarantine(slot, trio.current_time())
        self._rebuild_active()

    async def _stop_systems(self) -> None:
        """Stop started systems in reverse order, each within ``stop_timeout``."""
        timeout = self._stop_timeout
        for slot in reversed(self._order):
            if not slot.started:
                continue
            await self._call(slot, "stop", slot.ctx, timeout=timeout)
            slot.started = False
        for slot in self._active:
            slot.window_end = self._tick
        self._active = []
        self._runnable = []

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping or self._stopped.is_set():
                    self._log.warning("supervisor.force_stop", signal=name)
                    self._force = True
                    self._run_scope.cancel()
                    return
                self._log.info("supervisor.signal", signal=name)
                self.stop(f"signal {name}")

    async def run(
        self,
        *,
        ticks: int | None = None,
        duration: float | None = None,
        exit_on_emergency: bool = True,
        handle_signals: bool = False,
        resume: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> RunSummary:
        """Start the systems, tick until stopped, stop them; return the summary.

        Args:
            ticks: stop gracefully after this many ticks.
            duration: stop gracefully after this many seconds of the clock.
            exit_on_emergency: return once an emergency shutdown is done;
                otherwise stay up (for the API) until ``restart`` or ``stop``.
            handle_signals: SIGINT/SIGTERM stop gracefully; a second forces.
            resume: restore the latest valid snapshot before starting.

        Raises:
            StartupError: a critical system failed to start.
            DependencyError: unknown dependencies or a cycle.
        """
        if self._running:
            raise RuntimeError("this supervisor is already running")
        self._running = True
        self._stopping = False
        self._log.info(
            "supervisor.start",
            phase=self.phase.value,
            tick_rate=self._rate,
            profile=self.profile.name,
            systems=len(self._slots),
        )
        self._run_scope = trio.CancelScope()
        self._startup_error = None
        try:
            with self._run_scope:
                await self._serve(
                    ticks, duration, exit_on_emergency, handle_signals, resume, task_status
                )
        finally:
            self._running = False
            self._flush_log_folds(all_folds=True)
        if self._startup_error is not None:
            # Raised here, outside the nursery, so callers get the error itself
            # and not an exception group around it.
            raise self._startup_error
        summary = self.summary()
        self._log.info(
            "supervisor.stop",
            reason=summary.exit_reason,
            ticks=summary.ticks,
            phase=summary.phase,
        )
        return summary

    async def _serve(
        self,
        ticks: int | None,
        duration: float | None,
        exit_on_emergency: bool,
        handle_signals: bool,
        resume: bool,
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if handle_signals:
                nursery.start_soon(self._watch_signals)
            nursery.start_soon(self._housekeeping)
            if self.closing.is_set():  # a second run of this supervisor
                self.closing = trio.Event()
            self._services_idle = trio.Event()
            for service in self.services:
                try:
                    await nursery.start(self._run_service, service)
                except SupervisorError as exc:
                    self._startup_error = exc
                    await self._close_services()
                    nursery.cancel_scope.cancel()
                    return
            if self._effective.features.watchdog:
                wd = self._effective.watchdog
                self._watchdog = Watchdog(
                    self, hang_timeout=wd.hang_timeout, kill_timeout=wd.kill_timeout
                )
                self._watchdog.start()
            try:
                if resume:
                    await self._resume_from_disk()
                try:
                    await self._start_systems()
                except (StartupError, DependencyError) as exc:
                    self._startup_error = exc
                    return
                self._tick_limit = self._tick + ticks if ticks is not None else None
                self._end_time = trio.current_time() + duration if duration else math.inf
                self._next_snapshot = self._snapshot_due()
                # Everything built so far lives as long as the run: move it out
                # of the cyclic GC's way, so a full collection stays short.
                gc.collect()
                gc.freeze()
                self._observed = (self._tick, trio.current_time(), self.dropped_ticks)
                self._next_observe = trio.current_time() + OPTIMIZE_INTERVAL
                self._next_health = trio.current_time()  # checked after the first tick
                task_status.started()
                while True:
                    await self._tick_loop()
                    if self._emergency_reason is not None:
                        if self.phase is not Phase.EMERGENCY_SHUTDOWN:
                            await self._enter_emergency()
                        # else: a restart failed and left the preserved state as it was.
                        if exit_on_emergency or not await self._wait_for_restart():
                            break
                        await self._restart(from_disk=True)
                    elif self._restart_requested is not None:
                        await self._restart(from_disk=False)
                    else:
                        await self._graceful_stop()
                        break
            finally:
                if self._watchdog is not None:
                    self._watchdog.stop()
                    self._watchdog = None
                await self._close_services()
                nursery.cancel_scope.cancel()
                self._nursery = None

    async def _close_services(self) -> None:
        """Set ``closing``; give the services SERVICE_GRACE seconds to return, unless forced.

        So an answer in flight (``shutdown --emergency`` with
        ``--exit-on-emergency``) is sent before the process exits.
        """
        self.closing.set()
        if self._services_running and not self._force:
            with trio.move_on_after(SERVICE_GRACE):
                await self._services_idle.wait()

    async def _run_service(
        self, service: Callable[..., Awaitable[Any]], task_status: trio.TaskStatus[Any]
    ) -> None:
        """Run one service supervised: a crash is logged, counted and restarted with backoff.

        A ``SupervisorError`` before its first ``started()`` stays a start-up
        error (the run does not start). Any other failure, before or after
        ``started()``, and at any time later, is the service's: nothing it
        raises reaches the nursery that runs the tick loop. Only the runtime's
        own cancellation passes.
        """
        name = _service_name(service)
        status = _ServiceStatus(task_status)
        delay = SERVICE_BACKOFF_INITIAL
        self._services_running += 1
        try:
            while not self.closing.is_set():
                began = trio.current_time()
                try:
                    await service(self, task_status=status)
                except BaseException as exc:
                    if is_runtime_cancel(exc):
                        raise
                    if not status.done and is_a(exc, SupervisorError):
                        raise
                    if trio.current_time() - began >= SERVICE_BACKOFF_MAX:
                        delay = SERVICE_BACKOFF_INITIAL  # it ran a good while: a fresh failure
                    self._service_crashed(name, exc, delay)
                else:
                    status.started()  # (nursery.start fails on a task that returns without it)
                    return  # a service that returns has finished its work
                status.started()  # a service that crashed before started() must not hold up the run
                with trio.move_on_after(delay):
                    await self.closing.wait()
                delay = min(delay * 2, SERVICE_BACKOFF_MAX)
        finally:
            self._services_running -= 1
            if not self._services_running:
                self._services_idle.set()

    def _service_crashed(self, name: str, exc: BaseException, delay: float) -> None:
        self.service_failures[name] += 1
        self._log.error(
            "service.crashed",
            service=name,
            error=safe_type_name(exc),
            message=safe_message(exc, self.redactor),
            failures=self.service_failures[name],
            restart_in=delay,
        )

    # ------------------------------------------------------------------ snapshots

    def _snapshot_due(self) -> float:
        interval = self._effective.supervisor.snapshot_interval
        if interval != 0:  # 0 is "only at stop"; NaN or infinity must not switch snapshots off
            interval = _non_negative(interval, DEFAULT_SNAPSHOT_INTERVAL)
        if not self.persist or interval <= 0:
            return math.inf
        return trio.current_time() + interval

    async def _capture(self, reason: str) -> Snapshot:
        """Collect every system's ``snapshot()`` state, packed, on the loop thread.

        Each state is packed with msgpack here, so the systems may change
        their live state right after; encoding the file and writing it can
        then happen on a worker thread.
        """
        systems: dict[str, bytes] = {}
        now = trio.current_time()
        for slot in self._order:
            # A system quarantined because its snapshot() failed is skipped until its
            # half-open retry passes: a hanging snapshot() stalls the loop once per
            # backoff, not once per period.
            if "snapshot" not in slot.info.hooks or slot.trial_hook == "snapshot":
                continue
            ok, state = await self._call(slot, "snapshot", timeout=self._stop_timeout)
            if not ok:
                self._count_failure(slot, "snapshot", now)
                continue
            try:
                systems[slot.name] = msgpack.packb(state)
            except BaseException as exc:  # an unpackable type, or a hostile mapping's methods
                if is_runtime_cancel(exc):
                    raise
                record = self._record(slot, "snapshot", exc)
                self._count_failure(slot, "snapshot", now)
                self._log.error(
                    "snapshot.unserialisable",
                    system=slot.name,
                    error=record.exc_type,
                    message=record.message,
                )
        interrupted = self._phases.interrupted
        meta = {
            "tick_rate": self.tick_rate,
            "errors": dict(self.errors.counts),
            "interrupted_phase": interrupted.value if interrupted else None,
            "error_history": [self._public_record(r) for r in self.errors.recent(limit=20)],
            "lifecycle": [e.as_dict() for e in self._phases.history],
        }
        return Snapshot(
            tick=self._tick,
            phase=self.phase.value,
            reason=reason,
            time=self._wall(),
            systems=dict(systems),
            meta=meta,
        )

    async def _write_snapshot(self, snap: Snapshot) -> Path | None:
        """Encode and write ``snap`` on a worker thread; None (logged) when it fails.

        Writes are serialised: the store prunes generations and stray temp
        files after each write, which must not race another write.
        """
        started = time.perf_counter()
        try:
            async with self._snapshot_lock:
                path = await trio.to_thread.run_sync(self.snapshots.write, snap)
        except (OSError, ValueError, TypeError) as exc:
            self.snapshot_failures += 1
            self._log.error(
                "snapshot.failed",
                tick=snap.tick,
                reason=snap.reason,
                error=safe_message(exc, self.redactor),
            )
            return None
        self.snapshot_write.record(time.perf_counter() - started)
        self.last_snapshot = path
        self._log.info("snapshot.written", path=str(path), tick=snap.tick, reason=snap.reason)
        return path

    async def _periodic_snapshot(self) -> None:
        """Capture between ticks (the only stall), write in the background."""
        self._next_snapshot = self._snapshot_due()
        if self._snapshot_lock.locked():
            self.snapshots_skipped += 1
            return  # the previous write is still going: skip rather than queue
        started = self._timer()
        snap = await self._capture("periodic")
        self.snapshot_stall.record(self._timer() - started)
        assert self._nursery is not None
        self._nursery.start_soon(self._write_snapshot, snap)

    async def _resume_from_disk(self) -> None:
        snap = await self._latest_snapshot()
        if snap is None:
            self._log.warning("resume.nothing", folder=str(self.snapshots.directory))
            return
        await self._restore(snap)
        self._lifecycle(
            action="resume",
            before=snap.phase,
            after=self.phase.value,
            caller="run --resume",
            reason=f"resumed from the snapshot of tick {snap.tick} ({snap.reason})",
        )
        self._log.info("resume.done", tick=snap.tick, reason=snap.reason)

    async def _latest_snapshot(self) -> Snapshot | None:
        snap, found = await trio.to_thread.run_sync(self.snapshots.latest)
        problems = [str(p) for p in found]
        if snap is not None and not _valid_tick(snap.tick):
            # The store checks this too; a run must never continue from such a tick.
            problems.append(
                "the latest snapshot's tick is not between 0 and 2**53: refused as corrupt"
            )
            snap = None
        for problem in problems:
            self._log.error("snapshot.corrupt", problem=problem)
        self.snapshot_problems = problems
        return snap

    async def _restore(self, snap: Snapshot) -> None:
        """Give each system its state from ``snap``; the tick count continues from it.

        A ``restore()`` that fails (or overruns ``stop_timeout``) counts against
        its system's restart budget; within it, the system runs on from the
        state it has.
        """
        self._tick = snap.tick
        now = trio.current_time()
        for slot in self._order or list(self._slots.values()):
            packed = snap.systems.get(slot.name)
            if packed is None:
                continue
            if "restore" not in slot.info.hooks:
                self._log.warning("restore.no_hook", system=slot.name)
                continue
            try:
                state = msgpack.unpackb(packed, raw=False, strict_map_key=False)
            except Exception as exc:
                self._log_failure(self._record(slot, "restore", exc))
                self._count_failure(slot, "restore", now)
                continue
            ok, _ = await self._call(slot, "restore", state, timeout=self._stop_timeout)
            if not ok:
                self._count_failure(slot, "restore", now)

    # ------------------------------------------------------------------ lifecycle

    def _lifecycle(self, *, action: str, before: str, after: str, caller: str, reason: str) -> None:
        """Keep a lifecycle action that is not a phase move (its free text redacted when made)."""
        text = self._text
        self._phases.history.append(
            LifecycleEvent(
                time=self._wall(),
                tick=self._tick,
                action=action,
                before=before,
                after=after,
                caller=text(caller),
                reason=text(reason),
            )
        )

    def _redact_history(self) -> None:
        """Redact, once, what was kept while redaction was off: entering a redacting phase.

        From then on everything is redacted when it is made, so no surface
        (status, errors, metrics, snapshots, summary) redacts again.
        """
        text = self.redactor.text

        def kept_text(value: str) -> str:  # bounded by _text while redaction was off
            return redact_kept(value, MESSAGE_CHARS, self.redactor)

        self.errors.redact(self.redactor)
        history = self._phases.history
        kept = [
            attrs.evolve(e, caller=kept_text(e.caller), reason=kept_text(e.reason)) for e in history
        ]
        history.clear()
        history.extend(kept)
        keys = {raw: text(key) for raw, key in self._gauge_keys.items()}
        values = {text(key): value for key, value in self._gauges.items()}
        self._gauge_keys.clear()
        self._gauge_keys.update(keys)
        self._gauges.clear()
        self._gauges.update(values)
        if self._emergency_reason is not None:
            self._emergency_reason = kept_text(self._emergency_reason)
        if self._emergency_source is not None:
            self._emergency_source = kept_text(self._emergency_source)
        self._stop_reason = kept_text(self._stop_reason)
        if self.emergency_info is not None:
            self.emergency_info["reason"] = self._emergency_reason
            self.emergency_info["source"] = self._emergency_source

    def _enter_phase(self, target: Phase, *, caller: str, reason: str, action: str) -> None:
        text = self._text
        event = self._phases.move(
            target,
            time=self._wall(),
            tick=self._tick,
            caller=text(caller),
            reason=text(reason),
            action=action,
        )
        self._effective = self.config.for_phase(target)
        recovery = self._effective.recovery
        for slot in self._slots.values():
            breaker = slot.breaker
            breaker.max_restarts = recovery.max_restarts
            breaker.window = recovery.window_seconds
            breaker.backoff_initial = recovery.backoff_initial
            breaker.backoff_max = recovery.backoff_max
        if self._watchdog is not None:
            wd = self._effective.watchdog
            self._watchdog.configure(hang_timeout=wd.hang_timeout, kill_timeout=wd.kill_timeout)
        overlay_rate = (
            self.config.overlays.get(target.value, {}).get("supervisor", {}).get("tick_rate")
        )
        if self.optimizer is not None:
            # A phase overlay that sets the rate pins it: the optimizer leaves it alone.
            self.optimizer.pinned_rate = overlay_rate
            if overlay_rate is None:
                self.optimizer.rebase(self.tick_rate)
        if overlay_rate is not None and overlay_rate != self.tick_rate:
            self.set_tick_rate(overlay_rate)
        was_redacting = self.redactor.enabled
        self.redactor.enabled = self.redaction
        if self.redactor.enabled and not was_redacting:
            self._redact_history()
            event = self._phases.history[-1]
        log = self._log.critical if target is Phase.EMERGENCY_SHUTDOWN else self._log.info
        log("supervisor.phase", **event.as_dict())
        for listener in self.phase_listeners:
            listener(target)

    async def _enter_emergency(self) -> None:
        """Ticking has stopped: capture state, stop systems in reverse, write the snapshot."""
        self._enter_phase(
            Phase.EMERGENCY_SHUTDOWN,
            caller=self._emergency_source or "supervisor",
            reason=self._emergency_reason or "",
            action="emergency",
        )
        reason = f"emergency: {self._emergency_reason}"
        if self._preserved is not None:
            # A restart failed after the systems were stopped: the state captured
            # before it is the state to preserve (the rebuilt systems hold none).
            snap = attrs.evolve(self._preserved, phase=self.phase.value, reason=reason)
            self._preserved = None
        else:
            snap = await self._capture(reason)
        await self._stop_systems()
        path = await self._write_snapshot(snap) if self.persist else None
        self._snapshot_written = path is not None
        elapsed = time.perf_counter() - (self._emergency_at or time.perf_counter())
        self.emergency_info = {
            "reason": self._emergency_reason,
            "source": self._emergency_source,
            "tick": self._tick,
            "snapshot": str(path) if path else None,
            "trigger_to_snapshot_seconds": elapsed,
        }
        self._log.critical("supervisor.emergency", **self.emergency_info)
        self._emergency_done.set()

    async def _wait_for_restart(self) -> bool:
        """In EMERGENCY_SHUTDOWN: wait for ``restart`` (True) or ``stop`` (False)."""
        while self._restart_requested is None and not self._stopped.is_set():
            self._wake = trio.Event()
            await self._wake.wait()
        return self._restart_requested is not None

    async def _restart(self, *, from_disk: bool) -> None:
        """Stop the systems, build them afresh, restore their state, start, go on ticking."""
        caller = self._restart_requested
        assert caller is not None
        if from_disk:
            snap = await self._latest_snapshot()
        else:
            snap = await self._capture("restart")
            await self._stop_systems()
        failed = self._rebuild_systems()
        critical = [slot.name for slot in failed if slot.info.critical]
        if critical:
            self._restart_failed(caller, critical, snap)
            return
        now = trio.current_time()
        for slot in failed:  # not critical: keeps its old instance, retried after its backoff
            self._quarantine(slot, now)
        if snap is not None:
            await self._restore(snap)
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            back = self._phases.interrupted or Phase.DEVELOPMENT
            self._enter_phase(back, caller=caller.name, reason="restart", action="restart")
        else:
            self._lifecycle(
                action="restart",
                before=self.phase.value,
                after=self.phase.value,
                caller=caller.name,
                reason="restart",
            )
        self._emergency_reason = self._emergency_source = self._emergency_at = None
        self._emergency_done = trio.Event()
        self._stopping = False
        self._restart_requested = None
        try:
            await self._start_systems()
        except (StartupError, DependencyError) as exc:
            self.request_emergency(str(exc), source="restart")
        self._restart_result = {
            "tick": self._tick,
            "phase": self.phase.value,
            "restored": sorted(snap.systems) if snap is not None else [],
            "from_snapshot": snap.tick if snap is not None else None,
        }
        self._log.info("supervisor.restarted", **self._restart_result)
        self._restart_done.set()

    def _restart_failed(self, caller: Caller, critical: list[str], snap: Snapshot | None) -> None:
        """A critical system's constructor failed on restart: EMERGENCY_SHUTDOWN, state kept.

        After an emergency the snapshot on disk is left as it is (no system
        runs, so none is written); from a running world, the state captured
        before the systems stopped is written by the emergency that follows.
        """
        reason = f"restart failed: critical system {', '.join(critical)} could not be built"
        self._restart_requested = None
        self._stopping = True
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            self._emergency_reason = reason
            self._emergency_source = "restart"
            if self.emergency_info is not None:
                self.emergency_info.update(reason=reason, source="restart")
            self._lifecycle(
                action="restart",
                before=self.phase.value,
                after=self.phase.value,
                caller=caller.name,
                reason=reason,
            )
        else:
            self._preserved = snap
            self._emergency_reason = None
            self.request_emergency(reason, source="restart")
        self._restart_result = {"failed": reason, "tick": self._tick, "phase": self.phase.value}
        self._log.error("supervisor.restart_failed", systems=critical)
        self._restart_done.set()

    def _build(self, slot: _Slot) -> None:
        """Build a fresh instance of ``slot``'s system (plugin code: marked for the watchdog)."""
        assert slot.factory is not None
        self._current = slot
        self._call_seq += 1
        try:
            system = slot.factory()
            info = inspect_system(system, slot.name, slot.info.origin)
        finally:
            self._current = None
            self._call_seq += 1
        slot.system = system
        slot.info = info
        slot.tick_fn = info.tick.fn
        slot.tick_async = info.tick.is_async

    def _rebuild_systems(self) -> list[_Slot]:
        """Fresh instances and budgets for every system; returns those whose constructor failed.

        A failed constructor is recorded against its system (hook ``build``),
        which keeps its old instance.
        """
        recovery = self._effective.recovery
        failed = []
        for slot in self._slots.values():
            slot.breaker = Breaker(
                max_restarts=recovery.max_restarts,
                window=recovery.window_seconds,
                backoff_initial=recovery.backoff_initial,
                backoff_max=recovery.backoff_max,
            )
            slot.every = 1
            slot.started = False
            slot.failed_tick = -1
            slot.hang_stack = None
            slot.health = "healthy"
            slot.trial_hook = None
            slot.gauge_error_at = -math.inf
            if slot.factory is not None:
                try:
                    self._build(slot)
                except BaseException as exc:
                    if is_runtime_cancel(exc):
                        raise
                    self._log_failure(self._record(slot, "build", exc))
                    failed.append(slot)
        self._critical_errors.clear()
        self._half_open.clear()
        self._next_retry = math.inf
        self._throttled = False
        self.optimizer = None  # a fresh one starts from the rebuilt systems
        return failed

    async def _graceful_stop(self) -> None:
        """A final snapshot, then the systems stop in reverse order."""
        snap = await self._capture(f"stop: {self._stop_reason or 'completed'}")
        await self._stop_systems()
        if self.persist:
            with trio.move_on_after(self._stop_timeout * 5):
                await self._write_snapshot(snap)

    def _optimize(self, now: float) -> None:
        """Observe, decide, apply: every ``OPTIMIZE_INTERVAL`` of the clock, after a tick.

        Run from the tick loop (one comparison per tick) rather than from a
        task of its own, so an observation never races the tick that is due
        at the same instant: on a MockClock the decisions are deterministic.
        """
        self._next_observe = now + OPTIMIZE_INTERVAL
        enabled = self._effective.features.optimizer
        if self.optimizer is not None and not enabled:
            for decision in self.optimizer.release(now):
                self._apply_decision(decision)
            self.optimizer = None
        if not enabled or self._stopping:
            self._observed = (self._tick, now, self.dropped_ticks)
            return
        if self._tick - self._observed[0] < OPTIMIZE_MIN_TICKS:
            return
        if self.optimizer is None:
            self.optimizer = Optimizer(profile=self.profile, base_rate=self._rate)
        for decision in self.optimizer.observe(self._observation(now)):
            self._apply_decision(decision)

    def _observation(self, now: float) -> Observation:
        tick0, time0, dropped0 = self._observed
        self._observed = (self._tick, now, self.dropped_ticks)
        start = max(tick0, self._tick - STEP_RING)
        ring = self._work_ring
        work = HistogramStats.from_values([ring[t & _RING_MASK] for t in range(start, self._tick)])
        loads = []
        for slot in self._order:
            step = HistogramStats.from_values(self.step_window(slot.name, since=start))
            loads.append(
                SystemLoad(
                    name=slot.name,
                    priority=slot.info.priority,
                    critical=slot.info.critical,
                    p95=step.p95,
                    mean=step.mean,
                    every=slot.every,
                )
            )
        return Observation(
            now=now,
            rate=self.tick_rate,
            budget=self._budget_fraction / self.tick_rate,
            work_p95=work.p95,
            work_mean=work.mean,
            dropped=self.dropped_ticks - dropped0,
            window=now - time0,
            systems=tuple(loads),
        )

    def _apply_decision(self, decision: Decision) -> None:
        if decision.kind in ("throttle", "unthrottle"):
            slot = self._slots.get(decision.target or "")
            if slot is None:
                return
            slot.every = max(1, int(decision.after))
            slot.active_since = self._tick  # its step window restarts at the new cadence
            self._throttled = any(s.every > 1 for s in self._active)
            if not self._throttled:
                self._runnable = self._active
        else:
            self.set_tick_rate(decision.after)
        self.optimizer_adjustments += 1
        self._log.info("optimizer.decision", **decision.as_dict())

    async def _housekeeping(self) -> None:
        """Once a second, off the tick: resources, the dropped-tick window, the memory limit."""
        proc = psutil.Process()
        proc.cpu_percent()
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            self._flush_log_folds()
            self._dropped_marks.append((self._tick, self.dropped_ticks))
            with proc.oneshot():
                rss = proc.memory_info().rss
                self.resources = {
                    "rss_bytes": rss,
                    "cpu_percent": proc.cpu_percent(),
                    "threads": proc.num_threads(),
                    "open_files": proc.num_fds(),
                }
            # (A NaN limit compares false with everything; config rejects it, this counts it as 0.)
            limit = _non_negative(self._effective.supervisor.memory_limit_mb, 0.0)
            if limit and rss > limit * 2**20 and self._emergency_reason is None:
                self.request_emergency(
                    f"fatal resource limit: RSS {rss / 2**20:.1f} MB exceeds memory_limit_mb "
                    f"= {limit}",
                    source="resources",
                )

    # ------------------------------------------------------------------ control surface

    @property
    def redaction(self) -> bool:
        """Whether personal data is redacted: the flag, else on outside DEVELOPMENT."""
        flag = self._effective.features.redaction
        if flag is not None:
            return flag
        phase = self._phases.phase
        if phase is Phase.EMERGENCY_SHUTDOWN:
            phase = self._phases.interrupted or phase
        return phase is not Phase.DEVELOPMENT

    def _public_record(self, record: ErrorRecord) -> dict[str, Any]:
        """A record as callers and snapshots see it: no traceback in production.

        Records are redacted when made (and the kept ones when a redacting
        phase begins), so nothing is redacted here.
        """
        d = record.as_dict()
        if self.phase is Phase.PRODUCTION or self._phases.interrupted is Phase.PRODUCTION:
            d["traceback"] = None
            d["stack"] = None
        return d

    def liveness(self) -> tuple[bool, str]:
        """(alive, detail): ticks are progressing, or the emergency handler is up."""
        if not self._running:
            return False, "not running"
        # Fixed words and numbers only: anonymous callers read this (no free text).
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            return True, "emergency_shutdown"
        if self._restart_requested is not None or self._last_tick_at is None:
            return True, "starting"
        age = trio.current_time() - self._last_tick_at
        limit = max(1.0, 5.0 / self._rate)
        if age > limit:
            return False, f"no tick for {age:.2f} s (limit {limit:.2f} s)"
        return True, f"last tick {age * 1e3:.1f} ms ago"

    def readiness_gate(self) -> tuple[bool, list[str]]:
        """(ready, reasons): not in EMERGENCY_SHUTDOWN, no system unhealthy or quarantined.

        Reads the health cached by the tick loop: never calls plugin code, and
        the reasons are fixed words and system names only (anonymous callers
        read them; the emergency's reason is in ``status()``).
        """
        reasons = []
        if not self._running or self._last_tick_at is None:
            reasons.append("not ticking yet")
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            reasons.append("emergency_shutdown")
        reasons.extend(f"quarantined: {name}" for name in self.quarantined())
        reasons.extend(
            f"unhealthy: {s.name}"
            for s in self._slots.values()
            if s.started
            and s.breaker.state is not BreakerState.QUARANTINED
            and self._health(s) == "unhealthy"
        )
        return not reasons, reasons

    def _readiness_facts(self) -> ReadinessFacts:
        window = min(self._tick, STEP_RING)
        ring = self._work_ring
        values = [ring[t & _RING_MASK] for t in range(self._tick - window, self._tick)]
        work = HistogramStats.from_values(values)
        horizon = self._tick - window
        base = next(
            (dropped for tick, dropped in self._dropped_marks if tick >= horizon),
            self.dropped_ticks,
        )
        sink_problem = None
        for check in (self._snapshot_sink_problem, *self.sink_checks):
            sink_problem = check()
            if sink_problem:
                break
        api = self._effective.api
        socket_mode = None
        if api.listen.startswith("unix:"):
            with contextlib.suppress(OSError):
                socket_mode = self.config.path(api.listen[5:]).stat().st_mode & 0o777
        return ReadinessFacts(
            not_started=tuple(
                s.name
                for s in self._order
                if not s.started and s.breaker.state is BreakerState.CLOSED
            )
            if self._running
            else tuple(self._slots),
            quarantined=self.quarantined(),
            unhealthy=tuple(
                s.name for s in self._slots.values() if s.started and self._health(s) == "unhealthy"
            ),
            window_ticks=window,
            work_p95=work.p95,
            budget=self._budget,
            dropped_in_window=self.dropped_ticks - base,
            safecall_active=True,
            sink_problem=sink_problem,
            target_phase=Phase.PRODUCTION.value,
            api_enabled=self._effective.features.api,
            api_tcp=not api.listen.startswith("unix:"),
            tokens=len(api.tokens),
            socket_mode=socket_mode,
            redaction=self._effective.features.redaction is not False,
        )

    def _snapshot_sink_problem(self) -> str | None:
        if not self.persist:
            return "snapshots are off for this supervisor (persist=False)"
        folder = self.snapshots.directory
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the snapshot folder {folder}: {exc.strerror}"
        if not os.access(folder, os.W_OK):
            return f"the snapshot folder {folder} is not writable"
        return None

    def readiness(self) -> ReadinessReport:
        """The deployment readiness report (each check judged for PRODUCTION)."""
        return assess(self._readiness_facts())

    def security_report(self) -> ReadinessReport:
        """The security check alone: starting directly in PRODUCTION requires it."""
        return security_only(self._readiness_facts())

    def error_view(self, *, limit: int = 20, system: str | None = None) -> dict[str, Any]:
        """Recent records (newest first) and groups by fingerprint, redacted."""
        return {
            "records": [self._public_record(r) for r in self.errors.recent(limit, system)],
            "groups": [g.as_dict() for g in self.errors.groups(system)][:limit],
            "counts": dict(self.errors.counts),
            "total": self.errors.total,
        }

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition of this supervisor."""
        if self._metrics is None:
            # Imported on the first scrape: prometheus_client is not needed
            # (nor its memory spent) by a supervisor nobody scrapes.
            from .._server._metrics import SupervisorMetrics  # noqa: PLC0415

            self._metrics = SupervisorMetrics(self)
        return self._metrics.exposition()

    def next_step(self) -> str:
        """What an operator should do now, in one sentence."""
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            info = self.emergency_info or {}
            where = info.get("snapshot") or "no snapshot was written"
            return (
                f"emergency: {self._emergency_reason}. State preserved in {where}. Inspect "
                "`supervisor errors`, fix the cause, then `supervisor restart` to continue from "
                "that state, or `supervisor shutdown` to stop."
            )
        quarantined = self.quarantined()
        if quarantined:
            return (
                f"{', '.join(quarantined)} quarantined: see `supervisor errors --system "
                f"{quarantined[0]}`; it is retried automatically after its backoff."
            )
        return "nothing to do: every system is running."

    def status(self) -> dict[str, Any]:
        """Everything ``supervisor status`` shows, JSON-ready."""
        stats = self.statistics().as_dict()
        ready, reasons = self.readiness_gate()
        alive, alive_detail = self.liveness()
        stats.update(
            alive=alive,
            alive_detail=alive_detail,
            ready=ready,
            not_ready=reasons,
            next_step=self.next_step(),
            emergency=self.emergency_info,
            lifecycle=[e.as_dict() for e in self._phases.history],
            machine=self.facts.as_dict(),
            resources=dict(self.resources),
            snapshots={
                "folder": str(self.snapshots.directory),
                "last": str(self.last_snapshot) if self.last_snapshot else None,
                "stall": self.snapshot_stall.stats().as_dict(),
                "write": self.snapshot_write.stats().as_dict(),
                "failures": self.snapshot_failures,
                "problems": list(self.snapshot_problems),
            },
            redaction=self.redaction,
            services={"failures": dict(self.service_failures)},
            optimizer=(
                {
                    **self.optimizer.statistics().as_dict(),
                    "events": [e.as_dict() for e in self.optimizer.events],
                }
                if self.optimizer is not None
                else {"state": "off" if not self._effective.features.optimizer else "starting"}
            ),
        )
        return stats

    async def shutdown(self, *, emergency: bool, reason: str, caller: Caller) -> dict[str, Any]:
        """Stop gracefully, or enter EMERGENCY_SHUTDOWN and wait until its snapshot is written.

        Raises:
            Refused: not running, already stopping, or already in an emergency.
        """
        if not self._running:
            raise Refused("the supervisor is not running")
        if emergency:
            if self._emergency_reason is not None:
                raise Refused(f"already in emergency_shutdown: {self._emergency_reason}")
            self.request_emergency(
                f"operator {caller.name}: {reason or 'no reason given'}",
                source=f"operator:{caller.name}",
            )
            await self._emergency_done.wait()
            return {"phase": self.phase.value, **(self.emergency_info or {})}
        if self._stop_reason:
            raise Refused(f"already stopping: {self._stop_reason}")
        self._lifecycle(
            action="shutdown",
            before=self.phase.value,
            after="stopped",
            caller=caller.name,
            reason=reason,
        )
        self.stop(f"shutdown by {caller.name}" + (f": {reason}" if reason else ""))
        return {"stopping": True, "tick": self._tick}

    async def restart(self, *, caller: Caller) -> dict[str, Any]:
        """Rebuild the systems from preserved state and go on ticking.

        Raises:
            Refused: not running, stopping, a restart in progress, or (after an
                emergency) no valid snapshot to restart from.
        """
        if not self._running:
            raise Refused("the supervisor is not running")
        if self._restart_requested is not None:
            raise Refused("a restart is already in progress")
        if self._stop_reason:
            raise Refused(f"stopping: {self._stop_reason}")
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            if not self._emergency_done.is_set():
                raise Refused("the emergency shutdown is still in progress")
            if await self._latest_snapshot() is None:
                problems = self.snapshot_problems
                raise Refused(
                    "no valid snapshot to restart from"
                    + (f" ({'; '.join(problems)})" if problems else "")
                    + ": `supervisor shutdown`, then `supervisor run` starts fresh",
                )
        self._restart_done = trio.Event()
        self._restart_requested = caller
        self._stopping = True
        self._wake.set()
        await self._restart_done.wait()
        if "failed" in self._restart_result:
            raise Refused(str(self._restart_result["failed"]), payload=self._restart_result)
        return dict(self._restart_result)

    async def change_phase(
        self, phase: str, *, force: bool, reason: str, caller: Caller
    ) -> dict[str, Any]:
        """Move to ``phase``; promotion to PRODUCTION passes the readiness gate unless forced.

        The rules of ``PhaseMachine.check``: leaving DEVELOPMENT on a config
        with no ``[api] tokens`` for the target phase needs ``force`` (it
        would lock token-less callers out), and leaving PRODUCTION for
        anything but EMERGENCY_SHUTDOWN needs ``force`` and a reason. What
        was forced is written into the lifecycle event's reason.

        Raises:
            Refused: the phase is unknown, the move is not allowed, or the
                readiness gate failed (its report is in the payload).
        """
        try:
            target = Phase.parse(phase)
            tokens = len(self.config.for_phase(target).api.tokens)
            self._phases.check(target, force=force, reason=reason, tokens=tokens)
        except (ValueError, PhaseError) as exc:
            raise Refused(str(exc)) from None
        forced = []
        if force and self.phase is Phase.DEVELOPMENT and not tokens:
            forced.append("forced without [api] tokens")
        if force and self.phase is Phase.PRODUCTION:
            forced.append("forced out of production")
        if target is Phase.PRODUCTION:
            if not force:
                report = self.readiness()
                if not report.ok:
                    failed = ", ".join(c.name for c in report.checks if not c.ok)
                    raise Refused(
                        f"readiness gate failed: {failed}", payload={"readiness": report.as_dict()}
                    )
            else:
                forced.append("forced past the readiness gate")
        before = self.phase.value
        why = reason + (f" ({'; '.join(forced)})" if forced else "")
        self._enter_phase(target, caller=caller.name, reason=why.strip(), action="phase")
        return {"before": before, "after": target.value, "forced": force}

    # ------------------------------------------------------------------ views

    def quarantined(self) -> tuple[str, ...]:
        """Names of the systems in quarantine now."""
        return tuple(
            s.name for s in self._slots.values() if s.breaker.state is BreakerState.QUARANTINED
        )

    def statistics(self) -> SupervisorStats:
        """A frozen view of the supervisor now."""
        slots = self._order or list(self._slots.values())
        return SupervisorStats(
            phase=self.phase.value,
            tick=self._tick,
            tick_rate=self.tick_rate,
            budget=self._budget,
            lateness=self.lateness.stats(),
            work=self.work.stats(),
            overruns=self.overruns,
            dropped_ticks=self.dropped_ticks,
            systems=tuple(
                SystemStats(
                    name=s.name,
                    state=s.state,
                    health=self._health(s),
                    critical=s.info.critical,
                    priority=s.info.priority,
                    depends_on=s.info.depends_on,
                    origin=s.info.origin,
                    errors=self.errors.counts[s.name],
                    step=HistogramStats.from_values(self.step_window(s.name)),
                    every=s.every,
                )
                for s in slots
            ),
            gauges=dict(self._gauges),
            errors=dict(self.errors.counts),
            quarantined=self.quarantined(),
            profile=self.profile.name,
            profile_reason=self.profile_reason,
            emergency_reason=self._emergency_reason,
        )

    def summary(self) -> RunSummary:
        """The run summary as of now."""
        if self._emergency_reason is not None:
            reason = f"emergency: {self._emergency_reason}"
        elif self._force:
            reason = "forced stop"
        else:
            reason = self._stop_reason or "completed"
        return RunSummary(
            ticks=self._tick,
            tick_rate=self.tick_rate,
            lateness=self.lateness.stats(),
            work=self.work.stats(),
            overruns=self.overruns,
            dropped_ticks=self.dropped_ticks,
            errors=dict(self.errors.counts),
            quarantined=self.quarantined(),
            phase=self.phase.value,
            optimizer_adjustments=self.optimizer_adjustments,
            exit_reason=reason,
            emergency=self._emergency_reason is not None,
            snapshot_written=self._snapshot_written,
        )
