"""``supervisor run`` members and ``supervisor fleet`` commands on a real Redis (issue 14).

Real processes: 20 members get one broadcast; a member killed with SIGKILL
expires from the registry; a member started after ``fleet emergency`` reads
the durable flag; every command-line input that can be wrong is one line.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Running, running_supervisor
from fleet_harness import (
    fleet_cli,
    fleet_of,
    members_now,
    start_member,
    stop,
    wait_registered,
)
from redis_server import RedisServer, redis_server

pytestmark = pytest.mark.e2e

_names = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return f"e{next(_names)}"


def _wait_exit(members: list, timeout: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    for m in members:
        m.proc.wait(max(0.1, deadline - time.monotonic()))


def test_an_emergency_reaches_twenty_supervisors_and_each_acks(
    redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """``fleet emergency``: all 20 enter EMERGENCY_SHUTDOWN, exit 3, audit it, ack in the stream."""
    with fleet_of(tmp_path, 20, url=redis.url, namespace=namespace) as members:
        status = fleet_cli("status", "--redis", redis.url, "--namespace", namespace, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "20 live" in status.stdout
        sent = fleet_cli(
            "emergency", "--redis", redis.url, "--namespace", namespace,
            "--reason", "economy exploit", cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "broadcast to 20 subscribed member(s)" in sent.stdout
        _wait_exit(members, 30)
        for m in members:
            assert m.proc.returncode == 3, m.log()
            assert m.summary()["emergency"] is True
            (line,) = [a for a in m.audit_lines() if a["action"] == "fleet_emergency"]
            assert line["result"]["status"] == 200
            assert line["arguments"]["reason"] == "economy exploit"
            assert line["caller"].startswith("fleet:cli:")
    audit = fleet_cli(
        "audit", "--json", "--redis", redis.url, "--namespace", namespace, cwd=tmp_path
    )
    entries = json.loads(audit.stdout)
    acks = [e for e in entries if e["kind"] == "ack"]
    assert {e["member"] for e in acks} == {m.id for m in members}
    command = next(e for e in entries if e["kind"] == "command")
    # Every member entered the emergency after the command and within a few seconds
    # of it on this busy machine (bench/fleet.py measures the real figures).
    assert all(0 <= e["entered"] - command["time"] < 5 for e in acks)


def test_a_member_killed_with_sigkill_expires_and_is_listed_gone(
    redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """No heartbeat, no record: after heartbeat x missed it is gone, not live."""
    with fleet_of(tmp_path, 2, url=redis.url, namespace=namespace) as members:
        victim = members[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(5)
        deadline = time.monotonic() + 10
        while True:
            listed = members_now(redis.url, namespace)
            if victim.id in {g["id"] for g in listed["gone"]}:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.1)
        assert [m["id"] for m in listed["members"]] == [members[1].id]
        out = fleet_cli(
            "status", "--json", "--redis", redis.url, "--namespace", namespace, cwd=tmp_path
        )
        assert json.loads(out.stdout)["gone"][0]["id"] == victim.id


def test_a_late_starter_reads_the_durable_flag_until_it_is_cleared(
    redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """An emergency issued with no member up stops the next one to start, until ``clear``."""
    args = ("--redis", redis.url, "--namespace", namespace)
    sent = fleet_cli("emergency", *args, "--reason", "hold everything", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert "broadcast to 0" in sent.stdout
    late = start_member(tmp_path, "late", url=redis.url, namespace=namespace)
    try:
        assert late.proc.wait(30) == 3, late.log()
        assert "hold everything" in json.dumps(late.audit_lines())
    finally:
        stop([late])
    cleared = fleet_cli("clear", *args, "--reason", "all clear", cwd=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    after = start_member(tmp_path, "after", url=redis.url, namespace=namespace)
    try:
        wait_registered(redis.url, namespace, ["after"])
        time.sleep(1.0)  # several heartbeats, each reading the (now absent) flag
        assert after.proc.poll() is None, after.log()
        (record,) = members_now(redis.url, namespace)["members"]
        assert record["phase"] == "development"
    finally:
        stop([after])
    assert after.proc.returncode == 0, after.log()


#: Member A of the member-list test: the API on a Unix socket, the fleet's Redis.
MEMBER_WITH_API = """\
[api]
listen = "unix:s.sock"

[systems]
enabled = ["heartbeat"]

[fleet]
redis = "{url}"
namespace = "{namespace}"
id = "a"
heartbeat = "200ms"
"""


def _fleet_section(run: Running) -> dict[str, Any]:
    """``status.fleet`` as ``supervisor status --json`` gives it (that is ``/v1/status``)."""
    out = run.ctl("status", "--json")
    assert out.returncode == 0, out.stderr
    section: dict[str, Any] = json.loads(out.stdout)["fleet"]
    return section


def _listed(run: Running, ids: list[str], timeout: float = 30) -> dict[str, Any]:
    """A's fleet section once its member list is exactly ``ids``."""
    deadline = time.monotonic() + timeout
    while True:
        section = _fleet_section(run)
        if [m["id"] for m in section["members"]] == ids:
            return section
        assert time.monotonic() < deadline, (section, run.log()[-3000:])
        time.sleep(0.2)


def test_a_member_lists_the_other_members_in_its_status(
    redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Member A's ``/v1/status`` lists member B with B's figures (those ``fleet status``
    shows); ``supervisor status`` shows the count, not the rows; B stopped, A drops it."""
    b = start_member(tmp_path, "b", url=redis.url, namespace=namespace, rate=25.0)
    try:
        config = MEMBER_WITH_API.format(url=redis.url, namespace=namespace)
        with running_supervisor(config, tick_rate=20) as a:
            section = _listed(a, ["a", "b"])
            assert section["members_total"] == 2
            rows = {m["id"]: m for m in section["members"]}
            assert (rows["a"]["tick_rate"], rows["b"]["tick_rate"]) == (20.0, 25.0)
            assert rows["b"]["phase"] == "development"
            assert rows["b"]["problem"] is None
            assert rows["b"]["errors"] == 0
            assert 0.0 <= rows["b"]["age"] < 5.0
            fleet_line = [
                line for line in a.ctl("status").stdout.splitlines() if "members_total" in line
            ]
            assert len(fleet_line) == 1, a.ctl("status").stdout
            assert "fleet" in fleet_line[0]
            assert "state connected · members_total 2" in fleet_line[0]
            stop([b])
            section = _listed(a, ["a"])
            assert section["members_total"] == 1
    finally:
        stop([b])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status", "--redis", "http://x"], "--redis: expected a redis://"),
        (["status", "--redis", "redis://h:99999/0"], "--redis: not a valid URL"),
        (["status", "--redis", "redis://h/0", "--namespace", "a b"], "--namespace"),
        (["status"], "no fleet Redis"),
        (["emergency", "--redis", "redis://h/0"], "Missing option '--reason'"),
        (["emergency", "--redis", "redis://h/0", "--reason", "  "], "needs a reason"),
        (["emergency", "--redis", "redis://h/0", "--reason", "x" * 501], "at most 500"),
        (["phase", "emergency_shutdown", "--reason", "r"], "PHASE"),
        (["audit", "--redis", "redis://h/0", "--count", "0"], "--count"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    """Nothing is sent: the usage error names the option."""
    out = fleet_cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert expected in out.stderr


def test_an_unreachable_redis_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A Redis that is not there: one line naming it (password masked), exit 1."""
    out = fleet_cli("status", "--redis", "redis://:secret@127.0.0.1:1/0", cwd=tmp_path)
    assert out.returncode == 1, out
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "redis://:***@127.0.0.1:1/0" in out.stderr
    assert "secret" not in out.stderr
