"""The audit log: one JSON line for every API request that asks to change something.

Append-only and durable: each line is written whole with a single ``write``
on a descriptor opened with ``O_APPEND``, then ``fsync``ed, so a crash right
after an answer cannot lose the record of what was asked. The file is opened
for each entry rather than kept open, so an operator's log rotation (rename,
then a new file) takes effect at the next entry. Writes block; the API calls
:meth:`AuditLog.write` through ``trio.to_thread.run_sync``.

The token itself never reaches this module: the API passes the caller's
name (the token's configured *name*, ``uid:N`` or ``anonymous``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._logging import get_logger
from ._redact import Redactor

__all__ = ["AuditEntry", "AuditLog"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One request that asked to change something, and what came of it."""

    caller: str  # token name, "uid:N", or "anonymous"
    role: str | None  # None for an anonymous caller
    action: str  # "shutdown" | "restart" | "phase"
    arguments: Mapping[str, Any] | None  # the validated body; None when it was not read or bad
    status: int  # the HTTP status of the answer
    detail: str


@attrs.define(eq=False)
class AuditLog:
    """Append-only JSON-lines audit sink.

    Attributes:
        path: the file; its parent folder is created (mode 0700) on first use.
        redactor: applied to the arguments, the detail and the caller name.
        failures: entries that could not be written (each also logged).
        written: entries written.
    """

    path: Path = attrs.field(converter=Path)
    redactor: Redactor | None = None
    failures: int = attrs.field(default=0, init=False)
    written: int = attrs.field(default=0, init=False)
    _last_ok: bool = attrs.field(default=True, init=False)
    # Entries come from worker threads; one line at a time keeps the
    # truncate-on-partial-write repair in write() safe.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def line(self, entry: AuditEntry, *, now: datetime.datetime | None = None) -> str:
        """The JSON line (with its newline) that records ``entry``, redacted."""
        when = now or datetime.datetime.now(datetime.UTC)
        caller: Any = entry.caller
        arguments: Any = None if entry.arguments is None else dict(entry.arguments)
        detail: Any = entry.detail
        if self.redactor is not None:
            caller = self.redactor.text(caller)
            detail = self.redactor.text(detail)
            if arguments is not None:
                # Fail closed: a value that cannot be redacted is not written.
                redacted = self.redactor.record(arguments)
                arguments = {"redaction": "failed"} if redacted is None else redacted
        record = {
            "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "caller": caller,
            "role": entry.role,
            "action": entry.action,
            "arguments": arguments,
            "result": {"status": entry.status, "detail": detail},
        }
        # default=str: an argument of an odd type must not cost the entry.
        return json.dumps(record, ensure_ascii=False, default=str) + "\n"

    def write(self, entry: AuditEntry) -> bool:
        """Append ``entry`` durably. Blocking: call it from a worker thread.

        Never raises for an I/O problem: the failure is logged and counted in
        ``failures``, and ``False`` is returned.
        """
        data = self.line(entry).encode("utf-8")
        with self._lock:
            try:
                self._append(data)
            except OSError as exc:
                self.failures += 1
                self._last_ok = False
                get_logger(component="audit").error(
                    "audit.write_failed",
                    path=str(self.path),
                    error=f"{type(exc).__name__}: {exc.strerror or exc}",
                    action=entry.action,
                    failures=self.failures,
                )
                return False
            self.written += 1
            self._last_ok = True
            return True

    def _append(self, data: bytes) -> None:
        self._ensure_parent()
        fd = os.open(self.path, _OPEN_FLAGS, _FILE_MODE)
        try:
            start = os.fstat(fd).st_size
            done = 0
            try:
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError:
                if done:
                    # A short write (disk full) left half a line: cut it off so
                    # every line in the file stays one whole JSON object.
                    # Safe because this process is the only writer (the lock).
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                raise
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ensure_parent(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            # Only a folder we create gets 0700; an existing one (say the
            # state folder) keeps the mode its owner chose.
            parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)

    def writable(self) -> bool:
        """Whether the sink works: the file can be opened for appending and the last write worked.

        Used by the readiness check; creates the folder and the (empty) file
        if they are missing, exactly as the first entry would.
        """
        try:
            self._ensure_parent()
            os.close(os.open(self.path, _OPEN_FLAGS, _FILE_MODE))
        except OSError:
            return False
        return self._last_ok
