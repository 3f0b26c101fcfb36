"""``supervisor alerts`` as text: what an operator reads."""

from __future__ import annotations

import pytest

from supervisor._cli._alerts_cmd import _print_alerts


def test_no_rules_names_the_table_to_add(capsys: pytest.CaptureFixture[str]) -> None:
    """The hint shows ``[[alerts.rules]]`` literally (rich would take it for markup)."""
    _print_alerts({"rules": [], "destinations": []})
    assert "no alert rules ([[alerts.rules]] in the config)" in capsys.readouterr().out


def test_a_firing_rule_shows_its_state_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    rule = {
        "rule": "error_rate_high",
        "severity": "page",
        "state": "firing",
        "firing_for": 42.0,
        "value": 1080.0,
        "when": "errors_per_minute > 600",
        "fired": 1,
    }
    _print_alerts({"rules": [rule], "destinations": []})
    out = capsys.readouterr().out
    assert "error_rate_high" in out
    assert "firing" in out
    assert "42 s" in out
    assert "1080" in out
