"""The demo world's tick work on PostgreSQL vs SQLite, at 200, 2,000 and 10,000 players.

The PostgreSQL datastore commits on a worker thread; SQLite commits in the
tick (a local WAL append). The claim: the tick never waits on the network,
so the work p99 with PostgreSQL stays within 10 % of SQLite's.

Each run is a fresh child process running the six demo systems at ``RATE``
Hz for ``--seconds`` on the real clock; backends are interleaved (SQLite,
PostgreSQL, SQLite, ...), ``--runs`` runs each, and the table gives the
median and the range of the work p99, and of the ratio PostgreSQL / SQLite
of each interleaved pair (the two runs next to each other in time share the
machine's load, so the ratio of a pair is steadier than the ratio of two
medians). Also the acknowledged purchases (both backends must acknowledge;
PostgreSQL's acks come from the worker). The load average is printed before
and after: on a shared machine, figures are only comparable within a table.

PostgreSQL: ``--url postgresql://...`` or, by default, a throwaway cluster
started from Debian's server binaries (``tests/pg_server.py``; each run gets
its own database).

With ``--start PLAYERS`` it measures instead how long the datastore's start
takes when a world of PLAYERS players is resumed (``supervisor run
--resume``, the default watchdog): the ``datastore.started`` log line's
seconds, ``--runs`` resumes per backend, and whether any start was
interrupted as a hang.

Run: ``python -m bench.datastore_pg [--seconds S] [--runs N] [--url URL] [--json FILE]``
or ``python -m bench.datastore_pg --start 100000 --runs 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import _common

PLAYERS = (200, 2_000, 10_000)
RATE = 30
SECONDS = 15.0
RUNS = 3
DEMO = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]


def scenario(players: int, seconds: float, url: str | None) -> dict[str, Any]:
    """Run the world in this process; its figures (called in a child process)."""
    sys.modules["twisted"] = None  # type: ignore[assignment]  # as bench.world does
    import trio

    from supervisor import Config, Supervisor, configure_logging

    configure_logging("json", "warning", stream=sys.stderr)
    datastore: dict[str, Any] = {} if url is None else {"url": url}
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.from_mapping(
            {
                "supervisor": {"tick_rate": RATE, "snapshot_interval": 1.0},
                "systems": {
                    "enabled": DEMO,
                    "players": {"count": players},
                    "tycoon": {"buy_rate": 0.5},
                    "datastore": datastore,
                },
                "features": {"optimizer": False},
            },
            env={},
        )
        sup = Supervisor.from_config(config, state_dir=tmp)
        out: dict[str, Any] = {"players": players, "backend": "sqlite" if url is None else "pg"}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
                )
                await trio.sleep(seconds)
                stats = sup.statistics()
                economy = sup.system("economy")
                steps = {s.name: s.step for s in stats.systems}
                out.update(
                    datastore_step_p99_ms=steps["datastore"].p99 * 1e3,
                    others_step_p99_ms=max(
                        s.p99 for name, s in steps.items() if name != "datastore"
                    )
                    * 1e3,
                    work_p50_ms=stats.work.p50 * 1e3,
                    work_p99_ms=stats.work.p99 * 1e3,
                    lateness_p99_us=stats.lateness.p99 * 1e6,
                    acked=economy.acked,
                    pending=len(economy.pending),
                    backlog=sup.gauges.get("datastore_backlog", 0),
                )
                sup.stop("bench over")

        trio.run(main)
    return out


_START_WORLD = """\
[supervisor]
tick_rate = {rate}
snapshot_interval = 1.0

[systems]
enabled = {demo}

[systems.players]
count = {players}

[systems.tycoon]
buy_rate = 0.5

[systems.datastore]
{datastore}

[features]
api = false
"""


def start_times(players: int, runs: int, url: str | None) -> dict[str, Any]:
    """Build a world of ``players`` (150 ticks), then resume it ``runs`` times; the start times."""
    backend = "sqlite" if url is None else "pg"
    out: dict[str, Any] = {"players": players, "backend": backend, "seconds": [], "failed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "world.toml"
        datastore = "" if url is None else f'url = "{url}"'
        config.write_text(
            _START_WORLD.format(
                rate=RATE, demo=json.dumps(DEMO), players=players, datastore=datastore
            )
        )
        run = [sys.executable, "-m", "supervisor", "run", "--config", str(config)]
        run += ["--state-dir", str(Path(tmp) / "state")]
        built = subprocess.run(
            [*run, "--ticks", "150"], capture_output=True, text=True, check=False
        )
        if built.returncode != 0:
            raise RuntimeError(f"building the world failed: {built.stderr[-2000:]}")
        for _ in range(runs):
            done = subprocess.run(
                [*run, "--resume", "--ticks", "3"], capture_output=True, text=True, check=False
            )
            started = [
                json.loads(line)
                for line in done.stderr.splitlines()
                if '"datastore.started"' in line
            ]
            if done.returncode != 0 or not started:
                out["failed"] += 1
            else:
                out["seconds"].append(started[0]["seconds"])
    return out


def print_start_times(rows: list[dict[str, Any]], load: str) -> None:
    """The ``--start`` table."""
    print(
        f"The datastore's start, resuming a world (load average before: {load}, after: {_load()})."
    )
    print()
    print("| players | backend | start s, median [min-max] | starts failed |")
    print("|---:|---|---:|---:|")
    for row in rows:
        secs = _spread(row["seconds"]) if row["seconds"] else "-"
        print(f"| {row['players']:,} | {row['backend']} | {secs} | {row['failed']} |")


def run_child(players: int, seconds: float, url: str | None) -> dict[str, Any]:
    """``scenario`` in a fresh Python process."""
    args = [sys.executable, "-m", "bench.datastore_pg", "--one", str(players)]
    args += ["--seconds", str(seconds)] + ([] if url is None else ["--url", url])
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=seconds * 4 + 120, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scenario {players} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def _database(url: str | None) -> Iterator[Any]:
    """``make_url()`` for a new database per run: on ``url``'s server, or a throwaway one."""
    if url is not None:
        yield lambda: url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    pg_server: Any = importlib.import_module("pg_server")  # the tests' throwaway cluster
    names = iter(range(10**6))
    with pg_server.running_pg() as server:
        yield lambda: server.create_database(f"bench{next(names)}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Interleaved runs; a Markdown table."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--url", help="a PostgreSQL server to use (default: a throwaway one)")
    parser.add_argument("--players", type=int, nargs="*", default=list(PLAYERS))
    parser.add_argument("--start", type=int, metavar="PLAYERS", help="time the start instead")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(scenario(args.one, args.seconds, args.url)))
        return []
    results: list[dict[str, Any]] = []
    load = _load()
    if args.start is not None:
        with _database(args.url) as make_url:
            results = [start_times(args.start, args.runs, url) for url in (None, make_url())]
        print_start_times(results, load)
        _common.write_json(args.json, results)
        return results
    with _database(args.url) as make_url:
        for players in args.players:
            for _ in range(args.runs):
                results.append(run_child(players, args.seconds, None))
                results.append(run_child(players, args.seconds, make_url()))
    print(f"The demo world at {RATE} Hz, {args.seconds:g} s a run, {args.runs} runs a backend,")
    print(f"interleaved; median [min-max]. Load average before: {load}, after: {_load()}.")
    print()
    print(
        "| players | SQLite work p99 ms | PostgreSQL work p99 ms | PG / SQLite (pairs)"
        " | acks SQLite / PG |"
    )
    print("|---:|---:|---:|---:|---:|")
    for players in args.players:
        rows = {
            b: [r for r in results if r["players"] == players and r["backend"] == b]
            for b in ("sqlite", "pg")
        }
        p99 = {b: [r["work_p99_ms"] for r in rs] for b, rs in rows.items()}
        ratios = [pg / lite for lite, pg in zip(p99["sqlite"], p99["pg"], strict=True)]
        acks = {b: statistics.median(r["acked"] for r in rs) for b, rs in rows.items()}
        print(
            f"| {players:,} | {_spread(p99['sqlite'])} | {_spread(p99['pg'])}"
            f" | {_spread(ratios)} | {acks['sqlite']:.0f} / {acks['pg']:.0f} |"
        )
    _common.write_json(args.json, results)
    return results


def _spread(values: list[float]) -> str:
    """``median [min-max]``."""
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _load() -> str:
    """The 1-minute load average (the machine's business while the runs ran)."""
    return f"{os.getloadavg()[0]:.2f}"


if __name__ == "__main__":
    main()
