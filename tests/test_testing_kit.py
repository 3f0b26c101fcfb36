"""The public test kit: ``capture_logs`` shows what a system logged, redacted."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from supervisor import ConfigError
from supervisor.testing import Ticking, capture_logs, run_systems


class Shop:
    """Logs once at start-up and once a tick, with a secret in one event."""

    name = "shop"

    def tick(self, ctx: Any) -> None:
        ctx.log.info("sold", item="sword", password="hunter2")
        if ctx.tick == 1:
            ctx.log.debug("restocked", count=3)


def test_capture_logs_collects_a_systems_events_redacted_and_at_every_level() -> None:
    with capture_logs() as logs:
        run_systems(Shop(), ticks=2)
    mine = [e for e in logs if e.get("system") == "shop"]
    assert [e["event"] for e in mine] == ["sold", "sold", "restocked"]  # ticks 0, 1
    sold = mine[0]
    assert sold["log_level"] == "info"
    assert sold["item"] == "sword"
    assert "hunter2" not in repr(logs)  # redacted where the event is made, as in a real run
    assert mine[2]["log_level"] == "debug"
    assert mine[2]["count"] == 3


def test_capture_logs_restores_the_configuration_after_the_block() -> None:
    before = structlog.get_config()["processors"]
    with capture_logs():
        pass
    assert structlog.get_config()["processors"] == before


class Counter:
    """Counts by ``step``: a constructor argument from its config table."""

    name = "counter"

    def __init__(self, step: int = 1) -> None:
        self.step = step
        self.total = 0

    def tick(self, ctx: Any) -> None:
        self.total += self.step


def test_a_class_is_built_from_its_config_table_as_from_a_file() -> None:
    result = run_systems(Counter, config={"systems": {"counter": {"step": 3}}}, ticks=4)
    assert result.system("counter").total == 12


def test_a_bad_table_is_the_same_one_line_error_as_in_a_file() -> None:
    with pytest.raises(ConfigError, match=r"systems\.counter.*'stpe'.*did you mean 'step'"):
        run_systems(Counter, config={"systems": {"counter": {"stpe": 3}}}, ticks=1)


def test_the_systems_a_config_names_are_built_and_only_those() -> None:
    result = run_systems(
        Ticking(),
        config={"systems": {"heartbeat": {}, "counter": {"use": f"{__name__}:Counter", "step": 2}}},
        ticks=3,
    )
    names = [s["name"] for s in result.supervisor.status().as_dict()["systems"]]
    assert sorted(names) == ["counter", "heartbeat", "ticking"]
    assert result.system("counter").total == 6
