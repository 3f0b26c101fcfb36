"""Figures in the units people read: µs/ms/s, "3 min 12 s", "3 min ago", MB, 12,345.

Shared by ``status`` and the other client commands' answers; no rich, no
click, so any command may use it without paying for a renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ago", "count", "duration", "is_number", "rate", "seconds", "size", "word"]


def seconds(value: Any) -> str:
    """A duration in seconds in the unit that reads best: ``7 µs``, ``1.2 ms``, ``3.40 s``."""
    if not is_number(value):
        return "-"
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def duration(value: Any) -> str:
    """A long span, two units at most: ``45 s``, ``3 min 12 s``, ``2 h 5 min``, ``4 d 1 h``."""
    if not is_number(value) or value < 0:
        return "-"
    total = int(value)
    if total < 60:
        return f"{total} s"
    parts: list[str] = []
    for unit, size_ in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if total >= size_ or parts:
            amount, total = divmod(total, size_)
            parts.append(f"{amount} {unit}")
    first, second = [*parts, "0"][:2]
    return first if second.startswith("0") else f"{first} {second}"


def ago(epoch: Any, now: float) -> str:
    """``3 min ago`` for a Unix time (``just now`` under a second; ``-`` if not a time)."""
    if not is_number(epoch):
        return "-"
    delta = now - epoch
    if delta < 1:
        return "just now"
    return f"{duration(delta)} ago"


def size(value: Any) -> str:
    """Bytes as ``47.3 MB`` (decimal units, as ``top`` and ``ps`` users read them)."""
    if not is_number(value):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{int(value)} B"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def count(value: Any) -> str:
    """An integer with thousands separators (``12,345``); anything else as :func:`word`."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else word(value)


def rate(value: Any) -> str:
    """A frequency: ``20 Hz``."""
    return f"{value:g} Hz" if is_number(value) else "-"


def word(value: Any, key: str = "") -> str:
    """Any JSON value as a short word or list, never a Python repr.

    ``key``: the value's key in its table; a ``..._seconds`` number reads
    as a duration (``trigger_to_snapshot_seconds=44.8 ms``).
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_seconds") and is_number(value):
        return seconds(value)
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(map(word, value)) or "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={word(v, str(k))}" for k, v in value.items()) or "-"
    return str(value)
