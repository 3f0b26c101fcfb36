"""Realtime mode end to end: a real ``supervisor run`` with ``[supervisor] realtime = true``.

Checked from outside, as an operator would: the scheduling policy of each of
the process's threads (``/proc/PID/task``), what ``status --json`` reports,
errors still recorded through the deferred path, and bad realtime keys
refused with one line and exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import SUPERVISOR, Running, running_supervisor
from test_cli_e2e import CONFIG as CLI_CONFIG
from test_cli_e2e import FLAKY, _wait_for_errors

# The client tests' world (heartbeat, a system failing every tenth tick), in
# realtime mode, plus a system that starts a thread from the tick thread.
CONFIG = CLI_CONFIG.replace(
    'state_dir = "state"\n', 'state_dir = "state"\nrealtime = true\nrealtime_priority = 30\n'
).replace('enabled = ["heartbeat", "flaky"]', 'enabled = ["heartbeat", "flaky", "spawner"]') + (
    '\n[systems.spawner]\nuse = "spawner:Spawner"\n'
)

SPAWNER = '''
import threading

class Spawner:
    """Starts a helper thread on its first tick (from the tick thread)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = False

    def tick(self, ctx):
        if not self.started:
            self.started = True
            threading.Thread(target=self.release.wait, daemon=True).start()
'''


@pytest.fixture(scope="module")
def world() -> Iterator[Running]:
    """One realtime world for the module."""
    with running_supervisor(CONFIG, files={"flaky.py": FLAKY, "spawner.py": SPAWNER}) as run:
        _wait_for_errors(run)
        yield run


def _link(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:
        return None  # closed meanwhile


def _policies(pid: int) -> list[tuple[int, int]]:
    """(policy, priority) of each thread of ``pid`` (Python 3.11 names none of them)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policy = os.sched_getscheduler(int(tid)) & ~os.SCHED_RESET_ON_FORK
            out.append((policy, os.sched_getparam(int(tid)).sched_priority))
        except OSError:
            continue  # it ended meanwhile
    return sorted(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root here")
class TestRunning:
    def test_status_says_what_was_applied(self, world: Running) -> None:
        """``status --json`` has the realtime section: FIFO at 30, the watchdog at 31."""
        status = json.loads(world.ctl("status", "--json").stdout)
        rt = status["realtime"]
        assert (rt["policy"], rt["priority"], rt["watchdog_priority"]) == ("SCHED_FIFO", 30, 31)
        assert rt["memory_locked"] in ("onfault", "all")
        assert rt["problems"] == [] or not Path("/dev/cpu_dma_latency").exists()

    @pytest.mark.skipif(not Path("/dev/cpu_dma_latency").exists(), reason="no PM QoS device")
    def test_idle_cpus_are_held_awake_by_the_process(self, world: Running) -> None:
        """The process holds the PM QoS device open; the kernel enforces 0 µs meanwhile."""
        status = json.loads(world.ctl("status", "--json").stdout)
        assert status["realtime"]["max_wake_latency_us"] == 0
        fds = Path(f"/proc/{world.proc.pid}/fd")
        held = [fd for fd in fds.iterdir() if _link(fd) == "/dev/cpu_dma_latency"]
        assert len(held) == 1
        value = Path("/dev/cpu_dma_latency").read_bytes()[:4]
        assert int.from_bytes(value, sys.byteorder, signed=True) == 0

    def test_only_the_tick_and_watchdog_threads_are_realtime(self, world: Running) -> None:
        """The main thread FIFO 30, the watchdog FIFO 31; the helper a system started is not."""
        deadline = time.monotonic() + 10
        while True:
            threads = _policies(world.proc.pid)
            fifo = [p for p in threads if p[0] == os.SCHED_FIFO]
            if len(fifo) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert fifo == [(os.SCHED_FIFO, 30), (os.SCHED_FIFO, 31)]
        assert len(threads) >= 3  # the helper (started by the tick thread) among the rest
        assert all(p == (os.SCHED_OTHER, 0) for p in threads if p[0] != os.SCHED_FIFO)

    def test_errors_are_still_recorded(self, world: Running) -> None:
        """The deferred records reach ``errors``: type, message and the failing tick."""
        out = world.ctl("errors", "--json")
        assert out.returncode == 0, out.stderr
        records = json.loads(out.stdout)["records"]
        assert records
        assert records[0]["exc_type"] == "RuntimeError"
        assert records[0]["message"].startswith("flaky at ")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("realtime_priority = 99", "supervisor.realtime_priority"),
        ('cpu_affinity = "0-a"', "supervisor.cpu_affinity"),
        ('cpu_affinity = "5-1"', "supervisor.cpu_affinity"),
        ('realtime = "yes"', "supervisor.realtime"),
        ("realtime_max_wake_latency_us = -5", "supervisor.realtime_max_wake_latency_us"),
        ('realtime_max_wake_latency_us = "0"', "supervisor.realtime_max_wake_latency_us"),
    ],
)
def test_bad_realtime_keys_exit_2_with_one_line(line: str, key: str) -> None:
    """A bad key: exit 2, one line on stderr naming it, nothing started."""
    with tempfile.TemporaryDirectory(prefix="sv-") as tmp:
        folder = Path(tmp)
        (folder / "supervisor.toml").write_text(f"[supervisor]\n{line}\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        out = subprocess.run(
            [str(SUPERVISOR), "run", "--ticks", "1"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert key in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert not (folder / "var").exists()
