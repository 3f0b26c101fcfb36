"""Config: TOML in, frozen attrs classes out, every mistake named.

A config is built by factories (``Config.from_toml`` -> ``Config.from_mapping``),
never ``Config(**raw)``: each section checks its keys against the fields it
knows, suggests the nearest one for a typo, and checks each value's type and
range. ``SUPERVISOR_<SECTION>_<KEY>`` environment variables override the file,
and ``[phases.NAME]`` tables are overlays validated at load time and applied
when that phase is entered.

The checks live in attrs validators on the fields (:mod:`._config_fields`,
the sections in :mod:`._config_sections`), so a section or a config built in
code (``RecoveryConfig(history=0)``) fails exactly like one read from TOML: a
:class:`ConfigError` naming the key. This module only loads: it refuses what
no section can see (unknown sections and variables, hostile files, nesting).
Hostile input is refused in one line, never a traceback or a hang: NaN and
infinities, numbers past each key's ceiling, NUL bytes and over-long strings,
nesting past :data:`MAX_DEPTH`, config files that are not regular files or
are over 1 MiB (see :mod:`._files`), byte-order marks, non-UTF-8 bytes, and
``SUPERVISOR_*`` variables that name no key (except :data:`NON_CONFIG_VARIABLES`).
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import attrs

from .._errors import ConfigError, one_line, printable
from .._files import UnsafePathError, read_config_bytes
from ._config_agones import AgonesConfig
from ._config_alerts import AlertsConfig
from ._config_fields import convert, plain, problem, sourced, suggest
from ._config_flags import FLAG_TABLES, ExperimentConfig, FlagConfig
from ._config_fleet import FleetConfig
from ._config_sections import (
    BUILTIN_PROFILES,
    SECTIONS,
    ApiConfig,
    ErrorsConfig,
    FeaturesConfig,
    LoggingConfig,
    Profile,
    RecoveryConfig,
    SloConfig,
    SupervisorConfig,
    SystemsConfig,
    WatchdogConfig,
    parse_slos,
)
from ._config_snapshots import SnapshotsConfig
from ._phase import Phase

__all__ = ["MAX_DEPTH", "NON_CONFIG_VARIABLES", "Config", "apply_env_overrides", "parse_toml"]

#: ``SUPERVISOR_*`` variables that are not config overrides and must stay
#: allowed: the client's bearer token. Every other ``SUPERVISOR_*`` variable
#: must name a config key (a typo is an error, not silently ignored).
NON_CONFIG_VARIABLES: Final = frozenset({"SUPERVISOR_TOKEN"})

#: Deepest nesting of tables/arrays accepted in a config (real ones use 3-4).
MAX_DEPTH: Final = 32

_TOP_LEVEL = [*SECTIONS, "systems", "profiles", "phases", "slo", "snapshots", *FLAG_TABLES]
_OVERLAY_PHASES = tuple(phase.value for phase in Phase)
#: Keys a phase overlay cannot change: the snapshot store is built once, so a
#: per-phase state folder or key would write where the next start does not read.
_FIXED_KEYS = ("state_dir", "snapshot_generations", "snapshot_key")


def _overlays(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    """The shape of ``[phases.NAME]`` overlays; their values are checked by building them."""
    if not isinstance(value, Mapping):
        raise ConfigError("expected a table of phase overlays", key="phases")
    for name, overlay in value.items():
        if name not in _OVERLAY_PHASES:
            raise ConfigError(
                "unknown phase" + suggest(str(name), list(_OVERLAY_PHASES)), key=f"phases.{name}"
            )
        if not isinstance(overlay, Mapping):
            raise ConfigError("expected a table", key=f"phases.{name}")
        if "phases" in overlay:
            raise ConfigError("an overlay cannot hold phases", key=f"phases.{name}")
        table = overlay.get("supervisor")
        for key in _FIXED_KEYS:
            if isinstance(table, Mapping) and key in table:
                raise ConfigError(
                    "cannot change with the phase: the state folder and its snapshots "
                    "are set once at start",
                    key=f"phases.{name}.supervisor.{key}",
                )


def _profiles(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError("expected a table of profiles", key="profiles")
    for name, profile in value.items():
        if not isinstance(profile, Profile) or profile.name != name:
            raise ConfigError(f"expected a Profile named {name!r}", key=f"profiles.{name}")


def _slos(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError("expected a table of [slo.NAME] tables", key="slo")
    for name, slo in value.items():
        if not isinstance(slo, SloConfig) or slo.name != name:
            raise ConfigError(f"expected an SloConfig named {name!r}", key=f"slo.{name}")


def _is(cls: type) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Validator: the value is a ``cls`` (a dict in a section's place is refused)."""

    def of_class(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, cls):
            raise ConfigError(
                f"expected a {cls.__name__}, got {type(value).__name__}", key=attr.name
            )

    return of_class


@attrs.frozen(kw_only=True)
class Config:
    """A whole, validated config. Build it with ``from_toml`` or ``from_mapping``."""

    supervisor: SupervisorConfig = attrs.field(
        factory=SupervisorConfig, validator=_is(SupervisorConfig)
    )
    systems: SystemsConfig = attrs.field(factory=SystemsConfig, validator=_is(SystemsConfig))
    recovery: RecoveryConfig = attrs.field(factory=RecoveryConfig, validator=_is(RecoveryConfig))
    watchdog: WatchdogConfig = attrs.field(factory=WatchdogConfig, validator=_is(WatchdogConfig))
    features: FeaturesConfig = attrs.field(factory=FeaturesConfig, validator=_is(FeaturesConfig))
    logging: LoggingConfig = attrs.field(factory=LoggingConfig, validator=_is(LoggingConfig))
    api: ApiConfig = attrs.field(factory=ApiConfig, validator=_is(ApiConfig))
    alerts: AlertsConfig = attrs.field(factory=AlertsConfig, validator=_is(AlertsConfig))
    errors: ErrorsConfig = attrs.field(factory=ErrorsConfig, validator=_is(ErrorsConfig))
    agones: AgonesConfig = attrs.field(factory=AgonesConfig, validator=_is(AgonesConfig))
    snapshots: SnapshotsConfig = attrs.field(
        factory=SnapshotsConfig, validator=_is(SnapshotsConfig)
    )
    fleet: FleetConfig = attrs.field(factory=FleetConfig, validator=_is(FleetConfig))
    #: ``[slo.NAME]`` service-level objectives by name.
    slo: Mapping[str, SloConfig] = attrs.field(factory=dict, validator=_slos)
    #: ``[flags.NAME]`` and ``[experiments.NAME]`` by name (``_config_flags``).
    flags: Mapping[str, FlagConfig] = attrs.field(factory=dict)
    experiments: Mapping[str, ExperimentConfig] = attrs.field(factory=dict)
    #: Every profile by name: the built-in ones, adjusted or added to by the file.
    profiles: Mapping[str, Profile] = attrs.field(
        factory=lambda: dict(BUILTIN_PROFILES), validator=_profiles
    )
    #: The raw mapping this config was built from, kept to apply phase overlays.
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    #: ``[phases.NAME]`` tables by phase; their values are checked when loaded.
    overlays: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, repr=False, validator=_overlays
    )
    source: str = "<defaults>"
    #: The ``SUPERVISOR_*`` variables read at load, re-applied over phase overlays.
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)
    base_dir: Path = attrs.field(factory=Path.cwd, eq=False)

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
    ) -> Self:
        """Read, override from the environment, and validate a TOML config file.

        Args:
            path: the file.
            env: the environment to read ``SUPERVISOR_*`` overrides from
                (default ``os.environ``).

        Raises:
            ConfigError: the file is missing, unreadable, not a regular file
                (FIFO, device, directory), over 1 MiB, not UTF-8, not TOML,
                nested too deeply, or invalid.
        """
        source = printable(str(path))
        try:
            data = read_config_bytes(path)
        except UnsafePathError as exc:
            raise ConfigError(exc.problem, source=source) from None
        raw = parse_toml(data, source=source)
        return cls.from_mapping(raw, source=source, env=env, base_dir=Path(path).resolve().parent)

    @classmethod
    def from_mapping(
        cls,
        raw: Mapping[str, Any],
        *,
        source: str = "<config>",
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> Self:
        """Validate ``raw`` (as parsed from TOML), after environment overrides.

        Raises:
            ConfigError: an unknown section or key, a wrong type or value,
                an invalid phase overlay, nesting deeper than MAX_DEPTH, or an
                unknown ``SUPERVISOR_*`` variable.
        """
        env = {
            k: v
            for k, v in (os.environ if env is None else env).items()
            if k.startswith("SUPERVISOR_")
        }
        _check_depth(raw, source)
        file_raw = copy.deepcopy(dict(raw))
        built = cls._build(apply_env_overrides(file_raw, env), source=source)
        config = sourced(
            source,
            lambda: attrs.evolve(
                built,
                raw=file_raw,
                env=env,
                overlays=file_raw.get("phases", {}),
                source=source,
                base_dir=base_dir if base_dir is not None else Path.cwd(),
            ),
        )
        for phase in config.overlays:
            # Build now, so a bad overlay fails at load, not at the phase change.
            config.for_phase(Phase(phase))
        return config

    @classmethod
    def _build(cls, raw: Mapping[str, Any], *, source: str) -> Self:
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "phases":
                continue
            if key == "systems":
                kwargs["systems"] = SystemsConfig.from_mapping(value, source=source)
            elif key == "profiles":
                kwargs["profiles"] = _parse_profiles(value, source)
            elif key == "slo":
                kwargs["slo"] = parse_slos(value, source)
            elif key in FLAG_TABLES:
                kwargs[key] = FLAG_TABLES[key](value, source)
            elif key == "snapshots":
                kwargs["snapshots"] = SnapshotsConfig.from_mapping(value, source=source)
            elif key in SECTIONS:
                kwargs[key] = SECTIONS[key].from_mapping(value, source=source)
            else:
                raise ConfigError(
                    "unknown section" + suggest(key, _TOP_LEVEL), source=source, key=key
                )
        return cls(**kwargs)

    def for_phase(self, phase: Phase) -> Config:
        """Return this config with ``[phases.<phase>]`` applied (itself if none).

        Raises:
            ConfigError: the overlay holds an invalid key or value (from_mapping
                builds every overlay, so a loaded config never raises here).
        """
        overlay = self.overlays.get(phase.value)
        if not overlay:
            return self
        built = self._build(
            apply_env_overrides(_merge(self.raw, overlay), self.env),
            source=f"{self.source} [phases.{phase.value}]",
        )
        return attrs.evolve(
            built,
            raw=self.raw,
            env=self.env,
            overlays=self.overlays,
            source=self.source,
            base_dir=self.base_dir,
        )

    def as_mapping(self) -> dict[str, Any]:
        """The config as the mapping ``from_mapping`` takes back to an equal Config.

        Every setting is spelt out (defaults too), tokens as tables, profiles
        as tables by name, overlays under ``phases``. It holds the snapshot key
        and the token hashes as they are: redact it before showing it.
        """
        out: dict[str, Any] = {
            name: _table(getattr(self, name)) for name in SECTIONS if name != "api"
        }
        out["api"] = {
            **_table(self.api),
            "tokens": [attrs.asdict(token) for token in self.api.tokens],
        }
        systems: dict[str, Any] = {name: dict(t) for name, t in self.systems.options.items()}
        if self.systems.enabled is not None:
            systems["enabled"] = list(self.systems.enabled)
        out["systems"] = systems
        out["profiles"] = {name: _table(profile) for name, profile in self.profiles.items()}
        if self.slo:
            out["slo"] = {name: _table(slo) for name, slo in self.slo.items()}
        for key in FLAG_TABLES:
            if tables := getattr(self, key):
                out[key] = {name: entry.as_table() for name, entry in tables.items()}
        if self.overlays:
            out["phases"] = copy.deepcopy(dict(self.overlays))
        return out

    def path(self, value: str) -> Path:
        """Resolve a path from the config against the config file's folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p


def parse_toml(data: bytes, *, source: str) -> dict[str, Any]:
    """Decode and parse a config file's bytes, every failure one line.

    Raises:
        ConfigError: a byte-order mark, bytes that are not UTF-8, TOML that
            does not parse (duplicate keys included), nesting too deep for the
            parser, or an integer too long to convert.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(
            "starts with a byte-order mark (BOM); save it as UTF-8 without one", source=source
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}", source=source
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {one_line(str(exc))}", source=source) from None
    except RecursionError:
        raise ConfigError(
            f"not valid TOML: nested too deeply (the limit is {MAX_DEPTH} levels)", source=source
        ) from None
    except ValueError as exc:
        # int("9" * 5000): Python refuses integers of over 4300 digits.
        raise ConfigError(f"not valid TOML: {one_line(str(exc))}", source=source) from None
    _check_depth(raw, source)
    return raw


def _check_depth(raw: Mapping[str, Any], source: str) -> None:
    """Refuse tables/arrays nested deeper than MAX_DEPTH, without recursing.

    Dotted keys (``a.b.c...``) nest without recursion in the parser, but
    ``copy.deepcopy`` and the overlay merge would then recurse past Python's
    limit: a RecursionError traceback in old main.
    """
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"nested too deeply (the limit is {MAX_DEPTH} levels of tables and arrays)",
                source=source,
            )
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def _table(section: attrs.AttrsInstance) -> dict[str, Any]:
    """A section's settings as a TOML table: tuples as lists, None left out (TOML has none)."""
    return {
        f.name: list(value) if isinstance(value, tuple) else value
        for f in attrs.fields(type(section))
        if plain(f) and (value := getattr(section, f.name)) is not None
    } | {  # parsed fields that know their TOML form ([[alerts.rules]])
        f.name: f.metadata["unparse"](getattr(section, f.name))
        for f in attrs.fields(type(section))
        if "unparse" in f.metadata
    }


def _parse_profiles(raw: Any, source: str) -> dict[str, Profile]:
    if not isinstance(raw, Mapping):
        raise ConfigError("expected a table of profiles", source=source, key="profiles")
    profiles = dict(BUILTIN_PROFILES)
    for name, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=f"profiles.{name}")
        builtin = BUILTIN_PROFILES.get(name)
        # A table named like a shipped profile adjusts it: unset keys keep their values.
        base = {} if builtin is None else _table(builtin)
        try:
            profiles[name] = attrs.evolve(
                Profile.from_mapping({**base, **table}, source=source), name=name
            )
        except ConfigError as exc:
            # Name the profile rather than the generic section.
            rest = (exc.key or "profiles").removeprefix("profiles")
            key = f"profiles.{name}" + ("" if rest == ".name" else rest)
            raise ConfigError(exc.message, source=source, key=key) from None
    return profiles


def _merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` over ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(dict(base))
    out.pop("phases", None)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_env_overrides(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Return ``raw`` with ``SUPERVISOR_<SECTION>_<KEY>`` variables applied.

    Values are read as TOML values when they parse (``60``, ``true``,
    ``["a", "b"]``) and as plain strings otherwise; a string key takes the
    text as it is unless it is a quoted TOML string (so a numeric-looking
    ``snapshot_key`` stays a string). Each value is checked by the same
    validator as the file's, and an error names the variable.
    Every other ``SUPERVISOR_*`` variable is an error with a suggestion,
    except the documented non-config ones (:data:`NON_CONFIG_VARIABLES`).

    Raises:
        ConfigError: a variable names no config key, or its value is invalid.
    """
    out = copy.deepcopy(dict(raw))
    for var, text in sorted(env.items()):
        if not var.startswith("SUPERVISOR_") or var in NON_CONFIG_VARIABLES:
            continue
        section, field = _env_target(var)
        value = _env_value(text, field)
        converter = convert(field.metadata.get("kind", str))
        found = problem(value if converter is None else converter(value), field.metadata)
        if found is not None:
            raise ConfigError(found, source=var, key=f"{section}.{field.name}")
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError("expected a table", source=var, key=section)
        table[field.name] = value
    return out


def _env_target(var: str) -> tuple[str, attrs.Attribute[Any]]:
    """The section and field ``SUPERVISOR_<SECTION>_<KEY>`` names.

    Raises:
        ConfigError: no section matches (the nearest variable is suggested),
            or the section has no such key (the nearest key is suggested).
    """
    rest = var[len("SUPERVISOR_") :].lower()
    section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
    table = next((t for t in ("systems", "profiles", "phases") if rest.startswith(t + "_")), None)
    if table is not None:
        raise ConfigError(
            f"[{table}] cannot be set from the environment; set it in the config file",
            source=var,
        )
    if section is None:
        import difflib  # noqa: PLC0415 - loaded only to word an error

        close = difflib.get_close_matches(var.upper(), _env_names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            "not a config variable (SUPERVISOR_<SECTION>_<KEY>), nor one of "
            f"{', '.join(sorted(NON_CONFIG_VARIABLES))}{hint}",
            source=var,
        )
    key = rest[len(section) + 1 :]
    fields = {f.name: f for f in attrs.fields(SECTIONS[section]) if plain(f)}  # type: ignore[arg-type]
    if key not in fields:
        raise ConfigError(
            "unknown key" + suggest(key, list(fields)), source=var, key=f"{section}.{key}"
        )
    return section, fields[key]


def _env_names() -> list[str]:
    """Every variable the config reads, and the allowed non-config ones."""
    names = [
        f"SUPERVISOR_{section}_{f.name}".upper()
        for section, cls in SECTIONS.items()
        for f in attrs.fields(cls)  # type: ignore[arg-type]
        if plain(f)
    ]
    return [*names, *NON_CONFIG_VARIABLES]


def _env_value(text: str, field: attrs.Attribute[Any]) -> Any:
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError, ValueError, KeyError):
        return text
    if field.metadata.get("kind") is str and not isinstance(value, str):
        return text
    return value
