"""The operator's hands on one system and on the state: ``quarantine``, ``release``, ``snapshot``.

Each is one audited request to the API (``POST /v1/systems/NAME/quarantine``,
``POST /v1/systems/NAME/release``, ``POST /v1/snapshot``) that needs the
operator role, like ``shutdown``. The supervisor executes it at a defined
point of the tick loop (after the current step) and answers when it has
happened. A supervisor too old to have a route answers 404 "no such
endpoint", and the command says so in its one error line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click

from ._client import EPILOG, api_options, api_post, check_reason, print_result

__all__ = ["OPERATOR_COMMANDS"]


def _reason_option(func: Any) -> Any:
    return click.option(
        "--reason", default="", callback=check_reason, help="Why (audit log and status)."
    )(func)


def _system_path(name: str, action: str) -> str:
    return f"/v1/systems/{quote(name, safe='')}/{action}"


@click.command()
@click.argument("name")
@api_options
@_reason_option
def quarantine(name: str, api: str | None, config_path: str | None, reason: str) -> None:
    """Take system NAME out of the tick until `supervisor release NAME`.

    \b
    The system stops stepping after the current step; the others tick on.
    Its state stays in the snapshots. Needs the operator role.

    \b
    Example:
      supervisor quarantine leaderboard --reason "slow query, investigating"
    """
    answer = api_post(api, config_path, _system_path(name, "quarantine"), {"reason": reason})
    print_result("quarantine", answer)


@click.command()
@click.argument("name")
@api_options
@_reason_option
def release(name: str, api: str | None, config_path: str | None, reason: str) -> None:
    """Put system NAME back into the tick, its restart budget reset.

    \b
    Example:
      supervisor release leaderboard
    """
    answer = api_post(api, config_path, _system_path(name, "release"), {"reason": reason})
    print_result("release", answer)


@click.command()
@api_options
@_reason_option
def snapshot(api: str | None, config_path: str | None, reason: str) -> None:
    """Write a snapshot of every system now and print its path.

    \b
    Example:
      supervisor snapshot --reason "before the season reset"
    """
    answer = api_post(api, config_path, "/v1/snapshot", {"reason": reason})
    if isinstance(answer, Mapping) and isinstance(answer.get("path"), str):
        tick = answer.get("tick")
        click.echo(f"snapshot: {answer['path']}" + (f" (tick {tick})" if tick is not None else ""))
        return
    print_result("snapshot", answer)


#: Added to the ``supervisor`` group after the client COMMANDS.
OPERATOR_COMMANDS: list[click.Command] = [quarantine, release, snapshot]
for _command in OPERATOR_COMMANDS:
    _command.epilog = EPILOG
