"""The realtime keys of ``[supervisor]``: the CPU list syntax of ``cpu_affinity``.

``cpu_affinity`` takes the kernel's CPU list syntax (``taskset -c``,
``isolcpus``): ``"1"``, ``"0,2"``, ``"2-3"``, ``"0-1,6"``. Parsed here, once,
so a bad list fails when the config is built (or its environment variable
is read), naming the key: ``cpus_problem`` is the key's ``syntax`` check.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_CPU", "cpus_problem", "format_cpus", "parse_cpus"]

#: Highest CPU number accepted (Linux's CONFIG_NR_CPUS tops out at 8192).
MAX_CPU: Final = 8191

_ITEM = re.compile(r"(\d{1,4})(?:-(\d{1,4}))?")


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs of a CPU list (``"0-1,3"``).

    Raises:
        ValueError: a malformed item, a range whose end is below its start,
            a CPU above ``MAX_CPU``, or an empty list.
    """
    cpus: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"{item.strip()[:20]!r} is not a CPU number or range (like 0-1,3)")
        first = int(match[1])
        last = first if match[2] is None else int(match[2])
        if last < first:
            raise ValueError(f"range {item.strip()!r} ends before it starts")
        if last > MAX_CPU:
            raise ValueError(f"CPU {last} is above the maximum {MAX_CPU}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def cpus_problem(text: str) -> str | None:
    """What is wrong with the CPU list ``text``, or None (the ``syntax`` of ``cpu_affinity``)."""
    try:
        parse_cpus(text)
    except ValueError as exc:
        return str(exc)
    return None


def format_cpus(cpus: frozenset[int] | set[int]) -> str:
    """``cpus`` as a CPU list, runs folded (``{0, 1, 2, 5}``: ``"0-2,5"``), short for a log."""
    runs: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0] if ordered else 0
    for cpu in ordered[1:]:
        if cpu != prev + 1:
            runs.append(f"{start}-{prev}" if prev > start else str(start))
            start = cpu
        prev = cpu
    if ordered:
        runs.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(runs)
