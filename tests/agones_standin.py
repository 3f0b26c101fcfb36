"""A stand-in for the Agones SDK sidecar: a real HTTP server on a loopback port, recording calls.

It follows the sidecar's REST gateway (see ``supervisor/_agones/_sdk.py``
for the sources): ``POST /ready``, ``/health``, ``/shutdown``, ``/allocate``,
``/reserve``; ``GET /gameserver``; ``GET /watch/gameserver`` streaming one
``{"result": GameServer}`` line per change over chunked HTTP/1.1; ``PUT
/metadata/label`` and ``/metadata/annotation``; ``GET``/``PATCH
/v1beta1/counters/{name}`` with int64 values as JSON strings. Errors are
``{"code", "message", "details": []}`` like grpc-gateway's: 404 with code 5
for an unknown counter, 500 with code 2 for an injected failure.

Tests drive it: ``fail_next``/``failing`` inject failures, ``allocate()``
plays a GameServerAllocation, ``calls`` is every request with its
``time.monotonic()``. It runs in threads of the test process; the
supervisor under test is usually a subprocess.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

__all__ = ["Call", "SdkStandIn", "free_port"]

#: Seconds a watch stream waits for a change before checking whether to stop.
WATCH_POLL = 0.1


def free_port() -> int:
    """A loopback TCP port free right now (for a stand-in started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@attrs.frozen
class Call:
    """One request the stand-in answered (or refused)."""

    method: str
    path: str
    body: Any
    at: float
    status: int


class SdkStandIn:
    """The sidecar: ``start()``, then point ``AGONES_SDK_HTTP_PORT`` at ``port``."""

    def __init__(self, port: int = 0, *, counters: dict[str, tuple[int, int]] | None = None):
        self._lock = threading.Condition()
        self.calls: list[Call] = []
        self.state = "Scheduled"
        self.labels: dict[str, str] = {}
        self.annotations: dict[str, str] = {}
        self.counters = dict(counters if counters is not None else {"players": (0, 100)})
        #: Answer the next N requests with 500; ``failing`` answers all of them so.
        self.fail_next = 0
        self.failing = False
        self.version = 0
        self._stop = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def do_PUT(self) -> None:
                standin._handle(self, "PUT")

            def do_PATCH(self) -> None:
                standin._handle(self, "PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SdkStandIn:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open watch streams end."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SdkStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests read

    def paths(self, method: str | None = None) -> list[str]:
        """The paths called, in order (only ``method``'s when given)."""
        with self._lock:
            return [c.path for c in self.calls if method is None or c.method == method]

    def times(self, path: str) -> list[float]:
        """When each successful call to ``path`` came."""
        with self._lock:
            return [c.at for c in self.calls if c.path == path and c.status == 200]

    def count(self, path: str) -> int:
        """Successful calls to ``path``."""
        return len(self.times(path))

    def allocate(self) -> None:
        """Play a GameServerAllocation: the state becomes Allocated (watchers are told)."""
        self._set_state("Allocated")

    # ------------------------------------------------------------------ the server side

    def _set_state(self, state: str) -> None:
        with self._lock:
            self.state = state
            self.version += 1
            self._lock.notify_all()

    def _gameserver(self) -> dict[str, Any]:
        return {
            "object_meta": {
                "name": "standin-gs",
                "namespace": "default",
                "uid": "1234",
                "resource_version": str(self.version),
                "generation": "1",
                "creation_timestamp": "1533766607",
                "labels": {f"agones.dev/sdk-{k}": v for k, v in self.labels.items()},
                "annotations": {f"agones.dev/sdk-{k}": v for k, v in self.annotations.items()},
            },
            "status": {
                "state": self.state,
                "address": "127.0.0.1",
                "ports": [{"name": "default", "port": 7777}],
                "counters": {
                    name: {"count": str(count), "capacity": str(capacity)}
                    for name, (count, capacity) in self.counters.items()
                },
            },
        }

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = request.path
        with self._lock:
            fail = self.failing or self.fail_next > 0
            if self.fail_next > 0:
                self.fail_next -= 1
        if fail:
            self._record(method, path, body, 500)
            self._send(request, 500, {"code": 2, "message": "injected failure", "details": []})
            return
        if method == "GET" and path == "/watch/gameserver":
            self._record(method, path, body, 200)
            self._watch(request)
            return
        status, answer = self._answer(method, path, body)
        self._record(method, path, body, status)
        self._send(request, status, answer)

    def _record(self, method: str, path: str, body: Any, status: int) -> None:
        with self._lock:
            self.calls.append(Call(method, path, body, time.monotonic(), status))

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        lifecycle = {"/ready": "Ready", "/allocate": "Allocated", "/shutdown": "Shutdown"}
        if method == "POST" and path in lifecycle:
            self._set_state(lifecycle[path])
            return 200, {}
        if method == "POST" and path in ("/health", "/reserve"):
            if path == "/reserve":
                self._set_state("Reserved")
            return 200, {}
        if method == "GET" and path == "/gameserver":
            with self._lock:
                return 200, self._gameserver()
        if method == "PUT" and path in ("/metadata/label", "/metadata/annotation"):
            if not isinstance(body, dict) or not isinstance(body.get("key"), str):
                return 400, {"code": 3, "message": "key required", "details": []}
            with self._lock:
                table = self.labels if path.endswith("label") else self.annotations
                table[body["key"]] = str(body.get("value", ""))
                self.version += 1
                self._lock.notify_all()
            return 200, {}
        if path.startswith("/v1beta1/counters/"):
            return self._counter(method, path.removeprefix("/v1beta1/counters/"), body)
        return 404, {"code": 5, "message": f"Not Found: {path}", "details": []}

    def _counter(self, method: str, name: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            if name not in self.counters:
                return 404, {"code": 5, "message": f"counter not found: {name}", "details": []}
            count, capacity = self.counters[name]
            if method == "PATCH":
                if not isinstance(body, dict) or not isinstance(body.get("count"), str):
                    return 400, {"code": 3, "message": "count must be an int64 string"}
                new = int(body["count"])
                if not 0 <= new <= capacity:
                    return 400, {"code": 11, "message": "count out of range", "details": []}
                count = new
                self.counters[name] = (count, capacity)
                self.version += 1
                self._lock.notify_all()
            elif method != "GET":
                return 405, {"code": 12, "message": "method not allowed", "details": []}
        return 200, {"name": name, "count": str(count), "capacity": str(capacity)}

    def _send(self, request: BaseHTTPRequestHandler, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _watch(self, request: BaseHTTPRequestHandler) -> None:
        """Stream the GameServer now and after every change, as chunked NDJSON."""
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        seen = -1
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self.version == seen:
                        self._lock.wait(WATCH_POLL)
                    if self.version == seen:
                        continue
                    seen = self.version
                    line = json.dumps({"result": self._gameserver()}).encode() + b"\n"
                request.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                request.wfile.flush()
            request.wfile.write(b"0\r\n\r\n")
        except OSError:
            return  # the client hung up
        request.close_connection = True
