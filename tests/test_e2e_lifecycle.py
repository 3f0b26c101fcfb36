"""End-to-end lifecycle: emergency, restart, signals, crashes, resume, the phase gate, tokens.

Each test writes its own config into ``tmp_path`` (state folder, API socket
and audit log all inside it, by absolute paths), starts ``supervisor run`` of
this virtualenv as a real process with the plugin package of
``tests/plugin_pkg`` on ``PYTHONPATH`` (pip-installed by the session fixture
``plugin_path`` of ``test_e2e_run``, reused here), and drives it from outside the
way an operator would: the ``status``/``shutdown``/``restart``/``phase``/
``readiness``/``errors`` commands, raw HTTP over the Unix socket, signals and
``kill -9``. What it left behind is then read back from disk: snapshots with
:class:`supervisor._core._snapshot.SnapshotStore`, the audit log as JSON lines.

The ``counter`` system counts its ticks and has ``snapshot``/``restore``, so
its count equals the tick number on any timeline that was resumed or
restarted correctly: that is how these tests see that state and tick count
carried on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import random
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import test_e2e_run
from test_e2e_run import (
    RUN_TIMEOUT,
    SUPERVISOR,
    Cli,
    Result,
    Running,
    assert_contract_summary,
    stopped_counts,
)

from supervisor._core._snapshot import SnapshotStore
from supervisor._core._snapshot_format import Snapshot

pytestmark = pytest.mark.e2e

#: How the audit log names the socket's owner (identified by SO_PEERCRED).
OWNER = f"uid:{os.getuid()}({pwd.getpwuid(os.getuid()).pw_name})"

#: The session fixture that pip-installs the plugin package, used here under
#: its own name (pytest finds fixtures among a module's attributes).
plugin_path = test_e2e_run.plugin_path

#: A system of the test's own (an import string in ``[systems]``, not part of
#: the plugin package): its async ``stop`` takes ``delay`` seconds, so a stop
#: can be caught while it is still running.
SLOW_STOP_MODULE = '''\
"""A system whose graceful stop is slow (an async sleep)."""

import trio


class SlowStop:
    name = "slowstop"

    def __init__(self, delay=30.0):
        self.delay = float(delay)

    def tick(self, ctx):
        pass

    async def stop(self, ctx):
        ctx.log.info("slowstop.stopping", delay=self.delay)
        await trio.sleep(self.delay)
        ctx.log.info("slowstop.stopped")
'''

#: ``[systems]`` for the usual world: a counter (snapshot/restore) and a
#: dependant that fails any tick on which the counter did not tick first.
COUNTER_WORLD = (
    '[systems]\nenabled = ["counter", "needs_counter"]\n[systems.counter]\nlog_every = 10\n'
)


def _toml(value: object) -> str:
    """``value`` as a TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(str(value))


def counter_count(snap: Snapshot) -> int:
    """The ``counter`` system's count stored in ``snap``."""
    state = msgpack.unpackb(snap.systems["counter"], raw=False)
    assert isinstance(state, dict), state
    count = state["count"]
    assert isinstance(count, int), state
    return count


def snapshot_files(folder: Path) -> list[Path]:
    """The ``snapshot-<tick>.msgpack`` files in ``folder``, lowest tick first."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.name.startswith("snapshot-")]
    return sorted(files, key=lambda p: int(p.name.removeprefix("snapshot-").split(".")[0]))


def events_named(result: Result, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``result`` whose event is ``event``, in order."""
    return [e for e in result.events() if e.get("event") == event]


class LifeCli(Cli):
    """:class:`Cli` with an absolute socket, state folder and audit log, and the control commands.

    Every ``run`` (foreground or background) starts without a summary file,
    so a run that wrote none (killed) is never read as the previous one's.
    """

    def __init__(self, tmp_path: Path, plugin_path: Path) -> None:
        super().__init__(tmp_path, plugin_path)
        self.socket = tmp_path / "s.sock"
        self.api = f"unix:{self.socket}"
        self.listen = self.api
        self.tcp_base: str | None = None
        self.state_dir = tmp_path / "state"
        self.snapshot_dir = self.state_dir / "snapshots"
        self.audit_path = tmp_path / "audit.jsonl"
        self.modules = tmp_path / "modules"
        self.modules.mkdir()
        (self.modules / "e2e_slow_stop.py").write_text(SLOW_STOP_MODULE, encoding="utf-8")
        self.env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), str(self.modules)])

    def write_config(
        self,
        body: str,
        *,
        supervisor: Sequence[str] = (),
        api: Sequence[str] = (),
        state_dir: Path | None = None,
    ) -> Path:
        """Write the config: ``[supervisor]`` and ``[api]`` (plus extra lines), then ``body``."""
        lines = [
            "[supervisor]",
            f"state_dir = {_toml(state_dir or self.state_dir)}",
            *supervisor,
            "",
            "[api]",
            f"listen = {_toml(self.listen)}",
            f"audit_log = {_toml(self.audit_path)}",
            *api,
            "",
            body,
        ]
        self.config_path.write_text("\n".join(lines), encoding="utf-8")
        return self.config_path

    def use_tcp(self) -> None:
        """Serve the API on a free loopback TCP port: tokens are then always required."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.listen = f"127.0.0.1:{port}"
        self.api = self.tcp_base = f"http://127.0.0.1:{port}"

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> Result:
        self.summary_path.unlink(missing_ok=True)
        return super().run(*args, timeout=timeout)

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Running]:
        self.summary_path.unlink(missing_ok=True)
        with super().start(*args) as running:
            yield running

    def ctl(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``supervisor ARGS --api unix:...``, with ``SUPERVISOR_TOKEN`` when given."""
        env = dict(self.env)
        if token is not None:
            env["SUPERVISOR_TOKEN"] = token
        return subprocess.run(
            [str(SUPERVISOR), *args, "--api", self.api],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def status(self, token: str | None = None) -> dict[str, Any]:
        """``supervisor status --json``, which must succeed."""
        out = self.ctl("status", "--json", token=token)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert isinstance(data, dict)
        return data

    def http(self, token: str | None = None) -> httpx.Client:
        """A raw HTTP client on the API socket (with a bearer token when given)."""
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        if self.tcp_base is not None:
            return httpx.Client(base_url=self.tcp_base, headers=headers, timeout=10.0)
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://supervisor",
            headers=headers,
            timeout=10.0,
        )

    def wait_ready(self, running: Running, timeout: float = 15.0) -> None:
        """Wait until the API listens and ``/readyz`` says 200 (the systems are ticking)."""
        running.wait_for_event("api.listening", timeout=timeout)
        deadline = time.monotonic() + timeout
        with self.http() as http:
            while time.monotonic() < deadline:
                if http.get("/readyz").status_code == 200:
                    return
                if running.proc.poll() is not None:
                    break
                time.sleep(0.02)
        pytest.fail(f"never ready; stderr:\n{running.stderr_path.read_text(encoding='utf-8')}")

    def wait_tick(self, beyond: int, timeout: float = 10.0) -> int:
        """Wait until the tick in ``/v1/status`` (development: no token) passes ``beyond``."""
        deadline = time.monotonic() + timeout
        tick = -1
        with self.http() as http:
            while time.monotonic() < deadline:
                tick = int(http.get("/v1/status").json()["tick"])
                if tick > beyond:
                    return tick
                time.sleep(0.02)
        pytest.fail(f"the tick stayed at {tick}, never passed {beyond}")

    def store(self) -> SnapshotStore:
        """The snapshot store of the state folder, for reading."""
        return SnapshotStore(self.snapshot_dir)

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's entries, each line one JSON object."""
        text = self.audit_path.read_text(encoding="utf-8")
        entries = [json.loads(line) for line in text.splitlines()]
        assert all(isinstance(e, dict) for e in entries), text
        return entries


@pytest.fixture
def cli(tmp_path: Path, plugin_path: Path) -> LifeCli:
    """A ``supervisor`` runner for this test, with the demo plugins installed."""
    return LifeCli(tmp_path, plugin_path)


def wait_until(what: str, check: Callable[[], bool], running: Running, timeout: float) -> None:
    """Poll ``check`` until it holds; fail (with stderr) after ``timeout`` or if the run ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if running.proc.poll() is not None:
            break
        time.sleep(0.02)
    text = running.stderr_path.read_text(encoding="utf-8")
    pytest.fail(f"timed out waiting for {what} (exit code {running.proc.poll()}); stderr:\n{text}")


def results(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit lines that say what came of a request, in order.

    ``result`` for a known caller, ``refused`` for an anonymous one (counted per minute).
    """
    return [e for e in entries if e.get("stage") in ("result", "refused")]


def assert_audited(
    entries: list[dict[str, Any]], expected: list[tuple[str, str, int]], *secrets_: str
) -> None:
    """The audit's result lines are ``expected`` as (caller, action, status), each complete.

    Every entry has a time, the caller, the action, its arguments and the
    result; none holds any of ``secrets_``. Fail closed: an action an
    operator was allowed to attempt has its ``attempt`` line before its result.
    """
    done = results(entries)
    assert [(e["caller"], e["action"], e["result"]["status"]) for e in done] == expected
    attempts = [e for e in entries if e.get("stage") == "attempt"]
    allowed = [e for e in done if e["result"]["status"] not in (401, 403)]
    key = ("caller", "action", "arguments")
    assert [[e[k] for k in key] for e in attempts] == [[e[k] for k in key] for e in allowed]
    for entry in done:
        assert {"time", "caller", "role", "action", "arguments", "result"} <= set(entry), entry
        assert isinstance(entry["result"]["detail"], str), entry
        assert entry["result"]["detail"], entry
        for secret in secrets_:
            assert secret not in json.dumps(entry), entry


# ---------------------------------------------------------------- 1. emergency, restart


class TestEmergencyAndRestart:
    """An operator's emergency shutdown, the probes and status during it, and restart."""

    # One scenario on one running process: its steps depend on each other's state.
    def test_emergency_then_restart_over_the_cli(self, cli: LifeCli) -> None:  # noqa: PLR0915
        """Snapshot on disk, 503/200 probes, status with the next step, restart continues state."""
        # snapshot_interval = 0: the only snapshots are the emergency's and the stop's.
        cli.write_config(COUNTER_WORLD, supervisor=["snapshot_interval = 0"])
        uid = OWNER
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            cli.wait_ready(running)
            cli.wait_tick(beyond=10)

            out = cli.ctl("shutdown", "--emergency", "--reason", "drill: disk on fire")
            assert out.returncode == 0, out.stderr
            assert "emergency_shutdown" in out.stdout

            # The snapshot is durable by the time the command returns.
            files = snapshot_files(cli.snapshot_dir)
            assert len(files) == 1, files
            snap = cli.store().read(files[0])
            assert files[0].name == f"snapshot-{snap.tick}.msgpack"
            assert snap.tick > 10
            assert snap.phase == "emergency_shutdown"
            assert snap.reason.startswith("emergency")
            assert "drill: disk on fire" in snap.reason
            assert counter_count(snap) == snap.tick

            with cli.http() as http:
                ready = http.get("/readyz")
                assert ready.status_code == 503
                reasons = ready.json()["reasons"]
                # Probes answer anyone: fixed words, never the operator's free text.
                assert "emergency_shutdown" in reasons, reasons
                assert "drill" not in json.dumps(ready.json()), reasons
                health = http.get("/healthz")
                assert health.status_code == 200
                assert health.json()["alive"] is True

            status = cli.status()
            assert status["phase"] == "emergency_shutdown"
            assert "supervisor restart" in status["next_step"]
            assert str(files[0]) in status["next_step"]
            assert status["tick"] == snap.tick
            assert status["emergency"]["snapshot"] == str(files[0])
            assert status["ready"] is False
            # Ticking has stopped.
            time.sleep(0.2)
            assert cli.status()["tick"] == snap.tick

            out = cli.ctl("restart")
            assert out.returncode == 0, out.stderr
            status = cli.status()
            assert status["phase"] == "development"
            assert status["tick"] >= snap.tick
            assert "restart" not in status["next_step"]
            cli.wait_tick(beyond=snap.tick + 20)
            with cli.http() as http:
                assert http.get("/readyz").status_code == 200

            out = cli.ctl("shutdown", "--reason", "drill over")
            assert out.returncode == 0, out.stderr
            result = running.finish(timeout=15)

        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["phase"] == "development"
        assert "drill over" in summary["exit_reason"]
        assert summary["errors"] == {}
        assert summary["ticks"] > snap.tick + 20
        # The restart restored the counter from the emergency snapshot and the
        # tick count went on from there: the count still equals the tick.
        restarted = events_named(result, "supervisor.restarted")
        assert [(e["from_snapshot"], e["tick"]) for e in restarted] == [(snap.tick, snap.tick)]
        counts = [(e["count"], e["tick"]) for e in events_named(result, "counter.stopped")]
        assert counts == [(snap.tick, snap.tick), (summary["ticks"], summary["ticks"])]
        final, problems = cli.store().latest()
        assert problems == []
        assert final is not None
        assert final.tick == summary["ticks"]
        assert final.reason.startswith("stop")
        assert counter_count(final) == final.tick

        assert_audited(
            cli.audit(),
            [(uid, "shutdown", 200), (uid, "restart", 200), (uid, "shutdown", 200)],
        )
        first, second, third = results(cli.audit())
        assert first["arguments"] == {"emergency": True, "reason": "drill: disk on fire"}
        assert second["arguments"] == {}
        assert third["arguments"] == {"emergency": False, "reason": "drill over"}


# ------------------------------------------------------------- 2. --exit-on-emergency


class TestExitOnEmergency:
    """``run --exit-on-emergency``: 3 with the state preserved, 4 without."""

    BOMB_WORLD = (
        '[systems]\nenabled = ["critical_bomb", "counter"]\n'
        "[systems.critical_bomb]\nfrom_tick = 5\n"
    )

    def test_critical_failure_exits_3_with_a_snapshot(self, cli: LifeCli) -> None:
        """The emergency's snapshot is on disk, at the tick the run ended on."""
        cli.write_config(self.BOMB_WORLD)
        result = cli.run("run", "--tick-rate", "100", "--exit-on-emergency", "--log-format", "json")
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["phase"] == "emergency_shutdown"
        assert summary["exit_reason"].startswith("emergency")
        snap, problems = cli.store().latest()
        assert problems == []
        assert snap is not None
        assert (cli.snapshot_dir / f"snapshot-{snap.tick}.msgpack").is_file()
        assert snap.tick == summary["ticks"]
        assert snap.phase == "emergency_shutdown"
        assert snap.reason.startswith("emergency")
        assert counter_count(snap) == snap.tick
        emergencies = events_named(result, "supervisor.emergency")
        assert [e["snapshot"] for e in emergencies] == [
            str(cli.snapshot_dir / f"snapshot-{snap.tick}.msgpack")
        ]

    def test_unwritable_state_dir_exits_4(self, cli: LifeCli) -> None:
        """``state_dir`` is a regular file: no snapshot can be written, so exit 4."""
        blocker = cli.tmp / "not-a-folder"
        blocker.write_text("a file where the state folder should be\n", encoding="utf-8")
        cli.write_config(self.BOMB_WORLD, state_dir=blocker)
        result = cli.run("run", "--tick-rate", "100", "--exit-on-emergency", "--log-format", "json")
        assert result.returncode == 4, result.stderr
        assert "Traceback" not in result.stderr
        summary = result.require_summary()
        assert summary["phase"] == "emergency_shutdown"
        assert blocker.is_file()
        failed = events_named(result, "snapshot.failed")
        assert len(failed) == 1, result.stderr
        assert str(blocker) in failed[0]["error"]
        assert [e["snapshot"] for e in events_named(result, "supervisor.emergency")] == [None]


# ---------------------------------------------------------------------- 3. signals


class TestSignalStop:
    """SIGTERM stops gracefully with a final snapshot; a second signal forces the stop."""

    def test_sigterm_writes_a_final_snapshot(self, cli: LifeCli) -> None:
        """Exit 0; the newest snapshot is the stop's, at the last tick, with the counter's state."""
        cli.write_config(COUNTER_WORLD, supervisor=["snapshot_interval = 0"])
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            running.wait_for_event("counter.progress")
            running.proc.send_signal(signal.SIGTERM)
            result = running.finish(timeout=10)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert "SIGTERM" in summary["exit_reason"]
        files = snapshot_files(cli.snapshot_dir)
        assert [f.name for f in files] == [f"snapshot-{summary['ticks']}.msgpack"]
        snap = cli.store().read(files[0])
        assert snap.reason.startswith("stop")
        assert "SIGTERM" in snap.reason
        assert snap.phase == "development"
        assert counter_count(snap) == summary["ticks"]
        assert stopped_counts(result) == {"counter": summary["ticks"]}

    def test_second_signal_forces_a_slow_stop(self, cli: LifeCli) -> None:
        """A stop hook that would take 30 s is cut short by the second SIGTERM.

        No plugin system stops slowly, so the test brings its own (an import
        string). The hang watchdog is pushed out of the way: it interrupts a
        slow *async* hook in the middle of trio (see
        ``test_slow_async_stop_within_its_deadline_survives_the_watchdog``).
        """
        cli.write_config(
            '[systems]\nenabled = ["counter", "slowstop"]\n'
            '[systems.slowstop]\nuse = "e2e_slow_stop:SlowStop"\ndelay = 30.0\n'
            "[watchdog]\nhang_timeout = 60.0\nkill_timeout = 120.0\n",
            supervisor=["snapshot_interval = 0", "stop_timeout = 60.0"],
        )
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            cli.wait_ready(running)
            running.proc.send_signal(signal.SIGTERM)
            running.wait_for_event("slowstop.stopping")
            time.sleep(0.2)
            assert running.proc.poll() is None, "the first signal must not force the stop"
            sent = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            result = running.finish(timeout=15)
        assert time.monotonic() - sent < 5.0
        assert "Traceback" not in result.stderr
        assert result.returncode == 0, result.stderr
        assert events_named(result, "supervisor.force_stop"), result.stderr
        assert not events_named(result, "slowstop.stopped")
        summary = result.require_summary()
        assert "forced" in summary["exit_reason"]

    def test_slow_async_stop_within_its_deadline_survives_the_watchdog(self, cli: LifeCli) -> None:
        """BUG: an async hook awaiting past ``kill_timeout`` crashes the supervisor.

        Defaults: ``stop_timeout`` 2.0 s, watchdog ``kill_timeout`` 1.0 s. An
        async ``stop`` of 1.5 s is within its deadline, so SIGTERM must end
        the run with exit 0 and the stop's snapshot. Instead the watchdog sees
        the slot as "current" for the whole await and, at 1 s, injects
        ``StepInterrupted`` into the loop thread, where it lands in trio's
        scheduler (``epoll.poll``): a traceback, exit 1, no summary, no
        snapshot.
        """
        cli.write_config(
            '[systems]\nenabled = ["counter", "slowstop"]\n'
            '[systems.slowstop]\nuse = "e2e_slow_stop:SlowStop"\ndelay = 1.5\n',
            supervisor=["snapshot_interval = 0"],
        )
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            cli.wait_ready(running)
            running.proc.send_signal(signal.SIGTERM)
            result = running.finish(timeout=15)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr
        assert events_named(result, "slowstop.stopped")
        summary = result.require_summary()
        snap, _ = cli.store().latest()
        assert snap is not None
        assert snap.tick == summary["ticks"]
        assert snap.reason.startswith("stop")


# ------------------------------------------------------------- 4. kill -9, resume


class TestCrashAndResume:
    """``kill -9``, then ``run --resume``: state and tick count from the last snapshot."""

    def test_resume_after_kill_continues_counter_and_ticks(self, cli: LifeCli) -> None:
        """The resumed run starts at the periodic snapshot's tick and runs N more."""
        cli.write_config(COUNTER_WORLD, supervisor=["snapshot_interval = 0.2"])
        with cli.start("run", "--tick-rate", "100", "--log-format", "json") as running:
            wait_until(
                "two periodic snapshots",
                # Periodic snapshots log at debug: count the files (3 generations kept).
                lambda: len(list(cli.snapshot_dir.glob("snapshot-*.msgpack"))) >= 2,
                running,
                timeout=15,
            )
            running.proc.kill()
            running.proc.wait(timeout=10)
            assert running.proc.returncode == -signal.SIGKILL
        snap, problems = cli.store().latest()
        assert problems == []
        assert snap is not None
        assert snap.reason == "periodic"
        assert snap.tick > 0
        assert counter_count(snap) == snap.tick

        result = cli.run(
            "run", "--resume", "--ticks", "25", "--tick-rate", "100", "--log-format", "json"
        )
        assert result.returncode == 0, result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["ticks"] == snap.tick + 25
        assert summary["errors"] == {}
        assert [e["tick"] for e in events_named(result, "resume.done")] == [snap.tick]
        assert stopped_counts(result) == {"counter": snap.tick + 25}
        final, _ = cli.store().latest()
        assert final is not None
        assert final.tick == snap.tick + 25
        assert counter_count(final) == final.tick

    def test_kill_during_snapshot_writes_never_loses_a_valid_snapshot(self, cli: LifeCli) -> None:
        """20 runs killed at random while snapshots are written every 10 ms.

        Each killed run is itself a ``run --resume`` of the previous state, so
        the timeline goes crash, resume, crash, ... After each kill the folder
        holds a valid snapshot (once any was written), no corrupt one, and
        none older than the state the killed run resumed from; then
        ``run --resume --ticks 3`` starts from that snapshot and exits 0.
        (About one kill in seven lands mid-write, leaving a temporary file.)
        """
        runs = 20
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        cli.write_config(
            '[systems]\nenabled = ["counter"]\n',
            supervisor=["snapshot_interval = 0.01", "snapshot_generations = 3"],
        )
        store = cli.store()
        floor: int | None = None  # the tick of the state the next run resumes from
        for i in range(runs):
            where = f"run {i} (seed {seed})"
            # Until a snapshot exists there is nothing to resume (and --resume would exit 2).
            resume = ("--resume",) if store.has_snapshots() else ()
            argv = ("run", *resume, "--tick-rate", "200", "--log-format", "json")
            with cli.start(*argv) as running:
                # Kill at a random moment once ticking (and so snapshotting) is under way.
                running.wait_for_event("api.listening")
                time.sleep(rng.uniform(0.05, 0.5))
                running.proc.kill()
                running.proc.wait(timeout=10)
            snap, problems = store.latest()
            assert problems == [], (where, problems)
            assert all(info.ok for info in store.scan()), (where, store.scan())
            if floor is None:
                if snap is None:
                    continue  # killed before the first snapshot: nothing to lose yet
            else:
                assert snap is not None, f"{where}: the snapshots are gone"
                assert snap.tick >= floor, f"{where}: back from tick {floor} to {snap.tick}"
            assert snap is not None
            assert counter_count(snap) == snap.tick, where

            result = cli.run(
                "run", "--resume", "--ticks", "3", "--tick-rate", "200", "--log-format", "json"
            )
            assert result.returncode == 0, (where, result.stderr)
            assert [e["tick"] for e in events_named(result, "resume.done")] == [snap.tick], where
            floor = snap.tick + 3
            assert result.require_summary()["ticks"] == floor, where
            assert stopped_counts(result) == {"counter": floor}, where
        assert floor is not None, "no run lived long enough to write a snapshot"


# ------------------------------------------------------------ 6. corrupt snapshot


class TestCorruptSnapshot:
    """A truncated newest snapshot is reported once and the previous generation is used."""

    def test_truncated_newest_falls_back_to_the_previous_generation(self, cli: LifeCli) -> None:
        cli.write_config('[systems]\nenabled = ["counter"]\n', supervisor=["snapshot_interval = 0"])
        first = cli.run("run", "--ticks", "10", "--tick-rate", "200", "--log-format", "json")
        assert first.returncode == 0, first.stderr
        second = cli.run(
            "run", "--resume", "--ticks", "10", "--tick-rate", "200", "--log-format", "json"
        )
        assert second.returncode == 0, second.stderr
        files = snapshot_files(cli.snapshot_dir)
        assert [f.name for f in files] == ["snapshot-10.msgpack", "snapshot-20.msgpack"]
        newest = files[-1]
        data = newest.read_bytes()
        newest.write_bytes(data[: len(data) // 2])

        result = cli.run(
            "run", "--resume", "--ticks", "3", "--tick-rate", "200", "--log-format", "json"
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        corrupt_lines = [line for line in result.lines() if "snapshot.corrupt" in line]
        assert len(corrupt_lines) == 1, result.stderr
        event = json.loads(corrupt_lines[0])
        assert event["event"] == "snapshot.corrupt"
        assert str(newest) in event["problem"]
        assert "truncated" in event["problem"]
        assert [e["tick"] for e in events_named(result, "resume.done")] == [10]
        summary = result.require_summary()
        assert summary["ticks"] == 13
        assert stopped_counts(result) == {"counter": 13}


# --------------------------------------------------------------- 7. phase gate, tokens


def _token_config(ops: str, viewer: str) -> list[str]:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode("ascii")).hexdigest()

    return [
        "tokens = [",
        f'  {{ name = "ops", role = "operator", sha256 = "{digest(ops)}" }},',
        f'  {{ name = "grafana", role = "viewer", sha256 = "{digest(viewer)}" }},',
        "]",
    ]


class TestPhaseGate:
    """``supervisor phase``/``readiness`` over the CLI, and tokens outside development."""

    def test_no_lock_out_on_the_default_config(self, cli: LifeCli) -> None:
        """Default config (Unix socket, no tokens): leaving development is refused with the
        how-to line; ``--force --reason`` moves; the socket's owner still runs every command.

        Before: ``phase testing`` went through, and every later command needed a
        token that could not exist; only a signal stopped the process.
        """
        cli.write_config(COUNTER_WORLD)
        uid = OWNER
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            cli.wait_ready(running)
            cli.wait_tick(beyond=5)

            for target in ("testing", "production"):
                out = cli.ctl("phase", target, "--reason", "launch day")
                assert out.returncode == 1, out.stderr
                assert out.stderr.splitlines() == [
                    f"supervisor: error: refused: {target} requires an API token and the config"
                    " has no [api] tokens, so every later command would be refused; add one"
                    ' ([[api.tokens]] name = "ops", role = "operator", sha256 = the output of'
                    " `printf %s TOKEN | sha256sum`) and restart, or pass --force (recorded)"
                ]
                assert cli.status()["phase"] == "development"

            out = cli.ctl("readiness", "--json")
            assert out.returncode == 1, out.stderr
            report = json.loads(out.stdout)
            assert report["ok"] is False
            checks = {c["name"]: c for c in report["checks"]}
            assert set(checks) == {"systems_ready", "performance", "error_handling", "security"}
            assert checks["security"]["ok"] is False
            assert "token" in checks["security"]["detail"]
            for check in checks.values():
                if check["ok"]:
                    assert check["recommendation"] is None, check
                else:
                    assert isinstance(check["recommendation"], str), check
                    assert check["recommendation"], check

            out = cli.ctl("phase", "testing", "--force", "--reason", "qa on this box")
            assert out.returncode == 0, out.stderr
            # SO_PEERCRED: the socket's owner is an operator in any phase, no token needed.
            assert cli.status()["phase"] == "testing"
            out = cli.ctl("errors", "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["total"] == 0

            out = cli.ctl("shutdown", "--reason", "not today")
            assert out.returncode == 0, out.stderr
            result = running.finish(timeout=15)
        assert result.returncode == 0, result.stderr
        assert result.require_summary()["phase"] == "testing"
        assert_audited(
            cli.audit(),
            [
                (uid, "phase", 409),
                (uid, "phase", 409),
                (uid, "phase", 200),
                (uid, "shutdown", 200),
            ],
        )
        refused, _, forced, _ = results(cli.audit())
        assert refused["arguments"] == {
            "phase": "testing",
            "force": False,
            "reason": "launch day",
        }
        assert "requires an API token" in refused["result"]["detail"]
        assert forced["arguments"] == {
            "phase": "testing",
            "force": True,
            "reason": "qa on this box",
        }

    def test_tokens_are_required_outside_development(self, cli: LifeCli) -> None:
        """On TCP in testing: 401 without a token, 403 for a viewer's shutdown; operators promote.

        (On the Unix socket its owner is an operator without a token: SO_PEERCRED.)
        """
        ops = secrets.token_urlsafe(24)
        viewer = secrets.token_urlsafe(24)
        cli.use_tcp()
        cli.write_config(COUNTER_WORLD, api=_token_config(ops, viewer))
        with cli.start(
            "run", "--phase", "testing", "--tick-rate", "50", "--log-format", "json"
        ) as running:
            cli.wait_ready(running)

            out = cli.ctl("status", "--json")
            assert out.returncode == 1
            assert out.stderr.startswith("supervisor: error:")
            assert "SUPERVISOR_TOKEN" in out.stderr
            assert cli.status(token=viewer)["phase"] == "testing"

            out = cli.ctl("shutdown", "--reason", "viewer tries", token=viewer)
            assert out.returncode == 1
            assert "viewer" in out.stderr
            assert "operator" in out.stderr

            with cli.http() as http:
                assert http.get("/healthz").status_code == 200
                assert http.get("/readyz").status_code == 200
                assert http.get("/v1/status").status_code == 401
                answer = http.post("/v1/shutdown", json={"reason": "anonymous tries"})
                assert answer.status_code == 401
                assert answer.headers["www-authenticate"].startswith("Bearer")
            with cli.http(token="not-a-configured-token") as http:
                assert http.get("/v1/status").status_code == 401
            with cli.http(token=viewer) as http:
                assert http.get("/v1/status").status_code == 200
                assert http.post("/v1/shutdown", json={}).status_code == 403
            assert running.proc.poll() is None

            out = cli.ctl("phase", "production", "--reason", "go live", token=ops)
            assert out.returncode == 0, out.stderr
            assert cli.status(token=viewer)["phase"] == "production"
            with cli.http() as http:
                assert http.get("/v1/readiness").status_code == 401

            out = cli.ctl("shutdown", "--reason", "done", token=ops)
            assert out.returncode == 0, out.stderr
            result = running.finish(timeout=15)
        assert result.returncode == 0, result.stderr
        assert result.require_summary()["phase"] == "production"
        assert_audited(
            cli.audit(),
            [
                ("grafana", "shutdown", 403),
                ("anonymous", "shutdown", 401),
                ("grafana", "shutdown", 403),
                ("ops", "phase", 200),
                ("ops", "shutdown", 200),
            ],
            ops,
            viewer,
        )
        audit_text = cli.audit_path.read_text(encoding="utf-8")
        for token in (ops, viewer):
            assert token not in audit_text
            assert token not in result.stderr

    def test_401_answer_says_how_to_send_the_token(self, cli: LifeCli) -> None:
        """BUG: outside development the 401 hint reads ``Authorization: [redacted] <token>``.

        The API's own error message is run through the redactor (on outside
        development), whose ``key: value`` rule takes the literal scheme word
        ``Bearer`` for a secret. The hint must name the scheme to use.
        """
        cli.use_tcp()
        cli.write_config(
            COUNTER_WORLD, api=_token_config(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        )
        with cli.start(
            "run", "--phase", "testing", "--tick-rate", "50", "--log-format", "json"
        ) as running:
            cli.wait_ready(running)
            with cli.http() as http:
                answer = http.get("/v1/status")
            out = cli.ctl("status")
        assert answer.status_code == 401
        message = answer.json()["error"]
        assert "Bearer" in message, message
        assert "[redacted]" not in message, message
        assert "[redacted]" not in out.stderr, out.stderr


# --------------------------------------------------------- 8. start in production


class TestStartInProduction:
    def test_production_without_tokens_exits_2_with_the_security_line(self, cli: LifeCli) -> None:
        """One ``supervisor: error:`` line naming the security check; nothing started."""
        cli.write_config(COUNTER_WORLD)
        result = cli.run("run", "--phase", "production", "--ticks", "5")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        lines = result.lines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("supervisor: error: cannot start in production")
        assert "security" in lines[0]
        assert "no tokens" in lines[0]
        assert "recommendation" in lines[0]
        assert result.summary is None
        assert not cli.socket.exists()
        assert snapshot_files(cli.snapshot_dir) == []
