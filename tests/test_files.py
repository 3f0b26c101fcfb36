"""Tests for supervisor._files: output paths and config reads that refuse non-files."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor import SupervisorError
from supervisor._files import (
    CONFIG_LIMIT,
    UnsafePathError,
    check_output_path,
    read_config_bytes,
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
needs_dev_zero = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")


def within(seconds: float, call: Callable[[], object]) -> object:
    """Run ``call`` on a thread and fail (rather than hang) if it blocks past ``seconds``.

    A regression that makes a read block on a FIFO must fail the test, not
    hang the suite; the stuck thread is a daemon and dies with the process.
    """
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed back to the test thread
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"blocked for more than {seconds} s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    yield path
    sock.close()


class TestCheckOutputPath:
    def test_missing_file_in_existing_folder(self, tmp_path: Path) -> None:
        """A new file in an existing folder is fine."""
        check_output_path(tmp_path / "summary.json")

    def test_missing_folders_are_fine(self, tmp_path: Path) -> None:
        """Folders the caller will create are fine when the nearest existing one is a folder."""
        check_output_path(tmp_path / "a" / "b" / "summary.json")

    def test_regular_file_and_symlink_to_one(self, tmp_path: Path) -> None:
        """An existing regular file, or a symlink to one, may be replaced."""
        target = tmp_path / "old.json"
        target.write_text("{}")
        check_output_path(target)
        (tmp_path / "link.json").symlink_to(target)
        check_output_path(tmp_path / "link.json")

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused with one line naming the path."""
        with pytest.raises(UnsafePathError) as info:
            check_output_path(tmp_path)
        assert (
            str(info.value)
            == f"{tmp_path}: is a directory, not a regular file; refusing to write to it"
        )
        assert info.value.path == tmp_path

    @needs_dev_zero
    def test_device(self) -> None:
        """A device node is refused: the old --summary-json replaced one."""
        with pytest.raises(UnsafePathError, match="is a character device"):
            check_output_path("/dev/null")

    @needs_fifo
    def test_fifo(self, tmp_path: Path) -> None:
        """A FIFO is refused (opening it for writing would block)."""
        os.mkfifo(tmp_path / "f")
        with pytest.raises(UnsafePathError, match="is a FIFO"):
            within(5.0, lambda: check_output_path(tmp_path / "f"))

    def test_socket(self, unix_socket: Path) -> None:
        """A Unix socket is refused."""
        with pytest.raises(UnsafePathError, match="is a socket"):
            check_output_path(unix_socket)

    @needs_dev_zero
    def test_symlink_to_device(self, tmp_path: Path) -> None:
        """A symlink to a device says so."""
        (tmp_path / "link").symlink_to("/dev/zero")
        with pytest.raises(UnsafePathError, match="is a symlink to a character device"):
            check_output_path(tmp_path / "link")

    def test_dangling_symlink(self, tmp_path: Path) -> None:
        """A symlink to nothing is refused: writing would create a file elsewhere."""
        (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(UnsafePathError, match="symlink to nothing"):
            check_output_path(tmp_path / "link")
        assert not (tmp_path / "elsewhere").exists()

    def test_file_as_parent(self, tmp_path: Path) -> None:
        """A file where a folder should be is one line, not FileExistsError/NotADirectoryError."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(UnsafePathError, match="not a folder"):
            check_output_path(tmp_path / "file" / "out.json")
        with pytest.raises(UnsafePathError, match="not a folder"):
            check_output_path(tmp_path / "file" / "deeper" / "out.json")

    def test_is_a_supervisor_error(self, tmp_path: Path) -> None:
        """Callers catch it as a SupervisorError; it is not an OSError."""
        with pytest.raises(SupervisorError) as info:
            check_output_path(tmp_path)
        assert not isinstance(info.value, OSError)

    def test_newline_in_name_stays_one_line(self, tmp_path: Path) -> None:
        """A newline in the path cannot split the message."""
        odd = tmp_path / "a\nb"
        odd.mkdir()
        with pytest.raises(UnsafePathError) as info:
            check_output_path(odd)
        assert "\n" not in str(info.value)


class TestReadConfigBytes:
    def test_reads_a_file(self, tmp_path: Path) -> None:
        """A small regular file is read whole."""
        path = tmp_path / "c.toml"
        path.write_bytes(b"[supervisor]\n")
        assert read_config_bytes(path) == b"[supervisor]\n"

    def test_limit_is_inclusive(self, tmp_path: Path) -> None:
        """A file of exactly the limit is read; one byte more is refused."""
        path = tmp_path / "c.toml"
        path.write_bytes(b"#" * 100)
        assert len(read_config_bytes(path, limit=100)) == 100
        with pytest.raises(UnsafePathError, match="too large: 100 bytes, over the 99-byte limit"):
            read_config_bytes(path, limit=99)

    def test_default_limit_is_one_mebibyte(self, tmp_path: Path) -> None:
        """The default refuses a config over 1 MiB."""
        path = tmp_path / "big.toml"
        path.write_bytes(b"#" * (CONFIG_LIMIT + 1))
        assert CONFIG_LIMIT == 1_048_576
        with pytest.raises(UnsafePathError, match="too large"):
            read_config_bytes(path)

    def test_missing(self, tmp_path: Path) -> None:
        """A missing file is one line."""
        with pytest.raises(UnsafePathError, match="no such file"):
            read_config_bytes(tmp_path / "nope.toml")

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused."""
        with pytest.raises(UnsafePathError, match="is a directory"):
            read_config_bytes(tmp_path)

    @needs_dev_zero
    def test_dev_zero(self) -> None:
        """/dev/zero is refused before anything is read (old main read it without limit)."""
        with pytest.raises(UnsafePathError, match="is a character device"):
            within(5.0, lambda: read_config_bytes("/dev/zero"))

    @needs_dev_zero
    def test_symlink_to_dev_zero(self, tmp_path: Path) -> None:
        """A symlink to a device is refused too, and says it is a symlink."""
        (tmp_path / "c.toml").symlink_to("/dev/zero")
        with pytest.raises(UnsafePathError, match="symlink to a character device"):
            read_config_bytes(tmp_path / "c.toml")

    @needs_fifo
    def test_fifo_does_not_hang(self, tmp_path: Path) -> None:
        """A FIFO is refused at once (old main blocked forever in open)."""
        os.mkfifo(tmp_path / "c.toml")
        with pytest.raises(UnsafePathError, match="is a FIFO"):
            within(5.0, lambda: read_config_bytes(tmp_path / "c.toml"))

    @needs_fifo
    def test_fifo_swapped_in_after_stat(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A FIFO swapped in between the stat and the open is caught by fstat, without blocking."""
        path = tmp_path / "c.toml"
        os.mkfifo(path)
        real_stat = os.stat
        # The first check sees a small regular file; the open then meets the FIFO.
        fake = os.stat_result((0o100644, 0, 0, 1, 0, 0, 10, 0, 0, 0))
        monkeypatch.setattr(os, "stat", lambda p, *a, **k: fake if p == path else real_stat(p))
        with pytest.raises(UnsafePathError, match="is a FIFO"):
            within(5.0, lambda: read_config_bytes(path))

    def test_socket(self, unix_socket: Path) -> None:
        """A socket is refused (os.open would fail with ENXIO otherwise)."""
        with pytest.raises(UnsafePathError, match="is a socket"):
            read_config_bytes(unix_socket)

    def test_grew_after_stat(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """At most limit + 1 bytes are read even if fstat lied about the size."""
        path = tmp_path / "c.toml"
        path.write_bytes(b"#" * 50)
        real_stat, real_fstat = os.stat, os.fstat

        def small(info: os.stat_result) -> os.stat_result:
            return os.stat_result((*info[:6], 1, *info[7:]))

        monkeypatch.setattr(os, "stat", lambda p, *a, **k: small(real_stat(p, *a, **k)))
        monkeypatch.setattr(os, "fstat", lambda fd: small(real_fstat(fd)))
        with pytest.raises(UnsafePathError, match="grew while being read"):
            read_config_bytes(path, limit=10)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
    def test_unreadable(self, tmp_path: Path) -> None:
        """A permission error is one line."""
        path = tmp_path / "c.toml"
        path.write_text("x = 1")
        path.chmod(0)
        with pytest.raises(UnsafePathError, match="cannot read: Permission denied"):
            read_config_bytes(path)
