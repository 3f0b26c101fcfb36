"""``supervisor alerts``: each alert rule's state and where its notifications went (issue 11).

A client command like ``status``: it asks the running supervisor's
``GET /v1/alerts`` and imports no server, trio or metrics code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ._client import EPILOG, _text, api_get, api_options, echo_json, json_option, make_console

__all__ = ["alerts"]

_STYLE = {"firing": "bold red", "pending": "yellow", "resolved": "green", "inactive": "dim"}


def _seconds(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.0f} s"


def _since(rule: Mapping[str, Any]) -> str:
    """How long in its state: pending or firing for, and a firing rule's time clearing."""
    state = rule.get("state")
    if state == "pending":
        return _seconds(rule.get("holding_for"))
    if state != "firing":
        return "-"
    text = _seconds(rule.get("firing_for"))
    clearing = rule.get("clearing_for")
    return text if clearing is None else f"{text} (false for {_seconds(clearing)})"


def _print_alerts(data: Mapping[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415 - rich loads only when a table is printed

    console = make_console()
    rules = data.get("rules") or []
    if not rules:
        console.print("no alert rules ([[alerts.rules]] in the config)", markup=False)
    else:
        table = Table("rule", "severity", "state", "since", "value", "when", "fired")
        for rule in rules:
            state = str(rule.get("state"))
            value = rule.get("value")
            table.add_row(
                _text(rule.get("rule")),
                _text(rule.get("severity")),
                f"[{_STYLE.get(state, '')}]{state}[/]",
                _since(rule),
                "-" if not isinstance(value, int | float) else f"{value:g}",
                _text(rule.get("when")),
                _text(rule.get("fired", 0)),
            )
        console.print(table)
    for dest in data.get("destinations") or []:
        line = (
            f"{dest.get('destination')}: sent {dest.get('sent', 0)}, "
            f"queued {dest.get('queued', 0)}, "
            f"failed attempts {dest.get('failed_attempt', 0)}, gave up {dest.get('gave_up', 0)}, "
            f"dropped {dest.get('dropped_queue_full', 0)}"
        )
        if dest.get("last_error"):
            line += f" (last error: {dest['last_error']})"
        console.print(line, highlight=False, markup=False)


@click.command(epilog=EPILOG)
@api_options
@json_option
def alerts(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Show each alert rule (pending, firing, resolved) and its notifications' delivery.

    \b
    "since" is how long a rule has been pending or firing; a firing rule
    whose condition is false again shows for how long (it resolves once
    that reaches its keep_firing_for).
    Example: supervisor alerts --config configs/production.toml
    """
    data = api_get(api, config_path, "/v1/alerts")
    if as_json:
        echo_json(data)
    else:
        _print_alerts(data if isinstance(data, Mapping) else {})
