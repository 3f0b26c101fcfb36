"""``config check``, ``config show``, ``systems --config`` and where config errors are blamed.

Systems come from a small module written into the test's folder and put on
``sys.path``, enabled by import string (``game:Clock``) and under other
names with ``use``; the installed demo systems come by entry point.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from supervisor._cli._main import cli

GAME = """
from typing import Literal

import attrs


@attrs.define
class Clock:
    day_seconds: float = 10.0
    mode: Literal["real", "fast"] = "real"

    def tick(self, ctx):
        pass


class Weather:
    depends_on = ("clock",)

    def __init__(self, zones: list[str] | None = None, rain: bool = False) -> None:
        self.zones = zones or []

    def tick(self, ctx):
        pass


class Loop:
    depends_on = ("weather",)

    def tick(self, ctx):
        pass
"""

GOOD = """\
[supervisor]
state_dir = "state"

[api]
listen = "unix:s.sock"

[systems]
enabled = ["clock", "weather", "heartbeat"]

[systems.clock]
use = "game:Clock"
day_seconds = 30

[systems.weather]
use = "game:Weather"
zones = ["north", "south"]

[phases.production]
supervisor = { tick_rate = 60.0 }
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder with the ``game`` module importable and no SUPERVISOR_* variables."""
    (tmp_path / "game.py").write_text(GAME, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("SUPERVISOR_")]:
        monkeypatch.delenv(var)
    yield tmp_path
    sys.modules.pop("game", None)


def write(folder: Path, text: str, name: str = "game.toml") -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def listing(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in str(p)
    )


class TestCheck:
    def test_good_config_prints_what_would_run(self, folder: Path) -> None:
        """Exit 0 and the systems in start order, each with where it comes from."""
        result = invoke("config", "check", "--config", write(folder, GOOD))
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].endswith("game.toml: ok, phase development, 3 systems in order:")
        names = [line.split()[0] for line in lines[1:]]
        assert names.index("clock") < names.index("weather")
        assert "import string (game:Weather) (depends on clock)" in result.stdout
        assert result.stderr == ""

    def test_writes_nothing(self, folder: Path) -> None:
        """No state folder, no socket, no audit log, no snapshot: the folder is as it was."""
        path = write(folder, GOOD)
        before = listing(folder)
        assert invoke("config", "check", "--config", path).exit_code == 0
        # Refused (no tokens) after building every system: still nothing written.
        assert invoke("config", "check", "--config", path, "--phase", "production").exit_code == 2
        assert listing(folder) == before

    def test_one_line_per_problem(self, folder: Path) -> None:
        """Every system's problem is found in one pass, each on its line; exit 2."""
        bad = GOOD.replace("day_seconds = 30", 'day_seconds = "ten"').replace(
            'zones = ["north", "south"]', 'zones = ["north", 3]\nsnow = true'
        )
        result = invoke("config", "check", "--config", write(folder, bad))
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 2, result.stderr
        assert lines[0].endswith(
            "[systems.clock.day_seconds] system 'clock' argument 'day_seconds' "
            "expects float, got str ('ten')"
        )
        assert "[systems.weather.snow] system 'weather' has no argument 'snow'" in lines[1]

    def test_unknown_systems_and_bad_arguments_together(self, folder: Path) -> None:
        """An unknown ``use``, a table nobody enables and a wrong type: three lines, one pass."""
        bad = (
            GOOD.replace('use = "game:Clock"', 'use = "nosuch"')
            .replace('zones = ["north", "south"]', "zones = 3")
            .replace("[phases", "[systems.ghost]\nx = 1\n\n[phases")
        )
        result = invoke("config", "check", "--config", write(folder, bad))
        assert result.exit_code == 2
        keys = [line.split("] ")[0].split("[")[-1] for line in result.stderr.splitlines()]
        assert sorted(keys) == ["systems.clock.use", "systems.ghost", "systems.weather.zones"]

    def test_json(self, folder: Path) -> None:
        """--json: ok, the phase, the systems and the problems, for scripts."""
        result = invoke("config", "check", "--config", write(folder, GOOD), "--json")
        assert result.exit_code == 0
        answer = json.loads(result.stdout)
        assert answer["ok"] is True
        assert answer["problems"] == []
        assert [s["name"] for s in answer["systems"]][-1] in {"weather", "heartbeat"}

    @pytest.mark.parametrize(
        ("change", "blamed"),
        [
            ('use = "game:Clock"', 'use = "nosuch"'),
            (
                'enabled = ["clock", "weather", "heartbeat"]',
                'enabled = ["clock", "weather", "nosuch"]',
            ),
        ],
        ids=["use", "enabled"],
    )
    def test_unknown_system_blamed_on_its_key(self, folder: Path, change: str, blamed: str) -> None:
        """``use = "nosuch"`` is blamed on [systems.clock.use]; a listed name on the list."""
        result = invoke("config", "check", "--config", write(folder, GOOD.replace(change, blamed)))
        assert result.exit_code == 2
        key = "[systems.clock.use]" if "use" in blamed else "[systems.enabled]"
        assert f"{key} unknown system 'nosuch'" in result.stderr

    def test_dependency_cycle(self, folder: Path) -> None:
        """A cycle is one line naming it."""
        config = GOOD.replace('"heartbeat"]', '"heartbeat", "loop"]').replace(
            "[phases", '[systems.loop]\nuse = "game:Loop"\n\n[phases'
        )
        (folder / "game.py").write_text(
            GAME.replace('depends_on = ("clock",)', 'depends_on = ("clock", "loop")'),
            encoding="utf-8",
        )
        result = invoke("config", "check", "--config", write(folder, config))
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
        assert "dependency cycle" in result.stderr

    def test_bad_variable_is_blamed(self, folder: Path) -> None:
        """A bad SUPERVISOR_* value names the variable, not the file."""
        result = invoke(
            "config",
            "check",
            "--config",
            write(folder, GOOD),
            env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "abc"},
        )
        assert result.exit_code == 2
        assert result.stderr.startswith("supervisor: error: SUPERVISOR_SUPERVISOR_TICK_RATE: ")
        assert "game.toml" not in result.stderr

    def test_production_without_tokens(self, folder: Path) -> None:
        """In production, run's security check too: no API tokens is a problem line, exit 2."""
        path = write(folder, GOOD)
        result = invoke("config", "check", "--config", path, "--phase", "production")
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            "supervisor: error: cannot start in production: security check failed: the API "
            "has no tokens in production (recommendation: add [api] tokens with sha256 hashes "
            '(`printf %s "$TOKEN" | sha256sum`), roles viewer and operator)'
        ]
        with_token = GOOD.replace(
            '[api]\nlisten = "unix:s.sock"',
            '[api]\nlisten = "unix:s.sock"\n'
            f'tokens = [{{ name = "ops", role = "operator", sha256 = "{"ab" * 32}" }}]',
        )
        path = write(folder, with_token)
        assert invoke("config", "check", "--config", path, "--phase", "production").exit_code == 0

    def test_demo_world_without_a_config(self, folder: Path) -> None:
        """No --config and no ./supervisor.toml: the demo world, as run would start it."""
        result = invoke("config", "check")
        assert result.exit_code == 0, result.output
        assert "<built-in demo world>: ok, phase development, 6 systems" in result.stdout


class TestShow:
    TOKENS = """
[[api.tokens]]
name = "ops"
role = "operator"
sha256 = "{digest}"
"""
    DIGEST = "ab" * 32
    KEY = "k" * 40

    def config(self, folder: Path) -> str:
        text = GOOD.replace(
            '[api]\nlisten = "unix:s.sock"',
            '[api]\nlisten = "unix:s.sock"' + self.TOKENS.format(digest=self.DIGEST),
        ).replace('state_dir = "state"', f'state_dir = "state"\nsnapshot_key = "{self.KEY}"')
        return write(folder, text)

    def test_effective_config_in_toml(self, folder: Path) -> None:
        """The phase overlay applied, every default spelt out, secrets shortened or hidden."""
        result = invoke("config", "show", "--config", self.config(folder), "--phase", "production")
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert out.splitlines()[0].endswith("game.toml, phase production")
        assert "tick_rate = 60.0" in out
        assert "max_restarts = 5" in out
        assert f'sha256 = "sha256:{self.DIGEST[:12]}…"' in out
        assert self.DIGEST not in out
        assert self.KEY not in out
        assert 'snapshot_key = "(set, not shown)"' in out
        assert "[phases" not in out
        assert "[[api.tokens]]" in out

    def test_variables_are_marked(self, folder: Path) -> None:
        """A value a SUPERVISOR_* variable set says so."""
        result = invoke(
            "config",
            "show",
            "--config",
            self.config(folder),
            env={"SUPERVISOR_RECOVERY_MAX_RESTARTS": "9"},
        )
        assert result.exit_code == 0, result.output
        assert "max_restarts = 9  # from SUPERVISOR_RECOVERY_MAX_RESTARTS" in result.stdout

    def test_json(self, folder: Path) -> None:
        """--json: the same mapping, secrets treated the same."""
        result = invoke("config", "show", "--config", self.config(folder), "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["api"]["tokens"][0]["sha256"] == f"sha256:{self.DIGEST[:12]}…"
        assert shown["supervisor"]["snapshot_key"] == "(set, not shown)"
        assert shown["systems"]["clock"]["day_seconds"] == 30
        assert self.KEY not in result.stdout

    def test_output_is_a_valid_config(self, folder: Path) -> None:
        """What show prints (without secrets) loads back as TOML."""
        result = invoke("config", "show", "--config", write(folder, GOOD))
        assert result.exit_code == 0, result.output
        parsed = tomllib.loads(result.stdout)
        assert parsed["systems"]["weather"]["zones"] == ["north", "south"]

    def test_bad_config(self, folder: Path) -> None:
        """A broken config: one line, exit 2."""
        result = invoke("config", "show", "--config", write(folder, "[supervisor]\ntick_rat = 3\n"))
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
        assert "supervisor.tick_rat" in result.stderr


class TestRunRefusesWrongTypes:
    def test_wrong_type_does_not_start(self, folder: Path) -> None:
        """``day_seconds = "ten"`` is a config error naming system, argument and types: exit 2."""
        bad = GOOD.replace("day_seconds = 30", 'day_seconds = "ten"')
        result = invoke("run", "--config", write(folder, bad), "--ticks", "3")
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            f"supervisor: error: {folder / 'game.toml'}: [systems.clock.day_seconds] system "
            "'clock' argument 'day_seconds' expects float, got str ('ten')"
        ]
        assert not (folder / "state").exists()

    def test_unknown_use_blamed_on_use(self, folder: Path) -> None:
        """run blames ``use = "nosuch"`` on [systems.clock.use], not on the enabled list."""
        bad = GOOD.replace('use = "game:Clock"', 'use = "nosuch"')
        result = invoke("run", "--config", write(folder, bad), "--ticks", "3")
        assert result.exit_code == 2
        assert "[systems.clock.use] unknown system 'nosuch'" in result.stderr


class TestSystems:
    def test_marks_the_enabled_and_lists_import_strings(self, folder: Path) -> None:
        """Entry points and the config's import strings, ``enabled`` true for what would run."""
        result = invoke("systems", "--config", write(folder, GOOD), "--json")
        assert result.exit_code == 0, result.output
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows["clock"]["origin"] == "import string"
        assert rows["clock"]["target"] == "game:Clock"
        assert rows["weather"]["depends_on"] == ["clock"]
        assert {name for name, row in rows.items() if row["enabled"]} == {
            "clock",
            "weather",
            "heartbeat",
        }
        assert rows["wanderers"]["enabled"] is False

    def test_enabled_by_import_string_alone(self, folder: Path) -> None:
        """``enabled = ["pkg.mod:Class"]`` runs under the class's own name: listed so."""
        config = '[systems]\nenabled = ["systems.example:Heartbeat"]\n'
        result = invoke("systems", "--config", write(folder, config), "--json")
        assert result.exit_code == 0, result.output
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows["heartbeat"]["origin"] == "import string"
        assert rows["heartbeat"]["enabled"] is True
        assert "systems.example:Heartbeat" not in rows

    def test_table_marks_enabled(self, folder: Path) -> None:
        """The table ticks what is enabled and says what the tick means."""
        result = invoke("systems", "--config", write(folder, GOOD))
        assert result.exit_code == 0, result.output
        assert "✓ enabled in the config" in result.stdout
        clock = next(line for line in result.stdout.splitlines() if " clock " in line)
        assert "✓" in clock

    def test_bad_config(self, folder: Path) -> None:
        """An invalid config is exit 2, one line."""
        result = invoke("systems", "--config", write(folder, "[systems]\nenabled = 3\n"))
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
