"""Hostile command lines: whatever the arguments, one line and exit 0, 1 or 2.

Hypothesis builds argument lists from the real commands, their real options
and hostile values (NaN, infinities, huge and negative numbers, control
characters, empty strings, paths to devices). Nothing is started or sent:
``run``'s body and the client's request are replaced by stubs, so what is
exercised is the parsing, the callbacks and the error display of the group.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supervisor._cli._client
import supervisor._cli._run
from supervisor._cli._main import cli

COMMANDS = [
    "run", "status", "shutdown", "restart", "phase", "readiness", "errors", "systems", "config",
    "quarantine", "release", "snapshot",
]  # fmt: skip
OPTIONS = [
    "--config", "--phase", "--profile", "--tick-rate", "--ticks", "--duration", "--state-dir",
    "--resume", "--fresh", "--exit-on-emergency", "--log-format", "--summary-json", "--api",
    "--json", "--emergency", "--reason", "--force", "--limit", "--system", "--help", "--version",
    "-h", "--", "-", "--tick", "--no-such", "--watch", "check", "show",
]  # fmt: skip
VALUES = [
    "nan", "-nan", "inf", "-inf", "1e309", "0", "-1", "1", "30", str(2**53), str(2**53 + 1),
    str(2**64), "9" * 400, "", " ", "\x00", "\x1b[2J", "é", "production", "development",
    "emergency_shutdown", "unix:", "unix:/nonexistent/s.sock", "http://", "[::1]:99999",
    "/dev/null", "/dev/zero", "/", "x" * 600, "a\x00b",
]  # fmt: skip


def _no_run(**_options: Any) -> None:
    raise SystemExit(0)


def _no_request(*_args: Any, **_kwargs: Any) -> tuple[int, Any]:
    return 503, {"error": "stub: nothing was sent"}


@pytest.fixture(autouse=True)
def _stubs(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(supervisor._cli._run, "run_command", _no_run)
    monkeypatch.setattr(supervisor._cli._client.ApiClient, "request", _no_request)
    monkeypatch.setattr(supervisor._cli._client.ApiClient, "try_request", _no_request)
    monkeypatch.chdir(tmp_path)


_WORD = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES), st.text(max_size=8))
argv_strategy = st.tuples(st.sampled_from([*COMMANDS, "bogus", ""]), st.lists(_WORD, max_size=6))


# The stubs and the working folder are the same for every example.
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(argv_strategy)
def test_any_command_line_ends_in_one_line(argv: tuple[str, list[str]]) -> None:
    """Exit 0, 1 or 2; an error is one ``supervisor: error:`` line; never a traceback."""
    command, rest = argv
    result = CliRunner().invoke(cli, [command, *rest] if command else rest, prog_name="supervisor")
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    errors = result.stderr.splitlines()
    if result.exit_code == 2 and errors and not errors[0].startswith("Usage:"):
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith("supervisor: error: "), result.stderr
    if result.exit_code == 1:
        assert errors == ["supervisor: error: stub: nothing was sent"], result.stderr
