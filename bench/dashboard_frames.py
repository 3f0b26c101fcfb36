"""Dashboard stream: what the broadcaster costs the loop, idle and with many dashboards open.

Two figures (issue 12, server side; the browser-level figure with real pages
is ``bench/dashboard.py``):

* **publish cost**: the time ``Broadcaster.publish()`` holds the loop (once
  a second): idle (no dashboard open: one point from the histograms, no
  status, no JSON), and with 100 subscribers each piece between two of its
  checkpoints (the point; the frame: one status, one JSON; one slice of
  offers to ``FANOUT_SLICE`` queues). Demo world (players, economy, tycoon,
  leaderboard) plus a system failing every 7th tick, so errors are in the frame.
* **tick lateness**: p99 and max of the tick's lateness over runs at 60 Hz
  with no broadcaster, with the broadcaster and no subscriber, and with 100
  in-memory subscribers drained as a client would, interleaved (A, B, C, A,
  B, C, ...).

    python -m bench.dashboard_frames [--runs 3] [--seconds 10] [--json FILE]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

from bench._common import parser, write_json
from supervisor import configure_logging
from supervisor._server._events import FANOUT_SLICE, Broadcaster
from supervisor.testing import make_supervisor
from systems.economy import Economy
from systems.leaderboard import Leaderboard
from systems.players import Players
from systems.tycoon import Tycoon

TICK_RATE = 60.0
SUBSCRIBERS = 100


class Sometimes:
    """Fails every 7th tick: the frame then has error records and a trend."""

    name = "sometimes"

    def __init__(self) -> None:
        self.n = 0

    def tick(self, ctx: Any) -> None:
        self.n += 1
        if self.n % 7 == 0:
            raise ValueError(f"odd tick {self.n}")


def _world() -> Any:
    return make_supervisor(
        [Players(), Economy(), Tycoon(), Leaderboard(), Sometimes()], tick_rate=TICK_RATE
    )


async def _drain(sub: Any) -> None:
    async for _ in sub.receive:
        pass


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


async def publish_cost(samples: int) -> dict[str, Any]:
    """Time publish() idle and with SUBSCRIBERS, on a running demo world."""
    sup = _world()
    b = Broadcaster(sup)
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: sup.run(duration=samples * 0.1 * 2 + 3))
        await trio.sleep(1.5)
        idle = []
        for _ in range(samples):
            t = time.perf_counter()
            await b.publish()
            idle.append(time.perf_counter() - t)
            await trio.sleep(0.1)
        subs = [b.subscribe(10_000) for _ in range(SUBSCRIBERS)]
        for sub in subs:
            nursery.start_soon(_drain, sub)
        # With subscribers, publish() yields between its pieces: each piece
        # is what blocks the loop, so each is timed on its own.
        pieces: dict[str, list[float]] = {"point": [], "frame": [], "offer_slice": []}
        for _ in range(samples):
            t = time.perf_counter()
            b.take_point()
            pieces["point"].append(time.perf_counter() - t)
            t = time.perf_counter()
            event = b.frame()
            pieces["frame"].append(time.perf_counter() - t)
            live = [s for s in subs if s is not None]
            t = time.perf_counter()
            b.offer(event, live[:FANOUT_SLICE])
            pieces["offer_slice"].append(time.perf_counter() - t)
            b.offer(event, live[FANOUT_SLICE:])
            await trio.sleep(0.1)
        out = {
            "idle": _stats(idle),
            **{f"{SUBSCRIBERS}_subscribers_{k}": _stats(v) for k, v in pieces.items()},
            "frame_bytes": len(b.frame()),
            "dropped": b.dropped,
        }
        for sub in subs:
            if sub is not None:
                sub.send.close()
    return out


async def lateness(variant: str, seconds: float) -> dict[str, float]:
    """One run of the demo world at 60 Hz; the broadcaster as ``variant`` says."""
    sup = _world()
    async with trio.open_nursery() as nursery:
        if variant != "none":
            b = Broadcaster(sup)
            sup.services.append(b.broadcast)
            if variant == "100 subscribers":
                for _ in range(SUBSCRIBERS):
                    sub = b.subscribe(10_000)
                    assert sub is not None
                    nursery.start_soon(_drain, sub)
        summary = await sup.run(duration=seconds)
        nursery.cancel_scope.cancel()
    return {"p99_ms": summary.lateness.p99 * 1e3, "max_ms": summary.lateness.max * 1e3}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=30)
    args = p.parse_args()
    configure_logging(level="critical")
    figures: dict[str, Any] = {"publish": trio.run(publish_cost, args.samples)}
    print("publish():", figures["publish"])
    variants = ("none", "idle broadcaster", "100 subscribers")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for i in range(args.runs):
        for v in variants:
            runs[v].append(trio.run(lateness, v, args.seconds))
            print(f"run {i + 1} {v:>17}: lateness p99 {runs[v][-1]['p99_ms']:.3f} ms")
    figures["lateness"] = {
        v: {
            "p99_ms": [round(r["p99_ms"], 3) for r in rs],
            "max_ms": [round(r["max_ms"], 3) for r in rs],
            "p99_median_ms": round(statistics.median(r["p99_ms"] for r in rs), 3),
        }
        for v, rs in runs.items()
    }
    for v, f in figures["lateness"].items():
        print(f"{v:>17}: p99 median {f['p99_median_ms']} ms, runs {f['p99_ms']}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
