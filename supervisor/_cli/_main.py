"""The ``supervisor`` command line (click), built on the core.

Every error a user can cause ends in one line on standard error and exit
code 2 (usage, config, a start refused on purpose) or 1 (a refused or failed
command); never a traceback.

This module stays light on purpose: ``supervisor --help`` and the client
commands (``status``, ``shutdown``, ...) import neither the tick loop, trio,
hypercorn nor prometheus_client. ``run`` imports the server inside the
command (:mod:`supervisor._cli._run`). ``tests/test_cli_imports.py`` holds that line.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, Final, NoReturn

import click

from .._core._config_sections import BUILTIN_PROFILES
from .._errors import ConfigError, one_line
from ._client import COMMANDS, DEFAULT_CONFIG, EXIT_USAGE, bounded, fail, make_console
from ._config_cmd import config
from ._fleet_cmd import fleet
from ._rollout_cmd import rollout

__all__ = ["MAX_TICKS", "cli", "main"]

#: ``--ticks`` upper bound: a tick count stays exact as a float (JSON, msgpack
#: readers) and far below the snapshot format's 64-bit limit.
MAX_TICKS: Final = 2**53
#: ``--tick-rate`` and ``--duration`` bounds (the config's own limits apply on top).
MAX_TICK_RATE: Final = 10_000.0
MAX_DURATION: Final = 10.0 * 365 * 86400

#: Commands loaded when named (``supervisor run`` never loads them, nor their
#: modules): name -> (module of this package, attribute). The others are
#: added below; ``run`` itself needs their modules.
LAZY_COMMANDS: Final = {
    "alerts": ("._alerts_cmd", "alerts"),
    "errors": ("._errors_cmd", "errors"),
    "experiments": ("._experiments_cmd", "experiments"),
    "quarantine": ("._operator", "quarantine"),
    "release": ("._operator", "release"),
    "report": ("._errors_cmd", "report"),
    "snapshot": ("._operator", "snapshot"),
    "status": ("._status_cmd", "status"),
}


class _Group(click.Group):
    """The ``supervisor`` group: a usage error is ONE line and exit 2.

    click's own display prints three (usage, a hint, the error); scripts and
    people grep for one ``supervisor: error:`` line, as every other error gives.
    The commands of ``LAZY_COMMANDS`` are imported when named (click's
    documented lazy-loading pattern), so a long ``supervisor run`` does not
    keep their code resident.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the lazy ones included, sorted as click sorts them."""
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module the first time it is named."""
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module, __package__), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's resolution; for an unknown name, every command loaded first.

        click suggests the nearest names ("did you mean 'status'?") from the
        commands it holds: the lazy ones must be among them.
        """
        if args and self.get_command(ctx, args[0]) is None:
            for name in LAZY_COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; exit with its code, usage errors reported in one line."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        if args is not None and any("\x00" in str(arg) for arg in args):
            # No shell can pass one (execve cannot), but a caller in Python can,
            # and every path, name and value below would fail on it differently.
            click.echo("supervisor: error: an argument contains a NUL byte", err=True)
            sys.exit(EXIT_USAGE)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            _usage_fail(exc)
        except click.ClickException as exc:
            click.echo(f"supervisor: error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("supervisor: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_fail(exc: click.UsageError) -> NoReturn:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) and exc.ctx is not None:
        # ``supervisor`` alone: the help is the answer, as click gives it.
        click.echo(exc.ctx.get_help(), err=True)
        sys.exit(EXIT_USAGE)
    where = exc.ctx.command_path if exc.ctx is not None else "supervisor"
    message = one_line(exc.format_message())
    click.echo(f"supervisor: error: {where}: {message} (see '{where} --help')", err=True)
    sys.exit(EXIT_USAGE)


def _show_version(ctx: click.Context, _param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import platform
    from importlib import metadata

    try:
        version = metadata.version("tick-supervisor")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "(not installed)"
    click.echo(f"supervisor {version} (tick-supervisor) on Python {platform.python_version()}")
    ctx.exit()


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "The commands but run, systems and config talk to a running supervisor's API, "
        "with the token from SUPERVISOR_TOKEN when set. Exit codes: 0 done; 1 refused or "
        "failed; 2 usage or config error, or a start refused on purpose; 3 run ended by an "
        "emergency shutdown, state preserved; 4 emergency shutdown, state not preserved."
    ),
)
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_show_version,
    help="Show the version and the Python it runs on.",
)
def cli() -> None:
    """A fixed-tick game-server supervisor.

    \b
    Before deploying:  supervisor config check --config game.toml --phase production
    Start it:          supervisor run --config game.toml
    Watch it:          supervisor status --watch
    Each command's --help lists its choices, one example and its exit codes.

    \b
    Shell completion (bash; for zsh or fish write zsh_source or fish_source):
      eval "$(_SUPERVISOR_COMPLETE=bash_source supervisor)"
    """


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--phase", type=click.Choice(["development", "testing", "production"]), help="Starting phase."
)
@click.option(
    "--profile",
    metavar="NAME",
    help=f"Device profile: {', '.join(BUILTIN_PROFILES)}, one of the config's "
    "[profiles], or auto (detect from the machine; the default).",
)
@click.option("--tick-rate", type=float, callback=bounded(MAX_TICK_RATE), help="Hz.")
@click.option(
    "--ticks",
    type=click.IntRange(1, MAX_TICKS),
    help="Stop after N ticks.",
)
@click.option(
    "--duration",
    type=float,
    callback=bounded(MAX_DURATION),
    help="Stop after SECONDS.",
)
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where state is kept.")
@click.option("--resume", is_flag=True, help="Continue the world of the latest valid snapshot.")
@click.option(
    "--resume-from",
    metavar="WORLD",
    help="Continue WORLD from the shared snapshot store ([snapshots] store) and its database.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start a new world; earlier snapshots and world data are moved aside, never deleted.",
)
@click.option(
    "--exit-on-emergency", is_flag=True, help="Exit with code 3 after an emergency shutdown."
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    help="Log line format (default: console on a terminal, JSON otherwise, whatever the phase).",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Write the run summary (one JSON object) to this regular file on exit.",
)
@click.option(
    "--reload", is_flag=True, help="DEVELOPMENT only: reload a system when its source changes."
)
def run(**options: Any) -> None:
    """Start the supervisor in the foreground.

    \b
    With no --config: ./supervisor.toml if it exists, else the demo world.
    SUPERVISOR_<SECTION>_<KEY> variables override the config file.
    Exit codes: 0 clean stop; 1 failed (a critical system did not start);
    2 usage or config error, or a start refused on purpose (earlier
    snapshots without --resume/--fresh, a database that lost data);
    3 ended by an emergency shutdown, state preserved; 4 state not preserved.

    \b
    Example:
      supervisor run --config game.toml --phase testing --resume
    """
    _import_structlog_without_rich()
    from ._run import run_command

    run_command(**options)


def _import_structlog_without_rich() -> None:
    """Import structlog for a run with rich hidden, then unhide it.

    structlog imports rich (and rich pygments) when it can, for pretty
    tracebacks; a run renders them plainly, so that is ~3 MB of a long-running
    server's memory for nothing. Hidden only while structlog is imported: a
    system that uses rich imports it as usual.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=f"TOML config whose systems to mark (default: ./{DEFAULT_CONFIG}, else the demo world).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def systems(config_path: str | None, as_json: bool) -> None:
    """List the installed systems and the config's, marking the enabled ones.

    \b
    Installed systems come from the supervisor.systems entry points; a
    config may also enable 'pkg.module:Class' import strings, or run an
    installed system under another name with [systems.NAME] use = "...".
    Exit codes: 0 listed; 2 the config is invalid.

    \b
    Example:
      supervisor systems --config game.toml
    """
    from ._config_cmd import load_config, system_rows

    try:
        rows = system_rows(load_config(config_path))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table("", "name", "from", "critical", "depends_on", "priority")
    table.columns[2].overflow = "fold"  # an import string stays whole
    for row in rows:
        critical = "?" if row["critical"] is None else ("yes" if row["critical"] else "no")
        table.add_row(
            "[green]✓[/]" if row["enabled"] else "",
            escape(row["name"]),
            escape(f"{row['origin']}\n{row['target']}")
            + (f"\n[red]{escape(row['error'])}[/]" if row["error"] else ""),
            critical,
            escape(", ".join(row["depends_on"])) or "-",
            str(row["priority"]),
        )
    make_console().print(table)
    click.echo("✓ enabled in the config (supervisor run would start it)")


for _command in (*COMMANDS, config):
    cli.add_command(_command)
cli.add_command(rollout)
cli.add_command(fleet)


def main() -> None:
    """The console script's entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli(prog_name="supervisor")
