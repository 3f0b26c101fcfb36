"""``[supervisor] snapshot_key`` reaches the snapshots the supervisor writes."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
import trio.testing

from supervisor._core._snapshot import SnapshotStore
from supervisor.testing import make_supervisor

KEY = "k" * 24


@attrs.define
class Keeper:
    """Counts its ticks and keeps the count in snapshots."""

    count: int = 0
    name = "keeper"

    def tick(self, ctx: object) -> None:
        self.count += 1

    def snapshot(self) -> dict[str, int]:
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self.count = state["count"]


def _run(tmp_path: Path, key: str | None) -> Path:
    config = {"supervisor": {"snapshot_key": key}} if key else {}
    sup = make_supervisor([Keeper()], config=config, tick_rate=10, state_dir=tmp_path)
    summary = trio.run(
        lambda: sup.run(ticks=12), clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert summary.ticks == 12
    return tmp_path / "snapshots"


def test_a_keyed_supervisor_writes_files_only_its_key_opens(tmp_path: Path) -> None:
    folder = _run(tmp_path, KEY)
    snap, problems = SnapshotStore(folder, generations=3, key=KEY.encode()).latest()
    assert problems == []
    assert snap is not None
    assert snap.tick == 12
    unkeyed, problems = SnapshotStore(folder, generations=3).latest()
    assert unkeyed is None
    assert problems
    wrong, problems = SnapshotStore(folder, generations=3, key=b"w" * 24).latest()
    assert wrong is None
    assert any("snapshot_key" in str(p) for p in problems)


def test_without_a_key_the_files_are_plain(tmp_path: Path) -> None:
    folder = _run(tmp_path, None)
    snap, problems = SnapshotStore(folder, generations=3).latest()
    assert problems == []
    assert snap is not None
    keyed, problems = SnapshotStore(folder, generations=3, key=KEY.encode()).latest()
    assert keyed is None
    assert any("snapshot_key" in str(p) for p in problems)
