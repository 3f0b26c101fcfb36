"""Error storm: 10,000 errors per second recorded while the loop keeps its timing.

At ``RATE`` Hz, ``FAILING`` systems of one class each fail on every tick:
``RATE * FAILING`` = 10,000 errors per second through SafeCall (the tick
stores each failure into the pending ring and applies the restart budget;
the ``errors`` chore makes, groups, stores and folds the records after the
tick). Runs of ``SECONDS`` each on the real clock, in this one process,
``--runs`` rounds of the four modes interleaved:

- ``baseline``: the same systems, not failing;
- ``caught``: each system raises and catches its own ``ValueError`` (the
  price of raising itself, which is the plugin's, not ours);
- ``one fingerprint``: every failure from the same code site;
- ``caught_distinct``: raised at 1,000 sites and caught (the price of that);
- ``1000 fingerprints``: failures spread over 1,000 distinct code sites.

Reported, as the median and the range over the rounds: errors per second
recorded, tick start lateness p50/p99 (from the supervisor's own
histogram), tick work p50/p99, what one error costs the tick (work p50 of
the failing run less that of its raise-only mode, per error), lateness p99 as a
ratio to the error-free run of the same round, and RSS sampled each second
(first and last sample, and the maximum), to show memory stays flat.
``--realtime`` runs every mode with ``[supervisor] realtime = true``.

Run: ``python -m bench.storm [--seconds S] [--runs N] [--realtime] [--json FILE]``.
"""

from __future__ import annotations

import sys
from typing import Any

import psutil
import trio

from bench import _common
from supervisor import Config, Supervisor, configure_logging
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


def measure(mode: str, seconds: float, *, realtime: bool = False) -> dict[str, Any]:
    """One run of ``seconds`` in ``mode``: baseline | caught | one | distinct."""
    config = Config.from_mapping(
        {
            # Only when asked: then this file also runs on a tree without realtime mode.
            **({"supervisor": {"realtime": True}} if realtime else {}),
            "recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0, "history": 100},
            "features": {"optimizer": False},
        },
        env={},
    )
    sup = Supervisor(config, tick_rate=RATE, facts=FIXED_FACTS, persist=False)
    for i in range(FAILING):
        sup.register(Storm(i, mode=mode), name=f"s{i}")
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

    trio.run(main)
    stats = sup.statistics()
    return {
        "mode": mode,
        "realtime": realtime,
        "errors_per_second": sup.errors.total / seconds,
        "lateness_p50_us": stats.lateness.p50 * 1e6,
        "lateness_p99_us": stats.lateness.p99 * 1e6,
        "work_p50_ms": stats.work.p50 * 1e3,
        "work_p99_ms": stats.work.p99 * 1e3,
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


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per mode: the rounds' figures, and per error and per baseline the derived ones."""
    out = []
    for mode in MODES:
        runs = [r[mode] for r in rounds]
        base = RAISE_ONLY.get(mode, mode)
        cost = [(r[mode]["work_p50_ms"] - r[base]["work_p50_ms"]) * 1e3 / FAILING for r in rounds]
        ratio = [r[mode]["lateness_p99_us"] / r["baseline"]["lateness_p99_us"] for r in rounds]
        out.append({"mode": mode, "runs": runs, "cost_per_error_us": cost, "p99_ratio": ratio})
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the modes, interleaved, ``--runs`` times and print a Markdown table."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--realtime", action="store_true", help="[supervisor] realtime = true")
    args = parser.parse_args(argv)
    # Logs go to stderr as JSON; a storm folds into a line per fingerprint per 5 s.
    configure_logging("json", "warning", stream=sys.stderr)
    rounds = [
        {mode: measure(mode, args.seconds, realtime=args.realtime) for mode in MODES}
        for _ in range(args.runs)
    ]
    results = summarize(rounds)
    print(
        "| run | errors/s | lateness p50 µs | lateness p99 µs | p99 / no errors | "
        "work p50 ms | work p99 ms | tick cost per error µs | RSS first → last (max) MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        runs = r["runs"]
        last = runs[-1]

        def col(key: str, fmt: str, runs: list[dict[str, Any]] = runs) -> str:
            return _spread([x[key] for x in runs], fmt)

        cost = (
            "-" if r["mode"] in ("baseline", "caught") else _spread(r["cost_per_error_us"], ".1f")
        )
        print(
            f"| {NAMES[r['mode']]} | {col('errors_per_second', ',.0f')} | "
            f"{col('lateness_p50_us', '.0f')} | {col('lateness_p99_us', '.0f')} | "
            f"{_spread(r['p99_ratio'], '.2f')} | {col('work_p50_ms', '.3f')} | "
            f"{col('work_p99_ms', '.2f')} | {cost} | "
            f"{last['rss_first_mb']:.1f} → {last['rss_last_mb']:.1f} ({last['rss_max_mb']:.1f}) |"
        )
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
