"""The hang watchdog: a thread that sees what trio cannot.

Trio cancels only at checkpoints, so a step stuck in a ``while True`` or a
blocking call never notices a deadline. This thread samples which step the
loop thread is in (the loop marker's ``current`` slot plus the tick and a
call sequence: three reads, no locking; the loop only stores a reference per
step). A step seen for longer than ``hang_timeout`` gets the loop thread's
stack put on its slot (the record of its interruption carries it); past
``kill_timeout`` an asynchronous ``StepInterrupted`` is delivered to the
loop thread with ``PyThreadState_SetAsyncExc``, which SafeCall catches
around the step and counts as a failure.

What cannot be interrupted: an exception set this way is raised when the
thread next executes Python bytecode. A step blocked inside one C call
(``time.sleep``, a socket read without timeout, a C extension's loop) is
recorded as hung, and interrupted only when that call returns.
"""

from __future__ import annotations

import collections
import ctypes
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from .._errors import StepInterrupted
from ._config_sections import WatchdogConfig

__all__ = ["HangEvent", "Watchdog"]

#: Frames of the blocked stack kept on the record.
STACK_LIMIT = 30


#: Used when a timeout handed in is NaN, infinite or not positive (Config is public, and a
#: NaN compares false with everything: it would silently switch the watchdog off).
class Marker(Protocol):
    """What the watchdog reads of the loop: the slot running now, the tick, a call counter.

    ``current`` is a slot (with ``name`` and a writable ``hang_stack``) or None.
    """

    current: Any
    tick: int
    call_seq: int


@attrs.frozen
class HangEvent:
    """What the watchdog saw: a step running too long (logged by the loop)."""

    system: str
    tick: int
    elapsed: float


class Watchdog:
    """Watches the loop thread of one supervisor; start() and stop() around its run."""

    def __init__(self, marker: Marker, config: WatchdogConfig) -> None:
        self._marker = marker
        self.hang_timeout = config.hang_timeout
        self.kill_timeout = config.kill_timeout
        self._poll = 0.05
        self.configure(config)
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Events for the loop thread to log (deque appends are thread-safe).
        self.events: collections.deque[HangEvent] = collections.deque(maxlen=1000)
        #: Called (from the watchdog thread) after each event is appended.
        self.on_event: Callable[[], None] | None = None

    def configure(self, config: WatchdogConfig) -> None:
        """Take the timeouts of ``config`` (a phase overlay may change them).

        ``WatchdogConfig`` checks them when it is built (finite, positive, kill
        not below hang), so a NaN can never switch the watchdog off.
        """
        self.hang_timeout = config.hang_timeout
        self.kill_timeout = config.kill_timeout
        self._poll = min(self.hang_timeout / 4, 0.05)

    def start(self) -> None:
        """Start watching the calling thread (the thread that runs the tick loop)."""
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervisor-watchdog", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The kernel's id of the watchdog's thread while it runs (realtime mode raises it)."""
        thread = self._thread
        return None if thread is None else thread.native_id

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "<no stack: the loop thread is gone>"
        return "".join(traceback.format_stack(frame, limit=STACK_LIMIT))

    def _run(self) -> None:
        marker = self._marker
        seen_key: tuple[object, int, int] | None = None
        since = 0.0
        hang_recorded = interrupted = False
        while not self._stop.wait(self._poll):
            slot = marker.current
            now = time.monotonic()
            if slot is None:
                seen_key = None
                continue
            key = (slot, marker.tick, marker.call_seq)
            if key != seen_key:
                seen_key, since = key, now
                hang_recorded = interrupted = False
                continue
            elapsed = now - since
            if elapsed >= self.hang_timeout and not hang_recorded:
                hang_recorded = True
                stack = self._stack()
                slot.hang_stack = stack
                self.events.append(HangEvent(slot.name, key[1], elapsed))
                if self.on_event is not None:
                    self.on_event()
            if elapsed >= self.kill_timeout and not interrupted:
                # Re-check just before delivering: the step may have ended
                # between the read above and now.
                if (marker.current, marker.tick, marker.call_seq) != key:
                    continue
                interrupted = True
                self._interrupt()

    def _interrupt(self) -> None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self._loop_thread), ctypes.py_object(StepInterrupted)
        )
