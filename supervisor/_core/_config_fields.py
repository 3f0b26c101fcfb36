"""The machinery every config field shares: one validator, driven by metadata.

A section's fields are declared with :func:`setting` (its kind, ``choices``,
``min``/``max``, ``min_len``, ``optional``); :func:`problem` is the single
place a value is judged, so a section built in code (``RecoveryConfig(history=0)``),
read from TOML or set from a ``SUPERVISOR_*`` variable fails with the same
message. :class:`Section` builds a section from a TOML table, refusing unknown
keys with a suggestion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar

import attrs

from .._errors import ConfigError

__all__ = [
    "MAX_TEXT",
    "Section",
    "check",
    "convert",
    "parse_duration",
    "plain",
    "problem",
    "setting",
    "sourced",
    "suggest",
    "to_tuple",
]

_T = TypeVar("_T")

#: Longest string value accepted (paths, addresses, keys).
MAX_TEXT: Final = 4096


def suggest(key: str, known: list[str]) -> str:
    """The end of an "unknown key" message: the nearest known key, or all of them."""
    import difflib  # noqa: PLC0415 - loaded only to word an error

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys: {', '.join(sorted(known))}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Each kind of setting: how to tell a value of it, and its name in messages.
_KINDS: Final[dict[type, tuple[Callable[[Any], bool], str]]] = {
    float: (_is_number, "a number"),
    int: (_is_integer, "an integer"),
    bool: (lambda value: isinstance(value, bool), "true or false"),
    str: (lambda value: isinstance(value, str), "a string"),
}


def convert(kind: Any) -> Any:
    """The converter of a field of ``kind``: integers become floats for a number.

    Anything it cannot convert is passed through unchanged for the validator
    to refuse with a message naming the key.
    """
    return _to_float if kind is float else None


def _to_float(value: Any) -> Any:
    if _is_integer(value):
        try:
            return float(value)
        except OverflowError:
            return value  # over 1e308: left an int, refused by the range check
    if isinstance(value, float) and value == 0.0:
        return 0.0  # -0.0 would show as "-0.0" in status and logs
    return value


def to_tuple(value: Any) -> Any:
    """Converter: a list (as TOML gives) becomes a tuple; anything else is left to the validator."""
    return tuple(value) if isinstance(value, list) else value


def check(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator for every :func:`setting` field: type, finiteness, choices and range.

    Runs for configs built in code as well as from TOML, so
    ``WatchdogConfig(hang_timeout=math.nan)`` fails like ``hang_timeout = nan``.

    Raises:
        ConfigError: naming ``section.key`` (the source is added by ``from_mapping``).
    """
    found = problem(value, field.metadata)
    if found is not None:
        raise ConfigError(found, key=f"{type(instance).section}.{field.name}")


def problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` for a field with ``meta``, or None."""
    kind = meta.get("kind", str)
    if meta.get("optional") and value is None:
        return None
    is_kind, kind_name = _KINDS[kind]
    if not is_kind(value):
        return f"expected {kind_name}, got {_shown(value)}"
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
    syntax = meta.get("syntax")  # a text key's own grammar (``cpu_affinity``'s CPU list)
    return None if syntax is None else syntax(value)


def _shown(value: Any) -> str:
    """A value for an error message: repr, cut short (a 2**70 or a long string stays readable)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def setting(default: Any, kind: Any, **meta: Any) -> Any:
    """A config field: its ``kind``, ``choices``, ``min``/``max`` drive the shared validator."""
    return attrs.field(
        default=default,
        metadata={"kind": kind, **meta},
        converter=convert(kind),
        validator=check,
    )


def plain(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is a plain setting: a TOML key, an environment variable, no parsing."""
    return not (field.metadata.get("hidden") or field.metadata.get("parse"))


class Section:
    """Mixin: build an attrs section from a TOML table, rejecting unknown keys.

    A field whose metadata has ``parse`` takes its TOML value through that
    function first (``api.tokens``: a list of tables becomes TokenConfigs);
    such fields cannot be set from the environment. A field whose metadata
    has ``hidden`` is not a key at all (a profile's ``name`` is its table's).
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
        fields = {f.name: f for f in attrs.fields(cls) if not f.metadata.get("hidden")}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            field = fields.get(key)
            if field is None:
                raise ConfigError(
                    "unknown key" + suggest(key, list(fields)),
                    source=source,
                    key=f"{cls.section}.{key}",
                )
            parse: Callable[[Any, str], Any] | None = field.metadata.get("parse")
            kwargs[key] = value if parse is None else parse(value, source)
        return sourced(source, lambda: cls(**kwargs))


def sourced(source: str, build: Callable[[], _T]) -> _T:
    """``build()``; its ConfigError (a validator knows no file) is given ``source``."""
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(exc.message, source=source, key=exc.key) from None


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS: Final = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0,
}  # fmt: skip
#: The longest duration any setting takes (an SLO window is at most that).
LONGEST_DURATION: Final = 10 * 365 * 86_400.0


def parse_duration(text: object, *, zero_ok: bool = False) -> float:
    """Seconds in ``"90s"``, ``"250ms"``, ``"15m"``, ``"1h30m"``, ``"30d"``, ``"2w"``.

    The one reading of a duration for every setting and query (SLO windows,
    alert holds and windows, ``--since``, trend buckets); each caller adds its
    own bounds.

    Raises:
        ValueError: not such a string, zero (unless ``zero_ok``), or over 10 years.
    """
    if not isinstance(text, str) or not text or _DURATION.sub("", text):
        raise ValueError(f"{text!r} is not a duration such as '30s', '15m', '1h', '30d'")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text))
    if seconds > LONGEST_DURATION or (seconds == 0 and not zero_ok):
        least = "0s" if zero_ok else "more than 0s"
        raise ValueError(f"{text!r} is not a duration from {least} to 10 years")
    return seconds
