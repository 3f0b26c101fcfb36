"""The control surface: what the API and the CLI read (views) and ask (actions).

Views are built from the kernel and the rooms at one moment and returned
frozen (``_views``); they never call plugin code (health is the value the
tick loop cached). Actions are checked here, then carried out by the loop
(phase changes are queued commands; a stop, an emergency or a restart ends
the tick loop, and the caller is answered once it has happened).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import trio

from .._errors import PhaseError
from ._commands import CommandQueue
from ._control import Caller, ReadinessReport, Refused, Unknown
from ._histogram import HistogramStats
from ._housekeeping import Housekeeper
from ._kernel import Kernel
from ._lifecycle import Lifecycle
from ._phase import Phase
from ._profiles import MachineFacts
from ._readiness import ReadinessFacts, assess, security_only
from ._recovery import Recovery
from ._safecall import safe_message, safe_type_name
from ._services import Services
from ._slots import STEP_RING, Slot, ring_window
from ._snapshotter import Snapshotter
from ._tuning import OptimizerDriver
from ._views import (
    ErrorView,
    PhaseChange,
    RestartResult,
    RunSummary,
    ShutdownResult,
    SnapshotStatus,
    SnapshotTaken,
    StatusView,
    SupervisorStats,
    SystemAction,
    SystemStats,
)
from ._windows import TickWindows

__all__ = ["ControlSurface"]


@functools.cache
def _version() -> str:
    """This package's version (read once: the metadata lookup reads files)."""
    try:
        return metadata.version("tick-supervisor")
    except metadata.PackageNotFoundError:
        return "(not installed)"


class ControlSurface:
    """Views and actions over one runtime (``Supervisor`` delegates to it)."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        lifecycle: Lifecycle,
        snapshots: Snapshotter,
        services: Services,
        tuning: OptimizerDriver,
        housekeeper: Housekeeper,
        commands: CommandQueue,
        recovery: Recovery,
        windows: TickWindows,
        facts: MachineFacts,
        profile: tuple[str, str],
    ) -> None:
        self._k = kernel
        self._recovery = recovery
        self._windows = windows
        self._lifecycle = lifecycle
        self._snapshots = snapshots
        self._services = services
        self._tuning = tuning
        self._housekeeper = housekeeper
        self._commands = commands
        self._facts = facts
        self._profile, self._profile_reason = profile
        #: Extra error-sink checks for readiness: each returns a problem or None.
        self.sink_checks: list[Callable[[], str | None]] = []
        #: Whether PRODUCTION would trace allocations (readiness fails: it slows every one).
        production = kernel.config.for_phase(Phase.PRODUCTION)
        self._tracking_in_production = production.features.memory_tracking
        #: The API address actually bound, reported by the server layer (None: no API).
        self.listen: str | None = None
        #: Named sections a capability adds to ``status`` (``fleet``, ``agones``,
        #: ``rollouts``...): each returns a JSON-ready mapping when status is read.
        #: A section that raises shows as ``{"error": ...}``; status never fails for it.
        self.status_sections: dict[str, Callable[[], Mapping[str, Any]]] = {}

    # ------------------------------------------------------------------ probes

    def liveness(self) -> tuple[bool, str]:
        """(alive, detail): ticks are progressing, or the emergency handler is up."""
        k = self._k
        run = k.run
        if not run.running:
            return False, "not running"
        # Fixed words and numbers only: anonymous callers read this (no free text).
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            return True, "emergency_shutdown"
        if run.restart_requested is not None or run.last_tick_at is None:
            return True, "starting"
        age = trio.current_time() - run.last_tick_at
        limit = max(1.0, 5.0 / k.rate)
        if age > limit:
            return False, f"no tick for {age:.2f} s (limit {limit:.2f} s)"
        return True, f"last tick {age * 1e3:.1f} ms ago"

    def readiness_gate(self) -> tuple[bool, list[str]]:
        """(ready, reasons): not in EMERGENCY_SHUTDOWN, no system unhealthy or quarantined."""
        k = self._k
        reasons = []
        if not k.run.running or k.run.last_tick_at is None:
            reasons.append("not ticking yet")
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            reasons.append("emergency_shutdown")
        reasons.extend(f"quarantined: {name}" for name in k.quarantined())
        reasons.extend(
            f"unhealthy: {s.name}"
            for s in k.slots.values()
            if s.started and not s.quarantined and s.health == "unhealthy"
        )
        return not reasons, reasons

    def _readiness_facts(self) -> ReadinessFacts:
        k = self._k
        tick = k.loop.tick
        window = min(tick, STEP_RING)
        work = HistogramStats.from_values(ring_window(k.work_ring, tick - window, tick))
        sink_problem = None
        for check in (self._snapshot_sink_problem, *self.sink_checks):
            sink_problem = check()
            if sink_problem:
                break
        api = k.active.api
        socket_mode = None
        if api.listen.startswith("unix:"):
            with contextlib.suppress(OSError):
                socket_mode = k.config.path(api.listen[5:]).stat().st_mode & 0o777
        running = k.run.running
        return ReadinessFacts(
            not_started=tuple(s.name for s in k.order if not s.started and not s.quarantined)
            if running
            else tuple(k.slots),
            quarantined=k.quarantined(),
            unhealthy=tuple(
                s.name for s in k.slots.values() if s.started and s.health == "unhealthy"
            ),
            window_ticks=window,
            work_p95=work.p95,
            budget=k.budget,
            dropped_in_window=self._housekeeper.dropped_since(tick - window),
            realtime_fix=self._realtime_fix(),
            memory_tracking=self._tracking_in_production,
            sink_problem=sink_problem,
            target_phase=Phase.PRODUCTION.value,
            api_enabled=k.active.features.api,
            api_tcp=not api.listen.startswith("unix:"),
            tokens=len(api.tokens),
            socket_mode=socket_mode,
            redaction=k.active.features.redaction is not False,
        )

    def _realtime_fix(self) -> str | None:
        """What to change for realtime mode, when it was asked for and refused (``_realtime``)."""
        section = self.status_sections.get("realtime")
        fix = section().get("recommendation") if section is not None else None
        return fix if isinstance(fix, str) else None

    def _snapshot_sink_problem(self) -> str | None:
        if not self._k.persist:
            return "snapshots are off for this supervisor (persist=False)"
        folder = self._snapshots.store.directory
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

    # ------------------------------------------------------------------ views

    def statistics(self) -> SupervisorStats:
        """A frozen view of the supervisor now."""
        k = self._k
        tick = k.loop.tick
        slots = k.order or list(k.slots.values())
        return SupervisorStats(
            phase=k.phase.value,
            tick=tick,
            tick_rate=k.tick_rate,
            budget=k.budget,
            lateness=k.lateness.stats(),
            work=k.work.stats(),
            overruns=k.overruns,
            dropped_ticks=k.dropped_ticks,
            systems=tuple(
                SystemStats(
                    name=s.name,
                    state=s.state,
                    health=s.health,
                    critical=s.info.critical,
                    priority=s.info.priority,
                    depends_on=s.info.depends_on,
                    origin=s.info.origin,
                    errors=k.errors.counts[s.name],
                    step=HistogramStats.from_values(s.window(tick)),
                    every=s.every,
                )
                for s in slots
            ),
            gauges=dict(k.gauges),
            errors=dict(k.errors.counts),
            quarantined=k.quarantined(),
            profile=self._profile,
            profile_reason=self._profile_reason,
            emergency_reason=k.run.emergency_reason,
            windowed=self._windows.figures(),
        )

    def summary(self) -> RunSummary:
        """The run summary as of now."""
        k = self._k
        run = k.run
        return RunSummary(
            ticks=k.loop.tick,
            tick_rate=k.tick_rate,
            lateness=k.lateness.stats(),
            work=k.work.stats(),
            overruns=k.overruns,
            dropped_ticks=k.dropped_ticks,
            errors=dict(k.errors.counts),
            quarantined=k.quarantined(),
            phase=k.phase.value,
            optimizer_adjustments=self._tuning.adjustments,
            exit_reason=run.exit_reason,
            emergency=run.emergency_reason is not None,
            snapshot_written=run.snapshot_written,
        )

    def error_view(self, *, limit: int = 20, system: str | None = None) -> ErrorView:
        """Recent records (newest first) and groups by fingerprint, redacted."""
        errors = self._k.errors
        return ErrorView(
            records=tuple(self._k.public_record(r) for r in errors.recent(limit, system)),
            groups=tuple(g.as_dict() for g in errors.groups(system))[:limit],
            counts=dict(errors.counts),
            total=errors.total,
        )

    def next_step(self) -> str:
        """What an operator should do now, in one sentence."""
        k = self._k
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            info = k.run.emergency_info or {}
            where = info.get("snapshot") or "no snapshot was written"
            return (
                f"emergency: {k.run.emergency_reason}. State preserved in {where}. Inspect "
                "`supervisor errors`, fix the cause, then `supervisor restart` to continue from "
                "that state, or `supervisor shutdown` to stop."
            )
        held = [s.name for s in k.slots.values() if s.held]
        if held:
            return (
                f"{', '.join(held)} quarantined by an operator: `supervisor release {held[0]}` "
                "puts it back into the tick."
            )
        quarantined = k.quarantined()
        if quarantined:
            return (
                f"{', '.join(quarantined)} quarantined: see `supervisor errors --system "
                f"{quarantined[0]}`; it is retried automatically after its backoff."
            )
        return "nothing to do: every system is running."

    def status(self) -> StatusView:
        """Everything ``supervisor status`` shows."""
        k = self._k
        ready, reasons = self.readiness_gate()
        alive, alive_detail = self.liveness()
        snaps = self._snapshots
        optimizer = self._tuning.optimizer
        opt: dict[str, Any]
        if optimizer is not None:
            opt = {
                **optimizer.statistics().as_dict(),
                "events": [e.as_dict() for e in optimizer.events],
            }
        else:
            opt = {"state": "off" if not k.active.features.optimizer else "starting"}
        info = k.run.emergency_info
        return StatusView(
            version=_version(),
            pid=os.getpid(),
            uptime_seconds=k.run.uptime,
            config_file=_config_file(k),
            listen=self.listen,
            stats=self.statistics(),
            alive=alive,
            alive_detail=alive_detail,
            ready=ready,
            not_ready=tuple(reasons),
            next_step=self.next_step(),
            emergency=None if info is None else dict(info),
            lifecycle=tuple(k.phases.history),
            machine=self._facts,
            resources=dict(self._housekeeper.resources),
            snapshots=SnapshotStatus(
                folder=str(snaps.store.directory),
                last=str(snaps.last) if snaps.last else None,
                last_time=snaps.last_time,
                stall=snaps.stall.stats(),
                write=snaps.write_time.stats(),
                failures=snaps.failures,
                problems=tuple(snaps.problems),
            ),
            redaction=k.redaction,
            service_failures=dict(self._services.failures),
            optimizer=opt,
            sections=self._sections(),
        )

    def _sections(self) -> dict[str, Mapping[str, Any]]:
        """The capabilities' status sections, each read once; a failing one says why."""
        out: dict[str, Mapping[str, Any]] = {}
        for name, section in self.status_sections.items():
            try:
                out[name] = section()
            except Exception as exc:  # a capability's bug must not break status
                out[name] = {"error": f"{safe_type_name(exc)}: {safe_message(exc)}"}
        return out

    # ------------------------------------------------------------------ actions

    async def shutdown(self, *, emergency: bool, reason: str, caller: Caller) -> ShutdownResult:
        """Stop gracefully, or enter EMERGENCY_SHUTDOWN and wait until its snapshot is written.

        Raises:
            Refused: not running, already stopping, or already in an emergency.
        """
        k = self._k
        run = k.run
        if not run.running:
            raise Refused("the supervisor is not running")
        if emergency:
            if run.emergency_reason is not None:
                raise Refused(f"already in emergency_shutdown: {run.emergency_reason}")
            k.request_emergency(
                f"operator {caller.name}: {reason or 'no reason given'}",
                source=f"operator:{caller.name}",
            )
            await run.emergency_done.wait()
            return ShutdownResult(
                tick=k.loop.tick, phase=k.phase.value, emergency=dict(run.emergency_info or {})
            )

        def stop() -> ShutdownResult:  # a command: run after the current tick
            if k.run.stop_reason:
                raise Refused(f"already stopping: {k.run.stop_reason}")
            self._lifecycle.record(
                action="shutdown",
                before=k.phase.value,
                after="stopped",
                caller=caller.name,
                reason=reason,
            )
            k.stop(f"shutdown by {caller.name}" + (f": {reason}" if reason else ""))
            return ShutdownResult(tick=k.loop.tick, phase=k.phase.value)

        answer: ShutdownResult = await self._commands.submit(stop)
        return answer

    async def restart(self, *, caller: Caller) -> RestartResult:
        """Rebuild the systems from preserved state and go on ticking.

        Raises:
            Refused: not running, stopping, a restart in progress, or (after an
                emergency) no valid snapshot to restart from.
        """
        k = self._k
        run = k.run
        if not run.running:
            raise Refused("the supervisor is not running")
        if run.restart_requested is not None:
            raise Refused("a restart is already in progress")
        if run.stop_reason:
            raise Refused(f"stopping: {run.stop_reason}")
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            if not run.emergency_done.is_set():
                raise Refused("the emergency shutdown is still in progress")
            if await self._snapshots.latest() is None:
                problems = self._snapshots.problems
                raise Refused(
                    "no valid snapshot to restart from"
                    + (f" ({'; '.join(problems)})" if problems else "")
                    + ": `supervisor shutdown`, then `supervisor run` starts fresh",
                )

        def ask() -> None:  # a command: run after the current tick
            if run.restart_requested is not None:
                raise Refused("a restart is already in progress")
            run.restart_done = trio.Event()
            run.restart_requested = caller
            run.stopping = True
            run.wake.set()

        await self._commands.submit(ask)
        await run.restart_done.wait()
        result = run.restart_result
        if "failed" in result:
            raise Refused(str(result["failed"]), payload=result)
        return RestartResult(
            tick=result["tick"],
            phase=result["phase"],
            restored=tuple(result["restored"]),
            from_snapshot=result["from_snapshot"],
        )

    def _slot(self, name: str) -> Slot:
        slot = self._k.slots.get(name)
        if slot is None:
            raise Unknown(f"no such system: {name!r} (systems: {', '.join(self._k.slots)})")
        return slot

    async def quarantine(self, name: str, *, reason: str, caller: Caller) -> SystemAction:
        """Take system ``name`` out of the tick after the current one, until ``release``.

        Raises:
            Unknown: no such system.
            Refused: an operator holds it already.
        """
        slot = self._slot(name)

        def hold() -> SystemAction:  # a command: run after the current tick
            if slot.held:
                raise Refused(f"{name} is already quarantined by an operator")
            before = slot.state
            self._recovery.hold(slot)
            return self._record_move("quarantine", slot, before, caller, reason)

        answer: SystemAction = await self._commands.submit(hold)
        return answer

    async def release(self, name: str, *, reason: str, caller: Caller) -> SystemAction:
        """Put system ``name`` back into the tick, its restart budget reset.

        Raises:
            Unknown: no such system.
            Refused: it is not quarantined.
        """
        slot = self._slot(name)

        def release() -> SystemAction:  # a command: run after the current tick
            if not slot.quarantined:
                raise Refused(f"{name} is not quarantined (it is {slot.state})")
            before = slot.state
            self._recovery.release(slot)
            return self._record_move("release", slot, before, caller, reason)

        answer: SystemAction = await self._commands.submit(release)
        return answer

    def _record_move(
        self, action: str, slot: Slot, before: str, caller: Caller, reason: str
    ) -> SystemAction:
        """Keep a quarantine or release in the lifecycle history; the action's answer."""
        self._lifecycle.record(
            action=action,
            before=f"{slot.name} {before}",
            after=f"{slot.name} {slot.state}",
            caller=caller.name,
            reason=reason,
        )
        return SystemAction(system=slot.name, state=slot.state, tick=self._k.loop.tick)

    async def snapshot(self, *, reason: str, caller: Caller) -> SnapshotTaken:
        """Capture every system's state after the current tick; answer once the file is written.

        Raises:
            Refused: not ticking (not running, stopping, in an emergency), or
                snapshots are off, or the write failed.
        """
        k = self._k
        run = k.run
        if not k.persist:
            raise Refused("snapshots are off for this supervisor (persist=False)")
        if not run.running or run.stopping or k.phase is Phase.EMERGENCY_SHUTDOWN:
            raise Refused("the supervisor is not ticking: no snapshot can be taken now")
        why = f"operator {caller.name}" + (f": {reason}" if reason else "")
        request = await self._commands.submit(lambda: self._snapshots.request(k.text(why)))
        await request.done.wait()
        if request.path is None:
            raise Refused(request.problem)
        return SnapshotTaken(path=str(request.path), tick=request.tick)

    async def change_phase(
        self, phase: str, *, force: bool, reason: str, caller: Caller
    ) -> PhaseChange:
        """Move to ``phase``; promotion to PRODUCTION passes the readiness gate unless forced.

        The rules of ``PhaseMachine.check``; what was forced is written into
        the lifecycle event's reason. While the loop ticks, the move is a
        command run after the current tick; the answer comes once it is made.

        Raises:
            Refused: the phase is unknown, the move is not allowed, or the
                readiness gate failed (its report is in the payload).
        """
        try:
            target = Phase.parse(phase)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        answer: PhaseChange = await self._commands.submit(
            lambda: self._move(target, force=force, reason=reason, caller=caller)
        )
        return answer

    def _move(self, target: Phase, *, force: bool, reason: str, caller: Caller) -> PhaseChange:
        """``change_phase`` on the loop: checked against the phase as it is now, then made."""
        k = self._k
        tokens = len(k.config.for_phase(target).api.tokens)
        try:
            k.phases.check(target, force=force, reason=reason, tokens=tokens)
        except PhaseError as exc:
            raise Refused(str(exc)) from None
        forced = []
        if force and k.phase is Phase.DEVELOPMENT and not tokens:
            forced.append("forced without [api] tokens")
        if force and k.phase is Phase.PRODUCTION:
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
        before = k.phase.value
        why = reason + (f" ({'; '.join(forced)})" if forced else "")
        self._lifecycle.enter_phase(target, caller=caller.name, reason=why.strip(), action="phase")
        return PhaseChange(before=before, after=target.value, forced=force)


def _config_file(k: Kernel) -> str:
    """The config file's absolute path, or the source's name when it is not a file."""
    source = k.config.source
    if source.startswith("<"):
        return source
    return str(k.config.base_dir / os.path.basename(source))
