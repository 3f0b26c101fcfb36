"""``supervisor run`` under a stand-in Agones sidecar: order, cadence, hangs, a late sidecar.

Each test starts the real command as a subprocess with
``AGONES_SDK_HTTP_PORT`` pointing at the stand-in (``tests/agones_standin.py``,
a real HTTP server in this process) and reads what the stand-in recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agones_standin import SdkStandIn, free_port
from cli_harness import Running, running_supervisor

pytestmark = pytest.mark.e2e

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


def status_of(run: Running) -> dict[str, Any]:
    """``supervisor status --json`` of ``run``."""
    done = run.ctl("status", "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def events_of(run: Running) -> list[str]:
    """The log's events, in order."""
    lines = run.log().splitlines()
    return [json.loads(line).get("event", "") for line in lines if line.startswith("{")]


@contextlib.contextmanager
def supervisor_run(
    port: int, monkeypatch: pytest.MonkeyPatch, config: str = CONFIG
) -> Iterator[Running]:
    """``supervisor run`` (tests/cli_harness.py) with the Agones sidecar at ``port``."""
    with monkeypatch.context() as env:
        env.setenv("AGONES_SDK_HTTP_PORT", str(port))
        with running_supervisor(config, files={"game.py": GAME}) as run:
            yield run


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


def test_ready_health_labels_players_then_shutdown_after_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ready once, Health every 0.2 s, labels and players; SIGTERM: snapshot, then Shutdown."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port, monkeypatch) as run:
        wait_for(lambda: sidecar.count("/health") >= 10, "no steady health pings", run.proc)
        wait_for(lambda: sidecar.counters["players"][0] > 0, "players never counted")
        wait_for(lambda: status_of(run).get("agones", {}).get("state") == "Ready", "not Ready")
        status = status_of(run)["agones"]
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(15) == 0
        events = events_of(run)
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


def test_health_stops_while_the_loop_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step blocking the loop for 2 s: no Health ping for those 2 s, then the pings resume."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port, monkeypatch) as run:
        wait_for(lambda: sidecar.count("/health") >= 5, "no health pings", run.proc)
        (run.folder / "stall").touch()
        wait_for(lambda: not (run.folder / "stall").exists(), "the stall never began")
        before = sidecar.count("/health")
        wait_for(lambda: sidecar.count("/health") >= before + 5, "health never resumed")
    cadence = gaps(sidecar.times("/health"))
    assert max(cadence) >= 1.8, cadence  # the hang: 2 s without a ping
    assert sorted(cadence)[-2] < 1.0, cadence  # and only that one gap


def test_a_late_and_failing_sidecar_never_stops_the_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar starts 1.5 s after us and fails its first calls: Ready comes, no tick lost."""
    port = free_port()
    with supervisor_run(port, monkeypatch) as run:
        wait_for(lambda: status_of(run)["tick"] > 20, "no ticks without a sidecar", run.proc)
        time.sleep(1.5)
        early = status_of(run)
        assert early["agones"]["ready"] is False
        assert early["agones"]["errors"] > 0
        sidecar = SdkStandIn(port)
        sidecar.fail_next = 4
        with sidecar:
            wait_for(lambda: sidecar.count("/ready") == 1, "never Ready", run.proc)
            wait_for(lambda: sidecar.count("/health") >= 3, "no health", run.proc)
            later = status_of(run)
            failures = [c for c in sidecar.calls if c.status == 500]
            assert len(failures) == 4
        assert later["agones"]["ready"] is True
        assert later["dropped_ticks"] == 0


def test_allocated_reaches_systems_and_an_emergency_ends_with_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Allocated: in status and seen by a system; a preserved emergency: then Shutdown."""
    with SdkStandIn() as sidecar, supervisor_run(sidecar.port, monkeypatch) as run:
        wait_for(lambda: sidecar.count("/ready") == 1, "never Ready", run.proc)
        sidecar.allocate()
        wait_for(lambda: status_of(run)["gauges"].get("allocated") == 1, "no system saw it")
        assert status_of(run)["agones"]["state"] == "Allocated"
        done = run.ctl("shutdown", "--emergency", "--reason", "agones e2e")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: sidecar.count("/shutdown") == 1, "no Shutdown after the emergency")
        assert run.proc.poll() is None  # the process stays up for an operator
        shutdown_at = sidecar.times("/shutdown")[0]
        time.sleep(0.6)
        assert not [t for t in sidecar.times("/health") if t > shutdown_at]
        events = events_of(run)
    assert "agones.state" in events
    assert events.index("supervisor.emergency") < events.index("agones.shutdown")
