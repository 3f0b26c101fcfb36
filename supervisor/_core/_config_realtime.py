"""The realtime keys of ``[supervisor]``: the CPU list syntax of ``cpu_affinity``.

``cpu_affinity`` takes the kernel's CPU list syntax (``taskset -c``,
``isolcpus``): ``"1"``, ``"0,2"``, ``"2-3"``, ``"0-1,6"``. Parsed here, once,
so a bad list fails when the config is built, naming the key.
"""

from __future__ import annotations

import re
from typing import Any, Final

import attrs

from .._errors import ConfigError

__all__ = ["MAX_CPU", "check_cpus", "parse_cpus"]

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


def check_cpus(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator (after the shared ``check``): ``value`` is a CPU list, or None.

    Raises:
        ConfigError: naming ``section.key``.
    """
    if value is None:
        return
    try:
        parse_cpus(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=f"{type(instance).section}.{field.name}") from None
