"""The supervisor: the composition root that wires the rooms of the runtime together.

Each room has one job (``_slots`` the system table, ``_steps`` SafeCall and
the hot path, ``_failures`` recording, ``_recovery`` budgets and quarantine,
``_loop`` the tick loop and its post-tick chores, ``_snapshotter``,
``_lifecycle`` start/stop/phases/emergency/restart, ``_tuning`` the
optimizer's driver, ``_housekeeping``, ``_services``, ``_commands``, and
``_surface`` the views and actions); they share a ``Kernel``, never the
``Supervisor``. This module registers systems, runs a run, and exposes the
public surface; it owns the run state (``RunState``, fresh per ``run()``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from .._errors import ConfigError, DependencyError, PluginError, StartupError, SupervisorError
from .._logging import get_logger
from ._commands import CommandQueue
from ._config import Config
from ._context import Context
from ._control import Caller, LifecycleEvent, ReadinessReport
from ._failures import FailureRecorder
from ._gauges import GaugeDesk
from ._histogram import Histogram
from ._housekeeping import Housekeeper
from ._kernel import Kernel, RunState
from ._lifecycle import Lifecycle
from ._loop import TickLoop
from ._optimizer import Optimizer
from ._phase import Phase, PhaseMachine
from ._plugins import build, discover, inspect_system, is_import_string, load_target
from ._plugins import order as dependency_order
from ._profiles import MachineFacts, choose_profile, detect_facts
from ._recovery import Recovery
from ._redact import Redactor
from ._safecall import Breaker, ErrorLog
from ._services import Services
from ._slots import LoopState, Slot
from ._snapshot import SnapshotStore
from ._snapshotter import Snapshotter
from ._steps import Steps
from ._surface import ControlSurface
from ._tuning import OptimizerDriver
from ._views import (
    ErrorView,
    PhaseChange,
    RestartResult,
    RunSummary,
    ShutdownResult,
    StatusView,
    SupervisorStats,
)
from ._watchdog import Watchdog

__all__ = ["Supervisor"]

#: Lifecycle events kept (a ring: the oldest go first).
LIFECYCLE_HISTORY = 1000


def _validate_rate(hz: float) -> None:
    if isinstance(hz, bool) or not isinstance(hz, int | float) or not 0.1 <= hz <= 10_000:
        raise ConfigError(f"tick rate must be between 0.1 and 10000 Hz, got {hz!r}")


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
        active = self.config.for_phase(start)
        self.facts = facts if facts is not None else detect_facts()
        self.profile, self.profile_reason = choose_profile(
            active.profiles, profile or active.supervisor.profile, self.facts
        )
        rate = tick_rate or active.supervisor.tick_rate or self.profile.tick_rate
        _validate_rate(rate)
        fraction = active.supervisor.budget_fraction or self.profile.budget_fraction
        #: Whether snapshots are written (``supervisor.testing`` turns it off).
        self.persist = persist
        self.state_dir = (
            Path(state_dir)
            if state_dir is not None
            else self.config.path(active.supervisor.state_dir)
        )
        k = self._k = Kernel(
            config=self.config,
            active=active,
            phases=PhaseMachine(start, history=LIFECYCLE_HISTORY),
            loop=LoopState(dt=1.0 / rate),
            redactor=Redactor(enabled=False),
            errors=ErrorLog(history=active.recovery.history),
            log=get_logger(),
            timer=timer,
            wall=wall,
            state_dir=self.state_dir,
            persist=persist,
            rate=float(rate),
            budget_fraction=fraction,
            budget=fraction / rate,
        )
        k.redactor.enabled = k.redaction
        self.redactor = k.redactor
        self.errors = k.errors
        self.lateness = k.lateness
        self.work = k.work
        self._recorder = FailureRecorder(k)
        self._steps = Steps(k, self._recorder)
        self._recovery = Recovery(k, self._recorder, self._steps)
        self._steps.on_failure = self._recovery.step_failed
        gauges = GaugeDesk(k, self._recorder)
        k.report_gauge = gauges.report
        self.snapshots = SnapshotStore(
            self.state_dir / "snapshots",
            generations=active.supervisor.snapshot_generations,
            key=active.supervisor.snapshot_key_bytes,
        )
        self._snapshotter = Snapshotter(
            k, self.snapshots, self._recorder, self._steps, self._recovery
        )
        self._tuning = OptimizerDriver(k, self.profile)
        self._housekeeper = Housekeeper(k, self._recorder)
        self._services = Services(self, self.redactor, k.log)
        self._lifecycle = Lifecycle(
            k,
            recorder=self._recorder,
            steps=self._steps,
            recovery=self._recovery,
            snapshots=self._snapshotter,
            gauges=gauges,
            tuning=self._tuning,
        )
        self._commands = CommandQueue()
        self._surface = ControlSurface(
            k,
            lifecycle=self._lifecycle,
            snapshots=self._snapshotter,
            services=self._services,
            tuning=self._tuning,
            housekeeper=self._housekeeper,
            commands=self._commands,
            facts=self.facts,
            profile=(self.profile.name, self.profile_reason),
        )
        self._loop = self._tick_loop()
        #: Long-running services started with each run (see ``_services``): the
        #: HTTP API registers itself here; the core does not import it.
        self.services: list[Callable[..., Awaitable[Any]]] = self._services.services
        #: Crashes of each service (by its function's name).
        self.service_failures = self._services.failures
        #: Called with the new phase after every phase change.
        self.phase_listeners: list[Callable[[Phase], None]] = self._lifecycle.listeners
        #: Extra error-sink checks for readiness: each returns a problem or None.
        self.sink_checks: list[Callable[[], str | None]] = self._surface.sink_checks
        #: The Prometheus exposition, installed by the server layer (``_server._metrics``).
        self.metrics_exporter: Callable[[], tuple[bytes, str]] | None = None

    def _tick_loop(self) -> TickLoop:
        """The tick loop, with the post-tick chores in their documented order."""
        loop = TickLoop(self._k, self._steps)
        recovery, snaps, tuning, commands = (
            self._recovery,
            self._snapshotter,
            self._tuning,
            self._commands,
        )

        async def close_half_open(_deadline: float) -> None:
            recovery.close_half_open()

        async def drain_watchdog(_deadline: float) -> None:
            self._drain_watchdog()

        async def periodic_snapshot(_deadline: float) -> None:
            assert self._k.run.nursery is not None
            await snaps.periodic(self._k.run.nursery)

        async def optimize(deadline: float) -> None:
            tuning.step(deadline)

        loop.add_chore("close_half_open", lambda _d: bool(recovery.half_open), close_half_open)
        loop.add_chore("watchdog", lambda _d: self._watchdog_events(), drain_watchdog)
        loop.add_chore("retry", lambda d: recovery.next_retry <= d, recovery.retry)
        loop.add_chore("health", lambda d: recovery.next_health <= d, recovery.check_health)
        loop.add_chore("snapshot", lambda d: snaps.next_due <= d, periodic_snapshot)
        loop.add_chore("optimizer", lambda d: tuning.next_due <= d, optimize)
        loop.add_chore("commands", lambda _d: bool(commands), commands.drain_after_tick)
        return loop

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
        cfg = self._k.active.systems
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
            dependency_order(s.info for s in self._k.slots.values())
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
        k = self._k
        if k.run.running:
            raise PluginError("cannot register while running", system=name)
        if name is None:
            name = getattr(system, "name", None) or type(system).__name__.lower()
        if name in k.slots:
            raise PluginError("a system of this name is already registered", system=name)
        info = inspect_system(system, name, origin)
        slot = Slot(
            name=name,
            system=system,
            info=info,
            tick_fn=info.tick.fn,
            tick_async=info.tick.is_async,
            factory=factory,
            breaker=Breaker.of(k.active.recovery),
        )
        slot.ctx = Context(k, slot, get_logger(system=name))
        slot.offset = len(k.slots)
        k.slots[name] = slot
        # The system's own name, when it keeps one, is the name it runs under.
        if getattr(system, "name", name) != name:
            with contextlib.suppress(AttributeError, TypeError):
                system.name = name

    def system(self, name: str) -> Any:
        """The registered system called ``name``.

        Raises:
            KeyError: no such system.
        """
        return self._k.system(name)

    @property
    def names(self) -> list[str]:
        """Registered system names, in tick order once running."""
        k = self._k
        return [s.name for s in k.order] if k.order else list(k.slots)

    # ------------------------------------------------------------------ state

    @property
    def active_config(self) -> Config:
        """The config in force: the base config with the current phase's overlay applied.

        Readiness, recovery, the watchdog and the API server all read this one.
        """
        return self._k.active

    @property
    def run_state(self) -> RunState:
        """The state of the current (or last) run."""
        return self._k.run

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._k.phase

    @property
    def access_phase(self) -> Phase:
        """The phase whose API access rules apply: during an emergency, the one it interrupted."""
        phases = self._k.phases
        return phases.interrupted or phases.phase

    @property
    def gauges(self) -> dict[str, float]:
        """The gauges systems reported with ``ctx.report``."""
        return self._k.gauges

    @property
    def phase_history(self) -> tuple[LifecycleEvent, ...]:
        """Every phase change and lifecycle action, oldest first."""
        return tuple(self._k.phases.history)

    @property
    def tick(self) -> int:
        """Ticks run so far (continues across restore)."""
        return self._k.loop.tick

    @property
    def tick_rate(self) -> float:
        """The current tick rate in Hz."""
        return self._k.tick_rate

    @property
    def budget(self) -> float:
        """The work budget of one tick, in seconds."""
        return self._k.budget

    @property
    def overruns(self) -> int:
        """Ticks whose work exceeded the budget."""
        return self._k.overruns

    @property
    def dropped_ticks(self) -> int:
        """Ticks dropped by the overrun policy."""
        return self._k.dropped_ticks

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer, once the first observation made it (None when off)."""
        return self._tuning.optimizer

    @property
    def optimizer_adjustments(self) -> int:
        """Optimizer decisions applied."""
        return self._tuning.adjustments

    @property
    def redaction(self) -> bool:
        """Whether personal data is redacted: the flag, else on outside DEVELOPMENT."""
        return self._k.redaction

    @property
    def emergency_reason(self) -> str | None:
        """Why the supervisor entered EMERGENCY_SHUTDOWN, if it did."""
        return self._k.run.emergency_reason

    @property
    def emergency_info(self) -> dict[str, Any] | None:
        """The last emergency: reason, source, tick, snapshot, trigger-to-snapshot seconds."""
        return self._k.run.emergency_info

    @property
    def closing(self) -> trio.Event:
        """Set when the run is ending: services should return."""
        return self._services.closing

    @property
    def resources(self) -> dict[str, float]:
        """The last resource sample (rss_bytes, cpu_percent, threads, open_files)."""
        return self._housekeeper.resources

    @property
    def last_snapshot(self) -> Path | None:
        """The path of the last snapshot written."""
        return self._snapshotter.last

    @property
    def snapshot_problems(self) -> list[str]:
        """Problems found in the snapshot folder by the last look for the latest."""
        return self._snapshotter.problems

    @property
    def snapshot_failures(self) -> int:
        """Snapshots that could not be written."""
        return self._snapshotter.failures

    @property
    def snapshots_skipped(self) -> int:
        """Periodic snapshots skipped because the previous write was still going."""
        return self._snapshotter.skipped

    @property
    def snapshot_stall(self) -> Histogram:
        """Tick-loop time spent capturing periodic snapshots."""
        return self._snapshotter.stall

    @property
    def snapshot_write(self) -> Histogram:
        """Time spent writing snapshots (on a worker thread)."""
        return self._snapshotter.write_time

    def step_window(self, name: str, since: int = 0) -> list[float]:
        """Step times of system ``name`` over its last ticks (up to ``STEP_RING``), oldest first.

        ``since`` leaves out the ticks before it.
        """
        return self._k.slots[name].window(self._k.loop.tick, since)

    def set_tick_rate(self, hz: float) -> None:
        """Change the tick rate; the schedule re-anchors at the next tick.

        Raises:
            ConfigError: ``hz`` is out of range.
        """
        _validate_rate(hz)
        self._k.set_tick_rate(hz)

    def stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully after the current tick (systems stopped in reverse order)."""
        self._k.stop(reason)

    def request_emergency(self, reason: str, *, source: str = "operator") -> None:
        """Enter EMERGENCY_SHUTDOWN after the current step: ticking stops, systems stop."""
        self._k.request_emergency(reason, source=source)

    # ------------------------------------------------------------------ run

    async def _watch_signals(self) -> None:
        run = self._k.run
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if run.stopping:
                    self._k.log.warning("supervisor.force_stop", signal=name)
                    run.force = True
                    run.scope.cancel()
                    return
                self._k.log.info("supervisor.signal", signal=name)
                self.stop(f"signal {name}")

    def _watchdog_events(self) -> bool:
        watchdog = self._lifecycle.watchdog
        return watchdog is not None and bool(watchdog.events)

    def _drain_watchdog(self) -> None:
        watchdog = self._lifecycle.watchdog
        assert watchdog is not None
        events = watchdog.events
        while events:
            event = events.popleft()
            self._k.log.warning(
                "system.hang", system=event.system, tick=event.tick, elapsed=round(event.elapsed, 3)
            )

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
        k = self._k
        if k.run.running:
            raise RuntimeError("this supervisor is already running")
        run = k.run = RunState(running=True)
        k.log.info(
            "supervisor.start",
            phase=self.phase.value,
            tick_rate=k.rate,
            profile=self.profile.name,
            systems=len(k.slots),
        )
        try:
            with run.scope:
                await self._serve(
                    ticks, duration, exit_on_emergency, handle_signals, resume, task_status
                )
        finally:
            run.running = False
            self._commands.draining = False
            self._commands.drain()
            self._recorder.flush(all_folds=True)
            run.stopped.set()
        if run.startup_error is not None:
            # Raised here, outside the nursery, so callers get the error itself
            # and not an exception group around it.
            raise run.startup_error
        summary = self.summary()
        k.log.info(
            "supervisor.stop", reason=summary.exit_reason, ticks=summary.ticks, phase=summary.phase
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
        k = self._k
        run = k.run
        services = self._services
        async with trio.open_nursery() as nursery:
            run.nursery = nursery
            if handle_signals:
                nursery.start_soon(self._watch_signals)
            nursery.start_soon(self._housekeeper.run)
            services.open()
            for service in services.services:
                try:
                    await nursery.start(services.run, service)
                except SupervisorError as exc:
                    run.startup_error = exc
                    await services.close(force=run.force)
                    nursery.cancel_scope.cancel()
                    return
            if k.active.features.watchdog:
                wd = k.active.watchdog
                watchdog = Watchdog(
                    k.loop, hang_timeout=wd.hang_timeout, kill_timeout=wd.kill_timeout
                )
                self._lifecycle.watchdog = watchdog
                watchdog.start()
            try:
                if resume:
                    await self._snapshotter.resume()
                try:
                    await self._lifecycle.start_systems()
                except (StartupError, DependencyError) as exc:
                    run.startup_error = exc
                    return
                now = trio.current_time()
                run.tick_limit = k.loop.tick + ticks if ticks is not None else None
                run.end_time = now + duration if duration else math.inf
                self._snapshotter.schedule()
                # Everything built so far lives as long as the run: move it out
                # of the cyclic GC's way, so a full collection stays short.
                gc.collect()
                gc.freeze()
                self._tuning.start(now)
                self._recovery.next_health = now  # checked after the first tick
                task_status.started()
                await self._until_the_end(exit_on_emergency)
            finally:
                if self._lifecycle.watchdog is not None:
                    self._lifecycle.watchdog.stop()
                    self._lifecycle.watchdog = None
                await services.close(force=run.force)
                nursery.cancel_scope.cancel()
                run.nursery = None

    async def _until_the_end(self, exit_on_emergency: bool) -> None:
        """Tick; when the loop ends, act on why: an emergency, a restart, or the stop."""
        run = self._k.run
        lifecycle = self._lifecycle
        while True:
            self._commands.draining = True
            try:
                await self._loop.run()
            finally:
                self._commands.draining = False
                self._commands.drain()
            if run.emergency_reason is not None:
                if self.phase is not Phase.EMERGENCY_SHUTDOWN:
                    await lifecycle.enter_emergency()
                # else: a restart failed and left the preserved state as it was.
                if exit_on_emergency or not await self._wait_for_restart():
                    break
                await lifecycle.restart(from_disk=True)
            elif run.restart_requested is not None:
                await lifecycle.restart(from_disk=False)
            else:
                await lifecycle.graceful_stop()
                break

    async def _wait_for_restart(self) -> bool:
        """In EMERGENCY_SHUTDOWN: wait for ``restart`` (True) or ``stop`` (False)."""
        run = self._k.run
        while run.restart_requested is None and not run.stop_reason:
            run.wake = trio.Event()
            await run.wake.wait()
        return run.restart_requested is not None

    # ------------------------------------------------------------------ control surface

    def liveness(self) -> tuple[bool, str]:
        """(alive, detail): ticks are progressing, or the emergency handler is up."""
        return self._surface.liveness()

    def readiness_gate(self) -> tuple[bool, list[str]]:
        """(ready, reasons): not in EMERGENCY_SHUTDOWN, no system unhealthy or quarantined."""
        return self._surface.readiness_gate()

    def readiness(self) -> ReadinessReport:
        """The deployment readiness report (each check judged for PRODUCTION)."""
        return self._surface.readiness()

    def security_report(self) -> ReadinessReport:
        """The security check alone: starting directly in PRODUCTION requires it."""
        return self._surface.security_report()

    def error_view(self, *, limit: int = 20, system: str | None = None) -> ErrorView:
        """Recent records (newest first) and groups by fingerprint, redacted."""
        return self._surface.error_view(limit=limit, system=system)

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition, by the exporter the server layer installed.

        Raises:
            RuntimeError: no exporter is installed (``_server._metrics.install``).
        """
        if self.metrics_exporter is None:
            raise RuntimeError("no metrics exporter installed (see supervisor._server._metrics)")
        return self.metrics_exporter()

    def next_step(self) -> str:
        """What an operator should do now, in one sentence."""
        return self._surface.next_step()

    def status(self) -> StatusView:
        """Everything ``supervisor status`` shows (``.as_dict()`` is the JSON)."""
        return self._surface.status()

    async def shutdown(self, *, emergency: bool, reason: str, caller: Caller) -> ShutdownResult:
        """Stop gracefully, or enter EMERGENCY_SHUTDOWN and answer once its snapshot is written."""
        return await self._surface.shutdown(emergency=emergency, reason=reason, caller=caller)

    async def restart(self, *, caller: Caller) -> RestartResult:
        """Rebuild the systems from preserved state and go on ticking; answered once they tick."""
        return await self._surface.restart(caller=caller)

    async def change_phase(
        self, phase: str, *, force: bool, reason: str, caller: Caller
    ) -> PhaseChange:
        """Move to ``phase`` after the current tick; promotion passes the readiness gate."""
        return await self._surface.change_phase(phase, force=force, reason=reason, caller=caller)

    def quarantined(self) -> tuple[str, ...]:
        """Names of the systems in quarantine now."""
        return self._k.quarantined()

    def statistics(self) -> SupervisorStats:
        """A frozen view of the supervisor now."""
        return self._surface.statistics()

    def summary(self) -> RunSummary:
        """The run summary as of now."""
        return self._surface.summary()
