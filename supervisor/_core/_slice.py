"""A short fair-scheduler slice for the tick thread, in plain mode too (Linux 6.12 and later).

Linux's fair scheduler (EEVDF, 6.6 and later) lets a running thread finish
its slice before a thread that wakes on the same CPU gets that CPU, unless
the waking thread asked for a shorter slice than the running one
(``PREEMPT_SHORT``). With another busy thread on the tick thread's CPU, the
tick's timer wake-up waited for the rest of that thread's slice: by default
0.7 ms times (1 + log2 of the CPUs, at most 8), 1.4 ms on two CPUs. Those
were the late ticks that 600 held API connections added
(``bench/held_connections.py``): the load generator's process shared the
two cores, and the late ticks' run-queue delay (``/proc/thread-self/schedstat``)
was their lateness, 1 to 4 ms, while no connection work ran before them.

Since Linux 6.12 a ``SCHED_OTHER`` thread may ask for its own slice
(``sched_setattr`` with ``sched_runtime``), between 0.1 and 100 ms, without
any privilege. While the tick loop runs, the tick thread asks for
:data:`TICK_SLICE`: its timer wake-up then preempts an ordinary thread at
once. Its share of the CPU is unchanged (a shorter slice gives the same
share in smaller pieces), and ``SCHED_RESET_ON_FORK`` keeps the threads it
starts on the default slice. On leaving the loop the default is put back.
A kernel without custom slices (older than 6.12, or not Linux) runs the
loop as before; ``status()["scheduler"]["fair_slice_us"]`` is None there and
``fair_slice_problem`` says why.

Under ``SCHED_FIFO`` (realtime mode, where permitted) the slice does not
matter: a realtime thread preempts every fair one anyway.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable
from typing import Any, Final

import attrs

__all__ = ["TICK_SLICE", "FairSlice", "SchedAttr", "sched_attr_calls"]

#: The tick thread's slice (seconds): under every default slice (0.7 ms on one
#: CPU), longer than a tick's precise spin (``_timing.SPIN_FRACTION``).
TICK_SLICE: Final = 300e-6
_SCHED_OTHER: Final = 0
_SCHED_FLAG_RESET_ON_FORK: Final = 0x01
#: ``sched_setattr`` and ``sched_getattr`` system call numbers (glibc 2.36 has no wrapper).
_SYSCALLS: Final = {
    "x86_64": (314, 315),
    "aarch64": (274, 275),
    "riscv64": (274, 275),
}


class SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (``include/uapi/linux/sched/types.h``, version 1)."""

    _fields_ = (
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    )


#: ``(set, get)``: each takes a SchedAttr for the thread and returns an errno (0: done).
AttrCalls = tuple[Callable[[SchedAttr], int], Callable[[SchedAttr], int]]


def sched_attr_calls(tid: int = 0) -> AttrCalls | None:
    """``sched_setattr``/``sched_getattr`` of thread ``tid`` (0: the calling one), or None."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or not hasattr(os, "sched_setscheduler"):
        return None
    try:
        syscall: Any = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    set_nr, get_nr = numbers

    def set_attr(attr: SchedAttr) -> int:
        if syscall(set_nr, tid, ctypes.byref(attr), 0) == 0:
            return 0
        return ctypes.get_errno() or errno.EINVAL

    def get_attr(attr: SchedAttr) -> int:
        if syscall(get_nr, tid, ctypes.byref(attr), ctypes.sizeof(SchedAttr), 0) == 0:
            return 0
        return ctypes.get_errno() or errno.EINVAL

    return set_attr, get_attr


@attrs.define(eq=False)
class FairSlice:
    """Asks for ``slice`` seconds of fair-scheduler slice on the calling (tick) thread."""

    slice: float = TICK_SLICE
    calls: AttrCalls | None = attrs.field(factory=sched_attr_calls)
    #: The slice held now (µs), or None.
    held_us: int | None = None
    #: Why none is held (``enter`` was refused), or None.
    problem: str | None = None

    def status(self) -> dict[str, Any]:
        """The ``scheduler`` section of ``status()``: the slice held (µs), and why none is."""
        if self.problem is None:
            return {"fair_slice_us": self.held_us}
        return {"fair_slice_us": self.held_us, "fair_slice_problem": self.problem}

    def enter(self) -> None:
        """On the tick thread: ask for the short slice; on refusal, note why and go on."""
        self.held_us = None
        self.problem = None
        if self.calls is None:
            self.problem = "no sched_setattr on this platform"
            return
        set_attr, get_attr = self.calls
        current = SchedAttr()
        err = get_attr(current)
        if err:
            self.problem = f"sched_getattr: {os.strerror(err)}"
            return
        if current.sched_policy != _SCHED_OTHER:
            self.problem = "the tick thread is not SCHED_OTHER"
            return
        wanted = int(self.slice * 1e9)
        attr = SchedAttr(
            size=ctypes.sizeof(SchedAttr),
            sched_policy=_SCHED_OTHER,
            sched_flags=_SCHED_FLAG_RESET_ON_FORK,
            sched_nice=current.sched_nice,
            sched_runtime=wanted,
        )
        err = set_attr(attr)
        if err:
            self.problem = f"sched_setattr: {os.strerror(err)}"
            return
        check = SchedAttr()
        if get_attr(check) or check.sched_runtime != wanted:
            # Kernels before 6.12 take the call and ignore the runtime of a fair thread.
            self.problem = "the kernel has no custom slices (Linux 6.12 or later has)"
            self._restore(current.sched_nice)
            return
        self.held_us = round(wanted / 1e3)

    def leave(self) -> None:
        """Put the default slice back (and the fork behaviour), if ``enter`` changed them."""
        if self.held_us is None or self.calls is None:
            return
        self.held_us = None
        current = SchedAttr()
        if self.calls[1](current) == 0 and current.sched_policy == _SCHED_OTHER:
            self._restore(current.sched_nice)

    def _restore(self, nice: int) -> None:
        assert self.calls is not None
        # sched_runtime 0: the kernel's default slice again.
        self.calls[0](SchedAttr(size=ctypes.sizeof(SchedAttr), sched_nice=nice))
