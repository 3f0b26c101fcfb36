"""The ``supervisor`` command line (click), built on the core.

Every error a user can cause ends in one line on standard error and exit
code 2 (usage, config) or 1 (a refused or failed command); never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import attrs
import click
import trio
from rich.console import Console
from rich.table import Table

from ._api import ApiListenError, make_app, parse_listen, serve_api
from ._audit import AuditLog
from ._client import COMMANDS
from ._config import Config
from ._errors import ConfigError, PluginError, StartupError
from ._live import LiveStream, live_status
from ._logging import configure_logging
from ._phase import Phase
from ._plugins import discover
from ._supervisor import Supervisor

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Read when ``--config`` is not given and the file exists in the working folder.
DEFAULT_CONFIG = "supervisor.toml"


def _attach_api(sup: Supervisor) -> None:
    """Serve the HTTP API inside the supervisor's run, from before the systems start.

    Raises:
        ConfigError: ``[api] listen`` is malformed.
    """
    api = sup.config.api
    try:
        addr = parse_listen(api.listen)
    except ValueError as exc:
        raise ConfigError(str(exc), source=sup.config.source, key="api.listen") from None
    listen = f"unix:{sup.config.path(addr.path)}" if addr.path else api.listen
    audit_path = sup.config.path(api.audit_log)
    audit = AuditLog(audit_path, redactor=sup.redactor)
    sup.sink_checks.append(
        lambda: None if audit.writable() else f"the audit log {audit_path} is not writable"
    )
    app = make_app(
        sup,
        api=api,
        tcp=addr.is_tcp,
        audit=audit,
        redactor=sup.redactor,
        phase=lambda: sup.access_phase.value,
    )

    async def serve(
        _sup: Supervisor, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve_api(app, listen, task_status=task_status)

    sup.services.append(serve)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"supervisor: error: {message}", err=True)
    sys.exit(code)


#: What ``supervisor run`` runs with no config: the demo tycoon world.
DEMO_WORLD = {
    "systems": {
        "enabled": ["players", "economy", "tycoon", "datastore", "leaderboard", "security"],
        "players": {"count": 200},
    }
}


def _load_config(path: str | None) -> Config:
    if path is None:
        if Path(DEFAULT_CONFIG).is_file():
            path = DEFAULT_CONFIG
        else:
            return Config.from_mapping(DEMO_WORLD, source="<built-in demo world>")
    return Config.from_toml(path)


def _with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """Rebuild ``config`` with command-line values layered over its raw mapping.

    Precedence: a command-line flag, then a ``SUPERVISOR_*`` variable, then
    the file (and its phase overlay).
    """
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in config.raw.items()}
    env = dict(config.env)
    for section, given in sections.items():
        values = {k: v for k, v in given.items() if v is not None}
        if values:
            raw.setdefault(section, {}).update(values)
        for key in values:
            env.pop(f"SUPERVISOR_{section}_{key}".upper(), None)
    return Config.from_mapping(raw, source=config.source, env=env, base_dir=config.base_dir)


def _resolve_log_format(fmt: str, phase: Phase) -> str:
    if fmt != "auto":
        return fmt
    if phase is Phase.DEVELOPMENT and sys.stderr.isatty():
        return "console"
    return "json"


def _positive(name: str) -> Callable[[Any, Any, Any], Any]:
    def check(_ctx: Any, _param: Any, value: Any) -> Any:
        if value is not None and value <= 0:
            raise click.BadParameter(f"{name} must be positive, got {value}")
        return value

    return check


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A fixed-tick game-server supervisor."""


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--phase", type=click.Choice(["development", "testing", "production"]), help="Starting phase."
)
@click.option("--profile", help="Device profile name, or 'auto' to detect.")
@click.option("--tick-rate", type=float, callback=_positive("--tick-rate"), help="Hz.")
@click.option("--ticks", type=int, callback=_positive("--ticks"), help="Stop after N ticks.")
@click.option(
    "--duration", type=float, callback=_positive("--duration"), help="Stop after SECONDS."
)
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where state is kept.")
@click.option("--resume", is_flag=True, help="Restore the latest valid snapshot before starting.")
@click.option(
    "--exit-on-emergency", is_flag=True, help="Exit with code 3 after an emergency shutdown."
)
@click.option("--log-format", type=click.Choice(["console", "json"]), help="Log line format.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the run summary (one JSON object) here on exit.",
)
def run(
    config_path: str | None,
    phase: str | None,
    profile: str | None,
    tick_rate: float | None,
    ticks: int | None,
    duration: float | None,
    state_dir: str | None,
    resume: bool,
    exit_on_emergency: bool,
    log_format: str | None,
    summary_json: str | None,
) -> None:
    """Start the supervisor in the foreground."""
    try:
        config = _load_config(config_path)
        config = _with_overrides(
            config,
            supervisor={"phase": phase, "profile": profile, "state_dir": state_dir},
            logging={"format": log_format},
        )
        start_phase = Phase.parse(config.supervisor.phase)
        effective = config.for_phase(start_phase)
        sup = Supervisor.from_config(
            config,
            tick_rate=tick_rate,
            # A --state-dir is relative to where the command runs, not to the config file.
            state_dir=Path(state_dir).resolve() if state_dir else None,
        )
    except (ConfigError, PluginError) as exc:
        _fail(str(exc))
    if summary_json is not None and not Path(summary_json).resolve().parent.is_dir():
        _fail(f"--summary-json {summary_json}: the folder does not exist")
    if sup.phase is Phase.PRODUCTION:
        report = sup.security_report()
        if not report.ok:
            check = report.checks[0]
            _fail(
                f"cannot start in production: security check failed: {check.detail} "
                f"(recommendation: {check.recommendation})"
            )
    fmt = effective.logging.format
    live = LiveStream(sys.stderr) if sys.stderr.isatty() else None
    renderer = configure_logging(
        _resolve_log_format(fmt, start_phase),
        effective.logging.level,
        stream=live,  # type: ignore[arg-type]  # file-like: write, flush, isatty
        processors=(sup.redactor.structlog_processor(),),
    )
    if live is not None:
        sup.services.append(functools.partial(live_status, stream=live))
    if fmt == "auto":
        # Entering PRODUCTION (or any phase past DEVELOPMENT) turns JSON logs on.
        sup.phase_listeners.append(
            lambda phase: setattr(renderer, "format", _resolve_log_format("auto", phase))
        )
    if effective.features.api:
        try:
            _attach_api(sup)
        except ConfigError as exc:
            _fail(str(exc))

    async def main() -> Any:
        return await sup.run(
            ticks=ticks,
            duration=duration,
            exit_on_emergency=exit_on_emergency,
            handle_signals=True,
            resume=resume,
        )

    try:
        summary = trio.run(main)
    except ApiListenError as exc:
        _fail(f"[api] listen {exc.listen}: {exc}")
    except StartupError as exc:
        _fail(str(exc), EXIT_FAILED)
    except PluginError as exc:  # dependency errors surface when the run orders systems
        _fail(str(exc))
    if summary_json is not None:
        try:
            tmp = Path(summary_json + ".tmp")
            tmp.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")
            tmp.replace(summary_json)
        except OSError as exc:
            _fail(f"cannot write --summary-json {summary_json}: {exc}", EXIT_FAILED)
    sys.exit(summary.exit_code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def systems(as_json: bool) -> None:
    """List the discoverable systems and where they come from."""
    rows = []
    for name, src in sorted(discover().items()):
        row: dict[str, Any] = {"name": name, "origin": src.origin, "target": src.target}
        try:
            cls = src.load()
        except PluginError as exc:
            row.update(critical=None, depends_on=[], priority=None, error=str(exc))
        else:
            row.update(
                critical=bool(_class_default(cls, "critical", False)),
                depends_on=list(_class_default(cls, "depends_on", ())),
                priority=_class_default(cls, "priority", 0),
                error=None,
            )
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "from", "critical", "depends_on", "priority")
    for row in rows:
        critical = "?" if row["critical"] is None else ("yes" if row["critical"] else "no")
        table.add_row(
            row["name"],
            f"{row['origin']}\n{row['target']}"
            + (f"\n[red]{row['error']}[/]" if row["error"] else ""),
            critical,
            ", ".join(row["depends_on"]) or "-",
            str(row["priority"]),
        )
    Console().print(table)


def _class_default(cls: Any, attr: str, default: Any) -> Any:
    """A class attribute, or an attrs field default, without building the class."""
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.name == attr and field.default is not attrs.NOTHING:
                value = field.default
                return value.factory() if isinstance(value, attrs.Factory) else value  # type: ignore[arg-type]
    return getattr(cls, attr, default)


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """The console script's entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="supervisor")
