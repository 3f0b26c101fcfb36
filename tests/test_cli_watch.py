"""``supervisor status --watch`` in a real terminal (tmux) against a real ``supervisor run``.

What an operator does: start the supervisor, watch it in another terminal,
see the tick move in place, press Ctrl-C and get the shell back with exit 0.
tmux gives the watch a terminal (rich's ``Live`` only redraws on one) and
lets the test read the screen twice. Each test uses its own tmux server
(``-L``), so no session of the user's is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import attrs
import pytest
from cli_harness import SUPERVISOR, Running, running_supervisor

CONFIG = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:s.sock"

[systems]
enabled = ["heartbeat"]
"""

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.fixture
def running() -> Iterator[Running]:
    """The heartbeat world at 20 Hz."""
    with running_supervisor(CONFIG) as run:
        yield run


@attrs.frozen
class Tmux:
    """One private tmux server with one session."""

    server: str

    def run(self, *args: str) -> str:
        # check=False: capture-pane races the session's end, kill-server may find none.
        out = subprocess.run(
            ["tmux", "-L", self.server, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "watch")

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.screen())
            if found:
                return found
            assert time.monotonic() < deadline, f"{pattern!r} never on screen:\n{self.screen()}"
            time.sleep(0.05)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A tmux server of this test's own, killed after it."""
    term = Tmux(f"sv-test-{os.getpid()}-{time.monotonic_ns()}")
    yield term
    term.run("kill-server")


def _tick(screen: str) -> int:
    found = re.search(r"^\s+tick\s+([\d,]+)$", screen, re.MULTILINE)
    assert found, screen
    return int(found.group(1).replace(",", ""))


def test_watch_redraws_in_place_until_ctrl_c(running: Running, tmux: Tmux) -> None:
    """The tick moves between two captures, drawn once (not scrolled); C-c exits 0."""
    command = f"{SUPERVISOR} status --watch 0.2 --api {running.api}; echo EXIT=$?; sleep 60"
    tmux.run("new-session", "-d", "-s", "watch", "-x", "120", "-y", "60", command)
    tmux.wait_for(r"Ctrl-C to quit")
    tmux.wait_for(r"heartbeat\s+running")
    first = _tick(tmux.screen())
    time.sleep(1.0)
    screen = tmux.screen()
    second = _tick(screen)
    assert second > first
    # Redrawn in place: one frame on the screen, not one per refresh.
    assert screen.count("Ctrl-C to quit") == 1
    assert screen.count("\nTick\n") == 1

    tmux.run("send-keys", "-t", "watch", "C-c")
    tmux.wait_for(r"EXIT=\d+")
    final = tmux.screen()
    assert "EXIT=0" in final
    assert "Traceback" not in final
    assert "KeyboardInterrupt" not in final


def test_watch_shows_a_supervisor_that_stopped(running: Running, tmux: Tmux) -> None:
    """The supervisor going away is shown in place, and the watch keeps going until C-c."""
    command = f"{SUPERVISOR} status --watch 0.2 --api {running.api}; echo EXIT=$?; sleep 60"
    tmux.run("new-session", "-d", "-s", "watch", "-x", "120", "-y", "60", command)
    tmux.wait_for(r"heartbeat\s+running")
    running.proc.send_signal(signal.SIGINT)
    running.proc.wait(15)
    tmux.wait_for(r"no supervisor is running at unix:\S+s\.sock")
    tmux.run("send-keys", "-t", "watch", "C-c")
    tmux.wait_for(r"EXIT=0")


def test_watch_measures_the_rate(running: Running, tmux: Tmux) -> None:
    """From the second refresh on, the rate measured between two answers is shown (~20 Hz)."""
    command = f"{SUPERVISOR} status --watch 0.5 --api {running.api}; sleep 60"
    tmux.run("new-session", "-d", "-s", "watch", "-x", "120", "-y", "60", command)
    found = tmux.wait_for(r"20 Hz set · ([\d.]+) Hz measured")
    assert 10 < float(found.group(1)) < 30
