"""The datastore on a real PostgreSQL: migrations, fencing, kill -9, an outage mid-run, bad input.

One throwaway cluster for the module (``tests/pg_server.py``); each test
uses its own database, so they do not see each other's worlds.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_server import PgServer, running_pg
from test_durability import CONFIG, Ack, Backend, audit_query, chain, read_acks

from systems._datastore_pg import (
    MIGRATIONS,
    Fenced,
    MigrationError,
    PgBackend,
    _Item,
    connect,
    migrate,
    writer_tag,
)
from systems.economy import Batch, Purchase

SUPERVISOR = Path(sys.executable).parent / "supervisor"
_names = itertools.count()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


def fresh_db(pg: PgServer) -> str:
    return pg.create_database(f"t{next(_names)}_{random.randrange(10**6)}")


def pg_audit(url: str, acks: list[Ack]) -> list[str]:
    with connect(url, "world") as conn:
        return audit_query(lambda sql: conn.execute(sql.encode()).fetchall(), acks)


# ---------------------------------------------------------------------- migrations


def test_migrations_apply_once_in_order_and_upgrade(pg: PgServer) -> None:
    url = fresh_db(pg)
    with connect(url, "world") as conn:
        assert migrate(conn, "world") == [v for v, _, _ in MIGRATIONS]
        assert migrate(conn, "world") == []
        # A database at version 2 (made by older code) gets exactly the newer ones.
        conn.execute("DROP INDEX ledger_by_player")
        conn.execute("DELETE FROM schema_migrations WHERE version = 3")
        assert migrate(conn, "world") == [3]
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4]


def test_a_schema_newer_than_the_code_is_refused(pg: PgServer, tmp_path: Path) -> None:
    url = fresh_db(pg)
    with connect(url, "world") as conn:
        migrate(conn, "world")
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
        with pytest.raises(MigrationError, match="migration 99, newer than this code's 4"):
            migrate(conn, "world")
    done = run_world(tmp_path, url, "--ticks", "5")
    assert done.returncode == 2
    assert "migration 99, newer" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_starts_at_once_migrate_once(pg: PgServer) -> None:
    url = fresh_db(pg)

    def one(_: int) -> list[int]:
        with connect(url, "world") as conn:
            return migrate(conn, "world")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert sorted(map(len, results)) == [0, 0, 0, len(MIGRATIONS)]


# ---------------------------------------------------------------------- the worker


def _purchase(pid: int) -> Purchase:
    return Purchase(pid, 1, 5, "", 7)


def _wait_finished(backend: PgBackend, timeout: float = 10.0) -> list[tuple[Batch, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = backend.finished()
        if done:
            return done
        time.sleep(0.01)
    raise AssertionError(f"nothing committed: {backend.error}")


def test_fencing_a_second_opener_stops_the_first(pg: PgServer) -> None:
    url = fresh_db(pg)
    first = PgBackend(url, "world", None, lambda n: None)
    first.open(None)
    try:
        first.submit(Batch([(1, 1, 7, "grant", 10, None)], [], set(), []), [(1, 10, 0, 7)], 7)
        assert len(_wait_finished(first)) == 1
        second = PgBackend(url, "world", None, lambda n: None)
        second.open(None)  # a resume elsewhere, or a standby taking over
        second.close()
        assert second.token == first.token + 1
        first.submit(Batch([(2, 1, 8, "income", 1, None)], [], set(), []), [(1, 11, 1, 8)], 8)
        assert not first.drain(5.0)
        assert first.fenced is not None
        assert "another supervisor opened this world" in first.fenced
        assert first.finished() == []
    finally:
        first.close()
    with connect(url, "world") as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone() == (1,)


def test_a_commit_whose_reply_was_lost_is_not_written_twice(pg: PgServer) -> None:
    url = fresh_db(pg)
    backend = PgBackend(url, "world", None, lambda n: None)
    backend.open(None)
    try:
        batch = Batch([(1, 1, 7, "purchase", -5, 1)], [_purchase(1)], {1}, [])
        backend.submit(batch, [(1, 995, 0, 7)], 7)
        assert len(_wait_finished(backend)) == 1
        # As if the COMMIT reached the server but its reply was lost: the same
        # item again, on a new connection. Re-inserting would violate the keys.
        backend._disconnect()
        assert not backend._waiting  # the worker finished it
        again = _Item(backend.last_seq, 7, batch, [(1, 995, 0, 7)], time.monotonic())
        assert backend._commit([again]) == [again]
    finally:
        backend.close()
    with connect(url, "world") as conn:
        assert conn.execute("SELECT COUNT(*) FROM purchases").fetchone() == (1,)


def test_after_a_takeover_a_reconnect_never_counts_the_new_owners_commits_as_ours(
    pg: PgServer,
) -> None:
    """A reconnect reads ``commit_seq``: only while ``owner`` is still ours does it mean ours.

    Found by the shared-snapshot drill: the old owner, frozen mid-commit, woke
    after the new owner had committed more than it had, took the new owner's
    ``commit_seq`` for its own and acknowledged purchases never committed.
    """
    url = fresh_db(pg)
    old = PgBackend(url, "world", None, lambda n: None)
    old.open(None)
    new = PgBackend(url, "world", None, lambda n: None)
    try:
        new.open(None)
        for tick in range(1, 4):
            new.submit(Batch([(tick, 1, tick, "grant", 10, None)], [], set(), []), [], tick)
            assert len(_wait_finished(new)) == 1
        old._disconnect()
        mine = _Item(old.last_seq + 1, 9, Batch([], [_purchase(1)], set(), []), [], 0.0)
        assert mine.seq <= new.last_seq
        with pytest.raises(Fenced):
            old._commit([mine])
    finally:
        new.close()
        old.close()


# ---------------------------------------------------------------------- supervisor run


def write_world(folder: Path, url: str, rate: int = 100, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "world.toml"
    text = CONFIG.format(rate=rate, seed=7, datastore=f'url = "{url}"\n{extra}')
    config.write_text(text.replace("snapshot_interval = 0.25", "snapshot_interval = 0.5"))
    return config


def run_args(folder: Path, config: Path, *args: str) -> list[str]:
    """``supervisor run`` of ``config`` with its state in ``folder/state``."""
    state = str(folder / "state")
    return [str(SUPERVISOR), "run", "--config", str(config), "--state-dir", state, *args]


def run_world(folder: Path, url: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    config = write_world(folder, url)
    return subprocess.run(
        run_args(folder, config, *args),
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=60,
        check=False,
        **kw,
    )


def test_every_acknowledged_purchase_survives_kill_9_on_postgresql(
    pg: PgServer, tmp_path: Path
) -> None:
    """The durability suite's kill -9 chains, against PostgreSQL: 6 kills in 2 chains."""
    urls = {f"chain-{c}": fresh_db(pg) for c in range(2)}

    def layout(folder: Path) -> tuple[str, Path]:
        return f'url = "{urls[folder.name]}"', folder / "state" / "world.acks"

    backend = Backend(layout, lambda folder, acks: pg_audit(urls[folder.name], acks))
    rng = random.Random(20_261_201)
    seeds = [random.Random(rng.random()) for _ in urls]
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(chain, tmp_path / name, 3, seed, backend)
            for name, seed in zip(urls, seeds, strict=True)
        ]
        results = [f.result() for f in futures]
    for counts in results:
        assert all(b > a for a, b in itertools.pairwise([0, *counts]))


def test_an_outage_mid_run_loses_no_ack_and_no_tick(pg: PgServer, tmp_path: Path) -> None:
    """PostgreSQL hung for 3 s, then down for 3 s: the world ticks on, acks wait, none is lost.

    Hung (its processes stopped: connections open, no answer) is the harder
    case: no error ever reaches the client, so a commit on the tick would
    hold the tick for as long as the server stays frozen.
    """
    url = fresh_db(pg)
    ticks, rate = 1200, 100
    config = write_world(tmp_path, url, rate)
    acks_path = tmp_path / "state" / "world.acks"
    log = tmp_path / "run.log"
    args = ["--ticks", str(ticks), "--summary-json", str(tmp_path / "summary.json")]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            run_args(tmp_path, config, *args),
            stdout=out,
            stderr=out,
            cwd=tmp_path,
        )
    try:
        while not acks_path.exists() or acks_path.stat().st_size == 0:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        for stop, start in ((pg.freeze, pg.thaw), (pg.pause, pg.resume)):
            stop()
            try:
                time.sleep(0.3)  # a commit already under way may still finish
                down_at = acks_path.stat().st_size
                time.sleep(3.0)
                # Nothing could be acknowledged while the database was out.
                assert acks_path.stat().st_size == down_at
                assert proc.poll() is None, "the run stopped during the outage"
            finally:
                start()
            time.sleep(1.0)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        pg.thaw()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert '"datastore.outage"' in text
    assert '"datastore.reconnected"' in text
    assert '"system.error"' not in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == ticks
    # No tick waited on the database: a tick held by the hung server would take 3 s.
    # (Not the wall time: on a loaded machine the loop drops ticks whatever the database.)
    assert summary["work"]["max"] < 0.5, summary
    acks = read_acks(acks_path)
    assert acks
    assert acks_path.stat().st_size > down_at  # the waiting acks went out after the outage
    assert pg_audit(url, acks) == []


def test_bad_urls_are_refused_in_one_line(pg: PgServer, tmp_path: Path) -> None:
    done = run_world(tmp_path / "a", "mysql://x")
    assert done.returncode == 2
    assert "url must be a postgresql:// URL" in done.stderr
    assert "Traceback" not in done.stderr
    # A password: refused (libpq reads PGPASSWORD or ~/.pgpass), never repeated.
    for secret in ("postgres:hunter2@127.0.0.1/x", "127.0.0.1/x?password=hunter2"):
        done = run_world(tmp_path / "b", f"postgresql://{secret}")
        assert done.returncode == 2, done.stderr
        assert "url must not hold a password" in done.stderr
        assert "hunter2" not in done.stderr
    # Unreachable: one line, exit 2.
    dead = f"postgresql://postgres@127.0.0.1:{pg.port + 1}/x?connect_timeout=1"
    done = run_world(tmp_path / "c", dead)
    assert done.returncode == 2, done.stderr
    assert f"the database postgresql://postgres@127.0.0.1:{pg.port + 1}/x" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_fresh_world_sets_the_old_schema_aside(pg: PgServer, tmp_path: Path) -> None:
    url = fresh_db(pg)
    assert run_world(tmp_path, url, "--ticks", "60").returncode == 0
    done = run_world(tmp_path, url, "--fresh", "--ticks", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"datastore.moved_aside"' in done.stderr
    with psycopg.connect(url) as conn:
        names = {
            r[0]
            for r in conn.execute(
                "SELECT schema_name FROM information_schema.schemata"
                " WHERE schema_name LIKE 'world%%'"
            )
        }
    assert "world" in names
    assert any(n.startswith("world_aside_") for n in names), names


def test_an_owner_frozen_holding_its_locks_is_ended_at_once(pg: PgServer) -> None:
    """An owner frozen holding its row locks is ended: the new owner goes on at once.

    What the server sees of a frozen owner: its tagged session, idle in a
    transaction that holds the ``owner`` row and the next ledger key. The new
    owner ends that session before taking the token: its open and its first
    commit (the very same ledger key) go through at once instead of waiting
    for the server's 5 s idle timeout.
    """
    url = fresh_db(pg)
    first = PgBackend(url, "world", None, lambda n: None)
    first.open(None)  # the world, owned by token 1
    first.close()
    frozen = connect(url, "world", writer=True)
    frozen.execute("BEGIN")
    frozen.execute("SELECT fence(1)")
    frozen.execute("INSERT INTO ledger VALUES (1, 7, 1, 'grant', 10, NULL)")
    started = time.monotonic()
    new = PgBackend(url, "world", None, lambda n: None)
    new.open(None)
    try:
        assert new.old_owners_ended == 1
        assert new.last_ids == (0, 0)  # the frozen insert was never committed
        new.submit(Batch([(1, 7, 2, "grant", 10, None)], [], {7}, []), [(7, 10, 0, 2)], 2)
        assert len(_wait_finished(new, timeout=10.0)) == 1
        took = time.monotonic() - started
        assert took < 1.0, f"the new owner's open and first commit took {took:.2f} s"
    finally:
        new.close()
    with pytest.raises(psycopg.OperationalError):
        frozen.execute("SELECT 1")
    frozen.close()


def _freeze_mid_commit(proc: subprocess.Popen[bytes], url: str) -> int:
    """SIGSTOP ``proc`` mid-commit; its writer session's pid.

    Mid-commit: the session is inside a transaction and waits for its client
    (``ClientRead``: between BEGIN and the COPY, or within the COPY), so the
    transaction cannot finish while the client is frozen.
    """
    sql = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL"
        " AND wait_event = 'ClientRead' AND datname = current_database()"
    )
    rng = random.Random(15)
    with connect(url, "world") as watch:
        for _ in range(500):
            os.kill(proc.pid, signal.SIGSTOP)
            row = watch.execute(sql, (writer_tag("world"),)).fetchone()
            if row is not None:
                return int(row[0])
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(rng.uniform(0.0, 0.01))
    raise AssertionError("never caught the writer inside a commit")


def test_a_frozen_owner_is_ended_so_the_new_owner_commits_at_once(
    pg: PgServer, tmp_path: Path
) -> None:
    """A real run SIGSTOPped mid-commit: B ends its session, commits at once; A is fenced.

    A commit fills a temporary staging table before its one final query, so
    an owner frozen in the COPY holds no lock on the world's tables (the test
    above covers one that does); its session is ended all the same. A,
    continued, finds its connection gone, reconnects, reads the new token, is
    fenced and stops, acknowledging nothing more; everything it acknowledged
    is in the database.
    """
    url = fresh_db(pg)
    config = write_world(tmp_path, url, rate=100)
    acks_path = tmp_path / "state" / "world.acks"
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        args = run_args(tmp_path, config, "--exit-on-emergency")
        proc = subprocess.Popen(args, stdout=out, stderr=out, cwd=tmp_path)
    try:
        while not acks_path.exists() or acks_path.stat().st_size == 0:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        frozen = _freeze_mid_commit(proc, url)
        started = time.monotonic()
        new = PgBackend(url, "world", None, lambda n: None)
        new.open(None)
        try:
            assert new.old_owners_ended == 1
            seq, pid = new.last_ids
            player, tick = 10**9, 10**6
            batch = Batch(
                [
                    (seq + 1, player, tick, "grant", 10, None),
                    (seq + 2, player, tick, "purchase", -5, pid + 1),
                ],
                [Purchase(pid + 1, player, 5, "", tick)],
                {player},
                [],
            )
            new.submit(batch, [(player, 5, 0, tick)], tick)
            assert len(_wait_finished(new, timeout=5.0)) == 1
            took = time.monotonic() - started
            assert took < 1.0, f"the new owner's first commit took {took:.2f} s"
        finally:
            new.close()
        with connect(url, "world") as conn:
            gone = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (frozen,))
            assert gone.fetchone() is None
        acked_while_frozen = acks_path.stat().st_size
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=30) == 3  # --exit-on-emergency: fenced, it stopped
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert '"datastore.fenced"' in text, text[-3000:]
    # A acknowledged nothing after it was replaced, and all it did acknowledge is stored.
    assert acks_path.stat().st_size == acked_while_frozen
    acks = read_acks(acks_path)
    assert acks
    assert pg_audit(url, acks) == []
