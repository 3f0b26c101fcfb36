"""Serving must not disturb ticks: tick lateness while /metrics is scraped ten times a second.

Two runs of ``supervisor run --duration SECONDS`` as a subprocess (the real
command, with the HTTP API on a Unix socket), on the demo world: one left
alone, one whose ``/metrics`` is fetched ``SCRAPES_PER_SECOND`` times a
second by this process over the socket. The supervisor's own
``--summary-json`` gives the tick start lateness of each run.

Run: ``python -m bench.serve [--seconds S] [--rate HZ] [--json FILE]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import _common

SECONDS = 10.0
RATE = 60
SCRAPES_PER_SECOND = 10
CONFIG = """
[supervisor]
tick_rate = {rate}
state_dir = "{state}"
snapshot_interval = 0
[systems]
enabled = {systems}
[api]
listen = "unix:{sock}"
audit_log = "{state}/audit.jsonl"
"""
#: The systems run: the demo world when it is installed, else the small example.
DEMO = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]
EXAMPLE = ["heartbeat", "wanderers"]


def _systems() -> list[str]:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="supervisor.systems")}
    try:
        import systems.economy  # noqa: F401
    except ImportError:
        return EXAMPLE
    return DEMO if set(DEMO) <= names else EXAMPLE


def run(seconds: float, rate: int, *, scrape: bool) -> dict[str, Any]:
    """One supervisor run; returns its summary plus the scrape count and scrape latency."""
    exe = Path(sys.executable).parent / "supervisor"
    with tempfile.TemporaryDirectory() as tmp:
        sock = f"{tmp}/s.sock"
        cfg = Path(tmp, "bench.toml")
        cfg.write_text(
            CONFIG.format(rate=rate, state=tmp, sock=sock, systems=json.dumps(_systems())),
            encoding="utf-8",
        )
        summary = Path(tmp, "summary.json")
        proc = subprocess.Popen(
            [
                str(exe),
                "run",
                "--config",
                str(cfg),
                "--duration",
                str(seconds),
                "--summary-json",
                str(summary),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        scrapes: list[float] = []
        try:
            deadline = time.monotonic() + 10
            while not Path(sock).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if scrape:
                client = httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=5)
                period = 1 / SCRAPES_PER_SECOND
                next_at = time.monotonic()
                while proc.poll() is None:
                    started = time.monotonic()
                    try:
                        client.get("http://supervisor/metrics").raise_for_status()
                        scrapes.append(time.monotonic() - started)
                    except httpx.HTTPError:
                        break  # the run ended under us
                    next_at += period
                    time.sleep(max(0.0, next_at - time.monotonic()))
                client.close()
            proc.wait(timeout=seconds + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
        result: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
    scrapes.sort()
    result["scrapes"] = len(scrapes)
    result["scrape_p50_ms"] = scrapes[len(scrapes) // 2] * 1e3 if scrapes else 0.0
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Both runs, and a Markdown table."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rate", type=int, default=RATE)
    args = parser.parse_args(argv)
    quiet = run(args.seconds, args.rate, scrape=False)
    scraped = run(args.seconds, args.rate, scrape=True)
    print(f"systems: {', '.join(_systems())} at {args.rate} Hz, {args.seconds:g} s each")
    print()
    print("| run | ticks | lateness p50 µs | p99 µs | p99.9 µs | max µs | scrapes (p50 ms) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in (("not scraped", quiet), ("/metrics 10x/s", scraped)):
        lat = r["lateness"]
        print(
            f"| {name} | {r['ticks']} | {lat['p50'] * 1e6:.0f} | {lat['p99'] * 1e6:.0f} | "
            f"{lat['p999'] * 1e6:.0f} | {lat['max'] * 1e6:.0f} | "
            f"{r['scrapes']} ({r['scrape_p50_ms']:.1f}) |"
        )
    figures = {"quiet": quiet, "scraped": scraped}
    _common.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
