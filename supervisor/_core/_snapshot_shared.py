"""Shared snapshots: every snapshot also lands in ``[snapshots] store``/WORLD, for another machine.

Why the same bytes and not a new format
---------------------------------------
A world must outlive its machine: with ``[snapshots] store = "DIR"`` (a
directory on shared storage) each snapshot the supervisor writes locally is
written again, byte for byte, into ``DIR/<world>/`` by a second
:class:`~supervisor._core._snapshot.SnapshotStore`. So the shared copy has
exactly the local guarantees -- temporary file, fsync, ``os.replace``,
directory fsync (atomic), the sha256 or HMAC checksum inside the bytes, and
``snapshot_generations`` kept -- with no second implementation of any of
them. The copy runs on the snapshot writer's thread, after the local write:
never on the tick. A failed shared write leaves the local snapshot written
(the run goes on); it is counted and shown in ``status`` (the ``snapshots_shared``
section), and the next snapshot tries again.

With ``[snapshots] store = "redis://HOST:PORT/DB"`` the same bytes go to
Redis instead. The core imports no outside library, so the store for a URL
comes from a capability: it registers a factory for its URL schemes
(:func:`register_shared_store`; ``supervisor run`` registers the Redis one
from ``supervisor/_fleet/_snapshots.py`` before it builds the supervisor)
and :func:`open_snapshot_store` calls it. Anything that keeps a world's
snapshots can be shared this way: it is a :class:`SharedTarget` (write the
encoded bytes atomically, keep the generations, find the newest valid one,
name another world's place). The checksum is inside the bytes, so every
target checks what it reads exactly as the local store does.

A shared snapshot larger than ``[snapshots] max_mb`` is not shared (the
local one is written; the refusal is one line in status): the cap bounds
what one write sends over the network and what a reader accepts.

A snapshot names its world
--------------------------
Each snapshot's ``meta["world"]`` is the world's name, and the shared
folder is named after it. ``supervisor run --resume-from WORLD`` restores
the newest valid snapshot of ``DIR/WORLD/`` (refusing one whose
``meta["world"]`` names another world), continues its tick count, and from
then on this supervisor *is* that world: its snapshots go to ``DIR/WORLD/``.
The demo datastore on PostgreSQL reloads the money from the database and
takes the world's fencing token, so the supervisor that wrote the world
before is stopped from writing it again (``systems/_datastore_pg.py``).

One writer per world folder, as for the local store: two supervisors must
not write one world at once (the datastore's fencing token is what makes a
resumed world's old owner stop).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._errors import ConfigError
from .._logging import get_logger
from ._config_snapshots import check_world
from ._snapshot import SnapshotStore
from ._snapshot_format import Snapshot, SnapshotError

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "SharedFactory",
    "SharedFolder",
    "SharedSnapshotStore",
    "SharedTarget",
    "open_snapshot_store",
    "register_shared_store",
    "shared_status",
]


class SharedTarget(Protocol):
    """Where one world's snapshots are shared (a folder, or a store a capability opened).

    Every method blocks (files, network): the snapshot writer's thread calls
    them, never the tick. Failures are :class:`OSError` (unreachable,
    refused) or :class:`ValueError` (a bad tick, too large).
    """

    @property
    def label(self) -> Path:
        """Where it is, for status and error lines (never a password)."""

    def write_bytes(self, tick: int, data: bytes) -> object:
        """Store ``data`` (encoded snapshot bytes) atomically; keep the generations."""

    def latest(self) -> tuple[Snapshot | None, list[SnapshotError]]:
        """The newest valid snapshot, and the problems of the newer, damaged ones."""

    def for_world(self, world: str) -> SharedTarget:
        """The same place, for another world (``--resume-from``, a standby's look)."""


@attrs.define(eq=False)
class SharedFolder(SnapshotStore):
    """A world's folder on shared storage: exactly the local store (``STORE/<world>/``)."""

    @property
    def label(self) -> Path:
        """The folder."""
        return self.directory

    def for_world(self, world: str) -> SharedFolder:
        """The sibling folder of ``world``."""
        return attrs.evolve(self, directory=self.directory.parent / check_world(world))


class SharedFactory(Protocol):
    """Opens the :class:`SharedTarget` of a store URL (registered per URL scheme)."""

    def __call__(
        self, url: str, world: str, *, generations: int, key: bytes | None, max_bytes: int
    ) -> SharedTarget:
        """The target for ``world`` at ``url``: the local store's generations and key."""


_FACTORIES: dict[str, SharedFactory] = {}


def register_shared_store(schemes: tuple[str, ...], factory: SharedFactory) -> None:
    """Make :func:`open_snapshot_store` open ``store`` URLs of ``schemes`` with ``factory``.

    Called by a capability (the Redis store) before the supervisor is built:
    the core cannot import the client library itself.
    """
    for scheme in schemes:
        _FACTORIES[scheme] = factory


@attrs.define(eq=False)
class SharedSnapshotStore(SnapshotStore):
    """The local store, each write copied into ``shared`` (see the module docstring)."""

    shared: SharedTarget = attrs.field(kw_only=True)
    world: str = attrs.field(kw_only=True)
    #: Largest snapshot shared; a larger one stays local (``[snapshots] max_mb``).
    share_max_bytes: int = attrs.field(kw_only=True)
    #: ``--resume-from``: the world's store to restore from, until the first write.
    resume_from: SharedTarget | None = attrs.field(kw_only=True, default=None)
    writes: int = attrs.field(init=False, default=0)
    failures: int = attrs.field(init=False, default=0)
    error: str | None = attrs.field(init=False, default=None)
    last_tick: int | None = attrs.field(init=False, default=None)

    def write(self, snap: Snapshot) -> Path:
        """Write ``snap``, naming its world, locally and then into the shared store."""
        snap.meta["world"] = self.world
        return super().write(snap)

    def write_bytes(self, tick: int, data: bytes) -> Path:
        path = super().write_bytes(tick, data)
        # From now on the newest snapshot of this world is the local one.
        self.resume_from = None
        try:
            self._share(tick, data)
        except (OSError, ValueError) as exc:
            self.failures += 1
            if self.error is None:
                # Once per outage, not once per snapshot: status counts the rest.
                get_logger(component="snapshots").warning(
                    "snapshots.shared_failed", store=str(self.shared.label), error=str(exc)[:300]
                )
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if self.error is not None:
                get_logger(component="snapshots").info(
                    "snapshots.shared_recovered", store=str(self.shared.label), tick=tick
                )
            self.writes += 1
            self.last_tick = tick
            self.error = None
        return path

    def _share(self, tick: int, data: bytes) -> None:
        if len(data) > self.share_max_bytes:
            raise ValueError(
                f"snapshot of tick {tick} is {len(data)} bytes, over "
                f"[snapshots] max_mb = {self.share_max_bytes >> 20}: kept locally only"
            )
        self.shared.write_bytes(tick, data)

    def latest(self) -> tuple[Snapshot | None, list[SnapshotError]]:
        """``--resume-from``: the world's newest valid shared snapshot; else the local one."""
        source = self.resume_from
        if source is None:
            return super().latest()
        snap, problems = source.latest()
        named = None if snap is None else snap.meta.get("world")
        if snap is not None and named is not None and named != self.world:
            problems.append(
                SnapshotError(
                    source.label,
                    f"the newest snapshot belongs to world {named!r}, not {self.world!r}",
                )
            )
            return None, problems
        return snap, problems

    def resume_world(self, world: str) -> None:
        """Become ``world`` and restore from its shared store (``run --resume-from``)."""
        self.world = check_world(world, key="--resume-from")
        self.shared = self.shared.for_world(world)
        self.resume_from = self.shared.for_world(world)

    def fence(self, folder: Path) -> None:
        """Replaced by another owner: never write the world's shared store again.

        This member's last snapshots go to ``folder`` (beside its state) instead.
        """
        self.shared = SharedFolder(folder, generations=self.generations, key=self.key)


def open_snapshot_store(directory: Path, config: Config) -> SnapshotStore:
    """The supervisor's snapshot store: local, and shared when ``[snapshots] store`` is set.

    Raises:
        ConfigError: ``store`` is a URL whose scheme no capability registered.
    """
    generations = config.supervisor.snapshot_generations
    key = config.supervisor.snapshot_key_bytes
    section = config.snapshots
    if section.store is None:
        return SnapshotStore(directory, generations=generations, key=key)
    shared: SharedTarget
    if "://" in section.store:
        scheme = urllib.parse.urlsplit(section.store).scheme
        factory = _FACTORIES.get(scheme)
        if factory is None:
            raise ConfigError(
                f"no store is registered for {scheme}:// URLs (`supervisor run` registers the "
                "Redis one; in Python: supervisor._fleet._snapshots.register_redis_store())",
                key="snapshots.store",
            )
        shared = factory(
            section.store,
            section.world,
            generations=generations,
            key=key,
            max_bytes=section.max_bytes,
        )
    else:
        shared = SharedFolder(
            config.path(section.store) / section.world,
            generations=generations,
            key=key,
            max_bytes=section.max_bytes,
        )
    return SharedSnapshotStore(
        directory,
        generations=generations,
        key=key,
        shared=shared,
        world=section.world,
        share_max_bytes=section.max_bytes,
    )


def shared_status(store: SnapshotStore) -> dict[str, Any]:
    """The ``snapshots_shared`` status section (``status_sections``)."""
    if not isinstance(store, SharedSnapshotStore):
        return {"enabled": False}
    return {
        "enabled": True,
        "world": store.world,
        "store": str(store.shared.label),
        "writes": store.writes,
        "last_tick": store.last_tick,
        "failures": store.failures,
        "error": store.error,
    }
