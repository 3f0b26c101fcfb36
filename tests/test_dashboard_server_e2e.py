"""The dashboard's server side on the wire: a real ``supervisor run`` on TCP, real sockets.

One supervisor for the module (tokens for a viewer and an operator); the
restart test starts its own. Streams are read from raw sockets so that a
client can hang up half-way through a frame, or a hundred can be held open.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"
OPS_TOKEN = "dash-ops-5c1e0f"
VIEW_TOKEN = "dash-view-92ab44"
CONFIG = """
[supervisor]
tick_rate = 30
state_dir = "var"
snapshot_interval = 0
[systems]
enabled = ["players", "economy"]
[api]
listen = "127.0.0.1:0"
audit_log = "var/audit.jsonl"
max_connections = 256
tokens = [
  {{ name = "ops", role = "operator", sha256 = "{ops}" }},
  {{ name = "viewer", role = "viewer", sha256 = "{view}" }},
]
"""
_LISTENING = re.compile(r'"listen": "127\.0\.0\.1:(\d+)"[^\n]*"event": "api\.listening"')


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.frozen
class Server:
    folder: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str) -> float:
        text = httpx.get(
            f"{self.base}/metrics", headers={"authorization": f"Bearer {VIEW_TOKEN}"}
        ).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match is not None, name
        return float(match[1])

    def log(self) -> str:
        return (self.folder / "run.log").read_text(errors="replace")


@contextlib.contextmanager
def _supervisor(folder: Path) -> Iterator[Server]:
    (folder / "supervisor.toml").write_text(
        CONFIG.format(ops=_sha(OPS_TOKEN), view=_sha(VIEW_TOKEN))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    with (folder / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(SUPERVISOR), "run", "--log-format", "json"],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            ports = _LISTENING.findall((folder / "run.log").read_text(errors="replace"))
            if ports:
                break
            assert proc.poll() is None, (folder / "run.log").read_text()
            assert time.monotonic() < deadline, "the API never listened"
            time.sleep(0.05)
        yield Server(folder, int(ports[-1]), proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="svd-"))
    try:
        with _supervisor(folder) as running:
            yield running
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _open_stream(server: Server, *, cookie: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    auth = f"Cookie: {cookie}" if cookie else f"Authorization: Bearer {VIEW_TOKEN}"
    sock.sendall(
        f"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data[:300]
        data += chunk
    return data


def _events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The complete events in a chunked SSE body (each event is inside one chunk)."""
    pattern = rb"event: (\w+)\r?\ndata: (\{.*?\})\n\n"
    return [(m[1].decode(), json.loads(m[2])) for m in re.finditer(pattern, data, re.DOTALL)]


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_frames_arrive_at_least_once_a_second(server: Server) -> None:
    sock = _open_stream(server)
    try:
        head = _read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-type: text/event-stream" in head.lower()
        started = time.monotonic()
        data = head
        while len([e for e in _events(data) if e[0] == "frame"]) < 4:
            data += sock.recv(65536)
            assert time.monotonic() - started < 8, "fewer than 4 frames in 8 s"
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    events = _events(data)
    assert events[0][0] == "hello"
    frames = [e[1] for e in events if e[0] == "frame"]
    assert elapsed < 5.0  # 4 frames (after the hello) within 5 s
    times = [float(f["t"]) for f in frames]
    assert all(0.5 < b - a < 1.6 for a, b in itertools.pairwise(times)), times
    ticks = [f["status"]["tick"] for f in frames]
    assert ticks == sorted(ticks)
    assert ticks[-1] > ticks[0]
    assert frames[-1]["series"]["ticks"] > 0


def test_a_hundred_streams_then_all_drop(server: Server) -> None:
    socks = [_open_stream(server) for _ in range(100)]
    try:
        for sock in socks:
            _read_until(sock, b"event: hello")
        assert server.metric("supervisor_api_dashboard_streams") == 100
        # Each frame was built once for all of them, not once per stream.
        built = server.metric("supervisor_api_dashboard_frames_total")
        time.sleep(2.2)
        assert 1 <= server.metric("supervisor_api_dashboard_frames_total") - built <= 4
    finally:
        for i, sock in enumerate(socks):
            if i % 2:  # half of them reset the connection, half close it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    _wait_for(lambda: server.metric("supervisor_api_dashboard_streams") == 0)
    assert server.metric('supervisor_api_dashboard_streams_total{outcome="dropped"}') == 0
    # Every slot is free again: a new stream works.
    sock = _open_stream(server)
    try:
        _read_until(sock, b"event: hello")
    finally:
        sock.close()


def test_a_client_hanging_up_half_way_frees_its_slot(server: Server) -> None:
    _wait_for(lambda: server.metric("supervisor_api_dashboard_streams") == 0)
    sock = _open_stream(server)
    _read_until(sock, b"\r\n\r\n")
    sock.recv(7)  # a few bytes of the hello, then gone mid-event
    _wait_for(lambda: server.metric("supervisor_api_dashboard_streams") == 1)
    sock.close()
    _wait_for(lambda: server.metric("supervisor_api_dashboard_streams") == 0)
    assert server.proc.poll() is None


def test_the_stream_needs_a_caller(server: Server) -> None:
    answer = httpx.get(f"{server.base}/dashboard/events", timeout=5)
    assert answer.status_code == 401
    answer = httpx.get(
        f"{server.base}/dashboard/events",
        headers={"cookie": "supervisor_session=forged.value"},
        timeout=5,
    )
    assert answer.status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/static/../_app.py",
        "/dashboard/static/../../__init__.py",
        "/dashboard/static/%2e%2e/_app.py",
        "/dashboard/static/..%2f_session.py",
        "/dashboard/static/%2fetc%2fpasswd",
        "/dashboard/static/....//_app.py",
    ],
)
def test_static_traversal_on_the_wire(server: Server, target: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 404"), data[:200]
    assert b"import" not in data


def test_login_over_the_wire(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=5) as client:
        form = client.get("/dashboard/login")
        assert "default-src 'self'" in form.headers["content-security-policy"]
        answer = client.post("/dashboard/login", data={"token": OPS_TOKEN})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        session = client.get("/dashboard/session").json()
        assert session["role"] == "operator"
        # A cookie POST without the CSRF token changes nothing.
        refused = client.post("/v1/phase", json={"phase": "testing", "reason": "csrf"})
        assert refused.status_code == 403
        assert client.get("/v1/status").json()["phase"] == "development"
    audit = [json.loads(x) for x in (server.folder / "var/audit.jsonl").read_text().splitlines()]
    assert any(x["action"] == "login" and x["caller"] == "ops" for x in audit)
    assert any(x["action"] == "phase" and x["result"]["status"] == 403 for x in audit)


def test_a_restart_revokes_sessions_and_sigint_ends_open_streams() -> None:
    folder = Path(tempfile.mkdtemp(prefix="svr-"))
    try:
        with _supervisor(folder) as first:
            login = httpx.post(f"{first.base}/dashboard/login", data={"token": VIEW_TOKEN})
            cookie = login.headers["set-cookie"].split(";")[0]
            assert httpx.get(f"{first.base}/v1/status", headers={"cookie": cookie}).is_success
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
        with _supervisor(folder) as second:
            answer = httpx.get(f"{second.base}/v1/status", headers={"cookie": cookie})
            assert answer.status_code == 401  # a new process, a new key: every session is gone
            socks = [_open_stream(second) for _ in range(3)]
            for sock in socks:
                _read_until(sock, b"event: hello")
            started = time.monotonic()
            second.proc.send_signal(signal.SIGINT)
            assert second.proc.wait(15) == 0
            assert time.monotonic() - started < 5.0, "open streams held the exit"
            for sock in socks:
                sock.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
