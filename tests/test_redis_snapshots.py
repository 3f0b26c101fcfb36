"""Shared snapshots in Redis (``[snapshots] store = "redis://..."``), against a real redis-server.

The store keeps the local store's promises (``tests/test_snapshot.py``) in
Redis: the local file's bytes exactly, one atomic write per snapshot,
``snapshot_generations`` kept and older ones deleted, newer ticks kept
aside, a damaged newest falling back to the previous generation. A Redis
that is down or frozen never stops the run: the local snapshot is written,
the failure counted and shown in ``status``, the next snapshot tries again.
End to end: a world killed with SIGKILL continues on another supervisor
from Redis and PostgreSQL with every acknowledged purchase.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import failover_harness as harness
import pytest
import redis
from cli_harness import SUPERVISOR, running_supervisor
from pg_server import PgServer, running_pg
from redis_server import RedisServer, redis_server
from test_durability import read_acks
from test_pg_datastore import fresh_db, pg_audit
from test_shared_snapshots import kill_9_when, resume_elsewhere, world_config

from supervisor._core._config import Config
from supervisor._core._snapshot_format import Snapshot
from supervisor._core._snapshot_shared import (
    SharedSnapshotStore,
    open_snapshot_store,
    shared_status,
)
from supervisor._errors import ConfigError
from supervisor._fleet._snapshots import MAX_FIELDS, RedisSnapshotStore, register_redis_store

register_redis_store()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis(port=server.port)
    conn.flushdb()
    yield conn
    conn.close()


def _open(tmp_path: Path, url: str, world: str = "w1", **more: object) -> SharedSnapshotStore:
    section: dict[str, object] = {"store": url, "world": world, **more}
    config = Config.from_mapping({"snapshots": section}, base_dir=tmp_path)
    store = open_snapshot_store(tmp_path / f"local-{world}", config)
    assert isinstance(store, SharedSnapshotStore)
    assert isinstance(store.shared, RedisSnapshotStore)
    return store


def _snap(tick: int, **systems: Any) -> Snapshot:
    return Snapshot(tick=tick, phase="development", reason="periodic", time=1.0, systems=systems)


HASH = b"supervisor:snapshots:{w1}"
ALPHA = "supervisor:snapshots:{alpha}"


class TestStore:
    def test_every_write_is_the_local_bytes_and_generations_are_trimmed(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """The hash holds the 3 newest ticks, each exactly the local file's bytes."""
        store = _open(tmp_path, server.url)
        for tick in (10, 20, 30, 40):
            store.write(_snap(tick, counter={"n": tick}))
        assert sorted(int(f) for f in client.hkeys(HASH)) == [20, 30, 40]
        for tick in (20, 30, 40):
            local = (tmp_path / "local-w1" / f"snapshot-{tick}.msgpack").read_bytes()
            assert client.hget(HASH, str(tick)) == local
        snap, problems = store.shared.latest()
        assert problems == []
        assert snap is not None
        assert (snap.tick, snap.meta["world"], snap.systems) == (40, "w1", {"counter": {"n": 40}})
        assert (store.writes, store.failures, store.error, store.last_tick) == (4, 0, None, 40)

    def test_a_damaged_newest_falls_back_to_the_previous_generation(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """A flipped byte in tick 30 (the checksum inside the bytes) is reported; 20 is used."""
        store = _open(tmp_path, server.url)
        for tick in (10, 20, 30):
            store.write(_snap(tick))
        raw = client.hget(HASH, "30")
        assert isinstance(raw, bytes)
        data = bytearray(raw)
        data[-5] ^= 0xFF
        client.hset(HASH, "30", bytes(data))
        client.hset(HASH, "not-a-tick", b"left alone")
        reader = store.shared.for_world("w1")
        snap, problems = reader.latest()
        assert snap is not None
        assert snap.tick == 20
        assert len(problems) == 1
        assert "snapshot-30.msgpack" in str(problems[0])
        assert str(problems[0]).startswith(f"redis:127.0.0.1:{server.port}/0/")

    def test_newer_ticks_are_kept_aside_never_deleted(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """Writing tick 15 after 20 and 30 (another timeline): 20 and 30 move to the aside hash."""
        store = _open(tmp_path, server.url)
        for tick in (10, 20, 30):
            store.write(_snap(tick))
        store.write(_snap(15))
        assert sorted(int(f) for f in client.hkeys(HASH)) == [10, 15]
        aside = client.hkeys(HASH + b":aside")
        assert sorted(f.split(b"/")[1] for f in aside if isinstance(f, bytes)) == [b"20", b"30"]

    def test_a_tick_someone_else_wrote_is_moved_aside_not_overwritten(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """Like the local store: only this store's own ticks are replaced in place."""
        other = _open(tmp_path / "other", server.url)
        other.write(_snap(5, who={"x": "other"}))
        theirs = client.hget(HASH, "5")
        mine = _open(tmp_path, server.url)
        mine.write(_snap(5, who={"x": "mine"}))
        aside = client.hgetall(HASH + b":aside")
        assert list(aside.values()) == [theirs]
        snap, _ = mine.shared.latest()
        assert snap is not None
        assert snap.systems == {"who": {"x": "mine"}}
        mine.write(_snap(5, who={"x": "again"}))  # its own tick: replaced, nothing more aside
        assert client.hlen(HASH + b":aside") == 1

    def test_a_fenced_member_never_writes_the_world_in_redis_again(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """After ``fence`` (its lease taken over) its snapshots go to a local folder only."""
        store = _open(tmp_path, server.url)
        store.write(_snap(1))
        store.fence(tmp_path / "fenced-w1")
        store.write(_snap(2))
        assert [int(f) for f in client.hkeys(HASH)] == [1]
        assert (tmp_path / "fenced-w1" / "snapshot-2.msgpack").exists()
        assert (store.writes, store.failures) == (2, 0)

    def test_a_snapshot_over_max_mb_stays_local_with_one_line(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """max_mb = 1: a 2 MiB snapshot is written locally, not sent, and said so once."""
        store = _open(tmp_path, server.url, max_mb=1)
        path = store.write(_snap(7, blob={"b": b"x" * (2 << 20)}))
        assert path.exists()
        assert client.hlen(HASH) == 0
        assert store.failures == 1
        assert store.error is not None
        assert "over [snapshots] max_mb = 1: kept locally only" in store.error
        assert "\n" not in store.error

    def test_oversized_and_foreign_values_are_refused_unread(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """A 2 MiB value under max_mb = 1 is refused by its length; a huge hash is not listed."""
        store = _open(tmp_path, server.url, max_mb=1)
        store.write(_snap(3))
        client.hset(HASH, "9", b"\0" * (2 << 20))
        snap, problems = store.shared.latest()
        assert snap is not None
        assert snap.tick == 3
        assert "too large" in str(problems[0])
        client.hset(HASH, mapping={str(n): b"" for n in range(MAX_FIELDS + 1)})
        snap, problems = store.shared.latest()
        assert snap is None
        assert "not a snapshot hash" in str(problems[0])

    def test_a_snapshot_made_with_another_key_is_refused(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """The HMAC travels inside the bytes: a reader with another key rejects them."""

        def keyed(key: str) -> SharedSnapshotStore:
            config = Config.from_mapping(
                {
                    "supervisor": {"snapshot_key": key},
                    "snapshots": {"store": server.url, "world": "w1"},
                },
                base_dir=tmp_path,
            )
            store = open_snapshot_store(tmp_path / key[:4], config)
            assert isinstance(store, SharedSnapshotStore)
            return store

        keyed("a" * 32).write(_snap(4))
        snap, problems = keyed("b" * 32).shared.latest()
        assert snap is None
        assert problems


class TestOutage:
    def test_redis_down_keeps_the_local_write_counts_and_recovers(self, tmp_path: Path) -> None:
        """Stopped Redis: local snapshot written, failure counted once per outage; back: written."""
        with redis_server() as own:
            store = _open(tmp_path, own.url)
            store.write(_snap(1))
            own.stop()
            started = time.monotonic()
            assert store.write(_snap(2)).exists()
            assert store.write(_snap(3)).exists()
            assert time.monotonic() - started < 5  # bounded: refused at once, no retry loop
            status = shared_status(store)
            assert status["failures"] == 2
            assert status["writes"] == 1
            assert "ConnectionError" in status["error"]
            own.start()
            store.write(_snap(4))
            assert shared_status(store) | {"error": None} == shared_status(store)
            assert store.writes == 2
            assert store.last_tick == 4

    def test_a_frozen_redis_fails_the_write_within_the_timeout(self, tmp_path: Path) -> None:
        """SIGSTOP'd Redis: the write gives up after TIMEOUT (2 s), the local file is there."""
        with redis_server() as own:
            store = _open(tmp_path, own.url)
            store.write(_snap(1))
            assert own.proc is not None
            os.kill(own.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                assert store.write(_snap(2)).exists()
                assert time.monotonic() - started < 4.5
            finally:
                os.kill(own.proc.pid, signal.SIGCONT)
            assert store.failures == 1
            assert "Timeout" in (store.error or "")


class TestConfig:
    def test_the_password_never_shows(
        self, tmp_path: Path, server: RedisServer, client: redis.Redis
    ) -> None:
        """status, error lines and ``config show`` never print the URL's password."""
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
        store = _open(tmp_path, url)
        store.write(_snap(1))
        text = json.dumps(shared_status(store))
        assert "s3cret" not in text
        assert f"redis:127.0.0.1:{server.port}/0/supervisor:snapshots:{{w1}}" in text
        down = _open(tmp_path / "down", "redis://user:s3cret-pw@127.0.0.1:1/0")
        down.write(_snap(1))
        assert down.failures == 1
        assert "s3cret" not in json.dumps(shared_status(down))
        toml = tmp_path / "c.toml"
        toml.write_text(f'[snapshots]\nstore = "{url}"\n')
        shown = subprocess.run(
            [str(SUPERVISOR), "config", "show", "--config", str(toml), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "s3cret" not in shown.stdout

    def test_a_url_scheme_nobody_registered_is_one_config_error(self, tmp_path: Path) -> None:
        """``rediss://`` is registered; a scheme with no factory names the key."""
        config = Config.from_mapping({"snapshots": {"store": "redis://h/0"}}, base_dir=tmp_path)
        from supervisor._core import _snapshot_shared

        saved = dict(_snapshot_shared._FACTORIES)
        _snapshot_shared._FACTORIES.clear()
        try:
            with pytest.raises(ConfigError, match=r"snapshots\.store.*no store is registered"):
                open_snapshot_store(tmp_path, config)
        finally:
            _snapshot_shared._FACTORIES.update(saved)


# ---------------------------------------------------------------------- end to end

RUN = """
[supervisor]
snapshot_interval = 0.2
[systems]
enabled = ["heartbeat"]
[api]
listen = "unix:s.sock"
[snapshots]
store = "{url}"
world = "e2e"
"""


def _status(run: Any) -> dict[str, Any]:
    done = run.ctl("status", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _until(probe: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def test_a_run_ticks_through_a_frozen_then_stopped_redis_and_status_shows_it() -> None:
    """The tick never waits on Redis: frozen, then stopped, then back; status says each."""
    with redis_server() as own, running_supervisor(RUN.format(url=own.url)) as run:
        assert own.proc is not None

        def shared() -> dict[str, Any]:
            section: dict[str, Any] = _status(run)["snapshots_shared"]
            return section

        def tick() -> int:
            return int(_status(run)["tick"])

        _until(lambda: shared()["writes"] >= 2, "two shared writes")
        os.kill(own.proc.pid, signal.SIGSTOP)
        try:
            before = tick()
            _until(lambda: shared()["failures"] >= 1, "a failure while Redis is frozen")
            assert tick() > before + 20  # 20 Hz: it kept ticking through the 2 s timeout
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
        _until(lambda: shared()["error"] is None, "recovery after SIGCONT")
        own.stop()
        failed = _until(lambda: (s := shared())["error"] and s, "a failure while Redis is down")
        assert "ConnectionError" in failed["error"]
        local = list((run.folder / "var" / "snapshots").glob("snapshot-*.msgpack"))
        assert local  # the local snapshots go on
        own.start()
        back = _until(lambda: (s := shared())["error"] is None and s, "recovery after restart")
        assert back["writes"] > failed["writes"]
        assert redis.Redis(port=own.port).hlen("supervisor:snapshots:{e2e}") >= 1
        assert run.proc.poll() is None
        assert '"snapshots.shared_failed"' in run.log()
        assert '"snapshots.shared_recovered"' in run.log()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with running_pg() as started:
        yield started


def test_resume_from_redis_after_kill_9_keeps_every_acknowledged_purchase(
    pg: PgServer, server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """A (Redis store, PostgreSQL) is killed with SIGKILL; B resumes world alpha from Redis."""
    url = fresh_db(pg)
    a_config = world_config(tmp_path / "a", url, "alpha", server.url)
    b_config = world_config(tmp_path / "b", url, "beta", server.url)
    acked = kill_9_when(tmp_path / "a", a_config, lambda: client.hlen(ALPHA) >= 2)
    newest = max(int(f) for f in client.hkeys(ALPHA))
    resumed = resume_elsewhere(tmp_path / "b", b_config, "alpha", url, acked)
    assert resumed["tick"] == newest  # continued from Redis's newest snapshot
    assert max(int(f) for f in client.hkeys(ALPHA)) > newest  # B went on writing world alpha
    assert not client.exists("supervisor:snapshots:{beta}")  # B became alpha


def test_failover_from_a_redis_store_the_standby_takes_the_world_from_redis(
    pg: PgServer, server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    """The failover drill with snapshots in Redis: kill -9 A, B ticks alpha from Redis's newest."""
    url = fresh_db(pg)
    common: dict[str, Any] = {
        "pg_url": url,
        "redis_url": server.url,
        "namespace": f"rs{time.monotonic_ns()}",
        "shared": server.url,
    }
    a_config = harness.write_config(tmp_path / "a", member="A", world="alpha", **common)
    b_config = harness.write_config(
        tmp_path / "b", member="B", world="spare", standby=True, **common
    )
    a_acks = tmp_path / "a" / "state" / "world.acks"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = harness.start(tmp_path / "a", a_config)
        b = harness.start(tmp_path / "b", b_config)
        procs += [a, b]
        harness.wait_for(
            lambda: (
                a_acks.exists()
                and client.hlen(ALPHA) >= 1
                and '"failover.standby"' in harness.logs(tmp_path / "b")
            ),
            procs,
            what="A acknowledges purchases and shares a snapshot; B waits",
        )
        killed = harness.kill_and_time(a)
        newest = max(int(f) for f in client.hkeys(ALPHA))
        acked = read_acks(a_acks)
        assert acked
        harness.wait_for(
            lambda: bool(harness.events(tmp_path / "b", "resume.done")),
            [b],
            timeout=30,
            what="B takes alpha over",
        )
        harness.wait_for(
            lambda: bool(harness.events(tmp_path / "b", "failover.takeover")),
            [b],
            timeout=10,
            what="B logs its takeover",
        )
        takeover = harness.events(tmp_path / "b", "failover.takeover")
        assert takeover[0]["world"] == "alpha"
        # How fast is bench.failover's to measure (--store redis); here: after the kill.
        assert takeover[0]["first_tick"] > killed
        assert harness.events(tmp_path / "b", "resume.done")[0]["tick"] == newest
        harness.wait_for(
            lambda: max(int(f) for f in client.hkeys(ALPHA)) > newest,
            [b],
            what="B writes world alpha's snapshots to Redis",
        )
    finally:
        harness.stop_all(procs)
    assert pg_audit(url, acked) == []  # every purchase A acknowledged is there
