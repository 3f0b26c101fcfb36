"""``supervisor status`` for people: the status JSON read at a glance.

The JSON (``status --json``) keeps machine keys and seconds; this module
turns it into grouped sections in human units (µs/ms/s, MB, "3 min ago"),
the way an operator of supervisord or Paper expects to read it: who and
where first, then the tick, the systems, the game, problems, the process,
and the last few lifecycle events. The emergency section appears only
while the supervisor is in ``emergency_shutdown``.

Keys the supervisor does not report yet (``uptime_seconds``, ``version``,
``pid``, ``config_file``, ``listen``, ``measured_tick_rate``, ``windows``)
are shown when present and left out when not, so this works against today's
core and tomorrow's. Nothing here pads a line: piped output is plain text,
one item per line, for grep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.console import Console
from rich.text import Text

__all__ = ["ago", "duration", "print_status", "render_status", "seconds", "size"]

#: Lifecycle events shown (the newest; the JSON keeps them all).
LIFECYCLE_SHOWN: Final = 5
#: Width of the labels in the left column.
LABEL: Final = 12
#: Lifecycle actions in words.
ACTIONS: Final = {"phase": "phase change"}
#: Systems states that need no attention.
CALM_STATES: Final = frozenset({"running", "closed", "stopped"})


# ------------------------------------------------------------------ units


def seconds(value: Any) -> str:
    """A duration in seconds in the unit that reads best: ``7 µs``, ``1.2 ms``, ``3.40 s``."""
    if not _number(value):
        return "-"
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def duration(value: Any) -> str:
    """A long span, two units at most: ``45 s``, ``3 min 12 s``, ``2 h 5 min``, ``4 d 1 h``."""
    if not _number(value) or value < 0:
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
    if not _number(epoch):
        return "-"
    delta = now - epoch
    if delta < 1:
        return "just now"
    return f"{duration(delta)} ago"


def size(value: Any) -> str:
    """Bytes as ``47.3 MB`` (decimal units, as ``top`` and ``ps`` users read them)."""
    if not _number(value):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{int(value)} B"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _word(value)


def _rate(value: Any) -> str:
    return f"{value:g} Hz" if _number(value) else "-"


def _word(value: Any) -> str:
    """Any JSON value as a short word or list, never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(map(_word, value)) or "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_word(v)}" for k, v in value.items()) or "-"
    return str(value)


def _percentiles(summary: Any, keys: Sequence[str] = ("p50", "p99", "max")) -> str:
    if not isinstance(summary, Mapping) or summary.get("count") == 0:
        return "no samples yet"
    return " · ".join(f"{k} {seconds(summary.get(k))}" for k in keys)


# ------------------------------------------------------------- the sections


class _Out:
    """The text being built: headings and ``label  value`` lines, styled only on a terminal."""

    def __init__(self) -> None:
        self.text = Text()

    def heading(self, title: str) -> None:
        if self.text:
            self.text.append("\n")
        self.text.append(title, style="bold")
        self.text.append("\n")

    def line(self, label: str, value: str | Text, style: str = "") -> None:
        self.text.append(f"  {label:<{LABEL}} ", style="dim")
        self.text.append(value if isinstance(value, Text) else Text(value, style=style))
        self.text.append("\n")

    def raw(self, value: str | Text, style: str = "") -> None:
        self.text.append(value if isinstance(value, Text) else Text(value, style=style))
        self.text.append("\n")


def print_status(data: Mapping[str, Any]) -> None:
    """Print the status to standard output: wrapped on a terminal; piped, one item a line."""
    console = Console(highlight=False)
    console.print(render_status(data), soft_wrap=not console.is_terminal)


def render_status(
    data: Mapping[str, Any], *, now: float | None = None, measured: float | None = None
) -> Text:
    """The status JSON as grouped, human text.

    Args:
        data: the ``/v1/status`` answer.
        now: the Unix time to count "ago" from (default: the clock).
        measured: a tick rate the caller measured (``--watch``, between two
            answers), shown when the supervisor does not report its own.
    """
    now = time.time() if now is None else now
    out = _Out()
    _identity(out, data)
    _tick(out, data, measured)
    _systems(out, data)
    _game(out, data)
    _problems(out, data)
    _process(out, data, now)
    _lifecycle(out, data, now)
    step = data.get("next_step")
    if isinstance(step, str) and step:
        out.heading("Next step")
        out.raw(f"  {step}")
    out.text.rstrip()
    return out.text


def _identity(out: _Out, data: Mapping[str, Any]) -> None:
    phase = str(data.get("phase") or "-")
    head = Text("supervisor", style="bold")
    if data.get("version"):
        head.append(f" {data['version']}")
    head.append(" · ")
    head.append(phase, style="bold red" if phase == "emergency_shutdown" else "bold green")
    for key, label in (("pid", "pid "), ("uptime_seconds", "up ")):
        if key in data:
            value = data[key]
            head.append(f" · {label}{duration(value) if key == 'uptime_seconds' else value}")
    out.raw(head)
    for key, label in (("config_file", "config"), ("listen", "api")):
        if data.get(key):
            out.line(label, str(data[key]))
    alive = data.get("alive")
    detail = data.get("alive_detail")
    out.line(
        "alive",
        f"{_word(alive)}" + (f" ({detail})" if detail and alive else ""),
        style="" if alive is not False else "red",
    )
    not_ready = data.get("not_ready") or []
    ready = _word(data.get("ready")) + (f" (not: {_word(not_ready)})" if not_ready else "")
    out.line("ready", ready)


def _tick(out: _Out, data: Mapping[str, Any], measured: float | None) -> None:
    out.heading("Tick")
    out.line("tick", _count(data.get("tick")))
    rate = f"{_rate(data.get('tick_rate'))} set"
    if "measured_tick_rate" in data:
        rate += f" · {_rate(data.get('measured_tick_rate'))} measured"
    elif _number(measured):
        rate += f" · {measured:.1f} Hz measured"
    optimizer = data.get("optimizer") or {}
    if _number(optimizer.get("rate")) and optimizer.get("rate") != data.get("tick_rate"):
        rate += f" · optimizer at {_rate(optimizer['rate'])}"
    out.line("rate", rate)
    out.line("budget", seconds(data.get("budget")))
    windows = data.get("windows")
    if isinstance(windows, Mapping) and windows:
        for span, figures in windows.items():
            if isinstance(figures, Mapping):
                out.line(f"lateness {span}", _percentiles(figures.get("lateness"), ("p50", "p99")))
                out.line(f"work {span}", _percentiles(figures.get("work"), ("p50", "p99")))
    out.line("lateness", _percentiles(data.get("lateness")) + " (since start)")
    out.line("work", _percentiles(data.get("work")) + " (since start)")
    late = (
        f"{_count(data.get('overruns'))} overruns · "
        f"{_count(data.get('dropped_ticks'))} dropped ticks"
    )
    out.line("late ticks", late, style="yellow" if data.get("overruns") else "")
    profile = data.get("profile")
    if profile:
        out.line("profile", str(profile))
    if isinstance(optimizer, Mapping) and optimizer.get("state"):
        adjustments = optimizer.get("adjustments") or 0
        out.line("optimizer", f"{optimizer['state']}, {_count(adjustments)} adjustments")


def _systems(out: _Out, data: Mapping[str, Any]) -> None:
    systems = data.get("systems") or []
    if isinstance(systems, Mapping):
        systems = [{"name": k, **v} for k, v in systems.items() if isinstance(v, Mapping)]
    rows = [s for s in systems if isinstance(s, Mapping)]
    if not rows:
        return
    throttles = (data.get("optimizer") or {}).get("throttles") or {}
    out.heading("Systems")
    header = ("system", "state", "health", "errors", "step p50", "step p99", "runs")
    table = [header]
    for s in rows:
        step = s.get("step") or {}
        every = throttles.get(s.get("name")) or s.get("every") or 1
        table.append(
            (
                str(s.get("name") or "-"),
                str(s.get("state") or "-"),
                str(s.get("health") or "-"),
                _count(s.get("errors")),
                seconds(step.get("p50")),
                seconds(step.get("p99")),
                "every tick" if every == 1 else f"1 tick in {_word(every)}",
            )
        )
    _columns(out, table)


def _columns(out: _Out, table: Sequence[Sequence[str]]) -> None:
    """Aligned columns, the last one never padded; the header dim, odd states yellow."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for n, row in enumerate(table):
        line = Text("  ")
        for i, cell in enumerate(row):
            padded = cell if i == len(row) - 1 else f"{cell:<{widths[i]}}  "
            style = "dim" if n == 0 else ""
            if n and i == 1 and cell not in CALM_STATES:
                style = "yellow"
            if n and i == 3 and cell not in {"0", "-"}:
                style = "red"
            line.append(padded, style=style)
        out.raw(line)


def _game(out: _Out, data: Mapping[str, Any]) -> None:
    gauges = data.get("gauges") or {}
    if isinstance(gauges, Mapping) and gauges:
        out.heading("Game")
        for name, value in gauges.items():
            out.line(str(name), _word(value))


def _problems(out: _Out, data: Mapping[str, Any]) -> None:
    errors = {k: v for k, v in (data.get("errors") or {}).items() if v}
    quarantined = data.get("quarantined") or []
    emergency = data.get("emergency")
    in_emergency = data.get("phase") == "emergency_shutdown"
    out.heading("Problems")
    if errors:
        counts = ", ".join(f"{name} {_count(n)}" for name, n in errors.items())
        out.line("errors", f"{counts} (supervisor errors)", style="red")
    else:
        out.line("errors", "none")
    if quarantined:
        out.line("quarantined", _word(quarantined), style="yellow")
    failures = (data.get("services") or {}).get("failures") or {}
    if failures:
        out.line("services", _word(failures) + " crashes", style="yellow")
    if in_emergency:
        # Only while it applies: the JSON keeps the last emergency after a restart.
        out.heading("Emergency")
        info = emergency if isinstance(emergency, Mapping) else {}
        reason = info.get("reason") or data.get("emergency_reason")
        out.line("reason", str(reason or "-"), style="red")
        if info.get("source"):
            out.line("by", str(info["source"]))
        if "tick" in info:
            out.line("at tick", _count(info["tick"]))
        snapshot = info.get("snapshot")
        out.line("state", f"preserved in {snapshot}" if snapshot else "NOT preserved", style="")
        if _number(info.get("trigger_to_snapshot_seconds")):
            out.line("saved in", seconds(info["trigger_to_snapshot_seconds"]))


def _process(out: _Out, data: Mapping[str, Any], now: float) -> None:
    resources = data.get("resources") or {}
    machine = data.get("machine") or {}
    snapshots = data.get("snapshots") or {}
    if not (resources or machine or snapshots):
        return
    out.heading("Process")
    if resources:
        parts = [f"{size(resources.get('rss_bytes'))} RSS"]
        if _number(resources.get("cpu_percent")):
            parts.append(f"CPU {resources['cpu_percent']:g}%")
        for key, word in (("threads", "threads"), ("open_files", "open files")):
            if key in resources:
                parts.append(f"{_count(resources[key])} {word}")
        out.line("memory", " · ".join(parts))
    if machine:
        cores = machine.get("logical_cores")
        total = machine.get("memory_total_gb")
        free = machine.get("memory_available_gb")
        parts = [f"{_word(cores)} cores"]
        if _number(total):
            parts.append(f"{total:.1f} GB" + (f" ({free:.1f} GB free)" if _number(free) else ""))
        if _number(machine.get("load1")):
            parts.append(f"load {machine['load1']:.2f}")
        out.line("machine", " · ".join(parts))
    if snapshots:
        _snapshots(out, snapshots, now)


def _snapshots(out: _Out, snapshots: Mapping[str, Any], now: float) -> None:
    last = snapshots.get("last")
    line = f"last {last}" if last else "none written yet"
    if _number(snapshots.get("last_time")):
        line += f" ({ago(snapshots['last_time'], now)})"
    write = snapshots.get("write") or {}
    if write.get("count"):
        line += f" · write p99 {seconds(write.get('p99'))}"
    stall = snapshots.get("stall") or {}
    if stall.get("count"):
        line += f" · tick stall p99 {seconds(stall.get('p99'))}"
    failures = snapshots.get("failures")
    if failures:
        line += f" · {_count(failures)} failed"
    out.line("snapshots", line, style="red" if failures else "")
    for problem in snapshots.get("problems") or []:
        out.line("", str(problem), style="yellow")


def _lifecycle(out: _Out, data: Mapping[str, Any], now: float) -> None:
    events = [e for e in data.get("lifecycle") or [] if isinstance(e, Mapping)]
    if not events:
        return
    shown = events[-LIFECYCLE_SHOWN:]
    more = len(events) - len(shown)
    out.heading("Lifecycle" + (f" (last {len(shown)} of {len(events)})" if more else ""))
    for event in shown:
        out.line(ago(event.get("time"), now), _event(event))


def _event(event: Mapping[str, Any]) -> str:
    """``tick 2,073  development → testing  phase change by uid:0(root): release 1.4``."""
    action = str(event.get("action") or "")
    what = ACTIONS.get(action, action)
    if event.get("caller"):
        what += f" by {event['caller']}"
    reason = event.get("reason")
    if reason and reason != action:
        what += f": {reason}"
    move = f"{event.get('before') or '?'} → {event.get('after') or '?'}"
    return f"tick {_count(event.get('tick'))}  {move}  {what}"
