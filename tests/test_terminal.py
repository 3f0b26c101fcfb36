"""The live status line on a real terminal: log lines scroll whole above it.

``supervisor run`` on a terminal keeps a one-line status at the bottom of
standard error. structlog's print logger writes a log line's text and its
newline in two calls; a stream that cleared the row on every write erased
each line it had just written (``supervisor.start`` and ``api.listening``
left blank rows). The unit tests drive :class:`LiveStream` with a fake
terminal; the e2e test runs the real command in a detached tmux session and
reads the screen back with ``tmux capture-pane``.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor._cli._live import _CLEAR, LiveStream

SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: How long the e2e test waits for the screen to show what it expects.
SCREEN_TIMEOUT = 15.0
STATUS = re.compile(
    r"^tick \d+ \| [\d.]+ Hz \| late p99 ([\d,]+ µs \(10s\)|-) \| players \S+ \| errors \d+"
)


class FakeTerminal(io.StringIO):
    """A StringIO that replays ``\\r`` and ``ESC[2K`` like a terminal, line by line."""

    def screen(self) -> list[str]:
        """The rows a terminal would show after everything written so far."""
        rows = [""]
        text = self.getvalue().replace(_CLEAR, "\x00")
        for ch in text:
            if ch == "\x00":
                rows[-1] = ""
            elif ch == "\n":
                rows.append("")
            else:
                rows[-1] += ch
        return rows


class TestLiveStream:
    def test_text_and_newline_written_apart_make_one_whole_line(self) -> None:
        """The structlog case: the line and its newline in two writes stay one row."""
        term = FakeTerminal()
        live = LiveStream(term)
        live.draw("tick 1 | status")
        live.write("2026 [info] supervisor.start phase=development")
        live.write("\n")
        live.write("2026 [info] api.listening listen=unix:x")
        live.write("\n")
        assert term.screen() == [
            "2026 [info] supervisor.start phase=development",
            "2026 [info] api.listening listen=unix:x",
            "tick 1 | status",
        ]

    def test_several_lines_in_one_write_and_a_held_tail(self) -> None:
        """Whole lines go out at once; the text after the last newline waits for its own."""
        term = FakeTerminal()
        live = LiveStream(term)
        live.draw("status")
        live.write("a\nb\nc")
        assert term.screen() == ["a", "b", "status"]
        live.draw("status 2")
        live.write("d\n")
        assert term.screen() == ["a", "b", "cd", "status 2"]

    def test_close_line_ends_the_status_and_any_held_text(self) -> None:
        """The shell prompt starts on a fresh row; a partial line is not lost."""
        term = FakeTerminal()
        live = LiveStream(term)
        live.draw("status")
        live.write("tail")
        live.close_line()
        assert term.screen() == ["tail", ""]

    def test_status_line_is_cut_to_the_terminal_width(self) -> None:
        """A status line that wrapped would leave rows the clear sequence cannot reach."""
        live = LiveStream(FakeTerminal())  # no terminal size: 80 columns assumed
        live.draw("x" * 200)
        assert live.line == "x" * 79


@pytest.fixture
def tmux_session(tmp_path: Path) -> Iterator[str]:
    """A tmux server of its own (``-L``), killed at the end, whatever happened."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/services.sh installs it)")
    socket_name = f"sup-test-{tmp_path.name}"
    yield socket_name
    subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True, check=False)


def _capture(socket_name: str) -> list[str]:
    out = subprocess.run(
        ["tmux", "-L", socket_name, "capture-pane", "-p", "-t", "run"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [row.rstrip() for row in out.stdout.splitlines()]


@pytest.mark.e2e
def test_log_lines_stay_whole_above_the_status_line(tmp_path: Path, tmux_session: str) -> None:
    """``supervisor run`` in a 160x40 tmux pane: whole log lines, the status line last."""
    command = f"{SUPERVISOR} run --duration 20 --state-dir {tmp_path / 'state'}"
    tmux = ["tmux", "-L", tmux_session, "new-session", "-d", "-s", "run"]
    subprocess.run([*tmux, "-x", "160", "-y", "40", "-c", str(tmp_path), command], check=True)
    deadline = time.monotonic() + SCREEN_TIMEOUT
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = [row for row in _capture(tmux_session) if row]
        if rows and STATUS.match(rows[-1]) and any("api.listening" in r for r in rows):
            break
        time.sleep(0.2)
    screen = "\n".join(rows)
    assert rows, "the pane stayed empty"
    assert STATUS.match(rows[-1]), f"no status line at the bottom:\n{screen}"
    start = [r for r in rows if "supervisor.start" in r]
    listening = [r for r in rows if "api.listening" in r]
    # Whole: the timestamp that begins the line and the key=value pairs that end it.
    assert len(start) == 1, screen
    assert re.match(r"^\d{4}-\d\d-\d\dT.*supervisor\.start .*phase=development", start[0]), screen
    assert len(listening) == 1, screen
    assert re.match(r"^\d{4}-\d\d-\d\dT.*api\.listening .*listen=unix:", listening[0]), screen
    assert rows.index(start[0]) < rows.index(listening[0]) < len(rows) - 1
    assert sum(bool(STATUS.match(r)) for r in rows) == 1, f"a stale status row:\n{screen}"
