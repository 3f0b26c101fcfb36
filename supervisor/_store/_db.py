"""The writing side of the store: batches of records, minute samples, retention.

Used by the writer process (:mod:`._writer`) alone while a supervisor runs:
the shipper never runs this SQL nor builds these rows in its own process.
Sizes, so that 30 days at 10,000 errors a minute fit ``max_mb`` (README,
"Error store"):

* counts are exact and cheap: one row per (minute, fingerprint, system),
  folded into one row per hour once older than :data:`FOLD_AFTER` (6 h),
  and into one per day once older than :data:`FOLD_DAYS_AFTER` (7 days);
* whole records are a sample: the first ``samples_per_minute`` of each
  fingerprint in each minute (the rest are in the counts only);
* a traceback is kept once per fingerprint (the latest), not per record;
* past ``max_mb`` the oldest whole records go first, then the oldest hourly
  counts; everything past ``retention_days`` goes. Each is counted.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, Self

import attrs

from ._schema import connect

__all__ = [
    "FOLDS", "FOLD_AFTER", "FOLD_DAYS_AFTER", "ErrorRecord", "ErrorStore", "MinuteRow",
]  # fmt: skip

#: Minute counts older than this (seconds) are folded into hourly counts.
FOLD_AFTER: Final = 6 * 3600
#: Hourly counts older than this are folded into daily counts.
FOLD_DAYS_AFTER: Final = 7 * 86_400
#: (width, folded into, once older than): the count rows' resolution by age.
FOLDS: Final = ((60, 3600, FOLD_AFTER), (3600, 86_400, FOLD_DAYS_AFTER))
#: Fraction of ``max_mb`` retention brings the file down to once it is over.
_SIZE_LOW_WATER: Final = 0.9
#: Fewest records deleted per statement while making room.
_SIZE_STEP: Final = 100
#: A traceback the core did not format (error storm): not worth keeping.
_UNFORMATTED: Final = "(traceback not formatted"
#: Most (minute, fingerprint) sample counters kept between batches.
_MAX_SAMPLED: Final = 100_000


class ErrorRecord(Protocol):
    """What the store reads of a record: the core's ``ErrorRecord``, or the writer's copy.

    A protocol, so the writer process needs no import of the core (nor trio).
    """

    @property
    def time(self) -> float: ...
    @property
    def tick(self) -> int: ...
    @property
    def system(self) -> str: ...
    @property
    def hook(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def exc_type(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def traceback(self) -> str: ...
    @property
    def health(self) -> str: ...
    @property
    def gauges(self) -> Mapping[str, float]: ...
    @property
    def stack(self) -> str | None: ...


@attrs.define
class MinuteRow:
    """What one minute of the run looked like (the SLOs' raw material)."""

    minute: int
    seconds: float = 0.0
    emergency: float = 0.0
    ticks: int = 0
    #: Ticks later than each of ``LATENCY_BUCKETS``'s bounds (trailing zeros left out).
    late: list[int] = attrs.field(factory=list)
    lateness_p99: float = 0.0
    work_p99: float = 0.0
    player_seconds: float = 0.0
    errors: int = 0

    def values(self) -> tuple[Any, ...]:
        """The row as the ``minutes`` table takes it."""
        late = list(self.late)
        while late and not late[-1]:
            late.pop()
        return (
            self.minute,
            self.seconds,
            self.emergency,
            self.ticks,
            json.dumps(late, separators=(",", ":")),
            self.lateness_p99,
            self.work_p99,
            self.player_seconds,
            self.errors,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> MinuteRow:
        """Back from a ``minutes`` row."""
        return cls(
            minute=row[0],
            seconds=row[1],
            emergency=row[2],
            ticks=row[3],
            late=json.loads(row[4]),
            lateness_p99=row[5],
            work_p99=row[6],
            player_seconds=row[7],
            errors=row[8],
        )


@attrs.define(eq=False)
class _Batch:
    """A batch reduced to what the tables take."""

    counts: collections.Counter[tuple[int, str, str]] = attrs.field(factory=collections.Counter)
    latest: dict[str, ErrorRecord] = attrs.field(factory=dict)
    first: dict[str, float] = attrs.field(factory=dict)
    totals: collections.Counter[str] = attrs.field(factory=collections.Counter)
    traces: dict[str, str] = attrs.field(factory=dict)
    kept: list[ErrorRecord] = attrs.field(factory=list)

    def add(self, part: Sequence[ErrorRecord], store: ErrorStore) -> None:
        keys = [(int(r.time) // 60 * 60, r.fingerprint, r.system) for r in part]
        counts = collections.Counter(keys)
        self.counts.update(counts)
        self.kept += store.sample(part, keys, counts)
        self.latest.update({r.fingerprint: r for r in part})
        for fp, t in {r.fingerprint: r.time for r in reversed(part)}.items():
            self.first.setdefault(fp, t)
        self.totals.update(r.fingerprint for r in part)
        self.traces.update(
            {r.fingerprint: r.traceback for r in part
             if r.traceback and not r.traceback.startswith(_UNFORMATTED)}
        )  # fmt: skip


@attrs.define(eq=False)
class ErrorStore:
    """The store file, open for writing. Build it with :meth:`open`."""

    path: Path
    conn: sqlite3.Connection
    run: int
    retention_days: float = 30.0
    max_mb: float = 100.0
    samples_per_minute: int = 5
    #: Rows given up, by reason (also kept in the ``dropped`` table).
    dropped: collections.Counter[str] = attrs.field(factory=collections.Counter)
    #: Records kept in counts only (the fingerprint's minute had its samples).
    counted_only: int = 0
    written: int = 0
    _fp_ids: dict[str, int] = attrs.field(factory=dict)
    _sampled: dict[tuple[int, str], int] = attrs.field(factory=dict)  # (minute, fingerprint)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        retention_days: float = 30.0,
        max_mb: float = 100.0,
        samples_per_minute: int = 5,
        config_version: str = "",
        source: str = "",
        now: float,
    ) -> Self:
        """Open (create, migrate) the store and record this run's start.

        Raises:
            sqlite3.Error: the file cannot be opened or written.
            StoreVersionError: the file is newer than this version.
        """
        conn = connect(path)
        run = conn.execute(
            "INSERT INTO runs (started, pid, config_version, source) VALUES (?, ?, ?, ?) "
            "RETURNING id",
            (now, os.getpid(), config_version, source),
        ).fetchone()[0]
        return cls(
            path=path,
            conn=conn,
            run=run,
            retention_days=retention_days,
            max_mb=max_mb,
            samples_per_minute=samples_per_minute,
        )

    def close(self) -> None:
        """Checkpoint the WAL into the file and close."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()

    # ------------------------------------------------------------- writing

    def write(self, records: Sequence[ErrorRecord]) -> None:
        """Store one batch (in time order) in one transaction: fingerprints, counts, samples.

        Per record only a key and a count are made (a storm is mostly records
        whose minute already has its samples); the database gets one
        statement per table, and one per fingerprint seen for the first time.
        """
        if not records:
            return
        batch = _Batch()
        batch.add(records, self)
        self.counted_only += len(records) - len(batch.kept)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = self._fingerprints(batch)
            conn.executemany(
                "INSERT INTO counts VALUES (?, 60, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(m, ids[fp], system, n) for (m, fp, system), n in batch.counts.items()],
            )
            conn.executemany(
                "INSERT INTO records (time, tick, system, hook, phase, kind, fp, message, "
                "health, gauges, stack, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.time, r.tick, r.system, r.hook, r.phase, r.kind, ids[r.fingerprint],
                     r.message, r.health, json.dumps(dict(r.gauges), separators=(",", ":")),
                     r.stack, self.run)
                    for r in batch.kept
                ],
            )  # fmt: skip
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.written += len(records)

    def sample(
        self,
        records: Sequence[ErrorRecord],
        keys: list[tuple[int, str, str]],
        counts: Mapping[tuple[int, str, str], int],
    ) -> list[ErrorRecord]:
        """The records kept whole: the first ``samples_per_minute`` per fingerprint per minute."""
        sampled, limit = self._sampled, self.samples_per_minute
        open_ = {(m, fp) for m, fp, _ in counts if sampled.get((m, fp), 0) < limit}
        kept: list[ErrorRecord] = []
        if not open_:
            return kept
        for r, (m, fp, _) in zip(records, keys, strict=True):
            if (m, fp) in open_ and (n := sampled.get((m, fp), 0)) < limit:
                sampled[(m, fp)] = n + 1
                kept.append(r)
        if len(sampled) > _MAX_SAMPLED:
            newest = max(m for m, _ in sampled)
            self._sampled = {k: v for k, v in sampled.items() if k[0] == newest}
        return kept

    def _fingerprints(self, batch: _Batch) -> dict[str, int]:
        """Insert the batch's new fingerprints, update the others in one statement; the ids."""
        ids = self._fp_ids
        for fp in batch.latest.keys() - ids.keys():
            r = batch.latest[fp]
            ids[fp] = self.conn.execute(
                "INSERT INTO fingerprints (fingerprint, exc_type, message, traceback, "
                "first_seen, last_seen, total) VALUES (?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (fingerprint) DO UPDATE SET total = total RETURNING id",
                (fp, r.exc_type, r.message, batch.traces.get(fp), batch.first[fp], r.time),
            ).fetchone()[0]
        self.conn.executemany(
            "UPDATE fingerprints SET message = ?, traceback = coalesce(?, traceback), "
            "first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), "
            "total = total + ? WHERE id = ?",
            [
                (r.message, batch.traces.get(fp), batch.first[fp], r.time, batch.totals[fp],
                 ids[fp])
                for fp, r in batch.latest.items()
            ],
        )  # fmt: skip
        return ids

    def write_minute(self, row: MinuteRow) -> None:
        """Replace the row of ``row.minute`` (the sampler keeps the minute's running totals)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row.values()
        )

    def load_minute(self, minute: int) -> MinuteRow:
        """The row of ``minute`` as stored (an earlier run's part of it), or an empty one."""
        row = self.conn.execute("SELECT * FROM minutes WHERE minute = ?", (minute,)).fetchone()
        return MinuteRow(minute=minute) if row is None else MinuteRow.from_row(row)

    def event(self, when: float, kind: str, detail: str) -> None:
        """Note an incident (an emergency, a quarantine, an alert) for the report."""
        self.conn.execute(
            "INSERT INTO events (time, kind, detail) VALUES (?, ?, ?)", (when, kind, detail)
        )

    def count_dropped(self, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (reason -> records) to the dropped totals, in memory and on disk."""
        items = [(k, n) for k, n in counts.items() if n]
        if not items:
            return
        self.dropped.update(dict(items))
        self.conn.executemany(
            "INSERT INTO dropped VALUES (?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            items,
        )

    # ----------------------------------------------------------- retention

    def used_bytes(self) -> int:
        """Bytes of the file in use (pages not on the free list)."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def retain(self, now: float) -> dict[str, int]:
        """Apply retention by age, fold old minutes into hours, then cap the size.

        Returns:
            What went, by reason (``age``, ``size``: whole records; ``age_counts``,
            ``size_counts``: count rows; ``folded``: minute rows made hourly).
        """
        gone: collections.Counter[str] = collections.Counter()
        conn = self.conn
        cutoff = now - self.retention_days * 86_400
        conn.execute("BEGIN IMMEDIATE")
        try:
            gone["age"] += conn.execute("DELETE FROM records WHERE time < ?", (cutoff,)).rowcount
            gone["age_counts"] += conn.execute(
                "DELETE FROM counts WHERE bucket + width <= ?", (cutoff,)
            ).rowcount
            conn.execute("DELETE FROM minutes WHERE minute + 60 <= ?", (cutoff,))
            conn.execute("DELETE FROM events WHERE time < ?", (cutoff,))
            if conn.execute("DELETE FROM fingerprints WHERE last_seen < ?", (cutoff,)).rowcount:
                self._fp_ids.clear()  # ids of deleted fingerprints must not be reused
            for width, into, after in FOLDS:
                fold = int(now - after) // into * into
                conn.execute(
                    "INSERT INTO counts SELECT bucket - bucket % ?, ?, fp, system, sum(n) "
                    "FROM counts WHERE width = ? AND bucket < ? GROUP BY 1, 3, 4 "
                    "ON CONFLICT DO UPDATE SET n = n + excluded.n",
                    (into, into, width, fold),
                )
                gone["folded"] += conn.execute(
                    "DELETE FROM counts WHERE width = ? AND bucket < ?", (width, fold)
                ).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        gone.update(self._cap_size())
        # Give the freed pages back, and the WAL to the file, so its size on disk follows.
        # A script: the sqlite3 module steps a plain execute() once, freeing one page.
        conn.executescript("PRAGMA incremental_vacuum")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.count_dropped({f"retention_{k}": n for k, n in gone.items() if k != "folded"})
        return dict(gone)

    def _cap_size(self) -> dict[str, int]:
        """Delete the oldest records, then the oldest days of counts, down to the low-water mark.

        Records go a twentieth at a time (by id, which is time order), so a
        file just over the cap loses little.
        """
        gone: collections.Counter[str] = collections.Counter()
        limit = self.max_mb * 1024 * 1024
        if self.used_bytes() <= limit:
            return gone
        conn = self.conn
        while self.used_bytes() > limit * _SIZE_LOW_WATER:
            low, high = conn.execute("SELECT min(id), max(id) FROM records").fetchone()
            if low is None:
                break
            step = max(_SIZE_STEP, (high - low) // 20)
            gone["size"] += conn.execute("DELETE FROM records WHERE id < ?", (low + step,)).rowcount
        while self.used_bytes() > limit * _SIZE_LOW_WATER:
            n = conn.execute(
                "DELETE FROM counts WHERE bucket < (SELECT min(bucket) FROM counts) + 86400"
            ).rowcount
            if not n:
                break
            gone["size_counts"] += n
        return gone
