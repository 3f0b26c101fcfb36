"""The commands that talk to a running supervisor through its HTTP API.

``status``, ``shutdown``, ``restart``, ``phase``, ``readiness`` and ``errors``
each find the API the same way (``--api``, else ``--config FILE``'s
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
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import attrs
import click

from .._address import MAX_ERRORS_LIMIT, MAX_REASON, ListenAddress, parse_listen
from .._core._config import Config
from .._core._config_sections import ApiConfig
from .._errors import ConfigError

if TYPE_CHECKING:
    # Imported where used: ``supervisor --help`` and a refused command never
    # pay for an HTTP client or a table renderer (tests/test_cli_imports.py).
    import httpx
    from rich.console import Console

__all__ = ["COMMANDS", "ApiClient", "resolve_api"]

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

    def _client(self) -> httpx.Client:
        import httpx

        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if self.address.path is not None:
            return httpx.Client(
                transport=httpx.HTTPTransport(uds=self.address.path),
                base_url="http://supervisor",
                headers=headers,
                timeout=self.timeout,
            )
        host = self.address.host or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return httpx.Client(
            base_url=f"http://{host}:{self.address.port}", headers=headers, timeout=self.timeout
        )

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
        import httpx

        where = str(self.address)
        if self.address.path is not None:
            self._probe_unix(where)
        try:
            with self._client() as client:
                response = client.request(method, path, params=params, json=body)
        except httpx.ConnectError as exc:
            fail(_connect_problem(where, exc))
        except httpx.TimeoutException:
            fail(f"the supervisor at {where} did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            fail(f"lost the connection to the supervisor at {where} ({exc or type(exc).__name__})")
        try:
            data = response.json()
        except ValueError:
            fail(f"unexpected answer from {where}: HTTP {response.status_code}, not JSON")
        return response.status_code, data

    def _probe_unix(self, where: str) -> None:
        """End the command if nothing accepts connections on the socket.

        httpcore's Unix-socket connect leaves its socket to the garbage
        collector when the connect fails (a ResourceWarning), so the common
        "not running" case is detected here, on a socket closed properly.
        """
        assert self.address.path is not None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(self.timeout)
            probe.connect(self.address.path)
        except OSError as exc:
            fail(_connect_problem(where, exc))
        finally:
            probe.close()


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


def _client_from(api: str | None, config_path: str | None) -> ApiClient:
    try:
        address = resolve_api(api, config_path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        # It could not be sent as a header anyway; say so before connecting.
        fail(f"{TOKEN_ENV} must be printable ASCII without spaces", EXIT_USAGE)
    return ApiClient(address=address, token=token)


def _refused(status: int, data: Any, client: ApiClient) -> NoReturn:
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


def _console(*, err: bool = False) -> Console:
    # Built per call: click's test runner (and a redirect) swaps sys.stdout.
    # Piped output gets wide lines rather than rich's 80 columns, so a
    # recommendation lands on one line for grep.
    from rich.console import Console

    file = sys.stderr if err else sys.stdout
    width = None if file.isatty() else 160
    return Console(file=file, highlight=False, soft_wrap=False, width=width)


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} µs"


def _text(value: Any) -> str:
    """``value`` for a table cell, escaped: rich would eat ``[api]`` as markup."""
    from rich.markup import escape

    return escape(_plain(value))


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(_plain, value)) or "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    return str(value)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_status(data: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    lateness = data.get("lateness") or {}
    rows: list[tuple[str, str]] = [
        ("phase", _text(data.get("phase"))),
        ("tick", _text(data.get("tick"))),
        ("tick rate", f"{_text(data.get('tick_rate'))} Hz"),
        ("budget", _seconds(data.get("budget"))),
        (
            "lateness",
            f"p50 {_seconds(lateness.get('p50'))}  p99 {_seconds(lateness.get('p99'))}"
            f"  max {_seconds(lateness.get('max'))}",
        ),
        ("overruns", _text(data.get("overruns"))),
        ("dropped ticks", _text(data.get("dropped_ticks"))),
        ("profile", _text(data.get("profile"))),
    ]
    for name, value in (data.get("gauges") or {}).items():
        rows.append((_text(name), _text(value)))
    errors = data.get("errors") or {}
    rows.append(("errors", _text({k: v for k, v in errors.items() if v}) if errors else "none"))
    if data.get("quarantined"):
        rows.append(("quarantined", _text(data["quarantined"])))
    if data.get("emergency_reason"):
        rows.append(("emergency", f"[red]{_text(data['emergency_reason'])}[/]"))
    known = {"systems", "lateness", "work", "gauges", "errors", "quarantined", "emergency_reason"}
    known |= {"phase", "tick", "tick_rate", "budget", "overruns", "dropped_ticks", "profile"}
    # Whatever else the supervisor reports (a recommendation, uptime, ...).
    rows.extend((_text(k), _text(v)) for k, v in data.items() if k not in known)
    for name, value in rows:
        overview.add_row(name, value)
    console.print(overview)
    systems = data.get("systems") or []
    if isinstance(systems, Mapping):
        systems = [{"name": k, **v} for k, v in systems.items() if isinstance(v, Mapping)]
    if systems:
        table = Table("system", "state", "health", "errors", "step p50", "step p99", "every")
        for s in systems:
            step = s.get("step") or {}
            state = _text(s.get("state"))
            if state not in {"closed", "running", "stopped", "-"}:
                state = f"[yellow]{state}[/]"
            table.add_row(
                _text(s.get("name")),
                state,
                _text(s.get("health")),
                _text(s.get("errors")),
                _seconds(step.get("p50")),
                _seconds(step.get("p99")),
                _text(s.get("every")),
            )
        console.print(table)


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
    _console(err=err).print(table)


def _print_errors(data: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = _console()
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


def _print_result(action: str, data: Any) -> None:
    if isinstance(data, Mapping):
        detail = data.get("detail") or data.get("message")
        if isinstance(detail, str) and detail:
            click.echo(f"{action}: {detail}")
            return
        click.echo(f"{action}: " + (_plain(data) if data else "ok"))
        return
    click.echo(f"{action}: {_plain(data)}")


# --------------------------------------------------------------- commands


def _api_options(func: F) -> F:
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


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")(func)


def _check_reason(_ctx: Any, _param: Any, value: str) -> str:
    if len(value) > MAX_REASON:
        raise click.BadParameter(f"at most {MAX_REASON} characters, got {len(value)}")
    return value


def _get(api: str | None, config_path: str | None, path: str, **params: Any) -> Any:
    client = _client_from(api, config_path)
    status, data = client.request(
        "GET", path, params={k: v for k, v in params.items() if v is not None}
    )
    if status != 200:
        _refused(status, data, client)
    return data


def _post(
    api: str | None, config_path: str | None, action: str, path: str, body: Mapping[str, Any]
) -> None:
    client = _client_from(api, config_path)
    status, data = client.request("POST", path, body=body)
    if status != 200:
        _refused(status, data, client)
    _print_result(action, data)


@click.command()
@_api_options
@_json_option
def status(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the phase, tick timing, systems, players and errors."""
    data = _get(api, config_path, "/v1/status")
    if as_json:
        _echo_json(data)
    else:
        _print_status(data if isinstance(data, Mapping) else {})


@click.command()
@_api_options
@click.option("--emergency", is_flag=True, help="Enter EMERGENCY_SHUTDOWN instead of stopping.")
@click.option("--reason", default="", callback=_check_reason, help="Why (audit log).")
def shutdown(api: str | None, config_path: str | None, emergency: bool, reason: str) -> None:
    """Stop gracefully, or enter an emergency shutdown (state preserved)."""
    _post(
        api,
        config_path,
        "shutdown",
        "/v1/shutdown",
        {"emergency": emergency, "reason": reason},
    )


@click.command()
@_api_options
def restart(api: str | None, config_path: str | None) -> None:
    """Restart the systems in the same process from preserved state."""
    _post(api, config_path, "restart", "/v1/restart", {})


@click.command()
@click.argument(
    "target",
    metavar="PHASE",
    type=click.Choice(["development", "testing", "production"], case_sensitive=False),
)
@_api_options
@click.option(
    "--force",
    is_flag=True,
    help="Skip the readiness gate, or leave development without tokens (recorded).",
)
@click.option("--reason", default="", callback=_check_reason, help="Why (audit log).")
def phase(target: str, api: str | None, config_path: str | None, force: bool, reason: str) -> None:
    """Move the running supervisor to PHASE: development, testing or production.

    \b
    Promotion to production passes the readiness gate unless --force.
    Leaving development needs an [api] token in the config, or --force.
    Leaving production (but for an emergency) needs --force and --reason.
    """
    _post(
        api,
        config_path,
        "phase",
        "/v1/phase",
        {"phase": target.lower(), "force": force, "reason": reason},
    )


@click.command()
@_api_options
@_json_option
def readiness(api: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the deployment readiness report; exit 1 unless every check passes."""
    data = _get(api, config_path, "/v1/readiness")
    ok = isinstance(data, Mapping) and data.get("ok") is True
    if as_json:
        _echo_json(data)
    else:
        checks = data.get("checks", []) if isinstance(data, Mapping) else []
        _print_checks(checks)
        click.echo("ready for production" if ok else "not ready: see the recommendations above")
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@click.command()
@_api_options
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_ERRORS_LIMIT),
    default=20,
    show_default=True,
    help="Most recent records to show.",
)
@click.option("--system", help="Only this system's errors.")
@_json_option
def errors(
    api: str | None, config_path: str | None, limit: int, system: str | None, as_json: bool
) -> None:
    """Show recent error records, grouped by fingerprint with counts."""
    data = _get(api, config_path, "/v1/errors", limit=limit, system=system)
    if as_json:
        _echo_json(data)
    else:
        _print_errors(data if isinstance(data, Mapping) else {})


#: The commands for ``cli.add_command``, in the order ``--help`` lists them.
COMMANDS: Final[list[click.Command]] = [status, shutdown, restart, phase, readiness, errors]

#: What every client command's ``--help`` ends with (CONTRACT section 8).
EPILOG: Final = (
    f"Reads {TOKEN_ENV} (the API token, sent as a bearer token; on the Unix socket its "
    "owner needs none). Exit codes: 0 done; 1 refused, failed or not running; 2 usage "
    "or config error."
)
for _command in COMMANDS:
    _command.epilog = EPILOG
