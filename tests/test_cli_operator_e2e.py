"""quarantine, release and snapshot end to end: separate processes against ``supervisor run``.

And the status keys the core now sends (version, pid, uptime, config file,
listen address, measured tick rate, 10 s / 60 s windows), read by ``status``
as an operator sees them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cli_harness import Running, running_supervisor

pytestmark = pytest.mark.e2e

CONFIG = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:s.sock"

[systems]
enabled = ["players", "economy"]

[systems.players]
count = 20
"""


def _status(run: Running) -> dict[str, object]:
    out = run.ctl("status", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def _economy_state(run: Running) -> str:
    systems = _status(run)["systems"]
    assert isinstance(systems, list)
    return str(next(s["state"] for s in systems if s["name"] == "economy"))


def test_quarantine_release_snapshot() -> None:
    with running_supervisor(CONFIG) as run:
        deadline = time.monotonic() + 20
        while _status(run)["tick"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        held = run.ctl("quarantine", "economy", "--reason", "x")
        assert held.returncode == 0, held.stderr
        assert "quarantined (by operator)" in held.stdout
        assert _economy_state(run) == "quarantined (by operator)"
        text = run.ctl("status").stdout
        assert "economy  quarantined (by operator)" in text
        assert "quarantine by " in text
        assert ": x" in text

        again = run.ctl("quarantine", "economy")
        assert again.returncode != 0
        assert "already quarantined" in again.stderr

        nosuch = run.ctl("quarantine", "nosuch")
        assert nosuch.returncode != 0
        assert "no such system: 'nosuch'" in nosuch.stderr
        assert len(nosuch.stderr.strip().splitlines()) == 1

        back = run.ctl("release", "economy")
        assert back.returncode == 0, back.stderr
        assert _economy_state(run) == "running"

        snap = run.ctl("snapshot", "--reason", "before the season reset")
        assert snap.returncode == 0, snap.stderr
        assert snap.stdout.startswith("snapshot: ")
        path = Path(snap.stdout.split()[1])
        assert path.is_file()
        assert path.is_relative_to(run.folder / "state" / "snapshots")

        audit = (run.folder / "var" / "audit.jsonl").read_text().splitlines()
        done = [(x["action"], x["result"]["status"]) for x in map(json.loads, audit) if x["result"]]
        assert ("quarantine", 200) in done
        assert ("quarantine", 409) in done
        assert ("quarantine", 404) in done
        assert ("release", 200) in done
        assert ("snapshot", 200) in done


def test_status_who_and_where() -> None:
    with running_supervisor(CONFIG) as run:
        time.sleep(1.5)
        data = _status(run)
        assert data["pid"] == run.proc.pid
        assert data["config_file"] == str(run.folder / "supervisor.toml")
        assert data["listen"] == f"unix:{run.folder / 's.sock'}"
        assert isinstance(data["version"], str)
        uptime = data["uptime_seconds"]
        assert isinstance(uptime, float)
        assert 0.5 < uptime < 60
        rate = data["measured_tick_rate"]
        assert isinstance(rate, float)
        assert 10 < rate < 25
        windows = data["windows"]
        assert isinstance(windows, dict)
        assert set(windows) == {"10s", "60s"}
        text = run.ctl("status").stdout
        assert f"pid {run.proc.pid}" in text
        assert "measured" in text
        assert "lateness 10s" in text
        assert os.fspath(run.folder / "supervisor.toml") in text
