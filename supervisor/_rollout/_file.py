"""The rollouts' durable record: one small JSON file in ``state_dir``, replaced atomically.

Each save writes a temporary file beside the target (random name, ``O_EXCL``),
fsyncs it, renames it over ``rollouts.json`` and fsyncs the folder: after a
crash at any instant the file holds either the previous record or the new
one, never a mix (``tests/test_rollout_file.py`` kills a writer mid-save).
Blocking: the service calls :meth:`RolloutFile.save` from a worker thread.

A file that cannot be read back as a record (hand-edited, a disk error) is
moved aside, never deleted, and the run starts with no rollouts; what was
wrong is returned to be logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .._core._snapshot import _fsync_directory
from .._files import UnsafePathError, check_output_path, read_config_bytes

__all__ = ["FILE_NAME", "FORMAT", "RolloutFile"]

FILE_NAME: Final = "rollouts.json"
#: The record's format version; a file of another version is moved aside.
FORMAT: Final = 1
#: Larger than any record of a few dozen rollouts: a bigger file is not ours.
MAX_BYTES: Final = 1_048_576


def _records(data: bytes) -> list[Mapping[str, Any]]:
    """The records in a file's bytes.

    Raises:
        ValueError: not JSON, or not a rollouts record of this format.
    """
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a format {FORMAT} rollouts record")
    records = doc.get("rollouts")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError("'rollouts' is not a list of records")
    return records


@attrs.define(eq=False)
class RolloutFile:
    """``state_dir/rollouts.json``."""

    directory: Path = attrs.field(converter=Path)

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def load(self) -> tuple[list[Mapping[str, Any]], str | None]:
        """The records in the file, and what was wrong with it (None if nothing).

        A missing file is no rollouts. A bad one is moved aside (its new
        name is in the problem) and read as no rollouts. Called once at start
        (before any save): temporary files of a save killed half-way are removed.
        """
        # A save killed half-way left its temporary file: it was never the record.
        for stale in self.directory.glob(f".{FILE_NAME}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        if not os.path.lexists(self.path):
            return [], None
        try:
            # Refuses a FIFO (which would block the open), a device, a directory.
            return _records(read_config_bytes(self.path, MAX_BYTES)), None
        except UnsafePathError as exc:
            return [], self._aside(exc.problem)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return [], self._aside(str(exc))

    def _aside(self, problem: str) -> str:
        aside = self.path.with_name(f"{FILE_NAME}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            return f"{self.path}: {problem}; could not move it aside: {exc.strerror or exc}"
        return f"{self.path}: {problem}; moved aside to {aside.name}"

    def save(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Replace the record with ``records``, durably. Blocking.

        Raises:
            OSError: the record could not be written; the file is as it was.
            UnsafePathError: ``rollouts.json`` is not a regular file.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_output_path(self.path)
        text = json.dumps({"format": FORMAT, "rollouts": list(records)}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)
