"""Standby and failover (issue 15): the world lease on a real Redis, and the drill end to end.

The lease scripts: three standbys racing for one expired world get exactly
one winner with a strictly larger token; a start claims only a free lease
or its own; a refresh fails once someone else holds it; a stop on purpose
releases the world so nobody takes it over. Then real processes with real
PostgreSQL: A active, B and C standbys, ``kill -9`` A: one of them ticks A's
world within 5 s with every purchase A acknowledged; A restarted is refused
in one line; a standby with bad settings is refused (exit 2).
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from failover_harness import (
    SUPERVISOR,
    events,
    kill_and_time,
    logs,
    start,
    stop_all,
    wait_for,
    write_config,
)
from pg_server import PgServer, running_pg
from redis_server import RedisServer, redis_server
from test_durability import read_acks
from test_pg_datastore import fresh_db, pg_audit

from supervisor._fleet._failover import (
    Fenced,
    claim,
    owner_key,
    worlds_key,
)
from supervisor._fleet._protocol import Keys
from supervisor._fleet._redis import open_client

_spaces = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


def _keys() -> Keys:
    return Keys(f"fo{next(_spaces)}")


# ---------------------------------------------------------------------- the lease scripts


def test_three_standbys_racing_for_one_world_give_exactly_one_winner(redis: RedisServer) -> None:
    keys = _keys()

    async def main() -> list[object]:
        async with open_client(redis.url, timeout=2.0) as client:
            won = await claim(client, keys, member="A", world="w", hold=0.2, takeover=False)
            assert won.token == 1
            await client.zadd(keys.members, {"A": 1.0})
            await trio.sleep(0.3)  # A's lease expires (A was killed)
        results: list[object] = []

        async def contend(name: str) -> None:
            async with open_client(redis.url, timeout=2.0) as own:
                try:
                    results.append(
                        await claim(own, keys, member=name, world="w", hold=5, takeover=True)
                    )
                except Fenced as exc:
                    results.append(exc)

        async with trio.open_nursery() as nursery:
            for name in ("B", "C", "D"):
                nursery.start_soon(contend, name)
        async with open_client(redis.url, timeout=2.0) as client:
            owner = await client.get(owner_key(keys, "w"))
            worlds = await client.hgetall(worlds_key(keys))
            members = await client.zrange(keys.members, 0, -1)
        return [results, owner, worlds, members]

    results, owner, worlds, members = trio.run(main)
    assert isinstance(results, list)
    winners = [r for r in results if not isinstance(r, Fenced)]
    assert len(winners) == 1, results
    won = winners[0]
    assert won.token == 2  # strictly larger than A's
    assert won.previous == "A"
    assert owner == f"{won.member}:2"
    assert worlds == {"w": won.member}  # the registry entry is the winner's
    assert isinstance(members, list | tuple)
    assert "A" not in members  # the dead member's entry was taken over


def test_a_start_claims_a_free_lease_or_its_own_and_is_refused_otherwise(
    redis: RedisServer,
) -> None:
    keys = _keys()

    async def main() -> None:
        async with open_client(redis.url, timeout=2.0) as client:
            first = await claim(client, keys, member="A", world="w", hold=5, takeover=False)
            # A restarted at once (kill -9, same id): its own lease, a new token.
            again = await claim(client, keys, member="A", world="w", hold=5, takeover=False)
            assert again.token == first.token + 1
            with pytest.raises(Fenced, match="owned by A:2"):
                await claim(client, keys, member="B", world="w", hold=5, takeover=False)
            # A takeover needs an expired lease.
            with pytest.raises(Fenced):
                await claim(client, keys, member="B", world="w", hold=5, takeover=True)
            # A world nobody wants (never claimed, or released) is not taken over.
            with pytest.raises(Fenced):
                await claim(client, keys, member="B", world="other", hold=5, takeover=True)

    trio.run(main)


def test_a_member_that_stops_on_purpose_releases_its_world(
    redis: RedisServer, pg: PgServer, tmp_path: Path
) -> None:
    keys = _keys()
    config = write_config(
        tmp_path / "a",
        pg_url=fresh_db(pg),
        redis_url=redis.url,
        namespace=keys.namespace,
        member="A",
        shared=tmp_path / "shared",
        world="w",
    )
    done = subprocess.run(
        [
            str(SUPERVISOR),
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "a" / "state"),
            "--ticks",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"failover.released"' in done.stderr

    async def read() -> tuple[object, object]:
        async with open_client(redis.url, timeout=2.0) as client:
            return await client.get(owner_key(keys, "w")), await client.hgetall(worlds_key(keys))

    owner, worlds = trio.run(read)
    assert owner is None
    assert worlds == {}  # nobody will take a world stopped on purpose over


@pytest.mark.parametrize(
    ("fleet", "args", "message"),
    [
        ("standby = true\n", (), "needs [fleet] redis and a shared [snapshots] store"),
        ('redis = "{redis}"\nstandby = true\n', (), "needs [fleet] redis and a shared"),
        (
            'redis = "{redis}"\nstandby = true\n',
            ("--resume-from", "w"),
            "chooses the world it takes over",
        ),
        ('redis = "{redis}"\nstandby = "yes"\n', (), "fleet.standby"),
    ],
)
def test_a_standby_with_bad_settings_is_one_line_exit_2(
    redis: RedisServer, tmp_path: Path, fleet: str, args: tuple[str, ...], message: str
) -> None:
    config = tmp_path / "s.toml"
    text = "[features]\napi = false\n[systems]\nenabled = []\n[fleet]\n" + fleet
    if args:
        text += f'[snapshots]\nstore = "{tmp_path / "shared"}"\n'
    config.write_text(text.format(redis=redis.url))
    done = subprocess.run(
        [
            str(SUPERVISOR),
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "st"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert done.stderr.count("\n") == 1  # one line
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- the drill


def _hset(redis: RedisServer, key: str, values: dict[str, str]) -> None:
    async def write() -> None:
        async with open_client(redis.url, timeout=2.0) as client:
            await client.hset(key, values)

    trio.run(write)


def _restart_is_refused(folder: Path, config: Path, winner: str) -> None:
    back = subprocess.run(
        [
            str(SUPERVISOR),
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(folder / "state"),
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert back.returncode == 2, back.stderr[-2000:]
    assert f"world 'alpha' is owned by {winner}:2" in back.stderr
    assert "will not tick it" in back.stderr
    assert back.stderr.count("\n") == 1


def test_the_drill_kill_9_the_active_member_one_standby_takes_over_the_old_one_is_fenced(
    redis: RedisServer, pg: PgServer, tmp_path: Path
) -> None:
    keys = _keys()
    url = fresh_db(pg)
    shared = tmp_path / "shared"
    common: dict[str, Any] = {
        "pg_url": url,
        "redis_url": redis.url,
        "namespace": keys.namespace,
        "shared": shared,
    }
    a_config = write_config(tmp_path / "a", member="A", world="alpha", **common)
    standbys = {
        name: write_config(
            tmp_path / name, member=name, world=f"spare-{name}", standby=True, **common
        )
        for name in ("B", "C", "D")
    }
    a_acks = tmp_path / "a" / "state" / "world.acks"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = start(tmp_path / "a", a_config)
        procs.append(a)
        spares = {name: start(tmp_path / name, cfg) for name, cfg in standbys.items()}
        procs.extend(spares.values())
        wait_for(
            lambda: a_acks.exists() and any((shared / "alpha").glob("snapshot-*")),
            procs,
            what="A acknowledges purchases and writes a shared snapshot",
        )
        wait_for(
            lambda: all('"failover.standby"' in logs(tmp_path / n) for n in standbys),
            procs,
            what="the standbys wait",
        )
        # Hostile or useless entries in the registry: skipped, never taken.
        _hset(redis, worlds_key(keys), {"../../etc": "X", "ghost": "Y"})
        wait_for(
            lambda: all(len(events(tmp_path / n, "failover.skipped")) == 2 for n in standbys),
            procs,
            what="the standbys skip what they cannot take",
        )
        killed = kill_and_time(a)
        acked = read_acks(a_acks)
        assert acked
        others = [p for p in procs if p is not a]
        wait_for(
            lambda: any(events(tmp_path / n, "failover.takeover") for n in standbys),
            others,
            timeout=30,
            what="a standby takes over",
        )
        time.sleep(1.0)  # the others would have won by now if the election were wrong
        winners = [n for n in standbys if events(tmp_path / n, "failover.takeover")]
        assert len(winners) == 1, winners
        winner = winners[0]
        takeover = events(tmp_path / winner, "failover.takeover")[0]
        assert takeover["world"] == "alpha"
        assert takeover["previous_owner"] == "A"
        assert takeover["token"] == 2
        seconds = takeover["first_tick"] - killed
        assert 0 < seconds < 5.0, seconds  # issue 15: within 5 s
        resumed = events(tmp_path / winner, "resume.done")
        assert resumed
        assert resumed[0]["tick"] > 0  # the world's tick count continues
        # The losers still wait; they ticked nothing.
        for name in standbys:
            if name != winner:
                assert spares[name].poll() is None
                assert not events(tmp_path / name, "resume.done")
        # Every purchase A acknowledged is in the database (B writes meanwhile: only
        # the purchases' query, one snapshot; the full audit runs once all stopped).
        assert [p for p in pg_audit(url, acked) if p.startswith("acknowledged")] == []

        # A restarted (its own state, --resume) finds it was replaced: one line, exit 2.
        _restart_is_refused(tmp_path / "a", a_config, winner)
        assert read_acks(a_acks) == acked  # A wrote nothing

        # The takeover is audited in the fleet's stream.
        async def stream() -> list[object]:
            async with open_client(redis.url, timeout=2.0) as client:
                return list(await client.xrange(keys.audit))

        entries = trio.run(stream)
        assert any("takeover" in str(e) and winner in str(e) for e in entries), entries
    finally:
        stop_all(procs)
    assert pg_audit(url, acked) == []


def test_an_owner_cut_off_from_redis_is_replaced_and_stops_without_losing_an_ack(
    redis: RedisServer, pg: PgServer, tmp_path: Path
) -> None:
    """A loses Redis (its user disabled), keeps ticking; B takes over; A is fenced (exit 3).

    A partition, not SIGSTOP: a process frozen in the middle of a COPY holds
    its row locks until it wakes (PostgreSQL holds back a statement timeout
    while it reads the client's COPY data), which would make B's start wait;
    see the README's limits.
    """
    keys = _keys()
    url = fresh_db(pg)
    shared = tmp_path / "shared"
    user = f"a{next(_spaces)}"
    redis.command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all")
    a_redis = redis.url.replace("redis://", f"redis://{user}:pw@")
    common: dict[str, Any] = {"pg_url": url, "namespace": keys.namespace, "shared": shared}
    a_config = write_config(tmp_path / "a", member="A", world="alpha", redis_url=a_redis, **common)
    b_config = write_config(
        tmp_path / "b", member="B", world="spare", standby=True, redis_url=redis.url, **common
    )
    a_acks = tmp_path / "a" / "state" / "world.acks"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = start(tmp_path / "a", a_config, "--exit-on-emergency")
        b = start(tmp_path / "b", b_config)
        procs += [a, b]
        wait_for(
            lambda: a_acks.exists() and any((shared / "alpha").glob("snapshot-*")),
            procs,
            what="A acknowledges purchases and writes a shared snapshot",
        )
        redis.command("ACL", "SETUSER", user, "off")
        redis.command("CLIENT", "KILL", "USER", user)
        wait_for(
            lambda: bool(events(tmp_path / "b", "failover.takeover")),
            [b],
            timeout=30,
            what="B takes over",
        )
        assert a.wait(timeout=30) == 3  # an emergency stop, its state kept
        a_log = logs(tmp_path / "a")
        assert '"datastore.fenced"' in a_log or '"failover.fenced"' in a_log, a_log[-3000:]
        assert b.poll() is None
        newest = max(int(p.stem.split("-")[1]) for p in (shared / "alpha").glob("snapshot-*"))
        time.sleep(1.0)
        later = max(int(p.stem.split("-")[1]) for p in (shared / "alpha").glob("snapshot-*"))
        assert later > newest  # B keeps writing the world's snapshots
    finally:
        stop_all(procs)
    assert pg_audit(url, read_acks(a_acks)) == []  # nothing A acknowledged is missing


LEASE_WORLD = """\
[supervisor]
tick_rate = 50
snapshot_interval = 0.2

[features]
api = false

[systems]
enabled = ["heartbeat"]

[snapshots]
store = "{shared}"
world = "solo"

[fleet]
redis = "{redis}"
namespace = "{namespace}"
id = "A"
heartbeat = "200ms"
"""


def test_a_member_whose_lease_is_taken_stops_and_writes_no_more_shared_snapshots(
    redis: RedisServer, tmp_path: Path
) -> None:
    """The Redis fence alone (no database): the lease overwritten, A stops (exit 3)."""
    keys = _keys()
    shared = tmp_path / "shared"
    folder = tmp_path / "a"
    folder.mkdir()
    config = folder / "world.toml"
    config.write_text(LEASE_WORLD.format(shared=shared, redis=redis.url, namespace=keys.namespace))
    a = start(folder, config, "--exit-on-emergency", "--log-format", "json")
    try:
        wait_for(lambda: any((shared / "solo").glob("snapshot-*")), [a], what="A snapshots")
        wait_for(lambda: bool(events(folder, "fleet.connected")), [a], what="A joins")
        redis.command("SET", owner_key(keys, "solo"), "B:99", "PX", "60000")
        assert a.wait(timeout=30) == 3
    finally:
        stop_all([a])
    fenced = events(folder, "failover.fenced")
    assert len(fenced) == 1
    assert fenced[0]["owner_now"] == "B:99"
    stopped = max(int(p.stem.split("-")[1]) for p in (folder / "state" / "snapshots").glob("s*"))
    in_world = max(int(p.stem.split("-")[1]) for p in (shared / "solo").glob("snapshot-*"))
    assert in_world < stopped  # the emergency snapshot stayed out of the world's folder
    assert any((folder / "state" / "fenced-solo").glob("snapshot-*"))
    assert "fenced: world solo taken over by B:99" in logs(folder)
    # The lease (B's now) was not released by A on its way out.
    assert redis.command("GET", owner_key(keys, "solo")).endswith(b"B:99\r\n")


def test_a_waiting_standby_stops_on_sigterm_with_exit_0(redis: RedisServer, tmp_path: Path) -> None:
    keys = _keys()
    folder = tmp_path / "s"
    folder.mkdir()
    config = folder / "world.toml"
    text = LEASE_WORLD.format(shared=tmp_path / "shared", redis=redis.url, namespace=keys.namespace)
    config.write_text(text.replace('id = "A"', 'id = "S"\nstandby = true'))
    s = start(folder, config, "--log-format", "json")
    try:
        wait_for(lambda: bool(events(folder, "failover.standby")), [s], what="S waits")
        s.send_signal(15)
        assert s.wait(timeout=15) == 0
    finally:
        stop_all([s])
    assert events(folder, "failover.standby_stopped")[0]["signal"] == "SIGTERM"
    assert "Traceback" not in logs(folder)
