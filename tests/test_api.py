"""The HTTP API: the role matrix, the audit log, hostile input, and real sockets.

Most tests drive the ASGI app in memory through ``httpx.ASGITransport``
against :class:`FakeSupervisor`, which records every call and exposes the
state a control action would change. The property test drives the raw ASGI
interface instead, so it can send bytes httpx would refuse to build.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import ApiConfig, Caller, ReadinessCheck, ReadinessReport, Refused, TokenConfig
from supervisor._address import parse_listen
from supervisor._core._control import Unknown
from supervisor._core._redact import Redactor
from supervisor._server._app import make_app
from supervisor._server._audit import AuditEntry, AuditLog
from supervisor._server._serve import ApiListenError, serve_api

OPERATOR_TOKEN = "op-secret-7f3a9c2e"
VIEWER_TOKEN = "view-secret-b41d8e07"
WRONG_TOKEN = "not-a-configured-token"
OWN_UID = os.getuid()
STRANGER_UID = OWN_UID + 4242
UID_CALLER = f"uid:{OWN_UID}({pwd.getpwuid(OWN_UID).pw_name})"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = (
    TokenConfig(name="ops", role="operator", sha256=_sha(OPERATOR_TOKEN)),
    TokenConfig(name="grafana", role="viewer", sha256=_sha(VIEWER_TOKEN)),
)


@attrs.frozen
class _View:
    """A view or an action's answer as the core returns them: ``as_dict()`` is the JSON."""

    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.data)


@attrs.define(eq=False)
class FakeSupervisor:
    """A :class:`Controlled` that records calls and keeps visible state."""

    phase: str = "development"
    alive: bool = True
    ready: bool = True
    stopped: bool = False
    emergency: bool = False
    restarts: int = 0
    refuse: str | None = None  # when set, every action raises Refused with this detail
    explode: bool = False  # when set, every call raises RuntimeError
    status_override: dict[str, Any] | None = None  # when set, status() returns it
    hang: bool = False  # when set, shutdown() waits for ``unhang``
    unhang: trio.Event = attrs.field(factory=trio.Event)
    calls: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)

    def state(self) -> tuple[str, bool, bool, int]:
        """Everything a control action can change."""
        return (self.phase, self.stopped, self.emergency, self.restarts)

    def _call(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.explode:
            raise RuntimeError("boom: secret internals /home/ops/.ssh")

    def report(self) -> ReadinessReport:
        return ReadinessReport(
            checks=(
                ReadinessCheck(name="systems_ready", ok=True, detail="every system healthy"),
                ReadinessCheck(
                    name="security",
                    ok=self.ready,
                    detail="ok" if self.ready else "no tokens configured",
                    recommendation=None if self.ready else "add an operator token to [api]",
                ),
            )
        )

    def status(self) -> _View:
        self._call("status")
        if self.status_override is not None:
            return _View(self.status_override)
        return _View({
            "phase": self.phase,
            "tick": 1234,
            "tick_rate": 30.0,
            "budget": 0.0266,
            "lateness": {"p50": 0.00004, "p99": 0.00009, "max": 0.0012},
            "overruns": 1,
            "dropped_ticks": 0,
            "systems": [
                {
                    "name": "economy",
                    "state": "closed",
                    "health": "healthy",
                    "errors": 2,
                    "step": {"p50": 0.00001, "p99": 0.00003},
                    "every": 1,
                }
            ],
            "gauges": {"players": 200},
            "errors": {"economy": 2},
            "quarantined": [],
            "profile": "low",
            "emergency_reason": None,
            "stopped": self.stopped,
        })

    def liveness(self) -> tuple[bool, str]:
        self._call("liveness")
        return self.alive, "ticking" if self.alive else "tick loop stalled"

    def readiness_gate(self) -> tuple[bool, list[str]]:
        self._call("readiness_gate")
        if self.emergency:
            return False, ["in emergency_shutdown"]
        return self.ready, [] if self.ready else ["economy is quarantined"]

    def readiness(self) -> ReadinessReport:
        self._call("readiness")
        return self.report()

    def error_view(self, *, limit: int, system: str | None) -> _View:
        self._call("error_view", limit=limit, system=system)
        return _View({
            "groups": [
                {
                    "fingerprint": "abcdef0123456789",
                    "system": "economy",
                    "exc_type": "ZeroDivisionError",
                    "message": "division by zero",
                    "count": 2,
                    "last_tick": 1200,
                }
            ],
            "records": [
                {
                    "tick": 1200,
                    "system": "economy",
                    "hook": "tick",
                    "kind": "error",
                    "exc_type": "ZeroDivisionError",
                    "message": "division by zero",
                }
            ],
        })

    def metrics_text(self) -> tuple[bytes, str]:
        self._call("metrics_text")
        return b"supervisor_ticks_total 1234.0\n", "text/plain; version=0.0.4; charset=utf-8"

    async def shutdown(self, *, emergency: bool, reason: str, caller: Caller) -> _View:
        self._call("shutdown", emergency=emergency, reason=reason, caller=caller)
        if self.hang:
            await self.unhang.wait()
        if self.refuse:
            raise Refused(self.refuse)
        if emergency:
            self.emergency = True
            return _View({"detail": "emergency shutdown done; snapshot written", "tick": 1234})
        self.stopped = True
        return _View({"detail": "stopping", "tick": 1234})

    async def restart(self, *, caller: Caller) -> _View:
        self._call("restart", caller=caller)
        if self.refuse:
            raise Refused(self.refuse)
        self.restarts += 1
        self.emergency = False
        return _View({"detail": "restarted from snapshot", "tick": 1234})

    async def quarantine(self, name: str, *, reason: str, caller: Caller) -> _View:
        self._call("quarantine", system=name, reason=reason, caller=caller)
        if name != "economy":
            raise Unknown(f"no such system: {name!r} (systems: economy)")
        if self.refuse:
            raise Refused(self.refuse)
        return _View({"system": name, "state": "quarantined (by operator)", "tick": 1234})

    async def release(self, name: str, *, reason: str, caller: Caller) -> _View:
        self._call("release", system=name, reason=reason, caller=caller)
        if name != "economy":
            raise Unknown(f"no such system: {name!r} (systems: economy)")
        return _View({"system": name, "state": "running", "tick": 1234})

    async def snapshot(self, *, reason: str, caller: Caller) -> _View:
        self._call("snapshot", reason=reason, caller=caller)
        if self.refuse:
            raise Refused(self.refuse)
        return _View({"path": "/srv/game/var/snapshots/snapshot-1234.msgpack", "tick": 1234})

    async def change_phase(
        self, phase: str, *, force: bool, reason: str, caller: Caller
    ) -> _View:
        self._call("change_phase", phase=phase, force=force, reason=reason, caller=caller)
        if self.refuse:
            raise Refused(self.refuse)
        if phase == "production" and not force and not self.ready:
            raise Refused("the readiness gate failed", {"readiness": self.report().as_dict()})
        before, self.phase = self.phase, phase
        return _View({"detail": f"{before} -> {phase}", "before": before, "after": phase})


# ------------------------------------------------------------------ helpers

MODES = {
    # name: (supervisor phase, served on TCP, the Unix peer's uid from SO_PEERCRED)
    "dev-unix": ("development", False, OWN_UID),
    "prod-unix": ("production", False, OWN_UID),
    "stranger-unix": ("development", False, STRANGER_UID),
    "dev-tcp": ("development", True, None),
}


def with_peer(app: Any, uid: int | None) -> Any:
    """``app`` as our listener serves it: the Unix peer's uid in every request's scope."""
    if uid is None:
        return app

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        extensions = {**(scope.get("extensions") or {}), "peer_uid": uid}
        await app({**scope, "extensions": extensions}, receive, send)

    return wrapped


@attrs.define(eq=False)
class Rig:
    """A fake supervisor behind the app, with its audit log."""

    fake: FakeSupervisor
    audit: AuditLog
    app: Any
    peer: int | None = None  # the uid the in-memory transport presents as the Unix peer

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=with_peer(self.app, self.peer))
        return httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers)

    def all_audit_lines(self) -> list[dict[str, Any]]:
        """Every line of the audit file, attempts included."""
        if not self.audit.path.exists():
            return []
        return [json.loads(line) for line in self.audit.path.read_text().splitlines()]

    def audit_lines(self) -> list[dict[str, Any]]:
        """The lines that record what came of a request (no attempt lines)."""
        return [x for x in self.all_audit_lines() if x["stage"] != "attempt"]


def make_rig(
    tmp: Path,
    mode: str = "dev-unix",
    *,
    max_body: int = 65536,
    redactor: Redactor | None = None,
    fake: FakeSupervisor | None = None,
    api_options: dict[str, Any] | None = None,
) -> Rig:
    phase, tcp, peer = MODES[mode]
    fake = fake or FakeSupervisor(phase=phase)
    audit = AuditLog(tmp / "audit" / "audit.jsonl", redactor=redactor)
    api = ApiConfig(tokens=TOKENS, max_body=max_body, **(api_options or {}))
    app = make_app(fake, api=api, tcp=tcp, audit=audit, redactor=redactor)
    return Rig(fake=fake, audit=audit, app=app, peer=peer)


async def call(
    rig: Rig,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with rig.client(token) as client:
        return await client.request(method, path, json=body, content=content, headers=headers)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -------------------------------------------------------------- role matrix

GETS = ["/metrics", "/v1/status", "/v1/readiness", "/v1/errors"]
PROBES = ["/healthz", "/readyz"]
POSTS = {
    "/v1/shutdown": {"reason": "maintenance"},
    "/v1/restart": {},
    "/v1/phase": {"phase": "testing"},
}
CALLERS = {"none": None, "wrong": WRONG_TOKEN, "viewer": VIEWER_TOKEN, "operator": OPERATOR_TOKEN}


def expected_status(mode: str, who: str, path: str) -> int:
    """The status the contract's rules give for one cell of the matrix."""
    if path in PROBES:
        return 200
    if who == "wrong":
        return 401
    if who == "none":
        peer = MODES[mode][2]
        if peer is None:
            return 401
        return 200 if peer == OWN_UID else 403
    if path in POSTS and who == "viewer":
        return 403
    return 200


class TestRoleMatrix:
    @pytest.mark.parametrize("mode", list(MODES))
    @pytest.mark.parametrize("who", list(CALLERS))
    @pytest.mark.parametrize("path", PROBES + GETS + list(POSTS))
    async def test_cell(self, tmp_path: Path, mode: str, who: str, path: str) -> None:
        """Each endpoint x caller x listener answers as section 5 says; only a 200 changes state."""
        rig = make_rig(tmp_path, mode)
        before = rig.fake.state()
        if path in POSTS:
            response = await call(rig, "POST", path, token=CALLERS[who], body=POSTS[path])
        else:
            response = await call(rig, "GET", path, token=CALLERS[who])
        want = expected_status(mode, who, path)
        assert response.status_code == want, response.text
        if want == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        if path == "/metrics" and want == 200:
            assert response.headers["content-type"].startswith("text/plain")
        else:
            assert response.headers["content-type"] == "application/json"
            assert isinstance(response.json(), dict)
        if path in POSTS:
            assert (rig.fake.state() != before) == (want == 200)
            lines = rig.all_audit_lines()
            stages = ["attempt", "result"] if want == 200 else ["result"]
            if who in ("none", "wrong") and want in (401, 403):
                stages = ["refused"]
            assert [x["stage"] for x in lines] == stages
            assert lines[-1]["result"]["status"] == want

    @pytest.mark.parametrize("mode", ["dev-unix", "prod-unix"])
    async def test_socket_owner_is_operator_in_every_phase(self, tmp_path: Path, mode: str) -> None:
        """Without a token, the socket's owner is ``uid:N(name)``, an operator, in any phase."""
        rig = make_rig(tmp_path, mode)
        response = await call(rig, "POST", "/v1/restart")
        assert response.status_code == 200
        name, kwargs = rig.fake.calls[-1]
        assert name == "restart"
        assert kwargs["caller"] == Caller(name=UID_CALLER, role="operator")

    async def test_root_peer_is_operator(self, tmp_path: Path) -> None:
        """Root can always connect to a 0600 socket; it is named as root, not as the owner."""
        rig = make_rig(tmp_path, "prod-unix")
        rig.peer = 0
        assert (await call(rig, "POST", "/v1/restart")).status_code == 200
        assert rig.fake.calls[-1][1]["caller"] == Caller(name="uid:0(root)", role="operator")

    async def test_stranger_needs_a_token(self, tmp_path: Path) -> None:
        """Another uid on the socket is 403 without a token; a token still decides."""
        rig = make_rig(tmp_path, "stranger-unix")
        response = await call(rig, "POST", "/v1/restart")
        assert response.status_code == 403
        assert f"uid {STRANGER_UID}" in response.json()["error"]
        assert (await call(rig, "POST", "/v1/restart", token=OPERATOR_TOKEN)).status_code == 200
        assert rig.fake.restarts == 1

    async def test_no_peer_credentials_needs_a_token(self, tmp_path: Path) -> None:
        """Served without our listener (no peer uid in the scope), the socket fails closed: 401."""
        rig = make_rig(tmp_path, "dev-unix")
        rig.peer = None
        assert (await call(rig, "GET", "/v1/status")).status_code == 401

    async def test_token_names_the_caller(self, tmp_path: Path) -> None:
        """A token's configured name and role reach the supervisor as the caller."""
        rig = make_rig(tmp_path, "prod-unix")
        response = await call(
            rig, "POST", "/v1/phase", token=OPERATOR_TOKEN, body={"phase": "Testing"}
        )
        assert response.status_code == 200
        assert rig.fake.calls[-1] == (
            "change_phase",
            {
                "phase": "testing",
                "force": False,
                "reason": "",
                "caller": Caller(name="ops", role="operator"),
            },
        )

    async def test_phase_change_does_not_lock_the_owner_out(self, tmp_path: Path) -> None:
        """Issue 8: leaving development on the socket no longer makes the owner need a token."""
        rig = make_rig(tmp_path, "dev-unix")
        assert (await call(rig, "POST", "/v1/phase", body={"phase": "testing"})).status_code == 200
        assert rig.fake.phase == "testing"
        assert (await call(rig, "GET", "/v1/status")).status_code == 200
        assert (
            await call(rig, "POST", "/v1/phase", body={"phase": "development"})
        ).status_code == 200
        assert (await call(rig, "GET", "/v1/status", token=WRONG_TOKEN)).status_code == 401

    @pytest.mark.parametrize(
        "header",
        [
            "Basic b3BzOnB3",
            "Bearer",
            "Bearer ",
            f"Token {OPERATOR_TOKEN}",
            f"Bearer {VIEWER_TOKEN}x",
        ],
    )
    async def test_malformed_credentials_are_401(self, tmp_path: Path, header: str) -> None:
        """Anything in Authorization but a known bearer token is 401, even in development."""
        rig = make_rig(tmp_path, "dev-unix")
        response = await call(rig, "POST", "/v1/restart", headers={"authorization": header})
        assert response.status_code == 401
        assert rig.fake.restarts == 0

    async def test_bearer_scheme_is_case_insensitive(self, tmp_path: Path) -> None:
        """RFC 7235: the auth scheme is case-insensitive."""
        rig = make_rig(tmp_path, "prod-unix")
        headers = {"authorization": f"bearer {OPERATOR_TOKEN}"}
        assert (await call(rig, "POST", "/v1/restart", headers=headers)).status_code == 200

    async def test_two_authorization_headers_are_401(self, tmp_path: Path) -> None:
        """Two credentials are ambiguous: refused, even if one of them is valid."""
        rig = make_rig(tmp_path, "prod-unix")
        async with rig.client() as client:
            request = client.build_request("POST", "/v1/restart", json={})
            request.headers = httpx.Headers(
                [
                    *request.headers.multi_items(),
                    ("authorization", f"Bearer {OPERATOR_TOKEN}"),
                    ("authorization", f"Bearer {VIEWER_TOKEN}"),
                ]
            )
            response = await client.send(request)
        assert response.status_code == 401
        assert rig.fake.restarts == 0


# -------------------------------------------------------------- behaviour


class TestEndpoints:
    async def test_healthz_reports_liveness(self, tmp_path: Path) -> None:
        """/healthz is 200 while alive and 503 with the detail otherwise."""
        rig = make_rig(tmp_path, "prod-unix")
        assert (await call(rig, "GET", "/healthz")).json() == {"alive": True, "detail": "ticking"}
        rig.fake.alive = False
        response = await call(rig, "GET", "/healthz")
        assert response.status_code == 503
        assert response.json() == {"alive": False, "detail": "tick loop stalled"}

    async def test_readyz_reports_the_gate(self, tmp_path: Path) -> None:
        """/readyz is 503 with reasons in an emergency."""
        rig = make_rig(tmp_path, "prod-unix")
        assert (await call(rig, "GET", "/readyz")).json() == {"ready": True, "reasons": []}
        rig.fake.emergency = True
        response = await call(rig, "GET", "/readyz")
        assert response.status_code == 503
        assert response.json() == {"ready": False, "reasons": ["in emergency_shutdown"]}

    async def test_head_is_a_get_without_body(self, tmp_path: Path) -> None:
        """HEAD works where GET does (curl -I) and sends no body."""
        rig = make_rig(tmp_path)
        response = await call(rig, "HEAD", "/healthz")
        assert response.status_code == 200
        assert response.content == b""
        assert int(response.headers["content-length"]) > 0

    async def test_metrics_body_and_type(self, tmp_path: Path) -> None:
        """/metrics passes the core's exposition and content type through, then the API counters."""
        rig = make_rig(tmp_path)
        response = await call(rig, "GET", "/metrics")
        assert response.content.startswith(b"supervisor_ticks_total 1234.0\n# HELP supervisor_api_")
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = [x for x in response.text.splitlines()[1:] if not x.startswith("#")]
        assert 'supervisor_api_connections_total{outcome="evicted"} 0.0' in samples
        assert "supervisor_api_accept_pauses_total 0.0" in samples
        assert "supervisor_api_accept_paused_seconds_total 0.0" in samples
        assert all(x.startswith("supervisor_api_") for x in samples)

    async def test_readiness_not_ok_is_still_200(self, tmp_path: Path) -> None:
        """The readiness report is an answer, not a failure: its 'ok' says the rest."""
        rig = make_rig(tmp_path)
        rig.fake.ready = False
        response = await call(rig, "GET", "/v1/readiness")
        assert response.status_code == 200
        assert response.json()["ok"] is False
        assert response.json()["checks"][1]["recommendation"] == "add an operator token to [api]"

    async def test_errors_query(self, tmp_path: Path) -> None:
        """limit and system reach error_view; limit defaults to 20."""
        rig = make_rig(tmp_path)
        await call(rig, "GET", "/v1/errors")
        await call(rig, "GET", "/v1/errors?limit=1000&system=economy")
        views = [kw for name, kw in rig.fake.calls if name == "error_view"]
        assert views == [{"limit": 20, "system": None}, {"limit": 1000, "system": "economy"}]

    async def test_refused_is_409_with_payload(self, tmp_path: Path) -> None:
        """Refused becomes 409 with the detail and its payload (the blocking readiness report)."""
        rig = make_rig(tmp_path)
        rig.fake.ready = False
        response = await call(rig, "POST", "/v1/phase", body={"phase": "production"})
        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "the readiness gate failed"
        assert body["readiness"]["ok"] is False
        assert rig.fake.phase == "development"

    async def test_emergency_shutdown_then_restart(self, tmp_path: Path) -> None:
        """The emergency flag reaches the supervisor; restart clears it."""
        rig = make_rig(tmp_path)
        response = await call(
            rig, "POST", "/v1/shutdown", body={"emergency": True, "reason": "disk failing"}
        )
        assert response.status_code == 200
        assert rig.fake.emergency
        assert (await call(rig, "POST", "/v1/restart", content=b"")).status_code == 200
        assert not rig.fake.emergency

    async def test_unexpected_exception_is_a_bare_500(self, tmp_path: Path) -> None:
        """A handler that raises gives 500 'internal error': no traceback, no internals."""
        rig = make_rig(tmp_path)
        rig.fake.explode = True
        for method, path in [("GET", "/v1/status"), ("POST", "/v1/restart")]:
            response = await call(rig, method, path, body={} if method == "POST" else None)
            assert response.status_code == 500
            assert response.json() == {"error": "internal error"}
            assert "boom" not in response.text
        assert rig.audit_lines()[-1]["result"] == {"status": 500, "detail": "internal error"}

    async def test_nan_in_status_is_null(self, tmp_path: Path) -> None:
        """A NaN in the supervisor's answer becomes null: the body stays valid JSON."""
        rig = make_rig(tmp_path)
        rig.fake.status_override = {"p99": float("nan"), "ok": 1.0}
        response = await call(rig, "GET", "/v1/status")
        assert response.json() == {"p99": None, "ok": 1.0}

    async def test_error_answers_are_redacted(self, tmp_path: Path) -> None:
        """With a redactor, a refusal naming personal data is redacted in the answer."""
        rig = make_rig(tmp_path, redactor=Redactor())
        rig.fake.refuse = "player alice@example.com is still connected"
        response = await call(rig, "POST", "/v1/restart")
        assert response.status_code == 409
        assert response.json()["error"] == "player [email] is still connected"


# -------------------------------------------------------------------- audit


class TestAudit:
    async def test_every_post_is_recorded(self, tmp_path: Path) -> None:
        """Accepted, refused, 401, 403 and 400 requests each leave their lines with all fields.

        An action carried out has an attempt line before its result line;
        anonymous refusals are tallied (``stage`` refused, with a count).
        """
        rig = make_rig(tmp_path, "dev-tcp")
        await call(rig, "POST", "/v1/shutdown", token=OPERATOR_TOKEN, body={"reason": "patch"})
        rig.fake.refuse = "already stopping"
        await call(rig, "POST", "/v1/restart", token=OPERATOR_TOKEN)
        await call(rig, "POST", "/v1/restart")
        await call(rig, "POST", "/v1/phase", token=WRONG_TOKEN)
        await call(rig, "POST", "/v1/phase", token=VIEWER_TOKEN, body={"phase": "testing"})
        await call(rig, "POST", "/v1/phase", token=OPERATOR_TOKEN, body={"phase": 3})
        lines = rig.all_audit_lines()
        assert [
            (x["stage"], x["caller"], x["role"], x["action"], (x["result"] or {}).get("status"))
            for x in lines
        ] == [
            ("attempt", "ops", "operator", "shutdown", None),
            ("result", "ops", "operator", "shutdown", 200),
            ("attempt", "ops", "operator", "restart", None),
            ("result", "ops", "operator", "restart", 409),
            ("refused", "anonymous", None, "restart", 401),
            ("refused", "anonymous", None, "phase", 401),
            ("result", "grafana", "viewer", "phase", 403),
            ("result", "ops", "operator", "phase", 400),
        ]
        assert lines[0]["arguments"] == {"emergency": False, "reason": "patch"}
        assert lines[0]["result"] is None
        assert lines[1]["result"]["detail"] == "stopping"
        assert lines[3]["result"]["detail"] == "already stopping"
        assert lines[4]["source"] == "127.0.0.1"
        assert lines[4]["count"] == 1
        assert lines[7]["arguments"] is None
        assert "'phase'" in lines[7]["result"]["detail"]
        for line in lines:
            assert {"time", "stage", "caller", "role", "action", "arguments", "result"} <= set(line)
            assert line["time"].endswith("Z")

    async def test_cancelled_action_still_recorded(self, tmp_path: Path) -> None:
        """A request cancelled inside the action (a shutdown stopping the API) is still audited."""
        rig = make_rig(tmp_path)
        rig.fake.hang = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(call, rig, "POST", "/v1/shutdown", body={}))
            # The attempt line is written from a worker thread first: wait for the call.
            with trio.fail_after(5):
                while not rig.fake.calls:  # noqa: ASYNC110 - the fake's state, no event
                    await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            assert rig.fake.calls[-1][0] == "shutdown"
            nursery.cancel_scope.cancel()
        [line] = rig.audit_lines()
        assert line["action"] == "shutdown"
        assert line["result"]["status"] == 499

    async def test_gets_are_not_recorded(self, tmp_path: Path) -> None:
        """Reads change nothing and are not audited; neither are 404s and 405s."""
        rig = make_rig(tmp_path)
        await call(rig, "GET", "/v1/status")
        await call(rig, "GET", "/v1/shutdown")
        await call(rig, "POST", "/v1/nothing")
        assert rig.audit_lines() == []

    async def test_token_never_written(self, tmp_path: Path) -> None:
        """Neither token, nor its hash, ever appears in the audit file."""
        rig = make_rig(tmp_path, "prod-unix")
        for token in (OPERATOR_TOKEN, VIEWER_TOKEN, WRONG_TOKEN):
            await call(rig, "POST", "/v1/restart", token=token)
        text = rig.audit.path.read_text()
        assert len(text.splitlines()) == 4  # the operator's attempt and result, 403, 401
        for secret in (OPERATOR_TOKEN, VIEWER_TOKEN, WRONG_TOKEN, _sha(OPERATOR_TOKEN)):
            assert secret not in text

    async def test_file_and_folder_modes(self, tmp_path: Path) -> None:
        """The audit folder it creates is 0700 and the file 0600."""
        rig = make_rig(tmp_path)
        await call(rig, "POST", "/v1/restart")
        assert stat.S_IMODE(rig.audit.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(rig.audit.path.parent.stat().st_mode) == 0o700

    async def test_arguments_redacted(self, tmp_path: Path) -> None:
        """A reason holding personal data is redacted in the audit line."""
        rig = make_rig(tmp_path, redactor=Redactor())
        reason = "ban bob@example.com from 10.1.2.3"
        await call(rig, "POST", "/v1/shutdown", body={"reason": reason})
        line = rig.audit_lines()[0]
        assert line["arguments"]["reason"] == "ban [email] from [ip]"
        assert "bob@" not in rig.audit.path.read_text()

    async def test_write_failure_refuses_the_action(self, tmp_path: Path) -> None:
        """Fail closed: an action whose attempt line cannot be written is a 503 and not done."""
        (tmp_path / "audit").write_text("a file where the folder should be")
        rig = make_rig(tmp_path)
        assert not rig.audit.writable()
        response = await call(rig, "POST", "/v1/restart")
        assert response.status_code == 503
        assert "audit log" in response.json()["error"]
        assert rig.fake.restarts == 0
        assert not [c for c in rig.fake.calls if c[0] == "restart"]
        assert rig.audit.failures == 1
        assert rig.audit.written == 0
        metrics = (await call(rig, "GET", "/metrics")).text
        assert "supervisor_api_unaudited_refusals_total 1.0" in metrics
        assert "supervisor_api_audit_failures_total 1.0" in metrics

    def test_appends_whole_lines(self, tmp_path: Path) -> None:
        """Entries append to an existing file; each line is one JSON object."""
        audit = AuditLog(tmp_path / "a.jsonl")
        audit.path.write_text('{"earlier": true}\n')
        entry = AuditEntry(
            caller="ops", role="operator", action="restart", arguments={}, status=200, detail="ok"
        )
        assert audit.write(entry)
        assert audit.write(entry)
        lines = audit.path.read_text().splitlines()
        assert len(lines) == 3
        assert json.loads(lines[2])["result"] == {"status": 200, "detail": "ok"}
        assert audit.writable()


# ----------------------------------------------------------- hostile input

HOSTILE: list[tuple[str, str, dict[str, str], bytes, int]] = [
    # method, path, headers, body, expected status
    ("POST", "/v1/shutdown", {}, b"{not json", 400),
    ("POST", "/v1/shutdown", {}, b"[]", 400),
    ("POST", "/v1/shutdown", {}, b'"stop"', 400),
    ("POST", "/v1/shutdown", {}, b"\xff\xfe{}", 400),
    ("POST", "/v1/shutdown", {}, b'{"emergency": NaN}', 400),
    ("POST", "/v1/shutdown", {}, b'{"emergency": 1}', 400),
    ("POST", "/v1/shutdown", {}, b'{"emergency": "true"}', 400),
    ("POST", "/v1/shutdown", {}, b'{"reason": null}', 400),
    ("POST", "/v1/shutdown", {}, b'{"emergency": true, "emergency": false}', 400),
    ("POST", "/v1/shutdown", {}, b'{"emergncy": true}', 400),
    ("POST", "/v1/shutdown", {}, json.dumps({"reason": "x" * 501}).encode(), 400),
    ("POST", "/v1/shutdown", {}, b"[" * 500 + b"]" * 500, 400),
    ("POST", "/v1/restart", {}, b'{"force": true}', 400),
    ("POST", "/v1/phase", {}, b"{}", 400),
    ("POST", "/v1/phase", {}, b'{"phase": "nirvana"}', 400),
    ("POST", "/v1/phase", {}, b'{"phase": ["testing"]}', 400),
    ("POST", "/v1/phase", {}, b'{"phase": "testing", "force": "yes"}', 400),
    ("POST", "/v1/phase", {"content-type": "text/plain"}, b'{"phase": "testing"}', 415),
    ("POST", "/v1/phase", {"content-type": "application/x-www-form-urlencoded"}, b"a=b", 415),
    ("POST", "/v1/phase", {}, b'{"phase": "testing", "pad": "' + b"x" * 2000 + b'"}', 413),
    ("POST", "/v1/restart", {"content-length": "99999999"}, b"", 413),
    ("GET", "/v1/errors?limit=0", {}, b"", 400),
    ("GET", "/v1/errors?limit=1001", {}, b"", 400),
    ("GET", "/v1/errors?limit=ten", {}, b"", 400),
    ("GET", "/v1/errors?limit=%EF%BC%95", {}, b"", 400),  # a full-width five
    ("GET", "/v1/errors?limit=5&limit=6", {}, b"", 400),
    ("GET", "/v1/errors?system=", {}, b"", 400),
    ("GET", "/v1/errors?colour=red", {}, b"", 400),
    ("GET", "/v1/errors?%ff=1", {}, b"", 400),
    ("GET", "/v1/status?verbose=1", {}, b"", 400),
    ("GET", "/v2/status", {}, b"", 404),
    ("GET", "/v1/status/", {}, b"", 404),
    ("GET", "/", {}, b"", 404),
    ("DELETE", "/v1/status", {}, b"", 405),
    ("GET", "/v1/shutdown", {}, b"", 405),
    ("PUT", "/v1/phase", {}, b'{"phase": "testing"}', 405),
]


class TestHostileInput:
    @pytest.mark.parametrize(("method", "path", "headers", "body", "want"), HOSTILE)
    async def test_rejected_and_nothing_changes(
        self,
        tmp_path: Path,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        want: int,
    ) -> None:
        """Malformed requests get the right 4xx, a JSON error, and change nothing."""
        rig = make_rig(tmp_path, max_body=1024)
        before = rig.fake.state()
        response = await call(rig, method, path, content=body, headers=headers)
        assert response.status_code == want, response.text
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["error"], str)
        assert rig.fake.state() == before
        assert not [c for c in rig.fake.calls if c[0] in {"shutdown", "restart", "change_phase"}]

    async def test_nesting_past_the_recursion_limit(self, tmp_path: Path) -> None:
        """JSON nested deeper than the parser's recursion limit is a 400, not a 500."""
        rig = make_rig(tmp_path)
        body = b'{"reason": ' + b"[" * 20000 + b"]" * 20000 + b"}"
        response = await call(rig, "POST", "/v1/shutdown", content=body)
        assert response.status_code == 400
        assert not rig.fake.stopped

    async def test_methods_are_case_sensitive(self, tmp_path: Path) -> None:
        """'post' is not POST (RFC 9110): 405, nothing done. Raw ASGI, as httpx upper-cases."""
        rig = make_rig(tmp_path)
        request = {
            "method": "post",
            "path": "/v1/restart",
            "query": b"",
            "headers": [],
            "body": b"",
            "chunks": 1,
        }
        status, headers, _ = await asgi_request(rig.app, request)
        assert (status, headers[b"allow"]) == (405, b"POST")
        assert rig.fake.restarts == 0

    async def test_405_names_the_allowed_methods(self, tmp_path: Path) -> None:
        """A wrong method's answer carries Allow."""
        rig = make_rig(tmp_path)
        assert (await call(rig, "POST", "/v1/status")).headers["allow"] == "GET, HEAD"
        assert (await call(rig, "GET", "/v1/restart")).headers["allow"] == "POST"

    async def test_400_names_the_key(self, tmp_path: Path) -> None:
        """The error of a bad body names the key at fault and the known ones."""
        rig = make_rig(tmp_path)
        response = await call(rig, "POST", "/v1/shutdown", body={"emergncy": True})
        assert response.json()["error"] == "unknown key 'emergncy' (known keys: emergency, reason)"
        response = await call(rig, "POST", "/v1/shutdown", body={"emergency": "yes"})
        assert response.json()["error"] == "key 'emergency' must be true or false"

    async def test_body_streamed_past_the_limit_stops_reading(self, tmp_path: Path) -> None:
        """A body without Content-Length that grows past max_body is cut off with 413."""
        rig = make_rig(tmp_path, max_body=100)
        sent = 0

        async def chunks() -> Any:
            nonlocal sent
            for _ in range(1000):
                sent += 1
                yield b"x" * 50

        async with rig.client() as client:
            response = await client.post("/v1/restart", content=chunks())
        assert response.status_code == 413
        assert sent < 10  # it stopped asking for more


# --------------------------------------------------------- property test

ACTIONS = {"/v1/shutdown", "/v1/restart", "/v1/phase"}
_AUTH_VALUES = [
    b"Bearer " + OPERATOR_TOKEN.encode(),
    b"bearer " + OPERATOR_TOKEN.encode(),
    b"Bearer " + VIEWER_TOKEN.encode(),
    b"Bearer " + WRONG_TOKEN.encode(),
    b"Basic " + OPERATOR_TOKEN.encode(),
    b"Bearer",
    b"",
    b"\xff\x00",
]
_OPERATOR_AUTH = set(_AUTH_VALUES[:2])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.sampled_from(["emergency", "reason", "phase", "force", "x"]), json_values, max_size=4
    ).map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"", b"{}", b'{"phase": "production", "force": true}']),
    st.integers(1000, 3000).map(lambda n: b"{" + b" " * n + b"}"),
)
header_names = st.sampled_from(
    [b"authorization", b"content-type", b"content-length", b"x-other", b"Authorization"]
)
header_values = st.one_of(
    st.sampled_from(
        [*_AUTH_VALUES, b"application/json", b"text/plain", b"10", b"-1", b"99999999999"]
    ),
    st.binary(max_size=40),
)
requests = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(list(MODES)),
        "method": st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "get", ""])
        | st.text(max_size=8),
        "path": st.sampled_from([*PROBES, *GETS, *ACTIONS, "/", "/v1", "/v1/phase/"])
        | st.text(max_size=30),
        "query": st.sampled_from([b"", b"limit=5", b"limit=-1", b"system=x&limit=2", b"&&=", b"%"])
        | st.binary(max_size=20),
        "headers": st.lists(st.tuples(header_names, header_values), max_size=4),
        "body": bodies,
        "chunks": st.integers(1, 3),
    }
)


async def asgi_request(app: Any, request: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one raw ASGI request, the body split into chunks; return status, headers, body."""
    body: bytes = request["body"]
    size = max(1, len(body) // request["chunks"] + 1)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "path": request["path"],
        "raw_path": request["path"].encode("utf-8", "surrogateescape"),
        "query_string": request["query"],
        "headers": [(k.lower(), v) for k, v in request["headers"]],
        "scheme": "http",
        "server": None,
        "client": None,
        "root_path": "",
    }
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    assert [m["type"] for m in sent[1:]] == ["http.response.body"]
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def is_operator(request: dict[str, Any]) -> bool:
    """The oracle: does this request carry operator rights under section 5's rules?"""
    auth = [v for k, v in request["headers"] if k.lower() == b"authorization"]
    if not auth:
        return MODES[request["mode"]][2] == OWN_UID
    return len(auth) == 1 and auth[0] in _OPERATOR_AUTH


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests)
async def test_no_5xx_and_no_unauthorised_change(tmp_path: Path, request: dict[str, Any]) -> None:
    """Arbitrary methods, paths, headers, bodies: never a 5xx; no change without operator rights."""
    rig = make_rig(tmp_path, request["mode"], max_body=1024)
    before = rig.fake.state()
    status, headers, body = await asgi_request(with_peer(rig.app, rig.peer), request)
    assert 200 <= status < 500
    if not (request["path"] == "/metrics" and status == 200):
        assert headers[b"content-type"] == b"application/json"
        if request["method"] != "HEAD":
            assert isinstance(json.loads(body), dict)
    if rig.fake.state() != before:
        assert status == 200
        assert request["method"] == "POST"
        assert request["path"] in ACTIONS
        assert is_operator(request)


# ------------------------------------------------------------ real sockets


class TestServe:
    async def test_unix_socket(self, short_tmp: Path) -> None:
        """serve_api on a Unix socket: folder 0700, socket 0600, answers, removed on exit."""
        rig = make_rig(short_tmp)
        sock_path = short_tmp / "run" / "api.sock"
        async with trio.open_nursery() as nursery:
            shown = await nursery.start(serve_api, rig.app, f"unix:{sock_path}")
            assert shown == f"unix:{sock_path}"
            assert stat.S_ISSOCK(sock_path.stat().st_mode)
            assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
            assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700
            transport = httpx.AsyncHTTPTransport(uds=str(sock_path))
            async with httpx.AsyncClient(transport=transport, base_url="http://sv") as client:
                assert (await client.get("/healthz")).json()["alive"] is True
                response = await client.post("/v1/shutdown", json={"reason": "done"})
                assert response.status_code == 200
            nursery.cancel_scope.cancel()
        assert rig.fake.stopped
        assert rig.audit_lines()[0]["caller"] == UID_CALLER
        assert not sock_path.exists()

    async def test_tcp_port_zero(self, tmp_path: Path) -> None:
        """serve_api on 127.0.0.1:0 reports the real port; TCP always needs a token."""
        rig = make_rig(tmp_path, "dev-tcp")
        async with trio.open_nursery() as nursery:
            shown = await nursery.start(serve_api, rig.app, "127.0.0.1:0")
            address = parse_listen(shown)
            assert address.host == "127.0.0.1"
            assert address.port > 0
            async with httpx.AsyncClient(base_url=f"http://{shown}") as client:
                assert (await client.get("/v1/status")).status_code == 401
                headers = {"authorization": f"Bearer {VIEWER_TOKEN}"}
                assert (await client.get("/v1/status", headers=headers)).status_code == 200
            nursery.cancel_scope.cancel()

    async def test_shutdown_trigger_returns(self, short_tmp: Path) -> None:
        """When shutdown_trigger returns, serve_api returns by itself and removes the socket."""
        rig = make_rig(short_tmp)
        stop = trio.Event()
        path = short_tmp / "api.sock"
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        serve_api, rig.app, f"unix:{path}", shutdown_trigger=stop.wait
                    )
                )
                assert path.exists()
                stop.set()
        assert not path.exists()

    async def test_stale_socket_replaced_live_one_refused(self, short_tmp: Path) -> None:
        """A socket file nobody listens on is removed; one a live server owns is an error."""
        path = short_tmp / "api.sock"
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(path))
        rig = make_rig(short_tmp)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_api, rig.app, f"unix:{path}")
            with pytest.raises(ApiListenError, match="another process is serving"):
                await serve_api(rig.app, f"unix:{path}")
            nursery.cancel_scope.cancel()

    async def test_listen_errors(self, short_tmp: Path) -> None:
        """A regular file in the way, or a malformed address, is an ApiListenError naming it."""
        (short_tmp / "file").write_text("")
        with pytest.raises(ApiListenError, match="not a socket"):
            await serve_api(make_rig(short_tmp).app, f"unix:{short_tmp / 'file'}")
        with pytest.raises(ApiListenError, match="nowhere:port"):
            await serve_api(make_rig(short_tmp).app, "nowhere:port")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("unix:var/supervisor.sock", "unix:var/supervisor.sock"),
        ("unix:///run/sv.sock", "unix:/run/sv.sock"),
        ("127.0.0.1:9100", "127.0.0.1:9100"),
        ("http://localhost:9100/", "localhost:9100"),
        ("[::1]:9100", "[::1]:9100"),
    ],
)
def test_parse_listen(text: str, shown: str) -> None:
    """The listen forms the config and --api accept, and how each is shown."""
    assert str(parse_listen(text)) == shown


@pytest.mark.parametrize("text", ["unix:", "localhost", "host:99999", "https://h:1", ":80", "h:x"])
def test_parse_listen_rejects(text: str) -> None:
    """Malformed addresses are a ValueError, not a guess."""
    with pytest.raises(ValueError, match=r"expected|port"):
        parse_listen(text)
