"""The durable error store: the tick's share of an error, a storm with the store on, sizes.

Four measurements, in this one process:

- ``sink``: what recording an error costs the tick once the store is on:
  the core's guarded call of the shipper's sink (an append to a deque),
  ns per error, best of 5 x 200,000;
- ``storm``: 60 Hz x 167 failing systems = 10,000 errors/s from 1,000 code
  sites with the store, its analytics (minute samples, SLOs) and the alerts
  (:data:`ALERTS`: the production rules' metrics and SLO burn rates,
  evaluated once a second) on, versus the same systems not failing (all
  on), the storm with the store alone, and the storm with everything off,
  for ``--seconds`` each on the real clock, interleaved: tick lateness p99,
  errors stored, the writer process's CPU;
- ``ingest``: ten minutes of 10,000 errors/minute over 1,000 fingerprints
  written in 0.25 s batches: write time per record, bytes per record;
- ``month``: a store shaped like 30 days at 10,000 errors/minute over 1,000
  fingerprints after retention (daily counts past 7 days, hourly counts to
  6 hours, minute counts for the last six hours, a minute row per minute,
  records up to the cap):
  its size, and the time of the ``errors --trend --since 30d`` query.

Run: ``python -m bench.error_store [--seconds S] [--json FILE]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench import _common
from bench.storm import FAILING, RATE, Storm
from supervisor import Config, Supervisor, configure_logging
from supervisor._alerts import attach_alerts
from supervisor._core._safecall import ErrorRecord
from supervisor._store._db import FOLD_AFTER, ErrorStore, MinuteRow
from supervisor._store._query import records, trends
from supervisor._store._schema import connect
from supervisor._store._shipper import ErrorShipper, attach_error_store
from supervisor.testing import FIXED_FACTS

SECONDS = 10.0
#: The alerts of a storm run with "alerts on": the production rules' metrics, and
#: SLO burn rates (multi-window), read from the store once a second.
ALERTS: dict[str, Any] = {
    "rules": [
        {"name": "errors", "when": "errors_per_minute > 600", "for": "0s", "severity": "page"},
        {"name": "new", "when": "new_fingerprints > 0", "for": "0s", "severity": "ticket"},
        {"name": "late", "when": "tick_lateness_p99_ms > 10", "for": "0s", "severity": "page"},
        {"name": "dropped", "when": "dropped_ticks_per_minute > 30", "severity": "ticket"},
        {"name": "quarantined", "when": "quarantined_systems > 0", "severity": "page"},
        {"name": "rss", "when": "rss_mb > 2048", "severity": "ticket"},
        {"name": "burn", "when": 'slo_burn_rate{slo="ticks",window="1h"} > 14.4',
         "severity": "page"},
    ]
}  # fmt: skip
SLO: dict[str, Any] = {"ticks": {"kind": "timeliness", "target": 0.999, "lateness_ms": 5}}
FINGERPRINTS = 1000
PER_MINUTE = 10_000


def record(t: float, i: int) -> ErrorRecord:
    return ErrorRecord(
        id=i, time=t, tick=i, system=f"s{i % FINGERPRINTS % 167}", hook="tick",
        phase="production",
        exc_type="ValueError", message=f"storm at site {i % FINGERPRINTS} player 12345",
        traceback="Traceback (most recent call last):\n  File \"<site>\", line 1\n"
        "ValueError: storm", fingerprint=f"{i % FINGERPRINTS:016x}",
        gauges={"players": 40.0, "tick_ms": 1.5}, health="ok",
    )  # fmt: skip


def sink_cost(folder: Path) -> float:
    """ns per error of the core's guarded call of the sink (best of 5)."""
    sup = Supervisor(Config(), facts=FIXED_FACTS, persist=False)
    shipper = ErrorShipper(path=folder / "unused.db")
    rec = record(time.time(), 1)
    sup.record_sinks.append(shipper.sink)
    deliver = sup._recorder._deliver  # the guarded call of every sink, as a record is made
    n = 200_000
    best = float("inf")
    for _ in range(5):
        shipper.packed.clear()
        start = time.perf_counter()
        for _ in range(n):
            deliver(rec)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e9


def storm(folder: Path, *, fail: bool, store: bool, alerts: bool, seconds: float) -> dict[str, Any]:
    config = Config.from_mapping(
        {
            "recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0, "history": 100},
            "features": {"optimizer": False, "api": False},
            **({"alerts": ALERTS, "slo": SLO} if alerts else {}),
        },
        env={},
    )
    state = Path(tempfile.mkdtemp(dir=folder))
    sup = Supervisor(config, tick_rate=RATE, facts=FIXED_FACTS, persist=False, state_dir=state)
    for i in range(FAILING):
        sup.register(Storm(i, mode="distinct" if fail else "baseline"), name=f"s{i}")
    shipper = attach_error_store(sup) if store else None
    fired: set[str] = set()
    if alerts:
        assert shipper is not None
        engine = attach_alerts(sup, burn_rate=shipper.slo_burn_rate)
        assert engine is not None
        engine.on_firing.append(lambda rule: fired.add(rule.name))
    trio.run(lambda: sup.run(duration=seconds))
    stored, size = 0, 0
    if store:
        conn = connect(state / "errors.db", readonly=True)
        stored = conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0]
        size = (state / "errors.db").stat().st_size
        conn.close()
    stats = sup.statistics()
    return {
        "mode": ("10,000 errors/s, 1,000 fingerprints" if fail else "no errors")
        + (", store and alerts on" if alerts else ", store on" if store else ", store off"),
        "errors_per_second": sup.errors.total / seconds,
        "stored": stored,
        "recorded": sup.errors.total,
        "dropped": dict(shipper.dropped) if shipper else {},
        "lateness_p50_us": stats.lateness.p50 * 1e6,
        "lateness_p99_us": stats.lateness.p99 * 1e6,
        "work_p99_ms": stats.work.p99 * 1e3,
        "file_mb": size / 2**20,
        "writer_cpu_percent": 100 * shipper.write_cpu / seconds if shipper else 0.0,
        "alerts_fired": sorted(fired),
    }


def ingest(folder: Path) -> dict[str, Any]:
    """Ten minutes at PER_MINUTE, batches of a quarter second."""
    start_t = 1_800_000_000.0
    store = ErrorStore.open(folder / "ingest.db", now=start_t)
    batch = PER_MINUTE // 240
    total, spent = 0, 0.0
    for b in range(10 * 240):
        t0 = start_t + b * 0.25
        recs = [record(t0 + k * 0.25 / batch, total + k) for k in range(batch)]
        began = time.perf_counter()
        store.write(recs)
        spent += time.perf_counter() - began
        total += batch
    store.close()
    size = (folder / "ingest.db").stat().st_size
    conn = connect(folder / "ingest.db", readonly=True)
    kept = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    rows = conn.execute("SELECT count(*) FROM counts").fetchone()[0]
    conn.close()
    return {
        "records": total,
        "write_us_per_record": spent / total * 1e6,
        "bytes_per_error": size / total,
        "records_kept": kept,
        "count_rows": rows,
        "bytes_per_kept_record_upper_bound": size / kept,
        "file_mb": size / 2**20,
    }


def month(folder: Path) -> dict[str, Any]:
    """A store as 30 days at PER_MINUTE leave it after retention; its size and query times."""
    now = 1_800_000_000.0
    path = folder / "month.db"
    store = ErrorStore.open(path, now=now - 30 * 86400, max_mb=100)
    store.write([record(now - 30 * 86400 + i, i) for i in range(FINGERPRINTS)])  # fingerprints
    per_fp_minute = PER_MINUTE // FINGERPRINTS
    conn = store.conn
    fold = int(now - FOLD_AFTER) // 3600 * 3600
    conn.execute("BEGIN")
    conn.execute("DELETE FROM counts")
    conn.executemany(
        "INSERT INTO counts VALUES (?, 3600, ?, ?, ?)",
        ((h, fp, f"s{fp % 167}", per_fp_minute * 60)
         for h in range(int(now - 30 * 86400) // 3600 * 3600, fold, 3600)
         for fp in range(1, FINGERPRINTS + 1)),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO counts VALUES (?, 60, ?, ?, ?)",
        ((m, fp, f"s{fp % 167}", per_fp_minute)
         for m in range(fold, int(now), 60) for fp in range(1, FINGERPRINTS + 1)),
    )  # fmt: skip
    conn.execute("COMMIT")
    for m in range(int(now - 30 * 86400), int(now), 60):
        store.write_minute(MinuteRow(minute=m, seconds=60, ticks=3600, late=[3600, 100, 5],
                                     lateness_p99=1e-4, work_p99=1e-3, player_seconds=2400,
                                     errors=PER_MINUTE))  # fmt: skip
    store.retain(now)  # folds hours older than 7 days into days
    counts_bytes = store.used_bytes()
    count_rows = store.conn.execute("SELECT count(*) FROM counts").fetchone()[0]
    # Whole records fill the rest, up to the cap (retention sheds the oldest).
    t, i = now - 6 * 3600, 0
    while store.used_bytes() < 100 * 2**20 * 0.98:
        store.write([record(t + k * 0.006, i + k) for k in range(10_000)])
        t, i = t + 60, i + 10_000
    gone = store.retain(now)
    store.close()
    size = path.stat().st_size
    conn = connect(path, readonly=True)
    kept = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    times = []
    for _ in range(5):
        began = time.perf_counter()
        trends(conn, since=now - 30 * 86400, now=now, bucket=86400)
        times.append(time.perf_counter() - began)
    rtimes = []
    for _ in range(5):
        began = time.perf_counter()
        records(conn, since=now - 86400, limit=20)
        rtimes.append(time.perf_counter() - began)
    conn.close()
    return {
        "counts_and_minutes_mb": counts_bytes / 2**20,
        "count_rows": count_rows,
        "file_mb": size / 2**20,
        "records_kept": kept,
        # Whole records are samples: 5 per fingerprint per minute (the default).
        "sample_hours": kept / (5 * FINGERPRINTS * 60),
        "retention": gone,
        "trend_30d_query_ms": statistics.median(times) * 1e3,
        "records_query_ms": statistics.median(rtimes) * 1e3,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the four measurements and print them."""
    parser = _common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--runs", type=int, default=1, help="storm rounds, interleaved")
    parser.add_argument("--storm-only", action="store_true", help="skip ingest and 30 days")
    args = parser.parse_args(argv)
    configure_logging("json", "warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out: dict[str, Any] = {"sink_ns": sink_cost(folder)}
        print(f"sink: {out['sink_ns']:.0f} ns per error (the tick's share)")
        modes = [(False, True, True), (True, True, True), (True, True, False), (True, False, False)]
        # Not reported: the first run in a process pays imports and first-time costs.
        storm(folder, fail=True, store=True, alerts=True, seconds=2.0)
        out["storm"] = [
            storm(folder, fail=f, store=s, alerts=a, seconds=args.seconds)
            for _ in range(args.runs)
            for f, s, a in modes
        ]
        print(
            "| run | errors/s | stored | dropped | lateness p50 µs | p99 µs | work p99 ms "
            "| writer CPU % | alerts fired |"
        )
        print("|---|---:|---:|---|---:|---:|---:|---:|---|")
        for r in out["storm"]:
            print(f"| {r['mode']} | {r['errors_per_second']:,.0f} | {r['stored']:,} | "
                  f"{r['dropped'] or '-'} | {r['lateness_p50_us']:.0f} | "
                  f"{r['lateness_p99_us']:.0f} | {r['work_p99_ms']:.2f} | "
                  f"{r['writer_cpu_percent']:.1f} | "
                  f"{', '.join(r['alerts_fired']) or '-'} |")  # fmt: skip
        for mode in dict.fromkeys(r["mode"] for r in out["storm"]):
            p99s = [round(r["lateness_p99_us"]) for r in out["storm"] if r["mode"] == mode]
            print(f"{mode}: lateness p99 median {statistics.median(p99s):.0f} µs of {p99s}")
        if args.storm_only:
            _common.write_json(args.json, out)
            return out
        out["ingest"] = ingest(folder)
        print("ingest:", out["ingest"])
        out["month"] = month(folder)
        print("30 days:", out["month"])
    _common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
