"""Shared snapshots: ``[snapshots] store``, ``run --resume-from WORLD``, and two writers fenced.

The store's own guarantees (atomic writes, checksums, generations) are
``tests/test_snapshot.py``'s; here: every snapshot reaches the shared folder
byte for byte and names its world, a failing shared folder never fails the
run, a world's snapshot is refused under another name, and end to end with
PostgreSQL: a world killed with SIGKILL continues on another state folder
with every acknowledged purchase, and its old owner, woken up, stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import PgServer, running_pg
from test_durability import Ack, read_acks
from test_pg_datastore import fresh_db, pg_audit, run_args, write_world

from supervisor._core._config import Config
from supervisor._core._snapshot_format import Snapshot
from supervisor._core._snapshot_shared import SharedSnapshotStore, open_snapshot_store
from supervisor._errors import ConfigError


def _config(tmp_path: Path, **snapshots: object) -> Config:
    return Config.from_mapping({"snapshots": snapshots}, base_dir=tmp_path)


def _snap(tick: int) -> Snapshot:
    return Snapshot(tick=tick, phase="development", reason="periodic", time=1.0, systems={})


def test_every_write_lands_in_the_shared_folder_byte_for_byte(tmp_path: Path) -> None:
    store = open_snapshot_store(tmp_path / "local", _config(tmp_path, store="shared", world="w1"))
    assert isinstance(store, SharedSnapshotStore)
    for tick in (10, 20, 30, 40):
        store.write(_snap(tick))
    local = sorted(p.name for p in (tmp_path / "local").glob("snapshot-*"))
    shared = sorted(p.name for p in (tmp_path / "shared" / "w1").glob("snapshot-*"))
    # The same generations (3 by default) on both sides, the same bytes.
    assert local == shared == ["snapshot-20.msgpack", "snapshot-30.msgpack", "snapshot-40.msgpack"]
    for name in shared:
        assert (tmp_path / "shared/w1" / name).read_bytes() == (
            tmp_path / "local" / name
        ).read_bytes()
    snap, problems = store.shared.latest()
    assert problems == []
    assert snap is not None
    assert snap.tick == 40
    assert snap.meta["world"] == "w1"
    assert store.writes == 4
    assert store.failures == 0


def test_a_failing_shared_folder_never_fails_the_local_write(tmp_path: Path) -> None:
    (tmp_path / "shared").write_text("a file where the folder should be")
    store = open_snapshot_store(tmp_path / "local", _config(tmp_path, store="shared", world="w"))
    assert isinstance(store, SharedSnapshotStore)
    path = store.write(_snap(5))
    assert path.exists()
    assert store.failures == 1
    assert store.error is not None


def test_resume_from_refuses_a_snapshot_of_another_world(tmp_path: Path) -> None:
    config = _config(tmp_path, store="shared", world="b")
    other = open_snapshot_store(tmp_path / "a-local", _config(tmp_path, store="shared", world="a"))
    other.write(_snap(7))
    # Someone copied world a's files into world c's folder.
    (tmp_path / "shared" / "c").mkdir()
    for f in (tmp_path / "shared" / "a").glob("snapshot-*"):
        (tmp_path / "shared" / "c" / f.name).write_bytes(f.read_bytes())
    store = open_snapshot_store(tmp_path / "b-local", config)
    assert isinstance(store, SharedSnapshotStore)
    store.resume_world("a")
    snap, _ = store.latest()
    assert snap is not None
    assert snap.tick == 7
    store.resume_world("c")
    snap, problems = store.latest()
    assert snap is None
    assert "belongs to world 'a', not 'c'" in str(problems[-1])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"store": "redis://x:6379/db"}, "the database must be a number"),
        ({"store": "http://x/"}, "expected a directory or a Redis URL"),
        ({"store": "redis://x", "max_mb": 0}, "below the minimum"),
        ({"store": "redis://x", "max_mb": 513}, "above the maximum"),
        ({"store": "s", "world": "../etc"}, "expected a world name"),
        ({"store": "s", "world": "a/b"}, "expected a world name"),
        ({"store": "s", "world": ""}, "must not be empty"),
        ({"store": 5}, "expected"),
        ({"stor": "s"}, "unknown key"),
    ],
)
def test_bad_snapshot_settings_are_one_config_error(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **table)


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


def world_config(folder: Path, url: str, name: str, shared: Path | str) -> Path:
    """The demo world on PostgreSQL ``url``, sharing its snapshots in ``shared`` as ``name``."""
    config = write_world(folder, url, rate=100)
    with config.open("a") as f:
        f.write(f'\n[snapshots]\nstore = "{shared}"\nworld = "{name}"\n')
    return config


def start_world(folder: Path, config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``supervisor run`` of ``config`` in the background, its output in ``folder/run-*.log``."""
    # The child keeps its own copy of the descriptor: ours is closed at once.
    with (folder / f"run-{time.monotonic_ns()}.log").open("wb") as out:
        return subprocess.Popen(
            run_args(folder, config, *args),
            stdout=out,
            stderr=out,
            cwd=folder,
        )


def wait_for(predicate: object, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert proc.poll() is None, "exited early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def kill_9_when(
    folder: Path,
    config: Path,
    shared: Callable[[], bool],
    settled: Callable[[], bool] = lambda: True,
) -> list[Ack]:
    """Run the world in ``folder`` until it has acks and ``shared()``, then SIGKILL it.

    Killed half a second later, at a moment ``settled()`` holds (the test
    that resumes the killed world locally too waits until its newest local
    snapshot is also shared: a kill between the two writes leaves the local
    copy ahead, and the database rightly refuses that copy once the world
    went on elsewhere).

    Returns:
        The purchases it acknowledged (at least one).
    """
    acks = folder / "state" / "world.acks"
    proc = start_world(folder, config)
    try:
        wait_for(lambda: acks.exists() and shared(), proc)
        time.sleep(0.5)
        wait_for(settled, proc)
    finally:
        proc.kill()
        proc.wait()
    acked = read_acks(acks)
    assert acked
    return acked


def resume_elsewhere(
    folder: Path, config: Path, world: str, url: str, acked: list[Ack]
) -> dict[str, Any]:
    """``run --resume-from WORLD --ticks 30`` in ``folder``: resumed, every ack in PostgreSQL.

    Returns:
        The run's ``resume.done`` log line.
    """
    done = subprocess.run(
        run_args(folder, config, "--resume-from", world, "--ticks", "30"),
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"datastore.verified"' in done.stderr
    assert pg_audit(url, acked) == []  # every purchase the killed owner acknowledged is there
    line = next(ln for ln in done.stderr.splitlines() if '"resume.done"' in ln)
    found: dict[str, Any] = json.loads(line)
    return found


def test_resume_from_continues_a_killed_world_elsewhere_and_fences_its_old_owner(
    pg: PgServer, tmp_path: Path
) -> None:
    url = fresh_db(pg)
    shared = tmp_path / "shared"
    a_config = world_config(tmp_path / "a", url, "alpha", shared)
    b_config = world_config(tmp_path / "b", url, "beta", shared)
    a_acks = tmp_path / "a" / "state" / "world.acks"

    # A runs the world; it is killed with SIGKILL once it has acks and a shared snapshot.
    def newest(folder: Path) -> int | None:
        return max((int(p.stem.split("-")[1]) for p in folder.glob("snapshot-*")), default=None)

    acked = kill_9_when(
        tmp_path / "a",
        a_config,
        lambda: newest(shared / "alpha") is not None,
        settled=lambda: newest(tmp_path / "a/state/snapshots") == newest(shared / "alpha"),
    )

    # B continues world "alpha" from the shared store and the database.
    resume_elsewhere(tmp_path / "b", b_config, "alpha", url, acked)
    names = sorted(int(p.stem.split("-")[1]) for p in (shared / "alpha").glob("snapshot-*"))
    assert names
    assert not (shared / "beta").exists()  # B became alpha; it wrote no world of its own

    # Two writers: A (resumed) is frozen, B takes the world over, A wakes up: A must stop.
    a = start_world(tmp_path / "a", a_config, "--resume", "--exit-on-emergency")
    try:
        before = a_acks.stat().st_size
        wait_for(lambda: a_acks.stat().st_size > before, a)
        os.kill(a.pid, signal.SIGSTOP)
        b = start_world(tmp_path / "b", b_config, "--resume-from", "alpha", "--ticks", "200")
        assert b.wait(timeout=60) == 0
        os.kill(a.pid, signal.SIGCONT)
        code = a.wait(timeout=30)
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()
    logs = "".join(p.read_text() for p in (tmp_path / "a").glob("run-*.log"))
    assert '"datastore.fenced"' in logs, logs[-3000:]
    assert "another supervisor opened this world" in logs
    assert code == 3, code  # an emergency stop, its state preserved
    assert pg_audit(url, read_acks(a_acks)) == []


def test_resume_from_bad_input_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('[systems]\nenabled = ["heartbeat"]\n[features]\napi = false\n')
    base = run_args(tmp_path, config)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=60, check=False
        )

    done = run("--resume-from", "x")
    assert done.returncode == 2
    assert "needs a shared snapshot store" in done.stderr
    config.write_text(config.read_text() + '[snapshots]\nstore = "shared"\n')
    for world, message in (("../x", "expected a world name"), ("nobody", "no valid snapshot")):
        done = run("--resume-from", world)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    # A Redis store nobody listens on: one line naming it (never its password).
    config.write_text(config.read_text().replace('"shared"', '"redis://u:s3cret@127.0.0.1:1/0"', 1))
    done = run("--resume-from", "nobody")
    assert done.returncode == 2, done.stderr
    assert "no valid snapshot in redis:127.0.0.1:1/0/supervisor:snapshots:{nobody}" in done.stderr
    assert "cannot read: redis 127.0.0.1:1/0: ConnectionError" in done.stderr
    assert "s3cret" not in done.stderr
    assert "Traceback" not in done.stderr
    done = run("--resume-from", "x", "--fresh")
    assert done.returncode == 2
    assert "excludes" in done.stderr
