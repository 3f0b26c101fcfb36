"""The fleet member and control plane against a real ``redis-server`` (issue 14), in process.

One Redis per module; each test takes its own namespace. The supervisors
run on trio's real clock (Redis does real I/O), at 50 Hz, with a tiny world.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio
from polling import wait_until
from redis_server import RedisServer, redis_server

from supervisor import Config, Supervisor
from supervisor._fleet import FleetAudit, FleetControl, FleetMember, attach_fleet, member_for
from supervisor._fleet._member import (
    FLEET_READS_PER_HEARTBEAT,
    MEMBERS_SHOWN,
    REGISTRY_SCAN,
    REGISTRY_SCRIPT,
    ROW_FIELDS,
    member_rows_from,
)
from supervisor._fleet._protocol import MAX_MESSAGE, BadMessage, Keys
from supervisor.testing import Ticking, make_supervisor

TICK_RATE = 50.0
_names = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return f"t{next(_names)}"


def fleet_config(redis: RedisServer, namespace: str, **fleet: Any) -> Config:
    return Config.from_mapping(
        {
            "fleet": {
                "redis": redis.url,
                "namespace": namespace,
                "heartbeat": "100ms",
                "timeout": 0.5,
                **fleet,
            }
        },
        env={},
    )


def member(config: Config, audit: list[FleetAudit] | None = None) -> Supervisor:
    sup = make_supervisor([Ticking()], config=config, tick_rate=TICK_RATE)

    def write(entry: FleetAudit) -> bool:
        assert audit is not None
        audit.append(entry)
        return True

    attach_fleet(sup, audit=None if audit is None else write)
    return sup


async def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``probe`` every 20 ms until it is truthy."""
    return await wait_until(probe, timeout, what, every=0.02)


async def control(redis: RedisServer, namespace: str) -> AsyncIterator[FleetControl]:
    async with FleetControl(redis.url, namespace) as c:
        yield c


def connected(sup: Supervisor) -> bool:
    fleet = member_for(sup)
    return fleet is not None and fleet.state == "connected" and fleet.heartbeats > 0


async def run_connected(nursery: trio.Nursery, sup: Supervisor) -> FleetMember:
    """Start ``sup`` (30 s at most) in ``nursery``; its fleet member, once connected."""
    nursery.start_soon(lambda: sup.run(duration=30))
    await wait_for(lambda: connected(sup), 20, "the member to connect")
    fleet = member_for(sup)
    assert fleet is not None
    return fleet


class TestRegistry:
    async def test_a_member_registers_with_its_figures_and_a_ttl(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """The record carries id, phase, rates, p99, errors; its key expires without heartbeats."""
        sup = member(fleet_config(redis, namespace, id="alpha"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.run(duration=30))
            await wait_for(lambda: connected(sup), 20, "the member to connect")
            async with FleetControl(redis.url, namespace) as c:
                await trio.sleep(1.2)  # a 10 s window has samples after a second
                listed = await c.members()
                (record,) = listed["members"]
                assert record["id"] == "alpha"
                assert record["phase"] == "development"
                assert record["tick_rate"] == TICK_RATE
                assert record["errors"] == 0
                assert record["age"] < 1.0
                ttl = int(redis.command("PTTL", f"{namespace}:member:alpha")[1:].split(b"\r")[0])
                assert 0 < ttl <= 300  # heartbeat 100 ms x missed 3
                section = sup.status().as_dict()["fleet"]
                assert section["state"] == "connected"
                assert section["id"] == "alpha"
            sup.stop()
        async with FleetControl(redis.url, namespace) as c:
            listed = await c.members()
        # A member that stops on purpose leaves: neither live nor gone.
        assert listed["members"] == []
        assert listed["gone"] == []


class TestCommands:
    async def test_an_emergency_reaches_every_member_by_broadcast_and_is_audited(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """Three members enter EMERGENCY_SHUTDOWN; each acks in the stream and audits locally."""
        audits: list[list[FleetAudit]] = [[], [], []]
        sups = [member(fleet_config(redis, namespace, id=f"m{i}"), audits[i]) for i in range(3)]
        async with trio.open_nursery() as nursery:
            for sup in sups:
                nursery.start_soon(functools.partial(sup.run, duration=30, exit_on_emergency=False))
            await wait_for(lambda: all(connected(s) for s in sups), 30, "three members")
            async with FleetControl(redis.url, namespace) as c:
                generation, receivers = await c.issue(
                    "emergency", reason="exploit found", origin="cli:test@host"
                )
                assert receivers == 3
                await wait_for(
                    lambda: all(s.phase.value == "emergency_shutdown" for s in sups),
                    15,
                    "every member in emergency",
                )
                entries = await wait_for(lambda: _acks(c, 3), 15, "three acks in the audit stream")
            for sup in sups:
                sup.stop()
        assert {e["member"] for e in entries if e["kind"] == "ack"} == {"m0", "m1", "m2"}
        for sup, audit in zip(sups, audits, strict=True):
            assert sup.emergency_reason is not None
            assert "exploit found" in sup.emergency_reason
            (entry,) = audit
            assert entry.action == "fleet_emergency"
            assert entry.status == 200
            assert entry.caller == "fleet:cli:test@host"
            assert entry.arguments["generation"] == generation

    async def test_a_late_starter_reads_the_durable_flag_and_enters_the_emergency(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """Issued with no member up, an emergency reaches one started later; clear lifts it."""
        async with FleetControl(redis.url, namespace) as c:
            await c.issue("emergency", reason="before you came", origin="cli:test@host")
        late = member(fleet_config(redis, namespace, id="late"))
        with trio.fail_after(10):
            summary = await late.run(duration=30)
        assert summary.emergency
        assert "before you came" in (late.emergency_reason or "")
        (action,) = member_for(late).actions  # type: ignore[union-attr]
        assert action["via"] == "flag"
        async with FleetControl(redis.url, namespace) as c:
            await c.issue("clear", reason="fixed", origin="cli:test@host")
        later = member(fleet_config(redis, namespace, id="later"))
        with trio.fail_after(10):
            summary = await later.run(duration=1.0)
        assert not summary.emergency

    async def test_a_phase_command_moves_members_and_a_refusal_is_audited(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """Refused by the member's gate (409, audited), then forced; each acted on once."""
        audit: list[FleetAudit] = []
        sup = member(fleet_config(redis, namespace, id="p"), audit)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.run(duration=30))
            await wait_for(lambda: connected(sup), 20, "the member to connect")
            async with FleetControl(redis.url, namespace) as c:
                await c.issue("phase", reason="qa", origin="cli:test@host", phase="testing")
                await wait_for(lambda: audit, 15, "the refusal")
                await trio.sleep(0.5)  # several heartbeats read the same flag again
                await c.issue(
                    "phase", reason="qa", origin="cli:test@host", phase="testing", force=True
                )
            await wait_for(lambda: sup.phase.value == "testing", 15, "the phase change")
            await trio.sleep(0.5)
            sup.stop()
        refused, done = audit
        assert refused.action == done.action == "fleet_phase"
        assert refused.status == 409
        assert "requires an API token" in refused.detail
        assert done.status == 200
        assert done.detail == "development -> testing"
        assert done.arguments["force"] is True


async def _acks(c: FleetControl, n: int) -> list[dict[str, Any]] | None:
    entries = await c.audit(100)
    return entries if sum(e["kind"] == "ack" for e in entries) >= n else None


class TestHostileRedis:
    async def test_garbage_on_the_channel_and_in_the_flags_is_counted_not_acted_on(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """Anyone with Redis access can publish: non-commands are rejected and counted."""
        sup = member(fleet_config(redis, namespace, id="h"))
        keys = Keys(namespace)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: sup.run(duration=30))
            await wait_for(lambda: connected(sup), 20, "the member to connect")
            bad = [
                "not json",
                "[]",
                json.dumps({"generation": True, "action": "emergency"}),
                json.dumps({"generation": 5, "action": "rm -rf", "reason": "", "origin": "",
                            "time": 1}),
                json.dumps({"generation": 5, "action": "phase", "phase": "emergency_shutdown",
                            "reason": "", "origin": "", "time": 1}),
                json.dumps({"generation": 5, "action": "emergency", "reason": "x" * 10_000,
                            "origin": "", "time": 1}),
                "{" * 100_000,
            ]  # fmt: skip
            for text in bad:
                redis.command("PUBLISH", keys.channel, text)
            redis.command("SET", keys.flag("emergency"), "garbage")
            now = str(time.time())  # (older ones are pruned by the next heartbeat)
            redis.command("ZADD", keys.members, now, "[red]x y*")
            redis.command("ZADD", keys.members, now, "fake")
            redis.command("SET", keys.member("fake"), '{"id": "fake"}')
            async with FleetControl(redis.url, namespace) as c:
                listed = await c.members()
            assert [m["id"] for m in listed["members"]] == ["h"]
            assert {g["problem"] for g in listed["gone"]} == {
                "not a member id",
                "unreadable record: not a member record",
            }
            assert listed["flags"]["emergency"] == {"problem": "unreadable flag: not JSON"}
            fleet = member_for(sup)
            assert fleet is not None
            await wait_for(lambda: fleet.rejected >= len(bad) + 1, 15, "every message rejected")
            assert sup.phase.value == "development"
            sup.stop()


class TestOutage:
    async def test_redis_down_and_back_loses_no_tick_and_reconnects(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """The member says disconnected, keeps ticking on time, and is back after Redis returns."""
        sup = member(fleet_config(redis, namespace, id="o"))
        async with trio.open_nursery() as nursery:
            fleet = await run_connected(nursery, sup)
            before = sup.tick
            start = trio.current_time()
            await trio.to_thread.run_sync(redis.stop)
            await wait_for(lambda: fleet.state == "disconnected", 15, "the outage to be seen")
            await trio.sleep(1.0)
            await trio.to_thread.run_sync(redis.start)
            await wait_for(lambda: connected(sup) and fleet.sessions >= 2, 30, "reconnection")
            elapsed = trio.current_time() - start
            ticks = sup.tick - before
            assert fleet.outages == 1
            assert sup.dropped_ticks == 0
            # Every tick of the outage ran: the tick count follows the clock.
            assert ticks >= int(elapsed * TICK_RATE) - 2
            sup.stop()


class TestForcedStop:
    async def test_a_forced_stop_mid_session_is_only_a_cancellation(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """A second Ctrl-C cancels the run: coredis's tidy-up errors must not crash it."""
        sup = member(fleet_config(redis, namespace, id="f"))
        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: sup.run(duration=30))
                await wait_for(lambda: connected(sup), 20, "the member to connect")
                await trio.sleep(0.3)  # heartbeats and the subscription in flight
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught


def planted_record(member_id: str, **changes: Any) -> str:
    """A member record as a member writes it (the fields ``parse_record`` wants)."""
    record = {
        "id": member_id,
        "host": "box",
        "pid": 7,
        "version": "1.0",
        "phase": "production",
        "tick_rate": 30.0,
        "measured_tick_rate": 29.9,
        "lateness_p99_ms": 0.25,
        "players": 12.0,
        "errors": 3,
        "api": None,
        "state_dir": "/srv/w",
        "started": 1.0,
        "heartbeat": time.time(),
        **changes,
    }
    return json.dumps(record)


def plant(redis: RedisServer, keys: Keys, member_id: str, text: str) -> None:
    """A registry entry written straight into Redis (as a member would, or anyone who can)."""
    redis.command("SET", keys.member(member_id), text, "EX", "60")
    redis.command("ZADD", keys.members, str(time.time()), member_id)


class TestMemberList:
    async def test_rows_have_one_shape_and_hostile_entries_become_problems(self) -> None:
        """Every row has exactly the row fields; an id that is not one is cut, a bad record or
        one naming another member is a problem row; the rows are cut to MEMBERS_SHOWN."""
        good = planted_record("a1", heartbeat=100.0)
        hostile = "<img src=x onerror=alert(1)>" + "x" * 200
        total, rows, entries = await member_rows_from(
            [3, ["a1", good, hostile, good, "a2", "not json", "a3", planted_record("zz")], 9]
        )
        assert (total, entries) == (3, 9)
        assert [set(r) for r in rows] == [set(ROW_FIELDS)] * 4
        assert rows[0] == {
            "id": "a1", "host": "box", "phase": "production", "tick_rate": 30.0,
            "measured_tick_rate": 29.9, "lateness_p99_ms": 0.25, "players": 12.0,
            "errors": 3.0, "api": None, "heartbeat": 100.0, "problem": None,
        }  # fmt: skip
        assert rows[1]["id"] == hostile[:60]
        assert rows[1]["problem"] == "not a member id"
        assert rows[2]["problem"] == "unreadable record: not JSON"
        assert rows[3]["problem"] == "the record names another member"
        assert all(r["host"] is None for r in rows[1:])
        many = [x for i in range(MEMBERS_SHOWN + 5) for x in (f"m{i:03d}", good)]
        total, rows, _entries = await member_rows_from([MEMBERS_SHOWN + 5, many, 70])
        assert (total, len(rows)) == (MEMBERS_SHOWN + 5, MEMBERS_SHOWN)
        bad = ([1, []], [True, [], 0], [1, ["odd"], 1], ["1", [], 0], [1, "ab", 0], [1, [], None])
        for reply in (None, [], [1], *bad):
            with pytest.raises(BadMessage):
                await member_rows_from(reply)

    def test_a_big_fleet_reads_the_registry_less_often(self, redis: RedisServer) -> None:
        """Every 2 heartbeats up to 100 entries; past them the fleet as a whole reads it about
        FLEET_READS_PER_HEARTBEAT times per heartbeat period (1,000 members: every 20, and no
        less often: a read never looks at more than 1,000 entries)."""
        fleet = member_for(member(fleet_config(redis, "period")))
        assert fleet is not None
        periods = []
        for entries in (None, 20, 100, 101, 1000, 20_000):
            fleet.registry_entries = entries
            periods.append(round(fleet.registry_period(), 6))
        assert periods == [0.2, 0.2, 0.2, 0.3, 2.0, 2.0]
        assert FLEET_READS_PER_HEARTBEAT == 50

    async def test_the_section_lists_the_first_members_by_id_and_counts_them_all(
        self, redis: RedisServer, namespace: str
    ) -> None:
        """60 planted members and 5 hostile entries beside the real one: ``members_total`` 66,
        the first 50 by id listed (hostile ones as problems), each age read now; a member that
        expired or left is no longer counted."""
        keys = Keys(namespace)
        for i in range(60):
            plant(redis, keys, f"p{i:02d}", planted_record(f"p{i:02d}"))
        plant(redis, keys, "<img src=x onerror=alert(1)>", planted_record("x"))
        plant(redis, keys, "big", planted_record("big", host="h" * 100_000))
        plant(redis, keys, "other", planted_record("someone-else"))
        plant(redis, keys, "!" * 100_000, planted_record("x"))  # cut at 200 bytes by Redis
        redis.command("HSET", keys.member("wrongtype"), "id", "wrongtype")
        redis.command("ZADD", keys.members, str(time.time()), "wrongtype")
        redis.command("ZADD", keys.members, str(time.time()), "expired")  # no record
        sup = member(fleet_config(redis, namespace, id="m-self"))
        async with trio.open_nursery() as nursery:
            fleet = await run_connected(nursery, sup)
            await wait_for(lambda: fleet.members_total == 66, 10, "the registry read")
            section = sup.status().as_dict()["fleet"]
            assert list(section)[:3] == ["id", "state", "members_total"]
            rows = section["members"]
            assert len(rows) == MEMBERS_SHOWN
            ids = [r["id"] for r in rows]
            assert ids[:5] == ["!" * 60, "<img src=x onerror=alert(1)>", "big", "m-self", "other"]
            assert ids[5:] == [f"p{i:02d}" for i in range(45)]
            by_id = {r["id"]: r for r in rows}
            assert by_id["<img src=x onerror=alert(1)>"]["problem"] == "not a member id"
            assert by_id["!" * 60]["problem"] == "not a member id"
            assert by_id["big"]["problem"].startswith("unreadable record: not a JSON text")
            assert by_id["other"]["problem"] == "the record names another member"
            me = by_id["m-self"]
            assert (me["phase"], me["tick_rate"], me["problem"]) == ("development", TICK_RATE, None)
            assert 0.0 <= me["age"] < 5.0
            assert section["registry_failures"] == 0
            assert section["registry_entries"] == 67  # the 66 and "expired"
            async with FleetControl(redis.url, namespace) as c:
                reply = await c.client.eval(
                    REGISTRY_SCRIPT,
                    keys=[keys.members],
                    args=[keys.member_prefix, REGISTRY_SCAN, MEMBERS_SHOWN, MAX_MESSAGE],
                )
            assert isinstance(reply, list)
            assert max(len(i) for i in reply[1][0::2]) == 200  # Redis sends no more of an id
            redis.command("DEL", keys.member("p00"), keys.member("wrongtype"))
            await wait_for(lambda: fleet.members_total == 64, 10, "the next read")
            assert "p00" not in {r["id"] for r in sup.status().as_dict()["fleet"]["members"]}
            sup.stop()
