"""A loaded API server accepts nothing just before a tick (``_listener._Server._accept``).

Each accept wakes a task, starts a connection and may evict a holder: under
load those wake-ups must not land in the tick's own scheduler batch. On a
MockClock, with the next tick due at 10.0 every 1.0 s, a connection that
arrives in the guard (the last quarter of the period) is taken exactly
TICK_AFTER past the deadline; one arriving earlier is taken at once; a
server with few connections, or no tick schedule, accepts as before.
"""

from __future__ import annotations

from typing import Any, cast

import hypercorn.config
import pytest
import trio
import trio.testing

from supervisor._server._connection import (
    TICK_AFTER,
    TICK_GUARD,
    ConnectionLimits,
    ServerStats,
    clear_of_ticks,
    tick_guard,
)
from supervisor._server._listener import _Server


class _Arrivals:
    """A listener whose one connection arrives at a given time on the clock."""

    def __init__(self, at: float) -> None:
        self.at = at

    async def accept(self) -> str:
        await trio.sleep_until(self.at)
        return "stream"


def _server(*, held: int, due: tuple[float, float] | None) -> _Server:
    server = _Server(
        cast(Any, None),
        hypercorn.config.Config(),
        ConnectionLimits(max_connections=4),
        ServerStats(),
        None,
        tick_due=lambda: due,
    )
    for i in range(held):
        server._conns[cast(Any, i)] = None
    return server


async def _taken_at(server: _Server, arrival: float) -> float:
    stream: object = await server._accept(cast(Any, _Arrivals(arrival)))
    assert stream == "stream"
    return trio.current_time()


@pytest.mark.parametrize(
    ("held", "due", "arrival", "taken"),
    [
        # loaded (half the slots or more): in the guard -> just after the tick
        (2, (10.0, 1.0), 9.8, 10.0 + TICK_AFTER),
        (2, (10.0, 1.0), 10.0 - TICK_GUARD, 10.0 + TICK_AFTER),
        # loaded, before the guard: at once
        (2, (10.0, 1.0), 9.5, 9.5),
        # loaded, after the tick: at once
        (2, (10.0, 1.0), 10.5, 10.5),
        # a stale deadline (loop late or stopped) is projected onto the schedule
        (3, (5.0, 1.0), 9.9, 10.0 + TICK_AFTER),
        # few connections, or no schedule: as before
        (1, (10.0, 1.0), 9.8, 9.8),
        (2, None, 9.8, 9.8),
    ],
)
def test_a_loaded_server_accepts_nothing_just_before_a_tick(
    held: int, due: tuple[float, float] | None, arrival: float, taken: float
) -> None:
    async def main() -> None:
        # Start at 9.0, as a loop between two ticks would be.
        await trio.sleep_until(9.0)
        assert await _taken_at(_server(held=held, due=due), arrival) == pytest.approx(taken)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_without_a_tick_source_the_server_accepts_as_before() -> None:
    async def main() -> None:
        server = _server(held=4, due=None)
        server.tick_due = None
        assert await _taken_at(server, 3.25) == 3.25

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize(
    ("when", "due", "moved"),
    [
        (9.5, (10.0, 1.0), 9.5),  # before the guard: kept
        (9.8, (10.0, 1.0), 10.0 + TICK_AFTER),  # in the guard: just after the tick
        (10.0, (10.0, 1.0), 10.0 + TICK_AFTER),  # at the deadline: after the tick too
        (10.5, (10.0, 1.0), 10.5),  # after the tick: kept
        (12.9, (10.0, 1.0), 13.0 + TICK_AFTER),  # projected onto later ticks
        (6.8, (10.0, 1.0), 7.0 + TICK_AFTER),  # and onto earlier ones (a stale deadline)
        (9.8, None, 9.8),  # no schedule: kept
    ],
)
def test_a_slow_heads_poll_keeps_out_of_the_guard_before_a_tick(
    when: float, due: tuple[float, float] | None, moved: float
) -> None:
    assert clear_of_ticks(when, due) == pytest.approx(moved)


def test_the_end_of_a_guard_belongs_to_the_next_tick() -> None:
    # Where a wait for the guard wakes: the same tick again would make the waiter spin.
    due = (1e6 + 1 / 60, 1 / 60)
    start, end = tick_guard(due[0] - 0.001, due)
    assert start <= due[0] - 0.001 < end
    later_start, _ = tick_guard(end, due)
    assert later_start > end
