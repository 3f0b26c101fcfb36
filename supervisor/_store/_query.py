"""Reading the store: records, groups, trends, top movers, new fingerprints, correlation.

Plain functions over a read-only ``sqlite3`` connection (no trio): the API
runs them in a worker thread, ``supervisor report`` runs them directly on
the file. Every answer is JSON-ready and says the period it covers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from typing import Any, Final

from .._core._config_sections import parse_duration
from ._db import MinuteRow

__all__ = [
    "correlation",
    "new_fingerprints",
    "parse_since",
    "pick_bucket",
    "records",
    "store_info",
    "trends",
]

#: The widest count row (a day, once folded): a row starting this long before
#: a period may still reach into it.
_WIDEST: Final = 86_400
#: Trend bucket widths (seconds) chosen when none is given.
_BUCKETS: Final = (60, 300, 900, 3600, 6 * 3600, 86_400)
#: About this many buckets in a trend with no bucket given.
_AIM_BUCKETS: Final = 60


def parse_since(text: str, now: float) -> float:
    """The time ``text`` names: a duration ago (``"1h"``, ``"2d"``) or an ISO time (UTC if naive).

    Raises:
        ValueError: neither.
    """
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration ('1h', '2d') nor an ISO time ('2026-12-01T17:00')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def pick_bucket(span: float) -> int:
    """A bucket width giving about _AIM_BUCKETS buckets over ``span`` seconds."""
    return next((b for b in _BUCKETS if span / b <= _AIM_BUCKETS), _BUCKETS[-1])


#: Most series (fingerprint x system) a trend answer holds; the rest are summed in ``other``.
MAX_SERIES: Final = 50
#: Most buckets in one trend answer (a smaller bucket over a long period is refused).
MAX_BUCKETS: Final = 2000
#: A burst: a minute with more errors than the mean plus this many standard deviations.
BURST_SIGMAS: Final = 3.0


def _where(
    since: float | None, system: str | None, fingerprint: str | None, time_col: str
) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1"]
    args: list[Any] = []
    if since is not None:
        clauses.append(f"{time_col} >= ?")
        args.append(since)
    if system is not None:
        clauses.append("system = ?")
        args.append(system)
    if fingerprint is not None:
        # A prefix, as the CLI shows fingerprints cut to 12 characters.
        clauses.append(
            "fp IN (SELECT id FROM fingerprints WHERE fingerprint >= ? AND fingerprint < ?)"
        )
        args.extend((fingerprint, fingerprint + "\U0010ffff"))
    return " AND ".join(clauses), args


def records(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    system: str | None = None,
    fingerprint: str | None = None,
    limit: int = 20,
    tracebacks: bool = True,
) -> dict[str, Any]:
    """Stored records (newest first) and groups, shaped like the in-memory ``error_view``.

    ``counts`` and ``total`` are exact (from the counts); ``records`` are the
    kept samples. ``tracebacks=False`` leaves them out (production).
    """
    where, args = _where(since, system, fingerprint, "r.time")
    rows = conn.execute(
        "SELECT r.id, r.time, r.tick, r.system, r.hook, r.phase, f.exc_type, r.message, "
        "f.traceback, f.fingerprint, r.gauges, r.health, r.kind, r.stack FROM records r "
        f"JOIN fingerprints f ON f.id = r.fp WHERE {where} ORDER BY r.time DESC LIMIT ?",
        [*args, limit],
    ).fetchall()
    keys = ("id", "time", "tick", "system", "hook", "phase", "exc_type", "message",
            "traceback", "fingerprint", "gauges", "health", "kind", "stack")  # fmt: skip
    out = []
    for row in rows:
        d = dict(zip(keys, row, strict=True))
        d["gauges"] = json.loads(d["gauges"])
        if not tracebacks:
            d["traceback"] = d["stack"] = None
        out.append(d)
    cwhere, cargs = _where(since, system, fingerprint, "bucket + width - 1")
    if since is not None:  # lets the primary key find the first row
        cwhere += " AND bucket > ?"
        cargs.append(since - _WIDEST)
    groups = conn.execute(
        "SELECT f.fingerprint, g.system, f.exc_type, f.message, g.n, "
        "max(f.first_seen, g.first), min(f.last_seen, g.last) FROM "
        "(SELECT fp, system, sum(n) AS n, min(bucket) AS first, max(bucket + width) AS last "
        f"FROM counts WHERE {cwhere} GROUP BY fp, system) g "
        "JOIN fingerprints f ON f.id = g.fp ORDER BY g.n DESC",
        cargs,
    ).fetchall()
    counts: dict[str, int] = {}
    for g in groups:
        counts[g[1]] = counts.get(g[1], 0) + g[4]
    gkeys = ("fingerprint", "system", "exc_type", "message", "count", "first_seen", "last_seen")
    return {
        "source": "store",
        "since": since,
        "records": out,
        "groups": [dict(zip(gkeys, g, strict=True)) for g in groups[:limit]],
        "counts": counts,
        "total": sum(counts.values()),
    }


def trends(
    conn: sqlite3.Connection,
    *,
    since: float,
    now: float,
    bucket: float = 3600.0,
    system: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Counts per bucket per (fingerprint, system) from ``since`` to ``now``, with movers.

    The rate "now" is errors per minute over the last bucket (the part of it
    that has passed), "previous" over the bucket before it; top movers are
    the series whose rate changed most.
    Hourly counts (older than six hours) land whole in the bucket of their
    hour's start.

    Raises:
        ValueError: more than MAX_BUCKETS buckets.
    """
    width = max(60, int(bucket))
    start = int(since) // width * width
    n_buckets = (int(now) - start) // width + 1
    if n_buckets > MAX_BUCKETS:
        raise ValueError(
            f"{n_buckets} buckets of {width}s: at most {MAX_BUCKETS}; widen the bucket"
        )
    where, args = _where(None, system, fingerprint, "")
    # Summed per (fingerprint id, system, bucket) first, named after: the
    # join then runs once per group, not once per count row.
    rows = conn.execute(
        "SELECT f.fingerprint, g.system, f.exc_type, f.message, f.first_seen, g.i, g.n FROM "
        "(SELECT fp, system, (bucket - ?) / ? AS i, sum(n) AS n FROM counts c "
        f"WHERE bucket > ? AND bucket + width > ? AND bucket <= ? AND {where} "
        "GROUP BY fp, system, i) g JOIN fingerprints f ON f.id = g.fp",
        [start, width, since - _WIDEST, since, now, *args],
    ).fetchall()
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for fp, sys_name, exc_type, message, first_seen, index, n in rows:
        s = series.setdefault(
            (fp, sys_name),
            {"fingerprint": fp, "system": sys_name, "exc_type": exc_type, "message": message,
             "first_seen": first_seen, "counts": [0] * n_buckets},
        )  # fmt: skip
        s["counts"][min(max(int(index), 0), n_buckets - 1)] += n
    # The last bucket is under way: its rate is over the part that has passed.
    elapsed = min(float(width), max(1.0, now - (start + (n_buckets - 1) * width)))
    out = []
    for s in series.values():
        counts = s["counts"]
        s["total"] = sum(counts)
        s["rate_now"] = counts[-1] * 60.0 / elapsed
        s["rate_previous"] = (counts[-2] if n_buckets > 1 else 0) * 60.0 / width
        s["change"] = s["rate_now"] - s["rate_previous"]
        out.append(s)
    out.sort(key=lambda s: -s["total"])
    movers = sorted(out, key=lambda s: -abs(s["change"]))[:5]
    return {
        "since": since,
        "until": now,
        "bucket": width,
        "buckets": [start + i * width for i in range(n_buckets)],
        "series": out[:MAX_SERIES],
        "other": [sum(c) for c in zip(*(s["counts"] for s in out[MAX_SERIES:]), strict=True)]
        if len(out) > MAX_SERIES
        else [],
        "top_movers": [
            {
                k: s[k]
                for k in (
                    "fingerprint",
                    "system",
                    "exc_type",
                    "rate_now",
                    "rate_previous",
                    "change",
                )
            }
            for s in movers
            if s["change"]
        ],
    }


def new_fingerprints(conn: sqlite3.Connection) -> dict[str, Any]:
    """Fingerprints first seen since this process started and since its config version did.

    The process is the latest run in the store; the config version's start
    is the first run with the same config hash.
    """
    run = conn.execute(
        "SELECT started, config_version FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if run is None:
        return {"process_started": None, "config_started": None, "since_process": [],
                "since_config": []}  # fmt: skip
    started, version = run
    config_started = conn.execute(
        "SELECT min(started) FROM runs WHERE config_version = ?", (version,)
    ).fetchone()[0]

    def since(t: float) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT fingerprint, exc_type, message, first_seen, last_seen, total "
            "FROM fingerprints WHERE first_seen >= ? ORDER BY first_seen DESC LIMIT 100",
            (t,),
        ).fetchall()
        keys = ("fingerprint", "exc_type", "message", "first_seen", "last_seen", "total")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    return {
        "process_started": started,
        "config_version": version,
        "config_started": config_started,
        "since_process": since(started),
        "since_config": since(config_started),
    }


def minutes(conn: sqlite3.Connection, since: float, until: float) -> list[MinuteRow]:
    """The minute rows from ``since`` to ``until``."""
    rows = conn.execute(
        "SELECT * FROM minutes WHERE minute + 60 > ? AND minute <= ? ORDER BY minute",
        (since, until),
    ).fetchall()
    return [MinuteRow.from_row(r) for r in rows]


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    import statistics  # noqa: PLC0415 - loaded with the first trends query

    try:
        r = statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # one of them constant
        return None
    return r if math.isfinite(r) else None


def correlation(conn: sqlite3.Connection, since: float, until: float) -> dict[str, Any]:
    """Do error bursts go with late or long ticks? Per minute, over the period.

    ``lateness_r`` and ``work_r`` are Pearson correlations of the minute's
    error count with its tick lateness p99 and work p99 (None: too few
    minutes, or one side constant). ``bursts`` are the minutes with more
    errors than the mean plus BURST_SIGMAS standard deviations, each with
    its lateness and work p99 next to the median of the other minutes.
    """
    rows = [r for r in minutes(conn, since, until) if r.ticks]
    errors = [float(r.errors) for r in rows]
    out: dict[str, Any] = {
        "minutes": len(rows),
        "lateness_r": _pearson(errors, [r.lateness_p99 for r in rows]),
        "work_r": _pearson(errors, [r.work_p99 for r in rows]),
        "bursts": [],
    }
    if len(rows) < 3:
        return out
    import statistics  # noqa: PLC0415 - loaded with the first trends query

    mean, sd = statistics.fmean(errors), statistics.pstdev(errors)
    bursts = [r for r in rows if r.errors > mean + BURST_SIGMAS * sd and r.errors > 0]
    calm = [r for r in rows if r not in bursts] or rows
    out["calm_lateness_p99"] = statistics.median(r.lateness_p99 for r in calm)
    out["calm_work_p99"] = statistics.median(r.work_p99 for r in calm)
    out["bursts"] = [
        {"minute": r.minute, "errors": r.errors, "lateness_p99": r.lateness_p99,
         "work_p99": r.work_p99}
        for r in bursts[-20:]
    ]  # fmt: skip
    return out


def store_info(conn: sqlite3.Connection) -> dict[str, Any]:
    """Size, row counts, schema version and what retention and the queue dropped."""
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]

    def count(table: str) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    return {
        "schema_version": conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0],
        "bytes": pages * page,
        "used_bytes": (pages - free) * page,
        "records": count("records"),
        "fingerprints": count("fingerprints"),
        "count_rows": count("counts"),
        "errors_counted": conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0],
        "dropped": dict(conn.execute("SELECT reason, n FROM dropped").fetchall()),
        "runs": count("runs"),
    }
