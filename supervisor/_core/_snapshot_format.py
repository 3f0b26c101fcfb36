"""The snapshot file format: what one file holds, how it is encoded and checked.

The folder the files live in, and how they are written, kept and moved
aside, is the store's business (``_snapshot.py``). This module is pure: no
I/O, so it is tested byte by byte and the encoding runs on the loop thread
while the write goes to a worker thread.

* A file is named ``snapshot-<tick>.msgpack`` (:data:`SNAPSHOT_NAME`), the
  tick written as a plain decimal integer (``snapshot-0.msgpack``,
  ``snapshot-1200.msgpack``; no sign, no leading zeros). Ticks are bounded
  by :data:`MAX_TICK` (2**53): a header outside ``0..MAX_TICK`` is corrupt.
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
* Decoding never trusts the bytes: every msgpack error is turned into a
  :class:`SnapshotError` with a one-line message naming the file and what is
  wrong with it (truncated, bad checksum, wrong format version, not msgpack,
  missing field, wrong type), lengths declared inside the file are capped,
  and every header and body field is type-checked.

Round-trip notes: msgpack has no tuples, so tuples in a system's state come
back as lists; ``bytes`` and ``str`` stay distinct. :func:`encode` refuses
(rather than writes) a snapshot it could not read back, e.g. a state whose
map keys are tuples.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack  # type: ignore[import-untyped,unused-ignore]

from .._errors import one_line

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "MAX_TICK",
    "SNAPSHOT_NAME",
    "Snapshot",
    "SnapshotError",
    "check_tick",
    "decode",
    "encode",
    "snapshot_name",
]

FORMAT_VERSION: Final = 1
"""Version of the on-disk layout described in the module docstring."""

MAX_SNAPSHOT_BYTES: Final = 256 * 1024 * 1024
"""Default cap on a snapshot file's size, for reading and for writing."""

MAX_HEADER_BYTES: Final = 1024 * 1024
"""Cap on the encoded header (tick, phase, reason, time)."""

MAX_TICK: Final = 2**53
"""Highest tick a snapshot may carry: exact as a float, far beyond any real run."""

SNAPSHOT_NAME: Final = re.compile(r"snapshot-(0|[1-9][0-9]*)\.msgpack")
"""A snapshot file's name; group 1 is its tick."""

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


def encode(snap: Snapshot, *, key: bytes | None, max_bytes: int) -> bytes:
    """Encode a snapshot into the bytes of a snapshot file.

    Pure (no I/O, no shared state), so the caller can encode on one thread
    and hand the bytes to ``SnapshotStore.write_bytes`` on another.

    Args:
        snap: The snapshot to encode.
        key: HMAC-SHA256 key (``hmac_sha256`` field), or ``None`` (plain ``sha256``).
        max_bytes: Largest file allowed.

    Returns:
        The file contents.

    Raises:
        TypeError: If a field has the wrong type, a system or meta key is
            not a ``str``, or a state is not msgpack-serialisable.
        ValueError: If the tick is negative, the time is not finite, a
            state would not read back (e.g. tuple map keys), or the result
            is larger than ``max_bytes``.
    """
    check_tick(snap.tick)
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
            (_KEYED if key is not None else _PLAIN): _digest(header, body, key),
        }
    )
    if len(data) > max_bytes:
        raise ValueError(f"snapshot is {len(data)} bytes, over the store's max_bytes={max_bytes}")
    return data


def decode(data: bytes, path: Path, *, key: bytes | None, max_bytes: int) -> Snapshot:
    """Validate and decode the contents of a snapshot file.

    Args:
        data: The file contents.
        path: The file they came from, for error messages and to check
            the tick in the file name (when it is a snapshot name).
        key: The key the file must be authenticated with, or ``None`` (plain sha256).
        max_bytes: Largest declared length accepted inside the file.

    Returns:
        The snapshot.

    Raises:
        SnapshotError: If the data is not a valid snapshot.
    """
    try:
        return _decode(data, path, key, max_bytes)
    except _BadSnapshot as exc:
        raise SnapshotError(path, str(exc)) from None


def _decode(data: bytes, path: Path, key: bytes | None, max_bytes: int) -> Snapshot:
    header, body = _open_envelope(data, key, max_bytes)
    fields = _unpack_header(header)
    tick = fields["tick"]
    named = SNAPSHOT_NAME.fullmatch(path.name)
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


def _open_envelope(data: bytes, key: bytes | None, max_bytes: int) -> tuple[bytes, bytes]:
    """Check the outer map (format, fields, checksum or HMAC); return the header and body bytes.

    Nothing inside header or body is decoded before their digest matches.
    """
    if not data:
        raise _BadSnapshot("truncated: the file is empty")
    container = _check_format(*_unpack_container(data, max_bytes))
    keyed = _KEYED in container
    if key is not None and not keyed:
        raise _BadSnapshot(f"{_NOT_AUTHENTICATED}: the file has no HMAC (written without a key?)")
    if key is None and keyed:
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
        raise _BadSnapshot(f"field {mac_field!r} is {len(digest)} bytes, expected {_DIGEST_SIZE}")
    if len(header) > MAX_HEADER_BYTES:
        raise _BadSnapshot(f"header too large: {len(header)} bytes")
    if not hmac.compare_digest(_digest(header, body, key), digest):
        if keyed:
            raise _BadSnapshot(
                f"{_NOT_AUTHENTICATED}: wrong key, or the header or body was altered"
            )
        raise _BadSnapshot("bad checksum: the header or body was altered or damaged")
    return header, body


def _check_format(container: Any, extra: int) -> dict[Any, Any]:
    """The outer map, once it is one map alone, of this format version."""
    # Type first, trailing bytes second: a text file decodes as one small
    # int followed by "garbage", and "top level is int" says it better.
    if not isinstance(container, dict):
        raise _BadSnapshot(f"not a snapshot file: top level is {_kind(container)}, expected a map")
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
    return container


class _BadSnapshot(Exception):
    """Internal: what is wrong with a snapshot, before the path is attached."""


def snapshot_name(tick: int) -> str:
    """The file name of the snapshot of ``tick``."""
    return f"snapshot-{tick}.msgpack"


def check_tick(tick: object) -> None:
    """Refuse a tick a snapshot may not carry.

    Raises:
        TypeError: The tick is not an ``int``.
        ValueError: It is negative or over :data:`MAX_TICK`.
    """
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
