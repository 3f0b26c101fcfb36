"""End to end: hostile config files given to ``supervisor run`` exit 2 with one line.

A few representative cases only (each is a process start); the full sweep of
130 hostile configs is the attacker run described in the issue-8 report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPERVISOR = Path(sys.executable).parent / "supervisor"

pytestmark = pytest.mark.skipif(not SUPERVISOR.exists(), reason="console script not installed")


def run(config: Path | str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``supervisor run --config CONFIG --ticks 5``; a hang fails after 30 s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    clean.update(env or {})
    done = subprocess.run(
        [str(SUPERVISOR), "run", "--config", str(config), "--ticks", "5"],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=30,
        check=False,
    )
    return done.returncode, done.stderr


def assert_one_line(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert expected in stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"[watchdog]\nhang_timeout = nan\n", "[watchdog.hang_timeout] expected a finite number"),
        (b"x = " + b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"#" * 2_000_000, "too large: 2000000 bytes"),
        (b"\xef\xbb\xbf[supervisor]\n", "byte-order mark"),
    ],
    ids=["nan", "nested", "2MB", "BOM"],
)
def test_hostile_file(tmp_path: Path, text: bytes, expected: str) -> None:
    """Each hostile file is exit 2 and one stderr line (old main: tracebacks for nested)."""
    config = tmp_path / "game.toml"
    config.write_bytes(text)
    assert_one_line(*run(config, tmp_path), expected)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo(tmp_path: Path) -> None:
    """``--config`` on a FIFO exits 2 at once (old main hung; the 30 s timeout guards it)."""
    os.mkfifo(tmp_path / "game.toml")
    assert_one_line(*run(tmp_path / "game.toml", tmp_path), "is a FIFO, not a regular file")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero(tmp_path: Path) -> None:
    """``--config /dev/zero`` exits 2 at once (old main read it without limit)."""
    assert_one_line(*run("/dev/zero", tmp_path), "is a character device")


def test_misspelt_variable(tmp_path: Path) -> None:
    """A misspelt SUPERVISOR_* variable is exit 2 with a suggestion (old main ignored it)."""
    config = tmp_path / "game.toml"
    config.write_text("")
    code, stderr = run(config, tmp_path, {"SUPERVISOR_SUPERVISR_TICK_RATE": "60"})
    assert_one_line(code, stderr, "did you mean SUPERVISOR_SUPERVISOR_TICK_RATE?")
