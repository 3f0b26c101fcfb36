"""The link between one supervisor and its Agones sidecar: Ready, Health, labels, players, Shutdown.

Two supervised services of the run (``sup.services``), both off the tick:

* ``agones_lifecycle`` waits for the first tick (every system has started
  by then), calls ``Ready``, and from then on keeps the GameServer's
  labels (``phase``, ``profile``) and players Counter in step with the
  supervisor. Every ``health_interval`` it sends ``Health`` -- but only when
  the tick loop completed a tick since the last look: the loop's own tick
  counter is the token, so a stalled or hung loop stops the pings and
  Agones marks the server Unhealthy (:class:`HealthGate`, tested with a
  mock clock in ``tests/test_agones_link.py``). Why not a post-tick chore
  handing a token over: the core gives capabilities no chore hook (the
  runner registers the chores), and the tick counter already is that
  token -- only the loop moves it, and reading it off the tick costs the
  tick nothing. In EMERGENCY_SHUTDOWN the
  loop has stopped on purpose: the pings go on while the process waits
  for an operator, and once the emergency's snapshot is written it calls
  ``Shutdown`` (``shutdown_on_emergency``). After a graceful stop (SIGTERM
  included) it calls ``Shutdown`` as the run closes.
* ``agones_watch`` follows ``WatchGameServer``: each state change is
  logged, shown in ``status_sections["agones"]``, and handed to systems
  (see :func:`deliver`).

A sidecar that starts late or fails is retried with a doubling backoff
capped at ``backoff_max``; every request is bounded by ``timeout``; nothing
here ever waits inside the tick.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._core._phase import Phase
from ._sdk import OUT_OF_RANGE, AgonesSDK, SdkError
from ._state import GameServerState

if TYPE_CHECKING:
    from .._core._runtime import Supervisor

__all__ = ["HOOK", "AgonesLink", "Backoff", "HealthGate", "UpdateBudget", "deliver", "label_value"]

#: The attribute a system declares to be handed the GameServer state (see ``deliver``).
HOOK: Final = "agones_gameserver"
#: How often the lifecycle service looks for a first tick, a new phase or player count.
SYNC_EVERY: Final = 0.25
#: The first retry of a failing sidecar (then doubling up to ``backoff_max``).
BACKOFF_INITIAL: Final = 0.1
#: Seconds the closing run gives Shutdown (the services' grace is 2 s).
SHUTDOWN_BUDGET: Final = 1.5
#: GameServer updates read from the watch stream per second, at most: a flooding
#: sidecar waits in its socket buffer rather than taking the tick thread's time.
MAX_UPDATES_PER_SECOND: Final = 50
#: A label value Kubernetes accepts: at most 63 characters, alphanumerics at both ends.
_LABEL_BAD: Final = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: other characters become ``-``, 63 at most."""
    return _LABEL_BAD.sub("-", text)[:63].strip("-_.")


@attrs.define
class Backoff:
    """A doubling delay between retries, capped; ``reset`` after a success."""

    initial: float
    cap: float
    delay: float = 0.0

    def next(self) -> float:
        """The delay before the next retry."""
        self.delay = self.initial if self.delay == 0.0 else min(self.delay * 2, self.cap)
        return self.delay

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.delay = 0.0


@attrs.define
class UpdateBudget:
    """At most ``per_second`` updates a second: past it, ``spend`` sleeps out the second."""

    per_second: int
    window: float = -math.inf
    spent: int = 0

    async def spend(self) -> None:
        """One update handled; wait for the next second once this one's budget is gone."""
        now = trio.current_time()
        if now >= self.window + 1.0:
            self.window, self.spent = now, 0
        self.spent += 1
        if self.spent >= self.per_second:
            await trio.sleep_until(self.window + 1.0)
        else:
            await trio.lowlevel.checkpoint()


@attrs.define
class HealthGate:
    """Decides whether a Health ping may go: the tick counter is the loop's token.

    ``tick`` reads the loop's tick count (only the loop moves it); a ping goes
    out when it moved since the last look, or while an emergency keeps the
    loop stopped on purpose (``waiting``).
    """

    tick: Callable[[], int]
    waiting: Callable[[], bool]
    seen: int = -1

    def ok(self) -> bool:
        """Whether the loop made progress since the last call (or is waiting on purpose)."""
        now = self.tick()
        moved = now != self.seen
        self.seen = now
        return moved or self.waiting()


def deliver(sup: Supervisor, state: GameServerState) -> int:
    """Hand ``state`` to every system that declares the ``agones_gameserver`` attribute.

    The hook for systems: a class attribute ``agones_gameserver = None`` is
    replaced, on the instance, by the latest :class:`GameServerState` (a
    frozen value) each time the sidecar reports a change, and again every
    quarter second (so a system rebuilt by ``restart`` has it too); the
    system reads it in its own ``tick``. No system code runs here, and
    nothing is added to the tick. Returns how many systems got it.
    """
    given = 0
    for name in sup.names:
        system = sup.system(name)
        if hasattr(type(system), HOOK):
            try:
                setattr(system, HOOK, state)
            except (AttributeError, TypeError):  # a slotted or frozen system: it opted out
                continue
            given += 1
    return given


@attrs.define(eq=False)
class AgonesLink:
    """The state of the link, read by ``status_sections["agones"]``."""

    sup: Supervisor
    #: The sidecar's HTTP port and the bound on each request (each service opens its own client).
    port: int
    timeout: float
    health_interval: float
    backoff_max: float
    players_gauge: str
    players_counter: str
    labels: bool
    shutdown_on_emergency: bool
    log: Any
    ready: bool = False
    shutdown_sent: bool = False
    health_sent: int = 0
    health_failed: int = 0
    #: Looks at which the loop had not ticked since the previous one (no ping sent).
    health_withheld: int = 0
    sdk_errors: int = 0
    last_error: str | None = None
    gameserver: GameServerState | None = None
    state_changes: int = 0
    players_sent: int | None = None
    #: The count last written to the Counter (the players, capped at its capacity).
    counter_sent: int | None = None
    #: The Counter's capacity, once a count past it was refused (then counts are capped at it).
    players_capacity: int | None = None
    counter_missing: bool = False
    sent_labels: dict[str, str] = attrs.field(factory=dict)
    _failing: bool = False

    @property
    def base(self) -> str:
        """The sidecar's address."""
        return f"http://127.0.0.1:{self.port}"

    def open_sdk(self) -> AgonesSDK:
        """A client of the sidecar, for one service's run (``async with``)."""
        return AgonesSDK(self.port, timeout=self.timeout)

    # ------------------------------------------------------------------ what the supervisor says

    def _emergency_waiting(self) -> bool:
        """In EMERGENCY_SHUTDOWN with no Shutdown sent: the process waits for an operator."""
        return self.sup.phase is Phase.EMERGENCY_SHUTDOWN and not self.shutdown_sent

    def _preserved(self) -> bool:
        """The emergency is over and its state was written to a snapshot."""
        run = self.sup.run_state
        return run.emergency_done.is_set() and run.snapshot_written

    def _should_shut_down_at_close(self) -> bool:
        """The run ends gracefully or after a preserved emergency: the game server is done."""
        run = self.sup.run_state
        if run.startup_error is not None or run.last_tick_at is None:
            return False  # never started: let the container restart rather than drop the server
        if run.emergency_reason is not None:
            return self._preserved()
        return True

    def wanted_labels(self) -> dict[str, str]:
        """The labels the GameServer should carry now."""
        if not self.labels:
            return {}
        return {
            "phase": label_value(self.sup.phase.value),
            "profile": label_value(self.sup.profile.name),
        }

    def players(self) -> int | None:
        """The players gauge now, as a count (None when no system reports it)."""
        if not self.players_counter:
            return None
        value = self.sup.gauges.get(self.players_gauge)
        if value is None or not math.isfinite(value):
            return None
        return max(0, int(value))

    # ------------------------------------------------------------------ bookkeeping

    def _failed(self, what: str, exc: SdkError) -> None:
        """Count and log a failure; a run of failures logs once, the recovery once."""
        self.sdk_errors += 1
        self.last_error = f"{what}: {exc.message}"
        if not self._failing:
            self._failing = True
            self.log.warning("agones.unavailable", call=what, error=exc.message)

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            self.log.info("agones.available", errors=self.sdk_errors)

    def status(self) -> Mapping[str, Any]:
        """``status_sections["agones"]``: JSON-ready."""
        gs = self.gameserver
        return {
            "sdk": self.base,
            "ready": self.ready,
            "state": gs.state if gs is not None else None,
            "gameserver": None
            if gs is None
            else {
                "name": gs.name,
                "namespace": gs.namespace,
                "address": gs.address,
                "ports": [{"name": n, "port": p} for n, p in gs.ports],
                "counters": {k: {"count": c, "capacity": m} for k, (c, m) in gs.counters.items()},
            },
            "state_changes": self.state_changes,
            "health_sent": self.health_sent,
            "health_failed": self.health_failed,
            "health_withheld": self.health_withheld,
            "labels": dict(self.sent_labels),
            "players": self.players_sent,
            "players_capacity": self.players_capacity,
            "players_counter": None
            if not self.players_counter
            else (self.players_counter if not self.counter_missing else "missing"),
            "shutdown_sent": self.shutdown_sent,
            "errors": self.sdk_errors,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ the services

    async def lifecycle(self, task_status: trio.TaskStatus[None]) -> None:
        """Ready, then Health and the GameServer kept in step; Shutdown when the run closes."""
        task_status.started()
        closing = self.sup.closing
        async with self.open_sdk() as sdk:
            try:
                while not closing.is_set() and self.sup.run_state.last_tick_at is None:
                    with trio.move_on_after(SYNC_EVERY):
                        await closing.wait()
                if not closing.is_set():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._health, sdk)
                        await self._sync(sdk)
                        nursery.cancel_scope.cancel()
            finally:
                if not self.shutdown_sent and self._should_shut_down_at_close():
                    with trio.move_on_after(SHUTDOWN_BUDGET) as scope:
                        scope.shield = True  # the run is closing: its cancellation must not cut it
                        await self._shutdown(sdk, "close")

    async def _health(self, sdk: AgonesSDK) -> None:
        """Every ``health_interval``: a ping, if the loop ticked since the last one."""
        gate = HealthGate(tick=lambda: self.sup.tick, waiting=self._emergency_waiting)
        closing = self.sup.closing
        while not closing.is_set():
            if self.shutdown_sent:
                return
            if gate.ok():
                try:
                    await sdk.health()
                except SdkError as exc:
                    self.health_failed += 1
                    self._failed("health", exc)
                else:
                    self.health_sent += 1
                    self._succeeded()
            else:
                self.health_withheld += 1
            with trio.move_on_after(self.health_interval):
                await closing.wait()

    async def _sync(self, sdk: AgonesSDK) -> None:
        """Ready once, then labels, players and the emergency's Shutdown; backoff on failure."""
        closing = self.sup.closing
        backoff = Backoff(BACKOFF_INITIAL, self.backoff_max)
        while not closing.is_set() and not self.shutdown_sent:
            if self.gameserver is not None:
                # Systems a restart rebuilt start without it: hand it again (a few µs).
                deliver(self.sup, self.gameserver)
            try:
                await self._sync_once(sdk)
            except SdkError:
                wait = backoff.next()
            else:
                backoff.reset()
                wait = SYNC_EVERY
            with trio.move_on_after(wait):
                await closing.wait()

    async def _sync_once(self, sdk: AgonesSDK) -> None:
        """One round: Ready, labels, players, Shutdown after a preserved emergency.

        Raises:
            SdkError: a call failed (already counted and logged).
        """
        if not self.ready:
            await self._call("ready", sdk.ready())
            self.ready = True
            self.log.info("agones.ready")
        for key, value in self.wanted_labels().items():
            if self.sent_labels.get(key) != value:
                await self._call("label", sdk.set_label(key, value))
                self.sent_labels[key] = value
        players = self.players()
        if players is not None and players != self.players_sent and not self.counter_missing:
            await self._set_players(sdk, players)
        if self.shutdown_on_emergency and self._preserved() and not self.shutdown_sent:
            await self._shutdown(sdk, "emergency")

    async def _set_players(self, sdk: AgonesSDK, players: int) -> None:
        """Write the players Counter, at most its capacity (Agones refuses more).

        Raises:
            SdkError: the sidecar failed (a missing Counter is not a failure: it is said once).
        """
        name = self.players_counter
        capacity = self.players_capacity
        count = players if capacity is None else min(players, capacity)
        if count == self.counter_sent:  # capped: the Counter holds this already
            self.players_sent = players
            return
        try:
            await sdk.set_counter(name, count)
        except SdkError as exc:
            if exc.not_found:
                # No such Counter on this GameServer (its spec names none): say so once.
                self.counter_missing = True
                self.log.warning("agones.no_counter", counter=name)
                return
            if exc.code != OUT_OF_RANGE:
                self._failed("counter", exc)
                raise
            # More players than the Counter's capacity: read it, send at most that from now.
            _, self.players_capacity = await self._call("counter", sdk.get_counter(name))
            self.log.warning(
                "agones.players_over_capacity", counter=name, capacity=self.players_capacity
            )
            return
        self.players_sent = players
        self.counter_sent = count
        self._succeeded()

    async def _call(self, what: str, call: Any) -> Any:
        """Await one SDK call; a failure is counted and logged, then raised on."""
        try:
            result = await call
        except SdkError as exc:
            self._failed(what, exc)
            raise
        self._succeeded()
        return result

    async def _shutdown(self, sdk: AgonesSDK, why: str) -> None:
        """Tell Agones the game server is done (at most once)."""
        try:
            await self._call("shutdown", sdk.shutdown())
        except SdkError:
            return
        self.shutdown_sent = True
        self.log.info("agones.shutdown", after=why)

    async def watch(self, task_status: trio.TaskStatus[None]) -> None:
        """Follow WatchGameServer: log, show and deliver each change; reconnect with backoff."""
        task_status.started()
        closing = self.sup.closing
        backoff = Backoff(BACKOFF_INITIAL, self.backoff_max)
        async with self.open_sdk() as sdk:
            while not closing.is_set():
                await self._watch_once(sdk, backoff)

    async def _watch_once(self, sdk: AgonesSDK, backoff: Backoff) -> None:
        """One watch stream, to its end or the run's; then the backoff before the next."""
        closing = self.sup.closing
        budget = UpdateBudget(MAX_UPDATES_PER_SECOND)
        async with trio.open_nursery() as nursery:

            async def cancel_on_close() -> None:
                # The stream waits for updates with no end: closing ends it.
                await closing.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cancel_on_close)
            try:
                async with aclosing(sdk.watch()) as states:
                    async for state in states:
                        self._seen(state)
                        backoff.reset()
                        await budget.spend()
            except SdkError as exc:
                self._failed("watch", exc)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(backoff.next()):
            await closing.wait()

    def _seen(self, state: GameServerState) -> None:
        """A GameServer update: a new state is logged; systems get every update."""
        before = self.gameserver
        self.gameserver = state
        if before is None or before.state != state.state:
            self.state_changes += 1
            self.log.info(
                "agones.state",
                state=state.state,
                previous=before.state if before is not None else None,
                gameserver=state.name,
            )
        deliver(self.sup, state)
