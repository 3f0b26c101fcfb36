"""Memory per system: what ``[features] memory_tracking`` costs the demo world's ticks.

The demo world (2,000 players, the six shipped systems built from config as
``supervisor run`` builds them) at ``RATE`` Hz for ``--seconds`` on the real
clock, with tracking off and on, interleaved, ``RUNS`` times each, every run
in a fresh process (tracemalloc is process-wide). Per run: tick work p50/p99
and start lateness p99 from the supervisor's histograms (the lateness shows
the attribution's worker thread and the snapshot copy, which holds the GIL),
RSS at the end; with tracking on, also the last attribution's time in the
worker thread, the traced megabytes and the top systems.

Run: ``python -m bench.memory_tracking [--seconds S] [--players N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from bench import _common

RATE = 30
SECONDS = 15.0
PLAYERS = 2_000
#: Runs of each variant, interleaved (off, on, off, on, ...).
RUNS = 3
DEMO = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]


def scenario(tracking: bool, players: int, seconds: float) -> dict[str, Any]:
    """Run the world in this process; return its figures (called in a child process)."""
    import psutil
    import trio

    from supervisor import Config, Supervisor, configure_logging

    configure_logging("json", "warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.from_mapping(
            {
                "supervisor": {"tick_rate": RATE},
                "systems": {"enabled": DEMO, "players": {"count": players}},
                "features": {"optimizer": False, "memory_tracking": tracking},
            },
            env={},
        )
        sup = Supervisor.from_config(config, state_dir=tmp)
        out: dict[str, Any] = {"tracking": tracking}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
                )
                await trio.sleep(seconds)
                stats = sup.statistics()
                section = sup.memory.section()
                out.update(
                    work_p50_ms=stats.work.p50 * 1e3,
                    work_p99_ms=stats.work.p99 * 1e3,
                    lateness_p99_us=stats.lateness.p99 * 1e6,
                    rss_mb=psutil.Process().memory_info().rss / 2**20,
                    attribution_ms=section["snapshot_seconds"] * 1e3,
                    traced_mb=section["traced_bytes"] / 2**20,
                    top={t["system"]: round(t["bytes"] / 2**20, 2) for t in section["top"]},
                )
                sup.stop("bench over")

        trio.run(main)
    return out


def run_child(tracking: bool, players: int, seconds: float) -> dict[str, Any]:
    """``scenario`` in a fresh Python process."""
    args = ["--one", "on" if tracking else "off", "--players", str(players)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory_tracking", *args, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _range(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows]
    return f"{statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Interleaved runs; a Markdown table of medians (and ranges)."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--players", type=int, default=PLAYERS)
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(scenario(args.one == "on", args.players, args.seconds)))
        return []
    results = [
        run_child(tracking, args.players, args.seconds)
        for _ in range(RUNS)
        for tracking in (False, True)
    ]
    print(
        f"The demo world ({args.players:,} players) at {RATE} Hz, {args.seconds:g} s per run, "
        f"{RUNS} runs per row, interleaved; median (min to max)."
    )
    print()
    print("| tracking | work p50 ms | work p99 ms | lateness p99 µs | RSS MB | attribution ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for tracking in (False, True):
        rows = [r for r in results if r["tracking"] is tracking]
        print(
            f"| {'on' if tracking else 'off'} | {_range(rows, 'work_p50_ms')} | "
            f"{_range(rows, 'work_p99_ms')} | {_range(rows, 'lateness_p99_us')} | "
            f"{_range(rows, 'rss_mb')} | {_range(rows, 'attribution_ms')} |"
        )
    tracked = [r for r in results if r["tracking"]]
    print()
    print(f"Traced MB: {[round(r['traced_mb'], 1) for r in tracked]}; top: {tracked[-1]['top']}")
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
