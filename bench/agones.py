"""Agones link: Health cadence, a hung loop's gap, SIGTERM to Shutdown, and what the link costs.

Each round starts ``supervisor run`` on the demo world (plus a system that
blocks the loop for 2 s on demand) under the SDK stand-in
(``tests/agones_standin.py``, a real HTTP server), and reads what the
stand-in recorded:

* **cadence**: gaps between Health pings at ``health_interval = 0.2``,
  median and p90;
* **hang**: the longest gap, around a step that blocks the loop for 2 s
  (every other gap should stay at the cadence);
* **stop**: SIGTERM to the stand-in's ``/shutdown`` (systems stopped and the
  final snapshot written in between), and the exit code;
* **RSS** of ``supervisor run`` after 4 s, link off vs on, interleaved.

    python -m bench.agones [--runs 3] [--json FILE]
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import parser, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from agones_standin import SdkStandIn  # (the stand-in lives with the tests)

SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: Rounds of each measurement (``--runs`` overrides).
ROUNDS = 3
HEALTH_INTERVAL = 0.2
#: How long the stalling system blocks the loop.
HANG = 2.0

GAME = f"""
import os, time

class Stall:
    name = "stall"

    def tick(self, ctx):
        if os.path.exists("stall"):
            os.remove("stall")
            time.sleep({HANG})
"""

CONFIG = f"""
[supervisor]
state_dir = "var"
[systems]
enabled = ["players", "economy", "game:Stall"]
[watchdog]
kill_timeout = 10.0
[api]
listen = "unix:s.sock"
[agones]
health_interval = {HEALTH_INTERVAL}
"""


def _start(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(SUPERVISOR), "run", "--fresh", "--tick-rate", "30"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(what: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError("the supervisor did not get there")
        time.sleep(0.02)


def one_round(folder: Path) -> dict[str, float]:
    """Cadence, hang gap and SIGTERM-to-Shutdown of one ``supervisor run``."""
    with SdkStandIn() as sidecar:
        env = {**os.environ, "PYTHONPATH": str(folder), "AGONES_SDK_HTTP_PORT": str(sidecar.port)}
        proc = _start(folder, env)
        try:
            _wait(lambda: sidecar.count("/health") >= 15)
            (folder / "stall").touch()
            _wait(lambda: not (folder / "stall").exists())
            seen = sidecar.count("/health")
            _wait(lambda: sidecar.count("/health") >= seen + 15)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        gaps = sorted(b - a for a, b in itertools.pairwise(sidecar.times("/health")))
        return {
            "cadence_median_s": statistics.median(gaps),
            "cadence_p90_s": gaps[int(len(gaps) * 0.9) - 1],
            "hang_gap_s": gaps[-1],
            "second_gap_s": gaps[-2],
            "sigterm_to_shutdown_s": sidecar.times("/shutdown")[0] - sent,
            "exit_code": float(code),
        }


def rss_mb(folder: Path, *, agones: bool, port: int) -> float:
    """Resident memory of ``supervisor run`` after 4 s, with the link on or off."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    if agones:
        env["AGONES_SDK_HTTP_PORT"] = str(port)
    proc = _start(folder, env)
    try:
        time.sleep(4)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return kb / 1024


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--runs", type=int, default=ROUNDS, help="rounds of each measurement")
    args = cli.parse_args()
    runs = args.runs
    results: dict[str, Any] = {"rounds": [], "rss_off_mb": [], "rss_on_mb": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "supervisor.toml").write_text(CONFIG)
        (folder / "game.py").write_text(GAME)
        for _ in range(runs):
            results["rounds"].append(one_round(folder))
        with SdkStandIn() as sidecar:
            for _ in range(runs):
                results["rss_off_mb"].append(rss_mb(folder, agones=False, port=sidecar.port))
                results["rss_on_mb"].append(rss_mb(folder, agones=True, port=sidecar.port))
    for name in results["rounds"][0]:
        values = [r[name] for r in results["rounds"]]
        print(f"{name:24s} " + "  ".join(f"{v:.3f}" for v in values))
    for key in ("rss_off_mb", "rss_on_mb"):
        print(f"{key:24s} " + "  ".join(f"{v:.1f}" for v in results[key]))
    print(f"load average: {os.getloadavg()}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
