"""``supervisor status --watch``: the status redrawn in place, like ``top``, until Ctrl-C.

rich's ``Live`` redraws the same screen region each time, so the terminal
keeps no scrolling history of old figures. A supervisor that stops
answering (restarting, or stopped) is shown as such and watched on: the
display picks up again when it answers. Until the supervisor reports its
own measured tick rate, the watch measures it between two answers. A
refusal (a missing or wrong token) ends the command, as a plain ``status``
would. Ctrl-C exits 0: it is how a watch is meant to end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ._client import EXIT_OK, ApiClient, Unreachable, refused
from ._status import render_status

__all__ = ["watch"]


@attrs.define
class _Watch:
    """The screen of one watch, and the last answer's tick, to measure the rate between two."""

    client: ApiClient
    interval: float
    last: tuple[int, float] | None = None

    def frame(self) -> Group:
        """One screen: a header line, then the status or why there is none."""
        header = Text(
            f"every {self.interval:g} s · Ctrl-C to quit · {time.strftime('%H:%M:%S')}",
            style="dim",
        )
        try:
            code, data = self.client.try_request("GET", "/v1/status")
        except Unreachable as exc:
            self.last = None
            return Group(header, Text(str(exc), style="red"))
        if code != 200:
            refused(code, data, self.client)
        data = data if isinstance(data, Mapping) else {}
        return Group(header, render_status(data, measured=self._measure(data.get("tick"))))

    def _measure(self, tick: Any) -> float | None:
        """Ticks per second since the previous answer (None for the first, or a restart)."""
        if not isinstance(tick, int):
            return None
        now = time.monotonic()
        previous, self.last = self.last, (tick, now)
        if previous is None or tick < previous[0] or now <= previous[1]:
            return None
        return (tick - previous[0]) / (now - previous[1])


def watch(client: ApiClient, interval: float) -> None:
    """Redraw the status every ``interval`` seconds until Ctrl-C (then exit 0)."""
    console = Console(highlight=False)
    screen = _Watch(client, interval)
    try:
        with Live(
            screen.frame(),
            console=console,
            auto_refresh=False,
            vertical_overflow="crop",
            redirect_stderr=False,
        ) as live:
            while True:
                time.sleep(interval)
                live.update(screen.frame(), refresh=True)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_OK) from None
