"""Overhead A/B on a busy machine: two source trees, alternating processes, the fastest kept.

``python -m bench.overhead`` on a machine that other jobs load varies by 2-4x
from run to run. To compare two commits fairly, this runs ``PAIRS`` pairs of
processes alternately (one per tree, so both see the same load), each timing
the real loop (``bench.overhead.loop_seconds``) with 0 and 200 no-op systems,
and keeps the fastest per tree and count over all pairs: the least disturbed.

Run: ``python -m bench.overhead_ab BEFORE_DIR AFTER_DIR [--pairs N]``, where
each folder is a checkout (``git worktree add`` or ``git archive | tar -x``)
(any commit that has `bench/overhead.py` with `loop_seconds`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import _common

#: Ticks per timed run, and runs per process (the fastest is kept).
TICKS = 20_000
ROUNDS = 3

_CHILD = f"""
import json, sys
from bench.overhead import loop_seconds
from supervisor import configure_logging
configure_logging("json", "warning", stream=sys.stderr)
print(json.dumps({{c: min(loop_seconds(c, {TICKS}) for _ in range({ROUNDS})) / {TICKS}
                  for c in (0, 200)}}))
"""


def _measure(tree: Path) -> dict[str, float]:
    """Seconds per tick with 0 and 200 systems, in a fresh process on ``tree``'s sources."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {str(k): float(v) for k, v in json.loads(out).items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Alternate the two trees, print the running best, return it."""
    parser = _common.parser(__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=12)
    args = parser.parse_args(argv)
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for i in range(args.pairs):
        for name, tree in (("before", args.before), ("after", args.after)):
            for count, seconds in _measure(tree.resolve()).items():
                best[name][count] = min(best[name].get(count, float("inf")), seconds)
            b = best[name]
            slope = (b["200"] - b["0"]) / 200
            print(
                f"pair {i + 1} {name}: 0 systems {b['0'] * 1e6:.2f} µs/tick, "
                f"200 systems {b['200'] * 1e6:.2f} µs/tick, {slope * 1e6:.3f} µs per system",
                flush=True,
            )
    _common.write_json(args.json, best)
    return best


if __name__ == "__main__":
    main()
