"""Experiments end to end (issue 13): a real ``supervisor run`` and ``supervisor experiments``."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cli_harness import SUPERVISOR, Running, running_supervisor

pytestmark = pytest.mark.e2e

SHOP = '''\
class Shop:
    """Serves 50 players a tick; arm b (the new layout) fails one step in three."""

    def start(self, ctx):
        ctx.player_segments(7, ["beta"])

    def tick(self, ctx):
        shown = 0
        for player in range(50):
            shown += ctx.flag("new_shop", player)
            arm = ctx.variant("layout", player)
            if arm == "b" and ctx.tick % 3 == 0:
                raise RuntimeError("layout b broke")
        ctx.report("new_shop_players", shown)
'''

CONFIG = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:s.sock"

[systems]
enabled = ["shop:Shop"]

[recovery]
max_restarts = 100000
window_seconds = 1
backoff_initial = 0

[flags.new_shop]
percent = 10
segments = ["beta"]

[experiments.layout]
arms = { a = 50, b = 50 }
"""


def _experiments(run: Running) -> dict[str, Any]:
    out = run.ctl("experiments", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_experiments_command_shows_the_failing_arm() -> None:
    with running_supervisor(CONFIG, files={"shop.py": SHOP}, tick_rate=30) as run:
        deadline = time.monotonic() + 30
        while True:
            data = _experiments(run)
            (exp,) = data["experiments"]
            if exp["arms"][1]["errors"] >= 20:
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.2)
        a, b = exp["arms"]
        assert (a["arm"], b["arm"]) == ("a", "b")
        assert a["errors"] == 0
        assert exp["comparisons"][0]["significant"]
        assert data["flags"] == [
            {
                "name": "new_shop",
                "enabled": True,
                "percent": 10.0,
                "runtime_percent": False,
                "segments": ["beta"],
            }
        ]
        text = run.ctl("experiments")
        assert text.returncode == 0, text.stderr
        assert "experiment layout" in text.stdout
        assert "b vs a: z = " in text.stdout
        assert ": significant at 0.05" in text.stdout
        assert "two-sample Poisson rate test" in text.stdout
        status = json.loads(run.ctl("status", "--json").stdout)
        assert status["flags"]["experiments"][0]["name"] == "layout"


def test_a_bad_flag_table_stops_run_with_one_line() -> None:
    with tempfile.TemporaryDirectory(prefix="sv-") as folder:
        config = Path(folder) / "supervisor.toml"
        config.write_text("[flags.new_shop]\npercent = 150\n", encoding="utf-8")
        out = subprocess.run(
            [str(SUPERVISOR), "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=folder,
            check=False,
        )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "[flags.new_shop.percent] expected a number from 0 to 100, got 150" in lines[0]
