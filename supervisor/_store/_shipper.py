"""The shipper: the core's record sink, and the service that writes the store off the tick.

The sink (:meth:`ErrorShipper.sink`, in ``sup.record_sinks``) only appends
to a bounded deque: O(1), no lock, no I/O; past ``[errors] queue`` records
it drops and counts (``queue_full``). Every :data:`FLUSH_EVERY` seconds the
service swaps the deque for an empty one and writes the batch in a worker
thread (``trio.to_thread.run_sync``, one thread at a time), so the loop
never waits on the disk. A kill -9 loses what was queued since the last
commit: at most FLUSH_EVERY plus one write. The Python part of a write
holds the GIL, and the trio thread, woken for a tick, would wait up to the
interpreter's switch interval (5 ms) for it: the worker naps (NAP, the GIL
let go) after every ``_db.CHUNK`` records reduced, and frees the records
itself, a chunk at a time (freeing them on the trio thread cost ~3 ms per
batch), so a tick waits about 0.3 ms at most. Once a second it samples the
public views into the minute's row (SLOs, correlation) and notes incidents
(emergency, quarantine); once a minute it applies retention.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from .._core._config_sections import ErrorsConfig, SloConfig, parse_duration
from .._core._phase import Phase
from .._logging import get_logger
from ._db import CHUNK, ErrorStore, MinuteRow
from ._sampler import Sampler
from ._schema import connect
from ._slo import burn_rate

if TYPE_CHECKING:
    from .._core._runtime import Supervisor
    from .._core._safecall import ErrorRecord

__all__ = ["FLUSH_EVERY", "ErrorShipper", "attach_error_store", "config_version"]

_T = TypeVar("_T")

#: Seconds between writes: what a kill -9 may lose.
FLUSH_EVERY: Final = 0.25
SAMPLE_EVERY: Final = 1.0
RETAIN_EVERY: Final = 60.0
#: Minute rows kept in memory for burn rates (the longest window: 3 days).
RECENT_MINUTES: Final = 3 * 1440
#: Seconds the worker sleeps between chunks, with the GIL let go (see _nap).
NAP: Final = 100e-6
#: Seconds the last write gets when the run ends.
_FINAL_WRITE: Final = 5.0


def _nap() -> None:
    """Let go of the GIL long enough for the trio thread, if it waits, to take it.

    ``sleep(0)`` is not enough: the waiting thread needs tens of microseconds
    to wake, and the worker would take the GIL back first; the trio thread
    would then wait out the interpreter's whole switch interval (5 ms).
    """
    time.sleep(NAP)


def _release(batch: list[ErrorRecord]) -> None:
    """Free the batch's records here, a chunk at a time, napping between chunks.

    Freeing 2,500 records takes milliseconds; had the last reference been
    dropped on the trio thread, that would have been a tick's lateness.
    """
    while batch:
        del batch[-CHUNK:]
        _nap()


def config_version(raw: Mapping[str, Any]) -> str:
    """A short hash of the config as loaded: "new since this config" is since it first ran."""
    text = json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@attrs.define(eq=False)
class ErrorShipper:
    """The queue between the core and the store file, and the service that empties it."""

    path: Path
    config: ErrorsConfig = attrs.field(factory=ErrorsConfig)
    slos: Mapping[str, SloConfig] = attrs.field(factory=dict)
    version: str = ""
    source: str = ""
    queue: collections.deque[ErrorRecord] = attrs.field(factory=collections.deque)
    #: Records not stored, by reason: ``queue_full``, ``write_failed``.
    dropped: collections.Counter[str] = attrs.field(factory=collections.Counter)
    store: ErrorStore | None = None
    recent: collections.deque[MinuteRow] = attrs.field(
        factory=lambda: collections.deque(maxlen=RECENT_MINUTES)
    )
    sampler: Sampler | None = None
    #: CPU seconds the worker threads spent writing (what the store costs the machine).
    write_cpu: float = 0.0
    _saved_drops: collections.Counter[str] = attrs.field(factory=collections.Counter)
    _limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _readers: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(2))
    #: Whether answers leave tracebacks out: the phase whose access rules apply is
    #: PRODUCTION (as the in-memory error view does). Updated once a second.
    hide_tracebacks: bool = False
    _phase: Phase | None = None
    _incidents: list[tuple[float, str, str]] = attrs.field(factory=list)
    _quarantined: tuple[str, ...] = ()
    _log: Any = attrs.field(factory=lambda: get_logger(component="error_store"))

    def sink(self, record: ErrorRecord) -> None:
        """The core's record sink: queue ``record``, or count it dropped. O(1), never raises."""
        if len(self.queue) < self.config.queue:
            self.queue.append(record)
        else:
            self.dropped["queue_full"] += 1

    # ------------------------------------------------------------ service

    async def error_store(
        self, sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write the queue every FLUSH_EVERY seconds until ``sup.closing``; then a last write."""
        if self.store is None:
            self.store = await self._thread(self._open, time.time())
            assert self.sampler is not None
            self.sampler.prime(
                time.time(), lateness=sup.lateness, work=sup.work, errors=sup.errors.total
            )
        task_status.started()
        clock = trio.current_time
        next_sample = clock()
        next_retain = clock() + RETAIN_EVERY
        try:
            while not sup.closing.is_set():
                with trio.move_on_after(FLUSH_EVERY):
                    await sup.closing.wait()
                rows: list[MinuteRow] = []
                events: list[tuple[float, str, str]] = []
                if clock() >= next_sample:
                    next_sample = clock() + SAMPLE_EVERY
                    rows, events = self._sample(sup)
                await self._write(rows, events)
                if clock() >= next_retain:
                    next_retain = clock() + RETAIN_EVERY
                    await self._thread(self._retain, time.time())
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_FINAL_WRITE):
                rows, events = self._sample(sup)
                await self._write(rows, events)
                store = self.store
                if sup.closing.is_set() and store is not None:  # the run ends (not a crash)
                    self.store = None
                    await self._thread(store.close)

    def _open(self, now: float) -> ErrorStore:
        store = ErrorStore.open(
            self.path,
            retention_days=self.config.retention_days,
            max_mb=self.config.max_mb,
            samples_per_minute=self.config.samples_per_minute,
            config_version=self.version,
            source=self.source,
            now=now,
        )
        since = int(now) // 60 * 60 - 60 * RECENT_MINUTES
        rows = store.conn.execute(
            "SELECT * FROM minutes WHERE minute >= ? ORDER BY minute", (since,)
        ).fetchall()
        self.recent.extend(MinuteRow.from_row(r) for r in rows)
        self.sampler = Sampler(row=store.load_minute(int(now) // 60 * 60))
        return store

    def incident(self, kind: str, detail: str) -> None:
        """Note an incident for the report (e.g. an alert firing: ``"alert"``, its rule)."""
        self._incidents.append((time.time(), kind, detail))

    def _sample(self, sup: Supervisor) -> tuple[list[MinuteRow], list[tuple[float, str, str]]]:
        """This second's sample (the minute row to write) and the incidents since the last."""
        now = time.time()
        events, self._incidents = self._incidents, []
        phase = sup.phase
        if phase is Phase.EMERGENCY_SHUTDOWN and self._phase is not phase:
            reason = (sup.emergency_info or {}).get("reason") or "emergency shutdown"
            events.append((now, "emergency", str(reason)))
        self._phase = phase
        self.hide_tracebacks = sup.access_phase is Phase.PRODUCTION
        quarantined = sup.quarantined()
        if quarantined != self._quarantined:
            events.extend((now, "quarantine", n) for n in quarantined if n not in self._quarantined)
            events.extend((now, "release", n) for n in self._quarantined if n not in quarantined)
            self._quarantined = quarantined
        if self.sampler is None:
            return [], events
        players = sup.gauges.get("players", 0.0)
        finished = self.sampler.sample(
            now,
            lateness=sup.lateness,
            work=sup.work,
            emergency=phase is Phase.EMERGENCY_SHUTDOWN,
            players=players if isinstance(players, float | int) and math.isfinite(players) else 0,
            errors=sup.errors.total,
        )
        rows = [self.sampler.row]
        if finished is not None:
            self.recent.append(finished)
            rows.insert(0, finished)
        return rows, events

    async def _write(self, rows: list[MinuteRow], events: list[tuple[float, str, str]]) -> None:
        batch, self.queue = self.queue, collections.deque()
        drops = self.dropped - self._saved_drops
        self._saved_drops = self.dropped.copy()
        if batch or rows or events or drops:
            # Copies: the sampler goes on changing its row while the thread writes.
            rows = [attrs.evolve(r, late=list(r.late)) for r in rows]
            # The deque itself goes: its records must die in the worker (see _release).
            await self._thread(self._write_sync, batch, rows, events, drops)

    def _write_sync(
        self,
        queued: collections.deque[ErrorRecord],
        rows: list[MinuteRow],
        events: list[tuple[float, str, str]],
        drops: Mapping[str, int],
    ) -> None:
        store = self.store
        assert store is not None
        began = time.thread_time()
        batch = list(queued)
        queued.clear()
        try:
            store.write(batch, pause=_nap)
            for row in rows:
                store.write_minute(row)
            for event in events:
                store.event(*event)
            store.count_dropped(drops)
        except sqlite3.Error as exc:
            # The disk is full or the file went away: these records are lost, and
            # counted; the next batch tries again.
            self.dropped["write_failed"] += len(batch)
            self._log.error("error_store.write_failed", error=str(exc), records=len(batch))
        finally:
            _release(batch)
            self.write_cpu += time.thread_time() - began

    def _retain(self, now: float) -> None:
        assert self.store is not None
        try:
            gone = self.store.retain(now)
        except sqlite3.Error as exc:
            self._log.error("error_store.retention_failed", error=str(exc))
            return
        if any(gone.values()):
            self._log.info("error_store.retention", **gone)

    async def _thread(self, func: Callable[..., _T], *args: Any) -> _T:
        return await trio.to_thread.run_sync(func, *args, limiter=self._limiter)

    # -------------------------------------------------------------- reads

    async def read(self, func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``func(conn, *args, **kwargs)`` on a read-only connection, in a worker thread."""

        def run() -> _T:
            conn = connect(self.path, readonly=True)
            try:
                return func(conn, *args, **kwargs)
            finally:
                conn.close()

        return await trio.to_thread.run_sync(run, limiter=self._readers)

    def slo_burn_rate(self, slo: str, window: str) -> float:
        """How fast the last ``window`` (``"1h"``) spends ``slo``'s error budget (H7's rules).

        Raises:
            KeyError: no ``[slo.<slo>]``.
            ValueError: ``window`` is not a duration.
        """
        config = self.slos[slo]
        since = time.time() - parse_duration(window)
        rows: Iterable[MinuteRow] = itertools.takewhile(
            lambda r: r.minute + 60 > since, reversed(self.recent)
        )
        if self.sampler is not None:
            rows = itertools.chain((self.sampler.row,), rows)
        return burn_rate(config, rows)

    def stats(self) -> dict[str, Any]:
        """What the store did: written, counted only, dropped by reason, size."""
        store = self.store
        return {
            "path": str(self.path),
            "queued": len(self.queue),
            "written": store.written if store else 0,
            "counted_only": store.counted_only if store else 0,
            "write_cpu_seconds": self.write_cpu,
            "dropped": dict(self.dropped + (store.dropped if store else collections.Counter())),
        }


def attach_error_store(sup: Supervisor) -> ErrorShipper | None:
    """Keep ``sup``'s error records in ``state_dir/errors.db`` (None: ``[errors] store = false``).

    Adds the shipper's sink to ``sup.record_sinks`` and its service to
    ``sup.services``. The file is opened (created, migrated) by the service
    before the systems start; a file from a newer version stops the start.
    """
    config = sup.config
    if not config.errors.store:
        return None
    shipper = ErrorShipper(
        path=sup.state_dir / "errors.db",
        config=config.errors,
        slos=config.slo,
        version=config_version(config.raw),
        source=config.source,
        hide_tracebacks=sup.access_phase is Phase.PRODUCTION,
    )
    sup.record_sinks.append(shipper.sink)
    sup.services.append(shipper.error_store)
    return shipper
