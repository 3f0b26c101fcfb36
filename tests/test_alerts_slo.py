"""SLO burn rates in /metrics, and the multi-window burn-rate rules on a supervisor."""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import pytest

from supervisor import Config, SloConfig
from supervisor._alerts import attach_alerts, slo_burn_rates
from supervisor._alerts._engine import AlertEngine
from supervisor._alerts._signals import Reading
from supervisor._server._metrics import install as install_metrics
from supervisor._store._db import MinuteRow
from supervisor._store._shipper import ErrorShipper
from supervisor.testing import Ticking, make_supervisor

PRODUCTION = Path(__file__).resolve().parent.parent / "configs" / "production.toml"


def _with_slos(config: Config, *names: str) -> Config:
    return attrs.evolve(config, slo={name: SloConfig(name=name) for name in names})


def test_metrics_give_every_slos_burn_rate_over_the_four_windows() -> None:
    """Computed on scrape from the store; a window it cannot answer is left out, not a 500."""
    config = _with_slos(Config.from_mapping({}, env={}), "ticks", "world")
    sup = make_supervisor([Ticking()], config=config)
    burns = {"5m": 30.0, "30m": 7.5, "1h": 15.0}

    def burn_rate(slo: str, window: str) -> float:
        if slo == "world":
            return math.inf if window == "6h" else 0.0
        return burns[window]  # KeyError for 6h: the store could not answer

    assert attach_alerts(sup, burn_rate=burn_rate) is None  # no rules: still exported
    install_metrics(sup)
    assert list(slo_burn_rates(sup)) == [
        ("ticks", "5m", 30.0),
        ("ticks", "30m", 7.5),
        ("ticks", "1h", 15.0),
        ("world", "5m", 0.0),
        ("world", "30m", 0.0),
        ("world", "1h", 0.0),
        ("world", "6h", math.inf),
    ]
    text = sup.metrics_text()[0].decode()
    assert "# TYPE supervisor_slo_burn_rate gauge" in text
    assert 'supervisor_slo_burn_rate{slo="ticks",window="1h"} 15.0' in text
    assert 'supervisor_slo_burn_rate{slo="world",window="6h"} +Inf' in text
    assert 'slo="ticks",window="6h"' not in text


def test_no_slo_store_no_burn_rate_metric() -> None:
    sup = make_supervisor([Ticking()], config=_with_slos(Config.from_mapping({}, env={}), "t"))
    attach_alerts(sup)
    install_metrics(sup)
    assert list(slo_burn_rates(sup)) == []
    assert "supervisor_slo_burn_rate" not in sup.metrics_text()[0].decode()


def _store_with_outage(tmp_path: Path, down: range) -> ErrorShipper:
    """The production SLOs' store; the last hour's minutes in ``down`` spent in emergency."""
    config = Config.from_toml(PRODUCTION, env={})
    shipper = ErrorShipper(path=tmp_path / "errors.db", slos=config.slo)
    now = int(time.time()) // 60 * 60
    shipper.recent.extend(
        MinuteRow(minute=now - 3600 + 60 * m, seconds=60, emergency=60 if m in down else 0)
        for m in range(60)
    )
    return shipper


@pytest.mark.parametrize(
    ("down", "firing"),
    [
        (range(55, 60), ["world_fast_burn"]),  # the last 5 minutes down: 1h and 5m both burn
        (range(40, 50), []),  # down 10 minutes, up again for 10: the 5m window has stopped
    ],
)
def test_the_production_fast_burn_pages_only_while_the_short_window_burns_too(
    tmp_path: Path, down: range, firing: list[str]
) -> None:
    """The shipped rules over the real SLO store's burn rates, evaluated for 2 min (their `for`)."""
    shipper = _store_with_outage(tmp_path, down)
    assert shipper.slo_burn_rate("world", "1h") > 14.4
    engine = AlertEngine(
        Config.from_toml(PRODUCTION, env={}).alerts, burn_rate=shipper.slo_burn_rate
    )
    for second in range(122):
        engine.step(Reading(at=float(second)))
    assert [st.rule.name for st in engine.evaluator.firing()] == firing
    assert engine.value_failures == 0
