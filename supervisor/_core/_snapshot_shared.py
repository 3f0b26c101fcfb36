"""Shared snapshots: every snapshot also lands in ``[snapshots] store``/WORLD, for another machine.

Why a second :class:`SnapshotStore` and not a new format
--------------------------------------------------------
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

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._config_snapshots import check_world
from ._snapshot import SnapshotStore
from ._snapshot_format import Snapshot, SnapshotError

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["SharedSnapshotStore", "open_snapshot_store", "shared_status"]


@attrs.define(eq=False)
class SharedSnapshotStore(SnapshotStore):
    """The local store, each write copied into ``shared`` (see the module docstring)."""

    shared: SnapshotStore = attrs.field(kw_only=True)
    world: str = attrs.field(kw_only=True)
    #: ``--resume-from``: the world's store to restore from, until the first write.
    resume_from: SnapshotStore | None = attrs.field(kw_only=True, default=None)
    writes: int = attrs.field(init=False, default=0)
    failures: int = attrs.field(init=False, default=0)
    error: str | None = attrs.field(init=False, default=None)

    def write(self, snap: Snapshot) -> Path:
        """Write ``snap``, naming its world, locally and then into the shared store."""
        snap.meta["world"] = self.world
        return super().write(snap)

    def write_bytes(self, tick: int, data: bytes) -> Path:
        path = super().write_bytes(tick, data)
        # From now on the newest snapshot of this world is the local one.
        self.resume_from = None
        try:
            self.shared.write_bytes(tick, data)
        except (OSError, ValueError) as exc:
            self.failures += 1
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            self.writes += 1
            self.error = None
        return path

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
                    source.directory,
                    f"the newest snapshot belongs to world {named!r}, not {self.world!r}",
                )
            )
            return None, problems
        return snap, problems

    def resume_world(self, world: str) -> None:
        """Become ``world`` and restore from its shared folder (``run --resume-from``)."""
        self.world = check_world(world, key="--resume-from")
        self.shared = attrs.evolve(self.shared, directory=self.shared.directory.parent / world)
        self.resume_from = attrs.evolve(self.shared)


def open_snapshot_store(directory: Path, config: Config) -> SnapshotStore:
    """The supervisor's snapshot store: local, and shared when ``[snapshots] store`` is set."""
    generations = config.supervisor.snapshot_generations
    key = config.supervisor.snapshot_key_bytes
    section = config.snapshots
    if section.store is None:
        return SnapshotStore(directory, generations=generations, key=key)
    shared = SnapshotStore(
        config.path(section.store) / section.world, generations=generations, key=key
    )
    return SharedSnapshotStore(
        directory, generations=generations, key=key, shared=shared, world=section.world
    )


def shared_status(store: SnapshotStore) -> dict[str, Any]:
    """The ``snapshots_shared`` status section (``status_sections``)."""
    if not isinstance(store, SharedSnapshotStore):
        return {"enabled": False}
    return {
        "enabled": True,
        "world": store.world,
        "folder": str(store.shared.directory),
        "writes": store.writes,
        "failures": store.failures,
        "error": store.error,
    }
