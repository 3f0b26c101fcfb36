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

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from ._units import ago, count, duration, is_number, rate, seconds, size, word

__all__ = ["print_status", "render_status"]

#: Lifecycle events shown (the newest; the JSON keeps them all).
LIFECYCLE_SHOWN: Final = 5
#: Width of the labels in the left column.
LABEL: Final = 12
#: Lifecycle actions in words.
ACTIONS: Final = {"phase": "phase change"}
#: Systems states that need no attention.
CALM_STATES: Final = frozenset({"running", "closed", "stopped"})


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
    _capabilities(out, data)
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
        f"{word(alive)}" + (f" ({detail})" if detail and alive else ""),
        style="" if alive is not False else "red",
    )
    not_ready = data.get("not_ready") or []
    ready = word(data.get("ready")) + (f" (not: {word(not_ready)})" if not_ready else "")
    out.line("ready", ready)


def _tick(out: _Out, data: Mapping[str, Any], measured: float | None) -> None:
    out.heading("Tick")
    out.line("tick", count(data.get("tick")))
    rates = f"{rate(data.get('tick_rate'))} set"
    if "measured_tick_rate" in data:
        rates += f" · {rate(data.get('measured_tick_rate'))} measured"
    elif is_number(measured):
        rates += f" · {measured:.1f} Hz measured"
    optimizer = data.get("optimizer") or {}
    if is_number(optimizer.get("rate")) and optimizer.get("rate") != data.get("tick_rate"):
        rates += f" · optimizer at {rate(optimizer['rate'])}"
    out.line("rate", rates)
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
        f"{count(data.get('overruns'))} overruns · {count(data.get('dropped_ticks'))} dropped ticks"
    )
    out.line("late ticks", late, style="yellow" if data.get("overruns") else "")
    profile = data.get("profile")
    if profile:
        out.line("profile", str(profile))
    if isinstance(optimizer, Mapping) and optimizer.get("state"):
        adjustments = optimizer.get("adjustments") or 0
        out.line("optimizer", f"{optimizer['state']}, {count(adjustments)} adjustments")


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
                count(s.get("errors")),
                seconds(step.get("p50")),
                seconds(step.get("p99")),
                "every tick" if every == 1 else f"1 tick in {word(every)}",
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
            out.line(str(name), word(value))


def _problems(out: _Out, data: Mapping[str, Any]) -> None:
    errors = {k: v for k, v in (data.get("errors") or {}).items() if v}
    quarantined = data.get("quarantined") or []
    emergency = data.get("emergency")
    in_emergency = data.get("phase") == "emergency_shutdown"
    out.heading("Problems")
    if errors:
        counts = ", ".join(f"{name} {count(n)}" for name, n in errors.items())
        out.line("errors", f"{counts} (supervisor errors)", style="red")
    else:
        out.line("errors", "none")
    if quarantined:
        out.line("quarantined", word(quarantined), style="yellow")
    failures = (data.get("services") or {}).get("failures") or {}
    if failures:
        out.line("services", word(failures) + " crashes", style="yellow")
    if in_emergency:
        # Only while it applies: the JSON keeps the last emergency after a restart.
        out.heading("Emergency")
        info = emergency if isinstance(emergency, Mapping) else {}
        reason = info.get("reason") or data.get("emergency_reason")
        out.line("reason", str(reason or "-"), style="red")
        if info.get("source"):
            out.line("by", str(info["source"]))
        if "tick" in info:
            out.line("at tick", count(info["tick"]))
        snapshot = info.get("snapshot")
        out.line("state", f"preserved in {snapshot}" if snapshot else "NOT preserved", style="")
        if is_number(info.get("trigger_to_snapshot_seconds")):
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
        if is_number(resources.get("cpu_percent")):
            parts.append(f"CPU {resources['cpu_percent']:g}%")
        for key, noun in (("threads", "threads"), ("open_files", "open files")):
            if key in resources:
                parts.append(f"{count(resources[key])} {noun}")
        out.line("memory", " · ".join(parts))
    if machine:
        cores = machine.get("logical_cores")
        total = machine.get("memory_total_gb")
        free = machine.get("memory_available_gb")
        parts = [f"{word(cores)} cores"]
        if is_number(total):
            parts.append(f"{total:.1f} GB" + (f" ({free:.1f} GB free)" if is_number(free) else ""))
        if is_number(machine.get("load1")):
            parts.append(f"load {machine['load1']:.2f}")
        out.line("machine", " · ".join(parts))
    if snapshots:
        _snapshots(out, snapshots, now)


def _snapshots(out: _Out, snapshots: Mapping[str, Any], now: float) -> None:
    last = snapshots.get("last")
    line = f"last {last}" if last else "none written yet"
    if is_number(snapshots.get("last_time")):
        line += f" ({ago(snapshots['last_time'], now)})"
    write = snapshots.get("write") or {}
    if write.get("count"):
        line += f" · write p99 {seconds(write.get('p99'))}"
    stall = snapshots.get("stall") or {}
    if stall.get("count"):
        line += f" · tick stall p99 {seconds(stall.get('p99'))}"
    failures = snapshots.get("failures")
    if failures:
        line += f" · {count(failures)} failed"
    out.line("snapshots", line, style="red" if failures else "")
    for problem in snapshots.get("problems") or []:
        out.line("", str(problem), style="yellow")


#: The status keys of the core (``StatusView.as_dict``); any other mapping is a
#: capability's section (``status_sections``: rollouts, flags, fleet, agones...).
_CORE_KEYS: Final = frozenset(
    [
        "phase",
        "tick",
        "tick_rate",
        "budget",
        "lateness",
        "work",
        "overruns",
        "dropped_ticks",
        "systems",
        "gauges",
        "errors",
        "quarantined",
        "profile",
        "profile_reason",
        "emergency_reason",
        "measured_tick_rate",
        "windows",
        "alive",
        "alive_detail",
        "ready",
        "not_ready",
        "next_step",
        "emergency",
        "lifecycle",
        "machine",
        "resources",
        "snapshots",
        "redaction",
        "services",
        "optimizer",
        "version",
        "pid",
        "uptime_seconds",
        "config_file",
        "listen",
    ]
)
#: At most this many values of one section on its line (``status --json`` has them all).
_SECTION_VALUES: Final = 8


def _capabilities(out: _Out, data: Mapping[str, Any]) -> None:
    """One line per capability section: its plain values, then how many items its lists hold."""
    sections = [(k, v) for k, v in data.items() if k not in _CORE_KEYS and isinstance(v, Mapping)]
    if not sections:
        return
    out.heading("Capabilities")
    for name, section in sections:
        if "error" in section and isinstance(section["error"], str):
            out.line(name, f"broken: {section['error']}", style="red")
            continue
        parts: list[str] = []
        for key, value in section.items():
            if isinstance(value, bool) or value is None or isinstance(value, (str, int, float)):
                parts.append(f"{key} {value if not isinstance(value, float) else f'{value:g}'}")
            elif isinstance(value, (list, tuple)):
                parts.append(f"{key} {len(value)}")
        shown = parts[:_SECTION_VALUES] + (["…"] if len(parts) > _SECTION_VALUES else [])
        out.line(name, " · ".join(shown) or "(see status --json)")


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
    return f"tick {count(event.get('tick'))}  {move}  {what}"
