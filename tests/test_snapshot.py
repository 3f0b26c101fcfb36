"""Tests for the snapshot store: format, atomic writes, generations, corruption."""

from __future__ import annotations

import os
import pickle
import random
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor._core import _snapshot, _snapshot_format
from supervisor._core._snapshot import SnapshotInfo, SnapshotStore
from supervisor._core._snapshot_format import (
    FORMAT_VERSION,
    SNAPSHOT_NAME,
    Snapshot,
    SnapshotError,
)

SNAPSHOT_MODULE = Path(_snapshot.__file__)


def make_snapshot(tick: int, **overrides: Any) -> Snapshot:
    """A small but varied snapshot at ``tick``."""
    fields: dict[str, Any] = {
        "tick": tick,
        "phase": "running",
        "reason": "periodic",
        "time": 1_700_000_000.25 + tick,
        "systems": {
            "heartbeat": {"beats": tick, "last": None},
            "wanderers": {
                "positions": {1: [0.5, -2.0], 2: [3.25, 4.0]},
                "names": ["ana", "bø", "ß"],
                "blob": b"\x00\xff" * 8,
                "alive": True,
            },
        },
        "meta": {"tick_rate": 20.0, "counters": {"errors": 0}},
    }
    fields.update(overrides)
    return Snapshot(**fields)


def build_file(
    header: Any,
    body: Any = None,
    *,
    fmt: Any = FORMAT_VERSION,
    raw_header: bytes | None = None,
    raw_body: bytes | None = None,
) -> bytes:
    """A snapshot file with arbitrary header/body content but a valid checksum.

    Lets the tests reach the header and body validation, past the checksum.
    """
    header_bytes = raw_header if raw_header is not None else msgpack.packb(header)
    if raw_body is not None:
        body_bytes = raw_body
    else:
        body_bytes = msgpack.packb(body if body is not None else {"systems": {}, "meta": {}})
    data: bytes = msgpack.packb(
        {
            "format": fmt,
            "header": header_bytes,
            "body": body_bytes,
            "sha256": _snapshot_format._digest(header_bytes, body_bytes),
        }
    )
    return data


GOOD_HEADER: dict[str, Any] = {"tick": 7, "phase": "running", "reason": "periodic", "time": 1.5}


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "state" / "snapshots", generations=3)


def snapshot_names(store: SnapshotStore) -> list[str]:
    return sorted(os.listdir(store.directory))


class TestStoreSettings:
    def test_generations_must_be_positive(self, tmp_path: Path) -> None:
        """generations < 1 is rejected at construction, since it would keep nothing."""
        for bad in (0, -1):
            with pytest.raises(ValueError, match="generations"):
                SnapshotStore(tmp_path, generations=bad)

    def test_max_bytes_must_be_positive(self, tmp_path: Path) -> None:
        """A zero size limit is rejected at construction."""
        with pytest.raises(ValueError, match="max_bytes"):
            SnapshotStore(tmp_path, max_bytes=0)

    def test_defaults(self, tmp_path: Path) -> None:
        """The store keeps three generations unless told otherwise."""
        assert SnapshotStore(tmp_path).generations == 3


class TestRoundTrip:
    def test_write_then_read(self, store: SnapshotStore) -> None:
        """Every field, including nested int keys, bytes and unicode, survives a write/read."""
        snap = make_snapshot(42)
        path = store.write(snap)
        assert store.read(path) == snap

    def test_encode_and_write_bytes_split(self, store: SnapshotStore) -> None:
        """encode() on one side plus write_bytes() on the other is the same as write()."""
        snap = make_snapshot(5)
        path = store.write_bytes(5, store.encode(snap))
        assert store.read(path) == snap
        assert store.decode(path.read_bytes(), path) == snap

    def test_encode_is_deterministic(self, store: SnapshotStore) -> None:
        """encode() is pure: same snapshot, same bytes, and nothing touches the disk."""
        snap = make_snapshot(5)
        assert store.encode(snap) == store.encode(snap)
        assert not store.directory.exists()

    def test_meta_defaults_to_empty(self, store: SnapshotStore) -> None:
        """A snapshot without meta reads back with an empty meta map."""
        snap = Snapshot(tick=0, phase="boot", reason="first", time=0.0, systems={})
        assert store.read(store.write(snap)).meta == {}

    def test_tuples_come_back_as_lists(self, store: SnapshotStore) -> None:
        """msgpack has no tuples: a tuple in a state reads back as a list (documented)."""
        snap = make_snapshot(1, systems={"s": {"pair": (1, 2)}})
        assert store.read(store.write(snap)).systems == {"s": {"pair": [1, 2]}}

    def test_latest_returns_newest(self, store: SnapshotStore) -> None:
        """latest() picks the highest tick and reports no errors when all files are fine."""
        for tick in (10, 20, 30):
            store.write(make_snapshot(tick))
        snap, errors = store.latest()
        assert snap == make_snapshot(30)
        assert errors == []

    def test_latest_on_missing_folder(self, tmp_path: Path) -> None:
        """No folder yet means no snapshot and no error."""
        assert SnapshotStore(tmp_path / "nope").latest() == (None, [])
        assert SnapshotStore(tmp_path / "nope").scan() == []


class TestEncodeValidation:
    def test_negative_tick(self, store: SnapshotStore) -> None:
        """A negative tick cannot be named as a plain decimal file and is refused."""
        with pytest.raises(ValueError, match="tick"):
            store.encode(make_snapshot(-1))
        with pytest.raises(ValueError, match="tick"):
            store.write_bytes(-1, b"")

    def test_bool_tick(self, store: SnapshotStore) -> None:
        """bool is not accepted as an int tick."""
        with pytest.raises(TypeError, match="tick"):
            store.encode(make_snapshot(True))

    def test_non_str_system_name(self, store: SnapshotStore) -> None:
        """System names must be strings, as the reader requires."""
        with pytest.raises(TypeError, match="systems keys"):
            store.encode(make_snapshot(1, systems={1: {}}))

    def test_non_finite_time(self, store: SnapshotStore) -> None:
        """A NaN capture time is refused."""
        with pytest.raises(ValueError, match="time"):
            store.encode(make_snapshot(1, time=float("nan")))

    def test_unserialisable_state_names_the_system(self, store: SnapshotStore) -> None:
        """A state msgpack cannot encode fails with the culprit system's name."""
        with pytest.raises(TypeError, match="'bad'"):
            store.encode(make_snapshot(1, systems={"ok": {}, "bad": {"x": object()}}))

    def test_state_that_would_not_read_back(self, store: SnapshotStore) -> None:
        """Tuple map keys encode but cannot be decoded, so encode() refuses them up front."""
        with pytest.raises(ValueError, match="read back"):
            store.encode(make_snapshot(1, systems={"s": {(1, 2): "x"}}))

    def test_too_large(self, tmp_path: Path) -> None:
        """A snapshot over max_bytes is refused on write, as the reader would refuse it."""
        small = SnapshotStore(tmp_path, max_bytes=100)
        with pytest.raises(ValueError, match="max_bytes"):
            small.encode(make_snapshot(1))


class TestFileName:
    def test_name_is_plain_decimal_tick(self, store: SnapshotStore) -> None:
        """Files are named snapshot-<tick>.msgpack inside the snapshots folder."""
        for tick in (0, 7, 10**12):
            path = store.write(make_snapshot(tick))
            assert path == store.directory / f"snapshot-{tick}.msgpack"
            assert path.is_file()

    def test_folder_is_created(self, tmp_path: Path) -> None:
        """The first write creates the folder and its parents."""
        store = SnapshotStore(tmp_path / "a" / "b" / "snapshots")
        store.write(make_snapshot(1))
        assert snapshot_names(store) == ["snapshot-1.msgpack"]

    def test_other_names_are_ignored(self, store: SnapshotStore) -> None:
        """Only snapshot-<tick>.msgpack files count; leading zeros and other files do not."""
        store.write(make_snapshot(1))
        for name in ("snapshot-007.msgpack", "snapshot-x.msgpack", "notes.txt"):
            (store.directory / name).write_bytes(b"junk")
        assert [info.tick for info in store.scan()] == [1]
        assert store.latest() == (make_snapshot(1), [])
        store.write(make_snapshot(2))
        assert "notes.txt" in snapshot_names(store)

    def test_renamed_file_is_rejected(self, store: SnapshotStore) -> None:
        """A file whose name disagrees with its header tick is reported, not trusted."""
        path = store.write(make_snapshot(3))
        path.rename(store.directory / "snapshot-9.msgpack")
        snap, errors = store.latest()
        assert snap is None
        assert len(errors) == 1
        assert "file name says tick 9" in str(errors[0])


class TestGenerations:
    def test_keeps_last_generations(self, store: SnapshotStore) -> None:
        """After five writes with generations=3 only the three newest remain."""
        for tick in range(1, 6):
            store.write(make_snapshot(tick))
        assert snapshot_names(store) == [f"snapshot-{t}.msgpack" for t in (3, 4, 5)]

    def test_single_generation(self, tmp_path: Path) -> None:
        """generations=1 keeps just the snapshot written last."""
        store = SnapshotStore(tmp_path, generations=1)
        for tick in (1, 2, 3):
            store.write(make_snapshot(tick))
        assert snapshot_names(store) == ["snapshot-3.msgpack"]

    def test_rewriting_same_tick(self, store: SnapshotStore) -> None:
        """Writing the same tick again replaces that file and keeps the others."""
        store.write(make_snapshot(1))
        store.write(make_snapshot(2))
        store.write(make_snapshot(2, reason="shutdown"))
        assert snapshot_names(store) == ["snapshot-1.msgpack", "snapshot-2.msgpack"]
        assert store.latest()[0] == make_snapshot(2, reason="shutdown")

    def test_rollback_moves_newer_ticks_aside(self, store: SnapshotStore) -> None:
        """After a restore from an older tick, the newer snapshots are moved aside, not deleted.

        Out of the folder, or the next restart would pick the rolled-back
        timeline again; kept, because it may be state an emergency preserved
        (old main deleted it).
        """
        store.clock = lambda: 1_764_600_000.0  # 2025-12-01T14:40:00Z
        for tick in (10, 20, 30):
            store.write(make_snapshot(tick))
        store.write(make_snapshot(21))
        assert snapshot_names(store) == [
            "aside-20251201T144000Z",
            "snapshot-10.msgpack",
            "snapshot-20.msgpack",
            "snapshot-21.msgpack",
        ]
        aside = store.directory / "aside-20251201T144000Z"
        assert os.listdir(aside) == ["snapshot-30.msgpack"]
        assert store.read(aside / "snapshot-30.msgpack") == make_snapshot(30)
        assert store.latest()[0] == make_snapshot(21)

    def test_failed_write_does_not_prune(
        self, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails leaves every previous generation in place."""
        for tick in (1, 2, 3):
            store.write(make_snapshot(tick))

        def broken_replace(src: Any, dst: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError, match="No space"):
            store.write(make_snapshot(4))
        assert snapshot_names(store) == [f"snapshot-{t}.msgpack" for t in (1, 2, 3)]


class TestAtomicWrite:
    def test_no_temp_files_left(self, store: SnapshotStore) -> None:
        """Successful writes leave only snapshot files in the folder."""
        for tick in range(4):
            store.write(make_snapshot(tick))
        assert all(name.startswith("snapshot-") for name in os.listdir(store.directory))

    def test_sync_order(self, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """The temp file is fsynced before the rename, and the folder after it."""
        store.write(make_snapshot(0))  # folder exists: only this write's syncs are seen
        events: list[str] = []
        real_fsync, real_replace = os.fsync, os.replace

        def spy_fsync(fd: int) -> None:
            mode = os.fstat(fd).st_mode
            events.append("fsync-dir" if stat.S_ISDIR(mode) else "fsync-file")
            real_fsync(fd)

        def spy_replace(src: Any, dst: Any) -> None:
            name = Path(src).name
            assert name.endswith(".tmp")
            assert not SNAPSHOT_NAME.fullmatch(name)
            assert Path(src).parent == store.directory
            events.append("replace")
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", spy_fsync)
        monkeypatch.setattr(os, "replace", spy_replace)
        store.write(make_snapshot(1))
        assert events == ["fsync-file", "replace", "fsync-dir"]

    def test_new_folder_is_synced_in_its_parent(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Creating the snapshots folder also syncs its parent folder."""
        synced: list[tuple[int, int]] = []
        real_fsync = os.fsync

        def spy_fsync(fd: int) -> None:
            st_ = os.fstat(fd)
            synced.append((st_.st_dev, st_.st_ino))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", spy_fsync)
        store = SnapshotStore(tmp_path / "snapshots")
        store.write(make_snapshot(1))
        parent = os.stat(tmp_path)
        assert (parent.st_dev, parent.st_ino) in synced

    def test_failure_mid_write_cleans_up(
        self, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If fsync fails, the temp file is removed and the old snapshot still reads."""
        store.write(make_snapshot(1))

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError, match="Input/output"):
            store.write(make_snapshot(2))
        assert snapshot_names(store) == ["snapshot-1.msgpack"]
        assert store.latest() == (make_snapshot(1), [])

    def test_stray_temp_files(self, store: SnapshotStore) -> None:
        """Leftovers of a crash mid-write are ignored by readers and removed by the next write."""
        store.write(make_snapshot(1))
        stray = store.directory / ".snapshot-2-12345-deadbeef.tmp"
        stray.write_bytes(store.encode(make_snapshot(2))[:50])
        assert [info.tick for info in store.scan()] == [1]
        assert store.latest() == (make_snapshot(1), [])
        store.write(make_snapshot(3))
        assert not stray.exists()
        assert snapshot_names(store) == ["snapshot-1.msgpack", "snapshot-3.msgpack"]


def write_two_generations(store: SnapshotStore) -> tuple[Path, bytes]:
    """Write ticks 1 and 2; return the newest file and its good bytes."""
    store.write(make_snapshot(1))
    path = store.write(make_snapshot(2))
    return path, path.read_bytes()


class TestCorruption:
    def test_truncated_at_every_cut(self, store: SnapshotStore) -> None:
        """Any prefix of a snapshot is reported as truncated; latest() falls back a generation."""
        path, good = write_two_generations(store)
        for cut in range(len(good)):
            path.write_bytes(good[:cut])
            with pytest.raises(SnapshotError, match="truncated") as info:
                store.read(path)
            assert info.value.path == path
            snap, errors = store.latest()
            assert snap == make_snapshot(1)
            assert [e.path for e in errors] == [path]

    def test_flipped_body_byte(self, store: SnapshotStore) -> None:
        """A damaged byte in the body is caught by the checksum."""
        path, good = write_two_generations(store)
        damaged = bytearray(good)
        damaged[good.index(b"b\xc3\xb8")] ^= 0x01  # inside the body blob
        path.write_bytes(bytes(damaged))
        with pytest.raises(SnapshotError, match="bad checksum"):
            store.read(path)
        assert store.latest()[0] == make_snapshot(1)

    def test_flipped_header_byte(self, store: SnapshotStore) -> None:
        """The checksum covers the header too, not just the body."""
        path, good = write_two_generations(store)
        damaged = bytearray(good)
        damaged[good.index(b"periodic")] ^= 0x20
        path.write_bytes(bytes(damaged))
        with pytest.raises(SnapshotError, match="bad checksum"):
            store.read(path)

    def test_every_flipped_byte(self, store: SnapshotStore) -> None:
        """Whatever byte is damaged, read() raises SnapshotError and latest() falls back."""
        path, good = write_two_generations(store)
        for index in range(len(good)):
            damaged = bytearray(good)
            damaged[index] ^= 0x41
            path.write_bytes(bytes(damaged))
            with pytest.raises(SnapshotError):
                store.read(path)
            assert store.latest()[0] == make_snapshot(1)

    def test_wrong_format_version(self, store: SnapshotStore) -> None:
        """A file from another format version is refused, naming the version."""
        path = store.directory / "snapshot-7.msgpack"
        store.directory.mkdir(parents=True)
        path.write_bytes(build_file(GOOD_HEADER, fmt=2))
        with pytest.raises(SnapshotError, match="wrong format version 2"):
            store.read(path)

    def test_not_msgpack(self, store: SnapshotStore) -> None:
        """A text file, an invalid msgpack byte and trailing garbage are all refused."""
        store.directory.mkdir(parents=True)
        path = store.directory / "snapshot-7.msgpack"
        cases = {
            b"hello, this is not a snapshot\n": "top level is int",
            b"\xc1": "not msgpack",
            build_file(GOOD_HEADER) + b"\x00": "unexpected bytes",
            msgpack.packb([1, 2, 3]): "top level is an array",
            msgpack.packb({"tick": 7}): "missing field 'format'",
        }
        for data, message in cases.items():
            path.write_bytes(data)
            with pytest.raises(SnapshotError, match=message):
                store.read(path)

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            ({**GOOD_HEADER, "tick": "7"}, "'tick' is str, expected int"),
            ({**GOOD_HEADER, "tick": True}, "'tick' is bool, expected int"),
            ({**GOOD_HEADER, "tick": 7.0}, "'tick' is float, expected int"),
            ({**GOOD_HEADER, "tick": -7}, "'tick' is negative"),
            ({**GOOD_HEADER, "phase": 3}, "'phase' is int, expected str"),
            ({**GOOD_HEADER, "reason": None}, "'reason' is nil, expected str"),
            ({**GOOD_HEADER, "reason": b"bytes"}, "'reason' is bytes, expected str"),
            ({**GOOD_HEADER, "time": "now"}, "'time' is str, expected float"),
            ({**GOOD_HEADER, "time": 1}, "'time' is int, expected float"),
            ({**GOOD_HEADER, "time": float("inf")}, "'time' is not finite"),
            ({**GOOD_HEADER, "time": [1.0]}, "'time' is an array, expected float"),
            ({k: v for k, v in GOOD_HEADER.items() if k != "phase"}, "missing field 'phase'"),
            ({**GOOD_HEADER, "extra": 1}, "unexpected field 'extra'"),
            ([7, "running"], "header is an array, expected a map"),
            ("header", "header is str, expected a map"),
        ],
    )
    def test_garbage_header(self, store: SnapshotStore, header: Any, message: str) -> None:
        """Every header field is type-checked, even when the checksum matches."""
        store.directory.mkdir(parents=True)
        path = store.directory / "snapshot-7.msgpack"
        path.write_bytes(build_file(header))
        with pytest.raises(SnapshotError, match=message):
            store.read(path)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"body": {"systems": [], "meta": {}}}, "'systems' is an array, expected a map"),
            ({"body": {"systems": {1: {}}, "meta": {}}}, "'systems' has key 1"),
            ({"body": {"systems": {}, "meta": None}}, "'meta' is nil, expected a map"),
            ({"body": {"systems": {}}}, "body is missing field 'meta'"),
            ({"body": [1]}, "body is an array"),
            ({"raw_body": b"\xc1"}, "body is not valid msgpack"),
            ({"raw_header": b"\x81\xa1a"}, "header is not valid msgpack"),
        ],
    )
    def test_garbage_body(self, store: SnapshotStore, kwargs: dict[str, Any], message: str) -> None:
        """The body and the raw blobs are validated after the checksum."""
        store.directory.mkdir(parents=True)
        path = store.directory / "snapshot-7.msgpack"
        path.write_bytes(build_file(GOOD_HEADER, **kwargs))
        with pytest.raises(SnapshotError, match=message):
            store.read(path)

    @pytest.mark.parametrize(
        ("container", "message"),
        [
            ({"format": "1"}, "'format' is str, expected int"),
            ({"format": 1, "header": "x", "body": b"", "sha256": b"0" * 32}, "'header' is str"),
            ({"format": 1, "header": b"", "body": b"", "sha256": b"0" * 3}, "'sha256' is 3 bytes"),
            ({"format": 1, "header": b"", "body": b""}, "missing field 'sha256'"),
        ],
    )
    def test_garbage_container(
        self, store: SnapshotStore, container: dict[str, Any], message: str
    ) -> None:
        """The outer map's fields are checked before anything inside them is trusted."""
        store.directory.mkdir(parents=True)
        path = store.directory / "snapshot-7.msgpack"
        path.write_bytes(msgpack.packb(container))
        with pytest.raises(SnapshotError, match=message):
            store.read(path)

    def test_too_large_file(self, tmp_path: Path) -> None:
        """A file over max_bytes is refused without being decoded."""
        store = SnapshotStore(tmp_path, max_bytes=64)
        path = tmp_path / "snapshot-1.msgpack"
        path.write_bytes(b"\x00" * 65)
        with pytest.raises(SnapshotError, match="too large"):
            store.read(path)

    def test_unreadable_path(self, store: SnapshotStore) -> None:
        """A missing file or a folder in its place is a SnapshotError too."""
        with pytest.raises(SnapshotError, match="cannot read"):
            store.read(store.directory / "snapshot-1.msgpack")
        store.write(make_snapshot(4))
        (store.directory / "snapshot-5.msgpack").mkdir()
        snap, errors = store.latest()
        assert snap == make_snapshot(4)
        assert "cannot read" in str(errors[0])

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
    def test_fifo_does_not_hang(self, store: SnapshotStore) -> None:
        """A FIFO under a snapshot's name is reported instead of blocking the reader."""
        store.write(make_snapshot(1))
        os.mkfifo(store.directory / "snapshot-2.msgpack")
        snap, errors = store.latest()
        assert snap == make_snapshot(1)
        assert "not a regular file" in str(errors[0])

    def test_message_is_one_line_naming_the_file(self, tmp_path: Path) -> None:
        """Errors are one line starting with the file path, even for odd file names."""
        store = SnapshotStore(tmp_path)
        path = tmp_path / "odd\nname.msgpack"
        path.write_bytes(b"\xa3a\nb")
        with pytest.raises(SnapshotError) as info:
            store.read(path)
        assert "\n" not in str(info.value)
        assert str(info.value).startswith(str(tmp_path))
        assert info.value.path == path

    def test_error_pickles(self, tmp_path: Path) -> None:
        """SnapshotError keeps its path and problem through pickling."""
        err = SnapshotError(tmp_path / "snapshot-1.msgpack", "bad checksum")
        copy = pickle.loads(pickle.dumps(err))
        assert (copy.path, copy.problem, str(copy)) == (err.path, err.problem, str(err))
        assert isinstance(copy, ValueError)

    def test_all_corrupt(self, store: SnapshotStore) -> None:
        """With every generation corrupt, latest() returns None and one error per file."""
        for tick in (1, 2):
            store.write(make_snapshot(tick)).write_bytes(b"")
        snap, errors = store.latest()
        assert snap is None
        assert [e.path.name for e in errors] == ["snapshot-2.msgpack", "snapshot-1.msgpack"]

    def test_scan_reports_each_file(self, store: SnapshotStore) -> None:
        """scan() lists every snapshot newest first with its validity and problem."""
        for tick in (1, 2, 3):
            store.write(make_snapshot(tick))
        middle = store.directory / "snapshot-2.msgpack"
        middle.write_bytes(middle.read_bytes()[:-1])
        assert store.scan() == [
            SnapshotInfo(store.directory / "snapshot-3.msgpack", 3, ok=True, problem=None),
            SnapshotInfo(middle, 2, ok=False, problem=store.scan()[1].problem),
            SnapshotInfo(store.directory / "snapshot-1.msgpack", 1, ok=True, problem=None),
        ]
        assert "truncated" in (store.scan()[1].problem or "")


KEY = b"k" * 32


def forge(header: Any, *, key: bytes | None = None, body: Any = None) -> bytes:
    """A file an attacker could write: any header, with a valid plain or keyed checksum."""
    header_bytes = msgpack.packb(header)
    body_bytes = msgpack.packb(body if body is not None else {"systems": {}, "meta": {}})
    field = "sha256" if key is None else "hmac_sha256"
    data: bytes = msgpack.packb(
        {
            "format": FORMAT_VERSION,
            "header": header_bytes,
            "body": body_bytes,
            field: _snapshot_format._digest(header_bytes, body_bytes, key),
        }
    )
    return data


class TestAuthentication:
    def test_keyed_round_trip(self, tmp_path: Path) -> None:
        """With a key, files carry an HMAC and read back through a store with the same key."""
        store = SnapshotStore(tmp_path, 3, KEY)
        path = store.write(make_snapshot(5))
        container = msgpack.unpackb(path.read_bytes())
        assert set(container) == {"format", "header", "body", "hmac_sha256"}
        assert container["hmac_sha256"] != _snapshot_format._digest(
            container["header"], container["body"]
        )
        assert SnapshotStore(tmp_path, 3, KEY).latest() == (make_snapshot(5), [])

    def test_wrong_key(self, tmp_path: Path) -> None:
        """A file keyed with another key is refused like a corrupt one; the older one is used."""
        store = SnapshotStore(tmp_path, 3, KEY)
        store.write(make_snapshot(1))
        (tmp_path / "snapshot-2.msgpack").write_bytes(forge({**GOOD_HEADER, "tick": 2}, key=b"x"))
        snap, errors = store.latest()
        assert snap == make_snapshot(1)
        assert len(errors) == 1
        assert "not authenticated with the configured snapshot_key: wrong key" in str(errors[0])

    def test_forged_plain_file_refused_with_a_key(self, tmp_path: Path) -> None:
        """An unkeyed file with a correct sha256 (anyone can compute one) is refused when keyed."""
        store = SnapshotStore(tmp_path, 3, KEY)
        store.write(make_snapshot(1))
        (tmp_path / "snapshot-9.msgpack").write_bytes(forge({**GOOD_HEADER, "tick": 9}))
        snap, errors = store.latest()
        assert snap == make_snapshot(1)
        assert "not authenticated with the configured snapshot_key: the file has no HMAC" in str(
            errors[0]
        )

    def test_altered_keyed_file(self, tmp_path: Path) -> None:
        """Any flipped byte in a keyed file is refused with one line."""
        store = SnapshotStore(tmp_path, 3, KEY)
        path = store.write(make_snapshot(1))
        good = path.read_bytes()
        damaged = bytearray(good)
        damaged[good.index(b"periodic")] ^= 0x20
        path.write_bytes(bytes(damaged))
        with pytest.raises(SnapshotError, match="not authenticated") as info:
            store.read(path)
        assert "\n" not in str(info.value)

    def test_hmac_field_wrong_size(self, tmp_path: Path) -> None:
        """A truncated MAC is named as such, not compared."""
        store = SnapshotStore(tmp_path, 3, KEY)
        data = msgpack.packb({"format": 1, "header": b"", "body": b"", "hmac_sha256": b"0" * 5})
        with pytest.raises(SnapshotError, match="'hmac_sha256' is 5 bytes"):
            store.decode(data, tmp_path / "snapshot-1.msgpack")

    def test_unkeyed_store_reads_old_files_and_refuses_keyed_ones(self, tmp_path: Path) -> None:
        """Without a key, plain files stay readable; keyed ones cannot be verified: refused."""
        SnapshotStore(tmp_path).write(make_snapshot(1))
        SnapshotStore(tmp_path, 3, KEY).write(make_snapshot(2))
        snap, errors = SnapshotStore(tmp_path).latest()
        assert snap == make_snapshot(1)
        assert "authenticated with a snapshot_key, but none is configured" in str(errors[0])

    def test_key_not_in_repr(self, tmp_path: Path) -> None:
        """The key never shows in a repr (logs, tracebacks)."""
        assert "kkkk" not in repr(SnapshotStore(tmp_path, 3, KEY))

    def test_bad_keys(self, tmp_path: Path) -> None:
        """An empty key or a str key is refused at construction."""
        with pytest.raises(ValueError, match="empty"):
            SnapshotStore(tmp_path, 3, b"")
        with pytest.raises(TypeError, match="bytes"):
            SnapshotStore(tmp_path, 3, "text")  # type: ignore[arg-type]


class TestTickBounds:
    def test_forged_tick_near_2_64(self, store: SnapshotStore) -> None:
        """A forged header tick near 2**64 is corrupt (old main: OverflowError downstream)."""
        store.write(make_snapshot(3))
        tick = 2**64 - 1
        (store.directory / f"snapshot-{tick}.msgpack").write_bytes(
            forge({**GOOD_HEADER, "tick": tick})
        )
        snap, errors = store.latest()
        assert snap == make_snapshot(3)
        assert f"header field 'tick' is {tick}, over the limit 2**53" in str(errors[0])

    def test_limit_is_inclusive(self, store: SnapshotStore) -> None:
        """2**53 itself is written and read; 2**53 + 1 is refused on write."""
        assert store.read(store.write(make_snapshot(2**53))).tick == 2**53
        with pytest.raises(ValueError, match="2\\*\\*53"):
            store.encode(make_snapshot(2**53 + 1))
        with pytest.raises(ValueError, match="2\\*\\*53"):
            store.write_bytes(2**53 + 1, b"")


class TestPreservedState:
    def test_fresh_timeline_keeps_the_emergency_snapshot(self, tmp_path: Path) -> None:
        """A new run ticking from 0 moves an emergency's snapshot aside instead of deleting it.

        Old main: a plain ``run`` after an emergency deleted the preserved snapshot.
        """
        directory = tmp_path / "snapshots"
        SnapshotStore(directory).write(make_snapshot(500, reason="emergency"))
        fresh = SnapshotStore(directory, clock=lambda: 0.0)
        for tick in (0, 1, 2, 3):
            fresh.write(make_snapshot(tick))
        aside = directory / "aside-19700101T000000Z"
        assert fresh.read(aside / "snapshot-500.msgpack") == make_snapshot(500, reason="emergency")
        assert sorted(os.listdir(directory)) == [
            "aside-19700101T000000Z",
            *(f"snapshot-{t}.msgpack" for t in (1, 2, 3)),
        ]

    def test_only_lower_ticks_are_deleted(self, store: SnapshotStore) -> None:
        """Pruning deletes lower ticks beyond the generations, nothing else; aside/ is untouched."""
        store.clock = lambda: 0.0
        for tick in (10, 20, 30, 40):
            store.write(make_snapshot(tick))
        store.write(make_snapshot(25))  # 30, 40 moved aside
        for tick in (26, 27, 28):
            store.write(make_snapshot(tick))
        aside = store.directory / "aside-19700101T000000Z"
        assert sorted(os.listdir(aside)) == ["snapshot-30.msgpack", "snapshot-40.msgpack"]
        assert [i.tick for i in store.scan()] == [28, 27, 26]

    def test_same_tick_of_another_timeline_is_moved_aside(self, tmp_path: Path) -> None:
        """A file under the name about to be written, from another store, is not replaced."""
        SnapshotStore(tmp_path).write(make_snapshot(7, reason="old timeline"))
        new = SnapshotStore(tmp_path, clock=lambda: 0.0)
        new.write(make_snapshot(7, reason="new timeline"))
        new.write(make_snapshot(7, reason="again"))  # its own file: replaced, as before
        assert new.read(tmp_path / "snapshot-7.msgpack").reason == "again"
        assert new.read(tmp_path / "aside-19700101T000000Z" / "snapshot-7.msgpack").reason == (
            "old timeline"
        )
        assert sorted(os.listdir(tmp_path)) == ["aside-19700101T000000Z", "snapshot-7.msgpack"]

    def test_restored_tick_is_replaced_not_moved(self, tmp_path: Path) -> None:
        """The snapshot a store restored from is its own timeline: rewriting its tick replaces."""
        SnapshotStore(tmp_path).write(make_snapshot(7))
        resumed = SnapshotStore(tmp_path)
        assert resumed.latest()[0] == make_snapshot(7)
        resumed.write(make_snapshot(7, reason="shutdown"))
        assert os.listdir(tmp_path) == ["snapshot-7.msgpack"]

    def test_folder_under_the_name_is_moved_aside(self, tmp_path: Path) -> None:
        """A directory under the target name is moved aside; the write then succeeds."""
        (tmp_path / "snapshot-4.msgpack").mkdir()
        store = SnapshotStore(tmp_path, clock=lambda: 0.0)
        store.write(make_snapshot(4))
        assert store.latest() == (make_snapshot(4), [])
        assert (tmp_path / "aside-19700101T000000Z" / "snapshot-4.msgpack").is_dir()

    def test_unsafe_target_is_an_os_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the target is not a regular file even after the move, write() fails as OSError."""
        store = SnapshotStore(tmp_path)
        store.write(make_snapshot(4))
        (tmp_path / "snapshot-4.msgpack").unlink()
        (tmp_path / "snapshot-4.msgpack").mkdir()  # replaces a name this store owns
        with pytest.raises(OSError, match="is a directory, not a regular file"):
            store.write(make_snapshot(4))

    def test_aside_folders_do_not_collide(self, tmp_path: Path) -> None:
        """Two moves in the same second get two folders."""
        store = SnapshotStore(tmp_path, clock=lambda: 0.0)
        store.write(make_snapshot(1))
        first = store.move_aside()
        store.write(make_snapshot(1))
        second = store.move_aside()
        assert first is not None
        assert second is not None
        assert (first.name, second.name) == ("aside-19700101T000000Z", "aside-19700101T000000Z-2")

    def test_has_snapshots_and_move_aside(self, tmp_path: Path) -> None:
        """has_snapshots() counts corrupt files too; move_aside() moves every one and says where."""
        store = SnapshotStore(tmp_path / "snapshots", clock=lambda: 0.0)
        assert store.has_snapshots() is False
        assert store.move_aside() is None
        store.write(make_snapshot(1))
        store.write(make_snapshot(2)).write_bytes(b"corrupt")
        (store.directory / "notes.txt").write_text("not a snapshot")
        assert store.has_snapshots() is True
        aside = store.move_aside()
        assert aside == store.directory / "aside-19700101T000000Z"
        assert sorted(os.listdir(aside)) == ["snapshot-1.msgpack", "snapshot-2.msgpack"]
        assert store.has_snapshots() is False
        assert sorted(os.listdir(store.directory)) == ["aside-19700101T000000Z", "notes.txt"]
        assert store.latest() == (None, [])
        # The moved files are intact: the good one still reads back.
        assert store.read(aside / "snapshot-1.msgpack") == make_snapshot(1)


class TestUnlistableFolder:
    def test_folder_is_a_file(self, tmp_path: Path) -> None:
        """A file where the snapshot folder should be: latest() and write() report it, no crash."""
        (tmp_path / "snapshots").write_text("not a folder")
        store = SnapshotStore(tmp_path / "snapshots")
        snap, errors = store.latest()
        assert snap is None
        assert [e.problem for e in errors] == ["cannot list the snapshot folder: Not a directory"]
        assert store.has_snapshots() is False
        assert store.move_aside() is None
        with pytest.raises(OSError, match="File exists"):
            store.write(make_snapshot(1))
        assert (tmp_path / "snapshots").read_text() == "not a folder"


class TestPruneModel:
    """Random write sequences against a model of the rule: only lower ticks are ever deleted."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        generations=st.integers(1, 4),
        steps=st.lists(st.tuples(st.booleans(), st.integers(0, 12)), min_size=1, max_size=25),
    )
    def test_matches_the_model(
        self, tmp_path_factory: pytest.TempPathFactory, generations: int, steps: list[Any]
    ) -> None:
        """Each step writes a tick, sometimes from a new store (a new process).

        The model: the written tick stays; higher ticks and a same-tick file
        the store does not own move aside; lower ticks beyond the generations
        are deleted. Every snapshot ever written is in the folder, aside, or
        was deleted by that last rule, and nothing else.
        """
        directory = tmp_path_factory.mktemp("prune")
        store = SnapshotStore(directory, generations)
        main: dict[int, str] = {}  # tick -> reason of the file in the folder
        aside: list[tuple[int, str]] = []
        own: set[int] = set()
        for index, (new_process, tick) in enumerate(steps):
            if new_process:
                store = SnapshotStore(directory, generations)
                own = set()
            reason = f"write {index}"
            if tick in main and tick not in own:
                aside.append((tick, main.pop(tick)))
            store.write(make_snapshot(tick, reason=reason))
            main[tick] = reason
            own.add(tick)
            for other in [t for t in main if t > tick]:
                aside.append((other, main.pop(other)))
                own.discard(other)
            for other in sorted((t for t in main if t < tick), reverse=True)[generations - 1 :]:
                del main[other]
            got_main = {info.tick: store.read(info.path).reason for info in store.scan()}
            got_aside = sorted(
                (snap.tick, snap.reason)
                for folder in directory.glob("aside-*")
                for snap in (store.read(path) for path in folder.iterdir())
            )
            assert got_main == main
            assert got_aside == sorted(aside)


class TestHostileFiles:
    """Each hostile file is one line, and latest() falls back to the previous good snapshot."""

    def check(
        self, store: SnapshotStore, plant: bytes | Callable[[Path], object], message: str
    ) -> None:
        """Write a good snapshot 1, plant the hostile snapshot 2, and check what latest() says."""
        store.write(make_snapshot(1))
        path = store.directory / "snapshot-2.msgpack"
        if isinstance(plant, bytes):
            path.write_bytes(plant)
        else:
            plant(path)
        snap, errors = store.latest()
        assert snap == make_snapshot(1)
        assert len(errors) == 1
        assert message in str(errors[0])
        assert "\n" not in str(errors[0])

    def test_truncated(self, store: SnapshotStore) -> None:
        """A file cut short says truncated."""
        data = store.encode(make_snapshot(2))
        self.check(store, data[: len(data) // 2], "truncated")

    def test_huge_header(self, store: SnapshotStore) -> None:
        """A header over the cap is refused before it is decoded."""
        header = {**GOOD_HEADER, "tick": 2, "reason": "x" * (2 * 1024 * 1024)}
        self.check(store, forge(header), "header too large")

    def test_deeply_nested_body(self, store: SnapshotStore) -> None:
        """100,000 nested arrays in a checksummed body are one line, not a crash."""
        header = msgpack.packb({**GOOD_HEADER, "tick": 2})
        body = b"\x82\xa7systems\x80\xa4meta\x81\xa1x" + b"\x91" * 100_000 + b"\xc0"
        data = msgpack.packb(
            {
                "format": 1,
                "header": header,
                "body": body,
                "sha256": _snapshot_format._digest(header, body),
            }
        )
        self.check(store, data, "body is not valid msgpack: nested too deeply")

    def test_non_utf8_string(self, store: SnapshotStore) -> None:
        """A string that is not UTF-8 in a checksummed header is one line."""
        header = msgpack.packb({**GOOD_HEADER, "tick": 2})
        header = header.replace(b"\xa8periodic", b"\xa8\xff\xfeeriod\xc3(")
        body = msgpack.packb({"systems": {}, "meta": {}})
        data = msgpack.packb(
            {
                "format": 1,
                "header": header,
                "body": body,
                "sha256": _snapshot_format._digest(header, body),
            }
        )
        self.check(store, data, "header is not valid msgpack: a string is not UTF-8")

    def test_directory(self, store: SnapshotStore) -> None:
        """A directory named like a snapshot is reported."""
        self.check(store, Path.mkdir, "cannot read")

    def test_symlink_to_a_valid_snapshot(self, store: SnapshotStore, tmp_path: Path) -> None:
        """A symlink is not followed, even to a valid snapshot (another server's, say)."""
        other = SnapshotStore(tmp_path / "other")
        target = other.write(make_snapshot(2))
        self.check(store, lambda path: path.symlink_to(target), "a symlink, not a snapshot file")

    @pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
    def test_symlink_to_dev_zero(self, store: SnapshotStore) -> None:
        """A symlink to a device is refused without reading it."""
        self.check(store, lambda path: path.symlink_to("/dev/zero"), "a symlink, not a snapshot")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by hypothesis examples (function-scoped tmp_path is not allowed there)."""
    return tmp_path_factory.mktemp("fuzz")


def _mutations(key: bytes | None = None) -> st.SearchStrategy[bytes]:
    """A valid snapshot, damaged in a few random places: reaches deeper than random bytes."""
    good = SnapshotStore(Path("unused"), 3, key).encode(make_snapshot(7))

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
            if action == "flip":
                data[index] = draw(st.integers(0, 255))
            elif action == "cut":
                del data[index:]
            elif action == "insert":
                data[index:index] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[index : index + draw(st.integers(1, 8))]
            if not data:
                break
        return bytes(data)

    return mutate()


MSGPACK_INTS = st.integers(-(2**63), 2**64 - 1)


def outcome(call: Callable[[], Snapshot]) -> Snapshot | SnapshotError:
    """The snapshot, or the SnapshotError raised; any other exception propagates."""
    try:
        return call()
    except SnapshotError as exc:
        return exc


class TestReadNeverCrashes:
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.binary(max_size=512) | _mutations())
    def test_arbitrary_bytes(self, scratch: Path, data: bytes) -> None:
        """Whatever bytes a file holds, read() returns a Snapshot or raises SnapshotError."""
        store = SnapshotStore(scratch)
        path = scratch / "snapshot-7.msgpack"
        path.write_bytes(data)
        result = outcome(lambda: store.read(path))
        if isinstance(result, SnapshotError):
            assert result.path == path
            assert "\n" not in str(result)
        else:
            assert result.tick == 7

    @settings(max_examples=200, deadline=None)
    @given(data=_mutations(KEY))
    def test_keyed_mutations(self, data: bytes) -> None:
        """A damaged keyed snapshot is only ever a one-line SnapshotError, or (undamaged) itself."""
        store = SnapshotStore(Path("unused"), 3, KEY)
        path = Path("snapshot-7.msgpack")
        result = outcome(lambda: store.decode(data, path))
        if isinstance(result, SnapshotError):
            assert "\n" not in str(result)
        else:
            assert result == make_snapshot(7)

    @settings(max_examples=150, deadline=None)
    @given(
        header=st.dictionaries(
            st.sampled_from(["tick", "phase", "reason", "time", "x"]),
            st.none() | st.booleans() | MSGPACK_INTS | st.floats() | st.text() | st.binary(),
        )
        | MSGPACK_INTS,
        body=st.recursive(
            st.none() | MSGPACK_INTS | st.text(max_size=4) | st.binary(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3) | st.integers(0, 9), inner, max_size=3)
            ),
            max_leaves=10,
        ),
    )
    def test_checksummed_garbage(self, header: Any, body: Any) -> None:
        """Garbage that passes the checksum is still only ever a SnapshotError."""
        store = SnapshotStore(Path("unused"))
        path = Path("snapshot-7.msgpack")
        data = build_file(header, {"systems": body, "meta": body})
        result = outcome(lambda: store.decode(data, path))
        if isinstance(result, SnapshotError):
            assert result.path == path


CHILD = textwrap.dedent(
    """
    import importlib.util, sys, time
    from pathlib import Path

    # Load the module by file under an empty stand-in package, not through
    # supervisor/__init__.py, so the child starts fast and imports only what
    # the store itself needs (_snapshot_format, _files, _errors).
    import types
    package = types.ModuleType("supervisor")
    package.__path__ = [str(Path(sys.argv[1]).parent.parent)]
    sys.modules["supervisor"] = package
    spec = importlib.util.spec_from_file_location("supervisor._core._snapshot", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)

    store = mod.SnapshotStore(Path(sys.argv[2]), generations=2)
    tick = int(sys.argv[3])
    payload = bytes(range(256)) * 512  # 128 KiB: writes take long enough to be hit
    while True:
        tick += 1
        store.write(mod.Snapshot(
            tick=tick, phase="running", reason="periodic", time=time.time(),
            systems={"blob": {"tick": tick, "data": payload}},
        ))
        print(tick, flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")
class TestCrashSafety:
    RUNS = 24

    def test_sigkill_at_random_moments(self, tmp_path: Path) -> None:
        """Killing a writer at any moment never loses the last completed snapshot.

        A child process writes snapshots in a loop and prints each tick once
        write() has returned; it is SIGKILLed at a random moment after the
        first one. latest() must then find a valid snapshot at least as new
        as the last printed tick, with no corrupt file, across many runs that
        share one folder (so leftovers of one kill meet the next writer).
        """
        directory = tmp_path / "snapshots"
        store = SnapshotStore(directory, generations=2)
        rng = random.Random(1234)
        tick = 0
        for run in range(self.RUNS):
            delay = rng.uniform(0.0, 0.04)
            with subprocess.Popen(
                [sys.executable, "-c", CHILD, str(SNAPSHOT_MODULE), str(directory), str(tick)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ) as proc:
                assert proc.stdout is not None
                assert proc.stderr is not None
                ready, _, _ = select.select([proc.stdout], [], [], 10.0)
                first = proc.stdout.readline() if ready else b""
                if not first:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"child wrote no snapshot: {proc.stderr.read().decode()}")
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                out = first + proc.stdout.read()
            completed = [int(line) for line in out.split(b"\n")[:-1]]
            snap, errors = store.latest()
            context = f"run {run}, killed {delay:.3f}s after tick {completed[0]}"
            assert errors == [], context
            assert snap is not None, context
            # Written before the print: at least the last printed tick, and at
            # most one more (killed between write() returning and the print).
            assert completed[-1] <= snap.tick <= completed[-1] + 1, context
            assert all(info.ok for info in store.scan()), context
            tick = snap.tick
        # The next write sweeps away any temp file a kill left behind.
        store.write(make_snapshot(tick + 1))
        assert all(not name.endswith(".tmp") for name in os.listdir(directory))
