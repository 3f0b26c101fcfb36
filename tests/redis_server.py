"""A real Debian ``redis-server`` for the fleet tests: free loopback port, temp dir, no persistence.

Started once per test module (a fixture calls :func:`redis_server`), stopped
by PID; :meth:`RedisServer.stop` and :meth:`RedisServer.start` again on the
same port make an outage (the fleet's members must tick through it and
reconnect). Each test takes its own fleet namespace, so one server serves a
whole module.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_prometheus import free_port, tail


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "`redis-server` is not on PATH: run `bash .ci/services.sh` "
                "(Debian's package) to run the fleet tests"
            )
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.log = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (persistence off) and wait until it answers PING."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("redis-server did not start:\n" + tail(self.log))
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether it answers ``PING`` now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it by PID (SIGTERM, then SIGKILL after 5 s)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def command(self, *args: str) -> bytes:
        """One command in RESP, its raw first reply (for tests that poke at the data)."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(payload)
            return sock.recv(65536)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in a temp folder; stopped and removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="redis-"))
    server = RedisServer(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
