"""A world's shared snapshots in Redis: ``[snapshots] store = "redis://HOST:PORT/DB"`` (issue 15).

The same bytes, the same guarantees as the local store
------------------------------------------------------
The bytes stored are exactly the local snapshot file's bytes (its sha256 or
HMAC checksum inside), so a reader checks them with the local store's
``decode`` and a damaged newest snapshot falls back to the previous
generation exactly as on disk. A world's snapshots are one hash,
``supervisor:snapshots:{WORLD}``, one field per tick: the hash's fields *are*
the generation list, so a payload and its place in the list can never
disagree. One write is one Lua script (:data:`WRITE_SCRIPT`), atomic in
Redis: set the new tick's field, move newer ticks (another timeline) into
``supervisor:snapshots:{WORLD}:aside`` (never deleted, like the local
``aside-<stamp>/`` folders), delete the generations beyond
``snapshot_generations``. A reader sees the hash before or after a write,
never half of one. (The ``{WORLD}`` hash tag keeps both keys in one slot.)

Why redis-py and not coredis
----------------------------
The fleet talks to Redis with coredis from trio tasks (``_redis.py`` says
why). Snapshots are written on the snapshot writer's *thread*
(``trio.to_thread``), and read before the trio loop starts (``run
--resume-from`` checks the world first): a synchronous client is what both
places need. redis-py's sync client is maintained, thread-safe and needs no
event loop; with coredis each call from the thread would have to start one
(``anyio.run``) or hop back onto the tick's loop (``trio.from_thread``),
which is where the writes must not run. It is imported with this module, and
this module only when the store is a Redis URL (``supervisor run`` imports
it then to register its factory; nothing else imports it), so a run without
one never loads it.

Bounded
-------
Every call fails within :data:`TIMEOUT` seconds, with no retry inside the
client: a failed write is counted and shown (``snapshots_shared`` in
``status``), the local snapshot is written anyway, and the next snapshot
tries again. The snapshotter skips a periodic snapshot while a write is in
flight, so a frozen Redis delays at most one write and never queues them.
A value over ``[snapshots] max_mb`` is neither sent nor read.
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._core._config_snapshots import check_world
from .._core._snapshot_format import (
    Snapshot,
    SnapshotError,
    check_tick,
    decode,
    snapshot_name,
)
from .._core._snapshot_shared import register_shared_store

__all__ = [
    "MAX_FIELDS",
    "TIMEOUT",
    "WRITE_SCRIPT",
    "RedisSnapshotStore",
    "open_redis_store",
    "register_redis_store",
]

#: Seconds one Redis call may take (connect, or one reply).
TIMEOUT: Final = 2.0
#: A world's hash with more fields than this is not read (not ours, or hostile).
MAX_FIELDS: Final = 10_000
_TICK: Final = re.compile(rb"[0-9]{1,16}")

#: One atomic write. KEYS: the world's hash, its aside hash.
#: ARGV: tick, bytes, generations, "1" if this store wrote or restored that
#: tick (else a different value already there is moved aside), aside stamp
#: (``STAMP/TICK`` names a moved snapshot in the aside hash).
#: Returns the fields it removed from the world's hash.
WRITE_SCRIPT: Final = """
local tick = tonumber(ARGV[1])
if ARGV[4] ~= '1' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if cur and cur ~= ARGV[2] then redis.call('HSET', KEYS[2], ARGV[5] .. '/' .. ARGV[1], cur) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local older, gone = {}, {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.match(f, '^%d+$') then
    local t = tonumber(f)
    if t > tick then
      redis.call('HSET', KEYS[2], ARGV[5] .. '/' .. f, redis.call('HGET', KEYS[1], f))
      redis.call('HDEL', KEYS[1], f)
      table.insert(gone, f)
    elseif t < tick then
      table.insert(older, {t, f})
    end
  end
end
table.sort(older, function(a, b) return a[1] > b[1] end)
for i = tonumber(ARGV[3]), #older do
  redis.call('HDEL', KEYS[1], older[i][2])
  table.insert(gone, older[i][2])
end
return gone
"""


@attrs.define(eq=False)
class RedisSnapshotStore:
    """One world's snapshots in one Redis hash (see the module docstring).

    Attributes:
        client: A redis-py client (connects on first use).
        server: ``HOST:PORT/DB`` or the socket path, for labels (never a password).
        world: The world whose snapshots these are.
        generations: Snapshots kept (``[supervisor] snapshot_generations``).
        key: The HMAC key the bytes are checked with (``None``: plain sha256).
        max_bytes: Largest value written or read.
    """

    client: redis.Redis = attrs.field(repr=False)
    server: str
    world: str = attrs.field(converter=check_world)
    generations: int = 3
    key: bytes | None = attrs.field(default=None, repr=False)
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)
    # Ticks this store wrote or restored from: rewriting one is the same timeline.
    _own: set[int] = attrs.field(factory=set, init=False, repr=False)

    @property
    def hash_key(self) -> str:
        """The world's hash: field = tick, value = the snapshot's bytes."""
        return f"supervisor:snapshots:{{{self.world}}}"

    @property
    def label(self) -> Path:
        """``redis:SERVER/KEY``, for status and error lines."""
        return Path(f"redis:{self.server}") / self.hash_key

    def for_world(self, world: str) -> RedisSnapshotStore:
        """The same server, another world's hash."""
        return attrs.evolve(self, world=world)

    def write_bytes(self, tick: int, data: bytes) -> Path:
        """Store ``data`` as ``tick`` and prune, in one atomic script.

        Raises:
            ValueError: a bad tick, or ``data`` over ``max_bytes``.
            OSError: Redis unreachable, too slow, or refusing the write.
        """
        check_tick(tick)
        if len(data) > self.max_bytes:
            raise ValueError(f"{len(data)} bytes, over max_bytes={self.max_bytes}")
        # UTC time plus a random suffix: two moves in one second never share a field.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        stamp = f"{stamp}-{secrets.token_hex(4)}"
        gone = self._call(
            lambda: self.client.eval(
                WRITE_SCRIPT,
                2,
                self.hash_key,
                f"{self.hash_key}:aside",
                str(tick),
                data,
                str(self.generations),
                "1" if tick in self._own else "0",
                stamp,
            )
        )
        self._own.add(tick)
        for field in gone or ():
            self._own.discard(int(field))
        return self.label / snapshot_name(tick)

    def latest(self) -> tuple[Snapshot | None, list[SnapshotError]]:
        """The newest snapshot that reads back intact, and the newer ones' problems.

        Like :meth:`SnapshotStore.latest`: a damaged newest snapshot is
        reported and the previous generation used; Redis unreachable is one
        problem and no snapshot.
        """
        errors: list[SnapshotError] = []
        try:
            count = int(self._call(lambda: self.client.hlen(self.hash_key)))
            if count > MAX_FIELDS:
                return None, [SnapshotError(self.label, f"{count} fields: not a snapshot hash")]
            fields = self._call(lambda: self.client.hkeys(self.hash_key))
        except OSError as exc:
            return None, [SnapshotError(self.label, f"cannot read: {exc}")]
        ticks = sorted((int(f) for f in fields if _TICK.fullmatch(f)), reverse=True)
        for tick in ticks:
            where = self.label / snapshot_name(tick)
            try:
                data = self._read(tick, where)
            except SnapshotError as exc:
                errors.append(exc)
                continue
            except OSError as exc:
                errors.append(SnapshotError(where, f"cannot read: {exc}"))
                return None, errors
            if data is None:
                continue  # pruned by a write since the listing: gone, not damaged
            try:
                snap = decode(data, where, key=self.key, max_bytes=self.max_bytes)
            except SnapshotError as exc:
                errors.append(exc)
                continue
            self._own.add(tick)
            return snap, errors
        return None, errors

    def _read(self, tick: int, where: Path) -> bytes | None:
        """One tick's bytes, refused unread when over ``max_bytes``."""
        size = int(self._call(lambda: self.client.hstrlen(self.hash_key, str(tick))))
        if size > self.max_bytes:
            raise SnapshotError(where, f"too large: {size} bytes, over max_bytes={self.max_bytes}")
        data = self._call(lambda: self.client.hget(self.hash_key, str(tick)))
        return None if data is None else bytes(data)

    def _call(self, request: Callable[[], Any]) -> Any:
        """Run one request; every redis-py error becomes an :class:`OSError` (one line)."""
        try:
            return request()
        except redis.RedisError as exc:
            shown = f"redis {self.server}: {type(exc).__name__}: {exc}"
            raise ConnectionError(shown[:300]) from None


def _server(url: str) -> str:
    """``HOST:PORT/DB`` (or ``unix:PATH/DB``) of a URL, without its user or password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        db = urllib.parse.parse_qs(parts.query).get("db", ["0"])[0]
        return f"unix:{parts.path}/{db}"
    return f"{parts.hostname}:{parts.port or 6379}/{parts.path.lstrip('/') or '0'}"


def open_redis_store(
    url: str, world: str, *, generations: int, key: bytes | None, max_bytes: int
) -> RedisSnapshotStore:
    """The shared store of ``world`` at ``url`` (a ``SharedFactory``).

    Connects lazily: an unreachable Redis fails the first write (counted,
    the run goes on), not the start.
    """
    client = redis.Redis.from_url(
        url,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),  # our retry is the next snapshot
        health_check_interval=0,
    )
    return RedisSnapshotStore(
        client,
        _server(url),
        world,
        generations=generations,
        key=key,
        max_bytes=max_bytes,
    )


def register_redis_store() -> None:
    """Let ``[snapshots] store`` be a Redis URL (``supervisor run`` calls it first)."""
    register_shared_store(("redis", "rediss", "unix"), open_redis_store)
