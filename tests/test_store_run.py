"""The error store attached to a running supervisor: the sink, the shipper, kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
import trio

from supervisor._store._shipper import ErrorShipper, attach_error_store
from supervisor.testing import make_supervisor

RECOVERY = {"recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0}}


class Failing:
    """Fails on every tick, from one of ``sites`` code sites in turn."""

    def __init__(self, sites: int = 1) -> None:
        self.sites = [compile("raise ValueError('boom')", f"<site {i}>", "exec")
                      for i in range(sites)]  # fmt: skip

    def tick(self, ctx: Any) -> None:
        exec(self.sites[ctx.tick % len(self.sites)])


def count(db: Path, sql: str) -> Any:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_every_error_is_counted_in_the_store(tmp_path: Path) -> None:
    sup = make_supervisor(
        {"bad": Failing(sites=3)},
        config={**RECOVERY, "features": {"optimizer": False}},
        tick_rate=100,
        state_dir=tmp_path,
    )
    shipper = attach_error_store(sup)
    assert shipper is not None
    trio.run(lambda: sup.run(ticks=60))
    db = tmp_path / "errors.db"
    assert count(db, "SELECT sum(n) FROM counts") == sup.errors.total >= 60
    assert count(db, "SELECT count(*) FROM fingerprints") == 3
    assert count(db, "SELECT sum(ticks) FROM minutes") == sup.lateness.count == 60
    assert count(db, "SELECT count(*) FROM runs") == 1
    assert shipper.stats()["dropped"] == {}
    assert count(db, "PRAGMA integrity_check") == "ok"


def test_store_off_attaches_nothing(tmp_path: Path) -> None:
    sup = make_supervisor({}, config={"errors": {"store": False}}, state_dir=tmp_path)
    assert attach_error_store(sup) is None
    assert sup.record_sinks == []


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    shipper = ErrorShipper(path=tmp_path / "errors.db")
    shipper.packed.extend([b""] * shipper.config.queue)
    shipper.sink(object())  # type: ignore[arg-type]
    assert shipper.dropped["queue_full"] == 1
    assert len(shipper.packed) == shipper.config.queue


def test_the_sink_keeps_no_record_and_counts_what_it_cannot_pack(tmp_path: Path) -> None:
    """Packed as it is made: the record is free to go; a gauge msgpack refuses is counted."""
    import gc

    from test_store import rec

    shipper = ErrorShipper(path=tmp_path / "errors.db")
    record = rec(time.time())
    shipper.sink(record)
    assert [type(b) for b in shipper.packed] == [bytes]
    assert not gc.get_referrers(record), "nothing of the shipper holds the record"
    shipper.sink(attrs.evolve(record, gauges={"bad": object()}))  # type: ignore[dict-item]
    assert shipper.dropped["encode_failed"] == 1
    assert len(shipper.packed) == 1


def test_a_raising_sink_is_counted_and_removed() -> None:
    calls: list[str] = []

    def bad(_record: Any) -> None:
        calls.append("bad")
        raise RuntimeError("sink broke")

    def good(_record: Any) -> None:
        calls.append("good")

    sup = make_supervisor({"bad": Failing()}, config=RECOVERY, tick_rate=100)
    sup.record_sinks.extend([bad, good])
    trio.run(lambda: sup.run(ticks=3))
    assert calls[:2] == ["bad", "good"]
    assert calls.count("bad") == 1
    assert calls.count("good") == sup.errors.total
    assert sup.errors.dropped["sink_failed"] == 1
    assert sup.record_sinks == [good]


STORM = """
class Storm:
    def __init__(self, sites=200):
        self.sites = [compile("raise ValueError('storm')", f"<site {i}>", "exec")
                      for i in range(sites)]

    def tick(self, ctx):
        exec(self.sites[ctx.tick % len(self.sites)])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
def test_kill_9_during_heavy_writes_leaves_a_sound_file(tmp_path: Path) -> None:
    """kill -9 mid-storm: the file opens, integrity_check is ok, under a second is lost."""
    (tmp_path / "storm_mod.py").write_text(STORM)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        "[supervisor]\ntick_rate = 500\n"
        "[recovery]\nmax_restarts = 1000000\nwindow_seconds = 1.0\n"
        "[features]\napi = false\noptimizer = false\n"
        '[systems]\nenabled = ["a", "b", "c", "d"]\n'
        + "".join(f'[systems.{n}]\nuse = "storm_mod:Storm"\n' for n in "abcd")
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_")}
    db = tmp_path / "var" / "errors.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "--config", str(config), "--log-format",
         "json"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(sqlite3.OperationalError):  # created, not yet migrated
                if db.exists() and count(db, "SELECT coalesce(sum(n), 0) FROM counts") > 5000:
                    break
        else:
            pytest.fail("the storm never reached the store")
        time.sleep(1.0)  # mid-storm, writes going on
        writers = psutil.Process(proc.pid).children()
        assert [w.cmdline()[2] for w in writers] == ["supervisor._store._writer"]
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        last = conn.execute("SELECT max(last_seen) FROM fingerprints").fetchone()[0]
        total = conn.execute("SELECT sum(n) FROM counts").fetchone()[0]
        assert conn.execute("SELECT sum(total) FROM fingerprints").fetchone()[0] == total
    finally:
        conn.close()
    # The writer process does not outlive its supervisor (its pipe closed, its parent gone).
    _, alive = psutil.wait_procs(writers, timeout=5)
    assert all(w.status() == psutil.STATUS_ZOMBIE for w in alive), "an orphaned writer"
    print(f"kill -9: {total} errors stored, last {killed_at - last:.3f} s before the kill")
    assert killed_at - last < 1.0, f"{killed_at - last:.2f} s of errors lost"
    # The next start opens the same file and goes on.
    again = make_supervisor({"bad": Failing()}, config=RECOVERY, tick_rate=100,
                            state_dir=tmp_path / "var")  # fmt: skip
    attach_error_store(again)
    trio.run(lambda: again.run(ticks=5))
    assert count(db, "SELECT sum(n) FROM counts") == total + again.errors.total
    assert count(db, "SELECT count(*) FROM runs") == 2


def test_slo_burn_rate_over_recent_minutes(tmp_path: Path) -> None:
    """The callable H7's rules use: bad share over the window / budget share."""
    from supervisor._core._config_sections import SloConfig
    from supervisor._store._db import MinuteRow

    slo = SloConfig(name="up", kind="availability", target=0.99)
    shipper = ErrorShipper(path=tmp_path / "errors.db", slos={"up": slo})
    now = int(time.time()) // 60 * 60
    # Two hours ago: all down (outside a 1 h window); the last hour: 6 of 60 minutes down.
    shipper.recent.extend(MinuteRow(minute=now - 7200 + 60 * m, seconds=60, emergency=60)
                          for m in range(60))  # fmt: skip
    shipper.recent.extend(MinuteRow(minute=now - 3600 + 60 * m, seconds=60,
                                    emergency=60 if m < 6 else 0) for m in range(60))  # fmt: skip
    assert shipper.slo_burn_rate("up", "1h") == pytest.approx(10.0, rel=0.05)
    assert shipper.slo_burn_rate("up", "3h") == pytest.approx(66 / 120 / 0.01, rel=0.05)
    with pytest.raises(KeyError):
        shipper.slo_burn_rate("nosuch", "1h")


def test_incidents_reach_the_store(tmp_path: Path) -> None:
    sup = make_supervisor({"bad": Failing()}, config=RECOVERY, tick_rate=100, state_dir=tmp_path)
    shipper = attach_error_store(sup)
    assert shipper is not None
    shipper.incident("alert", "error_rate_high firing")
    trio.run(lambda: sup.run(ticks=5))
    assert count(tmp_path / "errors.db", "SELECT detail FROM events") == "error_rate_high firing"


def test_failures_the_core_could_not_keep_are_counted_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full pending ring (``ring_full``) is a lost record: the store's drop counts say so."""
    from supervisor._core import _failures

    monkeypatch.setattr(_failures, "PENDING", 4)
    systems = {f"s{i}": Failing() for i in range(10)}
    sup = make_supervisor(systems, config=RECOVERY, tick_rate=100, state_dir=tmp_path)
    shipper = attach_error_store(sup)
    assert shipper is not None
    trio.run(lambda: sup.run(ticks=5))
    assert sup.errors.dropped["ring_full"] == 5 * 6
    assert shipper.stats()["dropped"] == {"ring_full": 30}
    db = tmp_path / "errors.db"
    assert count(db, "SELECT n FROM dropped WHERE reason = 'ring_full'") == 30
    assert count(db, "SELECT sum(n) FROM counts") == sup.errors.total == 5 * 4
