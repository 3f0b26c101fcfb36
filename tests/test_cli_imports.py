"""``supervisor --help`` and the client commands load none of the server.

A fresh ``pip install .`` once failed on every command, ``--help`` included,
because the CLI imported the whole server (and httpx, then only in the test
extra) at start-up. The CLI now imports the server inside ``run`` and the
HTTP client and table renderer where a command uses them. Each test runs a
fresh interpreter and compares its ``sys.modules`` with what ``import
supervisor._errors`` alone loads: the package's ``__init__`` loads the tick
loop's names lazily, so it is part of what is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Modules only ``run`` (or a command that sends a request) may load.
HEAVY = (
    "trio",
    "psutil",
    "msgpack",
    "structlog",
    "supervisor._core._runtime",
    "hypercorn",
    "h11",
    "httpx",
    "httpcore",
    "prometheus_client",
    "supervisor._server._app",
    "supervisor._server._serve",
    "supervisor._server._requests",
    "supervisor._server._connection",
    "supervisor._server._metrics",
    "supervisor._cli._run",
    "supervisor._server._listener",
    "supervisor._core._plugins",
    "systems",  # the demo game
)

PROBE = """
import json, sys
import supervisor._errors
base = set(sys.modules)
{body}
print(json.dumps(sorted(set(sys.modules) - base)))
"""


def _added(body: str) -> list[str]:
    """The modules ``body`` loads beyond ``import supervisor._errors``, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    added = json.loads(out.stdout.splitlines()[-1])
    assert isinstance(added, list)
    return added


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_help_loads_no_server() -> None:
    """``supervisor --help`` (the group and ``run --help``) imports none of HEAVY."""
    body = """
from supervisor._cli._main import cli
for argv in (
    [\"--help\"], [\"--version\"], [\"run\", \"--help\"], [\"status\", \"--help\"],
    [\"config\", \"--help\"], [\"config\", \"check\", \"--help\"], [\"systems\", \"--help\"],
    [\"quarantine\", \"--help\"], [\"snapshot\", \"--help\"],
):
    try:
        cli.main(argv, prog_name="supervisor")
    except SystemExit:
        pass
"""
    added = _added(body)
    assert "supervisor._cli._main" in added
    assert _heavy(added) == []


def test_a_client_command_loads_no_server() -> None:
    """``supervisor status`` with nothing running fails in one line, without the server.

    The request goes through the standard library's http.client (httpx and
    httpcore, which imports trio, once cost a third of the start-up); the
    server, metrics and tables are not loaded.
    """
    body = """
from supervisor._cli._main import cli
try:
    cli.main(["status", "--api", "unix:/nonexistent/s.sock"], prog_name="supervisor")
except SystemExit as exc:
    assert exc.code == 1, exc.code
"""
    added = _added(body)
    assert "supervisor._cli._http" in added
    assert _heavy(added) == []


def test_config_show_loads_no_game_code() -> None:
    """``config show`` reads the config and prints it: no plugin loader, no systems, no loop."""
    body = """
from supervisor._cli._main import cli
try:
    cli.main(["config", "show", "--json"], prog_name="supervisor")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
"""
    assert _heavy(_added(body)) == []


def test_the_package_loads_no_server() -> None:
    """``import supervisor`` (the plugin author's import) loads no HTTP server or client."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, supervisor; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert _heavy(out.stdout.split()) == []
