"""What sharing a snapshot costs the writer: local only, + a shared folder, + Redis (issue 15).

A snapshot of a synthetic world (``PLAYERS`` players, each a small record
like the demo's) is encoded once, then written ``--writes`` times through
three stores in turn -- the local store alone, the local store sharing into
a folder, the local store sharing into a real ``redis-server`` (the Lua
write of ``supervisor/_fleet/_snapshots.py``) -- interleaved, ``--runs``
times, so all three see the same machine load. Per write: wall ms and the
writing thread's CPU ms (``time.thread_time``: what the GIL-holding part
costs, the part that could compete with the tick; the rest is waiting on
disk or the socket). Printed: median and range over the runs of each run's
median, per store and size, and the bytes per snapshot. Also how long
``latest()`` takes to read and check the newest snapshot from Redis (what
``--resume-from`` and a standby's takeover pay), beside the local store's.

Run: ``python -m bench.redis_snapshots [--runs 3] [--writes 10] [--json FILE]``.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from bench._common import parser, write_json
from supervisor._core._config import Config
from supervisor._core._snapshot import SnapshotStore
from supervisor._core._snapshot_format import Snapshot
from supervisor._core._snapshot_shared import open_snapshot_store
from supervisor._fleet._snapshots import register_redis_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import redis_server

#: World sizes (players) measured.
PLAYERS: Final = (10_000, 100_000)
STORES: Final = ("local", "folder", "redis")


def _world(players: int) -> Snapshot:
    """A snapshot whose state is ``players`` small records (id, position, money, name)."""
    state = {
        "players": [[i, i % 997, i % 991, 1000 + i % 50, f"p{i}"] for i in range(players)],
        "economy": {"prices": list(range(64))},
    }
    return Snapshot(tick=1, phase="production", reason="periodic", time=1.0, systems=state)


def _stores(folder: Path, redis_url: str) -> dict[str, SnapshotStore]:
    def shared(store: str, name: str) -> SnapshotStore:
        config = Config.from_mapping({"snapshots": {"store": store, "world": name}})
        return open_snapshot_store(folder / f"local-{name}", config)

    return {
        "local": SnapshotStore(folder / "local-plain"),
        "folder": shared(str(folder / "shared"), "bench-folder"),
        "redis": shared(redis_url, "bench-redis"),
    }


def _timed(write: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    write()
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000


def one_run(redis_url: str, players: int, writes: int) -> dict[str, Any]:
    """Each store's median wall and CPU ms per write, interleaved; Redis ``latest()`` ms."""
    snap = _world(players)
    with tempfile.TemporaryDirectory(prefix="redissnap-") as tmp:
        stores = _stores(Path(tmp), redis_url)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in STORES}
        for tick in range(1, writes + 1):
            # Encoded outside the timing (the tick's capture does that part).
            data = stores["local"].encode(attrs.evolve(snap, tick=tick))
            for name in STORES:
                samples[name].append(
                    _timed(functools.partial(stores[name].write_bytes, tick, data))
                )
        failures = getattr(stores["redis"], "failures", 0)
        shared = getattr(stores["redis"], "shared", None)
        assert shared is not None
        read_ms, _cpu = _timed(shared.latest)
        local_ms, _cpu = _timed(stores["local"].latest)
    out: dict[str, Any] = {
        "bytes": len(data),
        "redis_failures": failures,
        "latest_ms": read_ms,
        "local_latest_ms": local_ms,
    }
    for name, pairs in samples.items():
        out[f"{name}_ms"] = statistics.median(w for w, _ in pairs)
        out[f"{name}_cpu_ms"] = statistics.median(c for _, c in pairs)
    return out


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    """Measure, print median and range per size and store, optionally save JSON."""
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--writes", type=int, default=10)
    args = p.parse_args()
    register_redis_store()
    figures: dict[str, Any] = {"runs": args.runs, "writes": args.writes, "sizes": {}}
    with redis_server() as server:
        for players in PLAYERS:
            runs = [one_run(server.url, players, args.writes) for _ in range(args.runs)]
            figures["sizes"][str(players)] = runs
            print(f"{players:,} players, {runs[0]['bytes']:,} bytes per snapshot:")
            for name in STORES:
                wall = [r[f"{name}_ms"] for r in runs]
                cpu = [r[f"{name}_cpu_ms"] for r in runs]
                print(f"  {name:7} write ms {_spread(wall)}   writer CPU ms {_spread(cpu)}")
            print(
                f"  latest() ms: redis {_spread([r['latest_ms'] for r in runs])}"
                f"   local {_spread([r['local_latest_ms'] for r in runs])}"
            )
            failed = sum(r["redis_failures"] for r in runs)
            print(f"  redis writes failed: {failed}", flush=True)
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
