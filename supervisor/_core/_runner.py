"""One run: services and the watchdog up, systems started, ticks until the end, then why.

``Runner.run`` is ``Supervisor.run`` without its summary: it makes the run
state fresh, starts the supervised services (the API first of all), the
hang watchdog and the systems, then drives the tick loop; when the loop
ends it acts on the reason in the run state (an emergency, a restart, a
stop), and on an emergency waits for a restart when asked to stay up.
"""

from __future__ import annotations

import gc
import math
import signal

import trio

from .._errors import DependencyError, StartupError, SupervisorError
from ._commands import CommandQueue
from ._failures import FailureRecorder
from ._heap import release_start_up_memory
from ._housekeeping import Housekeeper
from ._kernel import Kernel, RunState
from ._lifecycle import Lifecycle
from ._loop import TickLoop
from ._phase import Phase
from ._recovery import Recovery
from ._schedule import Chore
from ._services import Services
from ._snapshotter import Snapshotter
from ._steps import Steps
from ._tuning import OptimizerDriver
from ._watchdog import Watchdog
from ._windows import TickWindows

__all__ = ["Runner"]


class Runner:
    """Runs the runtime's rooms for one ``run()`` at a time."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        recorder: FailureRecorder,
        steps: Steps,
        recovery: Recovery,
        snapshots: Snapshotter,
        tuning: OptimizerDriver,
        housekeeper: Housekeeper,
        services: Services,
        lifecycle: Lifecycle,
        commands: CommandQueue,
        windows: TickWindows,
    ) -> None:
        self._k = kernel
        self._windows = windows
        self._recorder = recorder
        self._recovery = recovery
        self._snapshots = snapshots
        self._tuning = tuning
        self._housekeeper = housekeeper
        self._services = services
        self._lifecycle = lifecycle
        self._commands = commands
        self.loop = TickLoop(kernel, steps, commands)
        self._watchdog_chore = Chore("watchdog", self._drain_watchdog)
        self.loop.realtime.watchdog_tid = self._watchdog_tid
        self._add_chores()

    def _add_chores(self) -> None:
        """The post-tick chores, in their documented order (see ``_loop``)."""
        recovery = self._recovery
        for chore in (
            self._recorder.chore,
            recovery.close_chore,
            self._watchdog_chore,
            recovery.retry_chore,
            recovery.health_chore,
            self._snapshots.chore,
            self._snapshots.demand_chore,
            self._tuning.chore,
            self._windows.chore,
        ):
            self.loop.add_chore(chore)

    def _watchdog_tid(self) -> int | None:
        """The watchdog thread's kernel id while one runs (realtime mode raises its priority)."""
        watchdog = self._lifecycle.watchdog
        return None if watchdog is None else watchdog.native_id

    def _hang_seen(self) -> None:
        """From the watchdog's thread: a hang event waits to be logged after the next tick."""
        self._watchdog_chore.next_due = -math.inf

    async def _drain_watchdog(self, _deadline: float) -> None:
        """Log the watchdog's hang events (a post-tick chore, due once one was seen)."""
        self._watchdog_chore.next_due = math.inf  # before draining: a later event sets it again
        watchdog = self._lifecycle.watchdog
        if watchdog is None:
            return
        events = watchdog.events
        while events:
            event = events.popleft()
            self._k.log.warning(
                "system.hang", system=event.system, tick=event.tick, elapsed=round(event.elapsed, 3)
            )

    async def _watch_signals(self) -> None:
        k = self._k
        run = k.run
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if run.stopping:
                    k.log.warning("supervisor.force_stop", signal=name)
                    run.force = True
                    run.scope.cancel()
                    return
                k.log.info("supervisor.signal", signal=name)
                k.stop(f"signal {name}")

    async def run(
        self,
        *,
        ticks: int | None,
        duration: float | None,
        exit_on_emergency: bool,
        handle_signals: bool,
        resume: bool,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """One run, in a fresh ``RunState`` (see ``Supervisor.run``)."""
        k = self._k
        if k.run.running:
            raise RuntimeError("this supervisor is already running")
        run = k.run = RunState(running=True, started_at=trio.current_time())
        try:
            with run.scope:
                await self._serve(
                    ticks, duration, exit_on_emergency, handle_signals, resume, task_status
                )
        finally:
            run.running = False
            run.ended_at = trio.current_time()
            self._commands.in_tick = False
            self._commands.drain()
            self._recorder.flush(all_folds=True)
            run.stopped.set()
        if run.startup_error is not None:
            # Raised here, outside the nursery, so callers get the error itself
            # and not an exception group around it.
            raise run.startup_error

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
                watchdog = Watchdog(k.loop, k.active.watchdog)
                watchdog.on_event = self._hang_seen
                self._lifecycle.watchdog = watchdog
                watchdog.start()
            try:
                if resume:
                    await self._snapshots.resume()
                try:
                    await self._lifecycle.start_systems()
                except (StartupError, DependencyError) as exc:
                    run.startup_error = exc
                    return
                now = trio.current_time()
                run.tick_limit = k.loop.tick + ticks if ticks is not None else None
                run.end_time = now + duration if duration else math.inf
                self._snapshots.schedule()
                # Everything built so far lives as long as the run: move it out
                # of the cyclic GC's way, so a full collection stays short.
                gc.collect()
                gc.freeze()
                release_start_up_memory()  # start-up's freed C heap, back to the kernel
                self._tuning.start(now)
                self._windows.start(now)
                self._recovery.health_chore.next_due = now  # checked after the first tick
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
        k = self._k
        run = k.run
        lifecycle = self._lifecycle
        while True:
            try:
                await self.loop.run()
            finally:
                self._recorder.settle()  # the last ticks' error records, before what follows
                # Commands that came during the last tick run now, before what follows.
                self._commands.in_tick = False
                self._commands.drain()
                self._snapshots.refuse_requests("the tick loop stopped before the snapshot")
            if run.emergency_reason is not None:
                if k.phase is not Phase.EMERGENCY_SHUTDOWN:
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
        while run.restart_requested is None and not run.stop_requested:
            run.wake = trio.Event()
            await run.wake.wait()
        return run.restart_requested is not None
