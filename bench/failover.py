"""Failover time and acknowledged purchases lost over repeated kill -9 drills (issue 15).

Each drill: member A runs the demo world at 100 Hz (money in PostgreSQL,
snapshots in a shared folder, a fleet lease in Redis), a standby waits; once
A has acknowledged purchases and written a shared snapshot, and after a
random 0.2-1.0 s more, A is killed with SIGKILL. Measured: wall time from
just before the signal to the standby's first tick of A's world (the standby
logs it, ``failover.takeover`` ``first_tick``), split into detection (lease
expiry + the standby's poll: ``detected``) and start (resume from the shared
snapshot and the database); and the purchases A acknowledged that the
database does not hold (target 0), audited (balances equal to ledgers too)
once both processes are gone. Real Redis and PostgreSQL, started once.

``--store redis``: the shared snapshots in the same Redis instead of a folder.

Run: ``python -m bench.failover --drills 10 [--heartbeat 250ms --missed 3] [--store redis]``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench._common import parser, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from failover_harness import events, kill_and_time, start, stop_all, wait_for, write_config
from pg_server import PgServer, running_pg
from redis_server import redis_server
from test_durability import read_acks
from test_pg_datastore import pg_audit


def _has_shared_snapshot(shared: Path | str, world: str) -> bool:
    """Whether ``world`` has a snapshot in the shared folder, or in the Redis store."""
    if isinstance(shared, Path):
        return any((shared / world).glob("snapshot-*"))
    with redis.Redis.from_url(shared) as client:
        return bool(client.hlen(f"supervisor:snapshots:{{{world}}}"))


def drill(
    n: int,
    folder: Path,
    pg: PgServer,
    redis_url: str,
    *,
    heartbeat: str,
    missed: int,
    store: str = "folder",
) -> dict[str, Any]:
    """One drill; its figures. ``store``: the shared snapshots in a folder, or in Redis."""
    url = pg.create_database(f"drill{n}_{random.randrange(10**6)}")
    shared: Path | str = redis_url if store == "redis" else folder / "shared"
    common: dict[str, Any] = {
        "pg_url": url,
        "redis_url": redis_url,
        "namespace": f"drill{n}",
        "shared": shared,
        "heartbeat": heartbeat,
        "missed": missed,
    }
    a_config = write_config(folder / "a", member="A", world="alpha", **common)
    b_config = write_config(folder / "b", member="B", world="spare", standby=True, **common)
    a_acks = folder / "a" / "state" / "world.acks"
    a = start(folder / "a", a_config)
    b = start(folder / "b", b_config)
    try:
        wait_for(
            lambda: a_acks.exists() and _has_shared_snapshot(shared, "alpha"),
            [a, b],
            what="A ready",
        )
        time.sleep(random.uniform(0.2, 1.0))
        killed = kill_and_time(a)
        acked = read_acks(a_acks)
        wait_for(lambda: bool(events(folder / "b", "failover.takeover")), [b], 60, "takeover")
        takeover = events(folder / "b", "failover.takeover")[0]
    finally:
        stop_all([a, b])
    # Audited once nothing writes (the audit's queries are separate snapshots).
    problems = pg_audit(url, acked)
    lost = [p for p in problems if p.startswith("acknowledged")]
    return {
        "seconds": takeover["first_tick"] - killed,
        "detected": takeover["detected"] - killed,
        "acknowledged": len(acked),
        "lost": len(lost),
        "other_problems": [p for p in problems if p not in lost][:5],
        "tick": takeover["tick"],
    }


def main() -> None:
    """Run the drills; print and optionally save the figures."""
    p = parser(__doc__)
    p.add_argument("--drills", type=int, default=10)
    p.add_argument("--heartbeat", default="250ms")
    p.add_argument("--missed", type=int, default=3)
    p.add_argument("--store", choices=("folder", "redis"), default="folder")
    args = p.parse_args()
    runs: list[dict[str, Any]] = []
    with redis_server() as server, running_pg() as pg:
        for n in range(args.drills):
            with tempfile.TemporaryDirectory(prefix="drill-") as tmp:
                one = drill(
                    n,
                    Path(tmp),
                    pg,
                    server.url,
                    heartbeat=args.heartbeat,
                    missed=args.missed,
                    store=args.store,
                )
            runs.append(one)
            print(
                f"drill {n + 1}: {one['seconds']:.2f} s to the first tick "
                f"(lease expiry seen after {one['detected']:.2f} s), "
                f"{one['acknowledged']} acknowledged, {one['lost']} lost",
                flush=True,
            )
    seconds = sorted(r["seconds"] for r in runs)
    figures = {
        "store": args.store,
        "heartbeat": args.heartbeat,
        "missed": args.missed,
        "drills": len(runs),
        "failover_p50_s": statistics.median(seconds),
        "failover_max_s": seconds[-1],
        "failover_min_s": seconds[0],
        "detected_p50_s": statistics.median(r["detected"] for r in runs),
        "acknowledged": sum(r["acknowledged"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "runs": runs,
    }
    print(
        f"failover p50 {figures['failover_p50_s']:.2f} s, max {figures['failover_max_s']:.2f} s "
        f"(min {figures['failover_min_s']:.2f}); lease expiry seen at p50 "
        f"{figures['detected_p50_s']:.2f} s; {figures['acknowledged']} acknowledged, "
        f"{figures['lost']} lost"
    )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
