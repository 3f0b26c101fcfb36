"""The snapshot store: the snapshots of one state folder, written crash-safely and kept.

A snapshot is the state of every system (whatever its ``snapshot()`` returned)
plus a few supervisor-level extras, taken at one tick. The store keeps the
last few of them on disk so that a restarted supervisor can carry on from
the newest one that is intact. What one file holds, and how it is encoded
and checked, is the format's business (``_snapshot_format.py``).

On-disk contract:

* Snapshots live in ``state_dir/snapshots/`` as ``snapshot-<tick>.msgpack``
  (see the format). Other names in the folder are not snapshots and are
  left alone, except ``aside-<UTC yyyymmddThhmmssZ>/`` folders, where
  snapshots that must not be deleted are moved (see below); the store never
  deletes anything in them.
* Writes are atomic: the bytes go to a temporary file in the same folder
  (``.snapshot-<tick>-<pid>-<random>.tmp``, which never matches
  ``snapshot-*.msgpack``), which is flushed, fsynced, renamed over the final
  name with :func:`os.replace`, and then the folder itself is fsynced so the
  rename survives a power cut. A reader therefore sees either the previous
  file or the complete new one, never a mix.
* After a successful write the store keeps ``generations`` snapshots: the one
  just written and the ``generations - 1`` newest ones with a lower tick.
  Older ones (lower ticks beyond the kept generations) are deleted: that is
  the only deletion. Snapshots with a *higher* tick than the one just
  written belong to another timeline (a rolled-back one, or the state an
  emergency preserved before a fresh start): they are moved into a new
  ``aside-<stamp>/`` folder, so the next restart does not resurrect that
  timeline and no preserved state is lost. Likewise a file already under the
  name about to be written, that this store did not write or restore from
  itself, is moved aside before the new file takes its name.
  Stray temporary files left by a crash mid-write are ignored by
  :meth:`SnapshotStore.scan` / :meth:`SnapshotStore.latest` and deleted by
  the next write.
* Reading: symlinks, directories, FIFOs and devices under a snapshot's name
  are refused without being followed or opened for long, and a file's size
  is capped before it is decoded. :meth:`SnapshotStore.latest` skips a
  corrupt newest snapshot, reports it, and uses the previous generation.

The store assumes a single writer per folder (the supervisor that owns
``state_dir``): the next write deletes every stray temporary file, including
one that a second, concurrent writer would still be filling. Readers may run
concurrently with the writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from .._files import UnsafePathError, check_output_path
from ._snapshot_format import (
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_NAME,
    Snapshot,
    SnapshotError,
    check_tick,
    decode,
    encode,
    snapshot_name,
)

__all__ = ["SnapshotInfo", "SnapshotStore"]

_TEMP_NAME: Final = re.compile(r"\.snapshot-.*\.tmp")


@attrs.frozen
class SnapshotInfo:
    """What :meth:`SnapshotStore.scan` reports about one snapshot file.

    Attributes:
        path: The file.
        tick: The tick from the file name.
        ok: Whether the file is a valid snapshot.
        problem: Why it is not, or ``None`` when it is.
    """

    path: Path
    tick: int
    ok: bool
    problem: str | None


@attrs.define(eq=False)
class SnapshotStore:
    """The snapshots of one state folder.

    Attributes:
        directory: The folder holding the snapshots (``state_dir / "snapshots"``);
            created on the first write.
        generations: How many snapshots to keep (``>= 1``).
        key: HMAC-SHA256 key authenticating the files (``None``: plain sha256);
            see ``_snapshot_format``. Never shown in ``repr``.
        max_bytes: Largest snapshot file accepted, on write and on read.
        clock: Wall-clock seconds (:func:`time.time`), for ``aside-`` folder names.
    """

    directory: Path
    generations: int = 3
    key: bytes | None = attrs.field(default=None, repr=False)
    max_bytes: int = attrs.field(default=MAX_SNAPSHOT_BYTES, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)
    # Names this store wrote or restored from: replacing those is the same
    # timeline carrying on; any other file under the same name is moved aside.
    _own: set[str] = attrs.field(factory=set, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Validate the settings.

        Raises:
            ValueError: If ``generations`` or ``max_bytes`` is below 1, or the
                key is empty.
            TypeError: If the key is not ``bytes``.
        """
        if isinstance(self.generations, bool) or self.generations < 1:
            raise ValueError(f"generations must be an integer >= 1, got {self.generations!r}")
        if isinstance(self.max_bytes, bool) or self.max_bytes < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {self.max_bytes!r}")
        if self.key is not None:
            if not isinstance(self.key, bytes):
                raise TypeError(f"key must be bytes or None, got {type(self.key).__name__}")
            if not self.key:
                raise ValueError("key must not be empty (use None for no key)")

    # -- encoding ---------------------------------------------------------

    def encode(self, snap: Snapshot) -> bytes:
        """Encode a snapshot with this store's key and size cap (see ``_snapshot_format.encode``).

        Pure (no I/O), so the caller can encode on one thread and hand the
        bytes to :meth:`write_bytes` on another.

        Raises:
            TypeError: A field has the wrong type or a state is not msgpack-serialisable.
            ValueError: A value is out of range, a state would not read back, or
                the result is larger than ``max_bytes``.
        """
        return encode(snap, key=self.key, max_bytes=self.max_bytes)

    def decode(self, data: bytes, path: Path) -> Snapshot:
        """Validate and decode a file's contents with this store's key and size cap.

        Raises:
            SnapshotError: If the data is not a valid snapshot.
        """
        return decode(data, path, key=self.key, max_bytes=self.max_bytes)

    # -- writing ----------------------------------------------------------

    def write(self, snap: Snapshot) -> Path:
        """Encode a snapshot and write it atomically (see :meth:`write_bytes`).

        Args:
            snap: The snapshot to store.

        Returns:
            The path of the new snapshot file.

        Raises:
            TypeError: See :meth:`encode`.
            ValueError: See :meth:`encode`.
            OSError: See :meth:`write_bytes`.
        """
        return self.write_bytes(snap.tick, self.encode(snap))

    def write_bytes(self, tick: int, data: bytes) -> Path:
        """Write encoded snapshot bytes atomically, then prune old generations.

        Blocking (file writes and fsyncs): run it in a worker thread. On any
        failure before the rename the temporary file is removed and the
        previous snapshots are untouched.

        Args:
            tick: The snapshot's tick; names the file. Must be the tick the
                bytes were encoded with (they are not decoded again here).
            data: The output of :meth:`encode`.

        Returns:
            The path of the new snapshot file.

        Raises:
            ValueError: If the tick is negative or over :data:`MAX_TICK`.
            TypeError: If the tick is not an ``int``.
            OSError: If the folder cannot be created or the file cannot be
                written, synced or renamed, if something that is not a regular
                file holds the name, or if an old generation cannot be
                deleted or moved aside (in that last case the new snapshot is
                already durable).
        """
        check_tick(tick)
        self._ensure_directory()
        final = self.directory / snapshot_name(tick)
        if final.name not in self._own and os.path.lexists(final):
            # Same tick, another timeline (or something else under the name):
            # os.replace would silently destroy it.
            self._move_aside([final])
        try:
            check_output_path(final)
        except UnsafePathError as exc:
            # Something non-regular took the name again (we own the name, or
            # it reappeared after the move): refuse as the OSError callers expect.
            raise OSError(errno.EEXIST, str(exc)) from None
        # pid + random suffix: unique without a listing, and O_EXCL makes sure
        # we never write through someone else's file.
        temp = self.directory / f".snapshot-{tick}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(temp, flags, 0o644)
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        except BaseException:
            # Also on KeyboardInterrupt/Cancelled: never leave a half file.
            # If even that fails, the next write's prune removes the file.
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        self._own.add(final.name)
        self._prune(tick)
        return final

    # -- reading ----------------------------------------------------------

    def read(self, path: Path) -> Snapshot:
        """Read and validate one snapshot file.

        Args:
            path: The file to read.

        Returns:
            The snapshot.

        Raises:
            SnapshotError: If the file cannot be read or is not a valid
                snapshot; the message is one line naming the file and the
                problem (truncated, bad checksum, wrong format version, not
                msgpack, missing field, wrong type, too large).
        """
        try:
            # O_NONBLOCK: a FIFO under a snapshot's name must not hang the
            # reader in open(); it is rejected as "not a regular file" below.
            # O_NOFOLLOW: a symlink is not a snapshot this store wrote (it
            # could point at a valid snapshot of another server, or a device).
            if os.path.islink(path):
                raise SnapshotError(path, "cannot read: a symlink, not a snapshot file")
            flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags)
            with open(fd, "rb", closefd=True) as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise SnapshotError(path, "cannot read: not a regular file")
                size = info.st_size
                if size > self.max_bytes:
                    raise SnapshotError(
                        path, f"too large: {size} bytes, over max_bytes={self.max_bytes}"
                    )
                # Read one byte more than allowed, in case the file grew since
                # fstat: the size cap must hold for what we actually decode.
                data = f.read(self.max_bytes + 1)
        except OSError as exc:
            raise SnapshotError(path, f"cannot read: {exc.strerror or exc}") from exc
        if len(data) > self.max_bytes:
            raise SnapshotError(path, f"too large: over max_bytes={self.max_bytes}")
        return self.decode(data, path)

    def scan(self) -> list[SnapshotInfo]:
        """Validate every snapshot file in the folder.

        Temporary files and files whose name is not ``snapshot-<tick>.msgpack``
        are ignored, as are files deleted while the scan runs.

        Returns:
            One entry per snapshot file, newest tick first.

        Raises:
            SnapshotError: The folder exists but cannot be listed.
        """
        infos: list[SnapshotInfo] = []
        for tick, path in self._snapshot_files():
            try:
                self.read(path)
            except SnapshotError as exc:
                if _vanished(exc):
                    continue
                infos.append(SnapshotInfo(path, tick, ok=False, problem=exc.problem))
            else:
                infos.append(SnapshotInfo(path, tick, ok=True, problem=None))
        return infos

    def latest(self) -> tuple[Snapshot | None, list[SnapshotError]]:
        """Find the newest valid snapshot.

        Returns:
            The newest snapshot that reads back intact (``None`` if there is
            none), and the errors of the newer snapshot files that were
            skipped because they are corrupt, newest first (or the one error
            saying the folder cannot be listed).
        """
        errors: list[SnapshotError] = []
        try:
            files = self._snapshot_files()
        except SnapshotError as exc:
            return None, [exc]
        for _tick, path in files:
            try:
                snap = self.read(path)
            except SnapshotError as exc:
                # Pruned by a concurrent write between listing and reading:
                # not corrupt, just gone.
                if not _vanished(exc):
                    errors.append(exc)
            else:
                # The timeline this store continues from: rewriting its tick
                # replaces the file instead of moving it aside.
                self._own.add(path.name)
                return snap, errors
        return None, errors

    def has_snapshots(self) -> bool:
        """Whether anything under a snapshot's name is in the folder, valid or not.

        Corrupt files count: they are still state an operator may want back
        (``run`` refuses to start a fresh world over them, see the CLI). A
        folder that cannot be listed (a file in its place, no permission)
        holds nothing the store could read or move: ``False``, and the first
        write reports the problem.
        """
        try:
            return bool(self._snapshot_files())
        except SnapshotError:
            return False

    def move_aside(self) -> Path | None:
        """Move every snapshot file into a new ``aside-<UTC stamp>/`` folder.

        Used by ``run --fresh``: the old timeline is kept, not deleted.

        Returns:
            The new folder, or ``None`` when there was nothing to move (or
            the folder cannot be listed, see :meth:`has_snapshots`).

        Raises:
            OSError: If the folder cannot be created or a file cannot be moved
                (the ones already moved stay moved; nothing is deleted).
        """
        try:
            paths = [path for _tick, path in self._snapshot_files()]
        except SnapshotError:
            return None
        if not paths:
            return None
        return self._move_aside(paths)

    # -- internals --------------------------------------------------------

    def _ensure_directory(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # A new folder is itself an entry in its parent: sync that too, or a
        # power cut could lose the folder along with the snapshot inside it.
        _fsync_directory(self.directory.parent)

    def _snapshot_files(self) -> list[tuple[int, Path]]:
        """List ``(tick, path)`` of the snapshot files, newest tick first.

        Raises:
            SnapshotError: The folder exists but cannot be listed (not a
                folder, no permission).
        """
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SnapshotError(
                self.directory, f"cannot list the snapshot folder: {exc.strerror or exc}"
            ) from None
        found = []
        for name in names:
            match = SNAPSHOT_NAME.fullmatch(name)
            if match is not None:
                found.append((int(match.group(1)), self.directory / name))
        found.sort(reverse=True)
        return found

    def _prune(self, written: int) -> None:
        """Delete old generations and stray temp files; move newer ticks aside.

        Deletes only snapshots with a lower tick than ``written`` beyond the
        kept generations; see the module docstring for why a higher tick is
        moved aside rather than deleted.
        """
        older = 0
        newer: list[Path] = []
        for tick, path in self._snapshot_files():
            if tick == written:
                continue
            if tick > written:
                newer.append(path)
                continue
            if path.is_dir():
                # A folder under a snapshot's name is not ours to delete;
                # readers report it as unreadable.
                continue
            older += 1
            if older >= self.generations:
                path.unlink(missing_ok=True)
                self._own.discard(path.name)
        if newer:
            self._move_aside(newer)
        # A crash between creating and renaming a temp file leaves it behind.
        # Single writer per folder (module docstring), so any temp file that
        # still exists now is such a leftover.
        for name in os.listdir(self.directory):
            if _TEMP_NAME.fullmatch(name):
                (self.directory / name).unlink(missing_ok=True)
        # No folder fsync after deletions: if a power cut undoes them, the
        # next write prunes again; the new snapshot was synced already.

    def _move_aside(self, paths: list[Path]) -> Path:
        """Move ``paths`` (entries of the folder) into a new ``aside-<stamp>/`` folder.

        Both folders are fsynced, so a power cut cannot lose a moved file.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        aside = self.directory / f"aside-{stamp}"
        suffix = 1
        while True:
            try:
                aside.mkdir()
                break
            except FileExistsError:
                # Two moves in the same second: never mix them in one folder.
                suffix += 1
                aside = self.directory / f"aside-{stamp}-{suffix}"
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, aside / path.name)
            self._own.discard(path.name)
        _fsync_directory(aside)
        _fsync_directory(self.directory)
        return aside


def _fsync_directory(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable."""
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows cannot open folders
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _vanished(exc: SnapshotError) -> bool:
    return isinstance(exc.__cause__, FileNotFoundError)
