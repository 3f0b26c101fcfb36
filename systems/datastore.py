"""The datastore: player data in SQLite or PostgreSQL, one transaction per tick, acks after commit.

SQLite (a file in the state folder) is the default. With ``[systems.datastore]
url = "postgresql://..."`` the same tables live in PostgreSQL and the commit
moves off the tick onto a worker thread, with the same guarantees: see
``systems/_datastore_pg.py``. What follows describes SQLite; everything but
the commit's thread, WAL and autosave holds for both.

Durability, and what "acknowledged" means
-----------------------------------------
At the end of every tick (``priority`` 100 puts it after the other systems of
the world) the datastore drains the economy's queue -- ledger entries,
purchases, changed accounts -- and writes it in ONE transaction (group
commit). Only after ``COMMIT`` returns does it acknowledge the purchases: it
appends one line per purchase to the ack log (``<path>.acks`` by default; the
reply a player's client would get) and calls ``Economy.committed``, which
marks them acknowledged and runs their callbacks. So every acknowledged
purchase is in the database, whenever the process dies
(``tests/test_durability.py`` kills it with SIGKILL at random ticks).

The database is in WAL mode. With ``synchronous=NORMAL`` (the default) a
commit is written to the WAL file but not fsynced: it survives the process
being killed (the data is in the OS page cache, and SQLite recovers the WAL
on the next open), not a power loss or kernel crash, which can lose the last
commits since the latest checkpoint. ``synchronous="FULL"`` fsyncs the WAL on
every commit and survives power loss too, at the cost of an fsync per tick.
Autosave: a background thread checkpoints the WAL into the database file
every ``autosave`` seconds (fsynced even with NORMAL), which bounds both the
WAL's size and what a power loss can take; the tick never waits for a disk
flush.

Tables
------
``players(id, balance, earnings, paid_tick)``, ``purchases(id, player,
amount, item, tick)`` (the journal of purchases), ``ledger(seq, player,
tick, kind, amount, purchase)`` (every balance change: grant, income,
purchase) and ``meta(key, value)``. A player's balance always equals the sum
of their ledger, and each purchase has its ledger entry of ``-amount``.

Save on leave, save-all on stop
-------------------------------
A leaving player's account is written by the tick's commit, after which the
economy forgets it; a returning player is loaded back (``load_accounts``).
``stop`` -- graceful, and on the emergency path, which also stops systems --
commits what is queued, rewrites every account in memory, checkpoints the WAL
(``TRUNCATE``: everything is in the fsynced database file) and closes.

Restore and reconcile
---------------------
Restore happens before start, and a snapshot may be older than the database
(after ``kill -9`` the periodic snapshot lags the per-tick commits). The
database is the durable truth for money and items; snapshots carry only what
is not durable (random streams, cursors, counters). ``start`` opens the
database and calls ``Economy.attach_store``, which drops whatever the
snapshot had queued (never acknowledged; either committed already or lost),
continues ledger and purchase ids after the database's last ones, and reloads
every online player's account from it (items are counted from the purchases
journal). The tick count continues from the snapshot, so when it is older
than the database the ticks in between are simulated again, on top of the
committed money: nothing acknowledged is ever rolled back.

Cross-check at start: the ack log, the snapshot and the database
----------------------------------------------------------------
Before it opens the database for writing, a datastore continuing a world
(it was restored from a snapshot) checks, read-only, that the database still
holds what was promised: every purchase in the ack log is in ``purchases``
with the same player, amount, tick and item; the ack log has at least the
acknowledgements the snapshot counted; and the database's last committed
tick is not older than the snapshot's. A database emptied, replaced by an old
copy or rewritten behind its back fails that check, and ``start`` raises
:class:`supervisor.StartRefused` with one line (``supervisor run`` exits 2),
leaving every file as it was. An operator who accepts the loss sets
``[systems.datastore] accept_data_loss = true``: the run starts from what
the database holds, logs ``datastore.data_loss`` with the figures, and new
purchase ids continue after the highest acknowledged one, so no id a player
was given is ever reused.

A new world (nothing restored: ``supervisor run --fresh``, or the first run)
never merges into an earlier world's database: if the database or the ack
log already hold data, they (with the ``-wal`` and ``-shm`` files) are moved
into a new ``aside-<UTC stamp>-<random>/`` folder beside the database, the
way ``--fresh`` moves old snapshots aside, and ``datastore.moved_aside``
names it. Nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import trio

from supervisor import Context, Phase, StartRefused

from ._datastore_acks import CHUNK as _CHUNK
from ._datastore_acks import Steps, ack_lines, exhaust, open_ack_log, running
from ._datastore_pg import (
    PgBackend,
    check_acks,
    check_schema,
    check_url,
    describe_url,
    refusing,
    set_aside,
)
from ._datastore_sqlite import SCHEMA, audit, check_against_acks, checkpoint_and_close, rollback
from .economy import Batch, StoredAccount

if TYPE_CHECKING:
    from .economy import Economy

__all__ = ["SCHEMA", "Datastore", "audit"]

T = TypeVar("T")

#: Online players up to which the economy's reload at start runs on the loop
#: thread: a few ms. Above, in a thread (see ``start``).
_INLINE_RELOAD = 5_000

#: Seconds a commit may wait (PostgreSQL) before the datastore says degraded.
_SLOW_ACK = 1.0


_INSERT_LEDGER = "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_PURCHASE = "INSERT INTO purchases VALUES (?, ?, ?, ?, ?)"
_UPSERT_PLAYER = (
    "INSERT INTO players VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " balance = excluded.balance, earnings = excluded.earnings, paid_tick = excluded.paid_tick"
)
#: ``meta`` key: how many ack log lines an operator accepted as lost (``accept_data_loss``).
_ACCEPTED = "acks_accepted"
_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


async def _sliced(steps: Steps[T]) -> T:
    """Run ``steps`` on the loop thread, letting the loop run between two; their result."""
    result: list[T] = []
    for _ in running(steps, result):
        await trio.lowlevel.checkpoint()
    return result[0]


def _synchronous(value: Any) -> str:
    text = str(value).upper()
    if text not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {value!r}")
    return text


@attrs.define(eq=False)
class Datastore:
    """Player data in SQLite (WAL), committed once a tick; critical.

    Args:
        path: the database file; its folder is created. None (the default):
            ``world.sqlite3`` in the supervisor's state folder (``ctx.state_dir``).
        synchronous: ``"NORMAL"`` (survives a killed process) or ``"FULL"``
            (survives power loss too; an fsync per commit).
        autosave: seconds between WAL checkpoints on a background thread (0: SQLite's own).
        ack_log: the acknowledgement log; None: ``path`` with ``.acks`` (with
            ``url``: ``world.acks`` in the state folder); "": none.
        accept_data_loss: start even when the database lost acknowledged
            purchases (see "Cross-check at start"); the loss is logged.
        url: ``postgresql://...``: keep the world in PostgreSQL instead
            (``path``, ``synchronous`` and ``autosave`` then do not apply).
        schema: the PostgreSQL schema holding this world's tables.
        max_pending: with ``url``, purchases awaiting their ack past which new
            ones are refused (``blocked:datastore_backlog``).
        drain_timeout: with ``url``, seconds a stop waits for the last commits.
    """

    path: str | None = None
    synchronous: str = attrs.field(default="NORMAL", converter=_synchronous)
    autosave: float = 10.0
    ack_log: str | None = None
    accept_data_loss: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    url: str | None = None
    schema: str = attrs.field(default="world", converter=check_schema)
    max_pending: int = 50_000
    drain_timeout: float = 1.5
    name: str = "datastore"

    critical: ClassVar[bool] = True
    depends_on: ClassVar[tuple[str, ...]] = ("economy",)
    #: After the other systems: purchases made anywhere in the tick commit with it.
    priority: ClassVar[int] = 100

    commits: int = attrs.field(init=False, default=0)
    rows_written: int = attrs.field(init=False, default=0)
    acks_written: int = attrs.field(init=False, default=0)
    last_commit_tick: int = attrs.field(init=False, default=-1)
    autosaves: int = attrs.field(init=False, default=0)
    autosave_error: str | None = attrs.field(init=False, default=None)
    #: The highest purchase id in the ack log, read at start: ids continue after it.
    acked_max_id: int = attrs.field(init=False, default=0)

    _conn: sqlite3.Connection | None = attrs.field(init=False, default=None)
    _ack_fd: int | None = attrs.field(init=False, default=None)
    _economy: Economy | None = attrs.field(init=False, default=None)
    _held: Batch | None = attrs.field(init=False, default=None)
    _started: bool = attrs.field(init=False, default=False)
    _halt: threading.Event = attrs.field(init=False, factory=threading.Event)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _log: Any = attrs.field(init=False, default=None)
    _restored: bool = attrs.field(init=False, default=False)
    _pg: PgBackend | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.autosave < 0:
            raise ValueError(f"autosave must be >= 0 seconds, got {self.autosave!r}")
        if self.url is not None:
            check_url(self.url)
        if self.max_pending < 1 or not 0 < self.drain_timeout <= 3600:
            raise ValueError("max_pending must be >= 1 and drain_timeout within (0, 3600] s")

    @property
    def ack_path(self) -> Path | None:
        """Where acknowledgements are appended (None: not logged)."""
        if self.ack_log == "":
            return None
        if self.ack_log is not None:
            return Path(self.ack_log)
        return Path(self._require_path() + ".acks")

    def _require_path(self) -> str:
        if self.path is None:
            raise RuntimeError("the datastore has no path until it starts (ctx.state_dir)")
        return self.path

    # ------------------------------------------------------------------ hooks

    async def start(self, ctx: Context) -> None:
        """Check, open and reload, never holding the loop thread for long.

        A sync hook longer than the watchdog's ``kill_timeout`` (1 s) is
        interrupted, and so is one step of an async hook (the code between two
        awaits). A resumed world's start is seconds of work at 100,000 players:
        checking every line of the ack log against the database, then the
        economy reading every online account back and rebuilding it. The
        check runs in a thread on PostgreSQL (with the network, bounded by the
        start deadline and libpq's timeouts), and on SQLite on the loop thread
        in slices of ``CHUNK`` lines with a checkpoint between two; the reload,
        above ``_INLINE_RELOAD`` players, in a thread. Small worlds stay on the
        loop thread, where a test's ``MockClock`` can run them: waiting for a
        thread, it would jump straight to the start deadline.
        """
        began = time.monotonic()
        if self.url is not None and self.ack_log is None:
            self.ack_log = str(ctx.state_dir / "world.acks")
        if self.path is None:
            self.path = str(ctx.state_dir / "world.sqlite3")
        self._log = ctx.log
        self._economy = ctx.system("economy")
        # A batch held back by a failed commit before a stop was never
        # acknowledged; the database, reloaded below, is the truth.
        self._held = None
        continuing = self._restored or self.last_commit_tick >= 0
        self._restored = False
        if self.url is not None:
            stored_tick = await trio.to_thread.run_sync(exhaust, self._prepare(ctx, continuing))
        else:
            stored_tick = await _sliced(self._prepare(ctx, continuing))
        self._started = True
        assert self._economy is not None
        if len(ctx.system("players").online) > _INLINE_RELOAD:
            # Reading every online account back and rebuilding it (its income
            # rate too) is seconds at 100,000 players: a thread, the economy's
            # only user until every start is done (nothing ticks before).
            await trio.to_thread.run_sync(self._economy.attach_store, self, ctx.tick)
        else:
            self._economy.attach_store(self, ctx.tick)
        if stored_tick is not None and stored_tick >= ctx.tick:
            # Tick ``stored_tick`` was committed, yet the world resumes at an
            # earlier one: the snapshot lags the database (a killed process).
            ctx.log.warning(
                "datastore.replay",
                database_tick=stored_tick,
                resumed_tick=ctx.tick,
                detail="the snapshot is older than the database: balances come from the database",
            )
        if self._pg is not None:
            self._report_old_owners(ctx, self._pg)
            self._economy.add_guard(self._backpressure)
        elif self.autosave > 0:
            self._halt.clear()
            self._thread = threading.Thread(
                target=self._autosave_loop, name=f"{self.name}-autosave", daemon=True
            )
            self._thread.start()
        ctx.log.info(
            "datastore.started",
            seconds=round(time.monotonic() - began, 3),
            accounts=len(self._economy.accounts),
        )

    def _prepare(self, ctx: Context, continuing: bool) -> Steps[int | None]:
        """Cross-check or set aside, then open; the database's last committed tick. In slices."""
        accepted = None
        if continuing:
            accepted = yield from self._cross_check(ctx)
        else:
            self._set_aside_old_world(ctx)
        if self.url is not None:
            return self._open_pg(accepted)
        self._open()
        if accepted is not None:
            # Recorded, so the next start checks only what came after the accepted loss.
            self._require().execute(_SET_META, (_ACCEPTED, accepted))
        return self._meta("last_tick")

    def tick(self, ctx: Context) -> None:
        if self._pg is not None:
            self._tick_pg(ctx)
        else:
            self._flush(ctx.tick)

    def _flush(self, tick: int) -> None:
        """Commit what the economy queued (and any batch held back by a failure), then ack."""
        assert self._economy is not None
        batch = self._economy.drain()
        if self._held is not None:
            batch = self._held.merge(batch)
        if batch is None:
            return
        # Held until committed: a failed commit is retried, whole, with the next tick's.
        self._held = batch
        self._commit(batch, tick)
        self._held = None
        self._acknowledge(batch, tick)

    async def stop(self, ctx: Context) -> None:
        """Save everything, then close.

        Both ways first commit what is queued (acknowledging it as any tick
        does): from then on every change is durable against a killed
        process. A graceful stop then rewrites every account in memory
        (save-all), checkpoints the WAL into the fsynced database file and
        closes. On the emergency path, whose clock runs until the snapshot
        is written, every account is already saved by the per-tick commits:
        the checkpoint and close (an fsync) go to a thread of their own.
        """
        if self._pg is not None:
            await self._stop_pg(ctx)
            return
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        economy = self._economy
        emergency = ctx.phase is Phase.EMERGENCY_SHUTDOWN
        try:
            if self._conn is not None and economy is not None:
                # Stop runs after the last tick (``ctx.tick`` already names the
                # next one): what is still queued belongs to that last tick.
                self._flush(max(ctx.tick - 1, 0))
                if not emergency:
                    self._save_all(economy)
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            if economy is not None:
                economy.detach_store()
            if emergency and self._conn is not None:
                conn, self._conn = self._conn, None
                # Not a daemon: an exiting process still finishes the checkpoint.
                threading.Thread(target=checkpoint_and_close, args=(conn,)).start()
            self._close()
            self._started = False

    def recover(self, ctx: Context, error: Any) -> None:
        """Roll back a half-done transaction; reopen a broken connection. The batch is kept.

        With PostgreSQL the tick does no I/O that could fail; the worker retries by itself.
        """
        if self.url is not None:
            return
        conn = self._conn
        if conn is not None:
            rollback(conn)
            try:
                conn.execute("SELECT 1").fetchall()
            except sqlite3.Error:
                self._close()
        if self._conn is None:
            self._open()

    def health(self) -> str:
        pg = self._pg
        if pg is not None:
            if pg.fenced is not None:
                return "unhealthy"
            slow = pg.ack_wait(time.monotonic()) > _SLOW_ACK
            return "degraded" if pg.outage_since is not None or pg.ack_error or slow else "healthy"
        if self._started and self._conn is None:
            return "unhealthy"
        if self._held is not None or self.autosave_error is not None:
            return "degraded"
        return "healthy"

    def snapshot(self) -> dict[str, Any]:
        return {
            "commits": self.commits,
            "rows_written": self.rows_written,
            "acks_written": self.acks_written,
            "last_commit_tick": self.last_commit_tick,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._restored = True
        self.commits = int(state["commits"])
        self.rows_written = int(state["rows_written"])
        self.acks_written = int(state["acks_written"])
        self.last_commit_tick = int(state["last_commit_tick"])

    # ------------------------------------------------------------------ the AccountStore side

    def load_accounts(self, pids: Sequence[int]) -> dict[int, StoredAccount]:
        """Accounts of ``pids`` in the database, with their items counted from the journal."""
        if self._pg is not None:
            return self._pg.load_accounts(pids)
        conn = self._require()
        found: dict[int, list[Any]] = {}
        for i in range(0, len(pids), _CHUNK):
            chunk = pids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))  # only placeholders are formatted into the SQL
            for pid, balance, earnings, paid in conn.execute(
                f"SELECT id, balance, earnings, paid_tick FROM players WHERE id IN ({marks})",
                chunk,
            ):
                found[pid] = [balance, earnings, paid, {}]
            for pid, item, count in conn.execute(
                f"SELECT player, item, COUNT(*) FROM purchases WHERE player IN ({marks})"
                " AND item != '' GROUP BY player, item",
                chunk,
            ):
                if pid in found:
                    found[pid][3][item] = count
        return {pid: StoredAccount(b, e, p, items) for pid, (b, e, p, items) in found.items()}

    def last_ids(self) -> tuple[int, int]:
        """The last ledger seq and purchase id (an acknowledged id counts, even if lost)."""
        if self._pg is not None:
            return self._pg.last_ids[0], max(self._pg.last_ids[1], self.acked_max_id)
        conn = self._require()
        (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()
        (pid,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM purchases").fetchone()
        return int(seq), max(int(pid), self.acked_max_id)

    # ------------------------------------------------------------------ start-up checks

    def _cross_check(self, ctx: Context) -> Steps[int | None]:
        """Refuse (or, with ``accept_data_loss``, log) a database that lost acknowledged data.

        Read-only and before :meth:`_open`, so a refusal changes no file.

        Returns:
            The ack log lines to record as accepted when a loss was accepted, else None.

        Raises:
            StartRefused: the database contradicts the ack log or the snapshot.
        """
        path = describe_url(self.url) if self.url is not None else self._require_path()
        if self.url is not None:
            with refusing(self.url, self.schema):
                check = check_acks(self.url, self.schema, self.ack_path)
        else:
            check = yield from check_against_acks(path, self.ack_path)
        self.acked_max_id = check.max_id
        problems = []
        if check.missing:
            problems.append(
                f"{check.missing:,} of {check.acks:,} acknowledged purchases are missing or"
                f" different (first: id {check.first_missing})"
            )
        # On PostgreSQL a world moves between machines (``run --resume-from``) and
        # each keeps its own ack log: the snapshot's count spans them all. Each
        # local line is still checked against the database, and its last tick.
        if check.acks < self.acks_written and self.url is None:
            problems.append(
                f"the ack log holds {check.acks:,} acknowledgements, the snapshot counted"
                f" {self.acks_written:,}"
            )
        if self.last_commit_tick >= 0 and (check.db_tick or -1) < self.last_commit_tick:
            last = "none" if check.db_tick is None else f"tick {check.db_tick}"
            problems.append(
                f"its last commit is {last}, the snapshot saw one at tick {self.last_commit_tick}"
            )
        if not problems:
            ctx.log.info("datastore.verified", acknowledged=check.acks, database_tick=check.db_tick)
            return None
        if not self.accept_data_loss:
            raise StartRefused(
                f"the database {path} lost acknowledged data: {'; '.join(problems)}. Restore it"
                " from a backup, or set [systems.datastore] accept_data_loss = true to start"
                " from what it holds (the loss is logged)"
            )
        ctx.log.error(
            "datastore.data_loss",
            database=path,
            problems=problems,
            missing=check.missing,
            acknowledged=check.acks,
            detail="accept_data_loss = true: starting from what the database holds",
        )
        return check.acks

    def _set_aside_old_world(self, ctx: Context) -> None:
        """A new world: move an earlier world's database and ack log aside, never into it."""
        db = Path(self._require_path())
        files = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
        if self.url is not None:
            with refusing(self.url, self.schema):
                schema = set_aside(self.url, self.schema)
            if schema is not None:
                ctx.log.warning("datastore.moved_aside", schema=schema, detail="a new world")
            files = []
        ack = self.ack_path
        if ack is not None:
            files.append(ack)
        old = [f for f in files if f.exists() and f.stat().st_size > 0]
        if not any(f in (db, ack) for f in old):
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        # mkdtemp: a new folder with a unique name, even for two moves in one second.
        aside = Path(tempfile.mkdtemp(prefix=f"aside-{stamp}-", dir=old[0].parent))
        for f in old:
            os.rename(f, aside / f.name)
        ctx.log.warning(
            "datastore.moved_aside",
            folder=str(aside),
            files=[f.name for f in old],
            detail="a new world: the earlier world's database is kept there, not reused",
        )

    # ------------------------------------------------------------------ PostgreSQL

    def _open_pg(self, accepted: int | None) -> int | None:
        """Open the ack log, connect, migrate, take the fencing token; the stored last tick."""
        ack = self.ack_path
        if ack is not None and self._ack_fd is None:
            self._ack_fd = open_ack_log(ack)
        pg = PgBackend(self.url or "", self.schema, self._ack_fd, self._count_acks)
        with refusing(pg.url, pg.schema):
            pg.open(accepted)
        self._pg = pg
        return pg.stored_tick

    @staticmethod
    def _report_old_owners(ctx: Context, pg: PgBackend) -> None:
        """Log the old owners' sessions this start ended, or why it could not."""
        if pg.old_owners_ended:
            ctx.log.warning(
                "datastore.old_owner_ended",
                sessions=pg.old_owners_ended,
                detail="an earlier owner of this world was still connected: its"
                " uncommitted transaction was rolled back, it is fenced",
            )
        if pg.end_error is not None:
            ctx.log.warning(
                "datastore.old_owner_not_ended",
                error=pg.end_error,
                detail="commits may wait up to 5 s for a frozen earlier owner's locks",
            )

    def _count_acks(self, n: int) -> None:
        self.acks_written += n  # only the worker writes it while PostgreSQL is in use

    def _backpressure(self, _player: int, _amount: int, _item: str, _now: float) -> str | None:
        """The economy's guard: refuse purchases while too many await their ack."""
        pg = self._pg
        return "datastore_backlog" if pg is not None and pg.backlog >= self.max_pending else None

    def _tick_pg(self, ctx: Context) -> None:
        """Hand back what the worker committed, queue this tick's batch; no I/O."""
        pg, economy = self._pg, self._economy
        assert pg is not None
        assert economy is not None
        for done, tick in pg.finished():
            self._applied(done, tick, ctx.tick)
        pg.report(ctx)
        batch = economy.drain()
        if batch is not None:
            pg.submit(batch, economy.rows(batch.dirty), ctx.tick)

    def _applied(self, batch: Batch, tick: int, now: int) -> None:
        """``batch`` (of ``tick``) is committed: remember its leavers' accounts, then ack."""
        pg, economy = self._pg, self._economy
        assert pg is not None
        assert economy is not None
        for pid in batch.leavers:
            acct = economy.accounts.get(pid)
            if acct is not None and not acct.online:
                pg.offline[pid] = StoredAccount(
                    acct.balance, acct.earnings, acct.paid_tick, dict(acct.items)
                )
        self.commits += 1
        self.rows_written += len(batch.ledger) + len(batch.purchases) + len(batch.dirty)
        self.last_commit_tick = max(self.last_commit_tick, tick)
        economy.committed(batch, now)

    async def _stop_pg(self, ctx: Context) -> None:
        """Queue the last batch (and, graceful, every account), wait for the worker, close.

        The waits run in a thread: within the stop deadline, not the watchdog's 1 s.
        """
        pg, economy = self._pg, self._economy
        assert pg is not None
        assert economy is not None
        last = max(ctx.tick - 1, 0)
        emergency = ctx.phase is Phase.EMERGENCY_SHUTDOWN
        try:
            batch = economy.drain()
            if batch is not None:
                pg.submit(batch, economy.rows(batch.dirty), last)
            if not emergency:
                pg.submit(Batch([], [], set(), []), economy.rows(list(economy.accounts)), last)
            # Within the supervisor's stop_timeout (2 s by default); an emergency is hurried.
            timeout = min(self.drain_timeout, 1.0) if emergency else self.drain_timeout
            if not await trio.to_thread.run_sync(pg.drain, timeout):
                ctx.log.error(
                    "datastore.stop_unfinished",
                    waiting=pg.backlog,
                    error=pg.error or pg.fenced,
                    detail="never committed, so never acknowledged",
                )
            for done, tick in pg.finished():
                self._applied(done, tick, last)
        finally:
            economy.remove_guard(self._backpressure)
            economy.detach_store()
            pg.close()  # a worker stuck on a frozen server is left to exit by itself
            self._pg = None
            self._close()
            self._started = False

    # ------------------------------------------------------------------ inside

    def _open(self) -> None:
        path = Path(self._require_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False only so that the emergency stop can hand the
        # connection to a closing thread; it is never used by two threads at once.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            # NORMAL in WAL mode: a commit survives the process being killed,
            # not a power loss (see the module docstring); FULL survives both.
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=2000")
            if self.autosave > 0:
                # Checkpoints (and their fsyncs) happen on the autosave thread, not in a tick.
                conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        ack = self.ack_path
        if ack is not None and self._ack_fd is None:
            self._ack_fd = open_ack_log(ack)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._ack_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._ack_fd)
            self._ack_fd = None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the datastore {self.path} is not open")
        return self._conn

    def _meta(self, key: str) -> int | None:
        row = self._require().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _commit(self, batch: Batch, tick: int) -> None:
        """Write ``batch`` in one transaction; on any failure nothing of it is written."""
        conn = self._conn
        if conn is None:
            self._open()
            conn = self._require()
        assert self._economy is not None
        players = self._economy.rows(batch.dirty)
        conn.execute("BEGIN")
        try:
            if batch.ledger:
                conn.executemany(_INSERT_LEDGER, batch.ledger)
            if batch.purchases:
                conn.executemany(
                    _INSERT_PURCHASE,
                    [(p.id, p.player, p.amount, p.item, p.tick) for p in batch.purchases],
                )
            if players:
                conn.executemany(_UPSERT_PLAYER, players)
            conn.execute(_SET_META, ("last_tick", tick))
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self.commits += 1
        self.rows_written += len(batch.ledger) + len(batch.purchases) + len(players)
        self.last_commit_tick = tick

    def _acknowledge(self, batch: Batch, tick: int) -> None:
        """After the commit: the ack log first (the players' replies), then the economy."""
        assert self._economy is not None
        try:
            if batch.purchases and self._ack_fd is not None:
                os.write(self._ack_fd, ack_lines(batch))
                self.acks_written += len(batch.purchases)
        finally:
            self._economy.committed(batch, tick)

    def _save_all(self, economy: Economy) -> None:
        conn = self._require()
        rows = economy.rows(list(economy.accounts))
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPSERT_PLAYER, rows)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self.rows_written += len(rows)

    def _autosave_loop(self) -> None:
        """Checkpoint the WAL every ``autosave`` seconds, on this thread's own connection."""
        try:
            conn = sqlite3.connect(self._require_path(), isolation_level=None)
        except sqlite3.Error as exc:
            self.autosave_error = str(exc)
            return
        try:
            while not self._halt.wait(self.autosave):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    self.autosave_error = str(exc)
                else:
                    self.autosaves += 1
                    self.autosave_error = None
        finally:
            conn.close()
