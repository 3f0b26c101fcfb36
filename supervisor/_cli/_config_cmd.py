"""``supervisor config check`` and ``supervisor config show``: a config judged before it runs.

``check`` does everything ``run`` does before the first tick but start:
it loads the file (with its phase overlay and the ``SUPERVISOR_*``
variables), resolves, imports and builds every enabled system with its
arguments (their types checked against the constructor), and orders them
by their dependencies. It starts nothing and writes nothing, so an operator
can run it on the machine that will run the world, before deploying.

``show`` prints the config the supervisor would run with, every default
spelt out: the token digests shortened to a ``sha256:`` prefix (enough to
tell two apart, of no use to guess the secret) and the snapshot key never
shown. The systems, the plugin loader and the tick loop are imported only
inside the commands (``tests/test_cli_imports.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import click

from .._core._config import Config
from .._core._config_fleet import safe_url
from .._core._config_sections import SECTIONS
from .._core._phase import Phase
from .._errors import ConfigError, SupervisorError
from ._client import DEFAULT_CONFIG, EXIT_OK, EXIT_USAGE, fail

if TYPE_CHECKING:
    from .._core._control import ReadinessReport

__all__ = [
    "DEMO_WORLD",
    "CheckedSystem",
    "check_systems",
    "config",
    "load_config",
    "shown_mapping",
    "system_rows",
]

#: Hex digits of a token's sha256 that ``config show`` prints.
DIGEST_PREFIX: Final = 12
#: What ``config show`` prints in place of a snapshot key that is set.
HIDDEN: Final = "(set, not shown)"
#: The phases a config can start in (``emergency_shutdown`` is entered, never started in).
START_PHASES: Final = ("development", "testing", "production")


@attrs.frozen
class CheckedSystem:
    """One enabled system as ``config check`` built it."""

    name: str
    origin: str
    critical: bool
    depends_on: tuple[str, ...]
    priority: int


#: What ``supervisor run`` runs with no config: the demo tycoon world.
DEMO_WORLD: Final = {
    "systems": {
        "enabled": ["players", "economy", "tycoon", "datastore", "leaderboard", "security"],
        "players": {"count": 200},
    }
}


def load_config(path: str | None) -> Config:
    """``--config``, else ./supervisor.toml if it exists, else the demo world.

    Raises:
        ConfigError: the file or a ``SUPERVISOR_*`` variable is invalid.
    """
    if path is None:
        if Path(DEFAULT_CONFIG).is_file():
            path = DEFAULT_CONFIG
        else:
            return Config.from_mapping(DEMO_WORLD, source="<built-in demo world>")
    return Config.from_toml(path)


def load(config_path: str | None, phase: str | None) -> tuple[Config, Phase]:
    """The config ``run`` would use (``--config``, else ./supervisor.toml, else the
    demo world) with ``phase`` (else its own) applied.

    Raises:
        ConfigError: the file or an overlay or a variable is invalid.
    """
    config = load_config(config_path)
    start = Phase(phase) if phase is not None else Phase.parse(config.supervisor.phase)
    return config.for_phase(start), start


def check_systems(config: Config) -> tuple[list[CheckedSystem], list[str]]:
    """Resolve, build and order ``config``'s enabled systems; collect every problem.

    Returns the systems in start order (empty when any problem was found)
    and one line per problem.
    """
    # The plugin loader brings the redactor and structlog; ``show`` needs neither.
    from .._core._plugins import build, inspect_system, order, plan_systems  # noqa: PLC0415

    source = config.source
    found: list[SupervisorError] = []
    plans = plan_systems(
        config.systems.enabled, config.systems.options, source=source, problems=found
    )
    infos = []
    for plan in plans:
        try:
            system = build(plan.name, plan.factory, plan.options, source=source)
            infos.append(inspect_system(system, plan.name, plan.origin))
        except SupervisorError as exc:
            found.append(exc)
    if found:
        return [], [str(exc) for exc in found]
    try:
        names = order(infos)
    except SupervisorError as exc:
        return [], [str(ConfigError(str(exc), source=source, key="systems"))]
    by_name = {info.name: info for info in infos}
    checked = [
        CheckedSystem(
            name=name,
            origin=by_name[name].origin,
            critical=by_name[name].critical,
            depends_on=by_name[name].depends_on,
            priority=by_name[name].priority,
        )
        for name in names
    ]
    return checked, []


def security_problem(config: Config, phase: Phase) -> str | None:
    """Why ``run`` would refuse to start ``config`` in ``phase`` (only production is judged).

    The same security check ``run`` makes, from the config alone: the
    socket's permissions are judged when it exists, at run time.
    """
    if phase is not Phase.PRODUCTION:
        return None
    from .._core._readiness import ReadinessFacts, security_only  # noqa: PLC0415

    api = config.api
    facts = ReadinessFacts(
        target_phase=phase.value,
        api_enabled=config.features.api,
        api_tcp=not api.listen.startswith("unix:"),
        tokens=len(api.tokens),
        redaction=config.features.redaction is not False,
    )
    return refusal(security_only(facts))


def refusal(report: ReadinessReport) -> str | None:
    """The one line that refuses a start in production, or None when security passes."""
    if report.ok:
        return None
    check = report.checks[0]
    return (
        f"cannot start in production: security check failed: {check.detail} "
        f"(recommendation: {check.recommendation})"
    )


def shown_mapping(config: Config) -> dict[str, Any]:
    """``config`` as ``config show`` prints it: secrets shortened or hidden, no overlays.

    The overlays are left out because they are already applied: what is
    shown is what would run.
    """
    out = config.as_mapping()
    out.pop("phases", None)
    if out["supervisor"].get("snapshot_key") is not None:
        out["supervisor"]["snapshot_key"] = HIDDEN
    for token in out["api"].get("tokens", []):
        token["sha256"] = f"sha256:{token['sha256'][:DIGEST_PREFIX]}…"
    if out["fleet"].get("redis") is not None:  # its password, if any, masked
        out["fleet"]["redis"] = safe_url(out["fleet"]["redis"])
    return out


def _from_env(config: Config) -> dict[tuple[str, str], str]:
    """(section, key) → the ``SUPERVISOR_*`` variable that set it."""
    found = {}
    for var in config.env:
        rest = var.removeprefix("SUPERVISOR_").lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                found[section, rest[len(section) + 1 :]] = var
    return found


def _toml_value(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays are TOML's too (for what a config holds).
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(value, ensure_ascii=False)


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def render_toml(mapping: Mapping[str, Any], env: Mapping[tuple[str, str], str]) -> str:
    """``mapping`` as TOML, a ``# from VAR`` note beside each value a variable set."""
    lines: list[str] = []

    def table(path: str, values: Mapping[str, Any]) -> None:
        plain = {k: v for k, v in values.items() if not _is_table(v) and not _is_tables(v)}
        if plain or not values:
            lines.extend(("", f"[{path}]"))
        for key, value in plain.items():
            var = env.get((path, key))
            note = f"  # from {var}" if var else ""
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}{note}")
        for key, value in values.items():
            if _is_table(value):
                table(f"{path}.{_toml_key(key)}", value)
            elif _is_tables(value):
                for item in value:
                    lines.extend(("", f"[[{path}.{_toml_key(key)}]]"))
                    lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items())

    for name, values in mapping.items():
        table(name, values)
    return "\n".join(lines).lstrip("\n")


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


# ------------------------------------------------------------ supervisor systems


def system_rows(config: Config) -> list[dict[str, Any]]:
    """Every system ``supervisor systems`` lists: the discovered ones and the config's.

    One row per discovered entry point, plus one per enabled entry that is
    an import string or a ``use`` of another name; ``enabled`` marks what
    ``config`` runs (every discovered system when it has no ``enabled`` list).
    Keys: name, origin, target, enabled, critical, depends_on, priority, error.
    """
    from .._core._plugins import (  # noqa: PLC0415 - imports the systems
        SystemSource,
        default_name,
        discover,
        is_import_string,
        load_target,
    )

    found = discover()
    enabled = config.systems.enabled
    sources = dict(found)
    marked = set(found) if enabled is None else set()
    for entry in enabled or ():
        use = config.systems.options.get(entry, {}).get("use")
        target = use or entry
        name = entry
        if is_import_string(target):
            if is_import_string(entry):
                # Enabled by its import string alone: it runs under its own name.
                with contextlib.suppress(SupervisorError):
                    name = default_name(load_target(target, system=entry), target)
            sources[name] = SystemSource(name, target, "import string")
        elif target in found and use:
            sources[name] = SystemSource(name, found[target].target, found[target].origin)
        elif target not in found:
            sources[name] = SystemSource(name, target, "unknown: not installed")
        marked.add(name)
    return [_system_row(src, enabled=name in marked) for name, src in sorted(sources.items())]


def _system_row(src: Any, *, enabled: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": src.name,
        "origin": src.origin,
        "target": src.target,
        "enabled": enabled,
    }
    try:
        cls = src.load()
    except SupervisorError as exc:
        return {**row, "critical": None, "depends_on": [], "priority": None, "error": str(exc)}
    return {
        **row,
        "critical": bool(_class_default(cls, "critical", False)),
        "depends_on": list(_class_default(cls, "depends_on", ())),
        "priority": _class_default(cls, "priority", 0),
        "error": None,
    }


def _class_default(cls: Any, attr: str, default: Any) -> Any:
    """A class attribute, or an attrs field default, without building the class."""
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.name == attr and field.default is not attrs.NOTHING:
                value = field.default
                return value.factory() if isinstance(value, attrs.Factory) else value  # type: ignore[arg-type]
    return getattr(cls, attr, default)


# --------------------------------------------------------------- commands


def _config_option(func: Any) -> Any:
    func = click.option(
        "--phase",
        type=click.Choice(START_PHASES),
        help="Judge the config as it is in this phase (default: its [supervisor] phase).",
    )(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help=f"TOML config file (default: ./{DEFAULT_CONFIG}, else the demo world).",
    )(func)


#: What ``config``, ``config check`` and ``config show`` end their help with.
CONFIG_EPILOG: Final = (
    "Reads SUPERVISOR_<SECTION>_<KEY> variables, which override the file. "
    "Exit codes: 0 the config is good; 2 it is not (one line per problem)."
)


@click.group(epilog=CONFIG_EPILOG)
def config() -> None:
    """Check a config before it runs, or show the one that would run."""


@config.command(epilog=CONFIG_EPILOG)
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def check(config_path: str | None, phase: str | None, as_json: bool) -> None:
    """Validate the config and build every enabled system; start nothing, write nothing.

    \b
    Checks the file, its phase overlay and the SUPERVISOR_* variables, imports
    every enabled system, builds it with its [systems.NAME] arguments (their
    types checked against the constructor) and orders the systems by their
    dependencies; in production, makes run's security check (API tokens,
    redaction). Prints what would run (exit 0), or one line per problem
    (exit 2).

    \b
    Example:
      supervisor config check --config game.toml --phase production
    """
    try:
        effective, start = load(config_path, phase)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    checked, problems = check_systems(effective)
    insecure = security_problem(effective, start)
    if insecure is not None:
        problems.append(insecure)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not problems,
                    "config": effective.source,
                    "phase": start.value,
                    "systems": [attrs.asdict(s) for s in checked],
                    "problems": problems,
                },
                indent=2,
            )
        )
    elif problems:
        for line in problems:
            click.echo(f"supervisor: error: {line}", err=True)
    else:
        click.echo(f"{effective.source}: ok, phase {start.value}, {len(checked)} systems in order:")
        for s in checked:
            extra = [f"depends on {', '.join(s.depends_on)}"] if s.depends_on else []
            extra += ["critical"] if s.critical else []
            suffix = f" ({'; '.join(extra)})" if extra else ""
            click.echo(f"  {s.name:<14} {s.origin}{suffix}")
    raise SystemExit(EXIT_USAGE if problems else EXIT_OK)


@config.command(epilog=CONFIG_EPILOG)
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def show(config_path: str | None, phase: str | None, as_json: bool) -> None:
    """Print the effective config: the file, its phase overlay and the environment.

    \b
    Every setting is spelt out, defaults included; a value set by a
    SUPERVISOR_* variable is marked with it. Token digests are shortened to
    a sha256: prefix; the snapshot key is never shown.

    \b
    Example:
      SUPERVISOR_SUPERVISOR_TICK_RATE=20 supervisor config show --phase testing
    """
    try:
        effective, start = load(config_path, phase)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    shown = shown_mapping(effective)
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    click.echo(f"# {effective.source}, phase {start.value}")
    click.echo(render_toml(shown, _from_env(effective)))
