"""The supervisor: the composition root that wires the rooms of the runtime together.

The rooms share a ``Kernel``, never the ``Supervisor``: ``_slots``, ``_registry``,
``_steps`` (SafeCall, the hot path), ``_failures``, ``_gauges``, ``_recovery``,
``_schedule`` + ``_loop`` (ticks and post-tick chores), ``_runner`` (one run),
``_snapshotter``, ``_lifecycle``, ``_tuning``, ``_housekeeping``, ``_services``,
``_commands``, ``_windows`` (10 s / 60 s figures), ``_surface`` and ``_views``.
This module builds and wires them and keeps the public surface; each ``run()``
gets a fresh ``RunState``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .._errors import ConfigError
from .._logging import get_logger
from ._commands import CommandQueue
from ._config import Config
from ._control import Caller, LifecycleEvent, ReadinessReport
from ._experiments import attach_experiments
from ._failures import FailureRecorder
from ._gauges import GaugeDesk
from ._histogram import Histogram
from ._housekeeping import Housekeeper
from ._kernel import Kernel, RunState, validate_rate
from ._lifecycle import Lifecycle
from ._memory import MemoryTracker
from ._optimizer import Optimizer
from ._phase import Phase, PhaseMachine
from ._profiles import MachineFacts, choose_profile, detect_facts
from ._recovery import Recovery
from ._redact import Redactor
from ._registry import register as add_system
from ._registry import register_from_config
from ._reload import Reloader
from ._runner import Runner
from ._safecall import ErrorLog, ErrorRecord
from ._services import Services
from ._slots import LoopState
from ._snapshot_shared import open_snapshot_store
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
    SnapshotTaken,
    StatusView,
    SupervisorStats,
    SystemAction,
)
from ._windows import TickWindows, Windowed

__all__ = ["Supervisor"]

#: Lifecycle events kept (a ring: the oldest go first).
LIFECYCLE_HISTORY = 1000


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
        validate_rate(rate)
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
        k.gauge_reporter = gauges.report
        self.snapshots = open_snapshot_store(self.state_dir / "snapshots", active)
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
        self._windows = TickWindows(k)
        self._surface = ControlSurface(
            k,
            lifecycle=self._lifecycle,
            snapshots=self._snapshotter,
            services=self._services,
            tuning=self._tuning,
            housekeeper=self._housekeeper,
            commands=self._commands,
            recovery=self._recovery,
            windows=self._windows,
            facts=self.facts,
            profile=(self.profile.name, self.profile_reason),
        )
        self._runner = Runner(
            k,
            recorder=self._recorder,
            steps=self._steps,
            recovery=self._recovery,
            snapshots=self._snapshotter,
            tuning=self._tuning,
            housekeeper=self._housekeeper,
            services=self._services,
            lifecycle=self._lifecycle,
            commands=self._commands,
            windows=self._windows,
        )
        #: Long-running services started with each run (see ``_services``): the
        #: HTTP API registers itself here; the core does not import it.
        self.services: list[Callable[..., Awaitable[Any]]] = self._services.services
        #: Crashes of each service (by its function's name).
        self.service_failures = self._services.failures
        #: Called with the new phase after every phase change.
        self.phase_listeners: list[Callable[[Phase], None]] = self._lifecycle.listeners
        #: Named sections capabilities add to ``status()`` (see ControlSurface.status_sections).
        self.status_sections = self._surface.status_sections
        #: Called with every error record as it is made (``_failures``): the
        #: durable error store enqueues here, off the tick's own work.
        self.record_sinks: list[Callable[[ErrorRecord], None]] = self._recorder.sinks
        #: Extra error-sink checks for readiness: each returns a problem or None.
        self.sink_checks: list[Callable[[], str | None]] = self._surface.sink_checks
        #: The Prometheus exposition, installed by the server layer (``_server._metrics``).
        self.metrics_exporter: Callable[[], tuple[bytes, str]] | None = None
        self._attach_features(k, active.supervisor.realtime)

    def _attach_features(self, k: Kernel, realtime: bool) -> None:
        """Realtime mode's and the scheduler's status, hot reload, memory, flags, experiments."""
        if realtime:
            self.status_sections["realtime"] = self._runner.loop.realtime.status
        # The tick thread's fair-scheduler slice (``_slice``), in plain mode too.
        self.status_sections["scheduler"] = self._runner.loop.fair_slice.status
        #: Hot reload of systems between two ticks (``run --reload`` drives it).
        self.reloader = Reloader(k, self._steps)
        self._runner.loop.add_chore(self.reloader.chore)
        #: Memory per system (``[features] memory_tracking``, in any phase's overlay).
        self.memory = MemoryTracker(k)
        self._attach_memory()
        #: Flags and experiments (``_flags``): ``ctx.flag``/``ctx.variant``, and the
        #: run-time API the staged rollout drives (``percent``, ``set_percent``).
        self.flags = k.flags
        attach_experiments(self, k)

    def _attach_memory(self) -> None:
        """Memory tracking's service and status section, when any phase turns it on."""
        if any(self.config.for_phase(p).features.memory_tracking for p in Phase):
            self.services.append(self.memory.service)
            self.status_sections["memory"] = self.memory.section
            if self.memory.wanted:
                self.memory.trace()  # before the systems are built: their constructors count

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
        register_from_config(sup._k)
        return sup

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
        add_system(self._k, system, name=name, origin=origin, factory=factory)

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

    @property
    def system_memory(self) -> dict[str, int]:
        """Live traced bytes per system at the last memory sample (empty when not tracking)."""
        return self.memory.by_system

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
        self._k.set_tick_rate(hz)

    def stop(self, reason: str = "stop requested") -> None:
        """Stop gracefully after the current tick (systems stopped in reverse order)."""
        self._k.stop(reason)

    def request_emergency(self, reason: str, *, source: str = "operator") -> None:
        """Enter EMERGENCY_SHUTDOWN after the current step: ticking stops, systems stop."""
        self._k.request_emergency(reason, source=source)

    # ------------------------------------------------------------------ run

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
        k.log.info(
            "supervisor.start",
            phase=self.phase.value,
            tick_rate=k.rate,
            profile=self.profile.name,
            systems=len(k.slots),
        )
        await self._runner.run(
            ticks=ticks,
            duration=duration,
            exit_on_emergency=exit_on_emergency,
            handle_signals=handle_signals,
            resume=resume,
            task_status=task_status,
        )
        summary = self.summary()
        k.log.info(
            "supervisor.stop", reason=summary.exit_reason, ticks=summary.ticks, phase=summary.phase
        )
        return summary

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

    async def quarantine(self, name: str, *, reason: str, caller: Caller) -> SystemAction:
        """Take system ``name`` out of the tick after the current one; it stays out until released.

        Raises:
            Unknown: no such system.
            Refused: an operator holds it already.
        """
        return await self._surface.quarantine(name, reason=reason, caller=caller)

    async def release(self, name: str, *, reason: str, caller: Caller) -> SystemAction:
        """Put system ``name`` back into the tick, its restart budget reset."""
        return await self._surface.release(name, reason=reason, caller=caller)

    async def snapshot(self, *, reason: str, caller: Caller) -> SnapshotTaken:
        """Write a snapshot after the current tick; answered with its path once written."""
        return await self._surface.snapshot(reason=reason, caller=caller)

    def windows(self) -> Windowed:
        """Lateness and work over the last 10 s and 60 s, and the tick rate measured over 10 s."""
        return self._windows.figures()

    def next_tick_due(self) -> tuple[float, float] | None:
        """The next tick's deadline on trio's clock and the period; None before the first tick.

        For work that must not start just before a tick (the API's accept
        loop under load): the last tick's deadline plus one period, which the
        reader projects forward if the loop is late or stopped.
        """
        loop = self._k.loop
        if not loop.tick or self._k.run.stopping:
            return None
        return loop.now + loop.dt, loop.dt

    def set_listen(self, address: str | None) -> None:
        """The server layer reports the API address it bound (status shows it)."""
        self._surface.listen = address

    def quarantined(self) -> tuple[str, ...]:
        """Names of the systems in quarantine now."""
        return self._k.quarantined()

    def statistics(self) -> SupervisorStats:
        """A frozen view of the supervisor now."""
        return self._surface.statistics()

    def summary(self) -> RunSummary:
        """The run summary as of now."""
        return self._surface.summary()
