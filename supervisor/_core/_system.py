"""``System``: what a game system is, for the plugin author and for the type checker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["System"]


@runtime_checkable
class System(Protocol):
    """A game system: any object with a ``tick(ctx)`` method; every other hook is optional.

    Nothing needs to subclass this: a plain class (``attrs`` recommended)
    that has a ``tick`` is a system, and ``isinstance(obj, System)`` says
    whether it has one. The Protocol declares only ``tick`` because a
    Protocol cannot declare a member as optional: an optional hook is
    expressed by *not defining it*. Registration (``Supervisor.register``,
    an entry point in the group ``supervisor.systems``, or an import string
    in ``[systems] enabled``) looks each hook up by name once, checks that
    it is callable and whether it is async, and never looks it up again on
    the tick path; a hook that is absent is simply not called. Every hook
    may be a plain function or ``async def``. Everything a hook raises is
    recorded as that system's error (SafeCall) and counts against its
    restart budget; it never stops the loop.

    Attributes read at registration (all optional, shown with their default):

    * ``name = <entry-point or config name, else class name in lower case>``:
      the name it runs under, in status, metrics, logs and snapshots.
    * ``critical = False``: when ``True``, exhausting its recovery budget
      enters EMERGENCY_SHUTDOWN instead of quarantining it.
    * ``depends_on: tuple[str, ...] = ()``: systems it starts and ticks
      after, and stops before; an unknown name or a cycle is refused before
      anything starts.
    * ``priority = 0``: order among independent systems (lower first).
    * ``snapshot_version: int`` (optional, may be a property): a number the
      system changes whenever its snapshot state changes. While it stays the
      same (same instance), the last packed state is reused and
      ``snapshot()`` is not called, so a periodic snapshot of unchanged state
      costs nothing. Absent, not an int, or raising: a full capture.
    * ``reload = False``: opt out of ``run --reload`` (the system keeps its
      code until a restart).

    A system does not declare how often it runs: it is stepped every tick
    unless the optimizer, under sustained overload, throttles it to run
    every N ticks (lowest priority first). ``ctx.dt`` is then the simulated
    time that one step covers (N fixed steps), so a system that integrates
    with ``ctx.dt`` stays correct when throttled.

    Optional hooks (define only those the system needs):

    * ``start(ctx) -> None``: before the first tick (and after ``restore``
      on resume), in dependency order.
    * ``stop(ctx) -> None``: graceful stop, in reverse dependency order,
      each with the configured ``stop_timeout``.
    * ``snapshot() -> Any``: the system's state, msgpack-serialisable
      (tuples come back as lists); taken periodically and at every stop.
    * ``restore(state) -> None``: the state a ``snapshot()`` returned, on
      ``restart`` and ``run --resume``; the tick count continues.
    * ``recover(ctx, error) -> None``: reset after a failed step, while the
      restart budget lasts; ``error`` is the ``ErrorRecord`` of the failure.
      A ``recover`` that fails counts as one more failure.
    * ``health() -> str``: ``"healthy"``, ``"degraded"`` or ``"unhealthy"``
      (anything else counts as unhealthy); polled after a tick, never on
      request, and read by ``/readyz`` and status.

    What the system sees of the supervisor is its ``ctx`` (``Context``):
    ``tick``, ``dt``, ``now``, ``phase`` (compare it with a member's value,
    ``ctx.phase == Phase.PRODUCTION.value``), ``log``,
    ``state_dir``, ``system(name)`` for a peer, ``report(name, value)`` to
    publish a gauge (shown in status and metrics and recorded with every
    error), and ``request_emergency(reason)``.
    """

    def tick(self, ctx: Context) -> object:
        """Advance the system by one fixed step (``ctx.dt`` seconds); may be ``async``.

        The hot path: keep it free of blocking I/O. A sync tick that hangs is
        interrupted by the watchdog; an async one that overruns its budget is
        cancelled. Either way it is recorded as a failure of this system.
        """
        ...
