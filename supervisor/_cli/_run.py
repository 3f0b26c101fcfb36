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

import click
import trio

from .._core._config import Config
from .._core._phase import Phase
from .._core._runtime import Supervisor
from .._core._snapshot import SnapshotStore
from .._core._snapshot_shared import SharedSnapshotStore, shared_status
from .._core._views import RunSummary
from .._errors import ConfigError, PluginError, StartupError, SupervisorError
from .._files import check_output_path
from .._logging import configure_logging, get_logger
from ._client import EXIT_FAILED, EXIT_USAGE, fail
from ._config_cmd import load_config, refusal
from ._live import LiveStream, live_status
from ._rollout_cmd import attach_rollouts_to_run

__all__ = ["run_command"]


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


def _resolve_log_format(fmt: str) -> str:
    """``auto``: the console format on a terminal, JSON otherwise, whatever the phase.

    It once switched to JSON on a terminal when the phase left development,
    so an operator watching a promotion lost readable lines at the moment
    that mattered; a log collector reads a pipe or a file, never a terminal.
    """
    if fmt != "auto":
        return fmt
    return "console" if sys.stderr.isatty() else "json"


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


def resume_shared_world(sup: Supervisor, world: str) -> None:
    """``--resume-from WORLD``: check the world's shared snapshot, then set local ones aside.

    The local snapshots (of whatever this machine ran before) are another
    world's: moved aside like ``--fresh`` does, never deleted, and only once
    the shared world is known to have a valid snapshot to continue from.
    """
    store = sup.snapshots
    if not isinstance(store, SharedSnapshotStore):
        fail("--resume-from needs a shared snapshot store: set [snapshots] store", EXIT_USAGE)
    try:
        store.resume_world(world)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    source = store.resume_from
    assert source is not None
    try:
        snap, problems = store.latest()
    except OSError as exc:
        fail(f"{source.label}: {exc.strerror or exc}", EXIT_FAILED)
    if snap is None:
        _no_snapshot_to_resume(source.label, problems)
    check_preserved_state(sup, resume=False, fresh=True)


def _prepare_world(sup: Supervisor, world: str | None, *, resume: bool, fresh: bool) -> str | None:
    """A fleet member's world lease, or a standby's wait for a world (``_fleet/_failover.py``)."""
    if not (sup.config.fleet.enabled or sup.config.fleet.standby):
        return world  # no fleet: its modules are not even imported
    from .._fleet._failover import StandbyStopped, prepare_world

    try:
        return prepare_world(sup, world, resume=resume, fresh=fresh)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except StandbyStopped:
        sys.exit(0)


def _register_shared_stores(config: Config) -> None:
    """A Redis ``[snapshots] store``: register its factory before the supervisor is built."""
    store = config.snapshots.store
    if store is not None and "://" in store:
        from .._fleet._snapshots import register_redis_store

        register_redis_store()


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


def _attach_services(sup: Supervisor, *, api: bool) -> tuple[type[Exception], ...]:
    """The error store, the HTTP API and the alerts, each a supervised service of the run.

    Returns the API server's "cannot listen" error (imported with the server;
    a run without the API never loads it). A bad ``[api]`` or alert rule is
    one line, exit 2.
    """
    from .._agones import attach_agones
    from .._alerts import attach_alerts
    from .._store._shipper import attach_error_store
    from ._fleet_cmd import attach_member

    error_store = attach_error_store(sup)
    listen_errors: tuple[type[Exception], ...] = ()
    audit = None
    try:
        if api:
            from .._server._serve import ApiListenError, attach_api

            listen_errors = (ApiListenError,)
            audit = attach_api(sup, error_store=error_store)
        engine = attach_alerts(
            sup, burn_rate=None if error_store is None else error_store.slo_burn_rate
        )
        attach_agones(sup)  # on when Agones names its sidecar or [agones] enabled (issue 14)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    attach_member(sup)  # [fleet] redis: a fleet member (its own section, nothing otherwise)
    if sup.config.fleet.enabled:  # a takeover is an incident (issue 15)
        from .._fleet._failover import attach_failover

        attach_failover(sup, error_store)
    if engine is not None and error_store is not None:
        store = error_store  # firing alerts are incidents of `supervisor report`
        engine.on_firing.append(lambda rule: store.incident("alert", rule.name))
    # After the alerts: rollouts watch their rules. They write to the API's audit log.
    attach_rollouts_to_run(sup, error_store, audit_log=audit)
    return listen_errors


def _check_summary_path(path: str) -> None:
    """Refuse a ``--summary-json`` that could not be written at the end (exit 2, one line)."""
    try:
        check_output_path(path)
    except SupervisorError as exc:
        fail(f"--summary-json {exc}", EXIT_USAGE)
    if not Path(path).resolve().parent.is_dir():
        fail(f"--summary-json {path}: the folder does not exist", EXIT_USAGE)


def _check_resume_options(*, resume: bool, fresh: bool, resume_from: str | None) -> None:
    """``--resume``, ``--fresh`` and ``--resume-from`` exclude each other (a usage error)."""
    if resume and fresh:
        raise click.UsageError(
            "--resume and --fresh exclude each other", click.get_current_context()
        )
    if resume_from is not None and (resume or fresh):
        raise click.UsageError(
            "--resume-from excludes --resume and --fresh", click.get_current_context()
        )


def _refuse_by_phase(sup: Supervisor, *, reload: bool) -> None:
    """Exit 2 for ``--reload`` outside development, or a production start that is not secure."""
    if reload and sup.phase is not Phase.DEVELOPMENT:
        fail(
            f"--reload is for the development phase only (this run is {sup.phase.value})",
            EXIT_USAGE,
        )
    if sup.phase is Phase.PRODUCTION:
        refused = refusal(sup.security_report())
        if refused is not None:
            fail(refused, EXIT_USAGE)


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
    reload: bool,
    resume_from: str | None = None,
) -> NoReturn:
    """``supervisor run``: exits 0, 1, 2, 3 or 4 as CONTRACT section 2 says."""
    _check_resume_options(resume=resume, fresh=fresh, resume_from=resume_from)
    try:
        config = load_config(config_path)
        config = _with_overrides(
            config,
            supervisor={"phase": phase, "profile": profile, "state_dir": state_dir},
            logging={"format": log_format},
        )
        _register_shared_stores(config)
        sup = Supervisor.from_config(
            config,
            tick_rate=tick_rate,
            # A --state-dir is relative to where the command runs, not to the config file.
            state_dir=Path(state_dir).resolve() if state_dir else None,
        )
    except (ConfigError, PluginError) as exc:
        fail(str(exc), EXIT_USAGE)
    if summary_json is not None:
        _check_summary_path(summary_json)
    _refuse_by_phase(sup, reload=reload)
    effective = sup.active_config  # the start phase's overlay applied
    fmt = effective.logging.format
    live = LiveStream(sys.stderr) if sys.stderr.isatty() else None
    configure_logging(
        _resolve_log_format(fmt),
        effective.logging.level,
        stream=live,  # type: ignore[arg-type]  # file-like: write, flush, isatty
        processors=(sup.redactor.structlog_processor(),),
    )
    resume_from = _prepare_world(sup, resume_from, resume=resume, fresh=fresh)  # issue 15
    if resume_from is not None:
        resume_shared_world(sup, resume_from)
        resume = True
    else:
        check_preserved_state(sup, resume=resume, fresh=fresh)
    if isinstance(sup.snapshots, SharedSnapshotStore):
        sup.status_sections["snapshots_shared"] = functools.partial(shared_status, sup.snapshots)
    if live is not None:
        sup.services.append(functools.partial(live_status, stream=live))
    listen_errors = _attach_services(sup, api=effective.features.api)
    if reload:
        from ._reload import attach_reload

        attach_reload(sup)
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
