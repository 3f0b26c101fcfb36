"""Commands: requests from outside the loop, executed by the loop at a defined point.

A caller (the API, the CLI) submits a command and awaits its answer; the
tick loop drains the queue after the current tick and its post-tick
chores, so a command never runs in the middle of a step, and the answer
comes once the command has happened (Nakama's match-handler channel).
Outside a tick (the loop asleep until its next deadline, start-up, an
emergency, no run at all) no step runs: the command runs at once.

Phase changes, stops and restarts are queued; a restart's caller is
answered once the systems tick again. An emergency is not queued: it is
marked on the run state at once and empties the rest of the tick (see
``Kernel.request_emergency``), so it takes effect after the current step,
and happens when the tick loop has ended; its caller is answered once the
snapshot is written (``RunState.emergency_done``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ._control import Refused

__all__ = ["Command", "CommandQueue"]


@attrs.define(eq=False)
class Command:
    """One request: ``execute`` runs on the loop; the caller awaits ``answer()``."""

    execute: Callable[[], Any]
    _done: trio.Event = attrs.field(factory=trio.Event)
    _result: Any = None
    _error: Refused | None = None

    def run(self) -> None:
        """Execute now and keep the answer (a Refused is the caller's, handed back to it)."""
        try:
            self._result = self.execute()
        except Refused as exc:
            self._error = exc
        finally:
            self._done.set()

    async def answer(self) -> Any:
        """Wait until the command has happened; its result (or raise its Refused)."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class CommandQueue:
    """The loop's inbox: commands wait here until the loop's defined point."""

    def __init__(self) -> None:
        #: Commands waiting for the end of the tick.
        self.pending: collections.deque[Command] = collections.deque()
        #: Set by the tick loop while a tick steps: commands wait for its end.
        self.in_tick = False

    def __bool__(self) -> bool:
        return bool(self.pending)

    async def submit(self, execute: Callable[[], Any]) -> Any:
        """Run ``execute`` at the loop's next defined point; return its result once it has."""
        command = Command(execute)
        if self.in_tick:
            self.pending.append(command)
        else:
            command.run()
        return await command.answer()

    def drain(self) -> None:
        """Execute every pending command, in the order they came (the loop's defined point)."""
        pending = self.pending
        while pending:
            pending.popleft().run()
