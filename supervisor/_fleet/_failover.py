"""Standby and failover: one owner per world, a Redis lease with a fencing token (issue 15).

The design (reconciling the fleet's and the datastore's proposals)
------------------------------------------------------------------
One key is both the election lock and the fence: ``NS:owner:WORLD`` holds
``"ID:TOKEN"`` with a TTL of the fleet's ``heartbeat x missed``, where
``TOKEN = INCR NS:fence:WORLD`` -- strictly larger at every change of owner.
A separate takeover lock (``SET fleet:takeover:W NX``) plus a generation
counter would be two keys doing what this one does; a single key taken by
one Lua script (check, ``INCR``, ``SET PX``, all atomic in Redis) cannot
give two winners and cannot leave a lock without its token.

* ``NS:worlds`` (a hash WORLD -> member id) lists the worlds that should be
  running and who runs them. A member that stops on purpose (a normal stop,
  an emergency) deletes its lease and its entry: nobody takes over a world
  someone stopped. A member killed with ``kill -9`` or on a lost host leaves
  its entry behind with its lease expiring: that is what a standby looks for.
* A member with a world (``[snapshots] store``) claims the lease before it
  builds anything and refreshes it every heartbeat, only while it is still
  its own (compare-and-refresh, one round trip). If the lease names someone
  else, the member was replaced: at start-up it refuses in one line
  (exit 2); running, it stops writing the shared snapshots and requests an
  emergency stop (``failover.fenced``). The database has its own fence (the
  PostgreSQL datastore bumps ``meta.owner`` when a world is opened, and
  every commit checks it), so an old owner that cannot reach Redis still
  cannot write money.
* A standby (``[fleet] standby = true``) ticks nothing until it takes a world
  over: its supervisor is built but starts no system, opens no database,
  only polls Redis (four times per heartbeat). When a world's lease has expired it takes it with
  the same script (only if still expired: exactly one standby wins), then
  does what ``supervisor run --resume-from WORLD`` does -- the newest shared
  snapshot, the money from the database -- continuing the world's tick count.
  It takes over the registry entry: the dead member's id leaves
  ``NS:members`` and ``NS:worlds`` names the new owner. The takeover is
  logged (``failover.takeover``), audited locally and in the fleet's audit
  stream, and recorded as an incident (``supervisor report``).
* Worlds are skipped while the fleet's durable emergency flag is set, and so
  is a world whose newest shared snapshot was written by an emergency stop,
  one with no valid shared snapshot, and a name from Redis that is not a
  world name (checked before it reaches a path): one ``failover.skipped``
  line each, looked at again every :data:`RECHECK_SKIPPED` seconds.

A takeover holds the lease for :data:`TAKEOVER_HOLD` seconds while it starts
(reading the snapshot, opening the database may wait for a frozen owner's
transaction to end): a standby that dies while starting keeps the world that
long, then another standby takes it.
"""

from __future__ import annotations

import json
import math
import signal
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from .._core._config_fleet import FleetConfig, safe_url
from .._core._config_snapshots import check_world
from .._core._control import Caller, Refused
from .._core._snapshot_shared import SharedSnapshotStore
from .._errors import ConfigError
from .._logging import get_logger
from ._member import FleetAudit, _describe, member_for
from ._protocol import AUDIT_MAXLEN, BadMessage, Keys, parse_command
from ._redis import open_client

if TYPE_CHECKING:
    import coredis

    from .._core._runtime import Supervisor

__all__ = [
    "CLAIM_SCRIPT",
    "REFRESH_SCRIPT",
    "RELEASE_SCRIPT",
    "TAKEOVER_HOLD",
    "Claim",
    "Fenced",
    "StandbyStopped",
    "WorldLease",
    "attach_failover",
    "claim",
    "lease_for",
    "prepare_world",
    "wait_for_orphan",
]

#: Seconds a takeover (or a start) holds the lease before its run refreshes it.
TAKEOVER_HOLD: Final = 30.0
#: Seconds before a standby looks again at a world it could not take.
RECHECK_SKIPPED: Final = 5.0
#: Polls of the registry per heartbeat period, for a standby.
POLLS_PER_HEARTBEAT: Final = 4

#: Take a world's lease. KEYS: owner, fence counter, worlds hash, members zset.
#: ARGV: member id, PX ms, mode ("start" | "takeover"), world.
#: "start": free, or held by this same id (a restart within the TTL).
#: "takeover": only if free and the world is still wanted (listed in the hash).
#: Returns {token, previous owner id or ""}, or {0, current holder or ""}.
CLAIM_SCRIPT: Final = """
local cur = redis.call('GET', KEYS[1])
if ARGV[3] == 'takeover' then
  if cur or redis.call('HEXISTS', KEYS[3], ARGV[4]) == 0 then return {0, cur or ''} end
elseif cur and string.match(cur, '^(.*):%d+$') ~= ARGV[1] then
  return {0, cur}
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. tok, 'PX', ARGV[2])
local prev = redis.call('HGET', KEYS[3], ARGV[4])
if prev and prev ~= ARGV[1] then redis.call('ZREM', KEYS[4], prev) end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
return {tok, prev or ''}
"""

#: Refresh the lease only if it is still ours. KEYS: owner. ARGV: "ID:TOKEN", PX ms.
#: Returns 1, or the current holder ("" when expired and free).
REFRESH_SCRIPT: Final = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return cur or ''
"""

#: A stop on purpose: give the world up (only if still ours). KEYS: owner, worlds.
#: ARGV: "ID:TOKEN", world, id. Returns 1 if released.
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""

#: An event in the fleet's audit stream, shaped as ``supervisor fleet audit`` reads it.
_XADD: Final = (
    "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', "
    "'kind', ARGV[2], 'member', ARGV[3], 'ack', ARGV[4])"
)

_LEASES: weakref.WeakKeyDictionary[Any, WorldLease] = weakref.WeakKeyDictionary()


def owner_key(keys: Keys, world: str) -> str:
    """The lease (lock and fence) of ``world``."""
    return f"{keys.namespace}:owner:{world}"


def fence_key(keys: Keys, world: str) -> str:
    """The token counter of ``world``: each owner's token is larger than the last's."""
    return f"{keys.namespace}:fence:{world}"


def worlds_key(keys: Keys) -> str:
    """The hash of worlds that should be running -> their owner's id."""
    return f"{keys.namespace}:worlds"


class Fenced(ValueError):
    """The world's lease is held by another member: this one must not tick it."""

    def __init__(self, world: str, holder: str) -> None:
        super().__init__(
            f"world {world!r} is owned by {holder} (its fleet lease): this supervisor "
            "was replaced and will not tick it; its state is kept"
        )
        self.world = world
        self.holder = holder


@attrs.frozen(kw_only=True)
class Claim:
    """A lease this member holds."""

    world: str
    member: str
    token: int
    previous: str | None  # the member whose world this was, if another
    takeover: bool
    detected: float | None = None  # wall time the standby saw the lease expired

    @property
    def holder(self) -> str:
        """The lease's value: ``ID:TOKEN``."""
        return f"{self.member}:{self.token}"


async def claim(
    client: coredis.Redis[str],
    keys: Keys,
    *,
    member: str,
    world: str,
    hold: float,
    takeover: bool,
) -> Claim:
    """Take ``world``'s lease for ``hold`` seconds, atomically (see :data:`CLAIM_SCRIPT`).

    Raises:
        Fenced: someone else holds it (or, for a takeover, it is held or no longer wanted).
    """
    reply = await client.eval(
        CLAIM_SCRIPT,
        keys=[owner_key(keys, world), fence_key(keys, world), worlds_key(keys), keys.members],
        args=[member, int(hold * 1000), "takeover" if takeover else "start", world],
    )
    assert isinstance(reply, list | tuple)
    token, other = int(reply[0]), str(reply[1])
    if token == 0:
        raise Fenced(world, other)
    return Claim(
        world=world,
        member=member,
        token=token,
        previous=other if other and other != member else None,
        takeover=takeover,
    )


def _shared(sup: Supervisor) -> SharedSnapshotStore | None:
    store = sup.snapshots
    return store if isinstance(store, SharedSnapshotStore) else None


async def _orphans(client: coredis.Redis[str], keys: Keys) -> list[str]:
    """Worlds that should run and whose lease expired, unless the fleet is in an emergency."""
    flag = await client.get(keys.flag("emergency"))
    if flag is not None:
        try:
            if parse_command(flag).action == "emergency":
                return []
        except BadMessage:
            pass  # not a command: no emergency is on
    wanted = await client.hgetall(worlds_key(keys))
    return [w for w in sorted(wanted) if not await client.exists([owner_key(keys, w)])]


def _not_takeable(sup: Supervisor, world: str) -> str | None:
    """Why a standby must not take ``world`` over, or None.

    Anything read from Redis is hostile until checked: a name that is not a
    world name is refused before it reaches a path. A world with no valid
    shared snapshot (its member died before writing one) or whose newest one
    was written by an emergency stop is left alone.
    """
    try:
        check_world(world)
    except ConfigError:
        return "not a world name"
    store = _shared(sup)
    if store is None:
        return "no shared store"
    source = store.shared.for_world(world)
    try:
        snap, _problems = source.latest()
    except OSError as exc:
        return f"its shared folder cannot be read: {exc.strerror or exc}"
    if snap is None:
        return "no valid shared snapshot"
    if str(snap.reason).startswith("emergency"):
        return "stopped by an emergency"
    return None


async def wait_for_orphan(
    sup: Supervisor, config: FleetConfig, *, wall: Callable[[], float] = time.time
) -> Claim:
    """A standby's wait: poll the registry until it wins an expired world's lease.

    Losing Redis only delays it (reconnect with a capped backoff); nothing
    else runs meanwhile.
    """
    assert config.redis is not None
    keys = Keys(config.namespace)
    member = config.member_id()
    log = get_logger(component="failover", member=member)
    period = config.heartbeat_seconds / POLLS_PER_HEARTBEAT
    delay = 0.1
    skipped: dict[str, float] = {}  # world -> when to look at it again
    log.info("failover.standby", redis=safe_url(config.redis), poll_seconds=period)
    while True:
        try:
            async with open_client(config.redis, timeout=config.timeout) as client:
                while True:
                    with trio.fail_after(config.timeout * 4):
                        orphans = await _orphans(client, keys)
                    seen = wall()
                    for world in orphans:
                        if trio.current_time() < skipped.get(world, -math.inf):
                            continue
                        why = _not_takeable(sup, world)
                        if why is not None:
                            if world not in skipped:
                                log.warning("failover.skipped", world=world[:80], why=why)
                            skipped[world] = trio.current_time() + RECHECK_SKIPPED
                            continue
                        try:
                            with trio.fail_after(config.timeout):
                                won = await claim(
                                    client,
                                    keys,
                                    member=member,
                                    world=world,
                                    hold=max(TAKEOVER_HOLD, config.ttl_seconds),
                                    takeover=True,
                                )
                        except Fenced:
                            continue  # another standby won it
                        return attrs.evolve(won, detected=seen)
                    delay = 0.1
                    await trio.sleep(period)
        except (OSError, trio.TooSlowError, ConnectionError) as exc:
            log.warning("failover.standby_disconnected", error=str(exc)[:200], retry_in=delay)
        except Exception as exc:  # coredis's own errors: the standby waits on
            log.warning("failover.standby_disconnected", error=str(exc)[:200], retry_in=delay)
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)


class StandbyStopped(Exception):
    """A standby was stopped (SIGINT, SIGTERM) before it took a world over: exit 0."""


async def _standby(sup: Supervisor, config: FleetConfig) -> Claim | None:
    """:func:`wait_for_orphan`, ended by SIGINT or SIGTERM (None) like a run is."""
    result: list[Claim] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                result.append(await wait_for_orphan(sup, config))
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)
            async for signum in signals:
                get_logger(component="failover").info(
                    "failover.standby_stopped", signal=signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break
    return result[0] if result else None


def prepare_world(
    sup: Supervisor, resume_from: str | None, *, resume: bool = False, fresh: bool = False
) -> str | None:
    """Before a run builds anything: wait as a standby, or claim this member's world.

    Returns the world to resume from (a standby's takeover, or the given
    ``--resume-from``). Without ``[fleet] redis`` or a shared snapshot store
    nothing happens (and coredis is not imported).

    Raises:
        ValueError: one line for the CLI (exit 2): a standby without a fleet,
            a shared store, or with a world of its own chosen; or a world whose
            lease another member holds (:class:`Fenced`: this one was replaced).
    """
    config = sup.config.fleet
    store = _shared(sup)
    if config.standby and (not config.enabled or store is None):
        raise ValueError(
            "[fleet] standby = true needs [fleet] redis and a shared [snapshots] store"
        )
    if not config.enabled or store is None:
        return resume_from
    if config.standby and (resume or fresh or resume_from is not None):
        raise ValueError(
            "a standby ([fleet] standby) chooses the world it takes over: "
            "drop --resume, --fresh and --resume-from"
        )
    if config.standby:
        found = trio.run(_standby, sup, config)
        if found is None:
            raise StandbyStopped
        won = found
    else:
        world = resume_from if resume_from is not None else store.world

        async def start() -> Claim | Fenced:
            assert config.redis is not None
            async with open_client(config.redis, timeout=config.timeout) as client:
                try:
                    with trio.fail_after(config.timeout * 2):
                        return await claim(
                            client,
                            Keys(config.namespace),
                            member=config.member_id(),
                            world=world,
                            hold=max(TAKEOVER_HOLD, config.ttl_seconds),
                            takeover=False,
                        )
                except Fenced as exc:  # raised outside: coredis would wrap it in a group
                    return exc

        try:
            got = trio.run(start)
        except Exception as exc:
            raise ValueError(
                f"the fleet's Redis {safe_url(config.redis or '')}: cannot claim world "
                f"{world!r}: {_describe(exc)}"
            ) from None
        if isinstance(got, Fenced):
            raise got
        won = got
    lease = WorldLease(sup, config, won)
    _LEASES[sup] = lease
    sup.services.append(lease.serve)
    sup.status_sections["failover"] = lease.section
    return won.world if won.takeover else resume_from


def lease_for(sup: object) -> WorldLease | None:
    """The world lease of ``sup``'s run, if it holds one."""
    return _LEASES.get(sup)


class _Incidents(Protocol):
    def incident(self, kind: str, detail: str) -> None: ...


def attach_failover(sup: Supervisor, incidents: _Incidents | None) -> None:
    """Give the run's lease (if any) the error store, where a takeover becomes an incident."""
    lease = _LEASES.get(sup)
    if lease is not None:
        lease.incidents = incidents


class WorldLease:
    """The service that keeps this member's world lease, and reports a takeover or a fence."""

    def __init__(
        self,
        sup: Supervisor,
        config: FleetConfig,
        won: Claim,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sup = sup
        self.config = config
        self.claim = won
        self.keys = Keys(config.namespace)
        self.wall = wall
        self.log = get_logger(component="failover", member=won.member, world=won.world)
        self.incidents: _Incidents | None = None
        #: "held" | "fenced" | "released"
        self.state = "held"
        self.holder_seen: str | None = None
        self.refreshes = 0
        self.outages = 0
        self.last_error: str | None = None
        self.first_tick_wall: float | None = None

    def section(self) -> dict[str, Any]:
        """``status_sections["failover"]``: the world, the lease, the takeover if any."""
        won = self.claim
        return {
            "world": won.world,
            "member": won.member,
            "token": won.token,
            "state": self.state,
            "takeover": won.takeover,
            "previous_owner": won.previous,
            "detected": won.detected,
            "first_tick": self.first_tick_wall,
            "refreshes": self.refreshes,
            "outages": self.outages,
            "last_error": self.last_error,
            "owner_now": self.holder_seen,
        }

    async def serve(
        self, sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Refresh the lease every heartbeat until the run closes, then give the world up."""
        task_status.started()
        config = self.config
        assert config.redis is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._announce, sup)
            while not sup.closing.is_set() and self.state == "held":
                try:
                    async with open_client(config.redis, timeout=config.timeout) as client:
                        await self._refresh_until_closing(sup, client)
                        with trio.move_on_after(config.timeout), trio.CancelScope(shield=True):
                            await self._release(client)
                        return
                except Exception as exc:  # Redis lost: the run ticks on; the database fences
                    if self.last_error is None:  # one line per outage
                        self.outages += 1
                        self.log.warning("failover.lease_unreachable", error=_describe(exc))
                    self.last_error = _describe(exc)
                    with trio.move_on_after(config.heartbeat_seconds):
                        await sup.closing.wait()

    async def _refresh_until_closing(self, sup: Supervisor, client: coredis.Redis[str]) -> None:
        config = self.config
        ttl_ms = int(config.ttl_seconds * 1000)
        while not sup.closing.is_set():
            with trio.fail_after(config.timeout):
                reply = await client.eval(
                    REFRESH_SCRIPT,
                    keys=[owner_key(self.keys, self.claim.world)],
                    args=[self.claim.holder, ttl_ms],
                )
            if reply != 1:
                await self._fenced(sup, client, str(reply or ""))
                await sup.closing.wait()
                return
            self.refreshes += 1
            self.last_error = None
            with trio.move_on_after(config.heartbeat_seconds):
                await sup.closing.wait()

    async def _release(self, client: coredis.Redis[str]) -> None:
        """A stop on purpose gives the world up; a run that never ticked keeps it wanted.

        A takeover whose start failed (the database refused, say) leaves the
        world in ``NS:worlds`` and its lease to expire: another standby tries.
        """
        won = self.claim
        if self.first_tick_wall is None:
            return
        released = await client.eval(
            RELEASE_SCRIPT,
            keys=[owner_key(self.keys, won.world), worlds_key(self.keys)],
            args=[won.holder, won.world, won.member],
        )
        if released == 1:
            self.state = "released"
            self.log.info("failover.released", token=won.token)

    async def _fenced(self, sup: Supervisor, client: coredis.Redis[str], holder: str) -> None:
        """Replaced: never write this world again; stop with an emergency (its state kept)."""
        self.state = "fenced"
        self.holder_seen = holder or None
        store = _shared(sup)
        if store is not None:
            # The world's folder is the new owner's now: this member's last
            # snapshots stay local (a folder of its own beside its state).
            store.fence(sup.state_dir / f"fenced-{self.claim.world}")
        reason = f"fenced: world {self.claim.world} taken over by {holder or '(expired)'}"
        self.log.error("failover.fenced", token=self.claim.token, owner_now=holder or None)
        await self._record(client, "fenced", {"owner_now": holder, "token": self.claim.token})
        try:
            await sup.shutdown(
                emergency=True, reason=reason, caller=Caller(name="fleet:fence", role="operator")
            )
        except Refused as exc:
            self.log.warning("failover.fence_refused", detail=exc.detail)

    async def _announce(self, sup: Supervisor) -> None:
        """Once a takeover's first tick ran: the log line, the audits, the incident."""
        run = sup.run_state
        # The runtime has no "first tick" event (the fleet member polls the same way).
        while run.last_tick_at is None and not sup.closing.is_set():  # noqa: ASYNC110
            await trio.sleep(0.005)
        if run.last_tick_at is None:
            return  # the run stopped before it ticked: nothing was taken over
        self.first_tick_wall = self.wall()
        won = self.claim
        if not won.takeover:
            return
        detail = {
            "world": won.world,
            "token": won.token,
            "previous_owner": won.previous,
            "tick": sup.tick,
            "detected": won.detected,
            "first_tick": self.first_tick_wall,
        }
        self.log.warning("failover.takeover", **detail)
        if self.incidents is not None:
            self.incidents.incident("failover", f"took over world {won.world} from {won.previous}")
        config = self.config
        assert config.redis is not None
        with trio.move_on_after(config.timeout * 2):
            try:
                async with open_client(config.redis, timeout=config.timeout) as client:
                    await self._record(client, "takeover", detail)
            except Exception as exc:  # the local log and audit keep it
                self.log.warning("failover.audit_failed", error=str(exc)[:200])

    async def _record(self, client: Any, kind: str, detail: Mapping[str, Any]) -> None:
        """Audit an event locally (the run's audit log) and in the fleet's stream (bounded)."""
        member = member_for(self.sup)
        if member is not None and member.audit is not None:
            entry = FleetAudit(
                caller=f"fleet:{self.claim.member}",
                action=f"failover_{kind}",
                arguments=dict(detail),
                status=200,
                detail=f"world {self.claim.world}",
            )
            await trio.to_thread.run_sync(member.audit, entry)
        with trio.move_on_after(self.config.timeout):
            try:
                await client.eval(
                    _XADD,
                    keys=[self.keys.audit],
                    args=[
                        AUDIT_MAXLEN,
                        kind,
                        self.claim.member,
                        json.dumps(
                            {
                                "action": kind,
                                "generation": self.claim.token,
                                "reason": f"world {self.claim.world}",
                                **detail,
                            },
                            separators=(",", ":"),
                            default=str,
                        ),
                    ],
                )
            except Exception as exc:
                self.log.warning("failover.audit_failed", error=str(exc)[:200])
