"""The shipped rules: production.toml's load; alerts.yml passes promtool and matches them.

``promtool`` comes with Debian's ``prometheus`` package (``.ci/services.sh``):
without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from supervisor import Config
from supervisor._alerts import attach_alerts
from supervisor._alerts._signals import Reading
from supervisor._core._config_alerts import parse_hold
from supervisor._errors import ConfigError
from supervisor.testing import Ticking, make_supervisor

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PRODUCTION = ROOT / "configs" / "production.toml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("`promtool` is not on PATH: run `bash .ci/services.sh` (Debian's prometheus)")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent
    )


def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_promtool_unit_tests_fire_each_rule_on_a_crossing_series() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def _yaml_rules() -> dict[str, dict[str, str]]:
    """``alert: NAME`` blocks of alerts.yml as {name: {key: value}} (its flat keys only)."""
    rules: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in RULES.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\s*-?\s*(alert|for|keep_firing_for|severity|summary):\s*([^#]*)", line)
        if found is None:
            continue
        key, value = found[1], found[2].strip().strip('"')
        if key == "alert":
            current = rules[value] = {}
        else:
            current[key] = value
    return rules


def test_alerts_yml_is_production_toml_in_prometheus_terms() -> None:
    config = Config.from_toml(PRODUCTION, env={})
    yml = _yaml_rules()
    assert sorted(yml) == sorted(rule.name for rule in config.alerts.rules)
    for rule in config.alerts.rules:
        prom = yml[rule.name]
        assert prom["severity"] == rule.severity, rule.name
        assert prom["summary"] == rule.summary, rule.name
        assert parse_hold(prom["for"]) == rule.for_seconds, rule.name
        assert parse_hold(prom["keep_firing_for"]) == rule.keep_firing, rule.name


def test_the_burn_rate_rules_read_the_same_windows_and_thresholds() -> None:
    """alerts.yml's `long > T and ignoring(window) short > T` is the rule's min(long, short) > T."""
    config = Config.from_toml(PRODUCTION, env={})
    blocks = dict(
        re.findall(
            r"- alert: (\w+)\n(.*?)(?=\n\s*- alert:|\Z)", RULES.read_text(encoding="utf-8"), re.S
        )
    )
    burn = [rule for rule in config.alerts.rules if rule.metric == "slo_burn_rate"]
    assert sorted(rule.name for rule in burn) == [
        "ticks_fast_burn",
        "ticks_slow_burn",
        "world_fast_burn",
        "world_slow_burn",
    ]
    for rule in burn:
        labels = dict(rule.labels)
        slo, threshold = labels["slo"], f"{rule.threshold:g}"
        assert rule.op == ">", rule.name
        expr = " ".join(blocks[rule.name].split())
        assert (
            f'supervisor_slo_burn_rate{{slo="{slo}",window="{labels["window"]}"}} > {threshold} '
            f'and ignoring(window) supervisor_slo_burn_rate{{slo="{slo}",'
            f'window="{labels["short"]}"}} > {threshold}'
        ) in expr, rule.name
    assert {(slo.kind, slo.target, slo.window) for slo in config.slo.values()} == {
        ("timeliness", 0.999, "30d"),
        ("availability", 0.999, "30d"),
    }
    assert config.slo["ticks"].lateness_ms == 5.0


def test_the_production_rules_attach() -> None:
    config = Config.from_toml(PRODUCTION, env={})
    asked: list[tuple[str, str]] = []

    def burn_rate(slo: str, window: str) -> float:
        asked.append((slo, window))
        return 0.0

    sup = make_supervisor([Ticking()], config=config)
    with pytest.raises(ConfigError, match=r"ticks_fast_burn.when\] .*no SLO store"):
        attach_alerts(sup)
    engine = attach_alerts(sup, burn_rate=burn_rate)
    assert engine is not None
    assert {st.rule.metric for st in engine.states()} == {
        "errors_per_minute",
        "new_fingerprints",
        "tick_lateness_p99_ms",
        "dropped_ticks_per_minute",
        "quarantined_systems",
        "rss_mb",
        "slo_burn_rate",
    }
    assert engine.destinations == []  # delivery is the deployer's choice
    engine.step(Reading(at=0.0))
    assert sorted(set(asked)) == [
        ("ticks", "1h"),
        ("ticks", "30m"),
        ("ticks", "5m"),
        ("ticks", "6h"),
        ("world", "1h"),
        ("world", "30m"),
        ("world", "5m"),
        ("world", "6h"),
    ]


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ('name = "bad"\nwhen = "errors_per_minit > 1"', "[alerts.rules.bad.when] unknown metric"),
        (
            'name = "bad"\nwhen = "rss_mb > 1"\nfor = "soon"',
            "[alerts.rules.bad.for] 'soon' is not a duration",
        ),
        (
            'name = "burn"\nwhen = \'slo_burn_rate{slo="tick",window="1h"} > 14.4\'',
            "[alerts.rules.burn.when] names slo 'tick', but there is no [slo.tick] table",
        ),
    ],
)
def test_run_refuses_a_bad_rule_with_exit_2_naming_it(
    tmp_path: Path, rule: str, named: str
) -> None:
    from click.testing import CliRunner

    from supervisor._cli._main import cli

    config = tmp_path / "bad.toml"
    config.write_text(
        f'[supervisor]\nstate_dir = "var"\n[systems]\nenabled = []\n[features]\napi = false\n'
        f"[[alerts.rules]]\n{rule}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--ticks", "1"], env={})
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
