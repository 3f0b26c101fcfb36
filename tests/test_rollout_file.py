"""The rollouts' durable record: atomic under kill -9, and never trusting what it reads."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from supervisor._files import UnsafePathError
from supervisor._rollout._file import FILE_NAME, RolloutFile

#: kill -9 of a writer in the middle of its saves, this many times.
KILLS = 12

WRITER = textwrap.dedent(
    """
    import sys
    from supervisor._rollout._file import RolloutFile
    f = RolloutFile(sys.argv[1])
    big = "x" * 200_000  # a save long enough to be killed in the middle of
    i = 0
    print("ready", flush=True)
    while True:
        f.save([{"n": i, "pad": big}])
        i += 1
    """
)


def test_round_trip(tmp_path: Path) -> None:
    """What is saved is what is read; the folder is made (0700) if missing."""
    f = RolloutFile(tmp_path / "state")
    assert f.load() == ([], None)
    f.save([{"flag": "a"}])
    assert f.load() == ([{"flag": "a"}], None)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert [p.name for p in (tmp_path / "state").iterdir()] == [FILE_NAME]  # no temp left


def test_kill_9_mid_save_leaves_a_whole_record(tmp_path: Path) -> None:
    """Killed at random instants while saving, the file is always one whole record."""
    rng = random.Random(13)
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.01, 0.08))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        records, problem = RolloutFile(tmp_path).load()
        assert problem is None
        assert len(records) <= 1
        # The next start removed any temporary file the killed save left.
        assert [p.name for p in tmp_path.iterdir()] in ([], [FILE_NAME])
    assert RolloutFile(tmp_path).load()[0], "no save ever completed"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "Expecting"),
        (b'{"format": 2, "rollouts": []}', "not a format 1"),
        (b'{"format": 1, "rollouts": [1]}', "not a list of records"),
        (b"\xff\xfe", "codec"),
        (b" " * 1_100_000, "too large"),
    ],
)
def test_a_bad_file_is_moved_aside(tmp_path: Path, content: bytes, says: str) -> None:
    """Unreadable as a record: kept aside under a new name, never deleted, and said why."""
    (tmp_path / FILE_NAME).write_bytes(content)
    records, problem = RolloutFile(tmp_path).load()
    assert records == []
    assert problem is not None
    assert says in problem
    assert "moved aside" in problem
    (aside,) = tmp_path.iterdir()
    assert aside.read_bytes() == content


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO planted as the record is refused at once (reading it would block forever)."""
    os.mkfifo(tmp_path / FILE_NAME)
    records, problem = RolloutFile(tmp_path).load()
    assert records == []
    assert problem is not None
    assert "FIFO" in problem


def test_save_refuses_a_path_that_is_not_a_file(tmp_path: Path) -> None:
    """A directory (or a symlink to a device) where the record goes: one line, nothing written."""
    (tmp_path / FILE_NAME).mkdir()
    with pytest.raises(UnsafePathError, match="is a directory"):
        RolloutFile(tmp_path).save([])
    (tmp_path / FILE_NAME).rmdir()
    (tmp_path / FILE_NAME).symlink_to("/dev/null")
    with pytest.raises(UnsafePathError, match="character device"):
        RolloutFile(tmp_path).save([])
