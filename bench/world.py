"""The demo tycoon world end to end: tick cost, lateness, memory, emergency, restart, snapshots.

Each scenario runs in a fresh child process (so its RSS is its own), on the
real clock, with the six shipped systems built from config exactly as
``supervisor run`` builds them, at ``RATE`` Hz for ``SECONDS`` after a
warm-up of ``WARMUP`` seconds (the first tick brings every player in at
once: at 100,000 players it takes seconds, and the ticks after it catch up):

- tick work p50/p99 and start lateness p99 from the supervisor's histograms,
  counted over the measured seconds only (differences of bucket counts);
- RSS of the process at the end (psutil);
- periodic snapshots every second: the tick stall (capturing the states
  between two ticks) and the write time on the worker thread;
- then an emergency shutdown: trigger to durable snapshot and database (the
  supervisor's own ``trigger_to_snapshot_seconds``: capture, stop systems in
  reverse order -- the datastore commits -- and the fsynced snapshot);
- then ``restart``: from the request to the first tick after it.

Also the RSS of a supervisor with 50 no-op systems, for comparison.

Run: ``python -m bench.world [--seconds S] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common

PLAYERS = (200, 2_000, 10_000, 100_000)
RATE = 30
SECONDS = 10.0
WARMUP = 3.0
DEMO = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]


def scenario(players: int, seconds: float) -> dict[str, Any]:
    """Run the world in this process; return its figures (called in a child process)."""
    # structlog imports its Twisted adapter when Twisted is installed (it is,
    # for bench/loops.py); a user's install has no Twisted, so neither does
    # the process whose memory is measured here.
    sys.modules["twisted"] = None  # type: ignore[assignment]
    import psutil
    import trio

    from supervisor import Config, Supervisor, configure_logging
    from supervisor._core._control import Caller
    from supervisor._core._histogram import WindowStats

    configure_logging("json", "warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if players:
            systems: dict[str, Any] = {"enabled": DEMO, "players": {"count": players}}
        else:
            systems = {"enabled": []}
        config = Config.from_mapping(
            {
                "supervisor": {"tick_rate": RATE, "snapshot_interval": 1.0},
                "systems": systems,
                "features": {"optimizer": False},
            },
            env={},
        )
        sup = Supervisor.from_config(config, state_dir=tmp)
        if not players:
            from bench.loops import make_systems

            for i, system in enumerate(make_systems(50)):
                sup.register(system, name=f"noop{i}")
        out: dict[str, Any] = {"players": players}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
                )
                await trio.sleep(WARMUP)
                hists = {
                    "work": sup._k.work,
                    "lateness": sup._k.lateness,
                    "stall": sup.snapshot_stall,
                }
                start = {name: h.counts() for name, h in hists.items()}
                await trio.sleep(seconds)
                win = {
                    name: WindowStats.between(h.counts(), start[name], h.max)
                    for name, h in hists.items()
                }
                out.update(
                    work_p50_ms=win["work"].p50 * 1e3,
                    work_p99_ms=win["work"].p99 * 1e3,
                    lateness_p99_us=win["lateness"].p99 * 1e6,
                    rss_mb=psutil.Process().memory_info().rss / 2**20,
                    snapshot_stall_p50_ms=win["stall"].p50 * 1e3,
                    snapshot_stall_max_ms=win["stall"].max * 1e3,
                    snapshot_write_p50_ms=sup.snapshot_write.stats().p50 * 1e3,
                    snapshot_bytes=sup.last_snapshot.stat().st_size if sup.last_snapshot else 0,
                    players_online=sup.gauges.get("players", 0),
                )
                out["errors"] = sum(sup._k.errors.counts.values())
                out["phase"] = str(sup.phase)
                caller = Caller("bench", "operator")
                try:
                    taken = await sup.shutdown(emergency=True, reason="bench", caller=caller)
                except Exception as exc:  # the world is in emergency already: say why
                    out["emergency_refused"] = str(exc)
                    sup.stop("bench over")
                    return
                info = taken.as_dict()
                out["emergency_to_durable_ms"] = info["trigger_to_snapshot_seconds"] * 1e3
                out["emergency_snapshot"] = bool(info["snapshot"])
                started = time.perf_counter()
                result = (await sup.restart(caller=caller)).as_dict()
                # Bounded: a restart that fails (a critical system's start overrunning
                # the hang watchdog) leaves the world in emergency, never ticking again.
                with trio.move_on_after(30):
                    while sup.tick <= result["tick"]:
                        await trio.lowlevel.checkpoint()
                if sup.tick > result["tick"]:
                    out["restart_to_first_tick_ms"] = (time.perf_counter() - started) * 1e3
                else:
                    out["restart_failed"] = str(sup.phase)
                sup.stop("bench over")

        trio.run(main)
    return out


def run_child(players: int, seconds: float, tree: Path | None = None) -> dict[str, Any]:
    """``scenario`` in a fresh Python process; with ``tree``, on that checkout's code.

    The scenario itself is always this file's, so two trees are measured the same way.
    """
    argv = ["--one", str(players), "--seconds", str(seconds)]
    if tree is None:
        command = [sys.executable, "-m", "bench.world", *argv]
    else:
        code = (
            f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
            f"sys.argv = ['bench.world', *{argv!r}]; "
            f"runpy.run_path({__file__!r}, run_name='__main__')"
        )
        command = [sys.executable, "-c", code]
    proc = subprocess.run(
        command,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {players} ({tree or 'here'}) failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """All scenarios; Markdown tables."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(scenario(args.one, args.seconds)))
        return []
    results = [run_child(n, args.seconds) for n in (*PLAYERS, 0)]
    print(f"The demo world at {RATE} Hz, {args.seconds:g} s per row, each in its own process.")
    print()
    print(
        "| players | work p50 ms | work p99 ms | lateness p99 µs | RSS MB | "
        "snapshot stall p50 / max ms | snapshot write ms (size) | "
        "emergency → durable ms | restart → first tick ms |"
    )
    print("|---:|---:|---:|---:|---:|---|---|---:|---:|")
    for r in results:
        name = f"{r['players']:,}" if r["players"] else "50 no-op systems"
        print(
            f"| {name} | {r['work_p50_ms']:.2f} | {r['work_p99_ms']:.2f} | "
            f"{r['lateness_p99_us']:.0f} | {r['rss_mb']:.1f} | "
            f"{r['snapshot_stall_p50_ms']:.2f} / {r['snapshot_stall_max_ms']:.2f} | "
            f"{r['snapshot_write_p50_ms']:.1f} ({r['snapshot_bytes'] / 1024:.0f} KiB) | "
            f"{r.get('emergency_to_durable_ms', math.nan):.1f} | "
            f"{r.get('restart_to_first_tick_ms', math.nan):.1f} |"
        )
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
