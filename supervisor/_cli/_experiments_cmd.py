"""``supervisor experiments``: the flags, and each experiment's arms and rate test (issue 13).

A client command like ``alerts``: it asks the running supervisor's
``GET /v1/experiments`` and imports no server, trio or metrics code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ._client import EPILOG, _text, api_get, api_options, echo_json, json_option, make_console

__all__ = ["experiments"]


def _number(value: object, spec: str) -> str:
    return "-" if not isinstance(value, int | float) else format(value, spec)


def _print(data: Mapping[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415 - rich loads only when a table is printed

    console = make_console()
    flags = data.get("flags") or []
    if flags:
        table = Table("flag", "enabled", "percent", "segments")
        for flag in flags:
            percent = _number(flag.get("percent"), "g") + (
                " (set at run time)" if flag.get("runtime_percent") else ""
            )
            table.add_row(
                _text(flag.get("name")),
                _text(flag.get("enabled")),
                percent,
                _text(", ".join(map(str, flag.get("segments") or [])) or "-"),
            )
        console.print(table)
    experiments = data.get("experiments") or []
    if not flags and not experiments:
        console.print("no flags or experiments ([flags.NAME], [experiments.NAME])", markup=False)
    for exp in experiments:
        _print_experiment(console, exp, data)


def _print_experiment(console: Any, exp: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415

    state = "" if exp.get("enabled") else " (disabled: everyone in the control arm)"
    table = Table(
        "arm", "players", "player-min", "errors", "errors/player-min", "systems",
        title=f"experiment {_text(exp.get('name'))}{state}",
    )  # fmt: skip
    for arm in exp.get("arms") or []:
        units = ", ".join(
            f"{u.get('name')} ({u.get('state')}, max_restarts {u.get('max_restarts')})"
            for u in arm.get("systems") or []
        )
        table.add_row(
            _text(arm.get("arm")),
            _number(arm.get("players"), "d"),
            _number(arm.get("player_minutes"), ".1f"),
            _number(arm.get("errors"), "d"),
            _number(arm.get("errors_per_player_minute"), ".4f"),
            _text(units or "-"),
        )
    console.print(table)
    for cmp in exp.get("comparisons") or []:
        if cmp.get("p") is None:
            verdict = "no data yet"
        else:
            word = "significant" if cmp.get("significant") else "not significant"
            verdict = (
                f"z = {cmp['z']:.2f}, p = {cmp['p']:.3g}: {word} at {data.get('significance')}"
            )
        console.print(
            f"{cmp.get('arm')} vs {cmp.get('control')}: {verdict}", highlight=False, markup=False
        )
    for system in exp.get("systems") or []:
        step = system.get("step") or {}
        console.print(
            f"read by {system.get('name')}: step p50 {_number(step.get('p50_ms'), '.3f')} ms, "
            f"p99 {_number(step.get('p99_ms'), '.3f')} ms",
            highlight=False,
            markup=False,
        )
    console.print(f"test: {data.get('test')}", highlight=False, markup=False)


@click.command(epilog=EPILOG)
@api_options
@json_option
def experiments(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the flags, and each experiment's arms: players, errors per player-minute, a rate test.

    \b
    Each arm is compared with the first (the control) by a two-sample
    Poisson rate test on errors per player-minute; p < 0.05 is called
    significant. An error counts for the arm its system last served.
    Example: supervisor experiments --json
    """
    data = api_get(api, config_path, "/v1/experiments")
    if as_json:
        echo_json(data)
    else:
        _print(data if isinstance(data, Mapping) else {})
