"""Alert rules: refused at load naming the rule; windowed metrics; pending, firing, resolved."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from supervisor._alerts._evaluator import Evaluator, State
from supervisor._alerts._signals import Fingerprints, Reading, Window
from supervisor._core._config import Config
from supervisor._core._config_alerts import AlertRule, parse_hold, parse_when
from supervisor._core._histogram import Histogram, WindowStats
from supervisor._errors import ConfigError


def _config(*rules: Mapping[str, object], **alerts: object) -> Config:
    return Config.from_mapping(
        {"alerts": {"rules": list(rules), **alerts}}, source="c.toml", env={}
    )


def test_a_rule_is_parsed_and_round_trips() -> None:
    config = _config(
        {
            "name": "error_rate_high",
            "when": 'errors_per_minute{system="economy"} >= 600',
            "for": "1m30s",
            "keep_firing_for": "250ms",
            "severity": "page",
        },
        alertmanager="http://127.0.0.1:9093",
        webhooks=["http://127.0.0.1:1/hook"],
    )
    (rule,) = config.alerts.rules
    assert (rule.metric, rule.labels, rule.op, rule.threshold) == (
        "errors_per_minute",
        (("system", "economy"),),
        ">=",
        600.0,
    )
    assert (rule.for_seconds, rule.keep_firing) == (90.0, 0.25)
    assert Config.from_mapping(config.as_mapping(), source="c.toml", env={}) == config


@pytest.mark.parametrize(
    ("rule", "key", "words"),
    [
        ({"name": "r", "when": "nosuch > 1"}, "alerts.rules.r.when", "unknown metric 'nosuch'"),
        ({"name": "r", "when": "rss_bm > 1"}, "alerts.rules.r.when", "did you mean 'rss_mb'"),
        ({"name": "r", "when": "rss_mb >"}, "alerts.rules.r.when", "cannot read"),
        ({"name": "r", "when": "rss_mb > nan"}, "alerts.rules.r.when", "cannot read"),
        ({"name": "r", "when": "rss_mb => 1"}, "alerts.rules.r.when", "cannot read"),
        ({"name": "r", "when": 5}, "alerts.rules.r.when", "expected a string"),
        ({"name": "r", "when": 'rss_mb{system="a"} > 1'}, "alerts.rules.r.when", "no labels"),
        ({"name": "r", "when": 'errors_per_minute{sys="a"} > 1'}, "alerts.rules.r.when", "'sys'"),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a"} > 1'},
            "alerts.rules.r.when",
            "needs the label 'window'",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",window="1y"} > 1'},
            "alerts.rules.r.when",
            "duration",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",window="1h",short="1h"} > 1'},
            "alerts.rules.r.when",
            "short '1h' must be longer than 0s and shorter than window '1h'",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",window="5m",short="0s"} > 1'},
            "alerts.rules.r.when",
            "short '0s' must be",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",window="1h",short="soon"} > 1'},
            "alerts.rules.r.when",
            "duration",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",window="0s"} > 1'},
            "alerts.rules.r.when",
            "window '0s' must be longer than 0s",
        ),
        (
            {"name": "r", "when": 'slo_burn_rate{slo="a",short="5m"} > 1'},
            "alerts.rules.r.when",
            "needs the label 'window'",
        ),
        ({"name": "r", "when": "rss_mb > 1", "for": "3x"}, "alerts.rules.r.for", "duration"),
        ({"name": "r", "when": "rss_mb > 1", "for": 30}, "alerts.rules.r.for", "duration"),
        ({"name": "r", "when": "rss_mb > 1", "for": "8d"}, "alerts.rules.r.for", "7d"),
        ({"name": "r", "when": "rss_mb > 1", "severity": "pager"}, "alerts.rules.r.severity", ""),
        ({"name": "r", "when": "rss_mb > 1", "fro": "1s"}, "alerts.rules.r.fro", "'for'"),
        ({"name": "r r", "when": "rss_mb > 1"}, "alerts.rules.name", "'r r'"),
        ({"name": "r"}, "alerts.rules.r", "needs 'when'"),
    ],
)
def test_a_bad_rule_is_refused_at_load_naming_it(
    rule: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(rule)
    assert caught.value.key == key
    assert caught.value.source == "c.toml"
    assert words in caught.value.message


def test_duplicate_rules_bad_urls_and_shapes_are_refused() -> None:
    rule = {"name": "r", "when": "rss_mb > 1"}
    with pytest.raises(ConfigError, match=r"\[alerts.rules.r\] a second rule"):
        _config(rule, rule)
    with pytest.raises(ConfigError, match=r"\[alerts.alertmanager\] expected an http"):
        _config(alertmanager="ftp://x")
    with pytest.raises(ConfigError, match=r"\[alerts.webhooks\] expected an http"):
        _config(webhooks=["nope"])
    with pytest.raises(ConfigError, match=r"\[alerts.rules\] expected a list"):
        Config.from_mapping({"alerts": {"rules": {"name": "r"}}}, env={})
    with pytest.raises(ConfigError, match=r"\[alerts.rules.x.for\]"):
        AlertRule(name="x", when="rss_mb > 1", for_seconds=math.nan)


def test_the_alertmanager_url_can_come_from_the_environment() -> None:
    env = {"SUPERVISOR_ALERTS_ALERTMANAGER": "http://127.0.0.1:9093"}
    assert Config.from_mapping({}, env=env).alerts.alertmanager == "http://127.0.0.1:9093"


def test_durations_and_conditions() -> None:
    assert parse_hold("0s") == 0.0
    assert parse_hold("2d") == 172_800.0
    assert parse_hold("1h30m") == 5400.0
    assert parse_hold("250ms") == 0.25
    with pytest.raises(ValueError, match="longest hold of 7d"):
        parse_hold("8d")
    assert parse_when("players < 10") == ("players", (), "<", 10.0)
    assert parse_when('slo_burn_rate{slo="ticks",window="1h",short="5m"} > 14.4') == (
        "slo_burn_rate",
        (("short", "5m"), ("slo", "ticks"), ("window", "1h")),
        ">",
        14.4,
    )
    rule = AlertRule(name="x", when="players != 0")
    assert rule.holds(1.0)
    assert not rule.holds(0.0)


def _rule(when: str = "rss_mb > 100", **kw: object) -> AlertRule:
    return AlertRule(name="r", when=when, **kw)  # type: ignore[arg-type]


def _run(ev: Evaluator, series: Sequence[tuple[float, float | None]]) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for now, value in series:
        out.extend((now, t.after.value) for t in ev.evaluate(now, 1000.0 + now, {"r": value}))
    return out


def test_pending_then_firing_after_for_then_resolved_after_keep_firing_for() -> None:
    ev = Evaluator([_rule(for_seconds=3.0, keep_firing_seconds=2.0)])
    series = [(float(t), 200.0 if 1 <= t <= 6 else 50.0) for t in range(12)]
    assert _run(ev, series) == [(1.0, "pending"), (4.0, "firing"), (9.0, "resolved")]
    (st,) = ev.states
    assert (st.starts_at, st.ends_at, st.fired) == (1004.0, 1009.0, 1)


def test_hysteresis_a_value_hovering_at_the_threshold_fires_once() -> None:
    ev = Evaluator([_rule(for_seconds=0.0, keep_firing_seconds=5.0)])
    # Crosses every other second for 20 s: one firing, resolved 5 s after the last crossing.
    series = [(float(t), 101.0 if t % 2 == 0 and t < 20 else 99.0) for t in range(30)]
    assert _run(ev, series) == [(0.0, "firing"), (24.0, "resolved")]


def test_a_blip_shorter_than_for_never_fires_and_missing_values_do_not_hold() -> None:
    ev = Evaluator([_rule(for_seconds=5.0)])
    series = [(0.0, 200.0), (1.0, 200.0), (2.0, None), (3.0, 200.0), (9.0, 200.0)]
    assert _run(ev, series) == [
        (0.0, "pending"),
        (2.0, "inactive"),
        (3.0, "pending"),
        (9.0, "firing"),
    ]


def test_a_resolved_alert_can_fire_again_with_a_new_start() -> None:
    ev = Evaluator([_rule()])  # for 0, keep_firing_for = for = 0
    assert _run(ev, [(0.0, 200.0), (1.0, 0.0), (2.0, 0.0), (3.0, 200.0)]) == [
        (0.0, "firing"),
        (1.0, "resolved"),
        (3.0, "firing"),
    ]
    assert ev.states[0].starts_at == 1003.0
    assert ev.states[0].state is State.FIRING


def _hist_counts(values: list[float]) -> Sequence[int]:
    h = Histogram()
    for v in values:
        h.record(v)
    return h.counts()


def test_window_p99_is_over_the_window_not_since_start() -> None:
    old = _hist_counts([0.5] * 1000)  # a slow start: 500 ms ticks
    new = _hist_counts([0.5] * 1000 + [0.001] * 1000)
    zero = Histogram().counts()
    assert WindowStats.between(new, old, math.inf).p99 == pytest.approx(0.001, rel=0.05)
    assert WindowStats.between(new, zero, math.inf).p99 == pytest.approx(0.5, rel=0.05)
    assert WindowStats.between(old, old, math.inf).p99 == 0.0


def test_window_rates_are_differences_over_the_last_minute() -> None:
    w = Window(seconds=60.0)
    assert w.value("errors_per_minute", {}) is None
    for t in range(121):
        w.push(Reading(at=float(t), errors=10 * t, by_system={"a": t}, dropped_ticks=t // 2))
    assert w.value("errors_per_minute", {}) == 600.0
    assert w.value("errors_per_minute", {"system": "a"}) == 60.0
    assert w.value("errors_per_minute", {"system": "zz"}) == 0.0
    assert w.value("dropped_ticks_per_minute", {}) == 30.0
    assert w.value("rss_mb", {}) is None
    assert w.value("slo_burn_rate", {"slo": "x", "window": "1h"}) is None
    w.burn_rate = lambda slo, window: 14.4 if (slo, window) == ("x", "1h") else 0.0
    assert w.value("slo_burn_rate", {"slo": "x", "window": "1h"}) == 14.4


def test_new_fingerprints_are_counted_once_from_newer_records() -> None:
    fps = Fingerprints()
    fps.feed([(2, "b"), (1, "a")])
    fps.feed([(4, "a"), (3, "c"), (2, "b")])
    assert fps.new == 3


def test_a_multi_window_burn_rate_is_the_smaller_of_its_two_windows() -> None:
    """SRE workbook: page only while the long window AND the short one burn above 14.4.

    The long window alone keeps paging for an hour after the burn stopped; the
    short one alone pages on a blip. Their minimum crosses 14.4 only when both do.
    """
    burns = {"1h": 20.0, "5m": 30.0}
    w = Window(seconds=60.0, burn_rate=lambda slo, window: burns[window] if slo == "x" else 0.0)
    w.push(Reading(at=0.0))
    labels = {"slo": "x", "window": "1h", "short": "5m"}
    rule = AlertRule(name="fast", when='slo_burn_rate{slo="x",window="1h",short="5m"} > 14.4')
    assert w.value("slo_burn_rate", labels) == 20.0
    assert rule.holds(20.0)
    burns["5m"] = 0.0  # the burn stopped: the hour still shows it, the 5 minutes do not
    assert w.value("slo_burn_rate", labels) == 0.0
    assert not rule.holds(0.0)
    burns.update({"1h": 3.0, "5m": 50.0})  # a blip: the short window alone burns
    assert w.value("slo_burn_rate", labels) == 3.0
    assert w.value("slo_burn_rate", {"slo": "x", "window": "5m"}) == 50.0
