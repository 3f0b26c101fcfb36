"""Tick-loop benchmark: start lateness and CPU cost of fixed-rate tick loops.

Usage (from the project root)::

    python -m bench.loops [--seconds 10] [--rates 60,128] [--loops asyncio,trio] [--json FILE]

What is run
-----------
Every loop runs ticks at a fixed rate with *deadline* scheduling: tick ``k`` is due
at ``t0 + k / rate`` (never "sleep one period after the previous tick", which
drifts). Each tick calls ``tick(ctx)`` on ``NOOP_SYSTEMS`` (50) objects whose
method does nothing, so the per-tick work is identical everywhere and the numbers
show the scheduler, not the payload. The loops are:

``asyncio``
    the standard selector event loop, ``loop.call_at(deadline, cb)`` chained
    from one tick to the next;
``uvloop``
    the same code on a uvloop loop (its timers have millisecond resolution);
``twisted``
    ``twisted.internet.task.LoopingCall.withCount`` on the default reactor, with
    Twisted doing its own scheduling (it skips missed intervals; those are counted
    in ``skipped``);
``trio``
    a plain ``await trio.sleep_until(deadline)`` loop;
``ours``
    the ``supervisor`` runtime, through the ``run_ours`` hook;
``ours_rt``
    the same with ``[supervisor] realtime = true`` (SCHED_FIFO tick thread,
    memory locked, the cyclic GC between ticks: ``supervisor._core._realtime``);
``ours_rt_halt``
    (not in the default list; ``bench.realtime`` runs it) ``ours_rt`` with idle
    CPUs free to halt, ``realtime_max_wake_latency_us = -1``: realtime mode as
    it was before it held ``/dev/cpu_dma_latency``;
``busywait``
    the floor: a loop that spins on ``time.monotonic()`` until each deadline
    (a whole core burnt, no scheduler wake-up at all).

How it is measured
------------------
* Lateness of a tick = the time it actually started minus its deadline, both on
  one clock for every loop: ``time.monotonic()`` (CLOCK_MONOTONIC, ns resolution).
  Deadlines are converted to each scheduler's own clock for scheduling only:
  asyncio's ``loop.time()`` *is* ``time.monotonic()``; uvloop's is the same clock
  truncated to milliseconds; trio's ``current_time()`` is the same clock plus a
  constant offset (measured once); Twisted schedules on ``reactor.seconds()``,
  which is wall time, so its start time is mapped to the monotonic clock once, at
  the first tick.
* Ticks due in the first ``WARMUP`` (0.5 s) are run but not measured; the loop
  then runs ``--seconds`` more, so every row holds ``rate * seconds`` samples
  (fewer for Twisted when it skips ticks).
* p50, p99, p99.9 are exact nearest-rank percentiles of the sorted samples (rank
  ``ceil(p * n)``); with fewer than 1000 samples p99.9 is the maximum.
* CPU % is ``resource.getrusage(RUSAGE_SELF)`` user + system time over the
  measured interval (first measured tick to the end of the last tick) divided by
  the wall time of that interval, in percent of one core.
* Each (loop, rate) pair runs in its own child process
  (``python -m bench.loops --only LOOP --rate R --seconds S --json -``), so the
  Twisted reactor, which cannot be restarted, gets a fresh process, and each
  loop's CPU time is its own. The pairs run one after the other, never at once.

The results are printed as a Markdown table and, with ``--json FILE``, written as
JSON (``--json -`` prints only the JSON, on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, cast

import trio

SECONDS = 10.0
"""Default measured duration of each run, in seconds (after the warm-up)."""
RATES = (60, 128)
"""Default tick rates, in Hz."""
NOOP_SYSTEMS = 50
"""Number of no-op ``tick(ctx)`` callables run on every tick."""
WARMUP = 0.5
"""Ticks due in the first WARMUP seconds are run but not measured."""
LOOPS = ("asyncio", "uvloop", "twisted", "trio", "ours", "ours_rt", "busywait")
"""Every loop the benchmark knows, in table order."""
SAME_CLOCK_TOLERANCE = 0.01
"""A scheduler clock within this many seconds of time.monotonic() is taken to be it."""
CHILD_TIMEOUT_MARGIN = 30.0
"""Extra seconds a child run may take beyond its nominal duration before it is killed."""
PERCENTILES: tuple[tuple[int, int], ...] = ((50, 100), (99, 100), (999, 1000))
"""p50, p99 and p99.9 as exact fractions (numerator, denominator)."""
PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""Directory holding the ``bench`` package: the working directory of child runs."""

Status = Literal["ok", "unavailable", "error"]


class TickResult(TypedDict):
    """Outcome of one (loop, rate) run; the latency fields are None unless status is "ok"."""

    loop: str
    rate: int
    status: Status
    detail: str
    seconds: float
    samples: int
    skipped: int
    early: int
    p50_us: float | None
    p99_us: float | None
    p999_us: float | None
    max_us: float | None
    cpu_pct: float | None


class TickContext:
    """The ``ctx`` passed to every no-op system: the tick number and its deadline."""

    __slots__ = ("deadline", "tick")

    def __init__(self) -> None:
        """Start at tick 0 with a zero deadline; the loops update both fields."""
        self.tick = 0
        self.deadline = 0.0


class NoopSystem:
    """A system whose ``tick`` does nothing: the fixed per-tick payload of every loop."""

    __slots__ = ()

    def tick(self, ctx: TickContext) -> None:
        """Do nothing with ``ctx``."""


def make_systems(count: int = NOOP_SYSTEMS) -> list[NoopSystem]:
    """Return ``count`` fresh no-op systems."""
    return [NoopSystem() for _ in range(count)]


def run_systems(systems: Sequence[NoopSystem], ctx: TickContext) -> None:
    """Call ``tick(ctx)`` on every system, in order: the work done by one tick."""
    for system in systems:
        system.tick(ctx)


def cpu_seconds() -> float:
    """Return the user + system CPU time consumed so far by this process, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def clock_offset(clock: Callable[[], float]) -> float:
    """Return ``clock() - time.monotonic()``, or 0.0 if ``clock`` is the monotonic clock.

    The monotonic clock is read just before and just after ``clock`` and their
    midpoint is used, so the offset is accurate to a fraction of a microsecond.
    A clock within ``SAME_CLOCK_TOLERANCE`` of the monotonic clock (asyncio's, or
    uvloop's millisecond-truncated copy of it) is the same clock: its offset is 0.
    """
    before = time.monotonic()
    reading = clock()
    after = time.monotonic()
    offset = reading - (before + after) / 2
    return 0.0 if abs(offset) < SAME_CLOCK_TOLERANCE else offset


def nearest_rank(sorted_samples: Sequence[float], numerator: int, denominator: int) -> float:
    """Return the nearest-rank percentile ``numerator / denominator`` of sorted samples.

    The rank is ``ceil(n * numerator / denominator)`` computed in integers (so
    p99 of 600 samples is exactly rank 594), at least 1.
    """
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, -(-len(sorted_samples) * numerator // denominator))
    return sorted_samples[rank - 1]


def empty_result(loop: str, rate: int, status: Status, detail: str) -> TickResult:
    """Return a result with no measurements, for a loop that is unavailable or failed."""
    return TickResult(
        loop=loop,
        rate=rate,
        status=status,
        detail=detail,
        seconds=0.0,
        samples=0,
        skipped=0,
        early=0,
        p50_us=None,
        p99_us=None,
        p999_us=None,
        max_us=None,
        cpu_pct=None,
    )


class Recorder:
    """Collects start lateness and CPU time of one fixed-rate run.

    A loop calls ``start(t0)`` once (before or at tick 0), ``record(k, now)`` at
    the start of tick ``k`` with ``now = time.monotonic()``, and ``finish()`` after
    the last tick (``last_tick``). Ticks due before ``WARMUP`` are not recorded;
    the first recorded tick also takes the CPU and wall baseline.
    """

    def __init__(self, loop: str, rate: int, seconds: float) -> None:
        """Prepare a run of ``loop`` at ``rate`` Hz measured for ``seconds`` after warm-up."""
        self.loop = loop
        self.rate = rate
        self.period = 1.0 / rate
        self.first_measured = math.ceil(WARMUP * rate)
        self.last_tick = self.first_measured + max(1, round(seconds * rate)) - 1
        self.t0 = 0.0
        self.samples: list[float] = []
        self.skipped = 0
        self.detail = ""
        self._cpu_start: float | None = None
        self._wall_start = 0.0
        self._cpu_used = 0.0
        self._wall_used = 0.0

    def start(self, t0: float) -> None:
        """Set the monotonic time of tick 0; tick ``k`` is then due at ``t0 + k / rate``."""
        self.t0 = t0

    def deadline(self, k: int) -> float:
        """Return the monotonic deadline of tick ``k``."""
        return self.t0 + k * self.period

    def record(self, k: int, now: float) -> None:
        """Record that tick ``k`` started at monotonic time ``now`` (ignored in warm-up)."""
        if k < self.first_measured:
            return
        if self._cpu_start is None:
            self._cpu_start = cpu_seconds()
            self._wall_start = now
        self.samples.append(now - self.deadline(k))

    def skip(self, first: int, stop: int) -> None:
        """Count ticks ``first`` to ``stop - 1`` as skipped (never run), if measured."""
        self.skipped += max(0, min(stop, self.last_tick + 1) - max(first, self.first_measured))

    def finish(self) -> None:
        """Close the measured interval: take the final CPU and wall readings."""
        if self._cpu_start is None:
            return
        self._cpu_used = cpu_seconds() - self._cpu_start
        self._wall_used = time.monotonic() - self._wall_start

    def result(self) -> TickResult:
        """Return the percentiles (µs) and CPU % of the recorded run."""
        if not self.samples:
            return empty_result(self.loop, self.rate, "error", "no ticks were measured")
        ordered = sorted(self.samples)
        result = empty_result(self.loop, self.rate, "ok", self.detail)
        p50, p99, p999 = (nearest_rank(ordered, num, den) for num, den in PERCENTILES)
        result["p50_us"] = p50 * 1e6
        result["p99_us"] = p99 * 1e6
        result["p999_us"] = p999 * 1e6
        result["max_us"] = ordered[-1] * 1e6
        result["samples"] = len(ordered)
        result["skipped"] = self.skipped
        result["early"] = sum(1 for lateness in ordered if lateness < 0)
        result["seconds"] = self._wall_used
        if self._wall_used > 0:
            result["cpu_pct"] = 100.0 * self._cpu_used / self._wall_used
        return result


# --------------------------------------------------------------------------- loops


def _run_call_at(loop: asyncio.AbstractEventLoop, rec: Recorder) -> None:
    """Run ``rec``'s ticks on an asyncio-compatible ``loop`` with chained ``call_at``."""
    systems = make_systems()
    ctx = TickContext()
    done: asyncio.Future[None] = loop.create_future()
    offset = clock_offset(loop.time)

    def on_tick(k: int) -> None:
        now = time.monotonic()
        rec.record(k, now)
        ctx.tick = k
        ctx.deadline = rec.deadline(k)
        run_systems(systems, ctx)
        if k >= rec.last_tick:
            rec.finish()
            done.set_result(None)
            return
        loop.call_at(rec.deadline(k + 1) + offset, on_tick, k + 1)

    rec.start(time.monotonic())
    loop.call_at(rec.deadline(0) + offset, on_tick, 0)
    try:
        loop.run_until_complete(done)
    finally:
        loop.close()


def run_asyncio(rate: int, seconds: float) -> TickResult:
    """Measure the standard asyncio event loop scheduling ticks with ``loop.call_at``."""
    rec = Recorder("asyncio", rate, seconds)
    loop = asyncio.new_event_loop()
    rec.detail = type(loop).__name__
    _run_call_at(loop, rec)
    return rec.result()


def run_uvloop(rate: int, seconds: float) -> TickResult:
    """Measure a uvloop event loop scheduling ticks with ``loop.call_at``."""
    try:
        import uvloop
    except ImportError as exc:
        return empty_result("uvloop", rate, "unavailable", f"uvloop not importable: {exc}")
    rec = Recorder("uvloop", rate, seconds)
    loop = cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
    rec.detail = f"uvloop {getattr(uvloop, '__version__', '?')}"
    _run_call_at(loop, rec)
    return rec.result()


class _Reactor(Protocol):
    """The part of the Twisted reactor the benchmark uses."""

    def seconds(self) -> float:
        """Return the reactor's (wall-clock) time."""
        ...

    def callWhenRunning(self, callable: Callable[[], object]) -> object:
        """Call ``callable`` once the reactor runs."""
        ...

    def run(self) -> None:
        """Run the reactor until ``stop``."""
        ...

    def stop(self) -> None:
        """Stop the reactor."""
        ...


def run_twisted(rate: int, seconds: float) -> TickResult:
    """Measure Twisted's ``LoopingCall.withCount`` on the default reactor.

    Twisted schedules on its own (wall) clock; lateness is measured on the
    monotonic clock against ``t0 + k / rate``, where ``t0`` is LoopingCall's start
    time mapped to the monotonic clock at the first call, and ``k`` advances by
    the count LoopingCall passes (more than 1 when it skipped intervals; skipped
    ticks past the warm-up are counted in ``skipped``, not measured). The reactor
    can run only once per process, so call this at most once per process.
    """
    try:
        from twisted.internet import reactor as installed_reactor
        from twisted.internet.task import LoopingCall
        from twisted.python.failure import Failure
    except ImportError as exc:
        return empty_result("twisted", rate, "unavailable", f"twisted not importable: {exc}")
    reactor = cast(_Reactor, installed_reactor)
    rec = Recorder("twisted", rate, seconds)
    rec.detail = type(reactor).__name__
    systems = make_systems()
    ctx = TickContext()
    errors: list[str] = []
    k = -1

    def on_count(count: int) -> None:
        nonlocal k
        now = time.monotonic()
        if k < 0:
            # First call: map LoopingCall's wall-clock start time onto the monotonic
            # clock, and number the tick with LoopingCall's own interval arithmetic
            # (float rounding can make it skip interval 0 despite now=True).
            wall, mono = reactor.seconds(), time.monotonic()
            assert call.starttime is not None
            rec.start(mono - (wall - call.starttime))
            k = int((wall - call.starttime) / rec.period)
            rec.skip(0, k)
        else:
            rec.skip(k + 1, k + count)
            k += count
        if k <= rec.last_tick:
            rec.record(k, now)
        ctx.tick = k
        ctx.deadline = rec.deadline(k)
        run_systems(systems, ctx)
        if k >= rec.last_tick:
            rec.finish()
            call.stop()
            reactor.stop()

    def on_error(failure: Failure) -> None:
        errors.append(failure.getTraceback())
        reactor.stop()

    call = LoopingCall.withCount(on_count)

    def begin() -> None:
        call.start(1.0 / rate, now=True).addErrback(on_error)

    reactor.callWhenRunning(begin)
    reactor.run()
    if errors:
        return empty_result("twisted", rate, "error", errors[0])
    return rec.result()


async def _trio_ticks(rec: Recorder) -> None:
    """Run ``rec``'s ticks in a ``trio.sleep_until(deadline)`` loop."""
    systems = make_systems()
    ctx = TickContext()
    offset = clock_offset(trio.current_time)
    rec.start(time.monotonic())
    k = 0
    while True:
        await trio.sleep_until(rec.deadline(k) + offset)
        rec.record(k, time.monotonic())
        ctx.tick = k
        ctx.deadline = rec.deadline(k)
        run_systems(systems, ctx)
        if k >= rec.last_tick:
            rec.finish()
            return
        k += 1


def run_trio(rate: int, seconds: float) -> TickResult:
    """Measure a plain trio loop that awaits ``trio.sleep_until`` each deadline."""
    rec = Recorder("trio", rate, seconds)
    rec.detail = f"trio {trio.__version__}"
    trio.run(_trio_ticks, rec)
    return rec.result()


def run_busywait(rate: int, seconds: float) -> TickResult:
    """Measure the floor: spin on ``time.monotonic()`` until each deadline, then tick."""
    rec = Recorder("busywait", rate, seconds)
    rec.detail = "spins on time.monotonic()"
    systems = make_systems()
    ctx = TickContext()
    monotonic = time.monotonic
    rec.start(monotonic())
    for k in range(rec.last_tick + 1):
        deadline = rec.deadline(k)
        now = monotonic()
        while now < deadline:
            now = monotonic()
        rec.record(k, now)
        ctx.tick = k
        ctx.deadline = deadline
        run_systems(systems, ctx)
    rec.finish()
    return rec.result()


def run_ours_rt(rate: int, seconds: float) -> TickResult:
    """Measure our runtime in realtime mode (see ``run_ours``)."""
    return run_ours(rate, seconds, realtime=True)


def run_ours_rt_halt(rate: int, seconds: float) -> TickResult:
    """Realtime mode with idle CPUs left free to halt (``realtime_max_wake_latency_us = -1``)."""
    return run_ours(rate, seconds, realtime=True, wake_latency_us=-1)


def run_ours(
    rate: int, seconds: float, *, realtime: bool = False, wake_latency_us: int = 0
) -> TickResult:
    """Measure our ``supervisor`` runtime with ``NOOP_SYSTEMS`` no-op systems.

    A probe system, ticked first (lowest priority), records when each tick
    really started against the supervisor's own deadline for it (``ctx.now``,
    on trio's clock, which is ``time.monotonic()`` plus a fixed offset on
    Linux), so the figure includes the loop's own overhead up to the first
    system step. The probe is the 51st system; the work is otherwise the same
    50 no-op calls as in the other loops.
    """

    from supervisor import Config, Supervisor, configure_logging

    name = "ours" if not realtime else "ours_rt" if wake_latency_us == 0 else "ours_rt_halt"
    rec = Recorder(name, rate, seconds)

    class Probe:
        priority = -1_000_000

        def __init__(self) -> None:
            self.offset = 0.0

        def tick(self, ctx: Any) -> None:
            now = time.monotonic()
            if ctx.tick == 0:
                self.offset = trio.current_time() - now
                rec.start(ctx.now - self.offset)
            rec.record(ctx.tick, now)

    config = Config.from_mapping(
        {
            "supervisor": {
                "tick_rate": rate,
                "realtime": realtime,
                "realtime_max_wake_latency_us": wake_latency_us,
            },
            "features": {"optimizer": False},
        },
        env={},
    )
    configure_logging("json", "warning", stream=sys.stderr)
    sup = Supervisor(config, persist=False)
    sup.register(Probe(), name="probe")
    for i, system in enumerate(make_systems()):
        sup.register(system, name=f"noop{i}")
    trio.run(functools.partial(sup.run, ticks=rec.last_tick + 1))
    rec.finish()
    if realtime:
        applied = sup.status().as_dict()["realtime"]
        wake = applied["max_wake_latency_us"]
        rec.detail = (
            f"{applied['policy']}, memory locked: {applied['memory_locked']}, idle CPUs "
            + ("free to halt" if wake is None else f"held to a {wake} µs wake-up")
            + (f"; {'; '.join(applied['problems'])}" if applied["problems"] else "")
        )
    return rec.result()


RUNNERS: dict[str, Callable[[int, float], TickResult]] = {
    "asyncio": run_asyncio,
    "uvloop": run_uvloop,
    "twisted": run_twisted,
    "trio": run_trio,
    "ours": run_ours,
    "ours_rt": run_ours_rt,
    "ours_rt_halt": run_ours_rt_halt,
    "busywait": run_busywait,
}
"""The function measuring each loop in the current process, by loop name."""


# --------------------------------------------------------------------------- driver


def run_isolated(loop: str, rate: int, seconds: float) -> TickResult:
    """Measure ``loop`` at ``rate`` Hz in a fresh child process and return its result."""
    command = [
        sys.executable,
        "-m",
        "bench.loops",
        "--only",
        loop,
        "--rate",
        str(rate),
        "--seconds",
        repr(seconds),
        "--json",
        "-",
    ]
    timeout = WARMUP + seconds + CHILD_TIMEOUT_MARGIN
    try:
        proc = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return empty_result(loop, rate, "error", f"child timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return empty_result(loop, rate, "error", tail[0])
    try:
        payload = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return empty_result(loop, rate, "error", f"bad JSON from child: {exc}")
    if not isinstance(payload, dict) or payload.get("loop") != loop:
        return empty_result(loop, rate, "error", "unexpected JSON from child")
    return cast(TickResult, payload)


def _cell(value: float | None) -> str:
    """Format one table number, or a dash when there is none."""
    return "-" if value is None else f"{value:.1f}"


def format_table(results: Sequence[TickResult]) -> str:
    """Return the results as a Markdown table, one row per (loop, rate)."""
    lines = [
        "| loop | rate Hz | p50 µs | p99 µs | p99.9 µs | max µs | CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['loop']} | {r['rate']} | {r['status']} | - | - | - | - |")
            continue
        cells = [r["p50_us"], r["p99_us"], r["p999_us"], r["max_us"], r["cpu_pct"]]
        lines.append(f"| {r['loop']} | {r['rate']} | " + " | ".join(map(_cell, cells)) + " |")
    notes = [
        f"- {r['loop']} @ {r['rate']} Hz: {r['status']}: {r['detail']}"
        for r in results
        if r["status"] != "ok"
    ]
    return "\n".join(lines + (["", *notes] if notes else []))


def _parse_list(text: str, kind: Callable[[str], object]) -> list[str]:
    """Split a comma-separated option, check each item with ``kind``, drop empties."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        kind(item)
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.loops",
        description="Compare tick-start lateness and CPU cost of fixed-rate tick loops.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS,
        help=f"measured seconds per run, after {WARMUP} s of warm-up (default {SECONDS})",
    )
    parser.add_argument(
        "--rates",
        default=",".join(map(str, RATES)),
        help="comma-separated tick rates in Hz (default %(default)s)",
    )
    parser.add_argument(
        "--loops",
        default=",".join(LOOPS),
        help="comma-separated loops to run (default %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write JSON to FILE ('-': stdout only)")
    parser.add_argument(
        "--only",
        choices=tuple(RUNNERS),
        help="run one loop in this process (what the child processes do)",
    )
    parser.add_argument("--rate", type=int, help="tick rate in Hz for --only")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        args.rate_list = [int(r) for r in _parse_list(args.rates, int)]
    except ValueError:
        parser.error(f"--rates must be integers: {args.rates!r}")
    if args.only is not None:
        if args.rate is None:
            parser.error("--only needs --rate")
        args.rate_list = [args.rate]
    if any(rate <= 0 for rate in args.rate_list):
        parser.error("rates must be positive")
    args.loop_list = [args.only] if args.only else _parse_list(args.loops, str)
    unknown = sorted(set(args.loop_list) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown loops {unknown}; choose from {', '.join(LOOPS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the results; return the exit code."""
    args = parse_args(argv)
    seconds: float = args.seconds
    if args.only is not None:
        result = RUNNERS[args.only](args.rate, seconds)
        if args.json == "-":
            print(json.dumps(result))
        else:
            print(format_table([result]))
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    results: list[TickResult] = []
    for loop in args.loop_list:
        for rate in args.rate_list:
            if args.json != "-":
                print(f"running {loop} at {rate} Hz for {WARMUP + seconds:g} s", file=sys.stderr)
            results.append(run_isolated(loop, rate, seconds))
    report = {
        "seconds": seconds,
        "warmup": WARMUP,
        "noop_systems": NOOP_SYSTEMS,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
