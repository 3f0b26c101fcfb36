"""Regenerate every benchmark table in the README: ``python -m bench.run_all``.

Each benchmark runs as its own process (on a machine left otherwise idle),
and its Markdown output replaces the text between ``<!-- bench:NAME -->``
and ``<!-- /bench:NAME -->`` in README.md, with the command that made it.
``--only NAME[,NAME]`` reruns some of them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import psutil

#: (marker name, module, arguments), in README order.
BENCHES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("loops", "bench.loops", ("--seconds", "10")),
    # about 8 minutes: 6 loops x 2 rates x idle/busy x 3 interleaved runs of 5 s
    ("realtime", "bench.realtime", ("--seconds", "5", "--runs", "3")),
    ("overhead", "bench.overhead", ()),
    ("world", "bench.world", ("--seconds", "10")),
    ("serve", "bench.serve", ("--seconds", "10")),
    ("storm", "bench.storm", ("--seconds", "10", "--runs", "3")),
    # "before" is f4c6c2e: the demo world before its security buckets became numbers
    (
        "snapshot_stall",
        "bench.snapshot_stall",
        ("--seconds", "10", "--runs", "3", "--baseline", "f4c6c2e"),
    ),
    ("run_rss", "bench.run_rss", ("--runs", "3")),
    ("optimizer", "bench.optimizer", ()),
)
README = Path(__file__).resolve().parent.parent / "README.md"


def machine() -> str:
    """One line about the machine the figures come from."""
    freq = psutil.cpu_freq()
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{psutil.cpu_count()} logical cores"
        + (f" at {freq.current:.0f} MHz" if freq else "")
        + f", {psutil.virtual_memory().total / 2**30:.0f} GB, {platform.system()} "
        f"{platform.release()}; {datetime.date.today().isoformat()}"
    )


def run(name: str, module: str, args: tuple[str, ...]) -> str:
    """One benchmark's Markdown, headed by its command."""
    command = [sys.executable, "-m", module, *args]
    shown = " ".join(["python", "-m", module, *args])
    print(f"running {shown} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        cwd=README.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    del name
    return f"`{shown}` ({machine()}):\n\n{proc.stdout.strip()}\n"


def _section(name: str) -> re.Pattern[str]:
    """The README text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    return re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks and rewrite their README sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated marker names")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    text = README.read_text(encoding="utf-8")
    chosen = [bench for bench in BENCHES if only is None or bench[0] in only]
    # Every section is checked before the first benchmark runs, not after an hour of them.
    missing = [name for name, _, _ in chosen if not _section(name).search(text)]
    if missing:
        raise SystemExit(f"README.md has no <!-- bench:NAME --> section for {', '.join(missing)}")
    for name, module, bench_args in chosen:
        body = run(name, module, bench_args)
        # Read again: the README may have been edited while the benchmark ran.
        text = README.read_text(encoding="utf-8")
        match = _section(name).search(text)
        assert match is not None
        text = text[: match.start()] + match.group(1) + body + match.group(2) + text[match.end() :]
        README.write_text(text, encoding="utf-8")
    print("README.md updated", file=sys.stderr)


if __name__ == "__main__":
    main()
