"""An attacker against a real ``supervisor run``: hostile bytes on raw sockets, then a clean stop.

The supervisor runs as a subprocess (the console script of this virtualenv)
on the built-in demo systems, its API on loopback TCP with short deadlines.
:func:`attack` sends a mix of hostile traffic, each kind many times:
half-closed bodies (issue 8's crash), malformed and conflicting lengths,
oversized heads, never-ending chunked bodies (anonymous, and an operator's
that must get 408), raw garbage, pipelined requests nobody reads, slowloris
heads, immediate disconnects and resets. It counts every answer's status.

What must hold: no 5xx, the process never dies, ``/healthz`` answers
throughout, and the operator's shutdown ends the run with exit 0.
``python tests/test_api_attack.py ROUNDS`` runs a longer attack by hand and
prints the counts.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import random
import re
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
from test_api_server import dribble

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
CONFIG = """
[supervisor]
tick_rate = 60
state_dir = "{state}"
snapshot_interval = 0
[systems]
enabled = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]
[api]
listen = "127.0.0.1:{port}"
audit_log = "{state}/audit.jsonl"
header_timeout = 1.0
body_timeout = 1.0
keep_alive_timeout = 1.0
max_connections = 64
tokens = [{{ name = "ops", role = "operator", sha256 = "{digest}" }}]
"""


@attrs.define
class Counts:
    """What the attack sent and what came back."""

    connections: int = 0
    requests: int = 0
    statuses: collections.Counter[int] = attrs.field(factory=collections.Counter)
    closed_without_answer: int = 0
    probes_ok: int = 0
    probes_failed: list[str] = attrs.field(factory=list)  # what each failed probe got

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _payloads(token: str) -> list[tuple[str, bytes, bool]]:
    """(kind, bytes, half-close after sending) for one round."""
    post = b"POST /v1/phase HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    op = post + f"Authorization: Bearer {token}\r\n".encode()
    get = b"GET /healthz HTTP/1.1\r\nHost: a\r\n"
    chunked = b"Transfer-Encoding: chunked\r\n\r\n"
    h2c = b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk\r\n"
    ws = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    rnd = random.Random()
    return [
        ("half-closed body", post + b"Content-Length: 100\r\n\r\n{", True),
        ("half-closed operator body", op + b"Content-Length: 100\r\n\r\n{", True),
        ("negative length", post + b"Content-Length: -1\r\n\r\n{}", False),
        ("text length", post + b"Content-Length: abc\r\n\r\n{}", False),
        ("two lengths", post + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", False),
        ("length and chunked", post + b"Content-Length: 2\r\n" + chunked, False),
        ("huge length", op + b"Content-Length: 999999999999999999\r\n\r\n{", False),
        ("huge header", get + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", False),
        ("many headers", get + b"X-A: b\r\n" * 5000 + b"\r\n", False),
        ("bad chunk size", op + chunked + b"zz\r\n{}\r\n0\r\n\r\n", False),
        ("chunk extension flood", op + chunked + b"1;" + b"x" * 20000 + b"\r\n{\r\n", False),
        ("garbage", bytes(rnd.getrandbits(8) for _ in range(400)), False),
        ("http/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
        ("h2c upgrade", get + h2c + b"\r\n", False),
        ("websocket", get + ws + b"\r\n", False),
        ("pipelined", get + b"\r\n" + (get + b"\r\n") * 49, False),
        ("bad method", b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", False),
        ("bad version", b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", False),
        ("no host", b"GET /healthz HTTP/1.1\r\n\r\n", False),
        ("absolute uri", b"GET http://evil/healthz HTTP/1.1\r\nHost: a\r\n\r\n", False),
        ("bad json as operator", op + b'Content-Length: 9\r\n\r\n{"phase":', False),
        ("nested json", op + b"Content-Length: 2000\r\n\r\n" + b"[" * 1000 + b"]" * 1000, False),
        ("unknown phase", op + b'Content-Length: 19\r\n\r\n{"phase": "heaven"}', False),
        ("anonymous shutdown", post.replace(b"phase", b"shutdown") + b"\r\n", False),
        (
            "wrong token",
            b"GET /v1/status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n",
            False,
        ),
    ]


async def _exchange(port: int, data: bytes, half_close: bool, counts: Counts) -> None:
    counts.connections += 1
    counts.requests += max(1, data.count(b" HTTP/1.1\r\n"))
    received = b""
    with trio.move_on_after(5):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(data)
                    if half_close:
                        await stream.send_eof()
                while chunk := await stream.receive_some(65536):
                    received += chunk
        except (OSError, trio.BrokenResourceError):
            pass
    statuses = [int(m) for m in STATUS.findall(received)]
    counts.statuses.update(statuses)
    if not statuses:
        counts.closed_without_answer += 1


async def _never_ending(port: int, token: str, counts: Counts) -> None:
    """An operator's chunked body that never ends: must be a 408."""
    counts.connections += 1
    counts.requests += 1
    head = (
        b"POST /v1/phase HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    received = b""
    with trio.move_on_after(5):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(head)
                received = await dribble(stream, 0.1)
        except (OSError, trio.BrokenResourceError):
            pass
    counts.statuses.update(int(m) for m in STATUS.findall(received))


async def _reconnects(port: int, n: int, counts: Counts) -> None:
    """Connect and close at once; every other one with a reset (SO_LINGER 0)."""
    for i in range(n):
        counts.connections += 1
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", port))
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            sock.close()
        if i % 50 == 0:
            await trio.lowlevel.checkpoint()


async def _probe(port: int, counts: Counts) -> None:
    """/healthz on a fresh connection every 50 ms for the whole attack."""
    request = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    while True:
        answer = b""
        failure = "timed out"
        with trio.move_on_after(3):
            try:
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(request)
                    while chunk := await stream.receive_some(4096):
                        answer += chunk
                failure = "closed without an answer"
            except (OSError, trio.BrokenResourceError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
        if answer.startswith(b"HTTP/1.1 200 "):
            counts.probes_ok += 1
        else:
            counts.probes_failed.append(answer.decode("latin-1")[-200:] or failure)
        await trio.sleep(0.05)


async def attack(port: int, token: str, rounds: int, reconnects: int) -> Counts:
    """The whole hostile mix ``rounds`` times (20 connections at once), plus reconnects."""
    counts = Counts()
    payloads = _payloads(token)
    limiter = trio.CapacityLimiter(20)

    async def one(data: bytes, half: bool) -> None:
        async with limiter:
            await _exchange(port, data, half, counts)

    async with trio.open_nursery() as outer:
        outer.start_soon(_probe, port, counts)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reconnects, port, reconnects, counts)
            for _ in range(rounds):
                nursery.start_soon(_never_ending, port, token, counts)
                for _kind, data, half in payloads:
                    nursery.start_soon(one, data, half)
                await trio.sleep(0.05)
        outer.cancel_scope.cancel()
    return counts


@contextlib.contextmanager
def running_supervisor(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str, Path]]:
    """``supervisor run`` on the demo systems with its API on a free loopback port."""
    token = secrets.token_urlsafe(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "attack.toml"
    config.write_text(
        CONFIG.format(
            state=tmp / "state", port=port, digest=hashlib.sha256(token.encode()).hexdigest()
        ),
        encoding="utf-8",
    )
    summary = tmp / "summary.json"
    stderr = (tmp / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [
            *(str(SUPERVISOR), "run", "--config", str(config)),
            *("--summary-json", str(summary), "--log-format", "json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd=tmp,
    )
    stderr.close()  # the child has its own copy
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "stderr.log").read_text()
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield proc, port, token, summary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _api_counters(port: int, token: str) -> dict[str, float]:
    """The ``supervisor_api_*`` samples of /metrics."""
    request = (
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        if line.startswith("supervisor_api_"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("supervisor_api_")] = float(value)
    return out


def _shutdown(port: int, token: str) -> int:
    body = json.dumps({"reason": "attack over"}).encode()
    request = (
        b"POST /v1/shutdown HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1])


def run_attack(tmp: Path, rounds: int, reconnects: int) -> dict[str, Any]:
    """Start a supervisor, attack it, stop it; returns the counts and how it ended."""
    with running_supervisor(tmp) as (proc, port, token, summary):
        counts = trio.run(attack, port, token, rounds, reconnects)
        alive = proc.poll() is None
        api = _api_counters(port, token) if alive else {}
        stop_status = _shutdown(port, token) if alive else None
        code = proc.wait(timeout=30)
    return {
        "counts": counts,
        "alive_after_attack": alive,
        "api": api,
        "shutdown_status": stop_status,
        "exit_code": code,
        "summary": json.loads(summary.read_text()) if summary.exists() else None,
    }


def test_hostile_traffic_never_kills_or_5xx(tmp_path: Path) -> None:
    """Eight rounds of the mix and 400 reconnects: no 5xx, alive, /healthz up, clean exit 0."""
    result = run_attack(tmp_path, rounds=8, reconnects=400)
    counts: Counts = result["counts"]
    assert result["alive_after_attack"]
    assert result["shutdown_status"] == 200
    assert result["exit_code"] == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    assert counts.server_errors == 0, counts.statuses
    assert counts.statuses[408] >= 1  # the operator's never-ending bodies
    assert counts.probes_ok > 0
    assert counts.probes_failed == [], json.dumps(result["api"])
    assert result["summary"]["exit_reason"]


if __name__ == "__main__":
    ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as folder:
        outcome = run_attack(Path(folder), rounds=ROUNDS, reconnects=1000)
        print(outcome["counts"])
        print({k: v for k, v in outcome.items() if k not in ("counts", "summary")})
        print("server errors:", outcome["counts"].server_errors)
