"""The store's SQLite file: how it is opened, and its numbered migrations.

Each migration is applied once, in order, at start-up, inside one
transaction with its row in ``schema_migrations``: a file made by an older
version is brought up to date; one made by a newer version is refused
(its tables may mean something this version does not know).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StoreVersionError", "connect", "migrate", "version"]

#: (version, name, SQL). Append only: never edit an applied migration.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (
        1,
        "records, fingerprints, counts, runs",
        """
        CREATE TABLE fingerprints (
            id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL UNIQUE,
            exc_type TEXT NOT NULL,
            message TEXT NOT NULL,        -- the latest record's (already redacted)
            traceback TEXT,               -- the latest formatted one
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            total INTEGER NOT NULL
        );
        -- Exact counts: minute buckets (width 60), folded into hours (3600) when old.
        CREATE TABLE counts (
            bucket INTEGER NOT NULL,
            width INTEGER NOT NULL,
            fp INTEGER NOT NULL,
            system TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (bucket, width, fp, system)
        ) WITHOUT ROWID;
        -- Whole records: the first samples_per_minute per fingerprint per minute.
        CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            tick INTEGER NOT NULL,
            system TEXT NOT NULL,
            hook TEXT NOT NULL,
            phase TEXT NOT NULL,
            kind TEXT NOT NULL,
            fp INTEGER NOT NULL,
            message TEXT NOT NULL,
            health TEXT NOT NULL,
            gauges TEXT NOT NULL,
            stack TEXT,
            run INTEGER NOT NULL
        );
        CREATE INDEX records_time ON records (time);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started REAL NOT NULL,
            pid INTEGER NOT NULL,
            config_version TEXT NOT NULL,
            source TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        "minutes (tick timeliness, players, availability), events, dropped",
        """
        CREATE TABLE minutes (
            minute INTEGER PRIMARY KEY,   -- unix seconds at the minute's start
            seconds REAL NOT NULL,        -- observed (the supervisor was running)
            emergency REAL NOT NULL,      -- of them in EMERGENCY_SHUTDOWN
            ticks INTEGER NOT NULL,
            late TEXT NOT NULL,           -- JSON: ticks later than each LATENCY_BUCKETS bound
            lateness_p99 REAL NOT NULL,
            work_p99 REAL NOT NULL,
            player_seconds REAL NOT NULL,
            errors INTEGER NOT NULL
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            kind TEXT NOT NULL,           -- emergency | quarantine | release | alert ...
            detail TEXT NOT NULL
        );
        CREATE INDEX events_time ON events (time);
        CREATE TABLE dropped (reason TEXT PRIMARY KEY, n INTEGER NOT NULL);
        """,
    ),
)

SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


class StoreVersionError(Exception):
    """The file was written by a newer version of the store."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the store at ``path``, in WAL mode, migrated (unless read-only).

    ``synchronous=NORMAL`` in WAL: a commit survives the process being killed
    (kill -9) and the file is never corrupt; only a power loss may take the
    last commits. ``auto_vacuum=INCREMENTAL`` lets retention give pages back.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
        StoreVersionError: the file is newer than this version.
    """
    if readonly:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=5.0
        )
        conn.execute("PRAGMA query_only = ON")
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on a new, empty file
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    migrate(conn)
    return conn


def version(conn: sqlite3.Connection) -> int:
    """The highest migration applied (0 for an empty file)."""
    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, *, upto: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations not yet applied, up to ``upto``; the versions applied.

    Raises:
        StoreVersionError: the file has a migration this version does not know.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
    )
    have = version(conn)
    if have > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the error store is at schema version {have}; this supervisor knows up to "
            f"{SCHEMA_VERSION}: upgrade it, or point it at another state_dir"
        )
    applied = []
    for number, name, sql in MIGRATIONS:
        if number <= have or number > upto:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, time.time())
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(number)
    return applied


def _statements(sql: str) -> list[str]:
    """The statements of a migration script (no semicolons inside our literals)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
