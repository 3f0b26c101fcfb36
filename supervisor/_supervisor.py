"""The supervisor: registration, the fixed-tick loop, SafeCall, emergency.

The loop schedules tick k at ``t0 + k / rate`` on trio's clock, so tests on
``trio.testing.MockClock`` see exact times. The hot path -- one tick, one
system step -- makes no call it can avoid: hooks were resolved at
registration, a step is a call in ``try``, timing is two reads of the
timer, and nothing is logged when a step succeeds.
"""

from __future__ import annotations

import array
import contextlib
import math
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from ._config import Config
from ._context import Context
from ._errors import (
    ConfigError,
    DependencyError,
    PluginError,
    StartupError,
    StepInterrupted,
    StepTimeout,
    SupervisorError,
)
from ._histogram import Histogram, HistogramStats
from ._logging import get_logger
from ._phase import Phase
from ._plugins import SystemInfo, build, discover, inspect_system, is_import_string, load_target
from ._plugins import order as dependency_order
from ._profiles import MachineFacts, choose_profile, detect_facts
from ._safecall import Breaker, BreakerState, ErrorLog, ErrorRecord, make_record
from ._timing import make_sleeper
from ._watchdog import Watchdog

__all__ = ["RunSummary", "Supervisor", "SupervisorStats", "SystemStats"]

_HEALTH_VALUES = ("healthy", "degraded", "unhealthy")
#: Each system's step times go to a ring of this many ticks on the hot path
#: (one store into an array of doubles); status, metrics and the optimizer
#: read windowed quantiles from it. A power of two.
STEP_RING = 1024
_RING_MASK = STEP_RING - 1
#: Exceptions a hook may raise that SafeCall turns into a failure. ``trio.Cancelled``
#: and ``KeyboardInterrupt`` are not among them: they belong to the runtime.
_STEP_ERRORS = (Exception, StepInterrupted, SystemExit)


@attrs.define(eq=False, kw_only=True)
class _Slot:
    """A registered system and everything the loop keeps about it."""

    name: str
    system: Any
    info: SystemInfo
    tick_fn: Callable[..., Any]
    tick_async: bool
    breaker: Breaker
    ctx: Context = attrs.field(init=False)
    every: int = 1
    started: bool = False
    ring: array.array[float] = attrs.field(factory=lambda: array.array("d", bytes(8 * STEP_RING)))
    failures: int = 0
    failed_tick: int = -1
    #: The ring holds this system's steps for ticks [active_since, window_end).
    active_since: int = 0
    window_end: int | None = 0
    hang_stack: str | None = None

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
    ) -> None:
        self.config = config if config is not None else Config()
        if phase is None:
            phase = self.config.supervisor.phase
        self.phase = Phase.parse(phase) if isinstance(phase, str) else phase
        if self.phase is Phase.EMERGENCY_SHUTDOWN:
            raise ConfigError("cannot start in emergency_shutdown", key="supervisor.phase")
        self._effective = self.config.for_phase(self.phase)
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
        self._half_open: list[_Slot] = []
        self._next_retry = math.inf

        self._tick = 0
        self._now = 0.0
        self._gauges: dict[str, float] = {}
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
            system = build(name, factory, options, source=source)
            self.register(system, name=name, origin=origin)
        try:
            dependency_order(s.info for s in self._slots.values())
        except DependencyError as exc:
            # Found here, before anything starts, and reported against the config.
            raise ConfigError(str(exc), source=source, key="systems") from None
        for name in cfg.options:
            if name not in configured:
                raise ConfigError(
                    f"[systems.{name}] configures a system that is not enabled",
                    source=source,
                    key=f"systems.{name}",
                )

    def register(self, system: Any, *, name: str | None = None, origin: str = "code") -> None:
        """Register a system instance; its hooks are resolved now, once.

        Args:
            system: any object with a ``tick(ctx)`` method.
            name: the name to run it under (default: its ``name`` attribute,
                else its class name in lower case).
            origin: where it came from, for ``supervisor systems`` and status.

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
            breaker=Breaker(
                max_restarts=cfg.max_restarts,
                window=cfg.window_seconds,
                backoff_initial=cfg.backoff_initial,
                backoff_max=cfg.backoff_max,
            ),
        )
        slot.ctx = Context(self, slot, get_logger(system=name))
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
            self._stop_reason = reason
        self._stopping = True
        self._stopped.set()

    def request_emergency(self, reason: str, *, source: str = "operator") -> None:
        """Enter EMERGENCY_SHUTDOWN after the current step: ticking stops, systems stop."""
        if self._emergency_reason is not None:
            return
        self._emergency_reason = reason
        self._emergency_source = source
        self._stopping = True

    @property
    def emergency_reason(self) -> str | None:
        """Why the supervisor entered EMERGENCY_SHUTDOWN, if it did."""
        return self._emergency_reason

    # ------------------------------------------------------------------ SafeCall

    def _health(self, slot: _Slot) -> str:
        if slot.breaker.state is BreakerState.QUARANTINED:
            return "unhealthy"
        hook = slot.info.hooks.get("health")
        if hook is None or hook.is_async:
            return "healthy"
        try:
            value = hook.fn()
        except _STEP_ERRORS:
            return "unhealthy"
        return value if value in _HEALTH_VALUES else "unhealthy"

    def _record(
        self, slot: _Slot, hook: str, exc: BaseException, *, kind: str = "error"
    ) -> ErrorRecord:
        stack = None
        if isinstance(exc, StepInterrupted):
            kind = "interrupted"
            stack, slot.hang_stack = slot.hang_stack, None
        elif isinstance(exc, StepTimeout):
            kind = "timeout"
        record = make_record(
            exc,
            time=self._wall(),
            tick=self._tick,
            system=slot.name,
            hook=hook,
            phase=self.phase.value,
            gauges=self._gauges,
            health=self._health(slot),
            traceback_limit=self._effective.recovery.traceback_limit,
            kind=kind,
            stack=stack,
        )
        self.errors.add(record)
        slot.failures += 1
        slot.failed_tick = self._tick
        return record

    async def _call(
        self, slot: _Slot, hook: str, *args: Any, timeout: float | None = None
    ) -> tuple[bool, Any]:
        """Call an optional hook through SafeCall; ``(ok, result)``."""
        resolved = slot.info.hooks.get(hook)
        if resolved is None:
            return True, None
        self._call_seq += 1
        self._current = slot
        try:
            if resolved.is_async:
                with trio.move_on_after(math.inf if timeout is None else timeout):
                    return True, await resolved.fn(*args)
                raise StepTimeout(f"{hook} overran its {timeout:g} s deadline and was abandoned")
            return True, resolved.fn(*args)
        except _STEP_ERRORS as exc:
            self._current = None
            record = self._record(slot, hook, exc)
            self._log.error(
                "system.error",
                system=slot.name,
                hook=hook,
                error=record.exc_type,
                message=record.message,
                fingerprint=record.fingerprint,
            )
            return False, None
        finally:
            self._current = None
            self._call_seq += 1

    async def _step_failed(self, slot: _Slot, hook: str, exc: BaseException) -> None:
        """A tick step failed: record, then recover, quarantine or escalate."""
        record = self._record(slot, hook, exc)
        now = trio.current_time()
        self._log.error(
            "system.error",
            system=slot.name,
            hook=hook,
            tick=self._tick,
            error=record.exc_type,
            message=record.message,
            fingerprint=record.fingerprint,
            kind=record.kind,
        )
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
            ok, _ = await self._call(slot, "recover", slot.ctx, record)
            if ok or slot.breaker.failure(now):
                return
        self._quarantine(slot, now)

    def _quarantine(self, slot: _Slot, now: float) -> None:
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
            if not slot.started:
                ok, _ = await self._call(slot, "start", slot.ctx)
                if not ok:
                    breaker.state = BreakerState.CLOSED  # quarantine() counts from CLOSED
                    self._quarantine(slot, now)
                    continue
                slot.started = True
            self._half_open.append(slot)
            self._log.info("system.retry", system=slot.name)
        self._rebuild_active()

    def _close_half_open(self) -> None:
        """Close the breaker of every half-open system whose trial tick just passed."""
        ran = self._tick - 1
        for slot in list(self._half_open):
            if slot.breaker.state is BreakerState.HALF_OPEN and slot.failed_tick != ran:
                slot.breaker.success()
                self._half_open.remove(slot)
                self._log.info("system.recovered", system=slot.name)

    def step_window(self, name: str) -> list[float]:
        """Step times of system ``name`` over its last ticks (up to ``STEP_RING``), oldest first."""
        slot = self._slots[name]
        end = self._tick if slot.window_end is None else slot.window_end
        start = max(slot.active_since, end - STEP_RING)
        ring = slot.ring
        return [ring[t & _RING_MASK] for t in range(start, end)]

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

    # ------------------------------------------------------------------ the tick loop

    async def _run_tick(self) -> None:
        """Step every active system once. The hot path.

        One timer read per step: each step's time is the difference with the
        previous read, stored in the system's ring (see ``step_window``).
        """
        timer = self._timer
        idx = self._tick & _RING_MASK
        t = timer()
        for slot in self._active:
            self._current = slot
            try:
                if slot.tick_async:
                    with trio.move_on_after(self._budget) as scope:
                        await slot.tick_fn(slot.ctx)
                    if scope.cancelled_caught:
                        raise StepTimeout(
                            f"async tick overran the {self._budget * 1e3:.3g} ms budget"
                        )
                else:
                    slot.tick_fn(slot.ctx)
            except _STEP_ERRORS as exc:
                self._current = None
                await self._step_failed(slot, "tick", exc)
            now = timer()
            slot.ring[idx] = now - t
            t = now
        self._current = None

    async def _tick_loop(self, ticks: int | None, duration: float | None) -> None:
        cfg = self._effective.supervisor
        sleep_until, sleeper = make_sleeper(precise=self._effective.features.precise_timing)
        current_time = trio.current_time
        timer = self._timer
        lateness = self.lateness
        work = self.work
        skip = cfg.overrun == "skip"
        max_catch_up = cfg.max_catch_up
        anchor = current_time()
        end = anchor + duration if duration is not None else math.inf
        last_tick = self._tick + ticks if ticks is not None else None
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
                t0 = timer()
                await self._run_tick()
                elapsed = timer() - t0
                work.record(elapsed)
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
        timeout = self._effective.supervisor.stop_timeout * 5
        for slot in self._order:
            ok, _ = await self._call(slot, "start", slot.ctx, timeout=timeout)
            if ok:
                slot.started = True
                continue
            record = self.errors.records[-1]
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
        timeout = self._effective.supervisor.stop_timeout
        for slot in reversed(self._order):
            if not slot.started:
                continue
            await self._call(slot, "stop", slot.ctx, timeout=timeout)
            slot.started = False
        for slot in self._active:
            slot.window_end = self._tick
        self._active = []

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
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> RunSummary:
        """Start the systems, tick until stopped, stop them; return the summary.

        Args:
            ticks: stop gracefully after this many ticks.
            duration: stop gracefully after this many seconds of the clock.
            exit_on_emergency: return once an emergency shutdown is done;
                otherwise stay up (for the API) until ``stop()``.
            handle_signals: SIGINT/SIGTERM stop gracefully; a second forces.

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
                await self._serve(ticks, duration, exit_on_emergency, handle_signals, task_status)
        finally:
            self._running = False
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
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(self._watch_signals)
            if self._effective.features.watchdog:
                wd = self._effective.watchdog
                self._watchdog = Watchdog(
                    self, hang_timeout=wd.hang_timeout, kill_timeout=wd.kill_timeout
                )
                self._watchdog.start()
            try:
                try:
                    await self._start_systems()
                except (StartupError, DependencyError) as exc:
                    self._startup_error = exc
                    return
                task_status.started()
                await self._tick_loop(ticks, duration)
                if self._emergency_reason is not None:
                    await self._enter_emergency()
                    if not exit_on_emergency:
                        await self._stopped.wait()
                else:
                    await self._stop_systems()
            finally:
                if self._watchdog is not None:
                    self._watchdog.stop()
                    self._watchdog = None
                nursery.cancel_scope.cancel()

    async def _enter_emergency(self) -> None:
        previous = self.phase
        self.phase = Phase.EMERGENCY_SHUTDOWN
        self._log.critical(
            "supervisor.emergency",
            reason=self._emergency_reason,
            source=self._emergency_source,
            previous_phase=previous.value,
            tick=self._tick,
        )
        await self._stop_systems()

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
