"""The live one-line status of ``supervisor run`` on a terminal.

Log lines and the status line share standard error: ``LiveStream`` is the
file the logger writes to. It holds back a partial line until its newline
arrives (structlog's print logger writes the text and the newline in two
calls), then clears the status line, writes the whole lines, and draws the
status line again below them, so log lines scroll whole above it and neither
garbles the other (``tests/test_terminal.py`` checks a real terminal under tmux).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, TextIO

import trio

from .._core._phase import Phase

if TYPE_CHECKING:
    from .._core._windows import Windowed

__all__ = ["LiveStream", "live_status"]

#: Seconds between redraws of the status line.
REFRESH = 0.5
_CLEAR = "\r\x1b[2K"


class _Errors(Protocol):
    total: int


class LiveSource(Protocol):
    """What the status line reads of a supervisor: public counters only."""

    def windows(self) -> Windowed: ...
    @property
    def gauges(self) -> Mapping[str, float]: ...
    @property
    def errors(self) -> _Errors: ...
    @property
    def tick(self) -> int: ...
    @property
    def tick_rate(self) -> float: ...
    @property
    def phase(self) -> Phase: ...
    def quarantined(self) -> tuple[str, ...]: ...


class LiveStream:
    """A file-like wrapper of a terminal that keeps one status line at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""
        self.line = ""

    def write(self, text: str) -> int:
        """Buffer ``text``; write every completed line above the status line."""
        cut = text.rfind("\n")
        if cut < 0:
            self._partial += text
            return len(text)
        whole = self._partial + text[: cut + 1]
        self._partial = text[cut + 1 :]
        self._stream.write(_CLEAR + whole + self.line)
        return len(text)

    def flush(self) -> None:
        """Flush the terminal (a partial line stays held until its newline)."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Always a terminal: the stream is only used on one."""
        return True

    def draw(self, line: str) -> None:
        """Replace the status line, cut to the terminal's width so it never wraps.

        A wrapped line would leave its first rows behind: the clear sequence
        only erases the row the cursor is on.
        """
        self.line = line[: self._columns() - 1]
        self._stream.write(_CLEAR + self.line)
        self._stream.flush()

    def close_line(self) -> None:
        """End the status line (and any held text), so the shell prompt starts on a fresh line."""
        if self.line or self._partial:
            self._stream.write((_CLEAR + self._partial + "\n") if self._partial else "\n")
            self._partial = ""
            self._stream.flush()
            self.line = ""

    def _columns(self) -> int:
        try:
            return max(os.get_terminal_size(self._stream.fileno()).columns, 20)
        except (OSError, ValueError, AttributeError):
            return 80


def status_line(sup: LiveSource) -> str:
    """``tick 1234 | 30.0 Hz | late p99 42 µs (10s) | players 200 | errors 0 | development``.

    Lateness over the last 10 s, not since start: one bad minute long ago
    must not pin the figure for good.
    """
    late = "late p99 -"  # before the first run's first sample
    for label, lateness, _work in sup.windows().windows[:1]:
        late = f"late p99 {lateness.p99 * 1e6:,.0f} µs ({label})"
    players = sup.gauges.get("players")
    errors = sup.errors.total
    quarantined = sup.quarantined()
    parts = [
        f"tick {sup.tick}",
        f"{sup.tick_rate:.1f} Hz",
        late,
        f"players {players:,.0f}" if players is not None else "players -",
        f"errors {errors}" + (f" ({len(quarantined)} quarantined)" if quarantined else ""),
        sup.phase.value.upper() if sup.phase is Phase.EMERGENCY_SHUTDOWN else sup.phase.value,
    ]
    return " | ".join(parts)


async def live_status(
    sup: LiveSource,
    stream: LiveStream,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Redraw the status line every ``REFRESH`` seconds until cancelled."""
    task_status.started()
    try:
        while True:
            stream.draw(status_line(sup))
            await trio.sleep(REFRESH)
    finally:
        stream.close_line()
