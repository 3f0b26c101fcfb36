"""Recovery: the restart budget, quarantine, the half-open retry, escalation, health probes.

A failed tick step is recorded, then recovered (``recover()``), quarantined
past the system's budget, or escalated: a critical system out of budget, or
``critical_error_limit`` critical errors within the window, is an emergency.
A quarantined system is retried half-open after its backoff; one clean tick
closes its breaker (``close_half_open``, a post-tick chore).
"""

from __future__ import annotations

import math

import trio

from ._failures import FailureRecorder
from ._kernel import Kernel
from ._safecall import BreakerState
from ._schedule import Chore
from ._slots import Slot, health_value
from ._steps import Steps

__all__ = ["HEALTH_INTERVAL", "Recovery"]

#: Seconds of the clock between two calls of each system's ``health()`` (from the tick loop).
HEALTH_INTERVAL = 1.0


class Recovery:
    """What happens after a failure, until the system runs cleanly again."""

    def __init__(self, kernel: Kernel, recorder: FailureRecorder, steps: Steps) -> None:
        self._k = kernel
        self._recorder = recorder
        self._steps = steps
        self.critical_errors: list[float] = []
        self.half_open: list[Slot] = []
        #: Post-tick chores: close passed trials, retry quarantined systems, probe health.
        self.close_chore = Chore("close_half_open", self.close_half_open)
        self.retry_chore = Chore("retry", self.retry)
        self.health_chore = Chore("health", self.check_health)

    def reset(self) -> None:
        """Forget the past run of the systems (they were rebuilt)."""
        self.critical_errors.clear()
        self.half_open.clear()
        self.close_chore.next_due = math.inf
        self.retry_chore.next_due = math.inf

    async def check_health(self, now: float) -> None:
        """Call every active system's ``health()`` and cache it: once a HEALTH_INTERVAL, post-tick.

        Under SafeCall (a hanging sync one is interrupted by the watchdog, an
        async one gets the tick budget) and against the system's restart
        budget. Probes and status read the cache (``tests/test_faults_plugins.py``).
        """
        self.health_chore.next_due = now + HEALTH_INTERVAL
        for slot in self._k.active_slots:
            if "health" in slot.info.hooks:
                ok, value = await self._steps.call(slot, "health", timeout=self._k.budget)
                if ok:
                    slot.cached_health = health_value(value)
                else:
                    slot.cached_health = "unhealthy"
                    self.count_failure(slot, "health", now)

    def count_failure(self, slot: Slot, hook: str, now: float) -> None:
        """A hook other than ``tick`` failed: it counts against the system's restart budget.

        Past the budget the system is quarantined, and its half-open retry
        calls that hook again before the system ticks (see ``retry``).
        """
        if slot.quarantined:
            return
        if not slot.breaker.failure(now):
            self.quarantine(slot, now, trial=hook)

    async def step_failed(self, slot: Slot, hook: str, exc: BaseException) -> None:
        """A tick step failed: recover, quarantine or escalate now; the record comes after the tick.

        Only ``recover(ctx, error)`` and an escalation's reason need the
        record in the tick (``FailureRecorder.settled``).
        """
        k = self._k
        self._recorder.defer(slot, hook, exc)  # the record is made after the tick
        now = trio.current_time()
        recovery = k.active.recovery
        if slot.info.critical:
            horizon = now - recovery.window_seconds
            self.critical_errors = [t for t in self.critical_errors if t > horizon]
            self.critical_errors.append(now)
            if len(self.critical_errors) >= recovery.critical_error_limit:
                k.request_emergency(
                    f"critical_error_limit reached: {len(self.critical_errors)} critical errors "
                    f"within {recovery.window_seconds:g} s (last: {slot.name}.{hook}: "
                    f"{self._recorder.settled().exc_type})",
                    source=f"system:{slot.name}",
                )
                return
        if slot.breaker.failure(now):
            # Within budget: let the system reset itself. A recover() that
            # fails is one more failure against the same budget. It takes the
            # record: only then is the record made in the tick.
            if "recover" not in slot.info.hooks:
                return
            ok, _ = await self._steps.call(
                slot, "recover", slot.ctx, self._recorder.settled(), timeout=k.stop_timeout
            )
            if ok or slot.breaker.failure(now):
                return
        self.quarantine(slot, now)

    def quarantine(self, slot: Slot, now: float, *, trial: str | None = None) -> None:
        """Take ``slot`` out of the tick until its backoff ends (a critical one: emergency)."""
        k = self._k
        slot.trial_hook = trial
        if slot.info.critical:
            k.request_emergency(
                f"critical system {slot.name!r} exhausted its recovery budget "
                f"({slot.breaker.max_restarts} restarts within {slot.breaker.window:g} s)",
                source=f"system:{slot.name}",
            )
            return
        retry_at = slot.breaker.quarantine(now)
        self.retry_chore.next_due = min(self.retry_chore.next_due, retry_at)
        if slot in self.half_open:
            self.half_open.remove(slot)
        k.rebuild_active()
        k.log.warning(
            "system.quarantined",
            system=slot.name,
            retry_in=round(retry_at - now, 3),
            quarantines=slot.breaker.quarantines,
        )

    def hold(self, slot: Slot) -> None:
        """An operator takes ``slot`` out of the tick: quarantined until ``release``, no retry."""
        slot.held = True
        slot.breaker.state = BreakerState.QUARANTINED
        slot.breaker.retry_at = math.inf  # the half-open retry passes it by
        if slot in self.half_open:
            self.half_open.remove(slot)
        self._k.rebuild_active()
        self._k.log.warning("system.held", system=slot.name)

    def release(self, slot: Slot) -> None:
        """Back into the tick, its restart budget reset (a system never started is started first).

        A started system ticks again from the next tick; one whose start failed
        goes through the half-open retry now (start, then one trial tick).
        """
        slot.held = False
        breaker = slot.breaker
        breaker.failures.clear()
        breaker.quarantines = 0
        slot.trial_hook = None
        if slot.started:
            breaker.state = BreakerState.CLOSED
            self._k.rebuild_active()
        else:
            breaker.retry_at = -math.inf
            self.retry_chore.next_due = -math.inf
        self._k.log.info("system.released", system=slot.name)

    async def retry(self, now: float) -> None:
        """Half-open every quarantined system whose backoff is over."""
        k = self._k
        chore = self.retry_chore
        chore.next_due = math.inf
        for slot in k.order:
            breaker = slot.breaker
            if breaker.state is not BreakerState.QUARANTINED:
                continue
            if breaker.retry_at > now:
                chore.next_due = min(chore.next_due, breaker.retry_at)
                continue
            breaker.half_open()
            trial, slot.trial_hook = slot.trial_hook, None
            if not slot.started:
                ok, _ = await self._steps.call(slot, "start", slot.ctx, timeout=k.stop_timeout * 5)
                if not ok:
                    breaker.state = BreakerState.CLOSED  # quarantine() counts from CLOSED
                    self.quarantine(slot, now)
                    continue
                slot.started = True
            if not await self._trial(slot, trial):
                breaker.state = BreakerState.CLOSED
                self.quarantine(slot, now, trial=trial)
                continue
            self.half_open.append(slot)
            self.close_chore.next_due = -math.inf  # after its trial tick
            k.log.info("system.retry", system=slot.name)
        k.rebuild_active()

    async def _trial(self, slot: Slot, hook: str | None) -> bool:
        """Call again the hook (``snapshot`` or ``health``) whose failures quarantined ``slot``.

        Without this, a system whose ``snapshot()`` hangs would pass its
        half-open tick, close, and hang the next snapshot again, forever.
        """
        if hook == "health":
            ok, value = await self._steps.call(slot, "health", timeout=self._k.budget)
            if ok:
                slot.cached_health = health_value(value)
        elif hook == "snapshot":
            ok, _ = await self._steps.call(slot, "snapshot", timeout=self._k.stop_timeout)
        else:
            return True
        return ok

    async def close_half_open(self, _deadline: float) -> None:
        """Close the breaker of every half-open system whose trial tick just passed."""
        if not self.half_open:
            self.close_chore.next_due = math.inf
        ran = self._k.loop.tick - 1
        for slot in list(self.half_open):
            if slot.breaker.state is BreakerState.HALF_OPEN and slot.failed_tick != ran:
                slot.breaker.success()
                self.half_open.remove(slot)
                self._k.log.info("system.recovered", system=slot.name)
