"""Preserved state is never deleted, end to end (CONTRACT section 8).

``supervisor run`` as a real process, in a folder of the test's own:

* a plain ``run`` over earlier snapshots refuses (exit 2) naming ``--resume``
  and ``--fresh``; ``--fresh`` moves them aside; ``--resume`` with no valid
  snapshot refuses and keeps every file (it used to start a fresh world, exit
  0 and delete the corrupt file);
* the demo datastore cross-checks the ack log, the snapshot and the database
  at start: an emptied database is refused in one line (exit 2) unless
  ``accept_data_loss = true``; a new world never merges into an old database;
* ``shutdown --emergency`` against ``run --exit-on-emergency`` gets its answer
  (with the snapshot's path) before the process exits 3.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_main import QUICK_WORLD

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"
TIMEOUT = 60.0

#: The demo world at 200 Hz with purchases every few ticks; no API.
DEMO_WORLD = """\
[supervisor]
state_dir = "state"
tick_rate = 200
snapshot_interval = 0

[systems]
enabled = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]

[systems.players]
count = 200

[systems.tycoon]
buy_rate = 0.5

[systems.datastore]
autosave = 0
{datastore}

[features]
api = false
optimizer = false
precise_timing = false

[logging]
format = "json"
"""


def supervisor(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``supervisor ARGV`` run to the end in ``folder``."""
    return subprocess.run(
        [str(SUPERVISOR), *argv],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path: bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


def events(result: subprocess.CompletedProcess[str], name: str) -> list[dict[str, object]]:
    needle = f'"event": "{name}"'
    return [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{") and needle in x]


@pytest.fixture
def quick(tmp_path: Path) -> Path:
    (tmp_path / "supervisor.toml").write_text(QUICK_WORLD, encoding="utf-8")
    return tmp_path


class TestSnapshotsAreKept:
    def test_plain_run_over_snapshots_refuses(self, quick: Path) -> None:
        """Exit 2 with one line naming --resume and --fresh; every file unchanged.

        Before: the run went ahead and its first snapshot pruned the earlier ones
        (all of them after an emergency: their ticks were higher).
        """
        assert supervisor(quick, "run", "--ticks", "5").returncode == 0
        kept = files(quick / "state")
        assert "snapshots/snapshot-5.msgpack" in kept
        result = supervisor(quick, "run", "--ticks", "2")
        assert result.returncode == 2, result.stderr
        assert error_lines(result) == [
            f"supervisor: error: {quick / 'state' / 'snapshots'} holds the snapshots of an"
            " earlier run: pass --resume to continue that world, or --fresh to start a new one"
            " (its files are moved aside, never deleted)"
        ]
        assert files(quick / "state") == kept

    def test_fresh_moves_the_old_snapshots_aside(self, quick: Path) -> None:
        """``--fresh``: a new world from tick 0; the old snapshot kept, byte for byte, aside."""
        assert supervisor(quick, "run", "--ticks", "5").returncode == 0
        old = (quick / "state" / "snapshots" / "snapshot-5.msgpack").read_bytes()
        result = supervisor(quick, "run", "--fresh", "--ticks", "3", "--log-format", "json")
        assert result.returncode == 0, result.stderr
        (moved,) = events(result, "snapshots.moved_aside")
        aside = Path(str(moved["folder"]))
        assert aside.parent == quick / "state" / "snapshots"
        assert (aside / "snapshot-5.msgpack").read_bytes() == old
        assert sorted(p.name for p in (quick / "state" / "snapshots").glob("snapshot-*")) == [
            "snapshot-3.msgpack"
        ]

    def test_resume_with_only_a_corrupt_snapshot_refuses_and_keeps_it(self, quick: Path) -> None:
        """Exit 2, one line with the snapshot's problem; the corrupt file is still there.

        Before: a fresh world started, exited 0, and its snapshot deleted the file.
        """
        assert supervisor(quick, "run", "--ticks", "5").returncode == 0
        path = quick / "state" / "snapshots" / "snapshot-5.msgpack"
        path.write_bytes(path.read_bytes()[:40])
        kept = files(quick / "state")
        result = supervisor(quick, "run", "--resume", "--ticks", "2")
        assert result.returncode == 2, result.stderr
        (line,) = error_lines(result)
        assert line.startswith("supervisor: error: --resume: no valid snapshot in ")
        assert "1 unreadable" in line
        assert str(path) in line
        assert "every file was kept" in line
        assert files(quick / "state") == kept

    def test_resume_with_no_snapshot_refuses(self, quick: Path) -> None:
        """Nothing to resume is exit 2 (it used to start a fresh world and exit 0)."""
        result = supervisor(quick, "run", "--resume", "--ticks", "2")
        assert result.returncode == 2, result.stderr
        (line,) = error_lines(result)
        assert "--resume: no valid snapshot" in line
        assert "snapshots found: none" in line


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    (tmp_path / "supervisor.toml").write_text(DEMO_WORLD.format(datastore=""), encoding="utf-8")
    return tmp_path


def acked(folder: Path) -> list[list[str]]:
    text = (folder / "state" / "world.sqlite3.acks").read_text(encoding="utf-8")
    return [line.split(" ") for line in text.splitlines()]


def empty_the_database(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.executescript("DELETE FROM purchases; DELETE FROM ledger; DELETE FROM players;")
        conn.executescript("DELETE FROM meta;")
    conn.close()


class TestDatastoreCrossCheck:
    def test_emptied_database_is_refused_then_accepted_on_purpose(self, demo: Path) -> None:
        """Run, buy, stop, empty the DB, ``run --resume`` -> exit 2 in one line; with
        ``accept_data_loss = true`` it starts, logs the loss and reuses no purchase id;
        the loss once accepted is not refused again.

        Before: accepted without a word, acknowledged purchases gone and ids reused.
        """
        first = supervisor(demo, "run", "--ticks", "300")
        assert first.returncode == 0, first.stderr
        promised = acked(demo)
        assert len(promised) >= 5, "the world acknowledged too few purchases to test with"
        db = demo / "state" / "world.sqlite3"
        empty_the_database(db)
        before = db.read_bytes()

        refused = supervisor(demo, "run", "--resume", "--ticks", "5")
        assert refused.returncode == 2, refused.stderr
        (line,) = error_lines(refused)
        assert line.startswith("supervisor: error: ")
        assert f"the database {db} lost acknowledged data" in line
        assert f"{len(promised)} of {len(promised)} acknowledged purchases are missing" in line
        assert "accept_data_loss = true" in line
        assert db.read_bytes() == before
        assert len(acked(demo)) == len(promised)

        (demo / "supervisor.toml").write_text(
            DEMO_WORLD.format(datastore="accept_data_loss = true"), encoding="utf-8"
        )
        accepted = supervisor(demo, "run", "--resume", "--ticks", "300")
        assert accepted.returncode == 0, accepted.stderr
        (loss,) = events(accepted, "datastore.data_loss")
        assert loss["missing"] == len(promised)
        after = acked(demo)
        assert after[: len(promised)] == promised
        new_ids = [int(a[0]) for a in after[len(promised) :]]
        assert new_ids, "no purchase after the accepted loss"
        assert min(new_ids) > max(int(a[0]) for a in promised)

        (demo / "supervisor.toml").write_text(DEMO_WORLD.format(datastore=""), encoding="utf-8")
        again = supervisor(demo, "run", "--resume", "--ticks", "5")
        assert again.returncode == 0, again.stderr
        (verified,) = events(again, "datastore.verified")
        assert verified["acknowledged"] == len(after)

    def test_fresh_world_sets_the_old_database_aside(self, demo: Path) -> None:
        """``--fresh`` over a world: its database and ack log move aside whole; the new
        world starts empty (purchase ids from 1) instead of merging into the old one."""
        assert supervisor(demo, "run", "--ticks", "300").returncode == 0
        state = demo / "state"
        old = {
            name: (state / name).read_bytes() for name in ("world.sqlite3", "world.sqlite3.acks")
        }
        result = supervisor(demo, "run", "--fresh", "--ticks", "300")
        assert result.returncode == 0, result.stderr
        (moved,) = events(result, "datastore.moved_aside")
        aside = Path(str(moved["folder"]))
        assert aside.parent == state
        assert {name: (aside / name).read_bytes() for name in old} == old
        ids = [int(a[0]) for a in acked(demo)]
        assert ids
        assert ids[0] == 1


class TestEmergencyAnswer:
    def test_emergency_answer_arrives_before_exit(self, tmp_path: Path) -> None:
        """``shutdown --emergency`` against ``--exit-on-emergency``: exit 0, the snapshot's
        path printed; the run exits 3 with that snapshot on disk.

        Before: "lost the connection to the supervisor" and exit 1.
        """
        (tmp_path / "supervisor.toml").write_text(
            QUICK_WORLD.replace("api = false", "api = true")
            + '\n[api]\nlisten = "unix:state/s.sock"\naudit_log = "state/audit.jsonl"\n',
            encoding="utf-8",
        )
        err = tmp_path / "run.err"
        with err.open("w") as out:
            run = subprocess.Popen(
                [str(SUPERVISOR), "run", "--exit-on-emergency", "--log-format", "json"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
            try:
                deadline = time.monotonic() + TIMEOUT
                while '"api.listening"' not in err.read_text():
                    assert run.poll() is None, err.read_text()
                    assert time.monotonic() < deadline, err.read_text()
                    time.sleep(0.05)
                answer = supervisor(tmp_path, "shutdown", "--emergency", "--reason", "drill")
                code = run.wait(timeout=TIMEOUT)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        assert answer.returncode == 0, answer.stderr
        snapshots = sorted((tmp_path / "state" / "snapshots").glob("snapshot-*.msgpack"))
        assert len(snapshots) == 1
        assert answer.stdout.startswith("shutdown: phase=emergency_shutdown")
        assert f"snapshot={snapshots[0]}" in answer.stdout
        assert code == 3
