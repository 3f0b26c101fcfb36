"""Open dashboards must not move ticks: lateness p99 with 5 live dashboards vs none.

Runs of ``supervisor run --duration SECONDS`` as a subprocess (the real
command) on the demo world at 60 Hz, its API on a loopback TCP port, taken in
turn (none, 5, none, 5, ...: ``RUNS`` pairs, so the machine's drift hits both
sides alike):

* **none**: nobody watches;
* **5 dashboards**: ``DASHBOARDS`` clients each log in through the form
  (``POST /dashboard/login``, as the page does) and hold the page's live
  stream ``GET /dashboard/events`` with the session cookie for the whole run,
  reading every frame — what an open browser tab costs the server. A browser
  also renders, but on its own CPU, not the supervisor's.

Each run's ``--summary-json`` gives its tick start lateness; the clients give
the frames they got and the longest gap between two frames (the page promises
an update at least once a second).

Run: ``python -m bench.dashboard [--seconds S] [--runs N] [--dashboards N] [--json FILE]``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import trio

from bench import _common, held_connections, serve

SECONDS = 20.0
RATE = 60
RUNS = 3
DASHBOARDS = 5


async def _watch(base: str, token: str, gaps: list[float], counts: list[int]) -> None:
    """Log in through the form, then read the event stream until cancelled."""
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10.0)) as client:
        login = await client.post("/dashboard/login", data={"token": token})
        if login.status_code != 303:
            raise RuntimeError(f"login answered {login.status_code}: {login.text[:200]}")
        last = None
        frames = 0
        try:
            async with client.stream("GET", "/dashboard/events") as stream:
                async for line in stream.aiter_lines():
                    if line == "event: frame":
                        now = time.monotonic()
                        if last is not None:
                            gaps.append(now - last)
                        last = now
                        frames += 1
        finally:
            counts.append(frames)


async def _watch_all(port: int, token: str, dashboards: int, seconds: float) -> dict[str, Any]:
    gaps: list[float] = []
    counts: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(dashboards):
            nursery.start_soon(_watch, f"http://127.0.0.1:{port}", token, gaps, counts)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return {
        "frames_per_client": counts,
        "max_gap_s": max(gaps, default=float("nan")),
    }


def run(seconds: float, rate: int, dashboards: int) -> dict[str, Any]:
    """One supervisor run watched by ``dashboards`` live streams (0: nobody watches)."""
    result = held_connections.run_on_tcp(
        seconds,
        rate,
        held_connections.MAX_CONNECTIONS,
        lambda port, token: trio.run(_watch_all, port, token, dashboards, seconds),
    )
    result["dashboards"] = dashboards
    return result


def _span(values: list[float]) -> str:
    return f"{min(values):.0f} to {max(values):.0f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The interleaved runs, a Markdown table of each, and the ranges."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rate", type=int, default=RATE)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--dashboards", type=int, default=DASHBOARDS)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {"none": [], "watched": []}
    for _ in range(args.runs):
        results["none"].append(run(args.seconds, args.rate, 0))
        results["watched"].append(run(args.seconds, args.rate, args.dashboards))
    print(
        f"systems: {', '.join(serve._systems())} at {args.rate} Hz, {args.seconds:g} s each, "
        f"{args.runs} runs per side, interleaved; load average {os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        "| run | dashboards | lateness p50 µs | p99 µs | max µs | frames per client "
        "| longest frame gap s | supervisor CPU % |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for i in range(args.runs):
        for side in ("none", "watched"):
            r = results[side][i]
            lat = r["lateness"]
            frames = ", ".join(map(str, r["frames_per_client"])) or "-"
            gap = "-" if r["dashboards"] == 0 else f"{r['max_gap_s']:.2f}"
            print(
                f"| {i + 1} | {r['dashboards']} | {lat['p50'] * 1e6:.0f} | {lat['p99'] * 1e6:.0f} "
                f"| {lat['max'] * 1e6:.0f} | {frames} | {gap} | {r['cpu_percent']:.1f} |"
            )
    p99 = {side: [r["lateness"]["p99"] * 1e6 for r in rs] for side, rs in results.items()}
    print()
    print(
        f"lateness p99, µs: none {_span(p99['none'])}, "
        f"{args.dashboards} dashboards {_span(p99['watched'])}"
    )
    figures = {"runs": results, "p99_us": p99}
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
