"""The commands that talk to a running supervisor through its HTTP API.

``shutdown``, ``restart``, ``phase``, ``readiness`` and ``errors`` (and
``status`` in :mod:`supervisor._cli._status_cmd`, the operator commands in
:mod:`supervisor._cli._operator`, built on the helpers here) each find the
API the same way (``--api``, else ``--config FILE``'s
``[api] listen``, else ``./supervisor.toml``'s, else the default socket),
send ``SUPERVISOR_TOKEN`` as a bearer token when it is set, and end in one
of three ways: the answer (a table for people, the raw JSON with
``--json``) and exit 0; one ``supervisor: error: ...`` line and exit 1 (the
supervisor refused, or is not running); or a usage error and exit 2.
The lead adds :data:`COMMANDS` to the ``supervisor`` click group.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import urlencode

import attrs
import click

from .._address import MAX_REASON, ListenAddress, parse_listen
from .._core._config import Config
from .._core._config_sections import ApiConfig
from .._errors import ConfigError
from ._units import word

if TYPE_CHECKING:
    # Imported where used: ``supervisor --help`` and a refused command never
    # pay for an HTTP client or a table renderer (tests/test_cli_imports.py).
    from rich.console import Console

__all__ = [
    "COMMANDS",
    "EPILOG",
    "ApiClient",
    "Unreachable",
    "api_get",
    "api_options",
    "bounded",
    "client_from",
    "echo_json",
    "json_option",
    "make_console",
    "refused",
    "resolve_api",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

#: Read when ``--config`` is not given and the file exists in the working folder.
DEFAULT_CONFIG: Final = "supervisor.toml"
#: Environment variable holding the API token (never a command-line option:
#: arguments are visible to every user in ``ps``).
TOKEN_ENV: Final = "SUPERVISOR_TOKEN"
#: Seconds to wait for an answer; a graceful shutdown stops every system first.
TIMEOUT: Final = 30.0

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one ``supervisor: error:`` line and exit with ``code``."""
    click.echo(f"supervisor: error: {message}", err=True)
    sys.exit(code)


# ------------------------------------------------------------- the address


def resolve_api(api: str | None, config_path: str | None) -> ListenAddress:
    """Where the API of the supervisor to talk to listens.

    ``--api`` wins; else the ``[api] listen`` of ``--config`` (or of
    ``./supervisor.toml``), with a relative socket path taken from the
    config file's folder, as the supervisor itself reads it; else the
    default ``unix:var/supervisor.sock``.

    Raises:
        click.UsageError: ``--api`` is malformed.
        ConfigError: the config file is missing or invalid.
    """
    if api is not None:
        try:
            return parse_listen(api)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--api") from None
    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = DEFAULT_CONFIG
    if config_path is None:
        listen = ApiConfig().listen
        base = Path.cwd()
    else:
        config = Config.from_toml(config_path)
        listen = config.api.listen
        base = config.base_dir
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(str(exc), source=config_path, key="api.listen") from None
    if address.path is not None and not Path(address.path).is_absolute() and base != Path.cwd():
        # Relative to the config file's folder, as the supervisor reads it. A
        # path relative to the working folder stays as written, so the error
        # line shows what the user wrote (unix:var/supervisor.sock).
        return attrs.evolve(address, path=str(base / address.path))
    return address


# -------------------------------------------------------------- the client


@attrs.define(eq=False)
class ApiClient:
    """A synchronous client for one supervisor's API; every failure ends the command."""

    address: ListenAddress
    token: str | None = None
    timeout: float = TIMEOUT

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return the status and the decoded JSON answer.

        Ends the command (exit 1, one line) when no supervisor answers or the
        answer is not JSON.
        """
        try:
            return self.try_request(method, path, params=params, body=body)
        except Unreachable as exc:
            fail(str(exc))

    def try_request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """Like :meth:`request`, but raise :class:`Unreachable` rather than end the command.

        ``status --watch`` keeps watching a supervisor that restarts.
        """
        from ._http import HTTPException, NotConnected, exchange

        where = str(self.address)
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["content-type"] = "application/json"
        url = f"{path}?{urlencode(params)}" if params else path
        try:
            status, raw = exchange(
                self.address, method, url, headers=headers, payload=payload, timeout=self.timeout
            )
        except NotConnected as exc:
            raise Unreachable(_connect_problem(where, exc)) from None
        except TimeoutError:
            raise Unreachable(
                f"the supervisor at {where} did not answer within {self.timeout:g} s"
            ) from None
        except (OSError, HTTPException) as exc:
            raise Unreachable(
                f"lost the connection to the supervisor at {where} ({exc or type(exc).__name__})"
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise Unreachable(f"unexpected answer from {where}: HTTP {status}, not JSON") from None
        return status, data


class Unreachable(Exception):
    """No supervisor answered, or its answer was not JSON; the message is one line."""


def _connect_problem(where: str, exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    code = cause.errno if isinstance(cause, OSError) else None
    if isinstance(cause, TimeoutError):
        return f"the supervisor at {where} did not accept a connection (timed out)"
    if code == errno.EACCES:
        return f"cannot connect to {where} (permission denied: is it another user's supervisor?)"
    reason = {
        errno.ENOENT: "no such socket",
        errno.ECONNREFUSED: "connection refused",
        errno.ENOTSOCK: "not a socket",
    }.get(code or -1)
    if reason is None:
        reason = str(cause.strerror if isinstance(cause, OSError) and cause.strerror else exc)
    return f"no supervisor is running at {where} ({reason})"


def client_from(api: str | None, config_path: str | None) -> ApiClient:
    try:
        address = resolve_api(api, config_path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        # It could not be sent as a header anyway; say so before connecting.
        fail(f"{TOKEN_ENV} must be printable ASCII without spaces", EXIT_USAGE)
    return ApiClient(address=address, token=token)


def refused(status: int, data: Any, client: ApiClient) -> NoReturn:
    """Report a non-200 answer in one line (plus any readiness report) and exit 1."""
    message = data.get("error") if isinstance(data, Mapping) else None
    message = str(message) if message else f"HTTP {status}"
    if status == 401 and client.token is None:
        message += f" (set {TOKEN_ENV})"
    click.echo(f"supervisor: error: {message}", err=True)
    if isinstance(data, Mapping):
        # A refused promotion carries the readiness report that blocked it.
        for value in data.values():
            if isinstance(value, Mapping) and isinstance(value.get("checks"), list):
                _print_checks(value["checks"], only_failed=True, err=True)
    sys.exit(EXIT_FAILED)


# ------------------------------------------------------------ formatting


def make_console(*, err: bool = False) -> Console:
    # Built per call: click's test runner (and a redirect) swaps sys.stdout.
    # Piped output gets wide lines rather than rich's 80 columns, so a
    # recommendation lands on one line for grep.
    from rich.console import Console

    file = sys.stderr if err else sys.stdout
    width = None if file.isatty() else 160
    return Console(file=file, highlight=False, soft_wrap=False, width=width)


def _text(value: Any) -> str:
    """``value`` for a table cell, escaped: rich would eat ``[api]`` as markup."""
    from rich.markup import escape

    return escape(word(value))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_checks(checks: Iterable[Any], *, only_failed: bool = False, err: bool = False) -> None:
    from rich.table import Table

    table = Table("check", "result", "detail", "recommendation")
    for check in checks:
        if not isinstance(check, Mapping) or (only_failed and check.get("ok")):
            continue
        table.add_row(
            _text(check.get("name")),
            "[green]pass[/]" if check.get("ok") else "[red]FAIL[/]",
            _text(check.get("detail")),
            _text(check.get("recommendation")),
        )
    make_console(err=err).print(table)


def _print_errors(data: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    groups = data.get("groups") or []
    records = data.get("records") or []
    if not groups and not records:
        console.print("no errors recorded")
        return
    if groups:
        table = Table("count", "system", "type", "message", "last tick", "fingerprint")
        for g in groups:
            table.add_row(
                _text(g.get("count")),
                _text(g.get("system")),
                _text(g.get("exc_type")),
                _text(g.get("message")),
                _text(g.get("last_tick")),
                _text(g.get("fingerprint"))[:12],
            )
        console.print(table)
    if records:
        table = Table("tick", "system", "hook", "kind", "type", "message")
        for r in records:
            table.add_row(
                _text(r.get("tick")),
                _text(r.get("system")),
                _text(r.get("hook")),
                _text(r.get("kind")),
                _text(r.get("exc_type")),
                _text(r.get("message")),
            )
        console.print(table)


def print_result(action: str, data: Any) -> None:
    if isinstance(data, Mapping):
        detail = data.get("detail") or data.get("message")
        if isinstance(detail, str) and detail:
            click.echo(f"{action}: {detail}")
            return
        click.echo(f"{action}: " + (word(data) if data else "ok"))
        return
    click.echo(f"{action}: {word(data)}")


# --------------------------------------------------------------- commands


def bounded(high: float, low: float = 0.0) -> Any:
    """A click callback: the value, if given, is a finite number in (low, high].

    click's FloatRange lets NaN through (no comparison is true of it), and
    ``time.sleep(nan)`` or a NaN tick rate fail far from the option.
    """

    def check(_ctx: Any, _param: Any, value: float | None) -> float | None:
        # ``not low < value`` is also true for NaN.
        if value is not None and not low < value <= high:
            raise click.BadParameter(f"must be a number in ({low:g}, {high:g}], got {value}")
        return value

    return check


def api_options(func: F) -> F:
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help=f"TOML config whose [api] listen to use (default: ./{DEFAULT_CONFIG}).",
    )(func)
    return click.option(
        "--api",
        metavar="unix:PATH|http://HOST:PORT",
        help="The supervisor's API address (default: from the config).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")(func)


def check_reason(_ctx: Any, _param: Any, value: str) -> str:
    if len(value) > MAX_REASON:
        raise click.BadParameter(f"at most {MAX_REASON} characters, got {len(value)}")
    return value


def api_get(api: str | None, config_path: str | None, path: str, **params: Any) -> Any:
    """GET ``path``; return the answer (a refusal ends the command, exit 1)."""
    client = client_from(api, config_path)
    status, data = client.request(
        "GET", path, params={k: v for k, v in params.items() if v is not None}
    )
    if status != 200:
        refused(status, data, client)
    return data


def api_post(api: str | None, config_path: str | None, path: str, body: Mapping[str, Any]) -> Any:
    """POST ``body`` to ``path``; return the answer (a refusal ends the command, exit 1)."""
    client = client_from(api, config_path)
    status, data = client.request("POST", path, body=body)
    if status != 200:
        refused(status, data, client)
    return data


@click.command()
@api_options
@click.option("--emergency", is_flag=True, help="Enter EMERGENCY_SHUTDOWN instead of stopping.")
@click.option("--reason", default="", callback=check_reason, help="Why (audit log).")
def shutdown(api: str | None, config_path: str | None, emergency: bool, reason: str) -> None:
    """Stop gracefully, or enter an emergency shutdown (state preserved).

    \b
    Example:
      supervisor shutdown --emergency --reason "disk almost full"
    """
    answer = api_post(api, config_path, "/v1/shutdown", {"emergency": emergency, "reason": reason})
    print_result("shutdown", answer)


@click.command()
@api_options
def restart(api: str | None, config_path: str | None) -> None:
    """Restart the systems in the same process from preserved state.

    \b
    After an emergency shutdown: `supervisor errors`, fix the cause, then
    this, which continues from the snapshot the emergency wrote.

    \b
    Example:
      supervisor restart
    """
    print_result("restart", api_post(api, config_path, "/v1/restart", {}))


@click.command()
@click.argument(
    "target",
    metavar="PHASE",
    type=click.Choice(["development", "testing", "production"], case_sensitive=False),
)
@api_options
@click.option(
    "--force",
    is_flag=True,
    help="Skip the readiness gate, or leave development without tokens (recorded).",
)
@click.option("--reason", default="", callback=check_reason, help="Why (audit log).")
def phase(target: str, api: str | None, config_path: str | None, force: bool, reason: str) -> None:
    """Move the running supervisor to PHASE: development, testing or production.

    \b
    Promotion to production passes the readiness gate unless --force.
    Leaving development needs an [api] token in the config, or --force.
    Leaving production (but for an emergency) needs --force and --reason.

    \b
    Example:
      supervisor phase production --reason "release 1.4"
    """
    answer = api_post(
        api, config_path, "/v1/phase", {"phase": target.lower(), "force": force, "reason": reason}
    )
    print_result("phase", answer)


@click.command()
@api_options
@json_option
def readiness(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the deployment readiness report; exit 1 unless every check passes.

    \b
    Example:
      supervisor readiness && supervisor phase production
    """
    data = api_get(api, config_path, "/v1/readiness")
    ok = isinstance(data, Mapping) and data.get("ok") is True
    if as_json:
        echo_json(data)
    else:
        checks = data.get("checks", []) if isinstance(data, Mapping) else []
        _print_checks(checks)
        click.echo("ready for production" if ok else "not ready: see the recommendations above")
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


#: The commands for ``cli.add_command``, in the order ``--help`` lists them.
COMMANDS: Final[list[click.Command]] = [shutdown, restart, phase, readiness]

#: What every client command's ``--help`` ends with (CONTRACT section 8).
EPILOG: Final = (
    f"Reads {TOKEN_ENV} (the API token, sent as a bearer token; on the Unix socket its "
    "owner needs none). Exit codes: 0 done; 1 refused, failed or not running; 2 usage "
    "or config error."
)
for _command in COMMANDS:
    _command.epilog = EPILOG
