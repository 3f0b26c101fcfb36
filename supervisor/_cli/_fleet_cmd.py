"""``supervisor fleet``: the fleet registry and its commands, straight from Redis (issue 14).

``fleet status`` lists every live member; ``fleet emergency``, ``fleet phase``
and ``fleet clear`` issue a command to all of them (a broadcast and a
durable flag, audited in the fleet's Redis stream); ``fleet audit`` reads
that stream. None of them needs a member to be reachable. The Redis URL
comes from ``--redis`` or the config's ``[fleet] redis``.

Light at import, like every client command: trio, coredis and the fleet
package load inside the command (``tests/test_cli_imports.py``).
:func:`attach_member` is the run's side: it makes a ``supervisor run`` a
member, its actions written to the run's audit log.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._core._config_fleet import NAME_PATTERN, check_redis_url, safe_url
from .._errors import ConfigError
from ._client import EXIT_FAILED, EXIT_USAGE, _text, check_reason, echo_json, fail, json_option
from ._config_cmd import load_config

if TYPE_CHECKING:
    from .._core._runtime import Supervisor
    from .._fleet import FleetControl, FleetMember

__all__ = ["attach_member", "fleet"]

_T = TypeVar("_T")
#: Every fleet command's help ends with this.
FLEET_EPILOG = (
    "Reads Redis directly (--redis, else [fleet] redis of the config); no member needs to "
    "be reachable. Exit codes: 0 done; 1 Redis unreachable or failing; 2 usage or config error."
)
F = TypeVar("F", bound=Callable[..., Any])


def attach_member(sup: Supervisor) -> FleetMember | None:
    """Make ``sup``'s run a fleet member when ``[fleet] redis`` is set.

    The member's actions go to the run's audit log (``[api] audit_log``),
    written like the API's entries, with the caller ``fleet:ORIGIN``.
    """
    if not sup.config.fleet.enabled:
        return None
    from .._fleet import FleetAudit, attach_fleet
    from .._server._audit import AuditEntry, AuditLog

    log = AuditLog(sup.config.path(sup.active_config.api.audit_log), redactor=sup.redactor)

    def write(entry: FleetAudit) -> bool:
        return log.write(
            AuditEntry(
                caller=entry.caller,
                role="operator",
                action=entry.action,
                arguments=entry.arguments,
                status=entry.status,
                detail=entry.detail,
            )
        )

    return attach_fleet(sup, audit=write)


def _origin() -> str:
    """Who issues a command: ``cli:USER@HOST``."""
    try:
        import getpass  # only to name the operator of a fleet command

        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"[:200]


def _fleet_options(func: F) -> F:
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="TOML config whose [fleet] section to use (default: ./supervisor.toml).",
    )(func)
    func = click.option(
        "--namespace", metavar="NAME", help="The fleet's namespace (default: from the config)."
    )(func)
    return click.option(
        "--redis",
        "redis_url",
        metavar="redis://HOST:PORT/DB",
        help="The fleet's Redis (default: [fleet] redis of the config).",
    )(func)


def _control(redis_url: str | None, namespace: str | None, config_path: str | None) -> FleetControl:
    """The control plane for the options given; a bad or missing one: exit 2, one line."""
    from .._fleet import FleetControl

    try:
        config = load_config(config_path).fleet
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    url = redis_url if redis_url is not None else config.redis
    if url is None:
        fail("no fleet Redis: pass --redis redis://HOST:PORT/DB or set [fleet] redis", EXIT_USAGE)
    problem = check_redis_url(url)
    if problem is not None:
        fail(f"--redis: {problem}", EXIT_USAGE)
    ns = namespace if namespace is not None else config.namespace
    if not NAME_PATTERN.fullmatch(ns):
        fail(f"--namespace: expected letters, digits, '.', '_' or '-', got {ns!r:.60}", EXIT_USAGE)
    return FleetControl(url, ns, timeout=max(config.timeout, 2.0))


def _run(control: FleetControl, job: Callable[[FleetControl], Awaitable[_T]]) -> _T:
    """Run ``job`` with the control plane open; Redis unreachable or failing: exit 1, one line."""
    import trio

    async def main() -> _T:
        with trio.fail_after(control.timeout * 5):
            async with control:
                return await job(control)

    try:
        return trio.run(main)
    except (Exception, trio.TooSlowError) as exc:  # every Redis failure: one line
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # type: ignore[assignment]
        detail = " ".join(str(exc).split())[:300] or "no answer in time"
        fail(f"fleet Redis {safe_url(control.url)}: {type(exc).__name__}: {detail}", EXIT_FAILED)


@click.group()
def fleet() -> None:
    """The fleet registry on Redis: list members, send them commands.

    \b
    Examples:
      supervisor fleet status --redis redis://10.0.0.5:6379/0
      supervisor fleet emergency --reason "exploit in the economy"
      supervisor fleet phase production --reason "release 1.4"
      supervisor fleet clear --reason "fixed"
    """


@fleet.command("status", epilog=FLEET_EPILOG)
@_fleet_options
@json_option
def status(
    redis_url: str | None, namespace: str | None, config_path: str | None, as_json: bool
) -> None:
    """List every live member: phase, tick rate, lateness p99, players, errors, heartbeat age.

    \b
    Also counts members gone without leaving (killed: their record expired)
    and shows the durable flags in force.
    Example: supervisor fleet status --redis redis://10.0.0.5:6379/0
    """
    from .._fleet import member_rows

    control = _control(redis_url, namespace, config_path)
    data = _run(control, lambda c: c.members())
    if as_json:
        echo_json(data)
        return
    from rich.table import Table

    from ._client import make_console

    console = make_console()
    table = Table("id", "host", "phase", "tick rate", "p99 ms", "players", "errors", "api", "age")
    for row in member_rows(data["members"]):
        table.add_row(*(_text(cell) for cell in row))
    console.print(table)
    console.print(
        f"{len(data['members'])} live, {len(data['gone'])} gone without leaving "
        f"(namespace {data['namespace']}, generation {data['generation']})",
        markup=False,
    )
    for kind, flag in data["flags"].items():
        if flag is not None:
            console.print(f"durable {kind} flag: {flag}", markup=False)


def _issue(
    control: FleetControl, action: str, reason: str, phase: str | None = None, force: bool = False
) -> None:
    origin = _origin()
    generation, receivers = _run(
        control,
        lambda c: c.issue(action, reason=reason, origin=origin, phase=phase, force=force),
    )
    click.echo(
        f"fleet {action} #{generation}: broadcast to {receivers} subscribed member(s); "
        + ("durable emergency flag cleared" if action == "clear" else "durable flag set")
    )


def _required_reason(ctx: Any, param: Any, value: str) -> str:
    value = check_reason(ctx, param, value)
    if not value.strip():
        raise click.BadParameter("a fleet command needs a reason (it is audited)")
    return value


_reason = click.option(
    "--reason", required=True, callback=_required_reason, help="Why (audited, required)."
)


@fleet.command("emergency", epilog=FLEET_EPILOG)
@_fleet_options
@_reason
def emergency(
    redis_url: str | None, namespace: str | None, config_path: str | None, reason: str
) -> None:
    """Put every member into EMERGENCY_SHUTDOWN (state preserved), now and at their start-up.

    The durable flag stays until `supervisor fleet clear`: a member started
    meanwhile enters the emergency as soon as it ticks.

    \b
    Example: supervisor fleet emergency --reason "exploit in the economy"
    """
    _issue(_control(redis_url, namespace, config_path), "emergency", reason)


@fleet.command("phase", epilog=FLEET_EPILOG)
@click.argument(
    "target",
    metavar="PHASE",
    type=click.Choice(["development", "testing", "production"], case_sensitive=False),
)
@_fleet_options
@click.option("--force", is_flag=True, help="Skip each member's readiness gate (recorded).")
@_reason
def phase(
    target: str,
    redis_url: str | None,
    namespace: str | None,
    config_path: str | None,
    force: bool,
    reason: str,
) -> None:
    """Move every member to PHASE (each passes its own readiness gate unless --force).

    \b
    A member that refuses says why in its audit log and the fleet's stream.
    Example: supervisor fleet phase production --reason "release 1.4"
    """
    _issue(_control(redis_url, namespace, config_path), "phase", reason, target.lower(), force)


@fleet.command("clear", epilog=FLEET_EPILOG)
@_fleet_options
@_reason
def clear(
    redis_url: str | None, namespace: str | None, config_path: str | None, reason: str
) -> None:
    """Lift the durable emergency flag: members started from now on run normally.

    Members already in EMERGENCY_SHUTDOWN stay there until restarted.

    \b
    Example: supervisor fleet clear --reason "exploit fixed in 1.4.1"
    """
    _issue(_control(redis_url, namespace, config_path), "clear", reason)


@fleet.command("audit", epilog=FLEET_EPILOG)
@_fleet_options
@json_option
@click.option(
    "--count", default=50, type=click.IntRange(1, 10_000), help="Entries to show (newest first)."
)
def audit(
    redis_url: str | None, namespace: str | None, config_path: str | None, as_json: bool, count: int
) -> None:
    """The fleet's audit stream: every command issued and every member's answer.

    \b
    Example: supervisor fleet audit --count 20
    """
    control = _control(redis_url, namespace, config_path)
    entries = _run(control, lambda c: c.audit(count))
    if as_json:
        echo_json(entries)
        return
    for e in entries:
        who = e.get("member") or e.get("origin")
        what = e.get("action")
        line = f"{e['id']} {e.get('kind')} #{e.get('generation')} {what} by {who}"
        if e.get("kind") == "ack":
            line += f": {e.get('status')} {e.get('detail')}"
        else:
            line += f": {e.get('reason')}" + (f" -> {e['phase']}" if e.get("phase") else "")
        click.echo(" ".join(line.split()))
