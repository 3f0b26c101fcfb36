"""Memory per system: live Python allocations attributed to the system whose code made them.

With ``[features] memory_tracking = true`` a service starts ``tracemalloc``
(``TRACE_FRAMES`` frames per allocation) and every ``MEMORY_PERIOD`` seconds
takes a snapshot in a worker thread, off the tick. Each live allocation goes
to the system whose methods' lines (read once per class from their code
objects) hold the innermost frame of its traceback that is in a system's
code: memory a system's hook allocated directly, or through
a library it called, counts as that system's. Allocations no system's code
made (the supervisor's, a library's own caches) are "unattributed".

Why tracemalloc and not domains: Python code cannot set a tracemalloc domain
(only the C API can), and the allocating frame is what names the owner.
Why the lines of the methods and not the file: two systems in one module
are told apart. The cost is in every allocation while tracing (tracemalloc's
hook) and in the snapshot's copy of the traces (it holds the GIL), measured
by ``bench/memory_tracking.py``; it is off by default and follows the phase
(a phase overlay may turn it off), with one warning when it runs in
PRODUCTION.
"""

from __future__ import annotations

import inspect
import time
import tracemalloc
import types
import weakref
from collections.abc import Mapping
from typing import Any, Final

import trio

from ._kernel import Kernel
from ._phase import Phase

__all__ = ["MEMORY_PERIOD", "TRACE_FRAMES", "MemoryTracker", "attribute"]

#: Seconds between two snapshots of the traces.
MEMORY_PERIOD: Final = 5.0
#: Frames kept per allocation: enough to reach a system's hook from inside a library it called.
TRACE_FRAMES: Final = 4
#: Systems shown in ``status`` (the largest first).
TOP_SYSTEMS: Final = 10

#: file -> [(first line, end line, system)] for each system's class.
Ranges = Mapping[str, list[tuple[int, int, str]]]


def attribute(ranges: Ranges) -> tuple[dict[str, int], int, int]:
    """Live traced bytes per system, the total traced and the unattributed (a worker thread).

    Reads the raw trace tuples (``(domain, size, frames, total)``, frames
    most recent first) rather than ``Trace`` objects: the public sequence
    builds three objects per trace, and a world holds hundreds of thousands.
    """
    snapshot = tracemalloc.take_snapshot()
    raw: list[tuple[Any, ...]] = snapshot.traces._traces  # type: ignore[attr-defined]
    owner: dict[tuple[str, int], str | None] = {}
    by_system: dict[str, int] = {}
    total = unattributed = 0
    for trace in raw:
        size = trace[1]
        total += size
        found = None
        for frame in trace[2]:
            if frame[0] not in ranges:
                continue
            if frame in owner:
                found = owner[frame]
            else:
                found = owner[frame] = next(
                    (name for first, end, name in ranges[frame[0]] if first <= frame[1] < end),
                    None,
                )
            if found is not None:
                break
        if found is None:
            unattributed += size
        else:
            by_system[found] = by_system.get(found, 0) + size
    return by_system, total, unattributed


def _code_lines(cls: type) -> list[tuple[str, int, int]]:
    """``(file, first line, end line)`` of each method of ``cls`` (its own, not inherited ones).

    Read from the code objects (no source parsing, which ``inspect`` does and
    which is slow while tracing): ``co_filename`` is the very name tracemalloc
    puts on its frames. A base class two systems share would be ambiguous, so
    inherited methods are left out.
    """
    found = []
    for value in vars(cls).values():
        fn = value
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        elif isinstance(fn, property):
            fn = fn.fget
        code = getattr(inspect.unwrap(fn), "__code__", None) if callable(fn) else None
        if isinstance(code, types.CodeType):
            lines = [line for _start, _end, line in code.co_lines() if line is not None]
            found.append((code.co_filename, code.co_firstlineno, max(lines, default=0) + 1))
    return found


class MemoryTracker:
    """Runs the tracing and keeps the last attribution (one per runtime)."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        #: Live bytes per system at the last snapshot.
        self.by_system: dict[str, int] = {}
        self.total = 0
        self.unattributed = 0
        #: When the last snapshot was taken (wall clock) and how long it took (seconds).
        self.at: float | None = None
        self.cost = 0.0
        self._started_here = False
        self._warned = False
        #: The systems' classes, read on the loop thread for the worker thread.
        self._classes: list[tuple[str, type]] = []
        #: Method lines per class.
        self._lines: weakref.WeakKeyDictionary[type, list[tuple[str, int, int]]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def wanted(self) -> bool:
        """Whether the active phase's features ask for tracking."""
        return self._k.active.features.memory_tracking

    def ranges(self) -> dict[str, list[tuple[int, int, str]]]:
        """Each system's method lines, by file (once per class: a reload makes a new class)."""
        ranges: dict[str, list[tuple[int, int, str]]] = {}
        for name, cls in list(self._classes):
            if cls not in self._lines:
                self._lines[cls] = _code_lines(cls)
            for path, first, end in self._lines[cls]:
                ranges.setdefault(path, []).append((first, end, name))
        return ranges

    def _attribute(self) -> tuple[dict[str, int], int, int]:
        return attribute(self.ranges())

    async def service(self, _sup: object, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The supervised service: trace while the phase wants it, attribute every period.

        Tracing starts (if the supervisor was built with it off) before
        ``started()``: the run starts the systems only after its services, so
        what their ``start()`` allocates is seen. It stops when the run ends.
        """
        if self.wanted:
            self.trace()
        task_status.started()
        try:
            while True:
                await trio.sleep(MEMORY_PERIOD)  # the first after the systems have started
                if self.wanted:
                    await self.sample()
                else:
                    self._stop()
        finally:
            self._stop()

    async def sample(self) -> None:
        """Start tracing if needed, then attribute the live traces (in a worker thread)."""
        self.trace()
        if self._k.phase is Phase.PRODUCTION and not self._warned:
            self._warned = True
            self._k.log.warning(
                "memory.tracking_in_production",
                hint="tracemalloc slows every allocation: set [features] memory_tracking = false",
            )
        self._classes = [(slot.name, type(slot.system)) for slot in self._k.slots.values()]
        t0 = time.perf_counter()
        by_system, total, unattributed = await trio.to_thread.run_sync(self._attribute)
        self.cost = time.perf_counter() - t0
        self.by_system, self.total, self.unattributed = by_system, total, unattributed
        self.at = self._k.wall()

    def trace(self) -> None:
        """Start tracing (the runtime calls it when built: the systems' constructors count)."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            self._started_here = True
            self._k.log.info("memory.tracking", frames=TRACE_FRAMES, period=MEMORY_PERIOD)

    def _stop(self) -> None:
        if self._started_here:
            tracemalloc.stop()
            self._started_here = False
            self.by_system, self.total, self.unattributed, self.at = {}, 0, 0, None

    def section(self) -> dict[str, Any]:
        """``status_sections["memory"]``: the top systems by live memory."""
        top = sorted(self.by_system.items(), key=lambda item: -item[1])[:TOP_SYSTEMS]
        return {
            "tracking": tracemalloc.is_tracing(),
            "at": self.at,
            "period": MEMORY_PERIOD,
            "snapshot_seconds": self.cost,
            "traced_bytes": self.total,
            "unattributed_bytes": self.unattributed,
            "top": [{"system": name, "bytes": size} for name, size in top],
        }
