"""The ``[alerts]`` section: alert rules and where their notifications go, checked at load.

A rule's ``when`` is one comparison, ``metric{label="value"} > threshold``,
over the metrics :data:`ALERT_METRICS` names; it is parsed here, on
construction, so a bad rule (unknown metric or label, bad syntax, bad
duration, duplicate name) is a :class:`ConfigError` naming the rule at load
(``supervisor run`` exits 2), never at the first evaluation. What the rules
are evaluated against (samples, windows, the state machine, delivery) is
``supervisor._alerts``' job, a layer above the core.
"""

from __future__ import annotations

import math
import operator
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import attrs

from .._errors import ConfigError
from ._config_fields import MAX_TEXT, Section, check, parse_duration, setting, suggest, to_tuple

__all__ = [
    "ALERT_METRICS",
    "OPERATORS",
    "SEVERITIES",
    "AlertRule",
    "AlertsConfig",
    "parse_hold",
    "parse_when",
]

#: Each metric a rule may name, with the labels it takes (``slo`` and
#: ``window`` required for ``slo_burn_rate``, the others optional).
#: ``slo_burn_rate{slo="S",window="1h",short="5m"}`` is the SRE workbook's
#: multi-window burn rate: the smaller of the burn over ``window`` and over
#: ``short``, so ``> 14.4`` holds exactly when both windows burn above 14.4
#: (the long one says the budget really goes, the short one that it still does).
ALERT_METRICS: Final[Mapping[str, tuple[str, ...]]] = {
    "errors_per_minute": ("system",),
    "new_fingerprints": (),
    "tick_lateness_p99_ms": (),
    "tick_work_p99_ms": (),
    "dropped_ticks_per_minute": (),
    "quarantined_systems": (),
    "rss_mb": (),
    "cpu_percent": (),
    "players": (),
    "slo_burn_rate": ("slo", "window", "short"),
    # [features] memory_tracking: a system's live memory, and its growth over the window.
    "system_memory_mb": ("system",),
    "system_memory_growth_mb": ("system",),
}
_REQUIRED_LABELS: Final = {
    "slo_burn_rate": ("slo", "window"),
    "system_memory_mb": ("system",),
    "system_memory_growth_mb": ("system",),
}

OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES: Final = ("page", "ticket", "info")

_WHEN = re.compile(
    r"\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\{(?P<labels>[^{}]*)\})?"
    r"\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<threshold>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"\\]*)"\s*')
_RULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Longest ``for``/``keep_firing_for``: a week (longer is a report, not an alert).
MAX_HOLD: Final = 7 * 86_400.0


def parse_hold(text: object) -> float:
    """Seconds of a rule's hold or window (``"0s"`` allowed), at most :data:`MAX_HOLD`.

    Raises:
        ValueError: not a duration, or over 7 days.
    """
    seconds = parse_duration(text, zero_ok=True)
    if seconds > MAX_HOLD:
        raise ValueError(f"{text!r} is over the longest hold of 7d")
    return seconds


def _seconds(value: float) -> str:
    """A duration as ``parse_hold`` reads it back (``"30s"``, ``"0.25s"``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def parse_when(text: object) -> tuple[str, tuple[tuple[str, str], ...], str, float]:
    """``(metric, labels, operator, threshold)`` of a rule's ``when``.

    Raises:
        ValueError: bad syntax, an unknown metric, a label the metric does
            not take (or a required one missing), or a threshold that is not finite.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string such as 'errors_per_minute > 600', got {text!r}")
    match = _WHEN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"cannot read {text!r}: expected 'metric > threshold' or "
            "'metric{label=\"value\"} >= threshold'"
        )
    metric = match["metric"]
    if metric not in ALERT_METRICS:
        import difflib  # noqa: PLC0415 - loaded only to word an error

        close = difflib.get_close_matches(metric, list(ALERT_METRICS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(ALERT_METRICS)
        raise ValueError(f"unknown metric {metric!r}; {hint}")
    labels = _labels(metric, match["labels"])
    threshold = float(match["threshold"])
    if not math.isfinite(threshold):
        raise ValueError(f"the threshold of {text!r} is not a finite number")
    return metric, labels, match["op"], threshold


def _labels(metric: str, text: str | None) -> tuple[tuple[str, str], ...]:
    if text is None or not text.strip():
        pairs: list[tuple[str, str]] = []
    else:
        pairs = []
        for part in text.split(","):
            label = _LABEL.fullmatch(part)
            if label is None:
                raise ValueError(f'cannot read the label {part.strip()!r}: expected name="value"')
            pairs.append((label[1], label[2]))
    names = [name for name, _ in pairs]
    allowed = ALERT_METRICS[metric]
    for name in names:
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no labels"
            raise ValueError(f"{metric} takes {takes}, not {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"a label is given twice in {metric}")
    missing = [name for name in _REQUIRED_LABELS.get(metric, ()) if name not in names]
    if missing:
        raise ValueError(f"{metric} needs the label {missing[0]!r}")
    if metric == "slo_burn_rate":
        _burn_windows(dict(pairs))
    return tuple(sorted(pairs))


def _burn_windows(labels: Mapping[str, str]) -> None:
    """Check ``window`` (and ``short``, shorter than it) of a burn rate are durations."""
    window = parse_hold(labels["window"])
    if window <= 0:
        raise ValueError(f"window {labels['window']!r} must be longer than 0s")
    if "short" in labels:
        short = parse_hold(labels["short"])
        if not 0 < short < window:
            raise ValueError(
                f"short {labels['short']!r} must be longer than 0s and shorter than "
                f"window {labels['window']!r}"
            )


@attrs.frozen(kw_only=True)
class AlertRule:
    """One ``[[alerts.rules]]`` entry, its ``when`` already parsed.

    ``keep_firing_for`` is the hysteresis: a firing alert resolves only once
    its condition has been false that long (default: as long as ``for``), so
    a value hovering at the threshold does not page on every crossing.
    """

    name: str
    when: str
    severity: str = "ticket"
    for_seconds: float = 0.0
    keep_firing_seconds: float | None = None
    summary: str = ""
    metric: str = attrs.field(init=False)
    labels: tuple[tuple[str, str], ...] = attrs.field(init=False)
    op: str = attrs.field(init=False)
    threshold: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RULE_NAME.fullmatch(self.name):
            raise ConfigError(
                f"rule name {self.name!r} must be letters, digits and '_' (at most 128)",
                key="alerts.rules.name",
            )
        where = f"alerts.rules.{self.name}"
        for key, hold in (("for", self.for_seconds), ("keep_firing_for", self.keep_firing_seconds)):
            if hold is not None and not 0.0 <= hold <= MAX_HOLD:
                raise ConfigError(f"expected 0 to 7d, got {hold!r} seconds", key=f"{where}.{key}")
        if self.severity not in SEVERITIES:
            raise ConfigError(
                f"severity {self.severity!r} is not one of {', '.join(map(repr, SEVERITIES))}",
                key=f"{where}.severity",
            )
        if not isinstance(self.summary, str) or len(self.summary) > MAX_TEXT:
            raise ConfigError(
                "expected a string of at most 4096 characters", key=f"{where}.summary"
            )
        try:
            metric, labels, op, threshold = parse_when(self.when)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc), key=f"{where}.when") from None
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "threshold", threshold)

    @property
    def keep_firing(self) -> float:
        """Seconds the condition must stay false before a firing alert resolves."""
        return self.for_seconds if self.keep_firing_seconds is None else self.keep_firing_seconds

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the condition."""
        return OPERATORS[self.op](value, self.threshold)

    def as_table(self) -> dict[str, Any]:
        """The rule as its TOML table (what ``from_table`` takes back)."""
        table: dict[str, Any] = {
            "name": self.name,
            "when": self.when,
            "for": _seconds(self.for_seconds),
            "severity": self.severity,
        }
        if self.keep_firing_seconds is not None:
            table["keep_firing_for"] = _seconds(self.keep_firing_seconds)
        if self.summary:
            table["summary"] = self.summary
        return table

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> AlertRule:
        """Build from a ``[[alerts.rules]]`` table.

        Raises:
            ConfigError: an unknown or missing key, or an invalid value, naming the rule.
        """
        name = table.get("name")
        where = f"alerts.rules.{name}" if isinstance(name, str) else "alerts.rules"
        known = ["name", "when", "for", "keep_firing_for", "severity", "summary"]
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(
                "unknown key" + suggest(unknown[0], known), key=f"{where}.{unknown[0]}"
            )
        for key in ("name", "when"):
            if key not in table:
                raise ConfigError(f"a rule needs '{key}'", key=where)
        holds: dict[str, float | None] = {"for": 0.0, "keep_firing_for": None}
        for key in holds:
            if key in table:
                try:
                    holds[key] = parse_hold(table[key])
                except ValueError as exc:
                    raise ConfigError(str(exc), key=f"{where}.{key}") from None
        return cls(
            name=table["name"],
            when=table["when"],
            severity=table.get("severity", "ticket"),
            for_seconds=holds["for"] or 0.0,
            keep_firing_seconds=holds["keep_firing_for"],
            summary=table.get("summary", ""),
        )


def _parse_rules(raw: Any, source: str) -> tuple[AlertRule, ...]:
    """``[[alerts.rules]]`` tables as AlertRules; an error names the rule (or its index)."""
    if not isinstance(raw, list):
        raise ConfigError("expected a list of tables", source=source, key="alerts.rules")
    rules = []
    for i, table in enumerate(raw):
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=f"alerts.rules[{i}]")
        try:
            rules.append(AlertRule.from_table(table))
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source, key=exc.key) from None
    return tuple(rules)


def _rules(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(r, AlertRule) for r in value):
        raise ConfigError("expected AlertRule entries", key="alerts.rules")
    names: set[str] = set()
    for rule in value:
        if rule.name in names:
            raise ConfigError("a second rule of this name", key=f"alerts.rules.{rule.name}")
        names.add(rule.name)


def _parse_urls(raw: Any, source: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ConfigError("expected a list of URLs", source=source, key="alerts.webhooks")
    return tuple(raw)


def _url(key: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def http_url(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
        for url in value if isinstance(value, tuple) else (value,):
            if url is None:
                continue
            if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
                raise ConfigError(f"expected an http:// or https:// URL, got {url!r}", key=key)
            if len(url) > MAX_TEXT:
                raise ConfigError("the URL is too long", key=key)

    return http_url


@attrs.frozen(kw_only=True)
class AlertsConfig(Section):
    """The ``[alerts]`` section: rules, and the Alertmanager and webhooks they notify."""

    section: ClassVar[str] = "alerts"

    #: Base URL of a Prometheus Alertmanager (``http://HOST:PORT``); unset: none.
    alertmanager: str | None = attrs.field(
        default=None,
        metadata={"kind": str, "optional": True, "min_len": 1},
        validator=[check, _url("alerts.alertmanager")],
    )
    #: The ``instance`` label of every alert (default: this host's name).
    instance: str = setting(socket.gethostname() or "supervisor", str, min_len=1)
    #: Seconds the windowed metrics look back (rates are per minute whatever it is).
    window: float = setting(60.0, float, min=1.0, max=3600.0)
    #: Notifications waiting per destination; past it the newest are dropped (counted).
    queue: int = setting(256, int, min=1, max=100_000)
    #: Seconds between re-sends of a firing alert to Alertmanager (it expires
    #: an alert not re-sent within 4 of these: a dead supervisor's alerts resolve).
    resend: float = setting(60.0, float, min=1.0, max=3600.0)
    webhooks: tuple[str, ...] = attrs.field(
        default=(),
        converter=to_tuple,
        metadata={"parse": _parse_urls, "unparse": list},
        validator=_url("alerts.webhooks"),
    )
    rules: tuple[AlertRule, ...] = attrs.field(
        default=(),
        converter=to_tuple,
        metadata={"parse": _parse_rules, "unparse": lambda rules: [r.as_table() for r in rules]},
        validator=_rules,
    )
