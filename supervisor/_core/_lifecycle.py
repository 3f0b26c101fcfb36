"""The systems' lifecycle: start, stop, phase changes, the emergency, restart.

Everything here runs on the loop's task between ticks (never inside a
step): ``Supervisor`` calls it when the tick loop has ended for a reason in
the run state (a stop, an emergency, a restart), or when a queued phase
change is executed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio

from .._errors import DependencyError, StartRefused, StartupError
from ._control import Caller
from ._failures import FailureRecorder
from ._gauges import GaugeDesk
from ._kernel import Kernel
from ._phase import Phase
from ._plugins import inspect_system
from ._plugins import order as dependency_order
from ._recovery import Recovery
from ._safecall import MESSAGE_CHARS, Breaker, is_a, is_runtime_cancel, redact_kept
from ._slots import Slot
from ._snapshot_format import Snapshot
from ._snapshotter import Snapshotter
from ._steps import Steps
from ._tuning import OptimizerDriver
from ._watchdog import Watchdog

__all__ = ["Lifecycle"]


class Lifecycle:
    """Starts and stops the systems and moves the phase (one per runtime)."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        recorder: FailureRecorder,
        steps: Steps,
        recovery: Recovery,
        snapshots: Snapshotter,
        gauges: GaugeDesk,
        tuning: OptimizerDriver,
    ) -> None:
        self._k = kernel
        self._recorder = recorder
        self._steps = steps
        self._recovery = recovery
        self._snapshots = snapshots
        self._gauges = gauges
        self._tuning = tuning
        #: The run's hang watchdog, while one runs (a phase overlay reconfigures it).
        self.watchdog: Watchdog | None = None
        #: Called with the new phase after every phase change.
        self.listeners: list[Callable[[Phase], None]] = []

    # ------------------------------------------------------------------ start / stop

    async def start_systems(self) -> None:
        """Start every system in dependency order; a critical one that fails aborts the run."""
        k = self._k
        k.order = [k.slots[n] for n in dependency_order(s.info for s in k.slots.values())]
        timeout = k.stop_timeout * 5
        for slot in k.order:
            if slot.quarantined:
                continue  # its constructor failed on restart: it is retried after its backoff
            ok, exc = await self._steps.call(slot, "start", slot.ctx, timeout=timeout)
            if ok:
                slot.started = True
                continue
            record = k.last_record
            assert record is not None
            if is_a(exc, StartRefused):
                # Refused on purpose, critical or not: the operator decides (exit 2).
                await self.stop_systems()
                raise StartupError(record.message, system=slot.name, refused=True)
            if slot.info.critical:
                await self.stop_systems()
                raise StartupError(
                    f"critical system {slot.name!r} failed to start: "
                    f"{record.exc_type}: {record.message}",
                    system=slot.name,
                )
            self._recovery.quarantine(slot, trio.current_time())
        k.rebuild_active()

    async def stop_systems(self) -> None:
        """Stop started systems in reverse order, each within ``stop_timeout``."""
        k = self._k
        timeout = k.stop_timeout
        for slot in reversed(k.order):
            if not slot.started:
                continue
            await self._steps.call(slot, "stop", slot.ctx, timeout=timeout)
            slot.started = False
        for slot in k.active_slots:
            slot.window_end = k.loop.tick
        k.active_slots = []
        k.runnable = []

    async def graceful_stop(self) -> None:
        """A final snapshot, then the systems stop in reverse order."""
        k = self._k
        snap = await self._snapshots.capture(f"stop: {k.run.stop_reason or 'completed'}")
        await self.stop_systems()
        if k.persist:
            with trio.move_on_after(k.stop_timeout * 5):
                await self._snapshots.write(snap)

    # ------------------------------------------------------------------ phases

    def record(self, *, action: str, before: str, after: str, caller: str, reason: str) -> None:
        """Keep a lifecycle action that is not a phase move (its free text redacted when made)."""
        k = self._k
        k.phases.record(
            action=action,
            before=before,
            after=after,
            time=k.wall(),
            tick=k.loop.tick,
            caller=k.text(caller),
            reason=k.text(reason),
        )

    def _redact_history(self) -> None:
        """Redact, once, what was kept while redaction was off: entering a redacting phase.

        From then on everything is redacted when it is made, so no surface
        (status, errors, metrics, snapshots, summary) redacts again.
        """
        k = self._k
        run = k.run

        def kept_text(value: str) -> str:  # bounded by Kernel.text while redaction was off
            return redact_kept(value, MESSAGE_CHARS, k.redactor)

        k.errors.redact(k.redactor)
        k.phases.rewrite(kept_text)
        self._gauges.redact()
        if run.emergency_reason is not None:
            run.emergency_reason = kept_text(run.emergency_reason)
        if run.emergency_source is not None:
            run.emergency_source = kept_text(run.emergency_source)
        run.stop_reason = kept_text(run.stop_reason)
        if run.emergency_info is not None:
            run.emergency_info["reason"] = run.emergency_reason
            run.emergency_info["source"] = run.emergency_source

    def enter_phase(self, target: Phase, *, caller: str, reason: str, action: str) -> None:
        """Move to ``target`` (checked by the caller) and apply its overlay everywhere."""
        k = self._k
        event = k.phases.move(
            target,
            time=k.wall(),
            tick=k.loop.tick,
            caller=k.text(caller),
            reason=k.text(reason),
            action=action,
        )
        k.active = k.config.for_phase(target)
        recovery = k.active.recovery
        for slot in k.slots.values():
            slot.breaker.configure(recovery)
        if self.watchdog is not None:
            self.watchdog.configure(k.active.watchdog)
        overlay_rate = (
            k.config.overlays.get(target.value, {}).get("supervisor", {}).get("tick_rate")
        )
        optimizer = self._tuning.optimizer
        if optimizer is not None:
            # A phase overlay that sets the rate pins it: the optimizer leaves it alone.
            optimizer.pinned_rate = overlay_rate
            if overlay_rate is None:
                optimizer.rebase(k.tick_rate)
        if overlay_rate is not None and overlay_rate != k.tick_rate:
            k.set_tick_rate(overlay_rate)
        was_redacting = k.redactor.enabled
        k.redactor.enabled = k.redaction
        if k.redactor.enabled and not was_redacting:
            self._redact_history()
            event = k.phases.history[-1]
        log = k.log.critical if target is Phase.EMERGENCY_SHUTDOWN else k.log.info
        log("supervisor.phase", **event.as_dict())
        for listener in self.listeners:
            listener(target)

    # ------------------------------------------------------------------ emergency / restart

    async def enter_emergency(self) -> None:
        """Ticking has stopped: capture state, stop systems in reverse, write the snapshot."""
        k = self._k
        run = k.run
        self.enter_phase(
            Phase.EMERGENCY_SHUTDOWN,
            caller=run.emergency_source or "supervisor",
            reason=run.emergency_reason or "",
            action="emergency",
        )
        reason = f"emergency: {run.emergency_reason}"
        if run.preserved is not None:
            # A restart failed after the systems were stopped: the state captured
            # before it is the state to preserve (the rebuilt systems hold none).
            snap = attrs.evolve(run.preserved, phase=k.phase.value, reason=reason)
            run.preserved = None
        else:
            snap = await self._snapshots.capture(reason)
        await self.stop_systems()
        path = await self._snapshots.write(snap) if k.persist else None
        run.snapshot_written = path is not None
        elapsed = time.perf_counter() - (run.emergency_at or time.perf_counter())
        run.emergency_info = {
            "reason": run.emergency_reason,
            "source": run.emergency_source,
            "tick": k.loop.tick,
            "snapshot": str(path) if path else None,
            "trigger_to_snapshot_seconds": elapsed,
        }
        k.log.critical("supervisor.emergency", **run.emergency_info)
        run.emergency_done.set()

    async def restart(self, *, from_disk: bool) -> None:
        """Stop the systems, build them afresh, restore their state, start, go on ticking."""
        k = self._k
        run = k.run
        caller = run.restart_requested
        assert caller is not None
        if from_disk:
            snap = await self._snapshots.latest()
        else:
            snap = await self._snapshots.capture("restart")
            await self.stop_systems()
        failed = self._rebuild_systems()
        critical = [slot.name for slot in failed if slot.info.critical]
        if critical:
            self._restart_failed(caller, critical, snap)
            return
        now = trio.current_time()
        for slot in failed:  # not critical: keeps its old instance, retried after its backoff
            self._recovery.quarantine(slot, now)
        if snap is not None:
            await self._snapshots.restore(snap)
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            back = k.phases.interrupted or Phase.DEVELOPMENT
            self.enter_phase(back, caller=caller.name, reason="restart", action="restart")
        else:
            phase = k.phase.value
            self.record(
                action="restart", before=phase, after=phase, caller=caller.name, reason="restart"
            )
        run.emergency_reason = run.emergency_source = run.emergency_at = None
        run.emergency_done = trio.Event()
        run.stopping = False
        run.restart_requested = None
        try:
            await self.start_systems()
        except (StartupError, DependencyError) as exc:
            k.request_emergency(str(exc), source="restart")
        run.restart_result = {
            "tick": k.loop.tick,
            "phase": k.phase.value,
            "restored": sorted(snap.systems) if snap is not None else [],
            "from_snapshot": snap.tick if snap is not None else None,
        }
        k.log.info("supervisor.restarted", **run.restart_result)
        run.restart_done.set()

    def _restart_failed(self, caller: Caller, critical: list[str], snap: Snapshot | None) -> None:
        """A critical system's constructor failed on restart: EMERGENCY_SHUTDOWN, state kept.

        After an emergency the snapshot on disk is left as it is (no system
        runs, so none is written); from a running world, the state captured
        before the systems stopped is written by the emergency that follows.
        """
        k = self._k
        run = k.run
        reason = f"restart failed: critical system {', '.join(critical)} could not be built"
        run.restart_requested = None
        run.stopping = True
        if k.phase is Phase.EMERGENCY_SHUTDOWN:
            run.emergency_reason = reason
            run.emergency_source = "restart"
            if run.emergency_info is not None:
                run.emergency_info.update(reason=reason, source="restart")
            phase = k.phase.value
            self.record(
                action="restart", before=phase, after=phase, caller=caller.name, reason=reason
            )
        else:
            run.preserved = snap
            run.emergency_reason = None
            k.request_emergency(reason, source="restart")
        run.restart_result = {"failed": reason, "tick": k.loop.tick, "phase": k.phase.value}
        k.log.error("supervisor.restart_failed", systems=critical)
        run.restart_done.set()

    def _build(self, slot: Slot) -> None:
        """Build a fresh instance of ``slot``'s system (plugin code: marked for the watchdog)."""
        assert slot.factory is not None
        loop = self._k.loop
        loop.current = slot
        loop.call_seq += 1
        try:
            system = slot.factory()
            info = inspect_system(system, slot.name, slot.info.origin)
        finally:
            loop.current = None
            loop.call_seq += 1
        slot.system = system
        slot.info = info
        slot.tick_fn = info.tick.fn
        slot.tick_async = info.tick.is_async

    def _rebuild_systems(self) -> list[Slot]:
        """Fresh instances and budgets for every system; returns those whose constructor failed.

        A failed constructor is recorded against its system (hook ``build``),
        which keeps its old instance.
        """
        k = self._k
        recovery = k.active.recovery
        failed = []
        for slot in k.slots.values():
            slot.breaker = Breaker.of(recovery)
            slot.reset()
            if slot.factory is not None:
                try:
                    self._build(slot)
                except BaseException as exc:
                    if is_runtime_cancel(exc):
                        raise
                    self._recorder.record_and_log(slot, "build", exc)
                    failed.append(slot)
        self._recovery.reset()
        k.throttled = False
        self._tuning.optimizer = None  # a fresh one starts from the rebuilt systems
        return failed
