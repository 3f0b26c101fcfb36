"""The live one-line status of ``supervisor run`` on a terminal.

Log lines and the status line share standard error: ``LiveStream`` is the
file the logger writes to; it clears the status line, writes the log line,
and draws the status line again below it, so neither garbles the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import trio

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["LiveStream", "live_status"]

#: Seconds between redraws of the status line.
REFRESH = 0.5
_CLEAR = "\r\x1b[2K"


class LiveStream:
    """A file-like wrapper of a terminal that keeps one status line at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.line = ""

    def write(self, text: str) -> int:
        """Write a log line above the status line."""
        self._stream.write(_CLEAR + text)
        if text.endswith("\n") and self.line:
            self._stream.write(self.line)
        return len(text)

    def flush(self) -> None:
        """Flush the terminal."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Always a terminal: the stream is only used on one."""
        return True

    def draw(self, line: str) -> None:
        """Replace the status line."""
        self.line = line
        self._stream.write(_CLEAR + line)
        self._stream.flush()

    def close_line(self) -> None:
        """End the status line, so the shell prompt starts on a fresh line."""
        if self.line:
            self._stream.write("\n")
            self._stream.flush()
            self.line = ""


def status_line(sup: Supervisor) -> str:
    """``tick 1234 | 30.0 Hz | late p99 42 µs | players 200 | errors 0 | development``."""
    lat = sup.lateness.stats()
    players = sup.gauges.get("players")
    errors = sup.errors.total
    quarantined = sup.quarantined()
    parts = [
        f"tick {sup.tick}",
        f"{sup.tick_rate:.1f} Hz",
        f"late p99 {lat.p99 * 1e6:,.0f} µs",
        f"players {players:,.0f}" if players is not None else "players -",
        f"errors {errors}" + (f" ({len(quarantined)} quarantined)" if quarantined else ""),
        sup.phase.value.upper() if sup.phase.value == "emergency_shutdown" else sup.phase.value,
    ]
    return " | ".join(parts)


async def live_status(
    sup: Supervisor,
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
