"""Failover drills: real processes, Redis and PostgreSQL (for tests and ``bench/failover.py``).

A drill: member A runs the demo world (money in PostgreSQL, snapshots in a
shared folder, a fleet lease in Redis); standbys wait; A is killed with
SIGKILL; one standby takes the world over. The time of the failover is
measured from the moment just before ``kill -9`` to the wall time of the
standby's first tick, which the standby logs itself (``failover.takeover``,
``first_tick``): one machine, one clock.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_durability import CONFIG

SUPERVISOR = Path(sys.executable).parent / "supervisor"
_runs = itertools.count()

FLEET = """
[snapshots]
store = "{shared}"
world = "{world}"

[fleet]
redis = "{redis}"
namespace = "{namespace}"
id = "{id}"
heartbeat = "{heartbeat}"
missed = {missed}
standby = {standby}
"""


def write_config(
    folder: Path,
    *,
    pg_url: str,
    redis_url: str,
    namespace: str,
    member: str,
    shared: Path | str,  # a folder, or a redis:// URL
    world: str,
    standby: bool = False,
    heartbeat: str = "250ms",
    missed: int = 3,
    rate: int = 100,
) -> Path:
    """``folder/world.toml``: the demo world on PostgreSQL, a shared store, a fleet member."""
    folder.mkdir(parents=True, exist_ok=True)
    text = CONFIG.format(rate=rate, seed=7, datastore=f'url = "{pg_url}"\n')
    text += FLEET.format(
        shared=shared,
        world=world,
        redis=redis_url,
        namespace=namespace,
        id=member,
        heartbeat=heartbeat,
        missed=missed,
        standby="true" if standby else "false",
    )
    config = folder / "world.toml"
    config.write_text(text)
    return config


def start(folder: Path, config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``supervisor run`` of ``config`` with its state in ``folder/state``, logging to a file."""
    cmd = [str(SUPERVISOR), "run", "--config", str(config), "--state-dir", str(folder / "state")]
    with (folder / f"run-{next(_runs):03d}.log").open("wb") as out:
        return subprocess.Popen(
            [*cmd, *args], stdout=out, stderr=out, cwd=folder, stdin=subprocess.DEVNULL
        )


def logs(folder: Path) -> str:
    """Every run log of ``folder``, oldest first."""
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("run-*.log")))


def events(folder: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``folder``'s runs whose event is ``name``."""
    found = []
    for line in logs(folder).splitlines():
        if f'"{name}"' in line:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("event") == name:
                found.append(data)
    return found


def wait_for(
    predicate: Callable[[], bool],
    procs: list[subprocess.Popen[bytes]],
    timeout: float = 60.0,
    what: str = "",
) -> None:
    """Poll ``predicate`` until true; fail at once if one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            assert p.poll() is None, f"{what}: pid {p.pid} exited {p.returncode}"
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.02)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill whatever is still running (by PID) and reap it."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(30)


def kill_and_time(proc: subprocess.Popen[bytes]) -> float:
    """``kill -9`` ``proc``; the wall time just before the signal."""
    when = time.time()
    os.kill(proc.pid, 9)
    proc.wait(10)
    return when
