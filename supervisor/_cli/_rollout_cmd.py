"""``supervisor rollout``: staged rollouts of a feature flag, with rollback on alert rules.

Client commands like ``quarantine``: each is one request to the running
supervisor's API (``GET /v1/rollouts``, ``POST /v1/rollouts/FLAG/start|pause|
resume|abort``, operator role, audited). ``start`` checks its steps and
duration here first, with the server's own checks
(:mod:`supervisor._rollout._plan`), so a typo is one line and exit 2 even
when nothing is running; the flag and rule names are checked by the server,
which knows them (400/404: exit 2 too; a refusal of the state, 409: exit 1).

:func:`attach_rollouts_to_run` wires the capability into ``supervisor run``;
it imports the runtime only when called.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import click

from .._rollout._plan import RolloutInputError, check_name, parse_every, parse_steps
from ._client import (
    EPILOG,
    EXIT_USAGE,
    _text,
    api_get,
    api_options,
    check_reason,
    client_from,
    echo_json,
    fail,
    json_option,
    make_console,
    print_result,
    refused,
)
from ._units import duration

if TYPE_CHECKING:
    from .._core._runtime import Supervisor
    from .._server._audit import AuditLog
    from .._store._shipper import ErrorShipper

__all__ = ["attach_rollouts_to_run", "rollout"]

#: Answers that mean "the request was wrong" (a bad value, an unknown flag): exit 2.
_BAD_REQUEST = frozenset({400, 404})
_OPTION: Final = re.compile(r"^--[a-z-]+: ")
_STYLE = {"running": "cyan", "paused": "yellow", "completed": "green",
          "rolled_back": "bold red", "aborted": "dim"}  # fmt: skip


def _checked(check: Any) -> Any:
    """A click callback running one of the server's input checks (exit 2, one line)."""

    def callback(_ctx: Any, _param: Any, value: Any) -> Any:
        try:
            check(value)
        except RolloutInputError as exc:
            # The server's message names the option; click names it too.
            raise click.BadParameter(_OPTION.sub("", str(exc), count=1)) from None
        return value

    return callback


def _post(api: str | None, config_path: str | None, flag: str, verb: str, body: Any) -> None:
    client = client_from(api, config_path)
    status, data = client.request("POST", f"/v1/rollouts/{quote(flag, safe='')}/{verb}", body=body)
    if status in _BAD_REQUEST:
        message = data.get("error") if isinstance(data, Mapping) else None
        fail(str(message or f"HTTP {status}"), EXIT_USAGE)
    if status != 200:
        refused(status, data, client)
    print_result(f"rollout {verb}", data)


def _reason(func: Any) -> Any:
    return click.option(
        "--reason", default="", callback=check_reason, help="Why (audit log and status)."
    )(func)


@click.group(epilog=EPILOG)
def rollout() -> None:
    """Raise a flag's percent step by step; roll it back when a named alert rule fires.

    \b
    Example:
      supervisor rollout start new_shop --steps 1,5,25,100 --every 10m \\
          --rollback-on error_rate_high
      supervisor rollout status
    """


@rollout.command(epilog=EPILOG)
@click.argument("flag", callback=_checked(lambda v: check_name("flag", v)))
@click.option(
    "--steps",
    required=True,
    callback=_checked(parse_steps),
    help="Increasing percents, comma-separated, up to 100 (e.g. 1,5,25,100).",
)
@click.option(
    "--every",
    required=True,
    callback=_checked(parse_every),
    help="How long each step is watched before the next (e.g. 10m; 1s to 30d).",
)
@click.option(
    "--rollback-on",
    "rollback_on",
    multiple=True,
    callback=_checked(lambda names: [check_name("rule", n) for n in names]),
    help="An alert rule that rolls the flag back if it fires during a step (repeatable).",
)
@_reason
@api_options
def start(
    flag: str,
    steps: str,
    every: str,
    rollback_on: tuple[str, ...],
    reason: str,
    api: str | None,
    config_path: str | None,
) -> None:
    """Start rolling FLAG out: the first step now, the next one every --every.

    \b
    If a --rollback-on rule fires during a step, FLAG goes back to the last
    step watched in full (or its percent before the rollout) and the rollout
    stops with the reason. Needs the operator role.

    \b
    Example:
      supervisor rollout start new_shop --steps 1,5,25,100 --every 10m \\
          --rollback-on error_rate_high --reason "launch the new shop"
    """
    body = {"steps": steps, "every": every, "rollback_on": list(rollback_on), "reason": reason}
    _post(api, config_path, flag, "start", body)


def _verb_command(verb: str, text: str) -> click.Command:
    @click.argument("flag")
    @_reason
    @api_options
    def command(flag: str, reason: str, api: str | None, config_path: str | None) -> None:
        _post(api, config_path, flag, verb, {"reason": reason})

    example = f'supervisor rollout {verb} new_shop --reason "..."'
    command.__doc__ = f"{text}\n\n\b\nExample:\n  {example}\n"
    return rollout.command(name=verb, epilog=EPILOG)(command)


_verb_command("pause", "Hold FLAG's rollout at its step (a named rule firing still rolls it back).")
_verb_command("resume", "Watch a paused rollout's step again, for the time it still owes.")
_verb_command("abort", "Stop FLAG's rollout and put the flag back to its percent before it.")


def _step(item: Mapping[str, Any]) -> str:
    steps = item.get("steps") or []
    index = item.get("step")
    if not isinstance(index, int) or not 0 <= index < len(steps):
        return "-"
    return f"{index + 1}/{len(steps)} ({', '.join(f'{s:g}' for s in steps)})"


def _print_rollouts(data: Mapping[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415 - rich loads only when a table is printed

    console = make_console()
    items = data.get("rollouts") or []
    if not items:
        console.print("no rollouts (supervisor rollout start FLAG ...)", markup=False)
    else:
        table = Table("flag", "state", "percent", "step", "next step in", "rollback on", "reason")
        for item in items:
            state = str(item.get("state"))
            due = item.get("next_step_in")
            table.add_row(
                _text(item.get("flag")),
                f"[{_STYLE.get(state, '')}]{state}[/]",
                f"{item.get('percent', 0):g} %",
                _step(item),
                "-" if due is None else duration(due),
                _text(", ".join(item.get("rollback_on") or []) or "-"),
                _text(item.get("reason") or "-"),
            )
        console.print(table)
    for problem in data.get("problems") or []:
        console.print(f"problem: {problem}", markup=False, highlight=False)


@rollout.command(epilog=EPILOG)
@api_options
@json_option
def status(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Each flag's rollout: state, percent, step, time to the next step, reason.

    \b
    Example:
      supervisor rollout status --json
    """
    data = api_get(api, config_path, "/v1/rollouts")
    if as_json:
        echo_json(data)
    else:
        _print_rollouts(data if isinstance(data, Mapping) else {})


# ---------------------------------------------------------------- the run's wiring


def attach_rollouts_to_run(
    sup: Supervisor, error_store: ErrorShipper | None, *, audit_log: AuditLog | None = None
) -> None:
    """Roll flags out inside ``supervisor run``: automatic changes audited, rollbacks noted.

    The audit log is the API's (``audit_log``, the same writer); with the API off,
    one of its own on ``[api] audit_log``. A rollback is also an incident of
    ``supervisor report``.
    """
    from .._rollout._service import attach_rollouts  # noqa: PLC0415 - run only
    from .._server._audit import AuditEntry, AuditLog  # noqa: PLC0415 - run only

    log = audit_log or AuditLog(
        sup.config.path(sup.active_config.api.audit_log), redactor=sup.redactor
    )

    def audit(action: str, arguments: Mapping[str, Any], detail: str) -> bool:
        entry = AuditEntry(
            caller="supervisor:rollout",
            role=None,
            action=action,
            arguments=arguments,
            status=200,
            detail=detail,
        )
        return log.write(entry)

    rollouts = attach_rollouts(sup, audit=audit)
    if rollouts is not None and error_store is not None:
        store = error_store
        rollouts.on_rollback.append(lambda r: store.incident("rollback", f"{r.flag}: {r.reason}"))
