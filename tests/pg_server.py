"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a temp dir, a free port.

``initdb`` into a temporary folder (run as the ``postgres`` user when the
tests run as root: PostgreSQL refuses to run as root), the server listening
on a free loopback port with its Unix socket in that folder, ``fsync=off``
(the tests kill the *supervisor*, never the machine). Stopped with
``pg_ctl stop -m immediate`` and, should that fail, by its PID. The binaries
are found with a glob over ``/usr/lib/postgresql/*/bin`` (whatever version
Debian installed); no server binaries: the tests that need one are skipped.

:meth:`PgServer.pause` / :meth:`PgServer.resume` stop and restart the same
cluster on the same port, for outage tests; :meth:`PgServer.freeze` /
:meth:`PgServer.thaw` stop and continue its processes (a hung server).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(found[-1]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define(eq=False)
class PgServer:
    """One running cluster: ``url`` for clients, ``pause``/``resume`` for outages."""

    bin: Path
    folder: Path
    port: int
    _as_postgres: list[str] = attrs.field(factory=list)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=2"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, check=False, timeout=60
        )

    def init(self) -> None:
        done = self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")

    def resume(self) -> None:
        """Start the cluster (again) on its port; returns once it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c full_page_writes=off -c synchronous_commit=on"
        done = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        if done.returncode:
            log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {done.stderr[-1000:]}\n{log}")

    def pause(self) -> None:
        """Stop the server at once (connections drop); the data stays for :meth:`resume`."""
        done = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )
        if done.returncode:
            self._kill()

    def freeze(self, sig: int = signal.SIGSTOP) -> None:
        """SIGSTOP the server and its backends: a hung database (connections stay open)."""
        import psutil

        main = psutil.Process(int((self.data / "postmaster.pid").read_text().split()[0]))
        for proc in [main, *main.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def thaw(self) -> None:
        """Undo :meth:`freeze`."""
        self.freeze(signal.SIGCONT)

    def _kill(self) -> None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` with the cluster's own psql; its output (tuples only, unaligned)."""
        done = self._run(
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        return done.stdout

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url.replace("/postgres?", f"/{name}?")


@contextlib.contextmanager
def running_pg() -> Iterator[PgServer]:
    """Start a throwaway cluster, yield it, and stop and delete it afterwards."""
    binaries = pg_bin()
    if binaries is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        os.chmod(folder, 0o700)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    server = PgServer(binaries, folder, _free_port(), as_postgres)
    try:
        server.init()
        server.resume()
        yield server
    finally:
        server.pause()
        time.sleep(0.05)
        shutil.rmtree(folder, ignore_errors=True)
