"""Held connections must not move ticks: lateness idle vs with 600 held API connections.

Two runs of ``supervisor run --duration SECONDS`` as a subprocess (the real
command) on the demo world at 60 Hz, its API on a loopback TCP port:

* **idle**: nobody connects but a ``/healthz`` prober (one request on a fresh
  connection every ``PROBE_EVERY`` seconds);
* **held**: the same prober, plus ``HELD`` connections held by this process,
  half of them idle (they send nothing) and half slowloris (one byte of a
  request head every second). A held connection the server closes is opened
  again after ``REOPEN_AFTER`` seconds, so the pressure lasts the whole run.

Each run's ``--summary-json`` gives its tick start lateness; the prober gives
``/healthz`` latency and how many probes got no answer; ``/metrics`` (read
with a token at the end) gives the API's connection counters.

With ``--runs N`` the two runs alternate N times (idle, held, idle, held...),
so a change in the machine's load falls on both; the figures are the median
and range of the N runs, and the ratio is the held p99 over the idle p99 of
each pair. The load average is printed before and after: on a shared machine
the figures are noise.

``--without-fair-slice`` starts the supervisor with the tick thread's short
fair-scheduler slice turned off (``supervisor._core._slice``), for the
before/after comparison in the README.

Run: ``python -m bench.held_connections [--seconds S] [--held N] [--runs N]
[--without-fair-slice] [--json FILE]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from bench import _common, serve

SECONDS = 15.0
RATE = 60
HELD = 600
#: ``[api] max_connections`` of the runs: the shipped default.
MAX_CONNECTIONS = 256
PROBE_EVERY = 0.1
REOPEN_AFTER = 1.0
SLOWLORIS_HEAD = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Pad: " + b"a" * 200
EVICTED = 'connections_total{outcome="evicted"}'
ACCEPTED = 'connections_total{outcome="accepted"}'
PAUSES = "accept_pauses_total"
HEADER_TIMEOUTS = 'timeouts_total{kind="header"}'
# bench.serve's config, on loopback TCP, with a token to read /metrics at the end.
CONFIG = (
    serve.CONFIG.replace('listen = "unix:{sock}"', 'listen = "127.0.0.1:{port}"')
    + 'tokens = [{{ name = "bench", role = "viewer", sha256 = "{digest}" }}]\n'
    + "max_connections = {max_connections}\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _probe(port: int, latencies: list[float], failures: list[str]) -> None:
    """GET /healthz on a fresh connection every PROBE_EVERY seconds, until cancelled."""
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    while True:
        started = time.perf_counter()
        try:
            with trio.fail_after(5):
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(request)
                    answer = b""
                    while chunk := await stream.receive_some(4096):
                        answer += chunk
            if answer.startswith(b"HTTP/1.1 200 "):
                latencies.append(time.perf_counter() - started)
            else:
                failures.append(answer[:40].decode("latin-1") or "closed")
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            failures.append(type(exc).__name__)
        await trio.sleep(PROBE_EVERY)


async def _hold(port: int, slowloris: bool, opened: list[int]) -> None:
    """Keep one connection open (idle, or a slowloris head), reopening it when closed."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(REOPEN_AFTER)
            continue
        opened[0] += 1
        async with stream:
            try:
                if slowloris:
                    for byte in SLOWLORIS_HEAD:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(1.0)
                else:
                    while await stream.receive_some(4096):
                        pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.sleep(REOPEN_AFTER)


async def _attack(port: int, held: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    opened = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_probe, port, latencies, failures)
        for i in range(held):
            nursery.start_soon(_hold, port, i % 2 == 1, opened)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return {
        "probes": len(latencies),
        "probe_failures": len(failures),
        "probe_failure_kinds": sorted(set(failures)),
        "healthz_p50_ms": _percentile(latencies, 0.5) * 1e3,
        "healthz_p99_ms": _percentile(latencies, 0.99) * 1e3,
        "connections_opened": opened[0],
    }


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _api_counters(port: int, token: str) -> dict[str, float]:
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"authorization": f"Bearer {token}"},
        timeout=5,
    ).text
    out = {}
    for line in text.splitlines():
        if line.startswith("supervisor_api_"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("supervisor_api_")] = float(value)
    return out


#: ``supervisor`` with the tick thread's fair slice turned off (the comparison).
_WITHOUT_FAIR_SLICE = (
    "import sys; from supervisor._core import _slice; "
    "_slice.FairSlice.enter = lambda self: None; "
    "from supervisor._cli._main import main; sys.argv[0] = 'supervisor'; main()"
)


def supervisor_command(*, fair_slice: bool = True) -> list[str]:
    """The ``supervisor`` command of this virtualenv, or the same without the fair slice."""
    if fair_slice:
        return [str(Path(sys.executable).parent / "supervisor")]
    return [sys.executable, "-c", _WITHOUT_FAIR_SLICE]


#: What a run does while the supervisor runs: ``(port, token) -> figures``.
During = Callable[[int, str], dict[str, Any]]


def run_on_tcp(
    seconds: float,
    rate: int,
    max_connections: int,
    during: During,
    *,
    after: During | None = None,
    fair_slice: bool = True,
) -> dict[str, Any]:
    """One ``supervisor run`` of the bench world on a free loopback port, with a token.

    ``during(port, token)`` runs once the API listens (for about ``seconds``);
    the supervisor's CPU share over ``seconds`` is added to its figures, then
    those of ``after(port, token)``, and the run's summary.
    """
    token = secrets.token_urlsafe(16)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "bench.toml")
        cfg.write_text(
            CONFIG.format(
                rate=rate,
                state=tmp,
                port=port,
                systems=json.dumps(serve._systems()),
                digest=hashlib.sha256(token.encode()).hexdigest(),
                max_connections=max_connections,
            ),
            encoding="utf-8",
        )
        summary = Path(tmp, "summary.json")
        # A little longer than the attack, so the counters can be read before it ends.
        proc = subprocess.Popen(
            [
                *supervisor_command(fair_slice=fair_slice),
                *("run", "--config", str(cfg), "--duration", str(seconds + 3)),
                *("--summary-json", str(summary), "--log-format", "json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            cpu_before = _cpu_seconds(proc.pid)
            figures = during(port, token)
            figures["cpu_percent"] = 100 * (_cpu_seconds(proc.pid) - cpu_before) / seconds
            if after is not None:
                figures.update(after(port, token))
            proc.wait(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        result: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
    result.update(figures)
    result["crashed"] = proc.returncode != 0
    return result


def run(
    seconds: float, rate: int, held: int, max_connections: int, *, fair_slice: bool = True
) -> dict[str, Any]:
    """One supervisor run with ``held`` connections held against it (0: only the prober)."""
    return run_on_tcp(
        seconds,
        rate,
        max_connections,
        lambda port, token: trio.run(_attack, port, held, seconds),
        after=lambda port, token: {"api": _api_counters(port, token)},
        fair_slice=fair_slice,
    )


def _spread(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    """``median (min-max)`` of ``values`` times ``scale``."""
    return (
        f"{statistics.median(values) * scale:.{digits}f} "
        f"({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"
    )


def _row(name: str, r: dict[str, Any]) -> str:
    lat, api = r["lateness"], r["api"]
    return (
        f"| {name} | {lat['p50'] * 1e6:.0f} | {lat['p99'] * 1e6:.0f} | {lat['max'] * 1e6:.0f} "
        f"| {r['healthz_p50_ms']:.1f} | {r['healthz_p99_ms']:.1f} | {r['probe_failures']} "
        f"| {api.get(ACCEPTED, 0):.0f} | {api.get(EVICTED, 0):.0f} "
        f"| {api.get(HEADER_TIMEOUTS, 0):.0f} | {api.get(PAUSES, 0):.0f} "
        f"| {r['cpu_percent']:.0f} "
        f"| {'crashed' if r['crashed'] else 'ok'} |"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The runs, idle and held interleaved, a Markdown table, and the medians."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rate", type=int, default=RATE)
    parser.add_argument("--held", type=int, default=HELD)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--runs", type=int, default=1, help="idle/held pairs, interleaved")
    parser.add_argument(
        "--without-fair-slice",
        action="store_true",
        help="the tick thread on the kernel's default slice (the comparison)",
    )
    args = parser.parse_args(argv)
    fair_slice = not args.without_fair_slice
    load_before = os.getloadavg()
    idles: list[dict[str, Any]] = []
    helds: list[dict[str, Any]] = []
    for _ in range(args.runs):
        for runs, held in ((idles, 0), (helds, args.held)):
            runs.append(
                run(args.seconds, args.rate, held, args.max_connections, fair_slice=fair_slice)
            )
    load_after = os.getloadavg()
    print(
        f"systems: {', '.join(serve._systems())} at {args.rate} Hz, {args.seconds:g} s each, "
        f"max_connections = {args.max_connections}, {args.runs} interleaved pair(s), "
        f"fair slice {'on' if fair_slice else 'off'}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print()
    print(
        "| run | lateness p50 µs | p99 µs | max µs | /healthz p50 ms | p99 ms | "
        "unanswered | accepted | evicted | header timeouts | accept pauses | CPU % | exit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, (idle, held) in enumerate(zip(idles, helds, strict=True), 1):
        print(_row(f"idle #{i}", idle))
        print(_row(f"{args.held} held #{i}", held))
    ratios = [
        h["lateness"]["p99"] / max(i["lateness"]["p99"], 1e-9)
        for i, h in zip(idles, helds, strict=True)
    ]
    print()
    for name, rs in (("idle", idles), (f"{args.held} held", helds)):
        print(
            f"{name}: lateness p99 {_spread([r['lateness']['p99'] for r in rs], 1e6)} µs, "
            f"max {_spread([r['lateness']['max'] for r in rs], 1e6)} µs, "
            f"/healthz p99 {_spread([r['healthz_p99_ms'] for r in rs], digits=1)} ms, "
            f"CPU {_spread([r['cpu_percent'] for r in rs])} %"
        )
    print(f"lateness p99 held / idle: {_spread(ratios, digits=2)} (target at most 2)")
    figures = {
        "idle": idles,
        "held": helds,
        "p99_ratios": ratios,
        "p99_ratio": statistics.median(ratios),
        "load_average": [load_before[0], load_after[0]],
        "fair_slice": fair_slice,
    }
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
