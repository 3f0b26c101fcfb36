"""Crash-safe, versioned, checksummed snapshots of the supervisor's state.

A snapshot is the state of every system (whatever its ``snapshot()`` returned)
plus a few supervisor-level extras, taken at one tick. The store keeps the
last few of them on disk so that a restarted supervisor can carry on from
the newest one that is intact.

On-disk contract:

* Snapshots live in ``state_dir/snapshots/`` as ``snapshot-<tick>.msgpack``,
  the tick written as a plain decimal integer (``snapshot-0.msgpack``,
  ``snapshot-1200.msgpack``; no sign, no leading zeros). Ticks are bounded
  by :data:`MAX_TICK` (2**53): a header outside ``0..MAX_TICK`` is corrupt.
  Other names in the folder are not snapshots and are left alone, except
  ``aside-<UTC yyyymmddThhmmssZ>/`` folders, where snapshots that must not be
  deleted are moved (see below); the store never deletes anything in them.
* Each file is one msgpack map::

      {
          "format": 1,                      # FORMAT_VERSION, checked first
          "header": <bin: msgpack map {"tick": int, "phase": str,
                                        "reason": str, "time": float}>,
          "body":   <bin: msgpack map {"systems": {name: state}, "meta": {...}}>,
          "sha256": <bin, 32 bytes>,        # or "hmac_sha256", see below
      }

  ``sha256`` is taken over ``len(header)`` (4 bytes, big-endian), then the
  header bytes, then the body bytes, so it covers the header as well as the
  body. Header and body are stored as byte strings, so the checksum is
  verified on the exact bytes that were written, before anything inside them
  is decoded; no re-encoding (and no canonical form) is involved.
* A store given a ``key`` (``[supervisor] snapshot_key``) writes
  ``hmac_sha256`` instead of ``sha256``: HMAC-SHA256 with that key over the
  same bytes, so that only a holder of the key can forge a snapshot (a plain
  sha256 stops accidents, not an attacker who can write to the folder). A
  keyed store refuses plain files and files whose MAC does not match ("not
  authenticated with the configured snapshot_key"), exactly like a corrupt
  file; a store without a key reads plain files (older snapshots stay
  readable) and refuses keyed ones, whose integrity it cannot check. Turning
  a key on therefore makes the existing plain snapshots unreadable until they
  are moved aside (``run --fresh``) or the key is removed again.
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
* Reading never trusts the file: its size is capped, every msgpack error is
  turned into a :class:`SnapshotError` with a one-line message naming the
  file and what is wrong with it (truncated, bad checksum, wrong format
  version, not msgpack, missing field, wrong type), and every header and body
  field is type-checked. Symlinks, directories, FIFOs and devices under a
  snapshot's name are refused without being followed or opened for long.
  :meth:`SnapshotStore.latest` skips a corrupt newest snapshot, reports it,
  and uses the previous generation.

Round-trip notes: msgpack has no tuples, so tuples in a system's state come
back as lists; ``bytes`` and ``str`` stay distinct. :meth:`SnapshotStore.encode`
refuses (rather than writes) a snapshot it could not read back, e.g. a state
whose map keys are tuples.

The store assumes a single writer per folder (the supervisor that owns
``state_dir``): the next write deletes every stray temporary file, including
one that a second, concurrent writer would still be filling. Readers may run
concurrently with the writer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack  # type: ignore[import-untyped,unused-ignore]

from .._errors import one_line
from .._files import UnsafePathError, check_output_path

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "MAX_TICK",
    "Snapshot",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotStore",
]

FORMAT_VERSION: Final = 1
"""Version of the on-disk layout described in the module docstring."""

MAX_SNAPSHOT_BYTES: Final = 256 * 1024 * 1024
"""Default cap on a snapshot file's size, for reading and for writing."""

MAX_HEADER_BYTES: Final = 1024 * 1024
"""Cap on the encoded header (tick, phase, reason, time)."""

MAX_TICK: Final = 2**53
"""Highest tick a snapshot may carry: exact as a float, far beyond any real run."""

_SNAPSHOT_NAME: Final = re.compile(r"snapshot-(0|[1-9][0-9]*)\.msgpack")
_TEMP_NAME: Final = re.compile(r"\.snapshot-.*\.tmp")
_PLAIN: Final = "sha256"
_KEYED: Final = "hmac_sha256"
_CONTAINER_FIELDS: Final = frozenset({"format", "header", "body", _PLAIN})
_KEYED_FIELDS: Final = frozenset({"format", "header", "body", _KEYED})
_NOT_AUTHENTICATED: Final = "not authenticated with the configured snapshot_key"
_HEADER_FIELDS: Final = ("tick", "phase", "reason", "time")
_BODY_FIELDS: Final = ("systems", "meta")
_DIGEST_SIZE: Final = hashlib.sha256().digest_size
# Longest text taken from an exception or a bad value into an error message,
# so that one line stays one readable line.
_MAX_DETAIL: Final = 160


class SnapshotError(ValueError):
    """Raised when a snapshot file cannot be read or is invalid.

    The message is a single line, ``"<path>: <problem>"``.

    Attributes:
        path: The snapshot file concerned.
        problem: What is wrong with it, without the path.
    """

    path: Path
    problem: str

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = one_line(problem)
        # A newline in a file name must not split the one-line message either.
        shown = str(path).replace("\n", "\\n")
        super().__init__(f"{shown}: {self.problem}")

    def __reduce__(self) -> tuple[type[SnapshotError], tuple[Path, str]]:
        # The default reduce would call __init__ with the formatted message
        # only; keep the exception picklable (e.g. across processes).
        return (type(self), (self.path, self.problem))


@attrs.frozen(kw_only=True)
class Snapshot:
    """The supervisor's state at one tick.

    Attributes:
        tick: The tick the snapshot was taken at (``>= 0``).
        phase: The supervisor phase at capture.
        reason: Why the snapshot was taken (periodic, shutdown, ...).
        time: Wall-clock :func:`time.time` at capture.
        systems: System name -> that system's ``snapshot()`` state; must be
            msgpack-serialisable.
        meta: Supervisor-level extras (tick rate, counters, error history).
    """

    tick: int
    phase: str
    reason: str
    time: float
    systems: dict[str, Any]
    meta: dict[str, Any] = attrs.field(factory=dict)


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
            see the module docstring. Never shown in ``repr``.
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
        """Encode a snapshot into the bytes of a snapshot file.

        Pure (no I/O, no shared state), so the caller can encode on one thread
        and hand the bytes to :meth:`write_bytes` on another.

        Args:
            snap: The snapshot to encode.

        Returns:
            The file contents.

        Raises:
            TypeError: If a field has the wrong type, a system or meta key is
                not a ``str``, or a state is not msgpack-serialisable.
            ValueError: If the tick is negative, the time is not finite, a
                state would not read back (e.g. tuple map keys), or the result
                is larger than ``max_bytes``.
        """
        _check_tick(snap.tick)
        for name in ("phase", "reason"):
            if not isinstance(getattr(snap, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(snap, name)).__name__}")
        if isinstance(snap.time, bool) or not isinstance(snap.time, int | float):
            raise TypeError(f"time must be a float, got {type(snap.time).__name__}")
        if not math.isfinite(snap.time):
            raise ValueError(f"time must be finite, got {snap.time!r}")
        _check_str_keys("systems", snap.systems)
        _check_str_keys("meta", snap.meta)

        header: bytes = msgpack.packb(
            {
                "tick": snap.tick,
                "phase": snap.phase,
                "reason": snap.reason,
                "time": float(snap.time),
            }
        )
        if len(header) > MAX_HEADER_BYTES:
            raise ValueError(
                f"header is {len(header)} bytes, over the {MAX_HEADER_BYTES}-byte limit "
                "(is the reason or the phase that long?)"
            )
        body = _pack_body(snap)
        # Read the body back now: a state that msgpack can write but not read
        # (tuple or dict map keys) must fail here, loudly, and not at recovery
        # time when the snapshot is needed.
        try:
            _unpack_body(body)
        except _BadSnapshot as exc:
            raise ValueError(f"snapshot would not read back: {exc}") from None

        data: bytes = msgpack.packb(
            {
                "format": FORMAT_VERSION,
                "header": header,
                "body": body,
                (_KEYED if self.key is not None else _PLAIN): _digest(header, body, self.key),
            }
        )
        if len(data) > self.max_bytes:
            raise ValueError(
                f"snapshot is {len(data)} bytes, over the store's max_bytes={self.max_bytes}"
            )
        return data

    def decode(self, data: bytes, path: Path) -> Snapshot:
        """Validate and decode the contents of a snapshot file.

        Args:
            data: The file contents.
            path: The file they came from, for error messages and to check
                the tick in the file name (when it is a snapshot name).

        Returns:
            The snapshot.

        Raises:
            SnapshotError: If the data is not a valid snapshot.
        """
        try:
            return self._decode(data, path)
        except _BadSnapshot as exc:
            raise SnapshotError(path, str(exc)) from None

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
        _check_tick(tick)
        self._ensure_directory()
        final = self.directory / _snapshot_name(tick)
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

    def _decode(self, data: bytes, path: Path) -> Snapshot:
        if not data:
            raise _BadSnapshot("truncated: the file is empty")
        container, extra = _unpack_container(data, self.max_bytes)
        # Type first, trailing bytes second: a text file decodes as one small
        # int followed by "garbage", and "top level is int" says it better.
        if not isinstance(container, dict):
            raise _BadSnapshot(
                f"not a snapshot file: top level is {_kind(container)}, expected a map"
            )
        if extra:
            raise _BadSnapshot(f"{extra} unexpected bytes after the snapshot")
        # The format version comes first: a future version may change every
        # other field, and "wrong format version 2" is the useful message then.
        if "format" not in container:
            raise _BadSnapshot("not a snapshot file: missing field 'format'")
        fmt = container["format"]
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise _BadSnapshot(f"field 'format' is {_kind(fmt)}, expected int")
        if fmt != FORMAT_VERSION:
            raise _BadSnapshot(
                f"wrong format version {fmt}, this supervisor reads version {FORMAT_VERSION}"
            )
        keyed = _KEYED in container
        if self.key is not None and not keyed:
            raise _BadSnapshot(
                f"{_NOT_AUTHENTICATED}: the file has no HMAC (written without a key?)"
            )
        if self.key is None and keyed:
            raise _BadSnapshot(
                "authenticated with a snapshot_key, but none is configured: cannot verify it"
            )
        mac_field = _KEYED if keyed else _PLAIN
        _check_fields("file", container, _KEYED_FIELDS if keyed else _CONTAINER_FIELDS)
        header, body, digest = container["header"], container["body"], container[mac_field]
        for name, value in (("header", header), ("body", body), (mac_field, digest)):
            if not isinstance(value, bytes):
                raise _BadSnapshot(f"field {name!r} is {_kind(value)}, expected bytes")
        if len(digest) != _DIGEST_SIZE:
            raise _BadSnapshot(
                f"field {mac_field!r} is {len(digest)} bytes, expected {_DIGEST_SIZE}"
            )
        if len(header) > MAX_HEADER_BYTES:
            raise _BadSnapshot(f"header too large: {len(header)} bytes")
        if not hmac.compare_digest(_digest(header, body, self.key), digest):
            if keyed:
                raise _BadSnapshot(
                    f"{_NOT_AUTHENTICATED}: wrong key, or the header or body was altered"
                )
            raise _BadSnapshot("bad checksum: the header or body was altered or damaged")

        fields = _unpack_header(header)
        tick = fields["tick"]
        named = _SNAPSHOT_NAME.fullmatch(path.name)
        if named is not None and int(named.group(1)) != tick:
            raise _BadSnapshot(
                f"the file name says tick {named.group(1)} but the header says tick {tick}"
            )
        systems, meta = _unpack_body(body)
        return Snapshot(
            tick=tick,
            phase=fields["phase"],
            reason=fields["reason"],
            time=fields["time"],
            systems=systems,
            meta=meta,
        )

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
            match = _SNAPSHOT_NAME.fullmatch(name)
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


class _BadSnapshot(Exception):
    """Internal: what is wrong with a snapshot, before the path is attached."""


def _snapshot_name(tick: int) -> str:
    return f"snapshot-{tick}.msgpack"


def _check_tick(tick: object) -> None:
    if isinstance(tick, bool) or not isinstance(tick, int):
        raise TypeError(f"tick must be an int, got {type(tick).__name__}")
    if tick < 0:
        raise ValueError(f"tick must be >= 0, got {tick}")
    if tick > MAX_TICK:
        raise ValueError(f"tick must be <= 2**53, got {tick}")


def _check_str_keys(what: str, mapping: object) -> None:
    if not isinstance(mapping, dict):
        raise TypeError(f"{what} must be a dict, got {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be str, got {key!r}")


def _pack_body(snap: Snapshot) -> bytes:
    try:
        body: bytes = msgpack.packb({"systems": snap.systems, "meta": snap.meta})
    except (TypeError, ValueError, OverflowError) as exc:
        # Pack each part alone to tell the caller which system is at fault.
        parts = [(f"state of system {name!r}", state) for name, state in snap.systems.items()]
        parts.append(("meta", snap.meta))
        for what, value in parts:
            try:
                msgpack.packb(value)
            except (TypeError, ValueError, OverflowError) as part_exc:
                raise TypeError(
                    f"{what} is not msgpack-serialisable: {_detail(part_exc)}"
                ) from part_exc
        raise TypeError(f"snapshot is not msgpack-serialisable: {_detail(exc)}") from exc
    return body


def _digest(header: bytes, body: bytes, key: bytes | None = None) -> bytes:
    """Checksum (or, with a key, HMAC) of a snapshot's header and body (module docstring)."""
    h = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)
    # The header length pins the split point, so no byte can move between
    # header and body without changing the digest.
    h.update(len(header).to_bytes(4, "big"))
    h.update(header)
    h.update(body)
    return h.digest()


def _unpack_container(data: bytes, max_bytes: int) -> tuple[Any, int]:
    """Decode the outer map, telling truncation apart from other damage.

    Returns:
        The decoded object and the number of bytes left after it.
    """
    # A streaming Unpacker raises OutOfData on a cut-off file, where unpackb
    # says "incomplete input" or trips a length limit derived from the short
    # buffer. Declared lengths may go up to max_bytes (a truncated file's
    # body still declares its full length); container sizes stay tiny since
    # the outer map has four entries.
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        max_buffer_size=max(len(data), 1),
        max_bin_len=max_bytes,
        max_str_len=max_bytes,
        max_map_len=16,
        max_array_len=16,
        max_ext_len=0,
    )
    try:
        unpacker.feed(data)
        container = unpacker.unpack()
    except msgpack.OutOfData:
        raise _BadSnapshot(f"truncated: the file ends early ({len(data)} bytes)") from None
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise _BadSnapshot(f"not msgpack or not a snapshot file: {_detail(exc)}") from None
    return container, len(data) - unpacker.tell()


def _unpack_blob(what: str, blob: bytes, *, strict_map_key: bool) -> Any:
    # unpackb derives its length limits from len(blob), so a lying length
    # prefix inside the blob cannot make it allocate more than the blob size.
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=strict_map_key)
    except msgpack.StackError:
        raise _BadSnapshot(f"{what} is not valid msgpack: nested too deeply") from None
    except UnicodeDecodeError:
        raise _BadSnapshot(f"{what} is not valid msgpack: a string is not UTF-8") from None
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise _BadSnapshot(f"{what} is not valid msgpack: {_detail(exc)}") from None


def _unpack_header(blob: bytes) -> dict[str, Any]:
    header = _unpack_blob("header", blob, strict_map_key=True)
    if not isinstance(header, dict):
        raise _BadSnapshot(f"header is {_kind(header)}, expected a map")
    _check_fields("header", header, _HEADER_FIELDS)
    tick = header["tick"]
    if isinstance(tick, bool) or not isinstance(tick, int):
        raise _BadSnapshot(f"header field 'tick' is {_kind(tick)}, expected int")
    if tick < 0:
        raise _BadSnapshot(f"header field 'tick' is negative ({tick})")
    if tick > MAX_TICK:
        # A forged tick near 2**64 used to reach an OverflowError downstream.
        raise _BadSnapshot(f"header field 'tick' is {tick}, over the limit 2**53")
    for name in ("phase", "reason"):
        if not isinstance(header[name], str):
            raise _BadSnapshot(f"header field {name!r} is {_kind(header[name])}, expected str")
    stamp = header["time"]
    if not isinstance(stamp, float):
        raise _BadSnapshot(f"header field 'time' is {_kind(stamp)}, expected float")
    if not math.isfinite(stamp):
        raise _BadSnapshot(f"header field 'time' is not finite ({stamp!r})")
    return header


def _unpack_body(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    # Non-string map keys are allowed inside system states (e.g. entity ids);
    # the two top levels are checked for str keys below.
    body = _unpack_blob("body", blob, strict_map_key=False)
    if not isinstance(body, dict):
        raise _BadSnapshot(f"body is {_kind(body)}, expected a map")
    _check_fields("body", body, _BODY_FIELDS)
    parts: list[dict[str, Any]] = []
    for name in _BODY_FIELDS:
        value = body[name]
        if not isinstance(value, dict):
            raise _BadSnapshot(f"body field {name!r} is {_kind(value)}, expected a map")
        for key in value:
            if not isinstance(key, str):
                raise _BadSnapshot(
                    f"body field {name!r} has key {_detail(repr(key))} ({_kind(key)}), expected str"
                )
        parts.append(value)
    return parts[0], parts[1]


def _check_fields(
    what: str, mapping: dict[Any, Any], expected: tuple[str, ...] | frozenset[str]
) -> None:
    for name in sorted(expected):
        if name not in mapping:
            raise _BadSnapshot(f"{what} is missing field {name!r}")
    for key in mapping:
        if key not in expected:
            raise _BadSnapshot(f"{what} has unexpected field {_detail(repr(key))}")


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


def _kind(value: object) -> str:
    """Name a decoded value's type the way msgpack would."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _detail(value: object) -> str:
    text = one_line(str(value)) or type(value).__name__
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text
