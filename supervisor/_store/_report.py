"""``supervisor report``: service levels, budgets, incidents and top errors of a period.

Built from the store file alone (:func:`build`), so it works whether or not
the supervisor runs; rendered as JSON, Markdown (for an incident review or a
deployment sign-off) or plain text.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from typing import Any, Final

from .._core._config_sections import SloConfig
from ._query import correlation, minutes, records, store_info
from ._slo import level

__all__ = ["DEFAULT_SLOS", "build", "render"]

#: The objectives reported when the config names none.
DEFAULT_SLOS: Final = {
    "ticks_on_time": SloConfig(name="ticks_on_time", kind="timeliness", target=0.999),
    "error_free_play": SloConfig(
        name="error_free_play", kind="error_free_player_minutes", target=0.999
    ),
    "availability": SloConfig(name="availability", kind="availability", target=0.9995),
}
#: Top fingerprints listed.
TOP: Final = 10


def build(
    conn: sqlite3.Connection, *, since: float, now: float, slos: Mapping[str, SloConfig]
) -> dict[str, Any]:
    """The report of ``since`` .. ``now`` as a JSON-ready mapping."""
    slos = slos or DEFAULT_SLOS
    period = minutes(conn, since, now)
    levels = []
    for slo in slos.values():
        window = minutes(conn, now - slo.window_seconds, now)
        levels.append(
            {
                **level(slo, period).as_dict(),
                "budget_left_in_window": level(slo, window).budget_left,
            }
        )
    errors = records(conn, since=since, limit=TOP, tracebacks=False)
    events = conn.execute(
        "SELECT time, kind, detail FROM events WHERE time >= ? AND time <= ? ORDER BY time",
        (since, now),
    ).fetchall()
    runs = conn.execute(
        "SELECT started, pid, config_version, source FROM runs WHERE started >= ? ORDER BY id",
        (since,),
    ).fetchall()
    new = conn.execute(
        "SELECT fingerprint, exc_type, message, first_seen, total FROM fingerprints "
        "WHERE first_seen >= ? ORDER BY first_seen",
        (since,),
    ).fetchall()
    return {
        "since": since,
        "until": now,
        "observed_seconds": sum(r.seconds for r in period),
        "ticks": sum(r.ticks for r in period),
        "service_levels": levels,
        "incidents": [{"time": t, "kind": k, "detail": d} for t, k, d in events],
        "errors": {"total": errors["total"], "by_system": errors["counts"]},
        "top_fingerprints": errors["groups"],
        "new_fingerprints": [
            dict(zip(("fingerprint", "exc_type", "message", "first_seen", "total"), r, strict=True))
            for r in new[:TOP]
        ],
        "runs": [
            dict(zip(("started", "pid", "config_version", "source"), r, strict=True)) for r in runs
        ],
        "correlation": correlation(conn, since, now),
        "store": store_info(conn),
    }


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(x: float | None) -> str:
    return "no data" if x is None else f"{100 * x:.3f} %"


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")[:80]


def _table(head: list[str], rows: list[list[Any]], markdown: bool) -> list[str]:
    if not rows:
        return ["(none)"]
    if markdown:
        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
        ]
    cells = [head, *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def render(report: Mapping[str, Any], *, markdown: bool) -> str:
    """The report as Markdown or plain text."""
    h = "## " if markdown else ""
    out = [
        ("# " if markdown else "") + "Service report",
        "",
        f"Period: {_when(report['since'])} to {_when(report['until'])}; "
        f"observed {report['observed_seconds'] / 3600:.1f} h, {report['ticks']:,} ticks.",
        "",
        f"{h}Service levels",
        "",
    ]
    out += _table(
        ["objective", "kind", "target", "achieved", "met", "budget left (window)"],
        [
            [s["name"], s["kind"] + (f" ≤ {s['lateness_ms']:g} ms" if "lateness_ms" in s else ""),
             _pct(s["target"]), _pct(s["ratio"]),
             "-" if s["met"] is None else ("yes" if s["met"] else "NO"),
             f"{_pct(s['budget_left_in_window'])} ({s['window']})"]
            for s in report["service_levels"]
        ],
        markdown,
    )  # fmt: skip
    out += ["", f"{h}Incidents", ""]
    out += _table(
        ["time", "kind", "detail"],
        [[_when(e["time"]), e["kind"], e["detail"]] for e in report["incidents"]],
        markdown,
    )
    errors = report["errors"]
    by_system = ", ".join(f"{k}: {v:,}" for k, v in errors["by_system"].items()) or "none"
    out += ["", f"{h}Errors", "", f"{errors['total']:,} errors ({by_system}).", ""]
    out += _table(
        ["count", "system", "type", "message", "last seen", "fingerprint"],
        [[f"{g['count']:,}", g["system"], g["exc_type"], g["message"], _when(g["last_seen"]),
          g["fingerprint"][:12]] for g in report["top_fingerprints"]],
        markdown,
    )  # fmt: skip
    out += ["", f"{h}New fingerprints in the period", ""]
    out += _table(
        ["first seen", "type", "message", "count", "fingerprint"],
        [[_when(f["first_seen"]), f["exc_type"], f["message"], f["total"],
          f["fingerprint"][:12]] for f in report["new_fingerprints"]],
        markdown,
    )  # fmt: skip
    corr = report["correlation"]
    out += ["", f"{h}Error bursts and tick timing", ""]
    r_lat, r_work = corr["lateness_r"], corr["work_r"]
    out.append(
        f"Over {corr['minutes']} minutes: correlation of errors per minute with lateness p99 "
        f"{'-' if r_lat is None else f'{r_lat:.2f}'}, with work p99 "
        f"{'-' if r_work is None else f'{r_work:.2f}'}; {len(corr['bursts'])} burst minutes."
    )
    store = report["store"]
    out += [
        "",
        f"Store: {store['bytes'] / 2**20:.1f} MB, {store['records']:,} records kept, "
        f"{store['fingerprints']:,} fingerprints, schema {store['schema_version']}; "
        f"dropped: {store['dropped'] or 'none'}.",
    ]
    return "\n".join(out) + "\n"
