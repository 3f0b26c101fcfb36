"""The shipper: the core's record sink, and the service that writes the store off the tick.

The sink (:meth:`ErrorShipper.sink`, in ``sup.record_sinks``) is called by
the core's ``errors`` chore, after the tick and within its budget, as each
record is made: it packs the fields the store keeps into one ``bytes``
(msgpack, :data:`._writer.FIELDS`) and appends it to a bounded list; past
``[errors] queue`` records it drops and counts (``queue_full``). So the
record itself is not kept here: a storm's records die as the core lets go
of them instead of living a quarter second in a queue, where they were
promoted into the GC's older generations (longer collections, some landing
right before a tick) and had to be encoded by the service in chunks that
ran whenever trio scheduled it, a deadline included. Every
:data:`FLUSH_EVERY` seconds the service swaps the list for an empty one and
hands it to the writer process (:mod:`._writer`, started by the service and
restarted if it dies, counted in ``writer_restarts``; the batch it took with
it is counted lost as ``writer_failed``) as frames of :data:`CHUNK` records,
a checkpoint between two: joining bytes is all it does on the loop. The
loop's process never runs the SQL nor builds rows: in a worker thread that
Python held the GIL the tick needed. The writer runs as a low-priority
batch task, so waking it never takes the loop's CPU. A kill -9 loses what
was packed since the last commit: at most FLUSH_EVERY plus one write. Once
a second the service samples the public views into the minute's row (SLOs,
correlation) and notes incidents (emergency, quarantine); once a minute the
writer applies retention.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import msgpack
import trio

from .._core._config_sections import ErrorsConfig, SloConfig, parse_duration
from .._core._phase import Phase
from .._logging import get_logger
from ._db import MinuteRow
from ._pipe import WriterGone, WriterProcess
from ._sampler import Sampler
from ._schema import connect
from ._slo import burn_rate
from ._writer import HEADER, frame

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
#: Records per frame to the writer (joined, sent and decoded whole), a checkpoint between two.
CHUNK: Final = 256
#: Seconds the last write gets when the run ends.
_FINAL_WRITE: Final = 5.0


def _records_frame(packed: list[bytes]) -> bytes:
    """A ``["r", [RECORD, ...]]`` frame of records packed by :meth:`ErrorShipper.sink`."""
    head = msgpack.Packer()
    body = b"".join(
        (head.pack_array_header(2), head.pack("r"), head.pack_array_header(len(packed)), *packed)
    )
    return HEADER.pack(len(body)) + body


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
    #: The records made since the last write, each packed (``_writer.FIELDS``).
    packed: list[bytes] = attrs.field(factory=list)
    #: Records not stored, by reason: ``queue_full``, ``encode_failed``, ``write_failed``,
    #: and the core's ``ring_full`` (copied once a second: the store counts them too).
    dropped: collections.Counter[str] = attrs.field(factory=collections.Counter)
    writer: WriterProcess | None = None
    #: Writers started after the first (one died: crashed, killed, pipe broken).
    writer_restarts: int = 0
    written: int = 0
    counted_only: int = 0
    #: Rows retention removed, by reason (``retention_age`` ...).
    retained: collections.Counter[str] = attrs.field(factory=collections.Counter)
    recent: collections.deque[MinuteRow] = attrs.field(
        factory=lambda: collections.deque(maxlen=RECENT_MINUTES)
    )
    sampler: Sampler | None = None
    #: CPU seconds the writer processes spent writing (what the store costs the machine).
    write_cpu: float = 0.0
    _saved_drops: collections.Counter[str] = attrs.field(factory=collections.Counter)
    _readers: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(2))
    #: Whether answers leave tracebacks out: the phase whose access rules apply is
    #: PRODUCTION (as the in-memory error view does). Updated once a second.
    hide_tracebacks: bool = False
    _phase: Phase | None = None
    _incidents: list[tuple[float, str, str]] = attrs.field(factory=list)
    _quarantined: tuple[str, ...] = ()
    _log: Any = attrs.field(factory=lambda: get_logger(component="error_store"))
    _pack: Callable[[Any], bytes] = attrs.field(factory=lambda: msgpack.Packer(default=dict).pack)

    def sink(self, record: ErrorRecord) -> None:
        """The core's record sink: pack ``record``'s stored fields, or count it dropped.

        Bounded (a record's texts are cut when it is made), never raises. One
        tuple and one ``bytes`` per record, both freed or never tracked by the
        cyclic GC: nothing of the record outlives this call here.
        """
        if len(self.packed) >= self.config.queue:
            self.dropped["queue_full"] += 1
            return
        r = record
        fields = (r.time, r.tick, r.system, r.hook, r.phase, r.kind, r.fingerprint,
                  r.exc_type, r.message, r.traceback, r.health, r.gauges, r.stack)  # fmt: skip
        try:
            self.packed.append(self._pack(fields))
        except (TypeError, ValueError, OverflowError):  # a gauge msgpack cannot hold
            self.dropped["encode_failed"] += 1

    # ------------------------------------------------------------ service

    async def error_store(
        self, sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write the queue every FLUSH_EVERY seconds until ``sup.closing``; then a last write."""
        if self.sampler is None:
            now = time.time()
            self.sampler = await trio.to_thread.run_sync(self._load, now)
            self.writer = await self._start(now)
            self.sampler.prime(now, lateness=sup.lateness, work=sup.work, errors=sup.errors.total)
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
                    await trio.lowlevel.checkpoint()  # a tick may be due: the batch waits
                retain = None
                if clock() >= next_retain:
                    next_retain = clock() + RETAIN_EVERY
                    retain = time.time()
                await self._write(rows, events, retain)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_FINAL_WRITE):
                rows, events = self._sample(sup)
                await self._write(rows, events, None)
                writer = self.writer
                if sup.closing.is_set() and writer is not None:  # the run ends (not a crash)
                    self.writer = None
                    await writer.aclose()

    def _load(self, now: float) -> Sampler:
        """Create or migrate the file (a newer one stops the start); the recent minutes."""
        conn = connect(self.path)
        try:
            since = int(now) // 60 * 60 - 60 * RECENT_MINUTES
            rows = conn.execute(
                "SELECT * FROM minutes WHERE minute >= ? ORDER BY minute", (since,)
            ).fetchall()
        finally:
            conn.close()
        self.recent.extend(MinuteRow.from_row(r) for r in rows)
        minute = int(now) // 60 * 60
        last = self.recent[-1] if self.recent else None
        # The current minute as stored (an earlier run's part of it) goes on from there.
        if last is not None and last.minute == minute:
            self.recent.pop()
            return Sampler(row=last)
        return Sampler(row=MinuteRow(minute=minute))

    async def _start(self, now: float) -> WriterProcess:
        return await WriterProcess.start(
            self.path,
            {
                "retention_days": self.config.retention_days,
                "max_mb": self.config.max_mb,
                "samples_per_minute": self.config.samples_per_minute,
                "config_version": self.version,
                "source": self.source,
                "now": now,
            },
        )

    def incident(self, kind: str, detail: str) -> None:
        """Note an incident for the report (e.g. an alert firing: ``"alert"``, its rule)."""
        self._incidents.append((time.time(), kind, detail))

    def _sample(self, sup: Supervisor) -> tuple[list[MinuteRow], list[tuple[float, str, str]]]:
        """This second's sample (the minute row to write) and the incidents since the last."""
        now = time.time()
        events, self._incidents = self._incidents, []
        ring_full = sup.errors.dropped["ring_full"]
        if ring_full:  # failures the core could not keep (its ring was full): lost records too
            self.dropped["ring_full"] = ring_full
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

    async def _write(
        self, rows: list[MinuteRow], events: list[tuple[float, str, str]], retain: float | None
    ) -> None:
        """Hand the queue, the minute rows, events and drops to the writer; take its figures."""
        batch, self.packed = self.packed, []
        drops = self.dropped - self._saved_drops
        if not (batch or rows or events or drops or retain is not None):
            return
        lost = len(batch)
        try:
            if self.writer is None:
                self.writer = await self._start(time.time())
                self.writer_restarts += 1
            writer = self.writer
            for start in range(0, len(batch), CHUNK):
                await writer.send(_records_frame(batch[start : start + CHUNK]))
                await trio.lowlevel.checkpoint()  # a tick may be due: the rest waits
            await writer.send(
                frame(["end", [[r.values() for r in rows], events, dict(drops), retain]])
            )
            reply = await writer.receive()
        except WriterGone as exc:
            self.dropped["writer_failed"] += lost
            self._log.error("error_store.writer_gone", error=str(exc), records=lost)
            gone_writer, self.writer = self.writer, None
            if gone_writer is not None:
                with trio.CancelScope(shield=True):
                    await gone_writer.aclose()
            return
        self._saved_drops += drops
        self.written += reply["written"]
        self.counted_only += reply["counted_only"]
        self.write_cpu += reply["cpu"]
        if reply["write_failed"]:
            self.dropped["write_failed"] += reply["write_failed"]
        for error in reply["errors"]:
            self._log.error("error_store.write_failed", error=error)
        gone = {k: n for k, n in reply["retained"].items() if n}
        if gone:
            self.retained.update({f"retention_{k}": n for k, n in gone.items() if k != "folded"})
            self._log.info("error_store.retention", **gone)

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
        return {
            "path": str(self.path),
            "queued": len(self.packed),
            "written": self.written,
            "counted_only": self.counted_only,
            "write_cpu_seconds": self.write_cpu,
            "writer_restarts": self.writer_restarts,
            "dropped": dict(self.dropped + self.retained),
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
