"""``attach_rollouts`` on a real supervisor: its rules, its status section, its rollback alert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supervisor._alerts import attach_alerts
from supervisor._core._config import Config
from supervisor._core._runtime import Supervisor
from supervisor._rollout._file import RolloutFile
from supervisor._rollout._service import ROLLBACK_ALERT, attach_rollouts, rollouts_for

CONFIG: dict[str, Any] = {
    "systems": {"enabled": []},
    "flags": {"new_shop": {"percent": 0}},
    "alerts": {
        "alertmanager": "http://127.0.0.1:9",
        "rules": [{"name": "error_rate_high", "when": "errors_per_minute > 600"}],
    },
}


def _sup(tmp_path: Path) -> Supervisor:
    return Supervisor.from_config(Config.from_mapping(CONFIG), state_dir=tmp_path)


async def test_wired_to_the_engine_and_status(tmp_path: Path) -> None:
    """The engine's rules are the names a rollout may use; firing one rolls back and alerts."""
    sup = _sup(tmp_path)
    engine = attach_alerts(sup)
    assert engine is not None
    rollouts = attach_rollouts(sup)
    assert rollouts is not None
    assert rollouts_for(sup) is rollouts
    assert rollouts.rules == {"error_rate_high"}
    await rollouts.start(
        "new_shop", steps="10,50", every="1m", rollback_on=["error_rate_high"], by="t"
    )
    assert sup.flags.percent("new_shop") == 10.0
    assert sup.status().as_dict()["rollouts"]["rollouts"][0]["state"] == "running"
    for listener in engine.on_firing:  # as the engine does when the rule starts firing
        listener(engine.evaluator.states[0].rule)
    assert sup.flags.percent("new_shop") == 0.0
    (dest,) = engine.destinations
    assert dest.as_dict()["queued"] == 1  # the rollback's alert, for Alertmanager
    alert = dest._receive.receive_nowait()
    assert alert["labels"] == {
        "alertname": ROLLBACK_ALERT,
        "severity": "page",
        "instance": engine.config.instance,
        "flag": "new_shop",
    }
    assert "fired at step 1 (10 %)" in alert["annotations"]["summary"]


def test_restored_before_the_run(tmp_path: Path) -> None:
    """A second supervisor on the same state_dir has the flag at the rollout's percent at once."""
    record = {"flag": "new_shop", "steps": [10.0, 50.0], "every": 60.0, "rollback_on": [],
              "initial": 0.0, "state": "paused", "step": 1, "safe": 10.0, "watched": 3.0,
              "started_at": 0.0, "started_by": "a", "updated_at": 0.0, "reason": "",
              "events": []}  # fmt: skip
    RolloutFile(tmp_path).save([record])
    sup = _sup(tmp_path)
    attach_rollouts(sup)
    assert sup.flags.percent("new_shop") == 50.0
    assert sup.status().as_dict()["rollouts"]["rollouts"][0]["state"] == "paused"
