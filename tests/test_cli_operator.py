"""The operator commands' client side (``quarantine``, ``release``, ``snapshot``) and
``errors --system``, against a fake API that records what it was sent.

The supervisor's routes for quarantine, release and snapshot come with the
core's commands (issue 10, part B); until then these tests pin the requests
the CLI sends and how it reads the answers, and a real supervisor without
the routes is shown to fail in one line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest
from click.testing import CliRunner, Result

from supervisor._cli._main import cli


@attrs.define
class FakeApi:
    """Answers each path from ``answers`` (status, JSON) and records every request."""

    answers: dict[str, tuple[int, Any]] = attrs.Factory(dict)
    requests: list[tuple[str, str, Any, str | None]] = attrs.Factory(list)
    url: str = ""

    def run(self, *args: str, token: str | None = None) -> Result:
        return CliRunner().invoke(cli, [*args, "--api", self.url], env={"SUPERVISOR_TOKEN": token})


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A loopback HTTP server in a thread, answering JSON."""
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.split("?")[0]
            fake.requests.append((self.command, self.path, body, self.headers.get("authorization")))
            status, data = fake.answers.get(path, (404, {"error": f"no such endpoint: {path!r}"}))
            raw = data if isinstance(data, bytes) else json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _answer  # http.server's names

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class TestQuarantineRelease:
    def test_quarantine_posts_the_reason(self, api: FakeApi) -> None:
        """POST /v1/systems/NAME/quarantine with the reason; the answer's detail printed."""
        api.answers["/v1/systems/economy/quarantine"] = (
            200,
            {"detail": "economy quarantined at tick 812"},
        )
        result = api.run("quarantine", "economy", "--reason", "slow query", token="t0k")
        assert result.exit_code == 0, result.output
        assert result.stdout == "quarantine: economy quarantined at tick 812\n"
        assert api.requests == [
            ("POST", "/v1/systems/economy/quarantine", {"reason": "slow query"}, "Bearer t0k")
        ]

    def test_release(self, api: FakeApi) -> None:
        """POST /v1/systems/NAME/release."""
        api.answers["/v1/systems/economy/release"] = (200, {"system": "economy", "tick": 900})
        result = api.run("release", "economy")
        assert result.exit_code == 0, result.output
        assert result.stdout == "release: system=economy, tick=900\n"
        assert api.requests[0][:3] == ("POST", "/v1/systems/economy/release", {"reason": ""})

    def test_name_is_quoted_into_the_path(self, api: FakeApi) -> None:
        """A name with a slash or space stays one path segment."""
        api.run("quarantine", "a/b c")
        assert api.requests[0][1] == "/v1/systems/a%2Fb%20c/quarantine"

    def test_refused(self, api: FakeApi) -> None:
        """A refusal (a viewer token) is one line and exit 1."""
        api.answers["/v1/systems/economy/quarantine"] = (403, {"error": "needs the operator role"})
        result = api.run("quarantine", "economy", token="viewer")
        assert result.exit_code == 1
        assert result.stderr == "supervisor: error: needs the operator role\n"

    def test_supervisor_without_the_route(self, api: FakeApi) -> None:
        """An older supervisor answers 404 "no such endpoint": said in one line, exit 1."""
        result = api.run("release", "economy")
        assert result.exit_code == 1
        assert result.stderr == (
            "supervisor: error: no such endpoint: '/v1/systems/economy/release'\n"
        )

    def test_reason_length_is_bounded(self, api: FakeApi) -> None:
        """An over-long reason is a usage error before anything is sent."""
        result = api.run("quarantine", "economy", "--reason", "x" * 100_000)
        assert result.exit_code == 2
        assert api.requests == []


class TestSnapshot:
    def test_prints_the_path(self, api: FakeApi) -> None:
        """POST /v1/snapshot; the path (and tick) the supervisor wrote is printed."""
        api.answers["/v1/snapshot"] = (
            200,
            {"path": "/srv/game/var/snapshots/snapshot-812.msgpack", "tick": 812},
        )
        result = api.run("snapshot", "--reason", "before the reset")
        assert result.exit_code == 0, result.output
        assert (
            result.stdout == "snapshot: /srv/game/var/snapshots/snapshot-812.msgpack (tick 812)\n"
        )
        assert api.requests[0][:3] == ("POST", "/v1/snapshot", {"reason": "before the reset"})

    def test_failed(self, api: FakeApi) -> None:
        """A snapshot that could not be written: the supervisor's line, exit 1."""
        api.answers["/v1/snapshot"] = (500, {"error": "snapshot failed: disk full"})
        result = api.run("snapshot")
        assert result.exit_code == 1
        assert result.stderr == "supervisor: error: snapshot failed: disk full\n"


STATUS = {"systems": [{"name": "economy"}, {"name": "players"}]}
NO_ERRORS = {"records": [], "groups": [], "counts": {}, "total": 0}


class TestErrorsSystem:
    def test_no_such_system(self, api: FakeApi) -> None:
        """``errors --system nosuch`` says so (the status lists the systems), exit 1."""
        api.answers["/v1/errors"] = (200, NO_ERRORS)
        api.answers["/v1/status"] = (200, STATUS)
        result = api.run("errors", "--system", "nosuch")
        assert result.exit_code == 1
        assert result.stderr == (
            "supervisor: error: no such system 'nosuch' (systems: economy, players)\n"
        )

    def test_a_system_without_errors(self, api: FakeApi) -> None:
        """A real system with no errors: "no errors recorded", exit 0."""
        api.answers["/v1/errors"] = (200, NO_ERRORS)
        api.answers["/v1/status"] = (200, STATUS)
        result = api.run("errors", "--system", "economy")
        assert result.exit_code == 0, result.output
        assert result.stdout == "no errors recorded\n"

    def test_status_not_asked_when_there_are_errors(self, api: FakeApi) -> None:
        """Records found: one request, no status look-up."""
        api.answers["/v1/errors"] = (
            200,
            {"records": [{"system": "economy", "tick": 3}], "groups": [], "total": 1},
        )
        result = api.run("errors", "--system", "economy", "--json")
        assert result.exit_code == 0, result.output
        assert [path.split("?")[0] for _, path, _, _ in api.requests] == ["/v1/errors"]


class TestTransport:
    """The standard-library client's answers to a server that misbehaves."""

    def test_not_json(self, api: FakeApi) -> None:
        """An answer that is not JSON: one line naming the address and the status, exit 1."""
        api.answers["/v1/snapshot"] = (200, b"<html>proxy</html>")
        result = api.run("snapshot")
        assert result.exit_code == 1
        assert result.stderr == (
            f"supervisor: error: unexpected answer from {api.url.removeprefix('http://')}: "
            "HTTP 200, not JSON\n"
        )

    def test_query_and_headers(self, api: FakeApi) -> None:
        """GET parameters are URL-encoded; the token travels as a bearer token."""
        api.answers["/v1/errors"] = (200, {"records": [{"system": "a b"}], "groups": []})
        result = api.run("errors", "--system", "a b&c", "--limit", "3", token="s3cret")
        assert result.exit_code == 0, result.output
        _, path, _, auth = api.requests[0]
        assert path == "/v1/errors?limit=3&system=a+b%26c"
        assert auth == "Bearer s3cret"
