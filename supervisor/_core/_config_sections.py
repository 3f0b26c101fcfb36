"""The config's sections: one frozen attrs class per TOML table, each checked on construction.

Every field is a :func:`._config_fields.setting` (or carries its own
validator), and checks across fields live in ``__attrs_post_init__``, so a
section built in code fails exactly like one read from TOML: a
:class:`ConfigError` naming ``section.key``. Loading (files, environment,
phase overlays) is :mod:`._config`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self

import attrs

from .._errors import ConfigError
from ._config_agones import AgonesConfig
from ._config_alerts import AlertsConfig
from ._config_fields import Section, check, parse_duration, setting, sourced, suggest, to_tuple
from ._config_fleet import FleetConfig
from ._config_realtime import cpus_problem

__all__ = [
    "BUILTIN_PROFILES",
    "MIN_SNAPSHOT_KEY",
    "SECTIONS",
    "SLO_KINDS",
    "TOKEN_ROLES",
    "ApiConfig",
    "ErrorsConfig",
    "FeaturesConfig",
    "LoggingConfig",
    "Profile",
    "RecoveryConfig",
    "SloConfig",
    "SupervisorConfig",
    "SystemsConfig",
    "TokenConfig",
    "WatchdogConfig",
    "parse_duration",
    "parse_slos",
]

#: Shortest ``snapshot_key``: HMAC with a shorter key is too easy to guess.
MIN_SNAPSHOT_KEY: Final = 16

_MISSING = object()


def _at_least(section: Section, key: str, floor: str) -> None:
    """The cross-field rule ``key >= floor`` of one section, naming ``key``."""
    value, low = getattr(section, key), getattr(section, floor)
    if value < low:
        raise ConfigError(
            f"{key} ({value!r}) must be at least {floor} ({low!r})",
            key=f"{section.section}.{key}",
        )


@attrs.frozen(kw_only=True)
class SupervisorConfig(Section):
    """The ``[supervisor]`` section: phase, rate, overrun policy, state."""

    section: ClassVar[str] = "supervisor"

    phase: str = setting("development", str, choices=("development", "testing", "production"))
    profile: str = setting("auto", str, min_len=1)
    tick_rate: float | None = setting(None, float, optional=True, min=0.1, max=10_000.0)
    overrun: str = setting("catch_up", str, choices=("catch_up", "skip"))
    max_catch_up: int = setting(5, int, min=0, max=10_000)
    state_dir: str = setting("var", str, min_len=1)
    #: Seconds between periodic snapshots (0: only at stop); at most a day.
    snapshot_interval: float = setting(5.0, float, min=0.0, max=86_400.0)
    snapshot_generations: int = setting(3, int, min=1, max=1000)
    budget_fraction: float | None = setting(None, float, optional=True, min=0.01, max=1.0)
    stop_timeout: float = setting(2.0, float, min=0.0, max=3600.0)
    #: Resident memory limit in MiB (0: none); at most 16 TiB.
    memory_limit_mb: float = setting(0.0, float, min=0.0, max=16.0 * 1024 * 1024)
    #: Key for HMAC-SHA256 authentication of snapshot files (unset: plain sha256),
    #: at least MIN_SNAPSHOT_KEY characters, used as its UTF-8 bytes.
    #: Prefer the environment (SUPERVISOR_SUPERVISOR_SNAPSHOT_KEY) to the file.
    snapshot_key: str | None = attrs.field(
        default=None,
        repr=False,
        metadata={"kind": str, "optional": True, "min_len": MIN_SNAPSHOT_KEY},
        validator=check,
    )
    #: Realtime mode (``_realtime``): SCHED_FIFO tick thread, memory locked, GC between ticks.
    realtime: bool = setting(False, bool)
    #: SCHED_FIFO priority of the tick thread; the watchdog thread runs one above it.
    realtime_priority: int = setting(50, int, min=1, max=98)
    #: CPUs the tick thread may run on, as a CPU list ("1", "2-3", "0,2"); unset: any.
    cpu_affinity: str | None = setting(None, str, optional=True, syntax=cpus_problem)
    #: Realtime mode: CPU wake-up latency asked of the kernel (PM QoS, /dev/cpu_dma_latency), µs;
    #: 0 keeps idle CPUs polling instead of halting; -1: leave the CPUs' idle states alone.
    realtime_max_wake_latency_us: int = setting(0, int, min=-1, max=1_000_000)

    @property
    def snapshot_key_bytes(self) -> bytes | None:
        """The snapshot key as the store takes it (``SnapshotStore(..., key=...)``)."""
        return None if self.snapshot_key is None else self.snapshot_key.encode("utf-8")


@attrs.frozen(kw_only=True)
class RecoveryConfig(Section):
    """The ``[recovery]`` section: SafeCall's policy, per system."""

    section: ClassVar[str] = "recovery"

    max_restarts: int = setting(5, int, min=0, max=1_000_000)
    window_seconds: float = setting(30.0, float, min=0.0, max=86_400.0)
    critical_error_limit: int = setting(3, int, min=1, max=1_000_000)
    history: int = setting(100, int, min=1, max=1_000_000)
    backoff_initial: float = setting(1.0, float, min=0.0, max=3600.0)
    backoff_max: float = setting(60.0, float, min=0.0, max=86_400.0)
    traceback_limit: int = setting(20, int, min=0, max=1000)

    def __attrs_post_init__(self) -> None:
        _at_least(self, "backoff_max", "backoff_initial")


@attrs.frozen(kw_only=True)
class WatchdogConfig(Section):
    """The ``[watchdog]`` section: hang detection on a real thread."""

    section: ClassVar[str] = "watchdog"

    hang_timeout: float = setting(0.25, float, min=0.001, max=3600.0)
    kill_timeout: float = setting(1.0, float, min=0.001, max=3600.0)

    def __attrs_post_init__(self) -> None:
        _at_least(self, "kill_timeout", "hang_timeout")


@attrs.frozen(kw_only=True)
class FeaturesConfig(Section):
    """The ``[features]`` section: feature flags, overridable per phase."""

    section: ClassVar[str] = "features"

    optimizer: bool = setting(True, bool)
    watchdog: bool = setting(True, bool)
    redaction: bool | None = setting(None, bool, optional=True)
    api: bool = setting(True, bool)
    precise_timing: bool = setting(True, bool)
    memory_tracking: bool = setting(False, bool)


@attrs.frozen(kw_only=True)
class LoggingConfig(Section):
    """The ``[logging]`` section."""

    section: ClassVar[str] = "logging"

    format: str = setting("auto", str, choices=("auto", "console", "json"))
    level: str = setting("info", str, choices=("debug", "info", "warning", "error"))


#: The roles a token can have (CONTRACT.md: who may do what).
TOKEN_ROLES: Final = ("viewer", "operator")


def _token_name(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError("needs a non-empty 'name'", key="api.tokens")


def _token_role(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value not in TOKEN_ROLES:
        roles = " or ".join(map(repr, TOKEN_ROLES))
        raise ConfigError(f"role must be {roles}, got {value!r}", key="api.tokens")


def _token_digest(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    # Not int(value, 16): that also takes "0x", signs, underscores and spaces.
    # The strip leaves nothing only when every character is a (lower-cased) hex digit.
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ConfigError(
            "sha256 must be 64 hex digits (the hash of the token, never the token)",
            key="api.tokens",
        )


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class TokenConfig:
    """One API token: a name, a role, and the sha256 of the secret (stored lower-case)."""

    name: str = attrs.field(validator=_token_name)
    role: str = attrs.field(validator=_token_role)
    sha256: str = attrs.field(converter=_lower, validator=_token_digest)


def _parse_tokens(raw: Any, source: str) -> tuple[TokenConfig, ...]:
    """``[[api.tokens]]`` tables as TokenConfigs; an error names the entry (``api.tokens[1]``).

    Raises:
        ConfigError: not a list of tables, an unknown key, or an invalid entry.
    """
    if not isinstance(raw, list):
        raise ConfigError("expected a list of tables", source=source, key="api.tokens")
    tokens = []
    known = [f.name for f in attrs.fields(TokenConfig)]
    for i, item in enumerate(raw):
        where = f"api.tokens[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError("expected a table", source=source, key=where)
        unknown = sorted(set(item) - set(known))
        if unknown:
            raise ConfigError(
                "unknown key" + suggest(unknown[0], known),
                source=source,
                key=f"{where}.{unknown[0]}",
            )
        given: dict[str, Any] = {k: item.get(k) for k in known}  # a missing key: None
        try:
            tokens.append(TokenConfig(**given))
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source, key=where) from None
    return tuple(tokens)


def _tokens(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(t, TokenConfig) for t in value):
        raise ConfigError("expected TokenConfig entries", key="api.tokens")
    names: set[str] = set()
    for i, token in enumerate(value):
        if token.name in names:
            raise ConfigError(f"duplicate token name {token.name!r}", key=f"api.tokens[{i}]")
        names.add(token.name)


@attrs.frozen(kw_only=True)
class ApiConfig(Section):
    """The ``[api]`` section: where the HTTP API listens and who may use it."""

    section: ClassVar[str] = "api"

    listen: str = setting("unix:var/supervisor.sock", str, min_len=1)
    audit_log: str = setting("var/audit.jsonl", str, min_len=1)
    max_body: int = setting(65536, int, min=1, max=16 * 1024 * 1024)
    #: Connections served at once; past it new ones are closed at accept.
    max_connections: int = setting(256, int, min=1, max=100_000)
    #: Seconds a client has to send a request's headers, then its body.
    header_timeout: float = setting(5.0, float, min=0.01, max=3600.0)
    body_timeout: float = setting(10.0, float, min=0.01, max=3600.0)
    #: Seconds an idle keep-alive connection is kept.
    keep_alive_timeout: float = setting(5.0, float, min=0.01, max=3600.0)
    #: TLS on the TCP listener: PEM files (both or neither).
    tls_cert: str | None = setting(None, str, optional=True, min_len=1)
    tls_key: str | None = setting(None, str, optional=True, min_len=1)
    #: Accept tokens over plain HTTP on a non-loopback TCP address (off: refused).
    allow_plaintext_tokens: bool = setting(False, bool)
    tokens: tuple[TokenConfig, ...] = attrs.field(
        default=(),
        converter=to_tuple,
        metadata={"parse": _parse_tokens},
        validator=_tokens,
    )

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ConfigError(
                "tls_cert and tls_key go together: set both (PEM files) or neither",
                key=f"api.{missing}",
            )


def _profile_name(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__}", key="profiles.name")
    if value == "auto":
        raise ConfigError("'auto' is reserved for detection", key="profiles.name")


@attrs.frozen(kw_only=True)
class Profile(Section):
    """A device profile (``[profiles.NAME]``): rate, budget and floors."""

    section: ClassVar[str] = "profiles"

    #: The profile's table name (``[profiles.arena]``), given by the loader.
    name: str = attrs.field(default="", metadata={"hidden": True}, validator=_profile_name)
    tick_rate: float = setting(30.0, float, min=0.1, max=10_000.0)
    budget_fraction: float = setting(0.8, float, min=0.01, max=1.0)
    min_tick_rate: float = setting(10.0, float, min=0.1, max=10_000.0)
    throttle_priority: int = setting(10, int, min=-1_000_000, max=1_000_000)
    max_throttle: int = setting(8, int, min=1, max=1000)
    min_cores: int = setting(0, int, min=0, max=1_000_000)
    min_memory_gb: float = setting(0.0, float, min=0.0, max=1_048_576.0)

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


def _system_names(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            "expected a list of system names or import strings", key="systems.enabled"
        )
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        raise ConfigError(f"{dup!r} is enabled twice", key="systems.enabled")


def _system_options(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError("expected a table of [systems.NAME] tables", key="systems")
    for name, table in value.items():
        if not isinstance(name, str) or name == "enabled":
            raise ConfigError("not a system name", key=f"systems.{name}")
        if not isinstance(table, Mapping):
            raise ConfigError(
                "expected 'enabled' or a [systems.NAME] table of constructor arguments",
                key=f"systems.{name}",
            )
        use = table.get("use", _MISSING)
        if use is not _MISSING and (not isinstance(use, str) or not use):
            raise ConfigError("'use' must name a system class", key=f"systems.{name}.use")


def _copy_options(value: Any) -> Any:
    """A copy of each system's table (the caller's dicts stay theirs); anything else as it is."""
    if isinstance(value, Mapping) and all(isinstance(t, Mapping) for t in value.values()):
        return {name: dict(table) for name, table in value.items()}
    return value


@attrs.frozen(kw_only=True)
class SystemsConfig:
    """The ``[systems]`` section: which systems run, and their constructor arguments."""

    enabled: tuple[str, ...] | None = attrs.field(
        default=None, converter=to_tuple, validator=_system_names
    )
    options: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_copy_options, validator=_system_options
    )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "<config>") -> Self:
        """Build from the ``[systems]`` table: ``enabled`` plus one sub-table per system.

        Raises:
            ConfigError: ``enabled`` is not a list of strings, names a system
                twice, or a key that is not a table.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError("expected a table", source=source, key="systems")
        options = {k: v for k, v in raw.items() if k != "enabled"}
        return sourced(source, lambda: cls(enabled=raw.get("enabled"), options=options))


# ----------------------------------------------- [errors] and [slo.NAME] (issue 11)


def _duration(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            f"expected a duration string, got {type(value).__name__}", key=f"slo.{attr.name}"
        )
    try:
        parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=f"slo.{attr.name}") from None


@attrs.frozen(kw_only=True)
class ErrorsConfig(Section):
    """The ``[errors]`` section: the durable error store in ``state_dir`` (``errors.db``)."""

    section: ClassVar[str] = "errors"

    store: bool = setting(True, bool)
    retention_days: float = setting(30.0, float, min=0.01, max=3650.0)
    max_mb: float = setting(100.0, float, min=1.0, max=1_048_576.0)
    #: Records kept whole per fingerprint per minute; the rest are counted only.
    samples_per_minute: int = setting(5, int, min=0, max=1_000_000)
    #: Records waiting for the shipper; past it a record is dropped (counted).
    queue: int = setting(65_536, int, min=16, max=10_000_000)


#: What an SLO measures: the share of ticks starting within ``lateness_ms``, of
#: player-minutes no error touched, of time not in EMERGENCY_SHUTDOWN.
SLO_KINDS: Final = ("timeliness", "error_free_player_minutes", "availability")


@attrs.frozen(kw_only=True)
class SloConfig(Section):
    """One ``[slo.NAME]`` table: an objective over a rolling window, with its error budget."""

    section: ClassVar[str] = "slo"

    name: str = attrs.field(default="", metadata={"hidden": True})
    kind: str = setting("timeliness", str, choices=SLO_KINDS)
    target: float = setting(0.999, float, min=0.0, max=1.0)
    lateness_ms: float = setting(1.0, float, min=0.001, max=60_000.0)
    window: str = attrs.field(default="30d", metadata={"kind": str}, validator=_duration)

    @property
    def window_seconds(self) -> float:
        """The window in seconds."""
        return parse_duration(self.window)


def parse_slos(raw: Any, source: str) -> dict[str, SloConfig]:
    """The ``[slo.NAME]`` tables, each error naming ``slo.NAME.key``.

    Raises:
        ConfigError: not a table of tables, or a bad key or value (a target outside 0-1).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("expected a table of [slo.NAME] tables", source=source, key="slo")
    out: dict[str, SloConfig] = {}
    for name, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=f"slo.{name}")
        try:
            out[name] = attrs.evolve(SloConfig.from_mapping(table, source=source), name=name)
        except ConfigError as exc:
            rest = (exc.key or "slo").removeprefix("slo")
            raise ConfigError(exc.message, source=source, key=f"slo.{name}{rest}") from None
    return out


#: The sections that are plain tables of settings, by name (``[systems]`` and
#: ``[profiles]`` are shaped differently).
SECTIONS: dict[str, type[Section]] = {
    "supervisor": SupervisorConfig,
    "recovery": RecoveryConfig,
    "watchdog": WatchdogConfig,
    "features": FeaturesConfig,
    "logging": LoggingConfig,
    "api": ApiConfig,
    "alerts": AlertsConfig,
    "errors": ErrorsConfig,
    "fleet": FleetConfig,
    "agones": AgonesConfig,
}
