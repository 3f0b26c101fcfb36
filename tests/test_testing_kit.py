"""The public test kit: ``capture_logs`` shows what a system logged, redacted."""

from __future__ import annotations

from typing import Any

import structlog

from supervisor.testing import capture_logs, run_systems


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
