"""The writer process: it exits when its pipe closes, and a dead one is restarted and counted."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from test_store import rec
from test_store_run import RECOVERY, Failing, count

from supervisor._store._pipe import WriterProcess
from supervisor._store._shipper import ErrorShipper, _records_frame, attach_error_store
from supervisor._store._writer import frame
from supervisor.testing import make_supervisor


async def test_the_writer_writes_answers_and_exits_when_its_pipe_closes(tmp_path: Path) -> None:
    db = tmp_path / "errors.db"
    writer = await WriterProcess.start(db, {"now": time.time()})
    shipper = ErrorShipper(path=db)
    for i in range(10):
        shipper.sink(rec(time.time() + i, fp=f"f{i % 2}"))
    await writer.send(_records_frame(shipper.packed))
    await writer.send(frame(["end", [[], [], {"queue_full": 3}, None]]))
    reply = await writer.receive()
    assert (reply["written"], reply["write_failed"]) == (10, 0)
    assert writer.process.stdin is not None
    await writer.process.stdin.aclose()
    with trio.fail_after(5):
        assert await writer.process.wait() == 0
    assert count(db, "SELECT sum(n) FROM counts") == 10
    assert count(db, "SELECT n FROM dropped WHERE reason = 'queue_full'") == 3
    assert count(db, "PRAGMA integrity_check") == "ok"


async def test_ctrl_c_in_the_terminal_does_not_kill_the_writer(tmp_path: Path) -> None:
    """SIGINT reaches the whole foreground group: the writer leaves the stop to the supervisor."""
    db = tmp_path / "errors.db"
    writer = await WriterProcess.start(db, {"now": time.time()})
    writer.process.send_signal(signal.SIGINT)
    await trio.sleep(0.3)
    assert writer.process.returncode is None  # still there, no KeyboardInterrupt traceback
    await writer.send(frame(["end", [[], [], {}, None]]))
    reply = await writer.receive()
    assert reply["write_failed"] == 0
    assert writer.process.stdin is not None
    await writer.process.stdin.aclose()
    with trio.fail_after(5):
        assert await writer.process.wait() == 0


def test_a_dead_writer_is_restarted_and_its_batch_counted_lost(tmp_path: Path) -> None:
    sup = make_supervisor({"bad": Failing()}, config=RECOVERY, tick_rate=100, state_dir=tmp_path)
    shipper = attach_error_store(sup)
    assert shipper is not None
    killed: list[int] = []

    async def kill_the_writer() -> None:
        while shipper.written == 0:  # noqa: ASYNC110 (polls a plain counter; once a batch is in)
            await trio.sleep(0.01)
        assert shipper.writer is not None
        killed.append(shipper.writer.process.pid)
        shipper.writer.process.kill()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_the_writer)
            await sup.run(ticks=150)

    trio.run(main)
    assert len(killed) == 1
    assert shipper.writer_restarts == 1
    stats = shipper.stats()
    assert stats["writer_restarts"] == 1
    lost = stats["dropped"].get("writer_failed", 0)
    assert lost > 0, "the batch in flight when it died is counted"
    stored = count(tmp_path / "errors.db", "SELECT sum(n) FROM counts")
    assert stored + lost == sup.errors.total
    assert stored == shipper.written
    conn = sqlite3.connect(tmp_path / "errors.db")
    try:
        assert conn.execute("SELECT n FROM dropped WHERE reason = 'writer_failed'").fetchone() == (
            lost,
        )
    finally:
        conn.close()


def test_an_unopenable_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "errors.db").write_bytes(b"not a database" * 100)
    shipper = ErrorShipper(path=tmp_path / "errors.db")
    sup = make_supervisor({}, state_dir=tmp_path)
    with pytest.raises(sqlite3.DatabaseError):
        trio.run(shipper.error_store, sup)
    assert shipper.writer is None, "no writer is started on a file that cannot be opened"


def test_a_storms_records_all_arrive_in_the_store_when_it_ends(tmp_path: Path) -> None:
    """200 systems failing at 20 Hz from 1,000 sites, then quiet: every record is stored.

    Nothing is dropped on the way (ring, queue, writer): the store's counts add up to
    every record made, per fingerprint too, and the run saw no drop of any kind.
    """

    class Storm:
        def __init__(self, index: int, until: int) -> None:
            self.index = index
            self.until = until

        def tick(self, ctx: Any) -> None:
            if ctx.tick < self.until:
                exec(SITES[(self.index + ctx.tick * 200) % len(SITES)])

    systems = {f"s{i}": Storm(i, until=50) for i in range(200)}
    sup = make_supervisor(systems, config=RECOVERY, tick_rate=20, state_dir=tmp_path)
    shipper = attach_error_store(sup)
    assert shipper is not None
    trio.run(lambda: sup.run(ticks=60))
    db = tmp_path / "errors.db"
    assert sup.errors.total == 200 * 50
    assert sup.errors.dropped["ring_full"] == 0
    assert not set(sup.errors.dropped) - {"traceback_budget", "group_evicted", "ring_full"}
    assert shipper.stats()["dropped"] == {}
    assert count(db, "SELECT sum(n) FROM counts") == 200 * 50
    assert count(db, "SELECT count(*) FROM fingerprints") == len(SITES)
    assert count(db, "SELECT min(total) FROM fingerprints") == 200 * 50 // len(SITES)


SITES = [compile("raise ValueError('storm')", f"<site {i}>", "exec") for i in range(1000)]
