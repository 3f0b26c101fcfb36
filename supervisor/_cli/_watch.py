"""``supervisor status --watch``: the status redrawn in place, like ``top``, until Ctrl-C.

rich's ``Live`` redraws the same screen region each time, so the terminal
keeps no scrolling history of old figures. A supervisor that stops
answering (restarting, or stopped) is shown as such and watched on: the
display picks up again when it answers. A refusal (a missing or wrong
token) ends the command, as a plain ``status`` would. Ctrl-C exits 0: it is
how a watch is meant to end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ._client import EXIT_OK, ApiClient, Unreachable, refused
from ._status import render_status

__all__ = ["watch"]


def _frame(client: ApiClient, interval: float) -> Group:
    """One screen: a header line, then the status or why there is none."""
    header = Text(
        f"every {interval:g} s · Ctrl-C to quit · {time.strftime('%H:%M:%S')}", style="dim"
    )
    try:
        code, data = client.try_request("GET", "/v1/status")
    except Unreachable as exc:
        return Group(header, Text(str(exc), style="red"))
    if code != 200:
        refused(code, data, client)
    return Group(header, render_status(data if isinstance(data, Mapping) else {}))


def watch(client: ApiClient, interval: float) -> None:
    """Redraw the status every ``interval`` seconds until Ctrl-C (then exit 0)."""
    console = Console(highlight=False)
    try:
        with Live(
            _frame(client, interval),
            console=console,
            auto_refresh=False,
            vertical_overflow="crop",
            redirect_stderr=False,
        ) as live:
            while True:
                time.sleep(interval)
                live.update(_frame(client, interval), refresh=True)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_OK) from None
