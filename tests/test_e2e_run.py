"""End-to-end tests: ``supervisor run`` as a real process, with a plugin installed by pip.

The systems come from ``tests/plugin_pkg`` (distribution
``supervisor-test-plugins``, package ``demo_plugins``), installed once per
session with ``pip install --target`` into a temporary folder and found through
``PYTHONPATH``, the way a user's own plugin package is found: by its entry
points in the ``supervisor.systems`` group. Each test writes a config into its
own ``tmp_path`` (state and API socket inside it, by paths relative to the
config file) and runs the ``supervisor`` console script of this virtualenv from
an empty working folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

pytestmark = pytest.mark.e2e

PLUGIN_PKG = Path(__file__).resolve().parent / "plugin_pkg"
DIST_NAME = "supervisor-test-plugins"
PLUGIN_SYSTEMS = ("counter", "critical_bomb", "flaky", "needs_counter", "slowpoke")
#: The console script of the virtualenv running the tests.
SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: Upper bound for one short ``supervisor`` command (start-up is about 0.5 s).
RUN_TIMEOUT = 30.0

#: The top of every test config: everything the supervisor writes stays beside the file.
CONFIG_HEAD = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:state/supervisor.sock"
audit_log = "state/audit.jsonl"

"""


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install ``tests/plugin_pkg`` with pip into a fresh folder, once per session."""
    target = tmp_path_factory.mktemp("plugins")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # --no-index: the package has no dependencies to fetch (--no-deps) and an
    # in-tree build backend, so the install never needs the network.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-input",
            "--quiet",
            "--target",
            str(target),
            str(PLUGIN_PKG),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip could not install {PLUGIN_PKG}:\n{proc.stdout}\n{proc.stderr}")
    assert (target / "demo_plugins" / "__init__.py").is_file()
    return target


@attrs.frozen
class Result:
    """A finished ``supervisor`` command."""

    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def lines(self) -> list[str]:
        """The non-empty lines of standard error."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of standard error (other lines are skipped)."""
        out = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def errors(self) -> list[str]:
        """The ``supervisor: error:`` lines of standard error."""
        return [line for line in self.lines() if line.startswith("supervisor: error:")]

    def require_summary(self) -> dict[str, Any]:
        """The ``--summary-json`` object, which must have been written."""
        assert self.summary is not None, f"no summary written; stderr:\n{self.stderr}"
        return self.summary


class Cli:
    """Runs the ``supervisor`` console script against configs in one test's ``tmp_path``."""

    def __init__(self, tmp_path: Path, plugin_path: Path) -> None:
        self.tmp = tmp_path
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir()
        self.config_path = tmp_path / "supervisor.toml"
        self.summary_path = tmp_path / "summary.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        env.update(PYTHONPATH=str(plugin_path), PYTHONUNBUFFERED="1")
        self.env = env

    def config(self, body: str) -> Path:
        """Write the test config: the common head, then ``body``."""
        self.config_path.write_text(CONFIG_HEAD + body, encoding="utf-8")
        return self.config_path

    def argv(self, *args: str) -> list[str]:
        """The command line for ``supervisor ARGS``, adding --config and --summary-json to run."""
        argv = [str(SUPERVISOR), *args]
        if args[:1] == ("run",):
            if "--config" not in args and self.config_path.exists():
                argv += ["--config", str(self.config_path)]
            argv += ["--summary-json", str(self.summary_path)]
        return argv

    def _result(self, returncode: int, stdout: str, stderr: str) -> Result:
        summary = None
        if self.summary_path.exists():
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        return Result(returncode, stdout, stderr, summary)

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> Result:
        """Run ``supervisor ARGS`` to the end."""
        proc = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return self._result(proc.returncode, proc.stdout, proc.stderr)

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Running]:
        """Start ``supervisor ARGS`` in the background; it is killed if still running at exit."""
        stderr_path = self.tmp / "stderr.txt"
        with stderr_path.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                self.argv(*args),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=self.env,
                text=True,
            )
            try:
                yield Running(self, proc, stderr_path)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=RUN_TIMEOUT)


class Running:
    """A ``supervisor`` process started in the background."""

    def __init__(self, cli: Cli, proc: subprocess.Popen[str], stderr_path: Path) -> None:
        self.cli = cli
        self.proc = proc
        self.stderr_path = stderr_path

    def wait_for_event(self, event: str, timeout: float = 15.0) -> None:
        """Wait until a JSON log line with ``"event": event`` appears on standard error."""
        deadline = time.monotonic() + timeout
        needle = f'"event": "{event}"'
        while time.monotonic() < deadline:
            if needle in self.stderr_path.read_text(encoding="utf-8"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        text = self.stderr_path.read_text(encoding="utf-8")
        pytest.fail(f"no {event!r} log line (exit code {self.proc.poll()}); stderr:\n{text}")

    def finish(self, timeout: float) -> Result:
        """Wait for the process to exit by itself within ``timeout`` seconds."""
        stdout, _ = self.proc.communicate(timeout=timeout)
        stderr = self.stderr_path.read_text(encoding="utf-8")
        return self.cli._result(self.proc.returncode, stdout, stderr)


@pytest.fixture
def cli(tmp_path: Path, plugin_path: Path) -> Cli:
    """A ``supervisor`` runner for this test, with the demo plugins installed."""
    return Cli(tmp_path, plugin_path)


def assert_contract_summary(summary: dict[str, Any]) -> None:
    """``summary`` has every key of the contract (section 2), with the right types."""
    assert isinstance(summary["ticks"], int)
    assert not isinstance(summary["ticks"], bool)
    assert isinstance(summary["tick_rate"], int | float)
    assert summary["tick_rate"] > 0
    lateness = summary["lateness"]
    assert set(lateness) >= {"p50", "p99", "p999", "max"}
    for key in ("p50", "p99", "p999", "max"):
        assert isinstance(lateness[key], float), (key, lateness[key])
        assert lateness[key] >= 0.0
    assert lateness["p50"] <= lateness["p99"] <= lateness["p999"] <= lateness["max"]
    assert isinstance(summary["overruns"], int)
    assert isinstance(summary["dropped_ticks"], int)
    assert isinstance(summary["errors"], dict)
    assert all(isinstance(v, int) for v in summary["errors"].values())
    assert isinstance(summary["quarantined"], list)
    assert summary["phase"] in ("development", "testing", "production", "emergency_shutdown")
    assert isinstance(summary["optimizer_adjustments"], int)
    assert isinstance(summary["exit_reason"], str)
    assert summary["exit_reason"]


def stopped_counts(result: Result, event: str = "counter.stopped") -> dict[str, int]:
    """``{system: count}`` from the counters' ``counter.stopped`` log lines."""
    return {e["system"]: e["count"] for e in result.events() if e.get("event") == event}


class TestDiscovery:
    """``supervisor systems`` finds systems by their distribution's entry points."""

    def test_systems_json_lists_the_plugin_systems(self, cli: Cli) -> None:
        """Every entry point of the installed plugin is listed, with its distribution."""
        result = cli.run("systems", "--json")
        assert result.returncode == 0, result.stderr
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        for name in PLUGIN_SYSTEMS:
            assert rows[name]["origin"] == f"entry point ({DIST_NAME})"
            assert rows[name]["error"] is None
        assert rows["counter"]["target"] == "demo_plugins:Counter"
        assert rows["critical_bomb"]["critical"] is True
        assert rows["flaky"]["critical"] is False
        assert rows["needs_counter"]["depends_on"] == ["counter"]
        assert rows["needs_counter"]["priority"] == -100


class TestRun:
    """A clean run: ticks, summary, dependency order, several instances of one class."""

    def test_fixed_ticks_with_dependency(self, cli: Cli) -> None:
        """50 ticks at 100 Hz: exit 0, a complete summary, dependencies ticked first."""
        cli.config('[systems]\nenabled = ["counter", "needs_counter"]\n')
        result = cli.run("run", "--ticks", "50", "--tick-rate", "100")
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["ticks"] == 50
        assert summary["tick_rate"] == 100.0
        # needs_counter fails any tick on which counter has not ticked before it.
        assert summary["errors"] == {}
        assert summary["quarantined"] == []
        assert summary["phase"] == "development"
        assert summary["exit_reason"]
        assert stopped_counts(result) == {"counter": 50}
        # Relative paths in the config are relative to its folder, not the working one.
        assert list(cli.cwd.iterdir()) == []

    def test_use_runs_one_class_under_two_names(self, cli: Cli) -> None:
        """``use`` builds a second ``counter``, with its own arguments and its own state."""
        cli.config(
            "[systems]\n"
            'enabled = ["counter", "second"]\n'
            "[systems.second]\n"
            'use = "counter"\n'
            "initial = 100\n"
        )
        result = cli.run("run", "--ticks", "20", "--tick-rate", "100")
        assert result.returncode == 0, result.stderr
        assert result.require_summary()["ticks"] == 20
        assert result.require_summary()["errors"] == {}
        assert stopped_counts(result) == {"counter": 20, "second": 120}

    def test_duration_stops_after_that_many_seconds(self, cli: Cli) -> None:
        """``--duration 1 --tick-rate 50`` runs about 50 ticks and stops cleanly."""
        cli.config('[systems]\nenabled = ["counter"]\n')
        started = time.monotonic()
        result = cli.run("run", "--duration", "1", "--tick-rate", "50")
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert 45 <= summary["ticks"] <= 51
        assert summary["exit_reason"]
        assert 1.0 <= elapsed < 15.0


class TestRecovery:
    """SafeCall seen from outside: errors counted, recovery, quarantine."""

    def test_flaky_recovers(self, cli: Cli) -> None:
        """Two failures within the restart budget: counted, recovered, not quarantined."""
        cli.config('[systems]\nenabled = ["flaky", "counter"]\n[systems.flaky]\nfail_on = [3, 4]\n')
        result = cli.run("run", "--ticks", "30", "--tick-rate", "100")
        assert result.returncode == 0, result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["errors"] == {"flaky": 2}
        assert summary["quarantined"] == []
        assert summary["ticks"] == 30
        recoveries = [e["recoveries"] for e in result.events() if e.get("event") == "flaky.stopped"]
        assert recoveries == [2]
        failed_ticks = [
            e["tick"]
            for e in result.events()
            if e.get("event") == "system.error" and e.get("system") == "flaky"
        ]
        # The second failure of the same fingerprint is folded into a storm line.
        assert failed_ticks == [3]
        storms = [e for e in result.events() if e.get("event") == "system.error_storm"]
        assert [(e["system"], e["suppressed"]) for e in storms] == [("flaky", 1)]

    def test_flaky_past_its_budget_is_quarantined(self, cli: Cli) -> None:
        """With ``max_restarts = 1``, failures on three ticks in a row quarantine it."""
        cli.config(
            "[recovery]\nmax_restarts = 1\n"
            '[systems]\nenabled = ["flaky", "counter"]\n'
            "[systems.flaky]\nfail_on = [3, 4, 5]\n"
        )
        result = cli.run("run", "--ticks", "30", "--tick-rate", "100")
        assert result.returncode == 0, result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["quarantined"] == ["flaky"]
        assert summary["errors"]["flaky"] >= 2
        assert summary["phase"] == "development"
        # The others keep ticking.
        assert stopped_counts(result) == {"counter": 30}

    def test_slow_async_tick_is_cut_off_and_quarantined(self, cli: Cli) -> None:
        """An async tick far past the budget is cancelled, counted, and in the end quarantined."""
        cli.config(
            '[systems]\nenabled = ["slowpoke", "counter"]\n[systems.slowpoke]\ndelay = 5.0\n'
        )
        started = time.monotonic()
        result = cli.run("run", "--ticks", "20", "--tick-rate", "100")
        assert time.monotonic() - started < 10.0
        assert result.returncode == 0, result.stderr
        summary = result.require_summary()
        assert summary["ticks"] == 20
        assert summary["quarantined"] == ["slowpoke"]
        assert summary["errors"]["slowpoke"] >= 1
        assert summary["overruns"] >= 1

    def test_error_fingerprints_tell_systems_apart(self, cli: Cli) -> None:
        """Failures of two different systems (two classes) are not one error group.

        Both raise ``RuntimeError`` from a method called ``tick`` in the same
        module; a fingerprint of (type, file, function name) merges them, so
        ``supervisor errors`` would show one group under whichever failed last.
        """
        cli.config(
            '[systems]\nenabled = ["flaky", "critical_bomb"]\n'
            "[systems.flaky]\nfail_on = [1]\n"
            "[systems.critical_bomb]\nfrom_tick = 2\n"
        )
        result = cli.run("run", "--ticks", "3", "--tick-rate", "100")
        assert result.returncode == 0, result.stderr
        assert result.require_summary()["errors"] == {"flaky": 1, "critical_bomb": 1}
        prints = {
            e["system"]: e["fingerprint"]
            for e in result.events()
            if e.get("event") == "system.error"
        }
        assert set(prints) == {"flaky", "critical_bomb"}
        assert prints["flaky"] != prints["critical_bomb"]


class TestEmergency:
    """A critical system that keeps failing ends the run in EMERGENCY_SHUTDOWN."""

    def test_critical_failure_exits_with_emergency_code(self, cli: Cli) -> None:
        """``--exit-on-emergency``: the emergency writes its snapshot, so exit 3 (state kept)."""
        cli.config(
            '[systems]\nenabled = ["critical_bomb", "counter"]\n'
            "[systems.critical_bomb]\nfrom_tick = 5\n"
        )
        result = cli.run("run", "--ticks", "200", "--tick-rate", "100", "--exit-on-emergency")
        assert result.returncode == 3, result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert summary["phase"] == "emergency_shutdown"
        assert summary["exit_reason"].startswith("emergency")
        assert summary["errors"]["critical_bomb"] >= 1
        assert 5 < summary["ticks"] < 200
        # Ticking stopped and the systems were stopped.
        assert stopped_counts(result) == {"counter": summary["ticks"]}
        assert any(e.get("event") == "supervisor.emergency" for e in result.events())


#: (id, config body or None for no --config, extra run arguments, fragments stderr must hold)
CONFIG_ERRORS = [
    pytest.param(
        "[recovery]\nmax_restart = 1\n",
        (),
        ["supervisor.toml", "recovery.max_restart", "did you mean 'max_restarts'"],
        id="unknown-key",
    ),
    pytest.param(
        '[systems]\nenabled = ["counter"]\n[systems.counter]\ninitail = 1\n',
        (),
        ["supervisor.toml", "'counter'", "'initail'", "'initial'"],
        id="wrong-argument",
    ),
    pytest.param(
        '[systems]\nenabled = ["counter", "countr"]\n',
        (),
        ["supervisor.toml", "systems.enabled", "'countr'"],
        id="unknown-system",
    ),
    pytest.param(None, ("--config", "nowhere/missing.toml"), ["missing.toml"], id="missing-file"),
    pytest.param(
        '[systems]\nenabled = ["counter"]\n', ("--tick-rate", "-1"), ["--tick-rate"], id="rate"
    ),
    pytest.param(
        '[systems]\nenabled = ["counter"]\n', ("--ticks", "0"), ["--ticks"], id="ticks-zero"
    ),
]


class TestConfigErrors:
    """A user's mistake: exit 2, one clear line naming the culprit, never a traceback."""

    @pytest.mark.parametrize(("body", "args", "fragments"), CONFIG_ERRORS)
    def test_config_error(
        self, cli: Cli, body: str | None, args: tuple[str, ...], fragments: list[str]
    ) -> None:
        """The run does not start; standard error says what is wrong and where."""
        if body is not None:
            cli.config(body)
        result = cli.run("run", "--ticks", "5", *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, fragment
        assert result.summary is None
        assert result.stdout == ""
        if not any(a.startswith("--tick") for a in args):
            # Our own errors (click's usage errors have their own layout).
            assert len(result.lines()) == 1, result.stderr
            assert result.lines()[0].startswith("supervisor: error:")

    def test_dependency_cycle(self, cli: Cli) -> None:
        """Two counters depending on each other: exit 2, the cycle named."""
        cli.config(
            '[systems]\nenabled = ["a", "b"]\n'
            '[systems.a]\nuse = "counter"\ndepends_on = ["b"]\n'
            '[systems.b]\nuse = "counter"\ndepends_on = ["a"]\n'
        )
        result = cli.run("run", "--ticks", "5")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        errors = result.errors()
        assert len(errors) == 1, result.stderr
        assert re.search(r"cycle: (a -> b -> a|b -> a -> b)", errors[0]), errors[0]
        assert result.summary is None

    def test_missing_dependency(self, cli: Cli) -> None:
        """``needs_counter`` without ``counter``: exit 2, the missing dependency named."""
        cli.config('[systems]\nenabled = ["needs_counter"]\n')
        result = cli.run("run", "--ticks", "5")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        errors = result.errors()
        assert len(errors) == 1, result.stderr
        assert "'needs_counter'" in errors[0]
        assert "'counter'" in errors[0]

    def test_argument_rejected_by_attrs_validator(self, cli: Cli) -> None:
        """A wrong type caught by the system's attrs validator reads as one short line.

        attrs raises ``TypeError(msg, attribute, type, value)``; ``str()`` of
        that is the repr of the whole tuple, ``Attribute(...)`` included.
        """
        cli.config('[systems]\nenabled = ["counter"]\n[systems.counter]\ninitial = "ten"\n')
        result = cli.run("run", "--ticks", "5")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.lines()) == 1, result.stderr
        line = result.lines()[0]
        assert "'counter'" in line
        assert "initial" in line
        assert "Attribute(" not in line
        assert "mappingproxy" not in line


class TestSignals:
    """SIGTERM and SIGINT stop a running supervisor gracefully."""

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
    def test_signal_stops_gracefully(self, cli: Cli, signum: signal.Signals) -> None:
        """After ticking has begun, the signal ends the run with exit 0 and a summary."""
        cli.config('[systems]\nenabled = ["counter"]\n[systems.counter]\nlog_every = 5\n')
        with cli.start("run", "--tick-rate", "50", "--log-format", "json") as running:
            running.wait_for_event("counter.progress")
            sent = time.monotonic()
            running.proc.send_signal(signum)
            result = running.finish(timeout=10)
        assert time.monotonic() - sent < 5.0
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        summary = result.require_summary()
        assert_contract_summary(summary)
        assert signum.name in summary["exit_reason"]
        assert summary["ticks"] >= 5
        assert summary["phase"] == "development"
        # Stopped gracefully: the counter's stop hook ran, after its last tick.
        assert stopped_counts(result) == {"counter": summary["ticks"]}


class TestLogging:
    """``--log-format json``: machine-readable standard error."""

    def test_every_stderr_line_is_json(self, cli: Cli) -> None:
        """The flag overrides the config's console format; every line is an object with event."""
        cli.config(
            '[logging]\nformat = "console"\n'
            '[systems]\nenabled = ["flaky", "counter"]\n'
            "[systems.flaky]\nfail_on = [2]\n"
            "[systems.counter]\nlog_every = 10\n"
        )
        result = cli.run("run", "--ticks", "20", "--tick-rate", "100", "--log-format", "json")
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        lines = result.lines()
        assert lines
        events = set()
        for line in lines:
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            assert isinstance(obj.get("event"), str), line
            events.add(obj["event"])
        assert {"supervisor.start", "system.error", "counter.progress", "supervisor.stop"} <= events
