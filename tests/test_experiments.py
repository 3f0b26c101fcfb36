"""Experiments (issue 13): arms by weight, errors per arm, the rate test, recovery per arm."""

from __future__ import annotations

import math
from typing import Any

import pytest

from supervisor import Config, ConfigError, Phase, UnknownExperimentError
from supervisor._core._experiments import experiments_view, rate_test
from supervisor.testing import make_supervisor, run_systems


def _view(sup: Any, name: str) -> dict[str, Any]:
    found = [e for e in experiments_view(sup)["experiments"] if e["name"] == name]
    assert len(found) == 1
    exp: dict[str, Any] = found[0]
    return exp


class TestArms:
    def test_arms_follow_the_weights(self) -> None:
        flags = make_supervisor([], config={"experiments": {"e": {"arms": {"a": 1, "b": 3}}}}).flags
        arms = [flags.variant("e", p) for p in range(20_000)]
        assert 4_600 < arms.count("a") < 5_400
        assert arms.count("a") + arms.count("b") == 20_000

    def test_a_player_keeps_the_arm(self) -> None:
        flags = make_supervisor(
            [], config={"experiments": {"e": {"arms": {"a": 50, "b": 50}}}}
        ).flags
        first = [flags.variant("e", p) for p in range(500)]
        assert first == [flags.variant("e", str(p)) for p in range(500)]

    def test_disabled_puts_everyone_in_the_control(self) -> None:
        config = {"experiments": {"e": {"arms": {"ctl": 1, "new": 99}, "enabled": False}}}
        flags = make_supervisor([], config=config).flags
        assert {flags.variant("e", p) for p in range(300)} == {"ctl"}

    def test_a_zero_weight_arm_gets_nobody(self) -> None:
        flags = make_supervisor([], config={"experiments": {"e": {"arms": {"a": 0, "b": 1}}}}).flags
        assert {flags.variant("e", p) for p in range(3000)} == {"b"}

    def test_unknown_experiment(self) -> None:
        flags = make_supervisor([], config={"experiments": {"layout": {"arms": {"a": 1}}}}).flags
        with pytest.raises(UnknownExperimentError, match="did you mean 'layout'"):
            flags.variant("layot", 1)
        with pytest.raises(TypeError):
            flags.variant("layout", 1.0)  # type: ignore[arg-type]


class TestRateTest:
    def test_known_value(self) -> None:
        """10 errors in 100 player-minutes against 30 in 100: z = 0.2 / sqrt(0.2 * 0.02)."""
        result = rate_test(10, 100.0, 30, 100.0)
        assert result is not None
        z, p = result
        assert z == pytest.approx(math.sqrt(10))
        assert p == pytest.approx(0.001565, rel=1e-3)

    def test_equal_rates_are_not_significant(self) -> None:
        result = rate_test(50, 100.0, 50, 100.0)
        assert result == (0.0, 1.0)

    def test_no_data(self) -> None:
        assert rate_test(0, 10.0, 0, 10.0) is None
        assert rate_test(3, 0.0, 1, 10.0) is None


class _Shop:
    """Serves 100 players a tick; the new layout (arm b) fails one step in three."""

    def tick(self, ctx: Any) -> None:
        for player in range(100):
            arm = ctx.variant("layout", player)
            if arm == "b" and ctx.tick % 3 == 0:
                raise RuntimeError("layout b broke")
            if arm == "a" and ctx.tick % 40 == 0:
                raise RuntimeError("layout a broke")


def test_the_arm_that_fails_more_shows_it() -> None:
    run = run_systems(
        named={"shop": _Shop()},
        ticks=600,
        tick_rate=30,
        config={
            "experiments": {"layout": {"arms": {"a": 50, "b": 50}}},
            "recovery": {"max_restarts": 100_000, "window_seconds": 1, "backoff_initial": 0},
        },
    )
    exp = _view(run.supervisor, "layout")
    a, b = exp["arms"]
    assert a["arm"] == "a"
    assert b["errors"] > 5 * a["errors"] > 0
    assert a["players"] + b["players"] == 100
    # Exposure: each evaluation covers the system's step, 1/30 s on the MockClock.
    assert a["player_minutes"] == pytest.approx(a["evaluations"] / 30 / 60)
    assert b["player_minutes"] == pytest.approx(b["evaluations"] / 30 / 60)
    assert b["errors_per_player_minute"] > a["errors_per_player_minute"]
    (cmp,) = exp["comparisons"]
    assert cmp["significant"]
    assert cmp["z"] > 0
    assert exp["systems"][0]["name"] == "shop"
    assert exp["systems"][0]["step"]["count"] > 0


class _Shard:
    """Serves 10 players, then fails: only its recovery budget decides how long it is retried."""

    def __init__(self, first: int = 0) -> None:
        self.first = first

    def tick(self, ctx: Any) -> None:
        for player in range(self.first, self.first + 10):
            ctx.variant("retry", player)
        raise RuntimeError("shard down")


def test_recovery_policy_per_arm() -> None:
    """Arm b gives its shards no restarts: they are quarantined first; arm a's keep retrying."""
    config = {
        "recovery": {"max_restarts": 1000, "window_seconds": 60, "backoff_initial": 5},
        "experiments": {
            "retry": {
                "arms": {"a": 50, "b": 50},
                "systems": ["shard_1", "shard_2"],
                "assign": {"shard_1": "a", "shard_2": "b"},
                "recovery": {"b": {"max_restarts": 0}},
            }
        },
    }
    shards = {"shard_1": _Shard(0), "shard_2": _Shard(10)}
    run = run_systems(named=shards, ticks=20, config=config)
    errors = {s.name: s.errors for s in run.supervisor.statistics().systems}
    assert errors == {"shard_1": 20, "shard_2": 1}  # shard_2 waits out its 5 s backoff
    breakers = {name: run.supervisor._k.slots[name].breaker for name in errors}
    assert (breakers["shard_1"].quarantines, breakers["shard_2"].quarantines) == (0, 1)
    exp = _view(run.supervisor, "retry")
    assert [[u["name"] for u in arm["systems"]] for arm in exp["arms"]] == [
        ["shard_1"],
        ["shard_2"],
    ]
    assert [arm["systems"][0]["max_restarts"] for arm in exp["arms"]] == [1000, 0]
    # Every player a shard serves is in the shard's arm; the strict arm kept its
    # 10 players for one step, the patient one for all 20.
    assert [arm["players"] for arm in exp["arms"]] == [10, 10]
    assert [arm["evaluations"] for arm in exp["arms"]] == [200, 10]
    assert [arm["errors"] for arm in exp["arms"]] == [20, 1]


def test_the_arm_budget_outlives_a_phase_change() -> None:
    config = {
        "recovery": {"max_restarts": 7},
        "experiments": {
            "retry": {
                "arms": {"a": 50, "b": 50},
                "systems": ["shard_1"],
                "assign": {"shard_1": "b"},
                "recovery": {"b": {"max_restarts": 2, "backoff_initial": 0.5}},
            }
        },
        "phases": {"production": {"recovery": {"max_restarts": 9}}},
    }
    sup = make_supervisor({"shard_1": _Shard()}, config=config)
    sup._lifecycle.enter_phase(Phase.PRODUCTION, caller="test", reason="go", action="phase")
    breaker = sup._k.slots["shard_1"].breaker
    assert (breaker.max_restarts, breaker.backoff_initial) == (2, 0.5)


def test_hashed_units_are_stable() -> None:
    """Without ``assign`` a system's arm is the same hash of the experiment and its name."""
    config = {
        "experiments": {
            "retry": {
                "arms": {"a": 50, "b": 50},
                "systems": [f"s{i}" for i in range(40)],
                "recovery": {"b": {"max_restarts": 1}},
            }
        }
    }
    sup = make_supervisor([], config=config)
    units = sup.flags.recovery_units(sup.active_config.recovery)
    arms = [units[f"s{i}"][1] for i in range(40)]
    assert set(arms) == {"a", "b"}
    assert arms == [sup.flags.variant("retry", f"s{i}") for i in range(40)]


class TestConfig:
    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({}, "[experiments.e] an experiment needs arms"),
            ({"arms": {}}, "[experiments.e.arms] expected 1 to 16 arms"),
            ({"arms": {"a": -1}}, "[experiments.e.arms.a] expected a number from 0 to"),
            ({"arms": {"a": 0}}, "[experiments.e.arms] the weights add up to 0"),
            ({"arms": {"a": "x"}}, "[experiments.e.arms.a] expected a number, got str"),
            ({"arms": {"a": 1}, "arm": 1}, "[experiments.e.arm] unknown key; did you mean"),
            (
                {"arms": {"a": 1}, "recovery": {"b": {"max_restarts": 1}}, "systems": ["s"]},
                "[experiments.e.recovery.b] unknown arm",
            ),
            (
                {"arms": {"a": 1}, "recovery": {"a": {"history": 1}}, "systems": ["s"]},
                "[experiments.e.recovery.a.history] unknown key",
            ),
            (
                {"arms": {"a": 1}, "recovery": {"a": {"max_restarts": -1}}, "systems": ["s"]},
                "[experiments.e.recovery.a.max_restarts] -1 is below the minimum 0",
            ),
            (
                {"arms": {"a": 1}, "recovery": {"a": {"max_restarts": 1}}},
                "[experiments.e.systems] a per-arm recovery policy needs the systems",
            ),
            (
                {"arms": {"a": 1}, "systems": ["s"], "assign": {"t": "a"}},
                "[experiments.e.assign] 't' is not one of this experiment's systems",
            ),
            (
                {"arms": {"a": 1}, "systems": ["s"], "assign": {"s": "z"}},
                "[experiments.e.assign.s] unknown arm",
            ),
        ],
    )
    def test_bad_experiment_tables(self, table: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError) as info:
            Config.from_mapping({"experiments": {"e": table}}, env={})
        assert str(info.value).startswith(f"<config>: {message}")

    def test_too_many_arms(self) -> None:
        arms = {f"a{i}": 1 for i in range(17)}
        with pytest.raises(ConfigError, match="expected 1 to 16 arms"):
            Config.from_mapping({"experiments": {"e": {"arms": arms}}}, env={})


def test_an_arm_backoff_above_the_base_max_raises_the_max() -> None:
    config = Config.from_mapping(
        {
            "recovery": {"backoff_max": 10},
            "experiments": {
                "retry": {
                    "arms": {"a": 1},
                    "systems": ["s"],
                    "recovery": {"a": {"backoff_initial": 30}},
                }
            },
        },
        env={},
    )
    policy = config.experiments["retry"].recovery_for("a", config.recovery)
    assert (policy.backoff_initial, policy.backoff_max) == (30.0, 30.0)
    assert config.experiments["retry"].recovery_for("b", config.recovery) is config.recovery
