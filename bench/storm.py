"""Error storm: 10,000 errors per second recorded while the loop keeps its timing.

At ``RATE`` Hz, ``FAILING`` systems of one class each fail on every tick:
``RATE * FAILING`` = 10,000 errors per second through SafeCall (the tick
stores each failure into the pending ring and applies the restart budget;
the ``errors`` chore makes, groups, stores and folds the records after the
tick, within half the slack to the next deadline). The durable error store
(its writer process), its analytics and the alert rules of
``bench.error_store`` are on in every run, the error-free one too (``--no-store``:
all off). Runs of ``SECONDS`` each on the real clock, in this one process,
``--runs`` rounds of the five modes interleaved, each round plain and in
realtime mode (``[supervisor] realtime = true``) in turn:

- ``baseline``: the same systems, not failing;
- ``caught``: each system raises and catches its own ``ValueError`` (the
  price of raising itself, which is the plugin's, not ours);
- ``one fingerprint``: every failure from the same code site;
- ``caught_distinct``: raised at 1,000 sites and caught (the price of that);
- ``1000 fingerprints``: failures spread over 1,000 distinct code sites.

Reported, per realtime setting, as the median and the range over the
rounds: failures per second the tick saw, records made per second and
stored per second (the store's counts once the run ended), records lost and
why (``ring_full``: the pending ring was full; ``queue_full``,
``writer_failed``, ``write_failed``, ``encode_failed``: the store; nothing is
dropped without being counted), tick start lateness p50/p99 (from the
supervisor's own histogram), lateness p99 as a ratio to the error-free run
of the same round and setting (the target: within 10 %, i.e. <= 1.10), tick
work p50/p99, what one error costs the tick (work p50 of the failing run
less that of its raise-only mode, per error), the cyclic GC's collections
per second, and RSS sampled each second (first and last sample, and the
maximum), to show memory stays flat. ``uptime``'s load is printed before and
after: on a shared machine the figures are the machine's as much as ours.

Run: ``python -m bench.storm [--seconds S] [--runs N] [--realtime | --plain]
[--modes baseline,distinct] [--no-store] [--json FILE]``.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import trio

from bench import _common
from supervisor import Config, Supervisor, configure_logging
from supervisor._alerts import attach_alerts
from supervisor._store._shipper import attach_error_store
from supervisor.testing import FIXED_FACTS

RATE = 60
FAILING = 167  # 60 Hz x 167 systems = 10,020 errors/s
SECONDS = 10.0
SITES = 1000
#: Rounds of the four modes, interleaved (medians and ranges are reported).
RUNS = 3

_SITES = [compile("raise ValueError('storm')", f"<site {i}>", "exec") for i in range(SITES)]


def _fail() -> None:
    """The one failure site of the ``one`` mode."""
    raise ValueError("storm")


class Storm:
    """Fails on every tick: from one site, or from one of SITES sites in turn."""

    def __init__(self, index: int, *, mode: str) -> None:
        self.index = index
        self.mode = mode

    def tick(self, ctx: Any) -> None:
        mode = self.mode
        if mode == "baseline":
            return
        try:
            if mode.endswith("distinct"):
                exec(_SITES[(self.index + ctx.tick * FAILING) % SITES])
            _fail()
        except ValueError:
            if mode.startswith("caught"):
                return  # the system's own business: what raising costs by itself
            raise


MODES = ("baseline", "caught", "one", "caught_distinct", "distinct")
NAMES = {
    "baseline": "no errors",
    "caught": "raised and caught by the system",
    "one": "1 fingerprint",
    "caught_distinct": "raised at 1,000 sites and caught",
    "distinct": "1,000 fingerprints",
}
#: The mode whose work is the raise-only price of each failing mode.
RAISE_ONLY = {"one": "caught", "distinct": "caught_distinct"}


#: What a lost record is counted as, wherever it was lost.
LOST = ("ring_full", "sink_failed", "queue_full", "encode_failed", "writer_failed", "write_failed")


def measure(
    mode: str, seconds: float, *, realtime: bool = False, store: bool = True
) -> dict[str, Any]:
    """One run of ``seconds`` in ``mode`` (``MODES``), plain or in realtime mode."""
    from bench.error_store import ALERTS, SLO  # that bench imports this one

    config = Config.from_mapping(
        {
            # Only when asked: then this file also runs on a tree without realtime mode.
            **({"supervisor": {"realtime": True}} if realtime else {}),
            "recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0, "history": 100},
            "features": {"optimizer": False, "api": False},
            **({"alerts": ALERTS, "slo": SLO} if store else {}),
        },
        env={},
    )
    with tempfile.TemporaryDirectory() as state:
        sup = Supervisor(
            config, tick_rate=RATE, facts=FIXED_FACTS, persist=False, state_dir=Path(state)
        )
        for i in range(FAILING):
            sup.register(Storm(i, mode=mode), name=f"s{i}")
        shipper = attach_error_store(sup) if store else None
        if shipper is not None:
            attach_alerts(sup, burn_rate=shipper.slo_burn_rate)
        proc = psutil.Process()
        rss: list[int] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:

                async def sample() -> None:
                    while True:
                        rss.append(proc.memory_info().rss)
                        await trio.sleep(1.0)

                nursery.start_soon(sample)
                await sup.run(duration=seconds)
                nursery.cancel_scope.cancel()

        collections_before = sum(g["collections"] for g in gc.get_stats())
        trio.run(main)
        collections = sum(g["collections"] for g in gc.get_stats()) - collections_before
        stored = 0
        if shipper is not None:
            conn = sqlite3.connect(Path(state) / "errors.db")
            stored = conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0]
            conn.close()
    stats = sup.statistics()
    dropped = sup.errors.dropped + (shipper.dropped if shipper is not None else Counter())
    lost = {reason: dropped[reason] for reason in LOST if dropped[reason]}
    return {
        "mode": mode,
        "realtime": realtime,
        "store": store,
        "failures_per_second": (sup.errors.total + dropped["ring_full"]) / seconds,
        "errors_per_second": sup.errors.total / seconds,
        "stored_per_second": stored / seconds,
        "lost": lost,
        "lateness_p50_us": stats.lateness.p50 * 1e6,
        "lateness_p99_us": stats.lateness.p99 * 1e6,
        "work_p50_ms": stats.work.p50 * 1e3,
        "work_p99_ms": stats.work.p99 * 1e3,
        "gc_per_second": collections / seconds,
        "rss_first_mb": rss[1] / 2**20 if len(rss) > 1 else 0.0,
        "rss_last_mb": rss[-1] / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "tracebacks_skipped": sup.errors.dropped["traceback_budget"],
        "records_kept": len(sup.errors.records),
        "groups": len(sup.errors.groups()),
    }


def _spread(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of ``values``, or the one value."""
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    if len(ordered) == 1:
        return format(median, fmt)
    return f"{median:{fmt}} ({ordered[0]:{fmt}}-{ordered[-1]:{fmt}})"


def summarize(rounds: list[dict[str, dict[str, Any]]], modes: list[str]) -> list[dict[str, Any]]:
    """Per mode: the rounds' figures, and per error and per baseline the derived ones."""
    out = []
    for mode in modes:
        runs = [r[mode] for r in rounds]
        base = RAISE_ONLY.get(mode, mode)
        cost = (
            [(r[mode]["work_p50_ms"] - r[base]["work_p50_ms"]) * 1e3 / FAILING for r in rounds]
            if mode in RAISE_ONLY and base in modes
            else []
        )
        ratio = (
            [r[mode]["lateness_p99_us"] / r["baseline"]["lateness_p99_us"] for r in rounds]
            if "baseline" in modes
            else []
        )
        out.append({"mode": mode, "runs": runs, "cost_per_error_us": cost, "p99_ratio": ratio})
    return out


def _load() -> str:
    """The machine's load averages (``uptime``'s three figures)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _table(results: list[dict[str, Any]]) -> None:
    print(
        "| run | failures/s | records made/s | stored/s | lost (why) | lateness p50 µs | "
        "lateness p99 µs | p99 / no errors | work p50 ms | work p99 ms | "
        "tick cost per error µs | GC runs/s | RSS first → last (max) MB |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        runs = r["runs"]
        last = runs[-1]

        def col(key: str, fmt: str, runs: list[dict[str, Any]] = runs) -> str:
            return _spread([x[key] for x in runs], fmt)

        lost: Counter[str] = Counter()
        for x in runs:
            lost.update(x["lost"])
        lost_text = ", ".join(f"{n:,} {why}" for why, n in sorted(lost.items())) or "0"
        cost = _spread(r["cost_per_error_us"], ".1f") if r["cost_per_error_us"] else "-"
        ratio = _spread(r["p99_ratio"], ".2f") if r["p99_ratio"] else "-"
        print(
            f"| {NAMES[r['mode']]} | {col('failures_per_second', ',.0f')} | "
            f"{col('errors_per_second', ',.0f')} | {col('stored_per_second', ',.0f')} | "
            f"{lost_text} | {col('lateness_p50_us', '.0f')} | {col('lateness_p99_us', '.0f')} | "
            f"{ratio} | {col('work_p50_ms', '.3f')} | {col('work_p99_ms', '.2f')} | {cost} | "
            f"{col('gc_per_second', '.1f')} | "
            f"{last['rss_first_mb']:.1f} → {last['rss_last_mb']:.1f} ({last['rss_max_mb']:.1f}) |"
        )


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run the modes, plain and realtime, interleaved, ``--runs`` times; print Markdown tables."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--realtime", action="store_true", help="realtime mode only")
    only.add_argument("--plain", action="store_true", help="without realtime mode only")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    parser.add_argument("--no-store", action="store_true", help="error store and alerts off")
    args = parser.parse_args(argv)
    modes = [m for m in MODES if m in args.modes.split(",")]
    if not modes or len(modes) != len(args.modes.split(",")):
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    settings = [False] if args.plain else [True] if args.realtime else [False, True]
    store = not args.no_store
    # Logs go to stderr as JSON; a storm folds into a line per fingerprint per 5 s.
    configure_logging("json", "warning", stream=sys.stderr)
    print(f"Load averages before: {_load()}.")
    # Not reported: the first run in a process pays imports and first-time costs.
    measure("distinct", min(2.0, args.seconds), store=store)
    rounds: dict[bool, list[dict[str, dict[str, Any]]]] = {rt: [] for rt in settings}
    for _ in range(args.runs):
        for rt in settings:
            rounds[rt].append(
                {mode: measure(mode, args.seconds, realtime=rt, store=store) for mode in modes}
            )
    print(f"\nLoad averages after: {_load()}.")
    out = {}
    for rt in settings:
        results = summarize(rounds[rt], modes)
        print(
            f"\n{'Realtime mode' if rt else 'Plain'} (store and alerts {'on' if store else 'off'},"
            f" {args.runs} rounds of {args.seconds:g} s):\n"
        )
        _table(results)
        out["realtime" if rt else "plain"] = results
    _common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
