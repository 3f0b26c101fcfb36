"""Fleets of real ``supervisor run`` processes on one real Redis, for the e2e tests and the bench.

Each member runs a tiny world (the ``heartbeat`` system, no API) in its own
folder, with ``--exit-on-emergency`` so a fleet emergency ends it with exit
code 3 (state preserved) and ``--summary-json`` to read afterwards.
``bench/fleet.py`` imports this module too: one way to start a fleet.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from supervisor._fleet import FleetControl

SUPERVISOR = Path(sys.executable).parent / "supervisor"

MEMBER_CONFIG = """\
[supervisor]
tick_rate = {rate}

[features]
api = false

[systems]
enabled = ["heartbeat"]

[fleet]
redis = "{url}"
namespace = "{namespace}"
id = "{id}"
heartbeat = "{heartbeat}"
"""


#: How each member runs: JSON logs, a summary to read afterwards.
RUN_FLAGS = ("--log-format", "json", "--summary-json", "summary.json")


@attrs.define
class Member:
    """One ``supervisor run`` of the fleet."""

    id: str
    folder: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.folder / "run.log").read_text(encoding="utf-8", errors="replace")

    def summary(self) -> dict[str, Any]:
        data = json.loads((self.folder / "summary.json").read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def audit_lines(self) -> list[dict[str, Any]]:
        path = self.folder / "var" / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def start_member(
    folder: Path,
    member_id: str,
    *,
    url: str,
    namespace: str,
    heartbeat: str = "200ms",
    rate: float = 30.0,
) -> Member:
    """Start one member in ``folder/member_id`` (its config, state and log live there)."""
    home = folder / member_id
    home.mkdir(parents=True)
    (home / "supervisor.toml").write_text(
        MEMBER_CONFIG.format(
            rate=rate, url=url, namespace=namespace, id=member_id, heartbeat=heartbeat
        ),
        encoding="utf-8",
    )
    with (home / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(SUPERVISOR), "run", "--exit-on-emergency", *RUN_FLAGS],
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Member(member_id, home, proc)


def members_now(url: str, namespace: str) -> dict[str, Any]:
    """``FleetControl.members()`` from synchronous code."""

    async def read() -> dict[str, Any]:
        async with FleetControl(url, namespace) as control:
            return await control.members()

    return trio.run(read)


#: Seconds a fleet may take to register: 20 processes starting at once on a
#: busy 2-core machine (load 30 seen) need minutes of CPU between them.
REGISTER_TIMEOUT = 240.0


def wait_registered(
    url: str,
    namespace: str,
    ids: Sequence[str],
    timeout: float = REGISTER_TIMEOUT,
    members: Sequence[Member] = (),
) -> None:
    """Wait until every one of ``ids`` is a live member (a member that exits fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        live = {m["id"] for m in members_now(url, namespace)["members"]}
        if set(ids) <= live:
            return
        for m in members:
            if m.proc.poll() is not None:
                raise AssertionError(f"{m.id} exited {m.proc.returncode}:\n{m.log()[-3000:]}")
        if time.monotonic() > deadline:
            missing = sorted(set(ids) - live)
            first = next((m for m in members if m.id in missing), None)
            raise AssertionError(
                f"not registered after {timeout} s: {missing}"
                + ("" if first is None else f"\n{first.id}'s log:\n{first.log()[-3000:]}")
            )
        time.sleep(0.2)


def stop(members: Sequence[Member]) -> None:
    """SIGINT each member still running, then wait (SIGKILL after 15 s)."""
    for m in members:
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGINT)
    for m in members:
        try:
            m.proc.wait(15)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(5)


@contextlib.contextmanager
def fleet_of(
    folder: Path, n: int, *, url: str, namespace: str, heartbeat: str = "200ms"
) -> Iterator[list[Member]]:
    """``n`` members ``m00``..., all registered; stopped at exit whatever happens."""
    members: list[Member] = []
    try:
        members.extend(
            start_member(folder, f"m{i:02d}", url=url, namespace=namespace, heartbeat=heartbeat)
            for i in range(n)
        )
        wait_registered(url, namespace, [m.id for m in members], members=members)
        yield members
    finally:
        stop(members)


def fleet_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``supervisor fleet ARGS`` as an operator runs it."""
    return subprocess.run(
        [str(SUPERVISOR), "fleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )
