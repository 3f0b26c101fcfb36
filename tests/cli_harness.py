"""A real ``supervisor run`` in the background, for the CLI's end-to-end tests.

Each run gets a short folder (a Unix socket path must fit in 108 bytes)
holding its config and any game module (the folder is on its PYTHONPATH),
and is stopped with SIGINT, as an operator's Ctrl-C would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs

SUPERVISOR = Path(sys.executable).parent / "supervisor"


@attrs.frozen
class Running:
    """A ``supervisor run`` in the background, and where its API listens."""

    folder: Path
    api: str
    proc: subprocess.Popen[bytes]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``supervisor ARGS --api ...`` as a separate process, as an operator would."""
        return subprocess.run(
            [str(SUPERVISOR), *args, "--api", self.api],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def log(self) -> str:
        return (self.folder / "run.log").read_text(encoding="utf-8", errors="replace")


def _socket_address(folder: Path) -> str | None:
    sock = folder / "s.sock"
    return f"unix:{sock}" if sock.exists() else None


@contextlib.contextmanager
def running_supervisor(
    config: str,
    *,
    files: Mapping[str, str] | None = None,
    tick_rate: float = 20,
    address: Callable[[Path], str | None] = _socket_address,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Running]:
    """Start ``supervisor run`` on ``config`` (with ``[api] listen = "unix:s.sock"``).

    ``address(folder)`` is where the API listens once it does (None until then); the
    default waits for ``s.sock``. A TCP listener's tests read it from the run's log.
    ``args`` are more ``run`` options (``--reload``); ``env`` more variables.
    """
    folder = Path(tempfile.mkdtemp(prefix="sv-"))
    (folder / "supervisor.toml").write_text(config, encoding="utf-8")
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    environ = {**os.environ, "PYTHONPATH": str(folder), **(env or {})}
    for var in [v for v in environ if v.startswith("SUPERVISOR_")]:
        del environ[var]
    log = (folder / "run.log").open("wb")
    proc = subprocess.Popen(
        [str(SUPERVISOR), "run", *args, "--tick-rate", str(tick_rate), "--log-format", "json"],
        cwd=folder,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while (api := address(folder)) is None:
            assert proc.poll() is None, (folder / "run.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the API never listened"
            time.sleep(0.05)
        yield Running(folder, api, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
