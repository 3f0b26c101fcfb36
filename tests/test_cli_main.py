"""The ``supervisor`` command line itself: one-line usage errors, bounds, output files.

Usage errors go through :class:`click.testing.CliRunner` (the real group,
its ``main`` included); the checks that need a real process or real files
run the console script.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from supervisor._cli._main import MAX_TICKS, cli

SUPERVISOR = Path(sys.executable).parent / "supervisor"

#: A world that starts in a blink: one system, no API.
QUICK_WORLD = """\
[supervisor]
state_dir = "state"
snapshot_interval = 0

[systems]
enabled = ["heartbeat"]

[features]
api = false
"""

#: Usage errors, each of which click used to print in three lines (usage, hint, error).
USAGE_ERRORS = [
    ("run", "--tiks", "3"),
    ("run", "--ticks", "0"),
    ("run", "--ticks", "many"),
    ("run", "--ticks", str(MAX_TICKS + 1)),
    ("run", "--ticks", str(2**64)),
    ("run", "--duration", "nan"),
    ("run", "--duration", "-1"),
    ("run", "--tick-rate", "inf"),
    ("run", "--tick-rate", "nan"),
    ("run", "--phase", "nirvana"),
    ("run", "--log-format", "xml"),
    ("run", "--resume", "--fresh"),
    ("run", "surplus"),
    ("launch",),
    ("phase",),
    ("phase", "nirvana"),
    ("errors", "--limit", "0"),
    ("errors", "--limit", "lots"),
    ("status", "--api", "ftp://x"),
    ("status", "--config"),
    ("shutdown", "--reason", "x" * 501),
    ("systems", "--jsn"),
]


class TestUsageErrors:
    @pytest.mark.parametrize("argv", USAGE_ERRORS, ids=" ".join)
    def test_one_line_exit_2(
        self, argv: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Exit 2 and exactly one ``supervisor: error:`` line naming the command and its help."""
        monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were: here
        result = CliRunner().invoke(cli, list(argv), prog_name="supervisor")
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("supervisor: error: supervisor"), lines[0]
        assert lines[0].endswith("--help')"), lines[0]

    def test_no_command_shows_the_help(self) -> None:
        """``supervisor`` alone: the help (not an error line), exit 2 as click does."""
        result = CliRunner().invoke(cli, [], prog_name="supervisor")
        assert result.exit_code == 2
        assert "Commands:" in result.stderr
        assert "supervisor: error" not in result.stderr

    def test_help_exits_0(self) -> None:
        """``--help`` on the group and on a command is the help and exit 0."""
        for argv in ([], ["run"], ["status"]):
            result = CliRunner().invoke(cli, [*argv, "--help"], prog_name="supervisor")
            assert result.exit_code == 0, result.output
            assert result.stdout.startswith("Usage: supervisor")

    def test_phase_help_lists_the_phases_and_the_rules(self) -> None:
        """``phase --help`` names the phases and what leaving each one needs."""
        result = CliRunner().invoke(cli, ["phase", "--help"], prog_name="supervisor")
        assert result.exit_code == 0
        assert "development, testing or production" in result.stdout
        assert "Leaving development needs an [api] token" in result.stdout
        assert "--force and --reason" in result.stdout


class TestHelp:
    @pytest.mark.parametrize(
        "command", ["run", "status", "shutdown", "restart", "phase", "readiness", "errors"]
    )
    def test_help_names_exit_codes_and_environment(self, command: str) -> None:
        """Every command's ``--help`` gives its exit codes and the environment it reads."""
        result = CliRunner().invoke(cli, [command, "--help"], prog_name="supervisor")
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "Exit codes: 0 " in text
        assert ("SUPERVISOR_<SECTION>_<KEY>" if command == "run" else "SUPERVISOR_TOKEN") in text


class TestSummaryJson:
    """``--summary-json`` writes only to a regular file (or through a symlink to one)."""

    def _run(self, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "world.toml").write_text(QUICK_WORLD, encoding="utf-8")
        return subprocess.run(
            [str(SUPERVISOR), "run", "--config", "world.toml", "--tick-rate", "200", *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )

    @pytest.mark.parametrize("kind", ["device", "symlink to device", "fifo", "dangling symlink"])
    def test_refuses_what_is_not_a_regular_file(self, tmp_path: Path, kind: str) -> None:
        """Exit 2, one line, nothing started, and the node left exactly as it was.

        Before: the summary replaced whatever was at the path (a device node was).
        """
        target = tmp_path / "out"
        if kind == "device":
            target = Path("/dev/null")
        elif kind == "symlink to device":
            target.symlink_to("/dev/null")
        elif kind == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to(tmp_path / "nowhere" / "x.json")
        before = os.lstat(target)
        result = self._run(tmp_path, "--ticks", "3", "--summary-json", str(target))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"supervisor: error: --summary-json {target}: ")
        after = os.lstat(target)
        assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (
            before.st_ino,
            stat.S_IFMT(before.st_mode),
        )
        assert not (tmp_path / "state").exists()

    def test_planted_temporary_file_is_not_followed(self, tmp_path: Path) -> None:
        """A symlink planted at ``<path>.tmp`` is left alone; the summary lands at the path.

        Before: the summary went to ``<path>.tmp`` first, through any link planted there.
        """
        victim = tmp_path / "victim.txt"
        victim.write_text("precious\n", encoding="utf-8")
        (tmp_path / "summary.json.tmp").symlink_to(victim)
        result = self._run(tmp_path, "--ticks", "3", "--summary-json", "summary.json")
        assert result.returncode == 0, result.stderr
        assert victim.read_text(encoding="utf-8") == "precious\n"
        assert '"ticks": 3' in (tmp_path / "summary.json").read_text(encoding="utf-8")
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".summary")] == []

    def test_symlink_to_a_regular_file_is_written_through(self, tmp_path: Path) -> None:
        """An operator's link to a regular file: the file gets the summary, the link stays."""
        real = tmp_path / "real.json"
        real.write_text("{}", encoding="utf-8")
        link = tmp_path / "link.json"
        link.symlink_to(real)
        result = self._run(tmp_path, "--ticks", "3", "--summary-json", str(link))
        assert result.returncode == 0, result.stderr
        assert link.is_symlink()
        assert '"ticks": 3' in real.read_text(encoding="utf-8")


class TestVersion:
    def test_version_names_the_python(self) -> None:
        """``supervisor --version``: the distribution's version and the Python it runs on."""
        result = CliRunner().invoke(cli, ["--version"], prog_name="supervisor")
        assert result.exit_code == 0
        assert result.stdout.startswith("supervisor ")
        assert f"on Python {sys.version_info.major}.{sys.version_info.minor}." in result.stdout

    def test_python_dash_m(self) -> None:
        """``python -m supervisor`` is the same command."""
        out = subprocess.run(
            [sys.executable, "-m", "supervisor", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.startswith("supervisor ")


ROOT = Path(__file__).resolve().parent.parent


class TestReadmeAndCi:
    """The README opens with exactly two commands, and CI runs the second one verbatim."""

    def _blocks(self) -> list[list[str]]:
        blocks: list[list[str]] = []
        inside = False
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                inside = not inside
                if inside:
                    blocks.append([])
            elif inside:
                blocks[-1].append(line)
        return blocks

    def test_two_one_line_commands_first(self) -> None:
        """Run, then test: each one line, the test command running the services script."""
        run, test = self._blocks()[:2]
        assert len(run) == 1
        assert run[0].endswith("pip install -e . && supervisor run")
        assert len(test) == 1
        assert "pip install -e '.[test]'" in test[0]
        assert "bash .ci/services.sh" in test[0]
        assert test[0].endswith("python -m pytest -q")

    def test_ci_reads_the_readme_test_command(self) -> None:
        """The awk line in ``.ci/run`` extracts exactly the README's second command."""
        script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
        (awk,) = [line for line in script.splitlines() if line.startswith("test_command=")]
        program = awk.split("awk '", 1)[1].rsplit("' README.md", 1)[0]
        out = subprocess.run(
            ["awk", program, "README.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert out.stdout.strip() == self._blocks()[1][0]
        assert script.index("bash .ci/smoke.sh") < script.index('eval "$test_command"')


class TestLogFormat:
    """``auto`` logs: console on a terminal, JSON otherwise, whatever the phase."""

    @pytest.mark.parametrize(("tty", "expected"), [(True, "console"), (False, "json")])
    def test_auto_follows_the_terminal(
        self, monkeypatch: pytest.MonkeyPatch, tty: bool, expected: str
    ) -> None:
        """It once switched a terminal to JSON when the phase left development."""
        from supervisor._cli import _run

        monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
        assert _run._resolve_log_format("auto") == expected

    @pytest.mark.parametrize("fmt", ["console", "json"])
    def test_explicit_format_wins(self, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
        """--log-format (or [logging] format) is taken as given, terminal or not."""
        from supervisor._cli import _run

        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        assert _run._resolve_log_format(fmt) == fmt


def _commands() -> list[list[str]]:
    """Every command's path: ``[name]`` or ``[group, name]``."""
    paths: list[list[str]] = []
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):  # the lazily loaded commands too
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths.extend([name, sub] for sub in command.commands)
        else:
            paths.append([name])
    return paths


class TestHelpTexts:
    @pytest.mark.parametrize("path", _commands(), ids=" ".join)
    def test_every_command_has_an_example_and_its_exit_codes(self, path: list[str]) -> None:
        """Each --help shows one example and says what each exit code means."""
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example:" in result.stdout
        assert f"supervisor {' '.join(path)}" in result.stdout.split("Example:")[1]
        assert "Exit codes: 0" in " ".join(result.stdout.split())

    @pytest.mark.parametrize(
        "name", ["status", "shutdown", "restart", "phase", "readiness", "errors", "snapshot"]
    )
    def test_client_commands_name_the_token_variable(self, name: str) -> None:
        """The commands that talk to the API say where the token comes from."""
        assert "SUPERVISOR_TOKEN" in CliRunner().invoke(cli, [name, "--help"]).stdout

    def test_choices_are_listed(self) -> None:
        """phase lists the phases, run the profiles and log formats."""
        phase = " ".join(CliRunner().invoke(cli, ["phase", "--help"]).stdout.split())
        assert "development, testing or production" in phase
        run = " ".join(CliRunner().invoke(cli, ["run", "--help"]).stdout.split())
        assert "low, medium, high" in run
        assert "[console|json]" in run

    def test_completion_is_documented_and_works(self) -> None:
        """The group help gives the completion line; click completes the phases through it."""
        assert (
            "_SUPERVISOR_COMPLETE=bash_source supervisor"
            in CliRunner().invoke(cli, ["--help"]).stdout
        )
        env = {
            **os.environ,
            "_SUPERVISOR_COMPLETE": "bash_complete",
            "COMP_WORDS": "supervisor phase ",
            "COMP_CWORD": "2",
        }
        out = subprocess.run(
            [sys.executable, "-m", "supervisor"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert out.stdout.split() == ["plain,development", "plain,testing", "plain,production"]
