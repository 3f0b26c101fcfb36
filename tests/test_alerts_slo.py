"""SLO burn rates in /metrics, and the multi-window burn-rate rules on a supervisor."""

from __future__ import annotations

import math

import attrs

from supervisor import Config, SloConfig
from supervisor._alerts import attach_alerts, slo_burn_rates
from supervisor._server._metrics import install as install_metrics
from supervisor.testing import Ticking, make_supervisor


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
