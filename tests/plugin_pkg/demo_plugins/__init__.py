"""Demo game systems for the end-to-end tests, shipped as a third-party plugin.

Each is declared as an entry point in the ``supervisor.systems`` group of this
distribution (``supervisor-test-plugins``) and built from its
``[systems.NAME]`` table. None writes to standard output: what the tests need
to see goes through ``ctx.log`` (structured lines on standard error).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

if TYPE_CHECKING:
    from supervisor import Context

__all__ = ["Counter", "CriticalBomb", "Flaky", "NeedsCounter", "Slowpoke"]

_int = attrs.validators.instance_of(int)


def _names(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"expected a list of system names, got {value!r}")
    return tuple(value)


def _ints(value: Iterable[int]) -> tuple[int, ...]:
    out = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise TypeError(f"expected a list of tick numbers, got {value!r}")
    return out


@attrs.define(eq=False, kw_only=True)
class Counter:
    """Counts its ticks; the count survives a snapshot and restore.

    Args:
        initial: the count to start from.
        log_every: log ``counter.progress`` every that many ticks (0: never).
        depends_on: the systems it starts and ticks after (to build cycles in tests).
    """

    initial: int = attrs.field(default=0, validator=_int)
    log_every: int = attrs.field(default=0, validator=_int)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_names)
    name: str = "counter"
    count: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.count = self.initial

    def tick(self, ctx: Context) -> None:
        self.count += 1
        if self.log_every and self.count % self.log_every == 0:
            ctx.log.info("counter.progress", count=self.count, tick=ctx.tick)

    def stop(self, ctx: Context) -> None:
        ctx.log.info("counter.stopped", count=self.count, tick=ctx.tick)

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count}

    def restore(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


@attrs.define(eq=False, kw_only=True)
class Flaky:
    """Raises in ``tick`` on the ticks listed in ``fail_on``; ``recover`` counts its calls."""

    fail_on: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    name: str = "flaky"
    recoveries: int = attrs.field(init=False, default=0)

    def tick(self, ctx: Context) -> None:
        if ctx.tick in self.fail_on:
            raise RuntimeError(f"flaky fails on tick {ctx.tick}, as configured")

    def recover(self, ctx: Context, error: Any) -> None:
        self.recoveries += 1

    def stop(self, ctx: Context) -> None:
        ctx.log.info("flaky.stopped", recoveries=self.recoveries)


@attrs.define(eq=False, kw_only=True)
class CriticalBomb:
    """A critical system that raises on every tick from tick ``from_tick`` on."""

    critical: ClassVar[bool] = True

    from_tick: int = attrs.field(default=5, validator=_int)
    name: str = "critical_bomb"

    def tick(self, ctx: Context) -> None:
        if ctx.tick >= self.from_tick:
            raise RuntimeError(f"critical_bomb goes off at tick {ctx.tick}")


@attrs.define(eq=False, kw_only=True)
class Slowpoke:
    """An async tick that sleeps ``delay`` seconds (past the budget, it is cut off)."""

    delay: float = attrs.field(default=0.05, converter=float)
    name: str = "slowpoke"

    async def tick(self, ctx: Context) -> None:
        await trio.sleep(self.delay)


@attrs.define(eq=False, kw_only=True)
class NeedsCounter:
    """Depends on ``counter``, and fails any tick on which ``counter`` has not ticked first.

    Its priority is lower (earlier) than ``counter``'s, so only the dependency
    order puts it after ``counter``.
    """

    depends_on: ClassVar[tuple[str, ...]] = ("counter",)
    priority: ClassVar[int] = -100

    name: str = "needs_counter"
    last_seen: int = attrs.field(init=False, default=-1)

    def tick(self, ctx: Context) -> None:
        count: int = ctx.system("counter").count
        if count == self.last_seen:
            raise RuntimeError(f"counter has not ticked before needs_counter on tick {ctx.tick}")
        self.last_seen = count
