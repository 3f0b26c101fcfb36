"""RSS of ``supervisor run`` on the demo world, as the README launches it: VmRSS 7 s in.

Each run starts ``supervisor run`` (no config: the demo world, the API on its
Unix socket ``var/supervisor.sock``) in a fresh empty folder, reads
``/proc/PID/status`` 7 s later (``VmRSS``, and its anonymous and file-backed
parts), and stops it with SIGTERM. On a loaded machine a start can take
longer than that: the figure is then read 2 s after the API first answered
``/healthz`` (the time it took is printed), never from a half-started run.

Two byte-code modes, because Python's compiler leaves ~1 MB of its transient
memory in the heap of a process that imports from source:

* ``cached``: the ``.pyc`` files exist (``compileall`` first), as on every
  run after a user's first and after any non-editable install;
* ``cold``: no byte-code cache at all (``PYTHONDONTWRITEBYTECODE=1`` and an
  empty ``PYTHONPYCACHEPREFIX``): every module of the run, the libraries'
  too, compiled at start (the worst case; a user's first run after
  ``pip install -e .`` compiles only this package).

``--against DIR`` measures another checkout (its ``supervisor`` and
``systems`` put first on ``PYTHONPATH``, the same interpreter and
libraries) interleaved with this one, run for run: the A/B of one change.

    python -m bench.run_rss [--runs 3] [--modes cached,cold] [--against DIR] [--json FILE]
"""

from __future__ import annotations

import compileall
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import parser, write_json

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: Seconds after the start at which the resident set is read (the README's figure).
SAMPLE_AT = 7.0
#: At the earliest this long after the API first answered (a slow start on a loaded machine).
AFTER_READY = 2.0
#: A run whose API has not answered by then is reported as failed.
READY_TIMEOUT = 60.0
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def _api_answers(sock_path: Path) -> bool:
    """True when ``GET /healthz`` on the run's Unix socket answers 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(sock_path))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def one_run(tree: Path | None, mode: str) -> dict[str, float]:
    """Start ``supervisor run`` in a fresh folder; its status figures in MB at ``SAMPLE_AT``."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONPYCACHEPREFIX"}}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory() as folder:
        if mode == "cold":
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "no-pycache")
        proc = subprocess.Popen(
            [str(SUPERVISOR), "run"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            started = time.monotonic()
            sock = Path(folder) / "var" / "supervisor.sock"
            while not _api_answers(sock):
                if time.monotonic() - started > READY_TIMEOUT or proc.poll() is not None:
                    raise RuntimeError(f"supervisor run did not answer in {READY_TIMEOUT:g} s")
                time.sleep(0.1)
            ready = time.monotonic() - started
            time.sleep(max(SAMPLE_AT - ready, AFTER_READY))
            status = Path(f"/proc/{proc.pid}/status").read_text()
            answered = _api_answers(sock)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    values = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.split(":")[0] in FIELDS
    }
    values["api_ok"] = float(answered)
    values["ready_s"] = ready
    return values


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--runs", type=int, default=3, help="runs of each variant (interleaved)")
    cli.add_argument("--modes", default="cached,cold", help="byte-code modes: cached, cold")
    cli.add_argument("--against", type=Path, help="another checkout to measure, interleaved")
    args = cli.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in {"cached", "cold"}:
            cli.error(f"--modes: unknown mode {mode!r} (cached, cold)")
    trees: dict[str, Path | None] = {"this": None}
    if args.against is not None:
        trees = {"against": args.against.resolve(), "this": None}
    if "cached" in modes:
        for tree in trees.values():
            base = tree or ROOT
            for package in ("supervisor", "systems"):
                compileall.compile_dir(base / package, quiet=1)
    print(f"load average before: {os.getloadavg()}")
    results: dict[str, Any] = {}
    for _ in range(args.runs):
        for mode in modes:
            for name, tree in trees.items():
                results.setdefault(f"{name} {mode}", []).append(one_run(tree, mode))
    print(f"load average after: {os.getloadavg()}")
    print(f"VmRSS {SAMPLE_AT:g} s into `supervisor run` (demo world, API on its Unix socket), MB:")
    print(
        "| variant | VmRSS median [range] | RssAnon | RssFile | API answered | "
        "API first answered, s | runs |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        print(
            f"| {key} | {_summary([r['VmRSS'] for r in runs])} | "
            f"{_summary([r['RssAnon'] for r in runs])} | "
            f"{_summary([r['RssFile'] for r in runs])} | "
            f"{sum(int(r['api_ok']) for r in runs)}/{len(runs)} | "
            f"{_summary([r['ready_s'] for r in runs])} | "
            + ", ".join(f"{r['VmRSS']:.1f}" for r in runs)
            + " |"
        )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
