"""SafeCall around plugin code, and the hot path: one step of every runnable system.

The hot path (``Steps.run_tick``) is a plain loop over the prepared list of
runnable slots (pluggy's ``_multicall`` habit): hooks were resolved at
registration, a step is a call in ``try``, timing is one read of the timer,
and nothing is logged or allocated when a step succeeds.
"""

from __future__ import annotations

import math
import types
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from .._errors import StepTimeout
from ._failures import FailureRecorder
from ._kernel import Kernel
from ._safecall import is_runtime_cancel
from ._slots import RING_MASK, LoopState, Slot

__all__ = ["Steps"]


def _overran(message: str) -> NoReturn:
    """Raise the StepTimeout of an async hook or tick that overran (a function: ruff TRY301)."""
    raise StepTimeout(message)


@types.coroutine
def _watched(loop: LoopState, slot: Slot, coro: Any) -> Any:
    """Await ``coro``, marking ``slot`` as the running step only while its own code runs.

    While the coroutine waits, the loop thread runs trio's scheduler (and
    other tasks): the hang watchdog must not count that time against the
    system, nor interrupt the scheduler. So the coroutine is driven step
    by step, and the marker is set around each step only.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        loop.current = slot
        loop.call_seq += 1
        try:
            yielded = coro.throw(error) if error is not None else coro.send(value)
        except StopIteration as stop:
            return stop.value
        finally:
            loop.current = None
            loop.call_seq += 1
        try:
            value, error = (yield yielded), None
        except BaseException as exc:  # passed on into the coroutine
            value, error = None, exc


class Steps:
    """Calls into systems: SafeCall for any hook, and the tick's steps."""

    def __init__(self, kernel: Kernel, recorder: FailureRecorder) -> None:
        self._k = kernel
        self._recorder = recorder
        #: What a failed tick step goes to (recovery; wired by the supervisor).
        self.on_failure: Callable[[Slot, str, BaseException], Awaitable[None]] | None = None

    async def call(
        self, slot: Slot, hook: str, *args: Any, timeout: float | None = None
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
        loop = self._k.loop
        loop.call_seq += 1
        loop.current = slot
        try:
            if resolved.is_async:
                limit = math.inf if timeout is None else timeout
                with trio.move_on_after(limit):
                    return True, await _watched(loop, slot, resolved.fn(*args))
                _overran(f"{hook} overran its {limit:g} s deadline and was abandoned")
            return True, resolved.fn(*args)
        except BaseException as exc:
            loop.current = None
            if is_runtime_cancel(exc):
                raise
            self._recorder.record_and_log(slot, hook, exc)
            return False, exc
        finally:
            loop.current = None
            loop.call_seq += 1

    async def run_tick(self) -> None:
        """Step every runnable system once. The hot path.

        One timer read per step: each step's time is the difference with the
        previous read, stored in the system's ring (see ``Slot.window``). An
        emergency requested by a step empties ``runnable`` in place, so the
        ``for`` ends after that step.
        """
        k = self._k
        loop = k.loop
        timer = k.timer
        idx = loop.tick & RING_MASK
        runnable = k.stepping = k.runnable
        t = timer()
        for slot in runnable:
            loop.current = slot
            try:
                if slot.tick_async:
                    budget = k.budget
                    with trio.move_on_after(budget) as scope:
                        await _watched(loop, slot, slot.tick_fn(slot.ctx))
                    if scope.cancelled_caught:
                        _overran(f"async tick overran the {budget * 1e3:.3g} ms budget")
                else:
                    slot.tick_fn(slot.ctx)
            except BaseException as exc:
                loop.current = None
                if is_runtime_cancel(exc):
                    raise
                assert self.on_failure is not None
                await self.on_failure(slot, "tick", exc)
            now = timer()
            slot.ring[idx] = now - t
            t = now
        loop.current = None
