"""Config: TOML in, frozen attrs classes out, every mistake named.

A config is built by factories (``Config.from_toml`` -> ``Config.from_mapping``),
never ``Config(**raw)``: each section checks its keys against the fields it
knows, suggests the nearest one for a typo, and checks each value's type and
range. ``SUPERVISOR_<SECTION>_<KEY>`` environment variables override the file,
and ``[phases.NAME]`` tables are overlays validated at load time and applied
when that phase is entered.

The checks live in attrs validators on the fields (driven by each ``_f``
field's metadata), so a section built in code (``RecoveryConfig(history=0)``)
fails exactly like one read from TOML: a :class:`ConfigError` naming the key.
Hostile input is refused in one line, never a traceback or a hang: NaN and
infinities, numbers past each key's ceiling, NUL bytes and over-long strings,
nesting past :data:`MAX_DEPTH`, config files that are not regular files or
are over 1 MiB (see :mod:`._files`), byte-order marks, non-UTF-8 bytes, and
``SUPERVISOR_*`` variables that name no key (except :data:`NON_CONFIG_VARIABLES`).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import attrs

from .._errors import ConfigError, one_line, printable
from .._files import UnsafePathError, read_config_bytes
from ._phase import Phase

__all__ = [
    "NON_CONFIG_VARIABLES",
    "ApiConfig",
    "Config",
    "FeaturesConfig",
    "LoggingConfig",
    "Profile",
    "RecoveryConfig",
    "SupervisorConfig",
    "SystemsConfig",
    "TokenConfig",
    "WatchdogConfig",
]

_MISSING = object()

#: ``SUPERVISOR_*`` variables that are not config overrides and must stay
#: allowed: the client's bearer token. Every other ``SUPERVISOR_*`` variable
#: must name a config key (a typo is an error, not silently ignored).
NON_CONFIG_VARIABLES: Final = frozenset({"SUPERVISOR_TOKEN"})

#: Deepest nesting of tables/arrays accepted in a config (real ones use 3-4).
MAX_DEPTH: Final = 32
#: Longest string value accepted (paths, addresses, keys).
MAX_TEXT: Final = 4096
#: Shortest ``snapshot_key``: HMAC with a shorter key is too easy to guess.
MIN_SNAPSHOT_KEY: Final = 16


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys: {', '.join(sorted(known))}"


def _typename(kind: Any) -> str:
    if kind is float:
        return "a number"
    if kind is int:
        return "an integer"
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    return "a list of strings"


def _convert(kind: Any) -> Any:
    """The converter of a field of ``kind``: integers become floats, lists tuples.

    Anything it cannot convert is passed through unchanged for the validator
    to refuse with a message naming the key.
    """
    if kind is float:
        return _to_float
    if kind is tuple:
        return _to_tuple
    return None


def _to_float(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return value  # over 1e308: left an int, refused by the range check
    if isinstance(value, float) and value == 0.0:
        return 0.0  # -0.0 would show as "-0.0" in status and logs
    return value


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _validate(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator for every ``_f`` field: type, finiteness, choices and range.

    Runs for configs built in code as well as from TOML, so
    ``WatchdogConfig(hang_timeout=math.nan)`` fails like ``hang_timeout = nan``.

    Raises:
        ConfigError: naming ``section.key`` (the source is added by ``from_mapping``).
    """
    problem = _problem(value, field.metadata)
    if problem is not None:
        raise ConfigError(problem, key=f"{type(instance).section}.{field.name}")


def _problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` for a field with ``meta``, or None."""
    kind = meta.get("kind", str)
    if meta.get("optional") and value is None:
        return None
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    else:  # pragma: no cover - a field declared with an unknown kind is our bug
        raise AssertionError(kind)
    if not ok:
        return f"expected {_typename(kind)}, got {_shown(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        # nan compares false with every bound: it would pass any range check
        # (old main: hang_timeout = nan silently disabled the watchdog).
        return f"expected a finite number, got {value!r}"
    if isinstance(value, str):
        return _text_problem(value, meta)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{value!r} is not one of {', '.join(map(repr, choices))}"
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        return f"{_shown(value)} is below the minimum {low!r}"
    if high is not None and value > high:
        return f"{_shown(value)} is above the maximum {high!r}"
    return None


def _text_problem(value: str, meta: Mapping[str, Any]) -> str | None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{_shown(value)} is not one of {', '.join(map(repr, choices))}"
    if "\x00" in value:
        return "must not contain a NUL character"
    if len(value) > MAX_TEXT:
        return f"is {len(value)} characters long, over the limit of {MAX_TEXT}"
    min_len = meta.get("min_len", 0)
    if not value and min_len:
        return "must not be empty"
    if len(value) < min_len:
        return f"must be at least {min_len} characters long"
    return None


def _shown(value: Any) -> str:
    """A value for an error message: repr, cut short (a 2**70 or a long string stays readable)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _f(default: Any, kind: Any, **meta: Any) -> Any:
    """A config field: its ``kind``, ``choices``, ``min``/``max`` drive the shared validator."""
    return attrs.field(
        default=default,
        metadata={"kind": kind, **meta},
        converter=_convert(kind),
        validator=_validate,
    )


class _Section:
    """Mixin: build an attrs section from a mapping, rejecting unknown keys.

    A field whose metadata has ``internal`` is parsed by the section itself
    (``True``: still suggested for a typo) or not settable at all (``"hidden"``).
    """

    section: ClassVar[str]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "<config>") -> Self:
        """Build the section from ``raw``.

        Raises:
            ConfigError: a key is unknown (the nearest known key is suggested),
                or a value has the wrong type or is out of range.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError("expected a table", source=source, key=cls.section)
        fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            field = fields.get(key)
            if field is None or field.metadata.get("internal"):
                known = [n for n, f in fields.items() if f.metadata.get("internal") != "hidden"]
                raise ConfigError(
                    "unknown key" + _suggest(key, known), source=source, key=f"{cls.section}.{key}"
                )
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source, key=exc.key) from None
        except ValueError as exc:
            raise ConfigError(str(exc), source=source, key=cls.section) from None


@attrs.frozen(kw_only=True)
class SupervisorConfig(_Section):
    """The ``[supervisor]`` section: phase, rate, overrun policy, state."""

    section: ClassVar[str] = "supervisor"

    phase: str = _f("development", str, choices=("development", "testing", "production"))
    profile: str = _f("auto", str, min_len=1)
    tick_rate: float | None = _f(None, float, optional=True, min=0.1, max=10_000.0)
    overrun: str = _f("catch_up", str, choices=("catch_up", "skip"))
    max_catch_up: int = _f(5, int, min=0, max=10_000)
    state_dir: str = _f("var", str, min_len=1)
    #: Seconds between periodic snapshots (0: only at stop); at most a day.
    snapshot_interval: float = _f(5.0, float, min=0.0, max=86_400.0)
    snapshot_generations: int = _f(3, int, min=1, max=1000)
    budget_fraction: float | None = _f(None, float, optional=True, min=0.01, max=1.0)
    stop_timeout: float = _f(2.0, float, min=0.0, max=3600.0)
    #: Resident memory limit in MiB (0: none); at most 16 TiB.
    memory_limit_mb: float = _f(0.0, float, min=0.0, max=16.0 * 1024 * 1024)
    #: Key for HMAC-SHA256 authentication of snapshot files (unset: plain sha256),
    #: at least MIN_SNAPSHOT_KEY characters, used as its UTF-8 bytes.
    #: Prefer the environment (SUPERVISOR_SUPERVISOR_SNAPSHOT_KEY) to the file.
    snapshot_key: str | None = attrs.field(
        default=None,
        repr=False,
        metadata={"kind": str, "optional": True, "min_len": MIN_SNAPSHOT_KEY},
        validator=_validate,
    )

    @property
    def snapshot_key_bytes(self) -> bytes | None:
        """The snapshot key as the store takes it (``SnapshotStore(..., key=...)``)."""
        return None if self.snapshot_key is None else self.snapshot_key.encode("utf-8")


@attrs.frozen(kw_only=True)
class RecoveryConfig(_Section):
    """The ``[recovery]`` section: SafeCall's policy, per system."""

    section: ClassVar[str] = "recovery"

    max_restarts: int = _f(5, int, min=0, max=1_000_000)
    window_seconds: float = _f(30.0, float, min=0.0, max=86_400.0)
    critical_error_limit: int = _f(3, int, min=1, max=1_000_000)
    history: int = _f(100, int, min=1, max=1_000_000)
    backoff_initial: float = _f(1.0, float, min=0.0, max=3600.0)
    backoff_max: float = _f(60.0, float, min=0.0, max=86_400.0)
    traceback_limit: int = _f(20, int, min=0, max=1000)

    def __attrs_post_init__(self) -> None:
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                f"backoff_max ({self.backoff_max!r}) must be at least "
                f"backoff_initial ({self.backoff_initial!r})",
                key="recovery.backoff_max",
            )


@attrs.frozen(kw_only=True)
class WatchdogConfig(_Section):
    """The ``[watchdog]`` section: hang detection on a real thread."""

    section: ClassVar[str] = "watchdog"

    hang_timeout: float = _f(0.25, float, min=0.001, max=3600.0)
    kill_timeout: float = _f(1.0, float, min=0.001, max=3600.0)

    def __attrs_post_init__(self) -> None:
        if self.kill_timeout < self.hang_timeout:
            raise ConfigError(
                f"kill_timeout ({self.kill_timeout!r}) must be at least "
                f"hang_timeout ({self.hang_timeout!r})",
                key="watchdog.kill_timeout",
            )


@attrs.frozen(kw_only=True)
class FeaturesConfig(_Section):
    """The ``[features]`` section: feature flags, overridable per phase."""

    section: ClassVar[str] = "features"

    optimizer: bool = _f(True, bool)
    watchdog: bool = _f(True, bool)
    redaction: bool | None = _f(None, bool, optional=True)
    api: bool = _f(True, bool)
    precise_timing: bool = _f(True, bool)


@attrs.frozen(kw_only=True)
class LoggingConfig(_Section):
    """The ``[logging]`` section."""

    section: ClassVar[str] = "logging"

    format: str = _f("auto", str, choices=("auto", "console", "json"))
    level: str = _f("info", str, choices=("debug", "info", "warning", "error"))


@attrs.frozen(kw_only=True)
class TokenConfig:
    """One API token: a name, a role, and the sha256 of the secret."""

    name: str
    role: str
    sha256: str


@attrs.frozen(kw_only=True)
class ApiConfig(_Section):
    """The ``[api]`` section: where the HTTP API listens and who may use it."""

    section: ClassVar[str] = "api"

    listen: str = _f("unix:var/supervisor.sock", str, min_len=1)
    audit_log: str = _f("var/audit.jsonl", str, min_len=1)
    max_body: int = _f(65536, int, min=1, max=16 * 1024 * 1024)
    #: Connections served at once; past it new ones are closed at accept.
    max_connections: int = _f(256, int, min=1, max=100_000)
    #: Seconds a client has to send a request's headers, then its body.
    header_timeout: float = _f(5.0, float, min=0.01, max=3600.0)
    body_timeout: float = _f(10.0, float, min=0.01, max=3600.0)
    #: Seconds an idle keep-alive connection is kept.
    keep_alive_timeout: float = _f(5.0, float, min=0.01, max=3600.0)
    #: TLS on the TCP listener: PEM files (both or neither).
    tls_cert: str | None = _f(None, str, optional=True, min_len=1)
    tls_key: str | None = _f(None, str, optional=True, min_len=1)
    #: Accept tokens over plain HTTP on a non-loopback TCP address (off: refused).
    allow_plaintext_tokens: bool = _f(False, bool)
    tokens: tuple[TokenConfig, ...] = attrs.field(
        default=(),
        metadata={"internal": True},
        validator=attrs.validators.deep_iterable(attrs.validators.instance_of(TokenConfig)),
    )

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ConfigError(
                "tls_cert and tls_key go together: set both (PEM files) or neither",
                key=f"api.{missing}",
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "<config>") -> Self:
        if not isinstance(raw, Mapping):
            raise ConfigError("expected a table", source=source, key=cls.section)
        raw = dict(raw)
        tokens_raw = raw.pop("tokens", [])
        base = super().from_mapping(raw, source=source)
        return attrs.evolve(base, tokens=_parse_tokens(tokens_raw, source))


def _parse_tokens(raw: Any, source: str) -> tuple[TokenConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("expected a list of tables", source=source, key="api.tokens")
    tokens = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"api.tokens[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError("expected a table", source=source, key=where)
        unknown = set(item) - {"name", "role", "sha256"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(
                "unknown key" + _suggest(key, ["name", "role", "sha256"]),
                source=source,
                key=f"{where}.{key}",
            )
        name, role, digest = item.get("name"), item.get("role"), item.get("sha256")
        if not isinstance(name, str) or not name:
            raise ConfigError("needs a non-empty 'name'", source=source, key=where)
        if name in names:
            raise ConfigError(f"duplicate token name {name!r}", source=source, key=where)
        if role not in ("viewer", "operator"):
            raise ConfigError(
                f"role must be 'viewer' or 'operator', got {role!r}", source=source, key=where
            )
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            raise ConfigError(
                "sha256 must be 64 hex digits (the hash of the token, never the token)",
                source=source,
                key=where,
            )
        names.add(name)
        tokens.append(TokenConfig(name=name, role=role, sha256=digest.lower()))
    return tuple(tokens)


def _is_hex(text: str) -> bool:
    # Not int(text, 16): that also takes "0x", signs, underscores and spaces.
    return all(c in "0123456789abcdefABCDEF" for c in text)


@attrs.frozen(kw_only=True)
class Profile(_Section):
    """A device profile (``[profiles.NAME]``): rate, budget and floors."""

    section: ClassVar[str] = "profiles"

    name: str = attrs.field(default="", metadata={"internal": "hidden"})
    tick_rate: float = _f(30.0, float, min=0.1, max=10_000.0)
    budget_fraction: float = _f(0.8, float, min=0.01, max=1.0)
    min_tick_rate: float = _f(10.0, float, min=0.1, max=10_000.0)
    throttle_priority: int = _f(10, int, min=-1_000_000, max=1_000_000)
    max_throttle: int = _f(8, int, min=1, max=1000)
    min_cores: int = _f(0, int, min=0, max=1_000_000)
    min_memory_gb: float = _f(0.0, float, min=0.0, max=1_048_576.0)

    def __attrs_post_init__(self) -> None:
        if self.min_tick_rate > self.tick_rate:
            raise ConfigError(
                f"min_tick_rate ({self.min_tick_rate!r}) exceeds tick_rate ({self.tick_rate!r})",
                key="profiles.min_tick_rate",
            )


#: Profiles available without any config; a ``[profiles.NAME]`` table adds a
#: profile, or adjusts the shipped one of that name (keys it leaves out keep their values).
BUILTIN_PROFILES: dict[str, Profile] = {
    "low": Profile(name="low", tick_rate=20.0, budget_fraction=0.7, min_tick_rate=5.0),
    "medium": Profile(
        name="medium", tick_rate=30.0, budget_fraction=0.8, min_tick_rate=10.0, min_cores=2
    ),
    "high": Profile(
        name="high",
        tick_rate=60.0,
        budget_fraction=0.8,
        min_tick_rate=20.0,
        min_cores=4,
        min_memory_gb=4.0,
    ),
}


@attrs.frozen(kw_only=True)
class SystemsConfig:
    """The ``[systems]`` section: which systems run, and their constructor arguments."""

    enabled: tuple[str, ...] | None = None
    options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "<config>") -> Self:
        """Build from the ``[systems]`` table: ``enabled`` plus one sub-table per system.

        Raises:
            ConfigError: ``enabled`` is not a list of strings, names a system
                twice, or a key that is not a table.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError("expected a table", source=source, key="systems")
        enabled: tuple[str, ...] | None = None
        options: dict[str, Mapping[str, Any]] = {}
        for key, value in raw.items():
            if key == "enabled":
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise ConfigError(
                        "expected a list of system names or import strings",
                        source=source,
                        key="systems.enabled",
                    )
                if len(set(value)) != len(value):
                    dup = next(v for v in value if value.count(v) > 1)
                    raise ConfigError(
                        f"{dup!r} is enabled twice", source=source, key="systems.enabled"
                    )
                enabled = tuple(value)
            elif isinstance(value, Mapping):
                use = value.get("use", _MISSING)
                if use is not _MISSING and (not isinstance(use, str) or not use):
                    raise ConfigError(
                        "'use' must name a system class", source=source, key=f"systems.{key}.use"
                    )
                options[key] = dict(value)
            else:
                raise ConfigError(
                    "expected 'enabled' or a [systems.NAME] table of constructor arguments",
                    source=source,
                    key=f"systems.{key}",
                )
        return cls(enabled=enabled, options=options)


_SECTIONS: dict[str, type[_Section]] = {
    "supervisor": SupervisorConfig,
    "recovery": RecoveryConfig,
    "watchdog": WatchdogConfig,
    "features": FeaturesConfig,
    "logging": LoggingConfig,
    "api": ApiConfig,
}
_TOP_LEVEL = [*_SECTIONS, "systems", "profiles", "phases"]
_OVERLAY_PHASES = ("development", "testing", "production", "emergency_shutdown")
#: Keys a phase overlay cannot change: the snapshot store is built once, so a
#: per-phase state folder or key would write where the next start does not read.
_FIXED_KEYS = ("state_dir", "snapshot_generations", "snapshot_key")


def _check_fixed_keys(overlay: Mapping[str, Any], source: str, phase: str) -> None:
    table = overlay.get("supervisor")
    if not isinstance(table, Mapping):
        return
    for key in _FIXED_KEYS:
        if key in table:
            raise ConfigError(
                "cannot change with the phase: the state folder and its snapshots "
                "are set once at start",
                source=source,
                key=f"phases.{phase}.supervisor.{key}",
            )


@attrs.frozen(kw_only=True)
class Config:
    """A whole, validated config. Build it with ``from_toml`` or ``from_mapping``."""

    supervisor: SupervisorConfig = attrs.field(factory=SupervisorConfig)
    systems: SystemsConfig = attrs.field(factory=SystemsConfig)
    recovery: RecoveryConfig = attrs.field(factory=RecoveryConfig)
    watchdog: WatchdogConfig = attrs.field(factory=WatchdogConfig)
    features: FeaturesConfig = attrs.field(factory=FeaturesConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    api: ApiConfig = attrs.field(factory=ApiConfig)
    profiles: Mapping[str, Profile] = attrs.field(factory=lambda: dict(BUILTIN_PROFILES))
    #: The raw mapping this config was built from, kept to apply phase overlays.
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    overlays: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, repr=False)
    source: str = "<defaults>"
    #: The ``SUPERVISOR_*`` variables read at load, re-applied over phase overlays.
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)
    base_dir: Path = attrs.field(factory=Path.cwd, eq=False)

    def __attrs_post_init__(self) -> None:
        """Refuse a section of the wrong class (a dict, say) in a config built in code.

        Raises:
            TypeError: naming the section.
        """
        sections: dict[str, type] = {**_SECTIONS, "systems": SystemsConfig}
        for name, cls in sections.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(
                    f"Config.{name} must be a {cls.__name__}, got {type(value).__name__}"
                )

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
        raw = apply_env_overrides(file_raw, env)
        phases = raw.get("phases", {})
        if not isinstance(phases, Mapping):
            raise ConfigError("expected a table of phase overlays", source=source, key="phases")
        overlays: dict[str, Mapping[str, Any]] = {}
        for name, overlay in phases.items():
            if name not in _OVERLAY_PHASES:
                raise ConfigError(
                    "unknown phase" + _suggest(name, list(_OVERLAY_PHASES)),
                    source=source,
                    key=f"phases.{name}",
                )
            if not isinstance(overlay, Mapping):
                raise ConfigError("expected a table", source=source, key=f"phases.{name}")
            if "phases" in overlay:
                raise ConfigError(
                    "an overlay cannot hold phases", source=source, key=f"phases.{name}"
                )
            _check_fixed_keys(overlay, source, name)
            overlays[name] = overlay
            # Validate now, so a bad overlay fails at load, not at the phase change.
            cls._build(
                apply_env_overrides(_merge(file_raw, overlay), env),
                source=f"{source} [phases.{name}]",
            )
        built = cls._build(raw, source=source)
        return attrs.evolve(
            built,
            raw=file_raw,
            env=env,
            overlays=overlays,
            source=source,
            base_dir=base_dir if base_dir is not None else Path.cwd(),
        )

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
            elif key in _SECTIONS:
                kwargs[key] = _SECTIONS[key].from_mapping(value, source=source)
            else:
                raise ConfigError(
                    "unknown section" + _suggest(key, _TOP_LEVEL), source=source, key=key
                )
        return cls(**kwargs)

    def for_phase(self, phase: Phase) -> Config:
        """Return this config with ``[phases.<phase>]`` applied (itself if none)."""
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


def _parse_profiles(raw: Any, source: str) -> dict[str, Profile]:
    if not isinstance(raw, Mapping):
        raise ConfigError("expected a table of profiles", source=source, key="profiles")
    profiles = dict(BUILTIN_PROFILES)
    for name, table in raw.items():
        if name == "auto":
            raise ConfigError(
                "'auto' is reserved for detection", source=source, key="profiles.auto"
            )
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=f"profiles.{name}")
        builtin = BUILTIN_PROFILES.get(name)
        if builtin is not None:
            # A table named like a shipped profile adjusts it: unset keys keep their values.
            base = {k: v for k, v in attrs.asdict(builtin).items() if k != "name"}
            merged = {**base, **table}
        else:
            merged = dict(table)
        try:
            profile = Profile.from_mapping(merged, source=source)
        except ConfigError as exc:
            # Name the profile rather than the generic section.
            key = f"profiles.{name}" + (exc.key or "profiles").removeprefix("profiles")
            raise ConfigError(exc.message, source=exc.source, key=key) from None
        profiles[name] = attrs.evolve(profile, name=name)
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
        converter = _convert(field.metadata.get("kind", str))
        problem = _problem(value if converter is None else converter(value), field.metadata)
        if problem is not None:
            raise ConfigError(problem, source=var, key=f"{section}.{field.name}")
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
    section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
    table = next((t for t in ("systems", "profiles", "phases") if rest.startswith(t + "_")), None)
    if table is not None:
        raise ConfigError(
            f"[{table}] cannot be set from the environment; set it in the config file",
            source=var,
        )
    if section is None:
        close = difflib.get_close_matches(var.upper(), _env_names(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            "not a config variable (SUPERVISOR_<SECTION>_<KEY>), nor one of "
            f"{', '.join(sorted(NON_CONFIG_VARIABLES))}{hint}",
            source=var,
        )
    key = rest[len(section) + 1 :]
    fields = {f.name: f for f in attrs.fields(_SECTIONS[section]) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    if key not in fields:
        raise ConfigError(
            "unknown key" + _suggest(key, list(fields)), source=var, key=f"{section}.{key}"
        )
    return section, fields[key]


def _env_names() -> list[str]:
    """Every variable the config reads, and the allowed non-config ones."""
    names = [
        f"SUPERVISOR_{section}_{f.name}".upper()
        for section, cls in _SECTIONS.items()
        for f in attrs.fields(cls)  # type: ignore[arg-type]
        if not f.metadata.get("internal")
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
