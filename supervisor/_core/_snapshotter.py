"""The snapshotter: capture every system's state, write it, restore it, resume from disk.

Capture runs on the loop thread between ticks (each state packed with
msgpack at once, so systems may change their live state right after);
encoding and writing happen on a worker thread, serialised by a lock. The
periodic snapshot is a post-tick chore, and so is a snapshot an operator asks
for (``supervisor snapshot``): the command marks it due, the chore captures
after the next tick, and the caller is answered once the file is written.
Periodic writes log at debug (one every few seconds is noise); others at info.

Capture cost grows with the state that changed, not with the world: a system
may expose an int ``snapshot_version`` (an attribute or property) that it bumps
whenever its snapshot state changes (``restore`` included). While the number
is the one seen at the last capture of the same instance, the bytes packed
then are reused and ``snapshot()`` is not called at all. A system without it,
or whose version cannot be read as an int, is captured in full every time.
The cache holds one packed state per system, keyed by the instance, so a
rebuilt system (restart, reload) is never served its predecessor's bytes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import attrs
import msgpack
import trio

from ._failures import FailureRecorder
from ._histogram import Histogram
from ._kernel import Kernel
from ._recovery import Recovery
from ._safecall import is_runtime_cancel, safe_message
from ._schedule import Chore
from ._snapshot import SnapshotStore
from ._snapshot_format import MAX_TICK, Snapshot
from ._steps import Steps

__all__ = ["SnapshotRequest", "Snapshotter"]


@attrs.define(eq=False)
class SnapshotRequest:
    """A snapshot asked for now: answered (``done``) once written, or once it cannot be."""

    reason: str
    done: trio.Event = attrs.field(factory=trio.Event)
    path: Path | None = None
    tick: int = 0
    #: Why there is no path: the write failed, or the run ended first.
    problem: str = ""


def _valid_tick(tick: object) -> bool:
    """Whether a snapshot's tick is one a run can continue from.

    Below the store's MAX_TICK (2**53): beyond it a tick no longer survives a
    float (JSON, Prometheus), so such a snapshot is corrupt or forged.
    """
    return type(tick) is int and 0 <= tick < MAX_TICK


def _version_of(system: object) -> int | None:
    """The system's ``snapshot_version`` as an int; None when absent or unreadable.

    A property that raises, or a value that is not a plain int (a bool, a
    float, anything else), means "no version": the system is captured in full.
    """
    try:
        version = getattr(system, "snapshot_version", None)
    except Exception:
        return None
    return version if type(version) is int else None


class Snapshotter:
    """Captures, writes and restores the systems' state (one per runtime)."""

    def __init__(
        self,
        kernel: Kernel,
        store: SnapshotStore,
        recorder: FailureRecorder,
        steps: Steps,
        recovery: Recovery,
    ) -> None:
        self._k = kernel
        self._log = kernel.log
        self.store = store
        self._recorder = recorder
        self._steps = steps
        self._recovery = recovery
        self.last: Path | None = None
        #: When ``last`` was written (wall clock, Unix seconds).
        self.last_time: float | None = None
        #: Snapshots asked for, captured by ``demand_chore`` after the next tick.
        self.requests: list[SnapshotRequest] = []
        self.demand_chore = Chore("snapshot_now", self.on_demand)
        self.problems: list[str] = []
        self.failures = 0
        self.skipped = 0
        self.stall = Histogram()
        self.write_time = Histogram()
        #: The periodic snapshot, a post-tick chore.
        self.chore = Chore("snapshot", self.periodic)
        self._lock = trio.Lock()
        #: Per system: (the instance, its ``snapshot_version``, the bytes packed then).
        self._packed: dict[str, tuple[object, int, bytes]] = {}
        #: Captures that reused a system's packed bytes (``snapshot_version`` unchanged).
        self.reused = 0

    def schedule(self) -> None:
        """Set when the next periodic snapshot is due (never, when they are off)."""
        interval = self._k.active.supervisor.snapshot_interval
        if not self._k.persist or interval <= 0:
            self.chore.next_due = math.inf
        else:
            self.chore.next_due = trio.current_time() + interval

    async def capture(self, reason: str) -> Snapshot:
        """Collect every system's ``snapshot()`` state, packed, on the loop thread."""
        k = self._k
        systems: dict[str, bytes] = {}
        now = trio.current_time()
        for slot in k.order:
            # A system quarantined because its snapshot() failed is skipped until its
            # half-open retry passes: a hanging snapshot() stalls the loop once per
            # backoff, not once per period.
            if "snapshot" not in slot.info.hooks or slot.trial_hook == "snapshot":
                continue
            version = _version_of(slot.system)
            cached = self._packed.get(slot.name)
            if version is not None and cached is not None:
                owner, seen, packed = cached
                if owner is slot.system and seen == version:
                    systems[slot.name] = packed
                    self.reused += 1
                    continue
            ok, state = await self._steps.call(slot, "snapshot", timeout=k.stop_timeout)
            if not ok:
                self._recovery.count_failure(slot, "snapshot", now)
                continue
            try:
                systems[slot.name] = packed = msgpack.packb(state)
                if version is None:
                    self._packed.pop(slot.name, None)
                else:
                    self._packed[slot.name] = (slot.system, version, packed)
            except BaseException as exc:  # an unpackable type, or a hostile mapping's methods
                if is_runtime_cancel(exc):
                    raise
                record = self._recorder.record(slot, "snapshot", exc)
                self._recovery.count_failure(slot, "snapshot", now)
                self._log.error(
                    "snapshot.unserialisable",
                    system=slot.name,
                    error=record.exc_type,
                    message=record.message,
                )
        interrupted = k.phases.interrupted
        meta: dict[str, Any] = {
            "tick_rate": k.tick_rate,
            "errors": dict(k.errors.counts),
            "interrupted_phase": interrupted.value if interrupted else None,
            "error_history": [k.public_record(r) for r in k.errors.recent(limit=20)],
            "lifecycle": [e.as_dict() for e in k.phases.history],
        }
        return Snapshot(
            tick=k.loop.tick,
            phase=k.phase.value,
            reason=reason,
            time=k.wall(),
            systems=dict(systems),
            meta=meta,
        )

    async def write(self, snap: Snapshot) -> Path | None:
        """Encode and write ``snap`` on a worker thread; None (logged) when it fails.

        Writes are serialised: the store prunes generations and stray temp
        files after each write, which must not race another write.
        """
        started = time.perf_counter()
        try:
            async with self._lock:
                path = await trio.to_thread.run_sync(self.store.write, snap)
        except (OSError, ValueError, TypeError) as exc:
            self.failures += 1
            self._log.error(
                "snapshot.failed",
                tick=snap.tick,
                reason=snap.reason,
                error=safe_message(exc, self._k.redactor),
            )
            return None
        self.write_time.record(time.perf_counter() - started)
        self.last = path
        self.last_time = self._k.wall()
        log = self._log.debug if snap.reason == "periodic" else self._log.info
        log("snapshot.written", path=str(path), tick=snap.tick, reason=snap.reason)
        return path

    def request(self, reason: str) -> SnapshotRequest:
        """Ask for a snapshot after the next tick (from a command, on the loop)."""
        req = SnapshotRequest(reason)
        self.requests.append(req)
        self.demand_chore.next_due = -math.inf
        return req

    async def on_demand(self, _deadline: float) -> None:
        """Capture once for every request waiting; write in the background, then answer them."""
        self.demand_chore.next_due = math.inf
        requests, self.requests = self.requests, []
        nursery = self._k.run.nursery
        if not requests or nursery is None:
            return
        snap = await self.capture(requests[0].reason)
        nursery.start_soon(self._write_and_answer, snap, requests)

    async def _write_and_answer(self, snap: Snapshot, requests: list[SnapshotRequest]) -> None:
        path = None
        try:
            path = await self.write(snap)
        finally:
            for req in requests:
                req.path, req.tick = path, snap.tick
                req.problem = "" if path is not None else "the snapshot could not be written"
                req.done.set()

    def refuse_requests(self, problem: str) -> None:
        """The tick loop ended before capturing them: answer the waiting requests with why."""
        requests, self.requests = self.requests, []
        self.demand_chore.next_due = math.inf
        for req in requests:
            req.problem = problem
            req.done.set()

    async def periodic(self, _deadline: float) -> None:
        """Capture between ticks (the only stall), write in the background (the run's nursery)."""
        nursery = self._k.run.nursery
        assert nursery is not None
        self.schedule()
        if self._lock.locked():
            self.skipped += 1
            return  # the previous write is still going: skip rather than queue
        timer = self._k.timer
        started = timer()
        snap = await self.capture("periodic")
        self.stall.record(timer() - started)
        nursery.start_soon(self.write, snap)

    async def latest(self) -> Snapshot | None:
        """The newest valid snapshot on disk (problems found are logged and kept)."""
        snap, found = await trio.to_thread.run_sync(self.store.latest)
        problems = [str(p) for p in found]
        if snap is not None and not _valid_tick(snap.tick):
            # The store checks this too; a run must never continue from such a tick.
            problems.append(
                "the latest snapshot's tick is not between 0 and 2**53: refused as corrupt"
            )
            snap = None
        for problem in problems:
            self._k.log.error("snapshot.corrupt", problem=problem)
        self.problems = problems
        return snap

    async def restore(self, snap: Snapshot) -> None:
        """Give each system its state from ``snap``; the tick count continues from it.

        A ``restore()`` that fails (or overruns ``stop_timeout``) counts against
        its system's restart budget; within it, the system runs on from the
        state it has.
        """
        k = self._k
        k.loop.tick = snap.tick
        # Restored state is new state, whatever a system's version says.
        self._packed.clear()
        now = trio.current_time()
        for slot in k.order or list(k.slots.values()):
            packed = snap.systems.get(slot.name)
            if packed is None:
                continue
            if "restore" not in slot.info.hooks:
                k.log.warning("restore.no_hook", system=slot.name)
                continue
            try:
                state = msgpack.unpackb(packed, raw=False, strict_map_key=False)
            except Exception as exc:
                self._recorder.record_and_log(slot, "restore", exc)
                self._recovery.count_failure(slot, "restore", now)
                continue
            ok, _ = await self._steps.call(slot, "restore", state, timeout=k.stop_timeout)
            if not ok:
                self._recovery.count_failure(slot, "restore", now)

    async def resume(self) -> None:
        """``run --resume``: restore the latest valid snapshot, if there is one."""
        k = self._k
        snap = await self.latest()
        if snap is None:
            k.log.warning("resume.nothing", folder=str(self.store.directory))
            return
        await self.restore(snap)
        k.phases.record(
            action="resume",
            before=snap.phase,
            after=k.phase.value,
            time=k.wall(),
            tick=k.loop.tick,
            caller=k.text("run --resume"),
            reason=k.text(f"resumed from the snapshot of tick {snap.tick} ({snap.reason})"),
        )
        k.log.info("resume.done", tick=snap.tick, reason=snap.reason)
