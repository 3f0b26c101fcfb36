"""A staged rollout end to end: ``supervisor run`` with a shop that fails only for flagged players.

The rollout climbs 1 % -> 5 % -> 50 %; at the large step the errors cross the
alert rule, which fires; the flag goes back to the last safe percent (5 %),
the rollout stops with the reason, the audit log has the start and the
rollback; after a kill -9 and ``run --resume`` it is still stopped with its
reason. Bad input from the command line is one line, exit 2, nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import SUPERVISOR, Running

pytestmark = pytest.mark.e2e

SHOP = '''\
"""A shop whose new version fails for every player its flag is on for."""


class Shop:
    name = "shop"

    def tick(self, ctx):
        player = ctx.tick % 1000  # one player served per tick
        if ctx.flag("new_shop", player):
            raise RuntimeError("the new shop broke")
'''

# At 20 Hz the shop's errors per minute are about 12 x percent: 60 at 5 %,
# 600 at 50 %; the rule fires between the two.
CONFIG = """\
[supervisor]
state_dir = "state"
snapshot_interval = 1.0

[api]
listen = "unix:s.sock"
audit_log = "audit.jsonl"

[systems]
enabled = ["shop"]

[systems.shop]
use = "shop:Shop"

[recovery]
max_restarts = 1000000
backoff_initial = 0.0
backoff_max = 0.0

[flags.new_shop]
percent = 0

[alerts]
window = 5

[[alerts.rules]]
name = "shop_errors"
when = 'errors_per_minute{system="shop"} > 150'
for = "1s"
"""


@contextlib.contextmanager
def _run(folder: Path, *extra: str) -> Iterator[Running]:
    """``supervisor run`` in ``folder`` (kept across runs); killed with SIGKILL at the end."""
    (folder / "s.sock").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env["PYTHONPATH"] = str(folder)
    log = (folder / "run.log").open("ab")
    proc = subprocess.Popen(
        [str(SUPERVISOR), "run", "--tick-rate", "20", "--log-format", "json", *extra],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    run = Running(folder, f"unix:{folder / 's.sock'}", proc)
    try:
        _wait(lambda: (folder / "s.sock").exists() and proc.poll() is None, run, "the API")
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        log.close()


def _wait(check: Any, run: Running, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert run.proc.poll() is None, run.log()[-3000:]
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}\n{run.log()[-3000:]}"
        time.sleep(0.1)


def _rollout(run: Running) -> dict[str, Any] | None:
    out = run.ctl("rollout", "status", "--json")
    assert out.returncode == 0, out.stderr
    rollouts = json.loads(out.stdout)["rollouts"]
    return rollouts[0] if rollouts else None


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sv-"))
    (path / "supervisor.toml").write_text(CONFIG)
    (path / "shop.py").write_text(SHOP)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _flag_percent(run: Running) -> float:
    """The percent ``sup.flags`` is at, as status reports it (not the rollout's own word)."""
    out = run.ctl("status", "--json")
    assert out.returncode == 0, out.stderr
    (flag,) = json.loads(out.stdout)["flags"]["flags"]
    return float(flag["percent"])


def _refused_in_one_line(run: Running, *args: str, says: str) -> None:
    out = run.ctl("rollout", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_climbs_rolls_back_and_stays_rolled_back_after_kill_9(folder: Path) -> None:
    """The issue's scenario, from the command line, as an operator runs it."""
    with _run(folder) as run:
        start = ("start", "new_shop", "--every", "4s")
        for args, says in (
            (("start", "nope", "--steps", "1,5", "--every", "4s"), "no flag 'nope'"),
            ((*start, "--steps", "5,1"), "must increase"),
            ((*start, "--steps", "1,101"), "above 100"),
            ((*start, "--steps", "1,5", "--rollback-on", "typo"), "no such alert rule"),
            (("start", "new_shop", "--steps", "1,5", "--every", "soon"), "not a duration"),
        ):
            _refused_in_one_line(run, *args, says=says)
        assert _rollout(run) is None  # nothing changed

        out = run.ctl("rollout", *start, "--steps", "1,5,50,100", "--rollback-on", "shop_errors",
                      "--reason", "launch the new shop")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "started at 1 %" in out.stdout
        _wait(lambda: (_rollout(run) or {}).get("state") == "rolled_back", run, "the rollback")
        rollout = _rollout(run)
        assert rollout is not None
        climbed = [e["percent"] for e in rollout["events"] if e["event"] in ("started", "step")]
        assert climbed[:3] == [1.0, 5.0, 50.0]
        fired_at = climbed[-1]
        assert fired_at >= 50.0  # the large step, never the small ones
        safe = climbed[-2]
        assert rollout["percent"] == safe
        assert _flag_percent(run) == safe
        assert (
            f"alert rule 'shop_errors' fired at step {len(climbed)} ({fired_at:g} %)"
            in (rollout["reason"])
        )
        audit = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
        actions = [(a["stage"], a["action"]) for a in audit]
        assert ("result", "rollout_start") in actions
        assert ("result", "rollout_rollback") in actions
        rollback = next(a for a in audit if a["action"] == "rollout_rollback")
        assert rollback["arguments"] == {"flag": "new_shop", "percent": safe, "rule": "shop_errors"}
        time.sleep(1.5)  # a snapshot for --resume (every second)
    # kill -9 (the context's end), then the same world again
    with _run(folder, "--resume") as run:
        rollout = _rollout(run)
        assert rollout is not None
        assert (rollout["state"], rollout["percent"]) == ("rolled_back", safe)
        assert _flag_percent(run) == safe  # restored before the first tick
        assert "alert rule 'shop_errors' fired" in rollout["reason"]
        assert '"event": "rollout.restored"' in run.log()
        text = run.ctl("rollout", "status")
        assert "rolled_back" in text.stdout
