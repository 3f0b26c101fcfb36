"""The audit log: one JSON line for every API request that asks to change something.

Append-only and durable: each line is written whole with a single ``write``
on a descriptor opened with ``O_APPEND``, then ``fsync``ed, so a crash right
after an answer cannot lose the record of what was asked. The file is opened
for each entry rather than kept open, so an operator's log rotation (rename,
then a new file) takes effect at the next entry. Writes block; the API calls
:meth:`AuditLog.write` through ``trio.to_thread.run_sync``.

Fail closed: the API writes an ``attempt`` line before it carries out an
action and refuses the action (503) when that line cannot be written; the
``result`` line follows the action. Each line has a ``stage``:

* ``attempt``: an operator's action is about to be carried out (``result`` is null);
* ``result``: what came of a request (every request with a known caller);
* ``refused``: anonymous refusals (401/403 with no known caller), counted per
  source, action and status within a wall-clock minute. The first of a minute
  is written at once (``count`` 1); the rest of that minute become one more
  line with their ``count`` when the minute is over. An attacker's flood of
  unauthenticated requests thus costs at most two lines per source and
  minute, not one fsync each.

The token itself never reaches this module: the API passes the caller's
name (the token's configured *name*, ``uid:N(user)`` or ``anonymous``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._core._redact import Redactor
from .._logging import get_logger

__all__ = ["AuditEntry", "AuditLog"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
#: Sources whose anonymous refusals are told apart within one minute; the
#: rest are counted under the source "other" (an attacker with many
#: addresses cannot grow this table or the file without bound).
MAX_REFUSAL_SOURCES = 256
_MINUTE = 60.0


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One request that asked to change something, and what came of it."""

    caller: str  # token name, "uid:N(user)", or "anonymous"
    role: str | None  # None for an anonymous caller
    action: str  # "shutdown" | "restart" | "phase"
    arguments: Mapping[str, Any] | None  # the validated body; None when it was not read or bad
    status: int | None  # the HTTP status of the answer; None for an attempt
    detail: str
    stage: str = "result"  # "attempt" | "result" | "refused"
    source: str | None = None  # refused: the client's address or uid
    count: int | None = None  # refused: how many this line stands for


_RefusalKey = tuple[str, str, int]  # (source, action, status)


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
    #: Wall clock (seconds) that decides the minute of a refusal; tests pass their own.
    clock: Callable[[], float] = time.time
    _last_ok: bool = attrs.field(default=True, init=False)
    # Anonymous refusals of the current minute: key -> (detail, count not yet written).
    _minute: int = attrs.field(default=-1, init=False)
    _refusals: dict[_RefusalKey, list[Any]] = attrs.field(factory=dict, init=False)
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
        record: dict[str, Any] = {
            "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "stage": entry.stage,
            "caller": caller,
            "role": entry.role,
            "action": entry.action,
            "arguments": arguments,
            "result": None
            if entry.stage == "attempt"
            else {"status": entry.status, "detail": detail},
        }
        if entry.source is not None:
            record["source"] = entry.source
            record["count"] = entry.count
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

    def tally_refusal(
        self, *, source: str, action: str, status: int, detail: str
    ) -> list[AuditEntry]:
        """Count one anonymous refusal; return the lines to write now (often none).

        Cheap and free of I/O, so the API calls it on the event loop and only
        goes to a worker thread when a line is due: the first refusal of a
        (source, action, status) in a minute, and the counts of a minute that
        has just ended.
        """
        due = self._roll(self._minute_now())
        if len(self._refusals) >= MAX_REFUSAL_SOURCES and (source, action, status) not in (
            self._refusals
        ):
            source = "other"
        key = (source, action, status)
        pending = self._refusals.get(key)
        if pending is None:
            self._refusals[key] = [detail, 0]
            due.append(self._refusal_entry(key, detail, 1))
        else:
            pending[1] += 1
        return due

    def finished_refusals(self, *, final: bool = False) -> list[AuditEntry]:
        """Lines for the refusal counts of a minute that is over (every count when ``final``)."""
        if final:
            return self._roll(None)
        return self._roll(self._minute_now())

    def _minute_now(self) -> int:
        return int(self.clock() // _MINUTE)

    def _roll(self, minute: int | None) -> list[AuditEntry]:
        """Close the current minute if ``minute`` is another one (None: close it anyway)."""
        if minute is not None and minute == self._minute:
            return []
        due = [
            self._refusal_entry(key, detail, count)
            for key, (detail, count) in self._refusals.items()
            if count
        ]
        if minute is not None:
            self._minute = minute
        self._refusals = {}
        return due

    @staticmethod
    def _refusal_entry(key: _RefusalKey, detail: str, count: int) -> AuditEntry:
        source, action, status = key
        return AuditEntry(
            caller="anonymous",
            role=None,
            action=action,
            arguments=None,
            status=status,
            detail=detail,
            stage="refused",
            source=source,
            count=count,
        )

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
