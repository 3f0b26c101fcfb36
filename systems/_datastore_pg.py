"""The datastore's PostgreSQL backend: group commit on a worker thread, acks after COMMIT.

Why a worker thread and psycopg 3's sync connection
---------------------------------------------------
The tick must never wait on the network. psycopg 3's async connection runs
on asyncio only (it needs an asyncio loop; the supervisor runs on trio), so
the usual pairing beside trio is what this module does: one sync
``psycopg.Connection`` owned by one worker thread. The tick only puts its
commit on a ``queue.SimpleQueue`` and collects what the worker finished from
a deque, taking no lock the worker may hold (no I/O); the worker does every
connect, COMMIT and retry.

The tick's side (:meth:`PgBackend.submit`, :meth:`PgBackend.finished`)
----------------------------------------------------------------------
At the end of each tick the datastore drains the economy's batch and the
account rows it changed (computed on the tick, where the accounts live) and
submits them with a sequence number. The worker takes *everything* queued,
writes it in ONE transaction (several ticks merge into one commit when the
database was slow: group commit adapts), COMMITs, then appends the ack log
lines and hands the items back; the next tick calls
``Economy.committed`` for them (on the tick thread, where the economy
lives). So a purchase is acknowledged only after its COMMIT returned.

What the worker costs the tick is the GIL: whenever it runs Python while a
tick runs, the tick waits (up to the interpreter's 5 ms switch interval,
longer when the OS is slow to schedule the worker). Hence no lock shared
with the tick, and few replies a commit (see ``_COPY``), each of which wakes
the worker.

Outage and back-pressure
------------------------
A failed connect or commit marks an outage (``outage_since``, the error) and
the worker retries the same items, with new ones added, after a capped
backoff (50 ms doubling to 1 s); acks wait, the tick goes on. The datastore
reports the gauges ``datastore_backlog`` (purchases awaiting their ack),
``datastore_outage`` (seconds the database has been failing, 0 when fine)
and ``datastore_ack_wait`` (seconds the oldest commit has waited: a hung
server raises no error, this shows it), says ``degraded`` in health while
either lasts (the wait past 1 s), and logs the outage's start and end (once
each). A statement times out after 5 s on the server, and a vanished host
after 10 s of unacknowledged data (``tcp_user_timeout``), so the worker
comes back to retry; a server that is alive but frozen holds the worker
until it answers (``tests/test_pg_datastore.py`` freezes one), which only
makes the acks wait. Past ``max_pending`` purchases awaiting their ack, a guard
refuses new purchases (``blocked:datastore_backlog``): what a player was not
told was bought cannot be lost, and memory stays bounded by that limit plus
the income ledger, which grows by ``online / payday`` entries a tick.

A COMMIT whose reply was lost (the connection died after the server
committed) must not be written twice: every commit stores the last sequence
number it holds (``meta.commit_seq``), and after each reconnect the worker
reads it back and treats the items up to it as committed.

Fencing: one writer per world
-----------------------------
Opening the world increments ``meta.owner`` and keeps the value (the
fencing token). Every commit checks ``owner`` with ``FOR UPDATE`` (the
``fence`` function, before its writes, in the same transaction); a
different value means another supervisor opened this world since (a
resume elsewhere, a failover): the worker stops without committing, and the
datastore asks for an emergency stop. So two supervisors never both write
one world, even if the first comes back after being declared dead.

Before taking the token, the new owner terminates the old owner's sessions
(the writer's connection is tagged ``application_name = supervisor:<schema>``;
:func:`end_old_owners`): an owner frozen in the middle of a commit would
otherwise hold its row locks, and the new owner's commits would wait, until
the server's 5 s timeouts end its transaction. The datastore logs
``datastore.old_owner_ended`` with how many.

Schema and migrations
---------------------
Every table lives in the world's own schema (``schema``, default
``world``). :data:`MIGRATIONS` are numbered; :func:`migrate` applies the
missing ones in order, each with its row in ``schema_migrations``, in one
transaction under an advisory lock (two supervisors starting at once apply
each migration once), and refuses a database migrated by newer code.

Returning players
-----------------
``Economy`` loads a returning player's account during the tick that sees
them join. Reading it from PostgreSQL then would put the network on the
tick, so the backend keeps the last stored state of every offline account
in memory (read once at start, updated when a leaver's save is committed):
the same order of memory the ``players`` system already spends on the ids
of every player it has seen.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs

from supervisor import Context, StartRefused

from ._datastore_acks import AckCheck, Lookup, ack_lines, compare_acks
from .economy import Batch, StoredAccount

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

__all__ = [
    "MIGRATIONS",
    "Fenced",
    "MigrationError",
    "PgBackend",
    "check_acks",
    "check_schema",
    "check_url",
    "describe_url",
    "end_old_owners",
    "migrate",
    "refusing",
    "set_aside",
    "writer_tag",
]

#: ``(version, name, sql)``: applied once each, in order. Append; never edit a shipped one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "tables",
        """
        CREATE TABLE players (
            id BIGINT PRIMARY KEY, balance BIGINT NOT NULL,
            earnings BIGINT NOT NULL, paid_tick BIGINT NOT NULL);
        CREATE TABLE purchases (
            id BIGINT PRIMARY KEY, player BIGINT NOT NULL, amount BIGINT NOT NULL,
            item TEXT NOT NULL, tick BIGINT NOT NULL);
        CREATE TABLE ledger (
            seq BIGINT PRIMARY KEY, player BIGINT NOT NULL, tick BIGINT NOT NULL,
            kind TEXT NOT NULL, amount BIGINT NOT NULL, purchase BIGINT);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
        """,
    ),
    (2, "purchases by player", "CREATE INDEX purchases_by_player ON purchases (player)"),
    (3, "ledger by player", "CREATE INDEX ledger_by_player ON ledger (player)"),
    (
        4,
        "fence",
        # The fencing check inside the commit's one multi-statement query (see
        # ``_FINISH``): no round trip back to Python between the check and the writes.
        """
        CREATE FUNCTION fence(token BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
        DECLARE current BIGINT;
        BEGIN
            SELECT value INTO current FROM meta WHERE key = 'owner' FOR UPDATE;
            IF current IS DISTINCT FROM token THEN
                RAISE EXCEPTION 'another supervisor opened this world (owner %, ours %):'
                    ' this one stops writing it', current, token USING ERRCODE = 'SV001';
            END IF;
        END $$
        """,
    ),
)

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,47}")
#: A commit's rows all go in with ONE ``COPY`` (formatted in C, about 12x faster
#: than ``executemany``) into a per-connection staging table, then ONE
#: multi-statement query (``_FINISH``) checks the fence, moves them into their
#: tables and commits. Four round trips a commit instead of sixteen: each reply
#: wakes the worker, which then takes the GIL from the tick, so fewer replies
#: (and less Python between them) is less of the worker inside the tick.
#: Columns: ``tbl`` (0 ledger, 1 purchase, 2 player), then each table's own.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS batch_in (tbl SMALLINT NOT NULL, a BIGINT, b BIGINT,"
    " c BIGINT, k TEXT, d BIGINT, e BIGINT) ON COMMIT DELETE ROWS"
)
_COPY = "COPY batch_in (tbl, a, b, c, k, d, e) FROM STDIN"
#: Formatted with three integers (the token, the last tick and sequence number): no input.
_FINISH = """SELECT fence({token});
INSERT INTO ledger (seq, player, tick, kind, amount, purchase)
    SELECT a, b, c, k, d, e FROM batch_in WHERE tbl = 0;
INSERT INTO purchases (id, player, amount, item, tick)
    SELECT a, b, c, k, d FROM batch_in WHERE tbl = 1;
INSERT INTO players (id, balance, earnings, paid_tick)
    SELECT a, b, c, d FROM batch_in WHERE tbl = 2
    ON CONFLICT (id) DO UPDATE SET balance = excluded.balance,
    earnings = excluded.earnings, paid_tick = excluded.paid_tick;
INSERT INTO meta VALUES ('last_tick', {tick}), ('commit_seq', {seq})
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
COMMIT"""
#: The SQLSTATE ``fence()`` raises.
_FENCED = "SV001"
_SET_META = (
    "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
#: Seconds ``close`` waits for the worker to leave.
_JOIN = 0.5
#: The worker thread's nice value (the tick thread keeps the process's).
_NICE = 10
#: Backoff between two attempts while the database is unreachable, in seconds.
_BACKOFF = (0.05, 1.0)


class MigrationError(RuntimeError):
    """The database's schema is newer than this code knows (or a migration failed)."""


class Fenced(RuntimeError):
    """Another supervisor opened this world since: this one must not write it any more."""


def check_schema(name: str) -> str:
    """``name`` if it is a plain lower-case identifier (it is formatted into SQL)."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(
            f"schema must be a lower-case identifier of at most 48 characters, got {name!r}"
        )
    return name


def _psycopg() -> ModuleType:
    """psycopg, imported on first use: a world on SQLite never loads it (0.25 s, a few MB)."""
    import psycopg  # noqa: PLC0415 - see the docstring

    return psycopg


@contextlib.contextmanager
def refusing(url: str, schema: str) -> Iterator[None]:
    """A start-up step: the database unreachable or too new becomes a one-line refusal."""
    psycopg = _psycopg()
    try:
        yield
    except (psycopg.Error, MigrationError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise StartRefused(f"the database {describe_url(url)} (schema {schema}): {first}") from exc


def check_url(url: object) -> str:
    """``url`` if libpq can parse it and it holds no password.

    Imports psycopg now, while the config is built, so the import (a quarter
    of a second) is not paid in ``start``, and a malformed URL is a config
    error. A password in the URL would be printed by ``supervisor config
    show`` with the rest of the system's table: libpq reads it from
    ``PGPASSWORD`` or a ``~/.pgpass`` file instead. No message repeats the URL.
    """
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("url must be a postgresql:// URL (or absent: SQLite)")
    psycopg = _psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("url is not a valid PostgreSQL connection URL") from None
    if parts.get("password"):
        raise ValueError(
            "url must not hold a password (config show would print it): set PGPASSWORD"
            " or use a ~/.pgpass file, which libpq reads"
        )
    return url


def describe_url(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    psycopg = _psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable url)"
    host, port = parts.get("host", "localhost"), parts.get("port", "5432")
    return f"postgresql://{parts.get('user', '')}@{host}:{port}/{parts.get('dbname', '')}"


def connect(url: str, schema: str, *, writer: bool = False) -> psycopg.Connection[Any]:
    """A connection with bounded waits, its ``search_path`` on the world's schema.

    ``writer``: the world's writer (the worker's), tagged with :func:`writer_tag`
    as its ``application_name`` (whatever the URL says) so that the next owner
    can find and end it (:func:`end_old_owners`).
    """
    pg = _psycopg()
    options: dict[str, Any] = {"connect_timeout": 5, "tcp_user_timeout": 10_000}
    options.update(pg.conninfo.conninfo_to_dict(url))
    if writer:
        options["application_name"] = writer_tag(schema)
    # A statement that hangs (a half-open connection) fails instead of holding the
    # worker; a frozen supervisor's open transaction (and its lock on ``owner``) is
    # ended by the server instead of blocking the supervisor taking its world over.
    ours = f"-c search_path={schema} -c statement_timeout=5000"
    ours += " -c idle_in_transaction_session_timeout=5000"
    options["options"] = f"{options.get('options', '')} {ours}".strip()
    # Autocommit: ``conn.transaction()`` is then always a real BEGIN ... COMMIT.
    conn: psycopg.Connection[Any] = pg.connect(**options, autocommit=True)
    return conn


def writer_tag(schema: str) -> str:
    """The ``application_name`` of the world's writer sessions (at most 59 characters)."""
    return f"supervisor:{schema}"


def end_old_owners(conn: psycopg.Connection[Any], schema: str) -> int:
    """Terminate every other writer session of the world; how many were ended.

    Called by a new owner before it takes the fencing token. An old owner
    frozen in the middle of a commit (SIGSTOP, a VM paused, a long GC) holds
    its transaction's row locks -- the ``owner`` row, the keys it inserted,
    the accounts it updated -- until the server's statement or idle timeout
    ends it (5 s): the new owner's first commits would wait that long. Its
    backend is a live server process even while its client sleeps, so
    ``pg_terminate_backend`` ends it at once: the transaction rolls back (it
    was never committed, so never acknowledged), the locks go, and the old
    owner, when it wakes, finds its connection gone, reconnects, reads the
    new token and is fenced. The one-argument form (any server version): the
    ended backends release their locks within milliseconds, which taking the
    token then waits for.

    Raises:
        psycopg.errors.InsufficientPrivilege: the old sessions belong to
            another role (and this one has no ``pg_signal_backend``).
    """
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s"
        " AND pid <> pg_backend_pid()",
        (writer_tag(schema),),
    ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Apply the missing :data:`MIGRATIONS` to ``schema``; the versions applied now.

    Raises:
        MigrationError: the database holds a version this code does not know.
    """
    sql = _psycopg().sql
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"supervisor:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        known = {version for version, _, _ in MIGRATIONS}
        if done - known:
            raise MigrationError(
                f"the database schema {schema!r} has migration {max(done - known)}, newer than"
                f" this code's {max(known)}: run a newer supervisor, or another schema"
            )
        for version, name, text in MIGRATIONS:
            if version not in done:
                conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
                applied.append(version)
    return applied


@attrs.define(eq=False)
class _Item:
    """One tick's commit: its batch, the rows of its changed accounts, its sequence number."""

    seq: int
    tick: int
    batch: Batch
    rows: list[tuple[int, int, int, int]]
    #: ``time.monotonic()`` when the tick submitted it.
    submitted: float


@attrs.define(eq=False)
class PgBackend:
    """The worker, its queue and what the tick reads of it (see the module docstring)."""

    url: str
    schema: str
    ack_fd: int | None
    count_acks: Callable[[int], None]

    token: int = attrs.field(init=False, default=0)
    last_seq: int = attrs.field(init=False, default=0)
    last_ids: tuple[int, int] = attrs.field(init=False, default=(0, 0))
    stored_tick: int | None = attrs.field(init=False, default=None)
    offline: dict[int, StoredAccount] = attrs.field(init=False, factory=dict)
    #: Purchases submitted and not yet handed back (the back-pressure figure).
    backlog: int = attrs.field(init=False, default=0)
    outage_since: float | None = attrs.field(init=False, default=None)
    error: str | None = attrs.field(init=False, default=None)
    fenced: str | None = attrs.field(init=False, default=None)
    ack_error: str | None = attrs.field(init=False, default=None)
    #: Old owners' sessions ended by :meth:`open` (see :func:`end_old_owners`).
    old_owners_ended: int = attrs.field(init=False, default=0)
    #: Why they could not be ended (the new owner then waits for the server's timeouts).
    end_error: str | None = attrs.field(init=False, default=None)

    #: The tick's commits to the worker (None: leave). ``put`` never blocks the tick.
    _inbox: queue.SimpleQueue[_Item | None] = attrs.field(init=False, factory=queue.SimpleQueue)
    #: Submitted and not yet handed back, oldest first; the tick's own.
    _waiting: collections.deque[_Item] = attrs.field(init=False, factory=collections.deque)
    #: Committed by the worker, not yet handed back (the worker appends, the tick pops).
    _done: collections.deque[_Item] = attrs.field(init=False, factory=collections.deque)
    #: The sequence number of the last item the worker committed.
    _settled: int = attrs.field(init=False, default=0)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _conn: psycopg.Connection[Any] | None = attrs.field(init=False, default=None)
    _outage_logged: bool = attrs.field(init=False, default=False)
    #: Whether this connection has its ``players_in`` temporary table.
    _staging: bool = attrs.field(init=False, default=False)
    _fence_reported: bool = attrs.field(init=False, default=False)

    # ------------------------------------------------------------------ start (before ticking)

    def open(self, accepted: int | None) -> None:
        """Connect, migrate, take the fencing token, read what the tick will need; start the worker.

        Args:
            accepted: ack log lines to record as accepted lost (None: nothing to record).
        """
        conn = connect(self.url, self.schema, writer=True)
        try:
            migrate(conn, self.schema)
            try:
                self.old_owners_ended = end_old_owners(conn, self.schema)
            except _psycopg().errors.InsufficientPrivilege as exc:
                # Not fatal: the server's timeouts still end a frozen owner's transaction.
                self.end_error = str(exc).strip().splitlines()[0]
            with conn.transaction():
                # Taking the world waits for an old owner's transaction that
                # end_old_owners could not end: the server ends that within 5 s
                # (statement or idle timeout), so this one may wait longer.
                conn.execute("SET LOCAL statement_timeout = 20000")
                if accepted is not None:
                    conn.execute(_SET_META, ("acks_accepted", accepted))
                conn.execute(
                    "INSERT INTO meta VALUES ('owner', 1) ON CONFLICT (key)"
                    " DO UPDATE SET value = meta.value + 1"
                )
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone() or (0,)
                (pid,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM purchases").fetchone() or (
                    0,
                )
                self.offline = _load_accounts(conn)
        except BaseException:
            conn.close()
            raise
        self.token = int(meta["owner"])
        self.last_seq = int(meta.get("commit_seq", 0))
        self.stored_tick = None if "last_tick" not in meta else int(meta["last_tick"])
        self.last_ids = (int(seq), int(pid))
        self._conn = conn
        self._settled = self.last_seq
        self._thread = threading.Thread(target=self._work, name="datastore-pg", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the tick's side

    def submit(self, batch: Batch, rows: list[tuple[int, int, int, int]], tick: int) -> None:
        """Queue one tick's commit: no I/O, and no lock the worker could be holding.

        A tick blocked on a lock the worker holds gives up the GIL, and gets it
        back only when the worker, running Python, is made to drop it: after
        the interpreter's switch interval (5 ms). ``SimpleQueue.put`` never blocks.
        """
        self.last_seq += 1
        item = _Item(self.last_seq, tick, batch, rows, time.monotonic())
        self.backlog += len(batch.purchases)
        self._waiting.append(item)
        self._inbox.put(item)

    def finished(self) -> list[tuple[Batch, int]]:
        """The batches committed since the last call, oldest first, with their ticks (no lock)."""
        done = self._done
        if not done:
            return []
        items = []
        while done:  # only this thread pops; the worker only appends
            items.append(done.popleft())
        waiting = self._waiting
        for _ in items:
            waiting.popleft()
        self.backlog -= sum(len(i.batch.purchases) for i in items)
        return [(i.batch, i.tick) for i in items]

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every commit submitted (at stop); True when done."""
        deadline = time.monotonic() + timeout
        while self._settled < self.last_seq and self.fenced is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return self._settled >= self.last_seq

    def close(self) -> None:
        """Stop the worker (whatever is still queued was never acknowledged).

        The worker disconnects as it leaves. One still inside a call to a
        frozen server (it answers nothing) is not waited for longer than
        ``_JOIN`` seconds: a daemon thread, it ends with its call or the process.
        """
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=_JOIN)
            self._thread = None

    def report(self, ctx: Context) -> None:
        """Gauges every tick; a log line when an outage starts or ends; the fence, once."""
        if self.fenced is not None and not self._fence_reported:
            self._fence_reported = True
            ctx.log.error("datastore.fenced", detail=self.fenced)
            ctx.request_emergency(f"datastore fenced: {self.fenced}")
        since = self.outage_since
        if (since is not None) != self._outage_logged:
            self._outage_logged = since is not None
            if since is not None:
                ctx.log.error("datastore.outage", database=describe_url(self.url), error=self.error)
            else:
                ctx.log.warning("datastore.reconnected", database=describe_url(self.url))
        now = time.monotonic()
        ctx.report("datastore_backlog", self.backlog)
        ctx.report("datastore_outage", 0.0 if since is None else now - since)
        ctx.report("datastore_ack_wait", self.ack_wait(now))

    def ack_wait(self, now: float) -> float:
        """Seconds the oldest commit not yet done has waited (0: none waiting).

        A hung server raises no error (the kernel still acknowledges its TCP
        segments): this is what shows it.
        """
        try:
            return now - self._waiting[0].submitted
        except IndexError:
            return 0.0

    def load_accounts(self, pids: Sequence[int]) -> dict[int, StoredAccount]:
        offline = self.offline
        return {pid: offline[pid] for pid in pids if pid in offline}

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        # A lower CPU priority for this thread only (Linux: nice is per thread),
        # so that its wake-up, right in the tick's datastore step, does not
        # preempt the tick thread on a busy machine.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), _NICE))
        work: list[_Item] = []
        retry_at: float | None = None
        backoff = _BACKOFF[0]
        while self._collect(work, retry_at):
            try:
                committed = self._commit(work)
            except Fenced as exc:
                self.fenced = str(exc)
                break
            except Exception as exc:  # psycopg.Error, OSError...: an outage; retry
                self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"[:300]
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                self._disconnect()
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, _BACKOFF[1])
                continue
            retry_at = None
            backoff = _BACKOFF[0]
            self.outage_since = None
            self._finish(committed)
            del work[: len(committed)]
        self._disconnect()

    def _collect(self, work: list[_Item], retry_at: float | None) -> bool:
        """Add the tick's new commits to ``work``; False when :meth:`close` asked to leave.

        Idle, it waits for the next one; after a failure, until ``retry_at``
        (the backoff), taking what arrives meanwhile; otherwise it takes what
        is there without waiting.
        """
        inbox = self._inbox
        while True:
            try:
                if retry_at is not None:
                    item = inbox.get(timeout=max(retry_at - time.monotonic(), 0.0))
                elif work:
                    item = inbox.get_nowait()
                else:
                    item = inbox.get()
            except queue.Empty:
                return True
            if item is None:
                return False
            work.append(item)

    def _commit(self, work: list[_Item]) -> list[_Item]:
        """Write ``work`` in one transaction; the items committed (some may have been before)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = connect(self.url, self.schema, writer=True)
            # The last COMMIT's reply may have been lost with the old connection.
            # ``commit_seq`` is ours only while ``owner`` is: another supervisor
            # that opened the world since numbers its own commits (and ours,
            # never committed, must not be acknowledged: tests/test_shared_snapshots.py).
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._check_owner(meta.get("owner"))
            stored = int(meta.get("commit_seq", 0))
            already = [i for i in work if i.seq <= stored]
            if already:
                return already
        if not self._staging:
            conn.execute(_STAGING)
            self._staging = True
        # The newest row of each account (several ticks may merge into this commit).
        rows = {r[0]: r for item in work for r in item.rows}
        with conn.cursor() as cur:
            # Autocommit connection: BEGIN here, COMMIT at the end of ``_FINISH``;
            # any failure disconnects, which rolls back.
            cur.execute("BEGIN")
            with cur.copy(_COPY) as copy:
                write = copy.write_row
                for item in work:
                    for entry in item.batch.ledger:
                        write((0, *entry))
                    for p in item.batch.purchases:
                        write((1, p.id, p.player, p.amount, p.item, p.tick, None))
                for pid, balance, earnings, paid in rows.values():
                    write((2, pid, balance, earnings, None, paid, None))
            finish = _FINISH.format(
                token=int(self.token), tick=int(work[-1].tick), seq=int(work[-1].seq)
            )
            try:
                cur.execute(finish.encode(), prepare=False)
            except _psycopg().Error as exc:
                if exc.sqlstate == _FENCED:
                    raise Fenced(str(exc).strip().splitlines()[0]) from exc
                raise
        return work

    def _check_owner(self, owner: object) -> None:
        """Raise :class:`Fenced` unless the world's ``owner`` is still our token."""
        if owner is None or int(str(owner)) != self.token:
            raise Fenced(
                f"another supervisor opened this world (owner {owner}, ours {self.token}):"
                " this one stops writing it"
            )

    def _finish(self, committed: list[_Item]) -> None:
        """After COMMIT: the ack log lines (the players' replies), then hand back to the tick."""
        if self.ack_fd is not None:
            lines = b"".join(ack_lines(i.batch) for i in committed if i.batch.purchases)
            if lines:
                try:
                    os.write(self.ack_fd, lines)
                except OSError as exc:
                    self.ack_error = str(exc)
                else:
                    self.count_acks(sum(len(i.batch.purchases) for i in committed))
        self._done.extend(committed)
        self._settled = committed[-1].seq  # after: once drain() sees it, finished() has them

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._staging = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _load_accounts(conn: psycopg.Connection[Any]) -> dict[int, StoredAccount]:
    """Every stored account, items counted from the purchases journal."""
    items: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for pid, item, count in conn.execute(
        "SELECT player, item, COUNT(*) FROM purchases WHERE item != '' GROUP BY player, item"
    ):
        items[int(pid)][str(item)] = int(count)
    return {
        int(pid): StoredAccount(int(b), int(e), int(p), items.get(int(pid), {}))
        for pid, b, e, p in conn.execute("SELECT id, balance, earnings, paid_tick FROM players")
    }


def check_acks(url: str, schema: str, acks: Path | None) -> AckCheck:
    """Compare the ack log with the world's database, read-only (before it is opened)."""
    conn = connect(url, schema)
    try:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        meta: dict[str, int] = {}
        if "meta" in tables:
            meta = {str(k): int(v) for k, v in conn.execute("SELECT key, value FROM meta")}

        def lookup(ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
            sql = "SELECT id, player, amount, tick, item FROM purchases WHERE id = ANY(%s)"
            return {row[0]: tuple(row[1:]) for row in conn.execute(sql, (list(ids),))}

        found: Lookup | None = lookup if "purchases" in tables else None
        return compare_acks(acks, meta.get("acks_accepted", 0), found, meta.get("last_tick"))
    finally:
        conn.close()


def set_aside(url: str, schema: str) -> str | None:
    """A new world: rename an earlier world's non-empty schema aside (nothing is deleted).

    Returns:
        The new name of the old schema, or None when there was nothing to keep.
    """
    sql = _psycopg().sql
    conn = connect(url, schema)
    try:
        with conn.transaction():
            found = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
                " AND table_name = 'meta'",
                (schema,),
            ).fetchone()
            if found is None:
                return None
            (used,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM players) OR EXISTS (SELECT 1 FROM purchases)"
            ).fetchone() or (False,)
            if not used:
                return None
            aside = f"{schema}_aside_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            aside += f"_{os.urandom(3).hex()}"
            conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(schema), sql.Identifier(aside)
                )
            )
            return aside
    finally:
        conn.close()
