"""The client commands end to end: separate processes against a real ``supervisor run``.

A small world (the heartbeat and a system that fails every tenth tick) runs
in the background; each command is run as its own process, text and
``--json``, as an operator types it, through an emergency shutdown and a
restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from cli_harness import Running, running_supervisor

from supervisor._core._slice import TICK_SLICE, FairSlice, SchedAttr, sched_attr_calls

CONFIG = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:s.sock"

[systems]
enabled = ["heartbeat", "flaky"]

[systems.flaky]
use = "flaky:Flaky"
every_nth = 10
"""

FLAKY = '''
class Flaky:
    """Fails on every n-th tick."""

    def __init__(self, every_nth: int = 10) -> None:
        self.every_nth = every_nth
        self.ticks = 0

    def tick(self, ctx):
        self.ticks += 1
        if self.ticks % self.every_nth == 0:
            raise RuntimeError(f"flaky at {self.ticks}")
'''


@pytest.fixture(scope="module")
def world() -> Iterator[Running]:
    """One world for the module's read-only tests."""
    with running_supervisor(CONFIG, files={"flaky.py": FLAKY}) as run:
        _wait_for_errors(run)
        yield run


def _wait_for_errors(run: Running) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = run.ctl("status", "--json")
        if out.returncode == 0 and json.loads(out.stdout)["errors"].get("flaky"):
            return
        time.sleep(0.1)
    pytest.fail(f"flaky never failed:\n{run.log()}")


def _section(text: str, title: str) -> list[str]:
    """The indented lines under a heading of ``status``."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


class TestReadCommands:
    def test_status_text(self, world: Running) -> None:
        """Grouped, human: the phase first, both systems, flaky's errors counted, no raw keys."""
        out = world.ctl("status")
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert text.startswith("supervisor ")
        assert " · development · pid " in text.splitlines()[0]
        systems = _section(text, "Systems")
        assert systems[0].split() == [
            "system", "state", "health", "errors", "step", "p50", "step", "p99", "runs",
        ]  # fmt: skip
        assert {line.split()[0] for line in systems[1:]} == {"heartbeat", "flaky"}
        assert any(line.startswith("  errors       flaky ") for line in _section(text, "Problems"))
        assert "Emergency" not in text
        for raw in ("alive_detail", "next_step", "rss_bytes", "profile_reason"):
            assert raw not in text
        assert all(line == line.rstrip() for line in text.splitlines())

    def test_status_json(self, world: Running) -> None:
        """--json: the machine keys, durations in seconds."""
        out = world.ctl("status", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["phase"] == "development"
        assert data["tick_rate"] == 20.0
        assert 0 < data["budget"] < 0.05  # seconds, not milliseconds
        assert data["tick"] > 0
        assert data["lateness"]["p99"] < 1.0  # seconds

    def test_the_tick_thread_asks_for_a_short_fair_slice(self, world: Running) -> None:
        """status --json shows the slice, and the kernel has it on the process's main thread."""
        probe = FairSlice()
        probe.enter()  # on pytest's thread: does this kernel have custom slices?
        probe.leave()
        section = json.loads(world.ctl("status", "--json").stdout)["scheduler"]
        if probe.problem is not None:
            assert section == {"fair_slice_us": None, "fair_slice_problem": probe.problem}
            return
        assert section == {"fair_slice_us": round(TICK_SLICE * 1e6)}
        calls = sched_attr_calls(world.proc.pid)  # its main thread, the tick thread
        assert calls is not None
        attr = SchedAttr()
        assert calls[1](attr) == 0
        assert attr.sched_runtime == int(TICK_SLICE * 1e9)

    def test_errors(self, world: Running) -> None:
        """errors: flaky's RuntimeError grouped with a count; --json the same records."""
        out = world.ctl("errors", "--system", "flaky")
        assert out.returncode == 0, out.stderr
        assert "RuntimeError" in out.stdout
        data = json.loads(world.ctl("errors", "--system", "flaky", "--json").stdout)
        assert data["groups"][0]["system"] == "flaky"
        assert data["groups"][0]["count"] >= 1

    def test_errors_of_no_such_system(self, world: Running) -> None:
        """errors --system nosuch: "no such system", naming the ones there are; exit 1."""
        out = world.ctl("errors", "--system", "nosuch")
        assert out.returncode == 1
        assert out.stderr == (
            "supervisor: error: no such system 'nosuch' (systems: heartbeat, flaky)\n"
        )

    def test_errors_of_a_clean_system(self, world: Running) -> None:
        """A real system without errors: "no errors recorded", exit 0."""
        out = world.ctl("errors", "--system", "heartbeat")
        assert (out.returncode, out.stdout) == (0, "no errors recorded\n")

    def test_readiness_json(self, world: Running) -> None:
        """readiness --json: the checks; exit 1 here (development has no tokens)."""
        out = world.ctl("readiness", "--json")
        assert out.returncode == 1
        assert {c["name"] for c in json.loads(out.stdout)["checks"]} >= {"security"}

    def test_operator_routes_are_served(self, world: Running) -> None:
        """The core serves them now (tests/test_cli_operator_e2e.py goes through each)."""
        out = world.ctl("release", "nosuch")
        assert out.returncode == 1
        assert out.stderr.startswith("supervisor: error: no such system: 'nosuch'")


def test_emergency_restart_and_stop() -> None:
    """The emergency section shows only during the emergency; shutdown ends the run with 0."""
    with running_supervisor(CONFIG, files={"flaky.py": FLAKY}) as run:
        out = run.ctl("shutdown", "--emergency", "--reason", "disk almost full")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("shutdown: phase=emergency_shutdown")
        assert " ms" in out.stdout or " µs" in out.stdout  # trigger_to_snapshot_seconds, human

        during = run.ctl("status").stdout
        assert " · emergency_shutdown · " in during.splitlines()[0]
        emergency = _section(during, "Emergency")
        assert emergency[0].endswith("disk almost full")
        assert any(line.split()[0] == "state" and "preserved in" in line for line in emergency)
        lifecycle = [line for line in during.splitlines() if "→ emergency_shutdown" in line]
        assert len(lifecycle) == 1

        assert run.ctl("restart").returncode == 0
        after = run.ctl("status").stdout
        assert " · development · " in after.splitlines()[0]
        assert "\nEmergency\n" not in after
        assert "emergency_shutdown → development  restart" in after

        assert run.ctl("shutdown").returncode == 0
        assert run.proc.wait(15) == 0
