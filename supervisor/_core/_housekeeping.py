"""Housekeeping off the tick: resource samples, the dropped-tick window, the memory limit.

Once a HOUSEKEEPING_INTERVAL, in a task of its own (never per tick): the
process's resources are sampled with psutil, folded error-log storms are
flushed, and an RSS over ``memory_limit_mb`` is an emergency.
"""

from __future__ import annotations

import collections

import psutil
import trio

from ._failures import FailureRecorder
from ._kernel import Kernel

__all__ = ["HOUSEKEEPING_INTERVAL", "Housekeeper"]

#: Seconds between the background samples of resources (never per tick).
HOUSEKEEPING_INTERVAL = 1.0


class Housekeeper:
    """Samples resources and keeps the window of dropped ticks (one per runtime)."""

    def __init__(self, kernel: Kernel, recorder: FailureRecorder) -> None:
        self._k = kernel
        self._recorder = recorder
        #: The last sample: rss_bytes, cpu_percent, threads, open_files.
        self.resources: dict[str, float] = {}
        #: (tick, dropped ticks so far), once a second: the readiness window's base.
        self.dropped_marks: collections.deque[tuple[int, int]] = collections.deque(maxlen=60)

    def dropped_since(self, horizon: int) -> int:
        """Ticks dropped since tick ``horizon`` (as of the marks kept)."""
        k = self._k
        base = next(
            (dropped for tick, dropped in self.dropped_marks if tick >= horizon),
            k.dropped_ticks,
        )
        return k.dropped_ticks - base

    async def run(self) -> None:
        """Until cancelled: sample, flush, check the memory limit, once a second."""
        k = self._k
        proc = psutil.Process()
        proc.cpu_percent()
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            self._recorder.flush()
            self.dropped_marks.append((k.loop.tick, k.dropped_ticks))
            with proc.oneshot():
                rss = proc.memory_info().rss
                self.resources = {
                    "rss_bytes": rss,
                    "cpu_percent": proc.cpu_percent(),
                    "threads": proc.num_threads(),
                    "open_files": proc.num_fds(),
                }
            limit = k.active.supervisor.memory_limit_mb  # finite, >= 0: checked by the config
            if limit and rss > limit * 2**20 and k.run.emergency_reason is None:
                k.request_emergency(
                    f"fatal resource limit: RSS {rss / 2**20:.1f} MB exceeds memory_limit_mb "
                    f"= {limit}",
                    source="resources",
                )
