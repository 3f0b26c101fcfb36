"""The durable error store: writing, sampling, queries, retention, migrations, SLOs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from supervisor._core._config_sections import SloConfig
from supervisor._core._histogram import LATENCY_BUCKETS, Histogram
from supervisor._core._safecall import ErrorRecord
from supervisor._store._db import FOLD_AFTER, ErrorStore, MinuteRow
from supervisor._store._query import (
    correlation,
    new_fingerprints,
    parse_since,
    pick_bucket,
    records,
    store_info,
    trends,
)
from supervisor._store._sampler import Sampler, p99_of
from supervisor._store._schema import SCHEMA_VERSION, StoreVersionError, connect, migrate, version
from supervisor._store._slo import burn_rate, level

NOW = 1_800_000_000.0  # a minute boundary (divisible by 60 and 3600)


def rec(t: float, fp: str = "fp-a", system: str = "economy", n: int = 0, **kw: Any) -> ErrorRecord:
    return ErrorRecord(
        id=n,
        time=t,
        tick=n,
        system=system,
        hook="tick",
        phase="development",
        exc_type="ValueError",
        message=kw.pop("message", f"boom {n}"),
        traceback=kw.pop("traceback", "Traceback...\nValueError: boom"),
        fingerprint=fp,
        gauges={"players": 3.0},
        health="ok",
        **kw,
    )


def open_store(tmp_path: Path, **kw: Any) -> ErrorStore:
    return ErrorStore.open(tmp_path / "errors.db", now=kw.pop("now", NOW), **kw)


def total_counted(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0])


class TestWrite:
    def test_counts_exact_records_sampled_traceback_once(self, tmp_path: Path) -> None:
        store = open_store(tmp_path, samples_per_minute=3)
        batch = [rec(NOW + i * 0.1, fp=f"fp-{i % 2}", n=i) for i in range(20)]
        store.write(batch[:7])
        store.write(batch[7:])
        conn = store.conn
        assert total_counted(conn) == 20
        # 3 kept per fingerprint per minute: two fingerprints, one minute.
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 6
        assert store.counted_only == 14
        rows = conn.execute("SELECT fingerprint, total, traceback FROM fingerprints").fetchall()
        assert sorted((fp, n) for fp, n, _ in rows) == [("fp-0", 10), ("fp-1", 10)]
        assert all(tb.startswith("Traceback") for _, _, tb in rows)

    def test_an_unformatted_traceback_keeps_the_last_formatted_one(self, tmp_path: Path) -> None:
        store = open_store(tmp_path)
        store.write([rec(NOW)])
        store.write([rec(NOW + 1, traceback="(traceback not formatted: error storm)")])
        tb = store.conn.execute("SELECT traceback FROM fingerprints").fetchone()[0]
        assert tb.startswith("Traceback")

    def test_a_new_run_is_a_new_row_and_the_data_stays(self, tmp_path: Path) -> None:
        store = open_store(tmp_path, config_version="v1")
        store.write([rec(NOW)])
        store.close()
        again = open_store(tmp_path, now=NOW + 10, config_version="v1")
        assert again.run == store.run + 1
        assert total_counted(again.conn) == 1


class TestQueries:
    @pytest.fixture
    def conn(self, tmp_path: Path) -> sqlite3.Connection:
        store = open_store(tmp_path, now=NOW - 7200, config_version="v1")
        # fp-old: steady 2 a minute for two hours; fp-new: a burst in the last minute.
        store.write([rec(NOW - 7200 + m * 60 + s, fp="fp-old") for m in range(120) for s in (1, 2)])
        store.close()
        store = open_store(tmp_path, now=NOW - 30, config_version="v2")
        store.write([rec(NOW - 20 + i * 0.01, fp="fp-new", system="tycoon") for i in range(50)])
        return store.conn

    def test_records_filter_by_since_system_fingerprint(self, conn: sqlite3.Connection) -> None:
        view = records(conn, since=NOW - 600, limit=5)
        assert view["total"] == 50 + 2 * 10
        assert view["counts"] == {"tycoon": 50, "economy": 20}
        assert len(view["records"]) == 5
        assert view["records"][0]["time"] >= view["records"][-1]["time"]
        only = records(conn, since=NOW - 600, system="economy")
        assert only["counts"] == {"economy": 20}
        by_fp = records(conn, fingerprint="fp-n", limit=100, tracebacks=False)
        assert by_fp["total"] == 50
        assert {r["fingerprint"] for r in by_fp["records"]} == {"fp-new"}
        assert all(r["traceback"] is None for r in by_fp["records"])

    def test_trend_buckets_rates_and_movers(self, conn: sqlite3.Connection) -> None:
        t = trends(conn, since=NOW - 3600, now=NOW - 1, bucket=600)
        assert t["bucket"] == 600
        assert len(t["buckets"]) == 6
        series = {s["fingerprint"]: s for s in t["series"]}
        assert sum(series["fp-old"]["counts"]) == 2 * 60
        assert series["fp-new"]["counts"][-1] == 50
        assert series["fp-new"]["rate_now"] == pytest.approx(5.0, rel=0.01)  # 50 in 10 minutes
        assert t["top_movers"][0]["fingerprint"] == "fp-new"
        with pytest.raises(ValueError, match="buckets"):
            trends(conn, since=NOW - 30 * 86400, now=NOW, bucket=60)

    def test_new_since_the_process_and_since_the_config(self, conn: sqlite3.Connection) -> None:
        new = new_fingerprints(conn)
        assert [f["fingerprint"] for f in new["since_process"]] == ["fp-new"]
        assert new["config_version"] == "v2"

    def test_since_parses_durations_and_iso_times(self) -> None:
        assert parse_since("1h", NOW) == NOW - 3600
        assert parse_since("2d", NOW) == NOW - 2 * 86400
        assert parse_since("2027-01-15T08:00:00Z", NOW) == 1_800_000_000.0
        with pytest.raises(ValueError, match="neither"):
            parse_since("yesterday", NOW)
        assert pick_bucket(3600) == 60
        assert pick_bucket(30 * 86400) == 86400


class TestRetention:
    def test_age_removes_and_counts(self, tmp_path: Path) -> None:
        store = open_store(tmp_path, retention_days=1)
        store.write([rec(NOW - 2 * 86400, fp="old"), rec(NOW - 10, fp="recent")])
        gone = store.retain(NOW)
        assert gone["age"] == 1
        assert store.conn.execute("SELECT fingerprint FROM fingerprints").fetchall() == [
            ("recent",)
        ]
        assert dict(store.conn.execute("SELECT * FROM dropped").fetchall())["retention_age"] == 1

    def test_old_minutes_fold_into_hours_exactly(self, tmp_path: Path) -> None:
        store = open_store(tmp_path)
        start = NOW - FOLD_AFTER - 3 * 3600
        store.write([rec(start + m * 60, fp=f"f{m % 3}") for m in range(240)])
        before = total_counted(store.conn)
        gone = store.retain(NOW)
        assert gone["folded"] > 0
        assert total_counted(store.conn) == before == 240
        widths = {w for (w,) in store.conn.execute("SELECT DISTINCT width FROM counts")}
        assert 3600 in widths
        # Folding again changes nothing.
        store.retain(NOW + 1)
        assert total_counted(store.conn) == 240

    def test_old_hours_fold_into_days(self, tmp_path: Path) -> None:
        store = open_store(tmp_path)
        store.write([rec(NOW - 10 * 86400 + h * 3600, fp=f"f{h % 2}") for h in range(48)])
        store.retain(NOW)
        widths = dict(store.conn.execute("SELECT width, count(*) FROM counts GROUP BY width"))
        assert widths == {86400: 2 * 2 + 2}  # two fingerprints over 2 or 3 days
        assert total_counted(store.conn) == 48
        t = trends(store.conn, since=NOW - 11 * 86400, now=NOW, bucket=86400)
        assert sum(sum(s["counts"]) for s in t["series"]) == 48

    def test_size_cap_sheds_oldest_records_and_counts_them(self, tmp_path: Path) -> None:
        store = open_store(tmp_path, max_mb=1, samples_per_minute=1_000_000)
        big = "x" * 400
        for k in range(10):
            store.write([rec(NOW - 3600 + k * 60 + i * 0.001, fp=f"f{i % 50}", message=big)
                         for i in range(1000)])  # fmt: skip
        assert store.used_bytes() > 1024 * 1024
        gone = store.retain(NOW)
        assert gone["size"] > 0
        assert store.used_bytes() <= 1024 * 1024
        assert total_counted(store.conn) == 10_000  # counts are kept whole
        oldest = store.conn.execute("SELECT min(time) FROM records").fetchone()[0]
        assert oldest > NOW - 3600  # the oldest went first
        assert (tmp_path / "errors.db").stat().st_size <= 1.1 * 1024 * 1024


class TestMigrations:
    def test_from_version_1_keeps_data(self, tmp_path: Path) -> None:
        path = tmp_path / "errors.db"
        conn = sqlite3.connect(path, isolation_level=None)
        assert migrate(conn, upto=1) == [1]
        conn.execute("INSERT INTO fingerprints VALUES (1, 'fp', 'E', 'm', NULL, 1.0, 2.0, 7)")
        conn.close()
        conn = connect(path)
        assert version(conn) == SCHEMA_VERSION == 2
        assert conn.execute("SELECT total FROM fingerprints").fetchone()[0] == 7
        assert conn.execute("SELECT count(*) FROM minutes").fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_a_newer_file_is_refused(self, tmp_path: Path) -> None:
        conn = connect(tmp_path / "errors.db")
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
        conn.close()
        with pytest.raises(StoreVersionError, match="version 99"):
            connect(tmp_path / "errors.db")


def minute(m: int, **kw: Any) -> MinuteRow:
    return MinuteRow(minute=int(NOW) + 60 * m, seconds=60.0, **kw)


class TestSlo:
    def test_timeliness_counts_ticks_later_than_the_threshold(self) -> None:
        i = LATENCY_BUCKETS.index(1e-3)
        late = [0] * len(LATENCY_BUCKETS)
        late[i] = 3  # 3 of 1000 ticks later than 1 ms
        slo = SloConfig(name="t", kind="timeliness", target=0.999, lateness_ms=1.0)
        got = level(slo, [minute(0, ticks=1000, late=late)])
        assert got.ratio == pytest.approx(0.997)
        assert got.budget_left == pytest.approx(1 - 3 / 1)  # budget 1 tick, spent 3
        assert burn_rate(slo, [minute(0, ticks=1000, late=late)]) == pytest.approx(3.0)

    def test_error_free_player_minutes(self) -> None:
        slo = SloConfig(name="p", kind="error_free_player_minutes", target=0.99)
        rows = [
            minute(0, player_seconds=60 * 100, errors=5),  # 100 player-minutes, 5 spoilt
            minute(1, player_seconds=60 * 2, errors=50),  # never more than the players
            minute(2, player_seconds=60 * 10, emergency=30.0),  # half the minute in emergency
        ]
        got = level(slo, rows)
        assert got.total == pytest.approx(112)
        assert got.total - got.good == pytest.approx(5 + 2 + 5)

    def test_availability_and_no_data(self) -> None:
        slo = SloConfig(name="a", kind="availability", target=0.9)
        got = level(slo, [minute(0), minute(1, emergency=60.0)])
        assert got.ratio == pytest.approx(0.5)
        assert burn_rate(slo, [minute(0), minute(1, emergency=60.0)]) == pytest.approx(5.0)
        assert level(slo, []).ratio is None
        assert burn_rate(slo, []) == 0.0


class TestSampler:
    def test_minute_rows_from_histogram_differences(self) -> None:
        lateness, work = Histogram(), Histogram()
        s = Sampler(row=MinuteRow(minute=int(NOW)))
        s.sample(NOW + 1, lateness=lateness, work=work, emergency=False, players=0, errors=0)
        for _ in range(98):
            lateness.record(50e-6)
        lateness.record(5e-3)
        lateness.record(5e-3)
        s.sample(NOW + 2, lateness=lateness, work=work, emergency=True, players=4, errors=3)
        row = s.row
        assert row.ticks == 100
        assert row.late[LATENCY_BUCKETS.index(1e-3)] == 2
        assert row.lateness_p99 == 5e-3
        assert (row.seconds, row.emergency, row.player_seconds, row.errors) == (1, 1, 4, 3)
        done = s.sample(
            NOW + 61, lateness=lateness, work=work, emergency=False, players=0, errors=3
        )
        assert done is row
        assert s.row.minute == int(NOW) + 60

    def test_p99_of(self) -> None:
        assert p99_of([0] * len(LATENCY_BUCKETS), 0) == 0.0


class TestCorrelation:
    def test_bursts_with_their_lateness(self, tmp_path: Path) -> None:
        store = open_store(tmp_path)
        for m in range(30):
            burst = m == 20
            store.write_minute(
                minute(m - 40, ticks=3600, errors=1000 if burst else m % 3,
                       lateness_p99=5e-3 if burst else 1e-4, work_p99=1e-3)
            )  # fmt: skip
        got = correlation(store.conn, NOW - 3600, NOW)
        assert got["minutes"] == 30
        assert got["lateness_r"] > 0.9
        assert [b["errors"] for b in got["bursts"]] == [1000]
        assert got["calm_lateness_p99"] == 1e-4
        info = store_info(store.conn)
        assert info["schema_version"] == SCHEMA_VERSION
