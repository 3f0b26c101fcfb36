"""The shipper's end of the writer process: start it, feed it frames, read its answers.

The process (:mod:`._writer`) is started with the supervisor's pid and exits
when its stdin closes or that pid is gone; :meth:`WriterProcess.aclose`
closes the pipe and waits (killing it past a grace period).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack
import trio

from ._writer import HEADER

__all__ = ["WriterGone", "WriterProcess"]

#: Seconds a closing writer gets to checkpoint before it is killed.
_GRACE: Final = 5.0
#: Bytes asked of the pipe per read.
_READ: Final = 65536
#: Where ``supervisor`` is imported from, for the child (a run from a source tree).
_ROOT: Final = str(Path(__file__).resolve().parents[2])


class WriterGone(Exception):
    """The writer process ended (crashed, killed) or its pipe broke."""


@attrs.define(eq=False)
class WriterProcess:
    """One running writer: its process and what is buffered from its stdout."""

    process: trio.Process
    _buffer: bytearray = attrs.field(factory=bytearray)

    @classmethod
    async def start(cls, path: Path, settings: dict[str, Any]) -> WriterProcess:
        """Start a writer on ``path``; return once it has the store open.

        Raises:
            WriterGone: it exited before it was ready (the file could not be opened).
        """
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor._store._writer", str(path), str(os.getpid()),
             json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        writer = cls(process)
        try:
            await writer.receive()
        except BaseException:
            with trio.CancelScope(shield=True):
                await writer.aclose()
            raise
        return writer

    async def send(self, data: bytes) -> None:
        """Write frames (already framed) to the writer.

        Raises:
            WriterGone: the pipe broke.
        """
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WriterGone(str(exc)) from exc

    async def receive(self) -> Any:
        """The writer's next answer.

        Raises:
            WriterGone: its stdout ended first.
        """
        assert self.process.stdout is not None
        buffer = self._buffer
        while True:
            if len(buffer) >= HEADER.size:
                end = HEADER.size + HEADER.unpack_from(buffer)[0]
                if len(buffer) >= end:
                    body = bytes(buffer[HEADER.size : end])
                    del buffer[:end]
                    return msgpack.unpackb(body)
            try:
                data = await self.process.stdout.receive_some(_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise WriterGone(str(exc)) from exc
            if not data:
                raise WriterGone(f"the writer exited ({self.process.poll()})")
            buffer += data

    async def aclose(self) -> None:
        """Close its stdin (it checkpoints and exits) and wait; kill it past the grace period."""
        process = self.process
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(_GRACE):
            await process.wait()
        if process.poll() is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
