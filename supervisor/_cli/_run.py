"""``supervisor run``: build the supervisor from the config and run it in the foreground.

Imported by :mod:`supervisor._cli._main` inside the ``run`` and ``systems``
commands only, so that the other commands never load the tick loop, trio,
hypercorn or the plugins.

Preserved state is never deleted (CONTRACT section 8). Before anything
starts, the snapshots folder decides what a run may do:

* snapshots there and neither flag: refused (exit 2), naming ``--resume``
  (continue that world) and ``--fresh`` (start a new one);
* ``--resume`` with no valid snapshot: refused (exit 2), every file kept;
* ``--fresh``: the old snapshots are moved into ``snapshots/aside-<UTC>/``
  (and a system that keeps its own files, like the demo datastore, moves
  them aside when it starts a new world over them; see ``systems/datastore.py``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import attrs
import click
import trio

from .._core._config import Config
from .._core._phase import Phase
from .._core._plugins import discover
from .._core._snapshot import SnapshotStore
from .._core._supervisor import RunSummary, Supervisor
from .._errors import ConfigError, PluginError, StartupError, SupervisorError
from .._files import check_output_path
from .._logging import configure_logging, get_logger
from ._client import DEFAULT_CONFIG, EXIT_FAILED, EXIT_USAGE, fail
from ._live import LiveStream, live_status

__all__ = ["DEMO_WORLD", "run_command", "system_rows"]


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


# ---------------------------------------------------------------- preserved state


def check_preserved_state(sup: Supervisor, *, resume: bool, fresh: bool) -> None:
    """Refuse a run that would overwrite or ignore preserved state; move it aside on ``--fresh``.

    Runs before anything starts, so a refusal leaves every file as it was.
    ``--resume`` reads the snapshots once here to know one is valid; the run
    reads them again (milliseconds) to restore.
    """
    store = sup.snapshots
    folder = store.directory
    try:
        _check_snapshots(store, resume=resume, fresh=fresh)
    except (FileNotFoundError, NotADirectoryError):
        # No folder (or a file where it should be): nothing preserved to
        # protect. The run says so itself when it cannot write a snapshot
        # (an emergency then exits 4).
        if resume:
            _no_snapshot_to_resume(folder, [])
    except OSError as exc:
        fail(f"{folder}: {exc.strerror or exc}", EXIT_FAILED)


def _no_snapshot_to_resume(folder: Path, problems: list[Any]) -> NoReturn:
    found = f"{len(problems)} unreadable ({problems[0]})" if problems else "none"
    fail(
        f"--resume: no valid snapshot in {folder} (snapshots found: {found}); "
        "every file was kept; run with --fresh to start a new world instead",
        EXIT_USAGE,
    )


def _check_snapshots(store: SnapshotStore, *, resume: bool, fresh: bool) -> None:
    folder = store.directory
    if resume:
        snap, problems = store.latest()
        if snap is None:
            _no_snapshot_to_resume(folder, problems)
        return
    if fresh:
        aside = store.move_aside()
        if aside is not None:
            get_logger().warning(
                "snapshots.moved_aside",
                folder=str(aside),
                detail="--fresh: the earlier world's snapshots are kept there",
            )
        return
    if store.has_snapshots():
        fail(
            f"{folder} holds the snapshots of an earlier run: pass --resume to continue "
            "that world, or --fresh to start a new one (its files are moved aside, never deleted)",
            EXIT_USAGE,
        )


# ---------------------------------------------------------------- the summary file


def write_summary(path: str, summary: RunSummary) -> None:
    """Write the summary atomically to the regular file at ``path`` (or where its symlink points).

    The temporary file has a random name created with ``O_EXCL`` beside the
    target, so neither it nor the target can be a planted symlink or device.

    Raises:
        UnsafePathError: the path is not (and does not lead to) a regular file.
        OSError: the write failed.
    """
    check_output_path(path)
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; the summary is for monitoring to read
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the command


def run_command(
    *,
    config_path: str | None,
    phase: str | None,
    profile: str | None,
    tick_rate: float | None,
    ticks: int | None,
    duration: float | None,
    state_dir: str | None,
    resume: bool,
    fresh: bool,
    exit_on_emergency: bool,
    log_format: str | None,
    summary_json: str | None,
) -> NoReturn:
    """``supervisor run``: exits 0, 1, 2, 3 or 4 as CONTRACT section 2 says."""
    if resume and fresh:
        raise click.UsageError(
            "--resume and --fresh exclude each other", click.get_current_context()
        )
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
        fail(str(exc), EXIT_USAGE)
    if summary_json is not None:
        try:
            check_output_path(summary_json)
        except SupervisorError as exc:
            fail(f"--summary-json {exc}", EXIT_USAGE)
        if not Path(summary_json).resolve().parent.is_dir():
            fail(f"--summary-json {summary_json}: the folder does not exist", EXIT_USAGE)
    if sup.phase is Phase.PRODUCTION:
        report = sup.security_report()
        if not report.ok:
            check = report.checks[0]
            fail(
                f"cannot start in production: security check failed: {check.detail} "
                f"(recommendation: {check.recommendation})",
                EXIT_USAGE,
            )
    fmt = effective.logging.format
    live = LiveStream(sys.stderr) if sys.stderr.isatty() else None
    renderer = configure_logging(
        _resolve_log_format(fmt, start_phase),
        effective.logging.level,
        stream=live,  # type: ignore[arg-type]  # file-like: write, flush, isatty
        processors=(sup.redactor.structlog_processor(),),
    )
    check_preserved_state(sup, resume=resume, fresh=fresh)
    if live is not None:
        sup.services.append(functools.partial(live_status, stream=live))
    if fmt == "auto":
        # Entering PRODUCTION (or any phase past DEVELOPMENT) turns JSON logs on.
        sup.phase_listeners.append(
            lambda phase: setattr(renderer, "format", _resolve_log_format("auto", phase))
        )
    from .._store._shipper import attach_error_store

    error_store = attach_error_store(sup)
    listen_errors: tuple[type[Exception], ...] = ()
    if effective.features.api:
        from .._server._serve import ApiListenError, attach_api

        listen_errors = (ApiListenError,)
        try:
            attach_api(sup, error_store=error_store)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
    summary = _run(
        sup,
        listen_errors,
        ticks=ticks,
        duration=duration,
        exit_on_emergency=exit_on_emergency,
        resume=resume,
    )
    if summary_json is not None:
        try:
            write_summary(summary_json, summary)
        except (SupervisorError, OSError) as exc:
            fail(f"cannot write --summary-json {summary_json}: {exc}", EXIT_FAILED)
    sys.exit(summary.exit_code)


def _run(
    sup: Supervisor,
    listen_errors: tuple[type[Exception], ...],
    *,
    ticks: int | None,
    duration: float | None,
    exit_on_emergency: bool,
    resume: bool,
) -> RunSummary:
    """Run to the end; a start-up failure is one line (exit 2 if refused on purpose, else 1).

    ``listen_errors``: the API server's "cannot listen" error when it is on
    (imported with the server; a run without the API never loads it).
    """

    async def main() -> RunSummary:
        return await sup.run(
            ticks=ticks,
            duration=duration,
            exit_on_emergency=exit_on_emergency,
            handle_signals=True,
            resume=resume,
        )

    try:
        return trio.run(main)
    except listen_errors as exc:
        fail(str(exc), EXIT_USAGE)
    except StartupError as exc:
        fail(str(exc), EXIT_USAGE if exc.refused else EXIT_FAILED)
    except PluginError as exc:  # dependency errors surface when the run orders systems
        fail(str(exc), EXIT_USAGE)


# ---------------------------------------------------------------- supervisor systems


def system_rows() -> list[dict[str, Any]]:
    """One row per discoverable system: name, origin, target, critical, depends_on, priority."""
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
    return rows


def _class_default(cls: Any, attr: str, default: Any) -> Any:
    """A class attribute, or an attrs field default, without building the class."""
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.name == attr and field.default is not attrs.NOTHING:
                value = field.default
                return value.factory() if isinstance(value, attrs.Factory) else value  # type: ignore[arg-type]
    return getattr(cls, attr, default)
