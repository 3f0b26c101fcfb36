"""A fleet member: registers in Redis, heartbeats, and acts on the fleet's commands.

:func:`attach_fleet` appends one supervised service to ``sup.services``. It
runs between ticks like every trio task and never inside one: a heartbeat
reads public counters (the tick's own work stays the same, see
``bench/fleet.py``) and does its I/O on the trio loop with every call bounded
by ``[fleet] timeout``. Losing Redis ends the session, nothing else: the
member keeps ticking, its status section says ``disconnected`` with the
error, and it reconnects with a capped, doubling backoff.

A command reaches a member twice over: the pub/sub broadcast (fast,
at-most-once) and the durable flag read at start-up and at every heartbeat
(sure, one heartbeat late at worst). Each flag's generation is acted on once.
The member acts as the API does: ``sup.shutdown(emergency=True, ...)`` and
``sup.change_phase(...)`` with the caller ``fleet:ORIGIN``, then writes the
result to its local audit log (when the run has one) and to the fleet's
audit stream, with the wall time it entered the new phase.

The member also keeps the registry as it stands, for its status section (and
so the dashboard, which shows ``status``): every :data:`REGISTRY_EVERY`
heartbeats (less often past 100 members) one script (:data:`REGISTRY_SCRIPT`,
one round trip) returns the live member count and the first
:data:`MEMBERS_SHOWN` records by id, each cut at
:data:`~._protocol.MAX_MESSAGE` bytes. Whatever it returns is checked like
``supervisor fleet status`` checks it (:func:`._protocol.parse_record`); a
record that is not one is a row with its ``problem``, its id cut short.
"""

from __future__ import annotations

import collections
import json
import math
import os
import socket
import time
import weakref
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._core._config_fleet import NAME_PATTERN, FleetConfig, safe_url
from .._core._control import Caller, Refused
from .._core._phase import Phase
from .._logging import get_logger
from ._protocol import (
    AUDIT_MAXLEN,
    HEARTBEAT_SCRIPT,
    MAX_MESSAGE,
    BadMessage,
    Command,
    Keys,
    parse_command,
    parse_record,
)
from ._redis import open_client

if TYPE_CHECKING:
    import coredis

    from .._core._runtime import Supervisor

__all__ = [
    "FLEET_READS_PER_HEARTBEAT",
    "MEMBERS_SHOWN",
    "RECONNECT_INITIAL",
    "RECONNECT_MAX",
    "REGISTRY_EVERY",
    "REGISTRY_SCAN",
    "REGISTRY_SCRIPT",
    "AuditWriter",
    "FleetAudit",
    "FleetMember",
    "attach_fleet",
    "member_for",
    "member_rows_from",
]

#: Reconnection backoff (seconds): doubling from the first to the cap.
RECONNECT_INITIAL: Final = 0.1
RECONNECT_MAX: Final = 5.0
#: Registry entries not refreshed for this long are pruned from ``NS:members``.
PRUNE_AFTER: Final = 86_400.0
#: Recent actions shown in the status section.
ACTIONS_KEPT: Final = 20
#: Fleet members listed in the status section at most (the first by id; ``members_total``
#: counts them all, up to REGISTRY_SCAN): a page and a status reply stay small at any size.
MEMBERS_SHOWN: Final = 50
#: The registry is read once every this many heartbeats (a view for people, not for failover)...
REGISTRY_EVERY: Final = 2
#: ...or less often in a big fleet: the whole fleet reads it about this many times per
#: heartbeat period, whatever its size (each read costs Redis ~1.5 us per entry looked at,
#: so N members each reading every 2 heartbeats would cost it O(N^2)).
FLEET_READS_PER_HEARTBEAT: Final = 50
#: Registry entries one read looks at, the newest heartbeats first (a live member is always
#: among them unless the fleet has more live members than this: ``members_total`` stops here).
REGISTRY_SCAN: Final = 1000
#: Member records checked between two checkpoints (see :func:`member_rows_from`).
ROWS_PER_SLICE: Final = 10
#: What a member row holds, besides ``age`` (worked out when the section is read).
ROW_FIELDS: Final = (
    "id",
    "host",
    "phase",
    "tick_rate",
    "measured_tick_rate",
    "lateness_p99_ms",
    "players",
    "errors",
    "api",
    "heartbeat",
    "problem",
)

#: Read the registry in one round trip, bounded: the live member count among the ARGV[2]
#: newest registry entries, the first ARGV[3] live records by id (each cut to ARGV[4] + 1
#: bytes: a longer one is refused by the parser) and the registry's size. KEYS: members.
#: ARGV: record key prefix, entries looked at at most, rows, bytes. Returns
#: {total, {id, text, id, text, ...}, entries}; a key that is not a string reads as "", an
#: id is cut at 200 bytes (a member id has at most 128 characters: a longer one is refused).
#: Redis spends ~1.1-1.7 us per entry looked at (`python -m bench.fleet`). The record
#: keys are built here, not passed as KEYS: which ones exist is the question (the fleet's
#: keys are not hash-tagged, so it never ran on Redis Cluster anyway).
REGISTRY_SCRIPT: Final = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'REV')
table.sort(ids)
local shown, total, rows = tonumber(ARGV[3]), 0, {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' then
    total = total + 1
    if total <= shown then
      rows[#rows + 1] = string.sub(id, 1, 200)
      if kind == 'string' then
        rows[#rows + 1] = redis.call('GETRANGE', key, 0, tonumber(ARGV[4]))
      else
        rows[#rows + 1] = ''
      end
    end
  end
end
return {total, rows, redis.call('ZCARD', KEYS[1])}
"""

_MEMBERS: weakref.WeakKeyDictionary[Any, FleetMember] = weakref.WeakKeyDictionary()


@attrs.frozen(kw_only=True)
class FleetAudit:
    """One fleet command a member acted on, for its local audit log."""

    caller: str  # "fleet:ORIGIN"
    action: str  # "fleet_emergency" | "fleet_phase"
    arguments: Mapping[str, Any]
    status: int  # 200 done, 409 refused (as the API would answer)
    detail: str


#: Writes one entry durably (blocking: called on a worker thread); False if it could not.
AuditWriter = Callable[[FleetAudit], bool]


def member_for(sup: object) -> FleetMember | None:
    """The fleet member attached to ``sup``, if any."""
    return _MEMBERS.get(sup)


def attach_fleet(sup: Supervisor, *, audit: AuditWriter | None = None) -> FleetMember | None:
    """Join the fleet ``[fleet] redis`` names for every run of ``sup`` (nothing if unset).

    Appends the member's service to ``sup.services`` and its section to
    ``sup.status_sections["fleet"]``.

    Args:
        sup: the supervisor.
        audit: writes the member's actions to its local audit log.
    """
    config = sup.config.fleet
    if not config.enabled:
        return None
    member = FleetMember(sup, config, audit=audit)
    _MEMBERS[sup] = member
    sup.services.append(member.serve)
    sup.status_sections["fleet"] = member.section
    return member


def _version() -> str:
    try:
        return metadata.version("tick-supervisor")
    except metadata.PackageNotFoundError:
        return "(not installed)"


class FleetMember:
    """The fleet side of one supervisor: its session with Redis and what it has done."""

    def __init__(
        self,
        sup: Supervisor,
        config: FleetConfig,
        *,
        audit: AuditWriter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sup = sup
        self.config = config
        self.keys = Keys(config.namespace)
        self.id = config.member_id()
        self.audit = audit
        self.wall = wall
        self.log = get_logger(component="fleet", member=self.id)
        self._host = socket.gethostname()
        self._version = _version()
        self._started = wall()
        self._api: str | None = None
        #: "connecting" | "connected" | "disconnected" | "left"
        self.state = "connecting"
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.last_heartbeat: float | None = None
        self.heartbeats = 0
        #: Sessions lost (Redis down, a call past the timeout), and sessions opened.
        self.outages = 0
        self.sessions = 0
        #: Messages and flags that were not commands (counted, the first few logged).
        self.rejected = 0
        #: The generation acted on, per durable flag ("emergency", "phase").
        self.acted: dict[str, int] = {}
        self.actions: collections.deque[dict[str, Any]] = collections.deque(maxlen=ACTIONS_KEPT)
        #: The registry at the last read: live members, the first MEMBERS_SHOWN rows by id
        #: (replaced whole at each read, never changed in place), and when it was read.
        self.members_total: int | None = None
        self.members: tuple[dict[str, Any], ...] = ()
        #: Registry entries (live, and gone without leaving within a day) at the last read.
        self.registry_entries: int | None = None
        self.members_read_at: float | None = None
        #: Registry reads that failed (the session goes on: the heartbeat is what matters).
        self.registry_failures = 0
        self.registry_error: str | None = None
        self._client: coredis.Redis[str] | None = None
        self._nursery: trio.Nursery | None = None
        self._busy = 0  # actions in flight; _idle is set when there are none
        self._idle = trio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ status

    def section(self) -> dict[str, Any]:
        """``status_sections["fleet"]``: the session, the heartbeat, the members, the last actions.

        ``members_total`` comes third, so ``supervisor status`` (which shows a
        section's first values on one line, and a list as its length) reads it.
        Each member's ``age`` is its last heartbeat's age now, not at the read.
        """
        now = self.wall()
        return {
            "id": self.id,
            "state": self.state,
            "members_total": self.members_total,
            "redis": safe_url(self.config.redis or ""),
            "namespace": self.config.namespace,
            "connected": self.state == "connected",
            "connected_since": self.connected_since,
            "last_heartbeat": self.last_heartbeat,
            "heartbeat_seconds": self.config.heartbeat_seconds,
            "heartbeats": self.heartbeats,
            "sessions": self.sessions,
            "outages": self.outages,
            "last_error": self.last_error,
            "rejected_messages": self.rejected,
            "acted_generations": dict(self.acted),
            "actions": list(self.actions),
            "members_read_at": self.members_read_at,
            "members_read_every": self.registry_period(),
            "registry_entries": self.registry_entries,
            "registry_failures": self.registry_failures,
            "registry_error": self.registry_error,
            "members": [self._aged(row, now) for row in self.members],
        }

    def registry_period(self) -> float:
        """Seconds between two reads of the registry, for the fleet's size at the last read."""
        # A read looks at REGISTRY_SCAN entries at most: past them it costs no more.
        entries = min(self.registry_entries or 0, REGISTRY_SCAN)
        every = max(REGISTRY_EVERY, math.ceil(entries / FLEET_READS_PER_HEARTBEAT))
        return self.config.heartbeat_seconds * every

    def _aged(self, row: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``row`` with its heartbeat's age now (this member's own: its last heartbeat's)."""
        beat = self.last_heartbeat if row["id"] == self.id else row["heartbeat"]
        return {**row, "age": None if beat is None else max(0.0, now - beat)}

    def record(self) -> dict[str, Any]:
        """This member's registry record now (public counters only: no plugin code runs)."""
        sup = self.sup
        windowed = sup.windows()
        p99 = None
        for label, lateness, _work in windowed.windows:
            if label == "10s" and lateness.count:
                p99 = lateness.p99 * 1000.0
        players = sup.gauges.get("players")
        return {
            "id": self.id,
            "host": self._host,
            "pid": os.getpid(),
            "version": self._version,
            "phase": sup.phase.value,
            "tick_rate": sup.tick_rate,
            "measured_tick_rate": windowed.measured_tick_rate,
            "lateness_p99_ms": p99,
            "players": None if players is None else float(players),
            "errors": sup.errors.total,
            "api": self._api,
            "state_dir": str(sup.state_dir),
            "started": self._started,
            "heartbeat": self.wall(),
        }

    # ------------------------------------------------------------------ the service

    async def serve(
        self, sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The supervised service: sessions with Redis until the run closes.

        Started at once (a fleet that cannot be reached never holds up the
        run); the first session reads the durable flags, so a member started
        during a fleet emergency enters it as soon as it ticks.
        """
        self._api = sup.status().listen  # the API, when there is one, has bound by now
        task_status.started()
        delay = RECONNECT_INITIAL
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while not sup.closing.is_set():
                began = trio.current_time()
                try:
                    await self._session(sup)
                except BaseExceptionGroup as group:
                    # A forced stop cancels the session while coredis tidies up (its
                    # streams then raise ClosedResourceError beside the Cancelled): the
                    # cancellation goes on alone, never a crash of the run.
                    cancelled, _rest = group.split(trio.Cancelled)
                    if cancelled is not None:
                        raise cancelled from None
                    self._lost(group, delay)
                except Exception as exc:  # any failure ends the session; the run goes on
                    self._lost(exc, delay)
                if trio.current_time() - began > 2 * RECONNECT_MAX:
                    delay = RECONNECT_INITIAL  # it was up a good while: a fresh outage
                with trio.move_on_after(delay):
                    await sup.closing.wait()
                delay = min(delay * 2, RECONNECT_MAX)
            self.state = "left"

    async def _session(self, sup: Supervisor) -> None:
        """One connection: subscribe, heartbeat (reading the flags), act, until closing."""
        config = self.config
        assert config.redis is not None
        client = open_client(config.redis, timeout=config.timeout)
        async with (
            client,
            client.pubsub(
                channels=[self.keys.channel],
                ignore_subscribe_messages=True,
                retry_policy=None,  # a lost subscription ends the session: we reconnect
                subscription_timeout=config.timeout,
                max_idle_seconds=max(1.0, config.heartbeat_seconds),
            ) as pubsub,
        ):
            # Subscribed first, flags read second: a command issued between
            # the two arrives both ways (acted on once), never neither.
            await self._beat(client)
            self._client = client
            self.sessions += 1
            self.connected_since = self.wall()
            self.state = "connected"
            self.last_error = None
            self.log.info("fleet.connected", redis=safe_url(config.redis), sessions=self.sessions)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._listen, pubsub)
                    nursery.start_soon(self._heartbeats, client)
                    nursery.start_soon(self._registry_reads, client)
                    await sup.closing.wait()
                    # Answers in flight (an emergency's ack) go out before the client closes.
                    with trio.move_on_after(config.timeout):
                        await self._idle.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._client = None
            with trio.move_on_after(config.timeout):
                await self._leave(client)

    def _lost(self, exc: BaseException, delay: float) -> None:
        first = self.state != "disconnected"
        self.state = "disconnected"
        self.connected_since = None
        self.last_error = _describe(exc)
        if first:
            self.outages += 1
            self.log.warning(
                "fleet.disconnected",
                error=self.last_error,
                outages=self.outages,
                retry_in=delay,
                detail="the supervisor keeps ticking; reconnecting with backoff",
            )

    async def _heartbeats(self, client: coredis.Redis[str]) -> None:
        period = self.config.heartbeat_seconds
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + period, trio.current_time())
            await trio.sleep_until(deadline)
            await self._beat(client)

    async def _beat(self, client: coredis.Redis[str]) -> None:
        """Refresh the record and its TTL; read both durable flags and act on new ones."""
        now = self.wall()
        record = self.record()
        keys = self.keys
        with trio.fail_after(self.config.timeout):
            flags = await client.eval(
                HEARTBEAT_SCRIPT,
                keys=[
                    keys.member(self.id),
                    keys.members,
                    keys.flag("emergency"),
                    keys.flag("phase"),
                ],
                args=[
                    _json(record),
                    int(self.config.ttl_seconds * 1000),
                    self.id,
                    now,
                    now - PRUNE_AFTER,
                ],
            )
        self.heartbeats += 1
        self.last_heartbeat = now
        if isinstance(flags, list | tuple):
            for text in flags:
                if text is not None:
                    self._consider(text, via="flag")

    async def _registry_reads(self, client: coredis.Redis[str]) -> None:
        """Read the registry now and every :data:`REGISTRY_EVERY` heartbeats, for ``section()``.

        Past ``2 x FLEET_READS_PER_HEARTBEAT`` registry entries, every
        ``entries / FLEET_READS_PER_HEARTBEAT`` heartbeats instead (every 20 s
        with 1,000 members and the default 1 s heartbeat), so the fleet's reads
        cost Redis about the same at any size (measured on the shared VM: one
        read 0.1 ms at 20 entries, 0.3 ms at 200, 1.1-1.7 ms at 1,000).

        A failed read is counted and shown, the last list kept (with its
        ``members_read_at``); it never ends the session: Redis lost is what the
        heartbeat finds out, and a registry someone broke (a key of another
        type) must not cut this member off from the fleet's commands.
        """
        deadline = trio.current_time()
        while True:
            try:
                with trio.fail_after(self.config.timeout):
                    reply = await client.eval(
                        REGISTRY_SCRIPT,
                        keys=[self.keys.members],
                        args=[self.keys.member_prefix, REGISTRY_SCAN, MEMBERS_SHOWN, MAX_MESSAGE],
                    )
                listed = await member_rows_from(reply)
                self.members_total, self.members, self.registry_entries = listed
                self.members_read_at = self.wall()
                self.registry_error = None
            except Exception as exc:  # counted and shown; the session goes on
                first = self.registry_error is None
                self.registry_failures += 1
                self.registry_error = _describe(exc)
                if first:
                    self.log.warning(
                        "fleet.registry_failed",
                        error=self.registry_error,
                        failures=self.registry_failures,
                        detail="the member list in status is kept from the last read",
                    )
            deadline = max(deadline + self.registry_period(), trio.current_time())
            await trio.sleep_until(deadline)

    async def _listen(self, pubsub: Any) -> None:
        async for message in pubsub:
            if message.get("type") == "message":
                self._consider(message.get("data"), via="broadcast")

    async def _leave(self, client: coredis.Redis[str]) -> None:
        """A member that stops on purpose leaves the registry (a standby takes over none of it)."""
        await client.delete([self.keys.member(self.id)])
        await client.zrem(self.keys.members, [self.id])

    # ------------------------------------------------------------------ commands

    def _consider(self, text: object, *, via: str) -> None:
        """Act on a command once per generation of its flag; refuse what is not a command."""
        try:
            command = parse_command(text)
        except BadMessage as exc:
            self.rejected += 1
            if self.rejected <= 10 or self.rejected % 1000 == 0:
                self.log.warning(
                    "fleet.rejected", via=via, problem=str(exc), rejected=self.rejected
                )
            return
        if command.action == "clear" or command.generation <= self.acted.get(command.flag, 0):
            return
        self.acted[command.flag] = command.generation
        assert self._nursery is not None
        self._nursery.start_soon(self._act, command, via)

    async def _act(self, command: Command, via: str) -> None:
        self._busy += 1
        self._idle = trio.Event()
        try:
            await self._carry_out(command, via)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def _carry_out(self, command: Command, via: str) -> None:
        sup = self.sup
        await self._until_ticking(sup)
        caller = Caller(name=f"fleet:{command.origin}", role="operator")
        status, detail = 200, ""
        try:
            if command.action == "emergency":
                await sup.shutdown(emergency=True, reason=command.reason, caller=caller)
                detail = "entered emergency_shutdown"
            elif command.phase == sup.phase.value:
                detail = f"already in {command.phase}"
            else:
                assert command.phase is not None
                change = await sup.change_phase(
                    command.phase, force=command.force, reason=command.reason, caller=caller
                )
                detail = f"{change.before} -> {change.after}"
        except Refused as exc:
            status, detail = 409, exc.detail
        entered = _entered(sup, command) if status == 200 else None
        outcome = {
            "generation": command.generation,
            "action": command.action,
            "phase": command.phase,
            "via": via,
            "status": status,
            "detail": detail,
            "entered": entered,
        }
        self.actions.append(outcome)
        self.log.info("fleet.acted", origin=command.origin, **outcome)
        await self._ack(outcome)
        if self.audit is not None:
            entry = FleetAudit(
                caller=caller.name,
                action=f"fleet_{command.action}",
                arguments={
                    "generation": command.generation,
                    "reason": command.reason,
                    "phase": command.phase,
                    "force": command.force,
                    "via": via,
                },
                status=status,
                detail=detail,
            )
            await trio.to_thread.run_sync(self.audit, entry)

    async def _until_ticking(self, sup: Supervisor) -> None:
        """Wait until the run ticks (or stops): actions need started systems to act on."""
        run = sup.run_state
        # The runtime has no "first tick" event; this waits only at start-up (a
        # member started during a fleet emergency), a few milliseconds.
        while run.last_tick_at is None and not run.stopping and run.running:  # noqa: ASYNC110
            await trio.sleep(0.005)

    async def _ack(self, outcome: Mapping[str, Any]) -> None:
        """The member's answer, in the fleet's audit stream (best effort, bounded)."""
        client = self._client
        if client is None:
            return
        with trio.move_on_after(self.config.timeout):
            try:
                await client.eval(
                    "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', "
                    "'kind', 'ack', 'member', ARGV[2], 'ack', ARGV[3])",
                    keys=[self.keys.audit],
                    args=[AUDIT_MAXLEN, self.id, _json(dict(outcome))],
                )
            except Exception as exc:  # the local log and audit keep it; Redis is optional
                self.log.warning("fleet.ack_failed", error=_describe(exc))


async def member_rows_from(reply: object) -> tuple[int, tuple[dict[str, Any], ...], int]:
    """``(members_total, rows, registry_entries)`` from :data:`REGISTRY_SCRIPT`'s reply, checked.

    Each row has exactly :data:`ROW_FIELDS`. A record that is not one (its id not
    a member id, its text not a record :func:`._protocol.parse_record` accepts,
    or a record of another id) is a row with only ``id`` (cut to 60 characters)
    and ``problem``: shown, never trusted.

    Checking a record costs ~8 us of the loop's thread (JSON and every field),
    a full page ~0.4 ms: a checkpoint every :data:`ROWS_PER_SLICE` rows lets a
    tick that falls due start after one slice, not after the page
    (``bench/fleet.py`` prints a page's CPU).

    Raises:
        BadMessage: the reply is not the script's shape (nothing else answers it).
    """
    if not isinstance(reply, list | tuple) or len(reply) != 3:
        raise BadMessage("the registry read did not answer {total, rows, entries}")
    total, flat, entries = reply
    if (
        any(isinstance(n, bool) or not isinstance(n, int) for n in (total, entries))
        or not isinstance(flat, list | tuple)
        or len(flat) % 2
    ):
        raise BadMessage("the registry read did not answer {total, rows, entries}")
    pairs = list(zip(flat[0::2], flat[1::2], strict=True))[:MEMBERS_SHOWN]
    rows = []
    for i, (raw_id, text) in enumerate(pairs):
        if i and not i % ROWS_PER_SLICE:
            await trio.lowlevel.checkpoint()
        rows.append(_member_row(raw_id, text))
    return total, tuple(rows), entries


def _member_row(raw_id: object, text: object) -> dict[str, Any]:
    """One member row: the checked record's fields, or its id and its problem."""
    member_id = raw_id.decode("utf-8", "replace") if isinstance(raw_id, bytes) else str(raw_id)
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    if not NAME_PATTERN.fullmatch(member_id):
        row.update(id=member_id[:60], problem="not a member id")
        return row
    try:
        record = parse_record(text)
    except BadMessage as exc:
        row.update(id=member_id, problem=f"unreadable record: {exc}")
        return row
    if record["id"] != member_id:
        row.update(id=member_id, problem="the record names another member")
    else:
        row.update({k: record[k] for k in ROW_FIELDS if k in record})
    return row


def _entered(sup: Supervisor, command: Command) -> float | None:
    """Wall time the supervisor entered the command's phase (its lifecycle event), if it did."""
    target = Phase.EMERGENCY_SHUTDOWN.value if command.action == "emergency" else command.phase
    for event in reversed(sup.phase_history):
        if event.after == target:
            return event.time
    return None


def _describe(exc: BaseException) -> str:
    """One line naming a failure: its type and message (groups by their first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
