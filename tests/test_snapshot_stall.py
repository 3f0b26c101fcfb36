"""Snapshots that do not stall: ``snapshot_version`` reuse, and the demo world's cheap capture.

Unit tests on a MockClock (``run_systems``): a system whose version is
unchanged is not asked for its state again and its last packed bytes go into
the snapshot; a new version, a restore, a rebuilt instance or an unreadable
version all mean a full capture. The demo world's capture allocates no
object per player (counted by the garbage collector's own counter). End to
end: ``supervisor run`` on the demo world (its leaderboard reuses bytes, its
players pack ids and its security its buckets as int64/float64 bytes, its
economy leaves the accounts to the datastore) is killed with SIGKILL mid-run;
the newest snapshot on disk reads back intact and consistent, and
``--resume`` continues from it.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from supervisor import Context
from supervisor._core._plugins import inspect_system
from supervisor._core._snapshot import SnapshotStore
from supervisor.testing import make_supervisor, run_systems
from systems.datastore import Datastore
from systems.economy import Economy
from systems.leaderboard import Leaderboard
from systems.players import Players, array_from_bytes, array_to_bytes
from systems.security import Security
from systems.tycoon import Tycoon

RATE = 10
QUIET = {"supervisor": {"snapshot_interval": 0.1}, "features": {"optimizer": False}}


class Versioned:
    """State that changes only when ``bump_at`` ticks come; counts its ``snapshot()`` calls."""

    name = "versioned"

    def __init__(self, bump_at: tuple[int, ...] = ()) -> None:
        self.bump_at = bump_at
        self.value = 0
        self.snapshot_version = 0
        self.calls = 0

    def tick(self, ctx: Context) -> None:
        if ctx.tick in self.bump_at:
            self.value += 1
            self.snapshot_version += 1

    def snapshot(self) -> dict[str, Any]:
        self.calls += 1
        return {"value": self.value}

    def restore(self, state: dict[str, Any]) -> None:
        self.value = int(state["value"])
        self.snapshot_version += 1


def latest_state(state_dir: Path, name: str) -> Any:
    snap, problems = SnapshotStore(state_dir / "snapshots").latest()
    assert snap is not None
    assert problems == []
    return msgpack.unpackb(snap.systems[name], raw=False, strict_map_key=False)


def capture_n(system: Versioned, times: int, bump_before: tuple[int, ...] = ()) -> Any:
    """Capture ``times`` times directly (no tick in between); bump the state before some."""

    async def main() -> Any:
        sup = make_supervisor([system], tick_rate=RATE, config=QUIET)
        await sup.run(ticks=1)  # orders the systems (and captures once, at stop)
        system.calls = sup._snapshotter.reused = 0
        sup._snapshotter._packed.clear()
        for i in range(times):
            if i in bump_before:
                system.value += 1
                system.snapshot_version += 1
            snap = await sup._snapshotter.capture("test")
        return sup._snapshotter, msgpack.unpackb(snap.systems["versioned"])

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class TestVersionReuse:
    def test_unchanged_version_reuses_the_packed_bytes(self) -> None:
        """Ten captures; the state changed twice: three ``snapshot()`` calls, seven reuses."""
        system = Versioned()
        snapshotter, state = capture_n(system, 10, bump_before=(4, 7))
        assert (system.calls, snapshotter.reused) == (3, 7)
        assert state == {"value": 2}

    def test_without_a_version_every_capture_calls_snapshot(self) -> None:
        system = Versioned()
        del system.snapshot_version
        system.snapshot_version = None  # type: ignore[assignment]
        snapshotter, _ = capture_n(system, 5)
        assert (system.calls, snapshotter.reused) == (5, 0)

    @pytest.mark.parametrize("version", [True, 1.0, "1", None])
    def test_a_version_that_is_not_an_int_means_a_full_capture(self, version: object) -> None:
        system = Versioned()
        system.snapshot_version = version  # type: ignore[assignment]
        snapshotter, _ = capture_n(system, 3)
        assert (system.calls, snapshotter.reused) == (3, 0)

    def test_a_version_property_that_raises_means_a_full_capture(self) -> None:
        class Hostile(Versioned):
            @property
            def snapshot_version(self) -> int:
                raise RuntimeError("no version today")

            @snapshot_version.setter
            def snapshot_version(self, _value: int) -> None:
                pass

        system = Hostile()
        snapshotter, state = capture_n(system, 3)
        assert (system.calls, snapshotter.reused) == (3, 0)
        assert state == {"value": 0}

    async def test_restore_and_a_rebuilt_instance_never_get_old_bytes(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Same version number, different state: the cache is keyed by instance and cleared."""
        first = Versioned()
        sup = make_supervisor([first], tick_rate=RATE, config=QUIET)
        await sup.run(ticks=1)
        snapshotter = sup._snapshotter
        before = await snapshotter.capture("test")
        assert (first.calls, snapshotter.reused) == (1, 1)  # captured at stop, then reused
        other = Versioned()
        other.value = 41  # same version (0), other state
        slot = sup._k.slots["versioned"]
        slot.system, slot.info = other, inspect_system(other, "versioned", slot.info.origin)
        after = await snapshotter.capture("test")
        assert msgpack.unpackb(after.systems["versioned"]) == {"value": 41}
        await snapshotter.restore(before)
        assert other.value == 0
        other.snapshot_version = 0  # a restore that forgot to bump: the cache was cleared anyway
        again = await snapshotter.capture("test")
        assert msgpack.unpackb(again.systems["versioned"]) == {"value": 0}
        assert other.calls == 2


class TestDemoWorldCapture:
    def test_player_ids_and_times_round_trip_as_bytes(self) -> None:
        players = Players(count=0)
        players.online.extend([0, 7, 2**40, 3])
        data = array_to_bytes(players.online)
        assert len(data) == 32
        assert array_from_bytes("q", data).tolist() == [0, 7, 2**40, 3]
        # A snapshot from before the change holds lists.
        assert array_from_bytes("q", [5, 6]).tolist() == [5, 6]
        with pytest.raises(ValueError, match="8-byte 'q'"):
            array_from_bytes("q", b"\x00" * 7)
        times = array("d", [0.5, -1.25, 1e300])
        assert array_from_bytes("d", array_to_bytes(times)) == times
        with pytest.raises(ValueError, match="8-byte 'd'"):
            array_from_bytes("d", "not bytes")  # type: ignore[arg-type]

    def test_a_capture_after_the_run_equals_the_live_state(self, tmp_path: Path) -> None:
        """Reused bytes are never stale: each system's captured state is its live state."""
        systems: dict[str, Any] = {
            "players": Players(count=300, churn=0.5, seed=3),
            "economy": Economy(payday=20),
            "leaderboard": Leaderboard(size=5, every=7, chunk=50),
        }
        result = run_systems(
            named=systems, ticks=200, tick_rate=RATE, config=QUIET, state_dir=tmp_path
        )
        assert list(result.errors) == []
        snapshotter = result.supervisor._snapshotter
        reused = snapshotter.reused
        again = trio.run(snapshotter.capture, "test")  # the leaderboard's bytes are reused
        assert snapshotter.reused == reused + 1
        for name, system in systems.items():
            live = msgpack.unpackb(msgpack.packb(system.snapshot()), raw=False)
            assert live == msgpack.unpackb(again.systems[name], raw=False), name

    def test_the_demo_capture_allocates_no_object_per_player(self, tmp_path: Path) -> None:
        """Each system's ``snapshot()`` and packing: a handful of tracked objects at any size.

        Counted by the garbage collector's own allocation counter (collections
        off), mid-run after the datastore's commit, as a periodic capture sees
        the world: every few hundred tracked objects a capture allocates start
        a collection inside the stall, which at 100,000 players visits them
        all. A list per security bucket made this grow with the buckets.
        """
        systems: dict[str, Any] = {
            "players": Players(count=3000, churn=0.5, seed=4),
            "economy": Economy(payday=20),
            "tycoon": Tycoon(buy_rate=2.0, cheat_rate=0.2),
            "datastore": Datastore(path=str(tmp_path / "w.db"), autosave=0),
            "leaderboard": Leaderboard(size=5, every=7, chunk=50),
            "security": Security(),
        }
        probe = _CaptureProbe(at=50, systems=dict(systems))
        result = run_systems(
            named={**systems, "probe": probe}, ticks=60, tick_rate=RATE, config=QUIET
        )
        assert not result.errors
        security = systems["security"]
        assert len(security._tokens) > 1000
        assert len(security.offenders) > 100
        assert probe.allocated.keys() == systems.keys()
        assert max(probe.allocated.values()) < 50, probe.allocated

    def test_a_leaderboard_pass_spread_over_ticks_ranks_like_one_pass(self) -> None:
        """``chunk`` small: the pass takes several ticks and publishes the same order at the end."""
        board, economy = ranked_world(Leaderboard(size=8, every=10, chunk=30), 400, ticks=60)
        assert board.refreshes >= 3
        board.refresh(0)
        while board._pass is not None:  # finish a pass without ticks in between
            board.refresh(0)
        expected = sorted(
            ((a.pid, a.earnings) for a in economy.accounts.values() if a.online),
            key=lambda pe: (-pe[1], -pe[0]),
        )[:8]
        assert board.top == expected

    def test_a_pass_walks_player_ids_and_skips_players_gone_since(self) -> None:
        """A pass holds int64 ids, not the accounts; a leaver forgotten mid-pass is skipped."""
        board, economy = ranked_world(Leaderboard(size=5, every=10, chunk=20), 200, ticks=40)
        while pass_of(board) is not None:  # finish the pass under way
            board.refresh(0)
        board.refresh(0)  # a new pass: the first 20 ids ranked
        walked = pass_of(board)
        assert isinstance(walked, array)
        assert len(walked) == 200
        ranked = sorted(
            (a for a in economy.accounts.values() if a.online),
            key=lambda a: (-a.earnings, -a.pid),
        )
        forgotten, offline = ranked[0], ranked[1]
        del economy.accounts[forgotten.pid]  # left and saved: the economy forgot it
        offline.online = False  # left, not yet saved
        while pass_of(board) is not None:
            board.refresh(0)
        assert board.top == [(a.pid, a.earnings) for a in ranked[2:7]]


def ranked_world(board: Leaderboard, players: int, ticks: int) -> tuple[Leaderboard, Economy]:
    """``board`` ranking a crowd of ``players`` (no churn, frequent paydays) after ``ticks``."""
    economy = Economy(payday=3)
    systems = {"players": Players(count=players, churn=0.0, seed=5), "economy": economy}
    result = run_systems(
        named={**systems, "leaderboard": board}, ticks=ticks, tick_rate=RATE, config=QUIET
    )
    assert list(result.errors) == []
    return board, economy


def pass_of(board: Leaderboard) -> array[int] | None:
    """The pass under way (read through a call: a check on it must not be narrowed away)."""
    return board._pass


class _CaptureProbe:
    """On tick ``at``, after the other systems' steps: what each ``snapshot()`` allocates."""

    name = "probe"
    depends_on = ("datastore", "leaderboard", "security", "tycoon")

    def __init__(self, at: int, systems: dict[str, Any]) -> None:
        self.at = at
        self.systems = systems
        self.allocated: dict[str, int] = {}

    def tick(self, ctx: Context) -> None:
        if ctx.tick != self.at:
            return
        for name, system in self.systems.items():
            gc.disable()
            try:
                before = gc.get_count()[0]
                state = system.snapshot()
                msgpack.packb(state)
                self.allocated[name] = gc.get_count()[0] - before  # while the state is alive
                del state
            finally:
                gc.enable()


class _Nothing:
    tick = -1


snap_at_zero = _Nothing()

KILL_CONFIG = """\
[supervisor]
tick_rate = 100
state_dir = "state"
snapshot_interval = 0.05

[systems]
enabled = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]

[systems.players]
count = 3000
churn = 0.5

[systems.leaderboard]
every = 50
chunk = 500

[systems.tycoon]
cheat_rate = 0.02

[systems.datastore]
path = "world.db"

[features]
api = false
optimizer = false
precise_timing = false
"""


@pytest.mark.e2e
def test_kill_9_mid_run_leaves_an_intact_snapshot_and_resume_continues(tmp_path: Path) -> None:
    (tmp_path / "supervisor.toml").write_text(KILL_CONFIG)
    supervisor = str(Path(sys.executable).parent / "supervisor")
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [supervisor, "run", "--log-format", "json"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        store = SnapshotStore(tmp_path / "state" / "snapshots")
        deadline = time.monotonic() + 30
        while (store.latest()[0] or snap_at_zero).tick < 150:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "no snapshots were written"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        log.close()
    snap, problems = store.latest()
    assert snap is not None
    assert problems == []
    state = {
        k: msgpack.unpackb(v, raw=False, strict_map_key=False) for k, v in snap.systems.items()
    }
    online = array_from_bytes("q", state["players"]["online"])
    assert 2500 < len(online) == len(set(online)) < 3500
    assert state["economy"]["accounts_in_store"] is True
    assert state["economy"]["accounts"] == []
    security = Security()
    security.restore(state["security"])  # the buckets as bytes, read back whole
    assert security._tokens
    assert security.offenders
    assert list(security._tokens) == list(security._counted)
    board = state["leaderboard"]
    # Reused bytes are the board as of its last pass: never older than one period and a pass.
    assert snap.tick - 2 * 50 <= board["refreshed_tick"] <= snap.tick
    assert len(board["top"]) == 10
    resumed = subprocess.run(
        [supervisor, "run", "--resume", "--ticks", "5", "--log-format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '"resume.done"' in resumed.stdout + resumed.stderr
    assert '"economy.accounts_in_store"' not in resumed.stdout + resumed.stderr
