"""The datastore's SQLite side that is not the system itself: schema, audit, start-up reads.

Split from ``systems/datastore.py`` (the system and its hooks) so that each
module stays small; ``datastore`` re-exports :data:`SCHEMA` and :func:`audit`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._datastore_acks import AckCheck, Steps, comparing
from .economy import MAX_BALANCE

__all__ = ["SCHEMA", "audit", "check_against_acks", "checkpoint_and_close", "rollback"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS players (
    id INTEGER PRIMARY KEY,
    balance INTEGER NOT NULL,
    earnings INTEGER NOT NULL,
    paid_tick INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS purchases (
    id INTEGER PRIMARY KEY,
    player INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    item TEXT NOT NULL,
    tick INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS purchases_by_player ON purchases (player);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    player INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    purchase INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def audit(path: str | os.PathLike[str]) -> list[str]:
    """Check a world database's invariants; the problems found (empty: consistent).

    Every balance equals the sum of its ledger and lies in ``[0, MAX_BALANCE]``;
    every purchase has exactly one ledger entry of ``-amount``; every ledger
    entry belongs to a saved player. Safe while the world runs (WAL readers
    do not block the writer).
    """
    problems: list[str] = []
    conn = sqlite3.connect(path)
    try:
        for pid, balance, total in conn.execute(
            "SELECT p.id, p.balance, COALESCE(SUM(l.amount), 0) AS total FROM players p"
            " LEFT JOIN ledger l ON l.player = p.id GROUP BY p.id HAVING p.balance != total"
        ):
            problems.append(f"player {pid}: balance {balance} != ledger sum {total}")
        for (pid,) in conn.execute(
            "SELECT id FROM players WHERE balance < 0 OR balance > ?", (MAX_BALANCE,)
        ):
            problems.append(f"player {pid}: balance out of range")
        for pid, amount, entries in conn.execute(
            "SELECT p.id, p.amount, COUNT(l.seq) FROM purchases p LEFT JOIN ledger l"
            " ON l.purchase = p.id AND l.kind = 'purchase' AND l.amount = -p.amount"
            " AND l.player = p.player GROUP BY p.id HAVING COUNT(l.seq) != 1"
        ):
            problems.append(f"purchase {pid} ({amount}): {entries} matching ledger entries")
        for (player,) in conn.execute(
            "SELECT DISTINCT player FROM ledger WHERE player NOT IN (SELECT id FROM players)"
        ):
            problems.append(f"ledger entries of player {player}, who was never saved")
    finally:
        conn.close()
    return problems


def check_against_acks(db: str, acks: Path | None) -> Steps[AckCheck]:
    """Compare the ack log with the SQLite database, read-only, in slices (see ``comparing``)."""
    if not Path(db).exists():
        return (yield from comparing(acks, 0, None, None))
    conn = sqlite3.connect(f"{Path(db).absolute().as_uri()}?mode=ro", uri=True)
    try:
        meta: dict[str, int] = {}
        if _has_table(conn, "meta"):
            meta = dict(conn.execute("SELECT key, value FROM meta"))

        def lookup(ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
            marks = ",".join("?" * len(ids))  # only placeholders are formatted in
            sql = f"SELECT id, player, amount, tick, item FROM purchases WHERE id IN ({marks})"
            return {row[0]: tuple(row[1:]) for row in conn.execute(sql, list(ids))}

        found = lookup if _has_table(conn, "purchases") else None
        # The first ``accepted`` acks were lost once and the loss accepted.
        return (
            yield from comparing(acks, meta.get("acks_accepted", 0), found, meta.get("last_tick"))
        )
    finally:
        conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (name,)).fetchone() is not None


def rollback(conn: sqlite3.Connection) -> None:
    """Undo a half-done transaction, if any; a broken connection is the caller's problem."""
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def checkpoint_and_close(conn: sqlite3.Connection) -> None:
    """Fold the WAL into the database file (fsynced) and close; errors are moot by then."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    with contextlib.suppress(sqlite3.Error):
        conn.close()
