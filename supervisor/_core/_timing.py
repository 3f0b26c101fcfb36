"""Precise waits for the tick loop, on trio's clock.

``trio.sleep_until`` wakes about 0.8 ms late at the median: trio hands the
poller a timeout in whole milliseconds, and Linux adds 50 us of timer slack.
On trio's own ``SystemClock`` (which is ``time.perf_counter()`` plus a fixed
offset, i.e. CLOCK_MONOTONIC) we instead arm a ``timerfd`` -- a kernel timer
with nanosecond resolution and no slack -- a short *margin* before the
deadline, wait for it to become readable through trio's poller (so other
tasks keep running), then spin the last few tens of microseconds. The margin
is learned: the 99th percentile of how late the timerfd itself woke over the
last ``_WINDOW`` waits, less ``_ALLOWANCE`` (the lateness we accept at p99),
so the spin covers the machine's wake jitter and no more. The spin is also
capped at ``SPIN_FRACTION`` of the tick period, which bounds what precision
may cost in CPU even on a machine whose wake-ups are very noisy (a VM under
load): there, the p99 degrades instead of the CPU budget.

Any other clock (``trio.testing.MockClock`` in tests, or a user's clock)
gets plain ``trio.sleep_until``, so virtual time stays exact.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["PreciseSleeper", "make_sleeper"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1

#: Waits over which the wake-up jitter is measured before the margin is re-learned.
_WINDOW = 128
#: Lower bound of the learned margin (seconds).
_MARGIN_MIN = 30e-6
#: Lateness accepted at the 99th percentile: the margin is the jitter less this.
_ALLOWANCE = 40e-6
_MARGIN_START = 200e-6
#: Largest share of each tick period that may be spent spinning (CPU budget).
SPIN_FRACTION = 0.025


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.timerfd_create  # noqa: B018 - probing that the symbol exists
        libc.timerfd_settime  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def system_clock_offset(clock: trio.abc.Clock) -> float | None:
    """The offset of trio's ``SystemClock`` from ``time.perf_counter()``, or None for other clocks.

    Trio does not export ``SystemClock``; it is recognised by its name and
    its ``offset`` attribute, and the offset is checked against a reading.
    """
    if type(clock).__name__ != "SystemClock" or not type(clock).__module__.startswith("trio"):
        return None
    offset = getattr(clock, "offset", None)
    if not isinstance(offset, float):
        return None
    if abs(clock.current_time() - (time.perf_counter() + offset)) > 1e-3:
        return None
    return offset


class PreciseSleeper:
    """Sleeps until a deadline of trio's SystemClock with microsecond precision."""

    def __init__(self, libc: Any, offset: float) -> None:
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd: int = fd
        self._settime = libc.timerfd_settime
        self._spec = _Itimerspec()
        self._offset = offset
        self.margin = _MARGIN_START
        #: Upper bound of the margin; the tick loop sets it from the period.
        self.max_margin = 2e-3
        self._wakes = [0.0] * _WINDOW
        self._n = 0

    def close(self) -> None:
        """Release the timer."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _arm(self, mono: float) -> None:
        spec = self._spec.it_value
        sec = int(mono)
        spec.tv_sec = sec
        spec.tv_nsec = int((mono - sec) * 1e9)
        self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None)

    def _learn(self, late: float) -> None:
        wakes = self._wakes
        wakes[self._n] = late
        self._n += 1
        if self._n == _WINDOW:
            self._n = 0
            ordered = sorted(wakes)
            jitter = ordered[int(_WINDOW * 0.99)]
            self.margin = min(max(jitter - _ALLOWANCE, _MARGIN_MIN), self.max_margin)

    def set_period(self, period: float) -> None:
        """Bound the spin to ``SPIN_FRACTION`` of a tick period of ``period`` seconds."""
        self.max_margin = max(_MARGIN_MIN, SPIN_FRACTION * period)
        self.margin = min(self.margin, self.max_margin)

    async def sleep_until(self, deadline: float) -> None:
        """Return at ``deadline`` (trio time), a few microseconds late at most, as a checkpoint."""
        perf = time.perf_counter
        target = deadline - self._offset
        yielded = False
        while True:
            now = perf()
            if target - now <= self.margin:
                break
            armed = target - self.margin
            self._arm(armed)
            await trio.lowlevel.wait_readable(self._fd)
            yielded = True
            with contextlib.suppress(BlockingIOError):
                os.read(self._fd, 8)
            self._learn(perf() - armed)
        if not yielded:
            # Every wait is a checkpoint, so a loop that is always close to
            # its deadline still lets the API server and signal handlers run.
            await trio.lowlevel.checkpoint()
        while perf() < target:
            pass


def make_sleeper(
    *, precise: bool = True
) -> tuple[Callable[[float], Awaitable[None]], PreciseSleeper | None]:
    """Pick the wait for the current trio run's clock: precise on SystemClock, plain otherwise.

    Returns the ``sleep_until``-like function and, when one was made, the
    PreciseSleeper (to ``close()`` when the loop ends).
    """
    if precise:
        offset = system_clock_offset(trio.lowlevel.current_clock())
        libc = _libc() if offset is not None else None
        if offset is not None and libc is not None:
            try:
                sleeper = PreciseSleeper(libc, offset)
            except OSError:
                pass
            else:
                return sleeper.sleep_until, sleeper
    return trio.sleep_until, None
