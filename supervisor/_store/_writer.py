"""The writer process: the only place the store's SQL and row building run.

Run as ``python -m supervisor._store._writer PATH PARENT_PID SETTINGS`` by the
shipper (:mod:`._pipe` starts it). Why a process: the writing is Python
(reducing a batch to counts and samples, building rows, freeing them) as much
as it is SQLite, and in a worker thread of the supervisor it held the GIL the
tick needed (an error storm moved tick lateness p99 from 0.08 ms to ~2 ms).
Here it has its own interpreter and its own GIL.

Its input (stdin) is length-prefixed msgpack frames, :func:`frame` made:
``["r", [RECORD, ...]]`` adds encoded records (:data:`FIELDS`) to the batch;
``["end", [MINUTE_ROWS, EVENTS, DROPS, RETAIN_NOW]]`` writes the batch in one
transaction, then the minute rows, events and drop counts (and applies
retention when RETAIN_NOW is not None), and answers on stdout with one frame
of figures (:class:`Reply`'s fields). It answers a ``ready`` frame once the
store is open. End of input (the supervisor closed the pipe, or died: its
end of the pipe closes with it) → checkpoint, close, exit 0. A thread also
watches the parent's pid, so no writer outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs
import msgpack

from ._db import ErrorStore, MinuteRow

__all__ = ["FIELDS", "HEADER", "StoredRecord", "frame", "main"]

#: The record fields the store keeps, in the order the shipper encodes them.
FIELDS: Final = (
    "time", "tick", "system", "hook", "phase", "kind", "fingerprint", "exc_type", "message",
    "traceback", "health", "gauges", "stack",
)  # fmt: skip
#: A frame's header: its payload's length, big-endian.
HEADER: Final = struct.Struct(">I")
#: The writer's niceness: below the supervisor, which must get the CPU first.
NICE: Final = 10
#: Seconds between two looks at the parent's pid.
_WATCH_EVERY: Final = 0.5


def frame(payload: Any) -> bytes:
    """``payload`` as one frame of the pipe (both directions)."""
    body: bytes = msgpack.packb(payload)
    return HEADER.pack(len(body)) + body


@attrs.frozen
class StoredRecord:
    """A record as the writer gets it: the fields the store keeps (``ErrorStore.write`` reads)."""

    time: float
    tick: int
    system: str
    hook: str
    phase: str
    kind: str
    fingerprint: str
    exc_type: str
    message: str
    traceback: str
    health: str
    gauges: dict[str, float]
    stack: str | None


def _read(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def _frames(stream: IO[bytes]) -> Any:
    """The input's frames, decoded, until the end of input (or a cut-off frame)."""
    while (head := _read(stream, HEADER.size)) is not None:
        body = _read(stream, HEADER.unpack(head)[0])
        if body is None:
            return
        yield msgpack.unpackb(body, use_list=False)


def _watch_parent(parent: int) -> None:
    """Exit when the supervisor is gone (re-parented), whatever the pipe is doing."""
    while os.getppid() == parent:
        time.sleep(_WATCH_EVERY)
    os._exit(0)


@attrs.define
class _Writer:
    store: ErrorStore
    records: list[StoredRecord] = attrs.field(factory=list)

    def end(self, rows: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]],
            drops: dict[str, int], retain: float | None) -> dict[str, Any]:  # fmt: skip
        """Write what came since the last ``end``; what that did, for the shipper."""
        store, batch, self.records = self.store, self.records, []
        began, counted, failed = time.process_time(), store.counted_only, 0
        gone: dict[str, int] = {}
        errors: list[str] = []
        try:
            store.write(batch)
            for row in rows:
                store.write_minute(MinuteRow.from_row(row))
            for when, kind, detail in events:
                store.event(when, kind, detail)
            store.count_dropped(drops)
        except sqlite3.Error as exc:
            # The disk is full or the file went away: these records are lost, and
            # counted; the next batch tries again.
            failed = len(batch)
            errors.append(f"write: {exc}")
        if retain is not None:
            try:
                gone = store.retain(retain)
            except sqlite3.Error as exc:
                errors.append(f"retention: {exc}")
        return {
            "written": len(batch) - failed,
            "counted_only": store.counted_only - counted,
            "write_failed": failed,
            "retained": gone,
            "cpu": time.process_time() - began,
            "errors": errors,
        }


def _yield_to_the_loop() -> None:
    """Never preempt the supervisor: a batch policy (no wake-up preemption) at low priority.

    Woken by the pipe, a writer at normal policy took the supervisor's CPU
    from under it (the kernel favours the task that slept): the shipper's
    write to the pipe came back milliseconds later, a tick late. As a batch
    task it waits for a free CPU instead.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    with contextlib.suppress(AttributeError, OSError):
        os.nice(NICE)


def main(argv: Sequence[str] | None = None) -> int:
    """Open the store, answer ``ready``, then write what the pipe brings until it closes."""
    path, parent, settings = argv if argv is not None else sys.argv[1:]
    # Ctrl-C in a terminal signals the whole foreground group, this process
    # too: the supervisor decides when the store closes (it closes the pipe
    # after its last batch), so the writer must not die first with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _yield_to_the_loop()
    threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    store = ErrorStore.open(Path(path), **json.loads(settings))
    writer = _Writer(store)
    out = sys.stdout.buffer
    out.write(frame("ready"))
    out.flush()
    try:
        for op, data in _frames(sys.stdin.buffer):
            if op == "r":
                writer.records += [StoredRecord(*fields) for fields in data]
            else:
                out.write(frame(writer.end(*data)))
                out.flush()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
