"""Files the supervisor reads from or writes to, checked before they are touched.

An operator (or an attacker who controls a config value) can point any path at
something that is not a file: a FIFO (reading blocks forever), a device
(``/dev/zero`` never ends; writing to a device node replaces nothing and may do
harm), a directory, a socket. These helpers refuse all of those with one line,
without blocking and without opening anything they refuse.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from ._errors import SupervisorError

__all__ = [
    "CONFIG_LIMIT",
    "UnsafePathError",
    "check_output_path",
    "read_config_bytes",
]

CONFIG_LIMIT: Final = 1_048_576
"""Largest config file read (1 MiB): real configs are a few kilobytes."""


class UnsafePathError(SupervisorError):
    """Raised when a path to read or write is not a regular file (or is too large).

    The message is one line, ``"<path>: <problem>"``.

    Attributes:
        path: The path at fault.
        problem: What is wrong with it, without the path.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        shown = os.fspath(path).replace("\n", "\\n")
        super().__init__(f"{shown}: {problem}")


def _kind(mode: int) -> str:
    """Name a non-regular file type for a message."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"  # pragma: no cover - door/port/whiteout: other OSes


def _describe(mode: int, symlink: bool) -> str:
    kind = _kind(mode)
    return f"is a symlink to {kind}" if symlink else f"is {kind}"


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that exists and is not a regular file.

    A missing path is fine as long as its nearest existing ancestor is a
    folder (the caller may still create intermediate folders). A symlink to a
    regular file is followed, like ``open`` would; a symlink to anything else,
    or to nothing, is refused, since writing through it lands somewhere the
    operator did not name.

    Args:
        path: The file about to be written (created or replaced).

    Raises:
        UnsafePathError: the path is a directory, FIFO, socket or device (or
            a symlink to one), a dangling symlink, or a file sits where one of
            its folders should be; or it cannot be examined.
    """
    p = Path(path)
    try:
        info = os.stat(p)
    except FileNotFoundError:
        _check_missing(p)
        return
    except NotADirectoryError:
        raise UnsafePathError(path, "a parent of this path is a file, not a folder") from None
    except OSError as exc:
        raise UnsafePathError(path, f"cannot check: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        symlink = os.path.islink(p)
        raise UnsafePathError(
            path,
            f"{_describe(info.st_mode, symlink)}, not a regular file; refusing to write to it",
        )


def _check_missing(p: Path) -> None:
    """A path that does not exist: refuse a dangling symlink or a file as an ancestor."""
    if os.path.islink(p):
        raise UnsafePathError(p, "is a symlink to nothing; refusing to write through it")
    for ancestor in p.absolute().parents:
        try:
            info = os.stat(ancestor)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UnsafePathError(p, f"cannot check {ancestor}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError(p, f"{ancestor} is {_kind_any(info.st_mode)}, not a folder")
        return


def _kind_any(mode: int) -> str:
    return "a regular file" if stat.S_ISREG(mode) else _kind(mode)


def read_config_bytes(path: str | os.PathLike[str], limit: int = CONFIG_LIMIT) -> bytes:
    """Read a small input file (a config), refusing anything that is not one.

    The type is checked with ``stat`` before opening (opening some devices has
    side effects) and again with ``fstat`` on the open descriptor (the path
    may have been swapped in between). ``O_NONBLOCK`` makes sure a FIFO
    cannot block the ``open`` itself; at most ``limit + 1`` bytes are read, so
    a file growing after the check cannot make the read unbounded.

    Args:
        path: The file.
        limit: Largest size accepted, in bytes.

    Returns:
        The file's contents.

    Raises:
        UnsafePathError: the file is missing, unreadable, a FIFO, a device, a
            socket or a directory, or larger than ``limit`` bytes.
    """
    try:
        _refuse_non_regular(os.stat(path), path, limit)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnsafePathError(path, "no such file") from None
    except OSError as exc:
        raise UnsafePathError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        _refuse_non_regular(os.fstat(fd), path, limit)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnsafePathError(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UnsafePathError(path, f"too large: over {limit} bytes (it grew while being read)")
    return b"".join(chunks)


def _refuse_non_regular(info: os.stat_result, path: str | os.PathLike[str], limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        symlink = os.path.islink(path)
        raise UnsafePathError(path, f"{_describe(info.st_mode, symlink)}, not a regular file")
    if info.st_size > limit:
        raise UnsafePathError(path, f"too large: {info.st_size} bytes, over the {limit}-byte limit")
