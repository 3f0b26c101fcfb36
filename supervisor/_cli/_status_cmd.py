"""The ``supervisor status`` command: the status once, as text or JSON, or ``--watch``-ed.

The text is :mod:`supervisor._cli._status`'s, the watch loop
:mod:`supervisor._cli._watch`'s; both load rich, so they are imported
inside the command and ``supervisor --help`` never pays for them
(tests/test_cli_imports.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import click

from ._client import (
    EPILOG,
    api_get,
    api_options,
    bounded,
    client_from,
    echo_json,
    json_option,
)

__all__ = ["status"]

#: ``status --watch``: the default and the bounds of its interval, in seconds.
WATCH_DEFAULT: Final = 2.0
MIN_WATCH: Final = 0.05
MAX_WATCH: Final = 3600.0


@click.command()
@api_options
@json_option
@click.option(
    "--watch",
    "interval",
    type=float,
    callback=bounded(MAX_WATCH, MIN_WATCH),
    is_flag=False,
    flag_value=WATCH_DEFAULT,
    default=None,
    metavar="[SECONDS]",
    help=f"Redraw in place every SECONDS (default {WATCH_DEFAULT:g}, at least {MIN_WATCH:g}) "
    "until Ctrl-C.",
)
def status(api: str | None, config_path: str | None, as_json: bool, interval: float | None) -> None:
    """Show the phase, tick timing, systems, players, problems and recent lifecycle.

    \b
    Human units for people; --json keeps the machine keys, in seconds and bytes.
    The emergency section appears only while in emergency_shutdown.

    \b
    Example:
      supervisor status --watch 1
    """
    if interval is not None:
        if as_json:
            raise click.UsageError("--watch and --json exclude each other")
        from ._watch import watch  # noqa: PLC0415 - loads rich; --help must not

        watch(client_from(api, config_path), interval)
        return
    data = api_get(api, config_path, "/v1/status")
    if as_json:
        echo_json(data)
        return
    from ._status import print_status  # noqa: PLC0415 - loads rich; --help must not

    print_status(data if isinstance(data, Mapping) else {})


status.epilog = EPILOG
