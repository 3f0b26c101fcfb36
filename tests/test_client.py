"""The API commands (status, shutdown, restart, phase, readiness, errors) end to end.

Each test runs the real command through click's ``CliRunner`` against a real
:func:`~supervisor._server._serve.serve_api` on a Unix socket, served by a trio run in
a background thread, with :class:`test_api.FakeSupervisor` behind it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog
import structlog.testing
import trio
from click.testing import CliRunner, Result
from test_api import OPERATOR_TOKEN, VIEWER_TOKEN, FakeSupervisor, make_rig

from supervisor._cli._client import resolve_api
from supervisor._cli._main import cli
from supervisor._server._serve import serve_api


@attrs.define(eq=False)
class Server:
    """A serve_api running in a background thread's own trio run."""

    fake: FakeSupervisor
    listen: str
    audit_path: Path

    def run(self, *args: str, token: str | None = None) -> Result:
        """Run ``supervisor ARGS --api LISTEN`` with SUPERVISOR_TOKEN set (or unset)."""
        env = {"SUPERVISOR_TOKEN": token}
        return CliRunner().invoke(cli, [*args, "--api", self.listen], env=env)


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[list[Any]]:
    """Capture structlog output: the server thread would otherwise print into the CLI's stdout."""
    with structlog.testing.capture_logs() as logs:
        yield logs


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _serve(tmp: Path, mode: str) -> Iterator[Server]:
    rig = make_rig(tmp, mode)
    tcp = mode.endswith("-tcp")
    listen = "127.0.0.1:0" if tcp else f"unix:{tmp / 'supervisor.sock'}"
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            state["scope"] = scope
            async with trio.open_nursery() as nursery:
                state["bound"] = await nursery.start(serve_api, rig.app, listen)
                started.set()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            state["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    assert started.wait(10)
    assert "error" not in state, state.get("error")
    try:
        bound = f"http://{state['bound']}" if tcp else listen
        yield Server(fake=rig.fake, listen=bound, audit_path=rig.audit.path)
    finally:
        trio.from_thread.run_sync(state["scope"].cancel, trio_token=state["token"])
        thread.join(10)
    assert "error" not in state, state.get("error")


@pytest.fixture
def server(short_tmp: Path) -> Iterator[Server]:
    """A supervisor API in DEVELOPMENT: the socket's owner is an operator without a token."""
    yield from _serve(short_tmp, "dev-unix")


@pytest.fixture
def prod_server(short_tmp: Path) -> Iterator[Server]:
    """A supervisor API in PRODUCTION on its Unix socket: its owner (us) is an operator."""
    yield from _serve(short_tmp, "prod-unix")


@pytest.fixture
def tcp_server(short_tmp: Path) -> Iterator[Server]:
    """A supervisor API on loopback TCP: every request but the probes needs a token."""
    yield from _serve(short_tmp, "dev-tcp")


class TestReadCommands:
    def test_status_table(self, server: Server) -> None:
        """status prints the phase, timing, gauges and a systems table."""
        result = server.run("status")
        assert result.exit_code == 0, result.output
        for text in ("development", "30 Hz", "p99 90 µs", "players", "200", "economy"):
            assert text in result.stdout

    def test_status_json(self, server: Server) -> None:
        """status --json prints the raw answer."""
        result = server.run("status", "--json")
        assert result.exit_code == 0
        assert json.loads(result.stdout)["tick"] == 1234

    def test_readiness_ok_and_not(self, server: Server) -> None:
        """readiness exits 0 when every check passes, 1 (with recommendations) otherwise."""
        result = server.run("readiness")
        assert result.exit_code == 0
        assert "ready for production" in result.stdout
        server.fake.ready = False
        result = server.run("readiness")
        assert result.exit_code == 1
        assert "add an operator token to [api]" in result.stdout
        result = server.run("readiness", "--json")
        assert result.exit_code == 1
        assert json.loads(result.stdout)["ok"] is False

    def test_errors(self, server: Server) -> None:
        """errors shows the groups; --limit and --system reach the supervisor."""
        result = server.run("errors", "--limit", "5", "--system", "economy")
        assert result.exit_code == 0, result.output
        assert "ZeroDivisionError" in result.stdout
        assert ("error_view", {"limit": 5, "system": "economy"}) in server.fake.calls
        result = server.run("errors", "--json")
        assert json.loads(result.stdout)["groups"][0]["count"] == 2

    def test_errors_limit_is_checked_locally(self, server: Server) -> None:
        """An out-of-range --limit is a usage error (exit 2) before any request."""
        result = server.run("errors", "--limit", "0")
        assert result.exit_code == 2
        assert not [c for c in server.fake.calls if c[0] == "error_view"]


class TestActions:
    def test_shutdown(self, server: Server) -> None:
        """shutdown --reason stops the supervisor and prints its answer."""
        result = server.run("shutdown", "--reason", "patch day")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "shutdown: stopping"
        assert server.fake.stopped
        entries = [json.loads(line) for line in server.audit_path.read_text().splitlines()]
        # Fail closed: the attempt is on disk before the action, the result after it.
        assert [e["stage"] for e in entries] == ["attempt", "result"]
        assert entries[-1]["arguments"] == {"emergency": False, "reason": "patch day"}

    def test_emergency_then_restart(self, server: Server) -> None:
        """shutdown --emergency, then restart."""
        assert server.run("shutdown", "--emergency").exit_code == 0
        assert server.fake.emergency
        result = server.run("restart")
        assert result.exit_code == 0
        assert result.stdout.strip() == "restart: restarted from snapshot"
        assert server.fake.restarts == 1

    def test_phase(self, server: Server) -> None:
        """phase TESTING moves the supervisor (the name is case-insensitive)."""
        result = server.run("phase", "TESTING", "--reason", "qa")
        assert result.exit_code == 0, result.output
        assert server.fake.phase == "testing"

    def test_refused_promotion_exits_1_with_report(self, server: Server) -> None:
        """A refused action is one error line (plus the failing checks) and exit 1."""
        server.fake.ready = False
        result = server.run("phase", "production")
        assert result.exit_code == 1
        assert result.stderr.splitlines()[0] == "supervisor: error: the readiness gate failed"
        assert "add an operator token to [api]" in result.stderr
        assert server.fake.phase == "development"

    def test_unknown_phase_is_usage_error(self, server: Server) -> None:
        """A phase name click does not know is exit 2, nothing sent."""
        assert server.run("phase", "nirvana").exit_code == 2
        assert server.fake.phase == "development"


class TestAuth:
    def test_socket_owner_needs_no_token_in_production(self, prod_server: Server) -> None:
        """SO_PEERCRED: the 0600 socket's owner acts as operator, so no lock-out."""
        assert prod_server.run("status").exit_code == 0
        assert prod_server.run("shutdown", "--reason", "night").exit_code == 0
        assert prod_server.fake.stopped

    def test_token_required_on_tcp(self, tcp_server: Server) -> None:
        """Without SUPERVISOR_TOKEN on TCP: exit 1 and a hint to set it."""
        result = tcp_server.run("status")
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "supervisor: error: a token is required: send it in the Authorization header "
            "as Bearer <token> (set SUPERVISOR_TOKEN)"
        )

    def test_viewer_reads_operator_acts(self, tcp_server: Server) -> None:
        """A viewer token may read but not shut down (403, exit 1); an operator may."""
        assert tcp_server.run("status", token=VIEWER_TOKEN).exit_code == 0
        result = tcp_server.run("shutdown", token=VIEWER_TOKEN)
        assert result.exit_code == 1
        assert "needs operator" in result.stderr
        assert not tcp_server.fake.stopped
        assert tcp_server.run("shutdown", token=OPERATOR_TOKEN).exit_code == 0
        assert tcp_server.fake.stopped

    def test_wrong_token(self, server: Server) -> None:
        """A wrong token is refused even on the development socket."""
        result = server.run("restart", token="nope")
        assert result.exit_code == 1
        assert result.stderr.strip() == "supervisor: error: invalid token"

    def test_unsendable_token_is_usage_error(self, server: Server) -> None:
        """A token with a newline could never be a header: exit 2, one line."""
        result = server.run("status", token="a\nb")
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1


class TestNoSupervisor:
    @pytest.mark.parametrize("command", [["status"], ["shutdown"], ["restart"], ["errors"]])
    def test_missing_socket(self, short_tmp: Path, command: list[str]) -> None:
        """No socket file: one clear line, exit 1, no traceback."""
        listen = f"unix:{short_tmp / 'none.sock'}"
        result = CliRunner().invoke(cli, [*command, "--api", listen])
        assert result.exit_code == 1
        assert result.stderr == (
            f"supervisor: error: no supervisor is running at {listen} (no such socket)\n"
        )
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_refused_tcp(self) -> None:
        """Nothing listening on a TCP port: connection refused, exit 1."""
        result = CliRunner().invoke(cli, ["status", "--api", "http://127.0.0.1:1"])
        assert result.exit_code == 1
        assert "no supervisor is running at 127.0.0.1:1 (connection refused)" in result.stderr

    def test_default_address_from_working_folder(
        self, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without --api or a config, the default socket is named as the user would write it."""
        monkeypatch.chdir(short_tmp)
        result = CliRunner().invoke(cli, ["status"])
        assert result.exit_code == 1
        assert result.stderr == (
            "supervisor: error: no supervisor is running at unix:var/supervisor.sock "
            "(no such socket)\n"
        )

    def test_bad_api_is_usage_error(self) -> None:
        """A malformed --api is exit 2."""
        result = CliRunner().invoke(cli, ["status", "--api", "ftp://x"])
        assert result.exit_code == 2


class TestResolve:
    def test_config_listen_relative_to_the_file(
        self, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--config's [api] listen is used, a relative socket path taken from the file's folder."""
        (short_tmp / "game").mkdir()
        config = short_tmp / "game" / "sv.toml"
        config.write_text('[api]\nlisten = "unix:run/sv.sock"\n')
        monkeypatch.delenv("SUPERVISOR_API_LISTEN", raising=False)
        address = resolve_api(None, str(config))
        assert address.path == str(short_tmp / "game" / "run" / "sv.sock")

    def test_supervisor_toml_in_working_folder(
        self, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """./supervisor.toml is read when --config is not given."""
        monkeypatch.chdir(short_tmp)
        (short_tmp / "supervisor.toml").write_text('[api]\nlisten = "127.0.0.1:9123"\n')
        address = resolve_api(None, None)
        assert (address.host, address.port) == ("127.0.0.1", 9123)

    def test_bad_config_is_usage_error(self, short_tmp: Path) -> None:
        """A config with a wrong key: exit 2 and one line naming the file and key."""
        config = short_tmp / "sv.toml"
        config.write_text('[api]\nlistn = "unix:x.sock"\n')
        result = CliRunner().invoke(cli, ["status", "--config", str(config)])
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
        assert "api.listn" in result.stderr
