"""Error storm: 10,000 errors per second recorded while the loop keeps its timing.

At ``RATE`` Hz, ``FAILING`` systems of one class each fail on every tick:
``RATE * FAILING`` = 10,000 errors per second through SafeCall (record,
restart budget, fold the log line). Three runs of ``SECONDS`` each on the
real clock, in this one process:

- ``baseline``: the same systems, not failing;
- ``one fingerprint``: every failure from the same code site;
- ``1000 fingerprints``: failures spread over 1,000 distinct code sites.

Reported: errors per second recorded, tick start lateness p50/p99 (from the
supervisor's own histogram), tick work p99, and RSS sampled each second
(first and last sample, and the maximum), to show memory stays flat.

Run: ``python -m bench.storm [--seconds S] [--json FILE]``.
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

_SITES = [compile("raise ValueError('storm')", f"<site {i}>", "exec") for i in range(SITES)]


class Storm:
    """Fails on every tick: from one site, or from one of SITES sites in turn."""

    def __init__(self, index: int, *, fail: bool, distinct: bool) -> None:
        self.index = index
        self.fail = fail
        self.distinct = distinct

    def tick(self, ctx: Any) -> None:
        if not self.fail:
            return
        if self.distinct:
            exec(_SITES[(self.index + ctx.tick * FAILING) % SITES])
        raise ValueError("storm")


def measure(mode: str, seconds: float) -> dict[str, Any]:
    """One run of ``seconds`` in ``mode``: baseline | one | distinct."""
    config = Config.from_mapping(
        {
            "recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0, "history": 100},
            "features": {"optimizer": False},
        },
        env={},
    )
    sup = Supervisor(config, tick_rate=RATE, facts=FIXED_FACTS, persist=False)
    for i in range(FAILING):
        sup.register(Storm(i, fail=mode != "baseline", distinct=mode == "distinct"), name=f"s{i}")
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
        "errors_per_second": sup.errors.total / seconds,
        "lateness_p50_us": stats.lateness.p50 * 1e6,
        "lateness_p99_us": stats.lateness.p99 * 1e6,
        "work_p99_ms": stats.work.p99 * 1e3,
        "rss_first_mb": rss[1] / 2**20 if len(rss) > 1 else 0.0,
        "rss_last_mb": rss[-1] / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "tracebacks_skipped": sup.errors.dropped["traceback_budget"],
        "records_kept": len(sup.errors.records),
        "groups": len(sup.errors.groups()),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the three modes and print a Markdown table."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    # Logs go to stderr as JSON; a storm folds into a line per fingerprint per 5 s.
    configure_logging("json", "warning", stream=sys.stderr)
    results = [measure(mode, args.seconds) for mode in ("baseline", "one", "distinct")]
    names = {"baseline": "no errors", "one": "1 fingerprint", "distinct": "1,000 fingerprints"}
    print(
        "| run | errors/s | lateness p50 µs | lateness p99 µs | work p99 ms | "
        "RSS first → last (max) MB |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {names[r['mode']]} | {r['errors_per_second']:,.0f} | {r['lateness_p50_us']:.0f} | "
            f"{r['lateness_p99_us']:.0f} | {r['work_p99_ms']:.2f} | "
            f"{r['rss_first_mb']:.1f} → {r['rss_last_mb']:.1f} ({r['rss_max_mb']:.1f}) |"
        )
    _common.write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
