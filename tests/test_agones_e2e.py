"""``supervisor run`` under a stand-in Agones sidecar: order, cadence, hangs, a late sidecar.

Each test starts the real command as a subprocess with
``AGONES_SDK_HTTP_PORT`` pointing at the stand-in (``tests/agones_standin.py``,
a real HTTP server in this process) and reads what the stand-in recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from agones_standin import SdkStandIn, free_port

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"

#: A game module: a system that stalls the loop on demand, one that reads the GameServer.
GAME = """
import os
import time


class Stall:
    name = "stall"

    def tick(self, ctx):
        if os.path.exists("stall"):
            os.remove("stall")
            time.sleep(2.0)  # blocks the tick: the loop is hung for 2 s


class Seats:
    name = "seats"
    agones_gameserver = None  # the Agones hook: the GameServer's state lands here

    def tick(self, ctx):
        gs = self.agones_gameserver
        ctx.report("allocated", 1 if gs is not None and gs.allocated else 0)
"""

CONFIG = """
[supervisor]
state_dir = "var"

[systems]
enabled = ["players", "game:Stall", "game:Seats"]

[systems.players]
count = 40

[watchdog]
hang_timeout = 0.5
kill_timeout = 10.0

[api]
listen = "unix:s.sock"

[agones]
health_interval = 0.2
backoff_max = 0.5
"""


@attrs.frozen
class Run:
    folder: Path
    proc: subprocess.Popen[bytes]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``supervisor ARGS --api unix:...`` as an operator would run it."""
        return subprocess.run(
            [str(SUPERVISOR), *args, "--api", f"unix:{self.folder / 's.sock'}"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.folder,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        done = self.ctl("status", "--json")
        assert done.returncode == 0, done.stderr
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def log(self) -> list[dict[str, Any]]:
        lines = (self.folder / "run.log").read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def events(self) -> list[str]:
        return [entry.get("event", "") for entry in self.log()]


@contextlib.contextmanager
def supervisor_run(port: int, config: str = CONFIG) -> Iterator[Run]:
    """``supervisor run`` with the Agones sidecar at ``port``; stopped with SIGTERM at the end."""
    folder = Path(tempfile.mkdtemp(prefix="ag-"))
    (folder / "supervisor.toml").write_text(config)
    (folder / "game.py").write_text(GAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env |= {"PYTHONPATH": str(folder), "AGONES_SDK_HTTP_PORT": str(port)}
    with (folder / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(SUPERVISOR), "run", "--tick-rate", "20", "--log-format", "json"],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    run = Run(folder, proc)
    try:
        wait_for((folder / "s.sock").exists, "the API never listened", proc)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(
    what: Callable[[], object],
    message: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 15,
) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc is None or proc.poll() is None, f"{message}: the supervisor exited"
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_ready_health_labels_players_then_shutdown_after_sigterm() -> None:
    """Ready once, Health every 0.2 s, labels and players; SIGTERM: snapshot, then Shutdown."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port) as run:
        wait_for(lambda: sidecar.count("/health") >= 10, "no steady health pings", run.proc)
        wait_for(lambda: sidecar.counters["players"][0] > 0, "players never counted")
        wait_for(lambda: run.status().get("agones", {}).get("state") == "Ready", "not Ready")
        status = run.status()["agones"]
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(15) == 0
        events = run.events()
    assert sidecar.count("/ready") == 1
    assert sidecar.labels == {"phase": "development", "profile": status["labels"]["profile"]}
    assert status["players"] > 0  # the demo's players come and go around 40
    patches = [c.body for c in sidecar.calls if c.method == "PATCH"]
    assert all(set(body) == {"count"} and body["count"].isdigit() for body in patches)
    assert status["errors"] == 0
    cadence = gaps(sidecar.times("/health"))
    assert 0.15 < statistics.median(cadence) < 0.4, cadence
    paths = sidecar.paths()
    assert paths[-1] == "/shutdown", paths[-5:]
    assert sidecar.count("/shutdown") == 1
    # The order: the stop's snapshot is written before the game server says it is done.
    assert events.index("snapshot.written") < events.index("agones.shutdown")


def test_health_stops_while_the_loop_hangs() -> None:
    """A step blocking the loop for 2 s: no Health ping for those 2 s, then the pings resume."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port) as run:
        wait_for(lambda: sidecar.count("/health") >= 5, "no health pings", run.proc)
        (run.folder / "stall").touch()
        wait_for(lambda: not (run.folder / "stall").exists(), "the stall never began")
        before = sidecar.count("/health")
        wait_for(lambda: sidecar.count("/health") >= before + 5, "health never resumed")
    cadence = gaps(sidecar.times("/health"))
    assert max(cadence) >= 1.8, cadence  # the hang: 2 s without a ping
    assert sorted(cadence)[-2] < 1.0, cadence  # and only that one gap


def test_a_late_and_failing_sidecar_never_stops_the_tick() -> None:
    """The sidecar starts 1.5 s after us and fails its first calls: Ready comes, no tick lost."""
    port = free_port()
    with supervisor_run(port) as run:
        wait_for(lambda: run.status()["tick"] > 20, "no ticks without a sidecar", run.proc)
        time.sleep(1.5)
        early = run.status()
        assert early["agones"]["ready"] is False
        assert early["agones"]["errors"] > 0
        sidecar = SdkStandIn(port)
        sidecar.fail_next = 4
        with sidecar:
            wait_for(lambda: sidecar.count("/ready") == 1, "never Ready", run.proc)
            wait_for(lambda: sidecar.count("/health") >= 3, "no health", run.proc)
            later = run.status()
            failures = [c for c in sidecar.calls if c.status == 500]
            assert len(failures) == 4
        assert later["agones"]["ready"] is True
        assert later["dropped_ticks"] == 0


def test_allocated_reaches_systems_and_an_emergency_ends_with_shutdown() -> None:
    """Allocated: in status and seen by a system; a preserved emergency: then Shutdown."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port) as run:
        wait_for(lambda: sidecar.count("/ready") == 1, "never Ready", run.proc)
        sidecar.allocate()
        wait_for(lambda: run.status()["gauges"].get("allocated") == 1, "no system saw it")
        assert run.status()["agones"]["state"] == "Allocated"
        done = run.ctl("shutdown", "--emergency", "--reason", "agones e2e")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: sidecar.count("/shutdown") == 1, "no Shutdown after the emergency")
        assert run.proc.poll() is None  # the process stays up for an operator
        shutdown_at = sidecar.times("/shutdown")[0]
        time.sleep(0.6)
        assert not [t for t in sidecar.times("/health") if t > shutdown_at]
        events = run.events()
    assert "agones.state" in events
    assert events.index("supervisor.emergency") < events.index("agones.shutdown")
