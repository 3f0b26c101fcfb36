"""The demo tycoon world end to end: tick cost, lateness, memory, emergency, restart, snapshots.

Each scenario runs in a fresh child process (so its RSS is its own), on the
real clock, with the six shipped systems built from config exactly as
``supervisor run`` builds them, at ``RATE`` Hz for ``SECONDS`` after a
warm-up of ``WARMUP`` seconds (the first tick brings every player in at
once: at 100,000 players it takes seconds, and the ticks after it catch up):

- tick work p50/p99 and start lateness p99 from the supervisor's histograms,
  counted over the measured seconds only (differences of bucket counts);
- for direction on a shared machine, CPU time: the loop thread's CPU per tick
  (``time.thread_time``, ticks and chores and the API together) and the
  garbage collector's collections and pause time in those seconds (``gc``
  callbacks), which a loaded machine does not inflate the way it does wall
  times;
- RSS of the process at the end (psutil);
- periodic snapshots every second: the tick stall (capturing the states
  between two ticks) and the write time on the worker thread;
- then an emergency shutdown: trigger to durable snapshot and database (the
  supervisor's own ``trigger_to_snapshot_seconds``: capture, stop systems in
  reverse order -- the datastore commits -- and the fsynced snapshot);
- then ``restart``: from the request to the first tick after it.

Also the RSS of a supervisor with 50 no-op systems, for comparison.

With ``--runs N`` each population is run N times, the populations taking
turns (run 1 of each, then run 2 of each...) so each sees the same spread of
machine load, and every cell is the median (and range) of the N runs;
``--players`` picks the populations (``0`` is the 50 no-op systems).
``--realtime`` runs them in realtime mode (``[supervisor] realtime = true``:
the loop thread under SCHED_FIFO, the garbage collector between ticks), where
the machine's other processes cannot preempt the loop: on a shared machine it
separates what a snapshot or a tick costs from waiting for a core.

Run: ``python -m bench.world [--seconds S] [--runs N] [--players N ...] [--realtime]
[--json FILE]``; the 100,000-player figures: ``python -m bench.world --runs 3 --players
10000 100000`` (and the same with ``--realtime``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
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
#: The first tick's commit inserts every player (100,000 rows in one transaction),
#: and a restart's start reloads every account: on a loaded machine either can
#: pass the default 1 s ``kill_timeout``, and the watchdog would interrupt the
#: critical datastore and end the run in an emergency, with nothing measured.
#: What is measured is the steady state after the warm-up, and a restart that
#: finishes; ``README`` says when a world this size needs the same settings.
WATCHDOG = {"hang_timeout": 10.0, "kill_timeout": 30.0}


def scenario(players: int, seconds: float, realtime: bool = False) -> dict[str, Any]:
    """Run the world in this process; return its figures (called in a child process)."""
    # structlog imports its Twisted adapter when Twisted is installed (it is,
    # for bench/loops.py); a user's install has no Twisted, so neither does
    # the process whose memory is measured here.
    sys.modules["twisted"] = None  # type: ignore[assignment]
    import trio

    from supervisor import Config, Supervisor, configure_logging
    from supervisor._core._control import Caller

    configure_logging("json", "warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if players:
            systems: dict[str, Any] = {"enabled": DEMO, "players": {"count": players}}
        else:
            systems = {"enabled": []}
        config = Config.from_mapping(
            {
                "supervisor": {"tick_rate": RATE, "snapshot_interval": 1.0, "realtime": realtime},
                "systems": systems,
                "features": {"optimizer": False},
                "watchdog": WATCHDOG,
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
                out.update(await measure(sup, seconds))
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


async def measure(sup: Any, seconds: float) -> dict[str, Any]:
    """The figures of ``seconds`` of a running supervisor's ticks (histogram windows, CPU, GC)."""
    import psutil
    import trio

    from supervisor._core._histogram import WindowStats

    hists = {"work": sup._k.work, "lateness": sup._k.lateness, "stall": sup.snapshot_stall}
    start = {name: h.counts() for name, h in hists.items()}
    pauses: list[float] = []
    gc.callbacks.append(_gc_timer(pauses))
    gc_before = [g["collections"] for g in gc.get_stats()]
    cpu, tick = time.thread_time(), sup.tick
    await trio.sleep(seconds)
    cpu, ticks = time.thread_time() - cpu, max(sup.tick - tick, 1)
    gc.callbacks.pop()
    win = {name: WindowStats.between(h.counts(), start[name], h.max) for name, h in hists.items()}
    return {
        "work_p50_ms": win["work"].p50 * 1e3,
        "work_p99_ms": win["work"].p99 * 1e3,
        "lateness_p99_us": win["lateness"].p99 * 1e6,
        "loop_cpu_per_tick_ms": cpu * 1e3 / ticks,
        "gc_collections": [
            g["collections"] - n for g, n in zip(gc.get_stats(), gc_before, strict=True)
        ],
        "gc_pause_total_ms": sum(pauses) * 1e3,
        "gc_pause_max_ms": max(pauses, default=0.0) * 1e3,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "snapshot_stall_p50_ms": win["stall"].p50 * 1e3,
        "snapshot_stall_max_ms": win["stall"].max * 1e3,
        "snapshot_write_p50_ms": sup.snapshot_write.stats().p50 * 1e3,
        "snapshot_bytes": sup.last_snapshot.stat().st_size if sup.last_snapshot else 0,
        "players_online": sup.gauges.get("players", 0),
    }


def _gc_timer(pauses: list[float]) -> Any:
    """A ``gc.callbacks`` entry appending each collection's duration to ``pauses``."""
    began = [0.0]

    def timer(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began[0])

    return timer


def span(values: list[float]) -> str:
    """Median and range, as the README reports figures measured on a shared machine."""
    if not values:
        return "failed"
    d = 0 if max(values) >= 100 else 2
    if len(values) == 1:
        return f"{values[0]:.{d}f}"
    return f"{statistics.median(values):.{d}f} ({min(values):.{d}f} to {max(values):.{d}f})"


def print_table(header: list[str], rows: list[list[str]], left: int = 0) -> None:
    """A Markdown table: the ``left`` columns after the first aligned left, the rest right."""
    print("| " + " | ".join(header) + " |")
    print("|---:|" + "---|" * left + "---:|" * (len(header) - 1 - left))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def run_child(
    players: int, seconds: float, tree: Path | None = None, *, realtime: bool = False
) -> dict[str, Any]:
    """``scenario`` in a fresh Python process; with ``tree``, on that checkout's code.

    The scenario itself is always this file's, so two trees are measured the same way.
    """
    argv = ["--one", str(players), "--seconds", str(seconds), *(["--realtime"] if realtime else [])]
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


#: The table's columns: (title, how a run's figures give the cell's number).
COLUMNS: tuple[tuple[str, Any], ...] = (
    ("work p50 ms", lambda r: r["work_p50_ms"]),
    ("work p99 ms", lambda r: r["work_p99_ms"]),
    ("lateness p99 µs", lambda r: r["lateness_p99_us"]),
    ("loop CPU ms/tick", lambda r: r["loop_cpu_per_tick_ms"]),
    ("GC pauses ms (total)", lambda r: r["gc_pause_total_ms"]),
    ("RSS MB", lambda r: r["rss_mb"]),
    ("snapshot stall p50 ms", lambda r: r["snapshot_stall_p50_ms"]),
    ("snapshot stall max ms", lambda r: r["snapshot_stall_max_ms"]),
    ("snapshot write ms", lambda r: r["snapshot_write_p50_ms"]),
    ("snapshot KiB", lambda r: r["snapshot_bytes"] / 1024),
    ("emergency → durable ms", lambda r: r.get("emergency_to_durable_ms", math.nan)),
    ("restart → first tick ms", lambda r: r.get("restart_to_first_tick_ms", math.nan)),
)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """All scenarios (``--runs`` times each, interleaved); a Markdown table."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--players", type=int, nargs="+", default=[*PLAYERS, 0])
    parser.add_argument("--realtime", action="store_true", help="[supervisor] realtime = true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(scenario(args.one, args.seconds, args.realtime)))
        return []
    results: list[dict[str, Any]] = []
    for run in range(args.runs):
        for players in args.players:
            try:
                figures = run_child(players, args.seconds, realtime=args.realtime)
            except RuntimeError as exc:  # a world that fell over is a result too
                figures = {"players": players, "failed": str(exc)[-500:]}
            results.append(figures)
            if args.runs > 1:
                print(
                    f"# run {run + 1} {players:,}: {json.dumps(figures)}",
                    file=sys.stderr,
                    flush=True,
                )
    load = os.getloadavg()[0]
    how = f"median (range) of {args.runs} interleaved runs, " if args.runs > 1 else ""
    how += "realtime mode, " if args.realtime else ""
    print(
        f"The demo world at {RATE} Hz, {args.seconds:g} s per run, each in its own process; "
        f"{how}load average {load:.2f} at the end."
    )
    print()
    rows = []
    for players in args.players:
        runs = [r for r in results if r["players"] == players and "failed" not in r]
        name = f"{players:,}" if players else "50 no-op systems"
        rows.append([name, *(span([cell(r) for r in runs]) for _, cell in COLUMNS)])
    print_table(["players", *(title for title, _ in COLUMNS)], rows)
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
