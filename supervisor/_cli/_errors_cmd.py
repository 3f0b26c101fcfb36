"""``supervisor errors`` (through the API) and ``supervisor report`` (from the store file).

``errors`` asks the running supervisor: with no store option it shows the
in-memory recent records, with ``--since``/``--fingerprint`` the durable
store's, with ``--trend`` the counts per bucket and the movers, with
``--new`` the fingerprints first seen since the process or its config
version started. ``report`` opens ``state_dir/errors.db`` read-only, so it
works whether or not the supervisor runs. Light at import, like every
client command (tests/test_cli_imports.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import click

from .._address import MAX_ERRORS_LIMIT
from .._errors import ConfigError
from ._client import (
    EPILOG,
    EXIT_USAGE,
    _print_errors,
    api_get,
    api_options,
    echo_json,
    fail,
    json_option,
)

__all__ = ["errors", "report"]

_SPARK: Final = " ▁▂▃▄▅▆▇█"


def _spark(counts: list[int]) -> str:
    top = max(counts, default=0)
    if not top:
        return " " * len(counts)
    return "".join(_SPARK[min(8, -(-8 * c // top))] for c in counts)


def _print_trend(data: Mapping[str, Any]) -> None:
    series = data.get("series") or []
    bucket = data.get("bucket", 0)
    click.echo(f"errors per {bucket // 60} min bucket, {len(data.get('buckets') or [])} buckets")
    if not series:
        click.echo("no errors in the period")
    for s in series:
        click.echo(
            f"{s['total']:>8,}  {s['rate_now']:>8.1f}/min (was {s['rate_previous']:.1f})  "
            f"{_spark(s['counts'])}  {s['system']}  {s['exc_type']}  {s['fingerprint'][:12]}"
        )
    movers = data.get("top_movers") or []
    if movers:
        click.echo("top movers: " + ", ".join(
            f"{m['system']}/{m['fingerprint'][:12]} {m['change']:+.1f}/min" for m in movers
        ))  # fmt: skip
    corr = data.get("correlation") or {}
    if corr.get("bursts"):
        click.echo(
            f"{len(corr['bursts'])} error bursts; lateness p99 in bursts "
            f"{max(b['lateness_p99'] for b in corr['bursts']) * 1e3:.2f} ms vs "
            f"{corr.get('calm_lateness_p99', 0) * 1e3:.2f} ms otherwise"
        )


def _print_new(data: Mapping[str, Any]) -> None:
    for key, title in (("since_process", "process"), ("since_config", "config version")):
        found = data.get(key) or []
        click.echo(f"new since the {title} started: {len(found)}")
        for f in found:
            click.echo(
                f"  {f['total']:>8,}  {f['exc_type']}  {f['message']}  {f['fingerprint'][:12]}"
            )


@click.command(epilog=EPILOG)
@api_options
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_ERRORS_LIMIT),
    default=20,
    show_default=True,
    help="Most recent records to show.",
)
@click.option("--system", help="Only this system's errors.")
@click.option("--since", metavar="1h|2d|ISO", help="From the durable store, since then.")
@click.option("--fingerprint", help="Only this fingerprint (a prefix is enough).")
@click.option("--trend", is_flag=True, help="Counts per bucket, rate now vs before, movers.")
@click.option("--bucket", metavar="5m|1h", help="Trend bucket width (default: ~60 buckets).")
@click.option("--new", "new", is_flag=True, help="Fingerprints new since the process/config.")
@json_option
def errors(
    api: str | None,
    config_path: str | None,
    limit: int,
    system: str | None,
    since: str | None,
    fingerprint: str | None,
    trend: bool,
    bucket: str | None,
    new: bool,
    as_json: bool,
) -> None:
    """Show error records and groups; with --since, --trend or --new, from the durable store.

    \b
    --system NAME names a system from `supervisor status` (exit 1 if none has it).

    \b
    Example:
      supervisor errors --since 2h --system economy --trend
    """
    if trend or new:
        data = api_get(
            api, config_path, "/v1/errors/trends",
            since=since, bucket=bucket, system=system, fingerprint=fingerprint,
        )  # fmt: skip
        if as_json:
            echo_json(data if trend else data.get("new"))
        elif trend:
            _print_trend(data)
        if new and not as_json:
            _print_new(data.get("new") or {})
        return
    data = api_get(
        api, config_path, "/v1/errors",
        limit=limit, system=system, since=since, fingerprint=fingerprint,
    )  # fmt: skip
    if (
        system is not None
        and isinstance(data, Mapping)
        and not (data.get("groups") or data.get("records"))
    ):
        _check_system(api, config_path, system)
    if as_json:
        echo_json(data)
    else:
        _print_errors(data if isinstance(data, Mapping) else {})


def _check_system(api: str | None, config_path: str | None, system: str) -> None:
    """Fail with "no such system" when ``system`` is not one the status lists.

    The API filters by name and cannot tell "none" from "no such system".
    """
    status = api_get(api, config_path, "/v1/status")
    listed = status.get("systems") if isinstance(status, Mapping) else None
    names = [s.get("name") for s in listed or [] if isinstance(s, Mapping)]
    if names and system not in names:
        fail(f"no such system {system!r} (systems: {', '.join(map(str, names))})")


@click.command()
@click.option(
    "--since", default="30d", show_default=True, metavar="30d|ISO", help="Start of the period."
)
@click.option("--json", "fmt", flag_value="json", help="One JSON object, for scripts.")
@click.option("--markdown", "fmt", flag_value="markdown", help="Markdown, for a review.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config naming the state_dir and the [slo.NAME] objectives.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Where errors.db is (default: the config's state_dir, or ./var).",
)
def report(
    since: str, fmt: str | None, config_path: str | None, state_dir: str | None
) -> None:  # fmt: skip
    """Service levels, error budgets, incidents and top errors of a period.

    \b
    Reads the durable error store directly: works whether or not the
    supervisor runs. With no [slo.NAME] in the config, reports ticks on
    time (lateness <= 1 ms, 99.9 %), error-free player-minutes (99.9 %)
    and availability (99.95 %).
    Example: supervisor report --since 7d --markdown > week.md
    Exit codes: 0 done; 1 no store there; 2 usage or config error.
    """
    # Loaded here, not at start-up: the other commands need no SQLite (like _client.py).
    import sqlite3  # noqa: PLC0415

    from .._store._query import parse_since  # noqa: PLC0415
    from .._store._report import build, render  # noqa: PLC0415
    from .._store._schema import StoreVersionError, connect  # noqa: PLC0415

    slos: Mapping[str, Any] = {}
    folder = Path("var")
    try:
        path = config_path or ("supervisor.toml" if Path("supervisor.toml").is_file() else None)
        if path is not None:
            from .._core._config import Config  # noqa: PLC0415

            config = Config.from_toml(path)
            slos = config.slo
            folder = config.path(config.supervisor.state_dir)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if state_dir is not None:
        folder = Path(state_dir)
    now = time.time()
    try:
        start = parse_since(since, now)
    except ValueError as exc:
        fail(f"--since: {exc}", EXIT_USAGE)
    db = folder / "errors.db"
    if not db.is_file():
        fail(f"no error store at {db} (see --state-dir, --config)")
    try:
        conn = connect(db, readonly=True)
        try:
            data = build(conn, since=start, now=now, slos=slos)
        finally:
            conn.close()
    except (sqlite3.Error, StoreVersionError) as exc:
        fail(f"cannot read the error store {db}: {exc}")
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(render(data, markdown=fmt == "markdown"), nl=False)
