"""The periodic snapshot's stall, and tick work, at 10,000 and 100,000 players: before vs after.

The stall is the pause between two ticks while the snapshot is captured (the
supervisor's own ``snapshot_stall`` histogram); tick work p99 says whether
the world fits its 30 Hz budget (33.3 ms). Each run is ``bench.world``'s
scenario (the six demo systems from config, snapshots every second) in a
fresh process, once with this tree's code and once with a baseline's
(``--baseline REF``, default ``main``, extracted with ``git archive`` into a
temporary folder), interleaved ``--runs`` times so both see the same
machine load. Memory per player is the RSS difference between the two
populations divided by 90,000. The loop thread's CPU per tick and the
garbage collector's pauses over the measured seconds are there for
direction: a loaded machine inflates them far less than wall times.

Run: ``python -m bench.snapshot_stall [--baseline REF] [--runs 3] [--seconds 10]
[--players 10000 100000] [--realtime] [--json FILE]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench import _common, world

HERE = Path(__file__).resolve().parent.parent
POPULATIONS = (10_000, 100_000)
FIGURES = (
    ("snapshot_stall_p50_ms", "stall p50 ms"),
    ("snapshot_stall_max_ms", "stall max ms"),
    ("work_p50_ms", "work p50 ms"),
    ("work_p99_ms", "work p99 ms"),
    ("lateness_p99_us", "lateness p99 µs"),
    ("loop_cpu_per_tick_ms", "loop CPU ms/tick"),
    ("gc_pause_total_ms", "GC pauses ms"),
    ("rss_mb", "RSS MB"),
    ("snapshot_bytes", "snapshot bytes"),
    ("errors", "errors"),
)


def extract(ref: str, into: Path) -> Path:
    """The tree of ``ref`` (a commit, branch or tag of this repository) under ``into``."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(HERE), "archive", ref], stdout=out, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Interleaved runs; a Markdown table of medians and ranges."""
    parser = _common.parser(__doc__)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--players", type=int, nargs="+", default=list(POPULATIONS))
    parser.add_argument("--realtime", action="store_true", help="as bench.world --realtime")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"uptime_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": extract(args.baseline, Path(tmp)), "after": HERE}
        for players in args.players:
            for run in range(args.runs):
                for label, tree in trees.items():
                    try:
                        figures = world.run_child(
                            players, args.seconds, tree, realtime=args.realtime
                        )
                    except RuntimeError as exc:  # a world that fell over is a result too
                        figures = {"failed": str(exc)[-500:]}
                    results.setdefault(f"{label} {players}", []).append(figures)
                    print(
                        f"# run {run + 1} {label} {players:,}: {json.dumps(figures)}",
                        file=sys.stderr,
                        flush=True,
                    )
    results["uptime_after"] = os.getloadavg()
    print()
    print(
        f"Demo world at 30 Hz, snapshots every second, {args.seconds:g} s a run, "
        f"median (range) of {args.runs} interleaved runs"
        f"{', realtime mode' if args.realtime else ''}; load average "
        f"{results['uptime_before'][0]:.2f} before, {results['uptime_after'][0]:.2f} after."
    )
    print()
    rows = []
    for players in args.players:
        for label in ("before", "after"):
            runs = results[f"{label} {players}"]
            cells = [world.span([r[key] for r in runs if key in r]) for key, _ in FIGURES]
            rows.append([f"{players:,}", label, *cells])
    world.print_table(["players", "code", *(title for _, title in FIGURES)], rows, left=1)
    for label in ("before", "after"):
        if f"{label} 10000" not in results or f"{label} 100000" not in results:
            continue
        small, big = results[f"{label} 10000"], results[f"{label} 100000"]
        per_player = [
            (b["rss_mb"] - s["rss_mb"]) * 2**20 / 90_000
            for s, b in zip(small, big, strict=True)
            if "rss_mb" in s and "rss_mb" in b
        ]
        print(f"\nMemory per player ({label}): {world.span(per_player)} bytes")
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
