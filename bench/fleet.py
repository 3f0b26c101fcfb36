"""Fleet on a real Redis: emergency delay to 20 members, heartbeat cost, ticks lost in an outage.

Three figures (issue 14), each over ROUNDS runs:

* ``emergency``: ``supervisor fleet emergency`` to 20 ``supervisor run``
  processes; per member, from the command's issue time to the wall time of
  its EMERGENCY_SHUTDOWN lifecycle event (the ``entered`` of its ack in the
  fleet's audit stream): p50, p99, max per round (target p99 <= 50 ms);
* ``heartbeat``: one in-process supervisor at 60 Hz with 50 no-op systems,
  with and without a fleet member heartbeating every 100 ms (10x the
  default), interleaved: tick work p99 and lateness p99 (the heartbeat runs
  between ticks: the work must not move), and the CPU one heartbeat record
  costs on the loop's thread, and one read of a 50-member registry (its rows
  checked, then the status section built from them);
* ``outage``: the same supervisor while Redis is stopped for 2 s and
  restarted: ticks run vs ticks due, dropped ticks (target 0 lost);
* ``registry``: Redis's own time (``SLOWLOG``) for one read of the member
  list (``REGISTRY_SCRIPT``) with 20, 200, 1,000 and 10,000 registry entries.

Run: ``python -m bench.fleet [--rounds 3] [--json out.json]`` (needs
``redis-server`` on PATH). The machine is shared: read ``uptime`` beside it.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench._common import parser, write_json
from supervisor import Config, configure_logging
from supervisor._fleet import FleetControl, attach_fleet, member_for
from supervisor._fleet._member import (
    MEMBERS_SHOWN,
    REGISTRY_SCAN,
    REGISTRY_SCRIPT,
    member_rows_from,
)
from supervisor._fleet._protocol import MAX_MESSAGE, Keys
from supervisor.testing import Ticking, make_supervisor

# The real-server harness of the tests: one way to start Redis and a fleet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fleet_harness import fleet_of
from redis_server import redis_server

#: Rounds of each measurement (each emergency round starts 20 fresh members).
ROUNDS = 3
#: Members that get each emergency.
MEMBERS = 20
#: The in-process supervisor: rate, no-op systems, seconds per run.
RATE = 60.0
SYSTEMS = 50
SECONDS = 6.0
#: Records built to time one (the heartbeat's CPU between ticks).
RECORD_CALLS = 2000


#: Registry sizes whose member-list read is timed inside Redis.
REGISTRY_SIZES = (20, 200, 1000, 10_000)
#: Fill a registry: KEYS record prefix, members; ARGV entries, record text.
_PLANT = """
for i = 1, tonumber(ARGV[1]) do
  redis.call('SET', KEYS[1] .. 'm' .. i, ARGV[2], 'EX', 600)
  redis.call('ZADD', KEYS[2], i, 'm' .. i)
end
"""


async def registry_read_us(url: str, size: int, rounds: int) -> list[float]:
    """Redis's own time (SLOWLOG, us) for each of ``rounds`` member-list reads of ``size``."""
    keys = Keys(f"registry{size}")
    async with FleetControl(url, keys.namespace) as control:
        client = control.client
        await client.eval(_PLANT, keys=[keys.member_prefix, keys.members], args=[size, "x" * 400])
        await client.config_set({"slowlog-log-slower-than": 0})
        times = []
        for _ in range(rounds):
            await client.slowlog_reset()
            await client.eval(
                REGISTRY_SCRIPT,
                keys=[keys.members],
                args=[keys.member_prefix, REGISTRY_SCAN, MEMBERS_SHOWN, MAX_MESSAGE],
            )
            # Redis 7 logs the script's own commands too: the EVAL, ending last, is the newest.
            (entry,) = await client.slowlog_get(1)
            assert str(entry.command[0]).upper() == "EVAL", entry.command
            times.append(float(entry.duration))
        await client.config_set({"slowlog-log-slower-than": 10_000})
    return times


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def emergency_round(url: str, namespace: str) -> dict[str, float]:
    """One round: 20 members, one emergency, each member's delay in ms."""

    async def issue_and_read(ids: set[str]) -> list[float]:
        async with FleetControl(url, namespace) as control:
            await control.issue("emergency", reason="bench", origin="bench")
            with trio.fail_after(60):
                while True:
                    entries = await control.audit(200)
                    acks = [e for e in entries if e["kind"] == "ack"]
                    if {e["member"] for e in acks} >= ids:
                        break
                    await trio.sleep(0.1)
        (command,) = [e for e in entries if e["kind"] == "command"]
        return [1000.0 * (e["entered"] - command["time"]) for e in acks]

    with (
        tempfile.TemporaryDirectory(prefix="fleet-bench-") as folder,
        fleet_of(Path(folder), MEMBERS, url=url, namespace=namespace) as members,
    ):
        time.sleep(1.0)  # every member past start-up, ticking
        delays = trio.run(issue_and_read, {m.id for m in members})
    return {
        "members": len(delays),
        "p50_ms": statistics.median(delays),
        "p99_ms": _quantile(delays, 0.99),
        "max_ms": max(delays),
    }


async def _one_run(url: str | None, namespace: str, outage: Any = None) -> dict[str, float]:
    fleet = {} if url is None else {"fleet": {"redis": url, "namespace": namespace,
                                              "heartbeat": "100ms", "timeout": 0.5}}  # fmt: skip
    config = Config.from_mapping({"features": {"optimizer": False}, **fleet}, env={})
    systems = {f"s{i:02d}": Ticking() for i in range(SYSTEMS)}
    sup = make_supervisor(systems, config=config, tick_rate=RATE)
    if url is not None:
        attach_fleet(sup)
    async with trio.open_nursery() as nursery:
        if outage is not None:
            nursery.start_soon(outage)
        summary = await sup.run(duration=SECONDS)
    member = member_for(sup)
    record_us = 0.0
    if member is not None:
        # The heartbeat's own CPU on the loop's thread, between ticks: building its record.
        began = time.perf_counter()
        for _ in range(RECORD_CALLS):
            json.dumps(member.record())
        record_us = (time.perf_counter() - began) / RECORD_CALLS * 1e6
    rows_us = 0.0
    if member is not None:
        # A registry read's CPU on the loop's thread (every 2 heartbeats): a full page of
        # members checked, then the section built from them (as /v1/status does).
        texts = [json.dumps({**member.record(), "id": f"m{i:02d}"}) for i in range(MEMBERS_SHOWN)]
        flat = [x for i, t in enumerate(texts) for x in (f"m{i:02d}", t)]
        reply = [MEMBERS_SHOWN, flat, MEMBERS_SHOWN]
        began = time.thread_time()
        for _ in range(RECORD_CALLS // 10):
            member.members_total, member.members, _ = await member_rows_from(reply)
            member.section()
        rows_us = (time.thread_time() - began) / (RECORD_CALLS // 10) * 1e6
    return {
        "record_us": record_us,
        "rows_us": rows_us,
        "ticks": summary.ticks,
        "due": SECONDS * RATE,
        "dropped": summary.dropped_ticks,
        "work_p99_us": summary.work.p99 * 1e6,
        "lateness_p99_us": summary.lateness.p99 * 1e6,
        "heartbeats": 0 if member is None else member.heartbeats,
        "outages": 0 if member is None else member.outages,
    }


def heartbeat_rounds(url: str, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Interleaved runs without and with a member heartbeating every 100 ms."""
    out: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for i in range(rounds):
        out["without"].append(trio.run(_one_run, None, "hb"))
        out["with"].append(trio.run(_one_run, url, f"hb{i}"))
    return out


def outage_rounds(server: Any, rounds: int) -> list[dict[str, float]]:
    """Runs during which Redis is down for 2 s (from 2 s in) and comes back."""

    async def outage() -> None:
        await trio.sleep(2.0)
        await trio.to_thread.run_sync(server.stop)
        await trio.sleep(2.0)
        await trio.to_thread.run_sync(server.start)

    return [trio.run(_one_run, server.url, f"out{i}", outage) for i in range(rounds)]


def main() -> None:
    """Run every measurement and print it."""
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    args = p.parse_args()
    configure_logging("json", "error")
    figures: dict[str, Any] = {}
    with redis_server() as server:
        figures["emergency"] = [
            emergency_round(server.url, f"bench{i}") for i in range(args.rounds)
        ]
        for r in figures["emergency"]:
            print(
                f"emergency to {r['members']:.0f}: p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
            )
        figures["heartbeat"] = heartbeat_rounds(server.url, args.rounds)
        for label, runs in figures["heartbeat"].items():
            for r in runs:
                print(
                    f"heartbeat {label:7}: work p99 {r['work_p99_us']:.1f} us, "
                    f"lateness p99 {r['lateness_p99_us']:.1f} us, {r['heartbeats']:.0f} beats, "
                    f"one record {r['record_us']:.1f} us, "
                    f"{MEMBERS_SHOWN}-member list {r['rows_us']:.1f} us CPU"
                )
        figures["outage"] = outage_rounds(server, args.rounds)
        for r in figures["outage"]:
            print(
                f"outage: {r['ticks']:.0f} ticks of {r['due']:.0f} due, "
                f"{r['dropped']:.0f} dropped, outages seen {r['outages']:.0f}, "
                f"lateness p99 {r['lateness_p99_us']:.1f} us"
            )
        figures["registry"] = {
            size: trio.run(registry_read_us, server.url, size, args.rounds)
            for size in REGISTRY_SIZES
        }
        for size, times in figures["registry"].items():
            print(
                f"member list read, {size} entries: median {statistics.median(times):.0f} us "
                f"(range {min(times):.0f}-{max(times):.0f}) inside Redis"
            )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
