"""``supervisor status`` for people, rendered from fixture status JSON.

The fixture is the shape a running demo world answers today (trimmed to two
systems). Keys the core does not send yet (uptime, version, pid, config
file, listen address, measured tick rate, the 10 s / 60 s windows) are
added in the tests that expect them rendered, and must not leave a trace
when absent.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor._cli import _status_cmd
from supervisor._cli._main import cli
from supervisor._cli._status import LIFECYCLE_SHOWN, render_status
from supervisor._cli._units import ago, duration, seconds, size, word

NOW = 1_796_144_400.0


def _summary(p50: float, p99: float, count: int = 78) -> dict[str, Any]:
    return {"count": count, "p50": p50, "p95": p99, "p99": p99, "p999": p99, "max": p99 * 2}


STATUS: dict[str, Any] = {
    "phase": "development",
    "tick": 12345,
    "tick_rate": 20.0,
    "budget": 0.04000000000000001,
    "lateness": _summary(1.5571618350240615e-06, 0.007002017984632403),
    "work": _summary(0.0002358311567211312, 0.0012297979992581531),
    "overruns": 0,
    "dropped_ticks": 0,
    "systems": [
        {
            "name": "players",
            "state": "running",
            "health": "healthy",
            "critical": False,
            "priority": 0,
            "depends_on": [],
            "origin": "entry point (tick-supervisor): systems.players:Players",
            "errors": 0,
            "step": _summary(3.3940999855985865e-05, 0.00018366600124863908),
            "every": 1,
        },
        {
            "name": "economy",
            "state": "half_open",
            "health": "degraded",
            "critical": True,
            "priority": 0,
            "depends_on": ["players"],
            "origin": "entry point (tick-supervisor): systems.economy:Economy",
            "errors": 3,
            "step": _summary(2.0510999092948623e-05, 0.0006116189997555921),
            "every": 1,
        },
    ],
    "gauges": {"players": 196},
    "errors": {"economy": 3, "players": 0},
    "quarantined": [],
    "profile": "medium",
    "profile_reason": "detected 2 logical cores and 23.5 GB: 'medium' fits",
    "emergency_reason": None,
    "alive": True,
    "alive_detail": "last tick 17.5 ms ago",
    "ready": True,
    "not_ready": [],
    "next_step": "nothing to do: every system is running.",
    "emergency": None,
    "lifecycle": [],
    "machine": {
        "logical_cores": 2,
        "physical_cores": 2,
        "freq_mhz": 2596.094,
        "memory_total_gb": 23.540576934814453,
        "memory_available_gb": 22.728057861328125,
        "load1": 1.60693359375,
    },
    "resources": {"rss_bytes": 49627136, "cpu_percent": 1.0, "threads": 3, "open_files": 18},
    "snapshots": {
        "folder": "/srv/game/var/snapshots",
        "last": "/srv/game/var/snapshots/snapshot-12300.msgpack",
        "stall": _summary(0.0002681519999896409, 0.0002681519999896409, 1),
        "write": _summary(0.001885246590333923, 0.00294990099973802, 2),
        "failures": 0,
        "problems": [],
    },
    "redaction": False,
    "services": {"failures": {}},
    "optimizer": {
        "state": "steady",
        "adjustments": 0,
        "rate": 20.0,
        "base_rate": 20.0,
        "pinned_rate": None,
        "throttles": {},
        "steps": [],
        "load": 0.0079,
        "smoothed": 0.0080,
        "last_action": None,
        "events": [],
    },
}

EMERGENCY = {
    "reason": "operator uid:0(root): disk test",
    "source": "operator:uid:0(root)",
    "tick": 12000,
    "snapshot": "/srv/game/var/snapshots/snapshot-12000.msgpack",
    "trigger_to_snapshot_seconds": 0.012172607001048164,
}


def _event(minutes_ago: float, action: str, before: str, after: str) -> dict[str, Any]:
    return {
        "time": NOW - minutes_ago * 60,
        "tick": 12000,
        "action": action,
        "before": before,
        "after": after,
        "caller": "operator:uid:0(root)",
        "reason": "disk test" if action == "emergency" else action,
    }


def text(data: dict[str, Any]) -> str:
    return render_status(data, now=NOW).plain


def status(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(STATUS)
    data.update(changes)
    return data


class TestUnits:
    @pytest.mark.parametrize(
        ("value", "shown"),
        [(7e-6, "7 µs"), (0.0012297, "1.2 ms"), (0.04, "40.0 ms"), (3.4, "3.40 s"), (None, "-")],
    )
    def test_seconds(self, value: Any, shown: str) -> None:
        """Durations take the unit that reads best; not a number is a dash."""
        assert seconds(value) == shown

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (45.9, "45 s"),
            (60, "1 min"),
            (192, "3 min 12 s"),
            (7500, "2 h 5 min"),
            (3600 * 26, "1 d 2 h"),
            (-1, "-"),
            (float("nan"), "-"),
        ],
    )
    def test_duration(self, value: float, shown: str) -> None:
        """Long spans in two units at most."""
        assert duration(value) == shown

    def test_ago(self) -> None:
        """A Unix time reads as how long ago; a fresh one as just now."""
        assert ago(NOW - 180, NOW) == "3 min ago"
        assert ago(NOW - 0.2, NOW) == "just now"
        assert ago("x", NOW) == "-"

    def test_word(self) -> None:
        """JSON values as words: yes/no, lists, tables as key=value, ``*_seconds`` as durations."""
        assert word(True) == "yes"
        assert word(None) == "-"
        assert word([1, "a"]) == "1, a"
        assert word({"tick": 12345, "trigger_to_snapshot_seconds": 0.0448}) == (
            "tick=12,345, trigger_to_snapshot_seconds=44.8 ms"
        )

    @pytest.mark.parametrize(
        ("value", "shown"), [(49627136, "49.6 MB"), (512, "512 B"), (2.5e9, "2.5 GB")]
    )
    def test_size(self, value: float, shown: str) -> None:
        """Bytes in decimal units."""
        assert size(value) == shown


class TestSections:
    def test_grouped_sections_in_order(self) -> None:
        """Who, then tick, systems, game, problems, process, next step: each a heading."""
        out = text(STATUS)
        headings = [line for line in out.splitlines() if line and not line.startswith(" ")]
        assert headings == [
            "supervisor · development",
            "Tick",
            "Systems",
            "Game",
            "Problems",
            "Process",
            "Next step",
        ]

    def test_human_units_and_words(self) -> None:
        """Microseconds, milliseconds, MB, thousands separators: never raw floats or keys."""
        out = text(STATUS)
        for shown in (
            "12,345",
            "20 Hz set",
            "40.0 ms",
            "p50 2 µs · p99 7.0 ms · max 14.0 ms (since start)",
            "49.6 MB RSS · CPU 1% · 3 threads · 18 open files",
            "2 cores · 23.5 GB (22.7 GB free) · load 1.61",
            "write p99 2.9 ms",
            "players      196",
        ):
            assert shown in out, shown
        for raw in ("rss_bytes", "profile_reason", "alive_detail", "next_step", "e-0", "e+0"):
            assert raw not in out, raw

    def test_systems_columns(self) -> None:
        """One aligned row per system: state, health, errors, step p50/p99, how often it runs."""
        rows = [line.split() for line in text(STATUS).splitlines() if line.startswith("  ")]
        assert [
            "players",
            "running",
            "healthy",
            "0",
            "34",
            "µs",
            "184",
            "µs",
            "every",
            "tick",
        ] in rows
        assert [
            "economy",
            "half_open",
            "degraded",
            "3",
            "21",
            "µs",
            "612",
            "µs",
            "every",
            "tick",
        ] in rows

    def test_throttle_from_the_optimizer(self) -> None:
        """A throttled system says how often it runs."""
        data = status()
        data["optimizer"]["throttles"] = {"players": 4}
        assert "1 tick in 4" in text(data)

    def test_errors_counted_by_system(self) -> None:
        """Only systems with errors, with a pointer to the command that shows them."""
        assert "  errors       economy 3 (supervisor errors)" in text(STATUS)
        assert "errors       none" in text(status(errors={}))

    def test_no_padding(self) -> None:
        """No line ends in spaces (they once padded to 160 columns when piped)."""
        for line in text(STATUS).splitlines():
            assert line == line.rstrip()


class TestEmergency:
    def test_only_while_it_applies(self) -> None:
        """The JSON keeps the last emergency after a restart; the text shows it only during one."""
        after_restart = status(emergency=EMERGENCY)
        assert "Emergency" not in text(after_restart)
        during = status(
            phase="emergency_shutdown", emergency=EMERGENCY, emergency_reason=EMERGENCY["reason"]
        )
        out = text(during)
        assert "supervisor · emergency_shutdown" in out
        assert "\nEmergency\n" in out
        assert "reason       operator uid:0(root): disk test" in out
        assert "state        preserved in /srv/game/var/snapshots/snapshot-12000.msgpack" in out
        assert "saved in     12.2 ms" in out

    def test_state_not_preserved(self) -> None:
        """An emergency without a snapshot says the state is not preserved."""
        data = status(phase="emergency_shutdown", emergency={**EMERGENCY, "snapshot": None})
        assert "NOT preserved" in text(data)


class TestLifecycle:
    def test_short_list_of_the_last_events(self) -> None:
        """The newest few events, one line each, with how long ago: not one growing row."""
        events = [
            _event(60 - i, "phase", "development", "testing") for i in range(LIFECYCLE_SHOWN + 3)
        ]
        events[-1] = _event(3, "emergency", "testing", "emergency_shutdown")
        out = text(status(lifecycle=events))
        block = out.split("\nLifecycle")[1].split("\n\n")[0].splitlines()
        assert block[0] == f" (last {LIFECYCLE_SHOWN} of {LIFECYCLE_SHOWN + 3})"
        assert len(block) == 1 + LIFECYCLE_SHOWN
        assert block[-1].split() == [
            "3", "min", "ago", "tick", "12,000", "testing", "→", "emergency_shutdown",
            "emergency", "by", "operator:uid:0(root):", "disk", "test",
        ]  # fmt: skip
        assert "1796" not in out  # no epoch floats
        assert "phase change by operator:uid:0(root)\n" in out + "\n"

    def test_absent_when_empty(self) -> None:
        """No events, no section."""
        assert "Lifecycle" not in text(STATUS)


class TestKeysTheCoreWillAdd:
    def test_rendered_when_present(self) -> None:
        """uptime, version, pid, config file, listen address, measured rate and windows."""
        data = status(
            version="0.2.0",
            pid=4242,
            uptime_seconds=192.5,
            config_file="/srv/game/supervisor.toml",
            listen="unix:/srv/game/var/supervisor.sock",
            measured_tick_rate=19.87,
            windows={
                "10s": {"lateness": _summary(2e-6, 0.0009), "work": _summary(0.0002, 0.0011)},
                "60s": {"lateness": _summary(3e-6, 0.0041), "work": _summary(0.0002, 0.0013)},
            },
        )
        out = text(data)
        assert out.splitlines()[0] == "supervisor 0.2.0 · development · pid 4242 · up 3 min 12 s"
        assert "config       /srv/game/supervisor.toml" in out
        assert "api          unix:/srv/game/var/supervisor.sock" in out
        assert "rate         20 Hz set · 19.87 Hz measured" in out
        assert "lateness 10s p50 2 µs · p99 900 µs" in out
        assert "work 60s     p50 200 µs · p99 1.3 ms" in out

    def test_absent_without_a_trace(self) -> None:
        """Today's JSON: no empty lines or dashes for what it does not carry."""
        out = text(STATUS)
        assert out.splitlines()[0] == "supervisor · development"
        for absent in ("measured", "config ", "api ", "10s", "pid", "up "):
            assert absent not in out, absent


class TestCommand:
    @pytest.fixture
    def answer(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        """``/v1/status`` answers the fixture (no server needed to test the printing)."""
        data = status()
        monkeypatch.setattr(_status_cmd, "api_get", lambda *_args, **_kw: data)
        return data

    def test_piped_text(self, answer: dict[str, Any]) -> None:
        """Through the real command, piped: plain text, no line padded, no markup left."""
        result = CliRunner().invoke(cli, ["status"])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == "supervisor · development"
        assert all(line == line.rstrip() for line in lines)
        assert "[" not in result.stdout
        assert max(map(len, lines)) < 120

    def test_json_keeps_machine_keys(self, answer: dict[str, Any]) -> None:
        """--json is the answer as it came: keys and seconds."""
        result = CliRunner().invoke(cli, ["status", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == answer

    def test_watch_and_json_exclude_each_other(self, answer: dict[str, Any]) -> None:
        """A usage error: one line, exit 2."""
        result = CliRunner().invoke(cli, ["status", "--watch", "--json"])
        assert result.exit_code == 2
        assert "--watch and --json exclude each other" in result.stderr

    @pytest.mark.parametrize("value", ["0", "-1", "nan", "abc"])
    def test_watch_interval_bounds(self, answer: dict[str, Any], value: str) -> None:
        """The interval is a number of seconds in (0.05, 3600]; NaN once reached time.sleep."""
        result = CliRunner().invoke(cli, ["status", "--watch", value])
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1


class TestMeasuredByTheWatch:
    def test_shown_when_the_core_has_none(self) -> None:
        """``--watch`` measures the rate between two answers while the core reports none."""
        assert (
            "rate         20 Hz set · 19.9 Hz measured"
            in render_status(STATUS, now=NOW, measured=19.93).plain
        )

    def test_the_core_figure_wins(self) -> None:
        """The supervisor's own figure, when it sends one, is the one shown."""
        out = render_status(status(measured_tick_rate=20.0), now=NOW, measured=3.0).plain
        assert "20 Hz set · 20 Hz measured" in out
        assert "3.0 Hz" not in out


def test_capability_sections_get_a_line_each_and_a_broken_one_says_so() -> None:
    from supervisor._cli._status import render_status

    data = {
        "phase": "development",
        "rollouts": {"rollouts": [{"flag": "new_shop"}], "saves": 2, "problems": []},
        "fleet": {"state": "disconnected", "outages": 1, "last_error": "ConnectionError: down"},
        "agones": {"error": "RuntimeError: sidecar bug"},
    }
    text = render_status(data, now=0.0).plain
    assert "Capabilities" in text
    assert "rollouts     rollouts 1 · saves 2 · problems 0" in text
    assert "fleet        state disconnected · outages 1 · last_error ConnectionError: down" in text
    assert "agones       broken: RuntimeError: sidecar bug" in text
