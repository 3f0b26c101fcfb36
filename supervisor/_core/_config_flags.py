"""The ``[flags.NAME]`` and ``[experiments.NAME]`` tables, checked at load.

A flag is on for a share of players (``percent``, by a stable hash of the
flag's name and the player id: see :mod:`._flags`), always on for players in
its ``segments``, and off for everyone when ``enabled = false`` (the kill
switch). An experiment splits players into named arms by weight with the same
hash. Both take per-phase overlays like every other table
(``[phases.production.flags.new_shop] percent = 50``). How they are evaluated
on the tick is :mod:`._flags`' job.

An experiment may also choose a system's recovery policy per arm
(``[experiments.NAME.recovery.ARM]``, keys of ``[recovery]``): the unit of
such an arm is a *system*, not a player, since a restart budget belongs to a
system. The systems it applies to are listed in ``systems`` (typically the
shards of one class, ``[systems.shard_1] use = "players"``); each is put in an
arm by the same hash of the experiment and the system's name, or pinned with
``assign = {shard_1 = "b"}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._errors import ConfigError
from ._config_fields import suggest
from ._config_sections import RecoveryConfig

__all__ = [
    "MAX_ARMS",
    "MAX_FLAGS",
    "MAX_SEGMENTS",
    "NAME",
    "ExperimentConfig",
    "FlagConfig",
    "parse_experiments",
    "parse_flags",
]

#: What a flag, experiment, arm or segment name may be (OpenFeature keys such
#: as ``new-shop`` or ``checkout.v2`` included).
NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
MAX_FLAGS: Final = 1024
MAX_ARMS: Final = 16
MAX_SEGMENTS: Final = 64
#: Keys of ``[recovery]`` an arm may change: a system's restart budget and backoff.
ARM_RECOVERY_KEYS: Final = ("max_restarts", "window_seconds", "backoff_initial", "backoff_max")


def _named(value: object, key: str, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(
            f"{what} name {value!r} must be letters, digits, '_', '.' or '-' (at most 128)",
            key=key,
        )
    return value


def _number(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected a number, got {type(value).__name__}", key=key)
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigError(f"expected a number from {low:g} to {high:g}, got {value!r}", key=key)
    return number


def _unknown(table: Mapping[str, Any], known: list[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError("unknown key" + suggest(str(key), known), key=f"{where}.{key}")


def _table(section: str, name: str, table: object, known: list[str]) -> str:
    """``SECTION.NAME``, once ``table`` is checked to be a table of ``known`` keys only."""
    where = f"{section}.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError("expected a table", key=where)
    _unknown(table, known, where)
    return where


@attrs.frozen(kw_only=True)
class FlagConfig:
    """One ``[flags.NAME]`` table.

    Attributes:
        enabled: false turns the flag off for everyone, segments included.
        percent: share of players it is on for, 0 to 100 in steps of 0.01.
        segments: segments it is always on for (when enabled).
    """

    name: str
    enabled: bool = True
    percent: float = 100.0
    segments: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        where = f"flags.{_named(self.name, 'flags', 'flag')}"
        if not isinstance(self.enabled, bool):
            raise ConfigError("expected true or false", key=f"{where}.enabled")
        object.__setattr__(self, "percent", _number(self.percent, f"{where}.percent", 0, 100))
        if not isinstance(self.segments, tuple) or len(self.segments) > MAX_SEGMENTS:
            raise ConfigError(
                f"expected a list of at most {MAX_SEGMENTS} segment names", key=f"{where}.segments"
            )
        for segment in self.segments:
            _named(segment, f"{where}.segments", "segment")

    @classmethod
    def from_table(cls, name: str, table: Any) -> FlagConfig:
        """Build from a ``[flags.NAME]`` table.

        Raises:
            ConfigError: an unknown key or a bad value, naming ``flags.NAME.key``.
        """
        where = _table("flags", name, table, ["enabled", "percent", "segments"])
        segments = table.get("segments", [])
        if not isinstance(segments, list):
            raise ConfigError("expected a list of segment names", key=f"{where}.segments")
        return cls(
            name=name,
            enabled=table.get("enabled", True),
            percent=table.get("percent", 100.0),
            segments=tuple(segments),
        )

    def as_table(self) -> dict[str, Any]:
        """The flag as its TOML table (what ``from_table`` takes back)."""
        return {"enabled": self.enabled, "percent": self.percent, "segments": list(self.segments)}


@attrs.frozen(kw_only=True)
class ExperimentConfig:
    """One ``[experiments.NAME]`` table.

    Attributes:
        arms: arm name -> weight (its share is weight / sum of weights), in
            config order; the first arm is the control.
        enabled: false puts everyone in the control arm.
        systems: systems that are units of the per-arm recovery policy.
        assign: system -> arm, pinning a system's arm instead of hashing.
        recovery: arm -> the ``[recovery]`` keys that arm changes.
    """

    name: str
    arms: tuple[tuple[str, float], ...]
    enabled: bool = True
    systems: tuple[str, ...] = ()
    assign: tuple[tuple[str, str], ...] = ()
    recovery: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def __attrs_post_init__(self) -> None:
        where = f"experiments.{_named(self.name, 'experiments', 'experiment')}"
        if not isinstance(self.enabled, bool):
            raise ConfigError("expected true or false", key=f"{where}.enabled")
        if not 1 <= len(self.arms) <= MAX_ARMS:
            raise ConfigError(
                f"expected 1 to {MAX_ARMS} arms such as {{a = 50, b = 50}}", key=f"{where}.arms"
            )
        for arm, weight in self.arms:
            _named(arm, f"{where}.arms", "arm")
            _number(weight, f"{where}.arms.{arm}", 0, 1e6)
        if sum(weight for _, weight in self.arms) <= 0:
            raise ConfigError("the weights add up to 0", key=f"{where}.arms")
        arms = self.arm_names
        for system in self.systems:
            _named(system, f"{where}.systems", "system")
        for system, arm in self.assign:
            if system not in self.systems:
                raise ConfigError(
                    f"{system!r} is not one of this experiment's systems", key=f"{where}.assign"
                )
            if arm not in arms:
                raise ConfigError(
                    "unknown arm" + suggest(str(arm), list(arms)), key=f"{where}.assign.{system}"
                )
        for arm, overrides in self.recovery:
            if arm not in arms:
                raise ConfigError(
                    "unknown arm" + suggest(arm, list(arms)), key=f"{where}.recovery.{arm}"
                )
            _unknown(dict(overrides), list(ARM_RECOVERY_KEYS), f"{where}.recovery.{arm}")
            try:
                RecoveryConfig.from_mapping(dict(overrides))
            except ConfigError as exc:
                key = (exc.key or "recovery").removeprefix("recovery")
                raise ConfigError(exc.message, key=f"{where}.recovery.{arm}{key}") from None
        if self.recovery and not self.systems:
            raise ConfigError(
                "a per-arm recovery policy needs the systems it applies to", key=f"{where}.systems"
            )

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms, control first."""
        return tuple(arm for arm, _ in self.arms)

    def recovery_for(self, arm: str, base: RecoveryConfig) -> RecoveryConfig:
        """``base`` with ``arm``'s overrides (``base`` itself when it has none).

        An arm's ``backoff_initial`` above the base's ``backoff_max`` (which a
        phase overlay may lower) raises the max with it, so this never fails
        at a phase change.
        """
        overrides = dict(self.recovery).get(arm)
        if not overrides:
            return base
        merged = {**attrs.asdict(base), **dict(overrides)}
        merged["backoff_max"] = max(merged["backoff_max"], merged["backoff_initial"])
        return RecoveryConfig(**merged)

    @classmethod
    def from_table(cls, name: str, table: Any) -> ExperimentConfig:
        """Build from an ``[experiments.NAME]`` table.

        Raises:
            ConfigError: an unknown key or a bad value, naming ``experiments.NAME.key``.
        """
        where = _table(
            "experiments", name, table, ["arms", "enabled", "systems", "assign", "recovery"]
        )
        if "arms" not in table:
            raise ConfigError("an experiment needs arms, such as {a = 50, b = 50}", key=where)
        parts: dict[str, Any] = {}
        for key in ("arms", "assign", "recovery"):
            value = table.get(key, {})
            if not isinstance(value, Mapping):
                raise ConfigError("expected a table", key=f"{where}.{key}")
            parts[key] = value
        for arm, overrides in parts["recovery"].items():
            if not isinstance(overrides, Mapping):
                raise ConfigError(
                    "expected a table of [recovery] keys", key=f"{where}.recovery.{arm}"
                )
        systems = table.get("systems", [])
        if not isinstance(systems, list):
            raise ConfigError("expected a list of system names", key=f"{where}.systems")
        return cls(
            name=name,
            arms=tuple(parts["arms"].items()),
            enabled=table.get("enabled", True),
            systems=tuple(systems),
            assign=tuple(parts["assign"].items()),
            recovery=tuple((arm, tuple(o.items())) for arm, o in parts["recovery"].items()),
        )

    def as_table(self) -> dict[str, Any]:
        """The experiment as its TOML table (what ``from_table`` takes back)."""
        table: dict[str, Any] = {"arms": dict(self.arms), "enabled": self.enabled}
        if self.systems:
            table["systems"] = list(self.systems)
        if self.assign:
            table["assign"] = dict(self.assign)
        if self.recovery:
            table["recovery"] = {arm: dict(o) for arm, o in self.recovery}
        return table


def _parse(raw: Any, source: str, section: str, build: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"expected a table of [{section}.NAME] tables", source=source, key=section
        )
    if len(raw) > MAX_FLAGS:
        raise ConfigError(f"more than {MAX_FLAGS} entries", source=source, key=section)
    out: dict[str, Any] = {}
    for name, table in raw.items():
        try:
            out[name] = build(name, table)
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source, key=exc.key) from None
    return out


def parse_flags(raw: Any, source: str) -> dict[str, FlagConfig]:
    """The ``[flags.NAME]`` tables, each error naming ``flags.NAME.key``.

    Raises:
        ConfigError: not a table of tables, or a bad flag.
    """
    return _parse(raw, source, "flags", FlagConfig.from_table)


def parse_experiments(raw: Any, source: str) -> dict[str, ExperimentConfig]:
    """The ``[experiments.NAME]`` tables, each error naming ``experiments.NAME.key``.

    Raises:
        ConfigError: not a table of tables, or a bad experiment.
    """
    return _parse(raw, source, "experiments", ExperimentConfig.from_table)


#: The top-level tables this module parses, for ``Config._build``.
FLAG_TABLES: Final = {"flags": parse_flags, "experiments": parse_experiments}
