"""A connection is not evicted in its first ``evict_grace`` seconds (``_listener._Server``).

In a flood of connects larger than ``max_connections``, evicting the oldest
waiting connection at once evicted an honest request that came in with the
flood before its own task read it (bench/held_connections.py: a ``/healthz``
probe closed unanswered, 38 ms old). On a MockClock with stub connections:
a young one is kept and the accept loop waits, exactly until the oldest
waiting one is old enough; one serving a request is never evicted; a slot
freed meanwhile ends the wait at once.
"""

from __future__ import annotations

import math
from typing import Any, cast

import attrs
import hypercorn.config
import pytest
import trio
import trio.testing

from supervisor._server._connection import TICK_AFTER, ConnectionLimits, ServerStats
from supervisor._server._listener import _Server

GRACE = 0.5


@attrs.define(eq=False)
class _Stub:
    """What the accept loop reads of a connection: its age, its stage, its eviction."""

    born: float
    waiting: bool = True
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True


def _server(*conns: _Stub, cap: int = 2) -> _Server:
    server = _Server(
        cast(Any, None),
        hypercorn.config.Config(),
        ConnectionLimits(max_connections=cap, evict_grace=GRACE),
        ServerStats(),
        None,
    )
    for conn in conns:
        server._conns[cast(Any, conn)] = None
    return server


def _run(test: Any) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_young_connection_is_kept_until_the_grace_ends() -> None:
    """Both slots waiting, the oldest 0.2 s old: the newcomer waits until it is 0.5 s old."""

    async def main() -> None:
        now = trio.current_time()
        old, young = _Stub(born=now - 0.2), _Stub(born=now - 0.1)
        server = _server(old, young)
        assert not server._has_room()
        assert not old.evicted
        assert server._evictable_at() == pytest.approx(now + 0.3)
        await server._wait_for_room()
        assert trio.current_time() == pytest.approx(now + 0.3)
        assert (old.evicted, young.evicted) == (True, False)
        assert server.stats.accept_pauses == 1
        assert server.stats.paused_seconds == pytest.approx(0.3)

    _run(main)


def test_an_old_waiting_connection_is_evicted_at_once() -> None:
    async def main() -> None:
        now = trio.current_time()
        old, young = _Stub(born=now - GRACE), _Stub(born=now - 0.1)
        server = _server(old, young)
        assert server._has_room()
        assert (old.evicted, young.evicted) == (True, False)
        assert list(server._conns) == [cast(Any, young)]

    _run(main)


def test_serving_connections_are_skipped_and_never_evicted() -> None:
    """The oldest waiting one is the first in accept order that is not serving a request."""

    async def main() -> None:
        now = trio.current_time()
        busy = _Stub(born=now - 10.0, waiting=False)
        waiting = _Stub(born=now - 0.4)
        server = _server(busy, waiting)
        assert server._evictable_at() == pytest.approx(now + 0.1)
        await server._wait_for_room()
        assert (busy.evicted, waiting.evicted) == (False, True)

    _run(main)


@pytest.mark.parametrize(
    ("age", "waiting", "freed_after"),
    [
        # every slot serving a request: no eviction time, the wait ends when one frees
        (10.0, False, 7.0),
        # every slot waiting but young: a slot freed within the grace ends the wait at once
        (0.0, True, 0.1),
    ],
)
def test_a_freed_slot_ends_the_wait_and_nothing_is_evicted(
    age: float, waiting: bool, freed_after: float
) -> None:
    async def main() -> None:
        now = trio.current_time()
        conns = [_Stub(born=now - age, waiting=waiting) for _ in range(2)]
        server = _server(*conns)
        assert server._evictable_at() == (now - age + GRACE if waiting else math.inf)

        async def free_a_slot() -> None:
            await trio.sleep(freed_after)
            server._conns.pop(cast(Any, conns[1]))
            server._room.unpark()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(free_a_slot)
            await server._wait_for_room()
        assert trio.current_time() == pytest.approx(now + freed_after)
        assert not any(c.evicted for c in conns)

    _run(main)


def test_the_wait_never_ends_in_the_guard_before_a_tick() -> None:
    """An eviction due just before a tick (10.0, every 1.0 s) waits until just after it."""

    async def main() -> None:
        server = _server(_Stub(born=9.85 - GRACE), _Stub(born=9.9 - GRACE))
        server.tick_due = lambda: (10.0, 1.0)
        assert server._evictable_at() == pytest.approx(10.0 + TICK_AFTER)
        server.tick_due = lambda: (10.5, 1.0)  # 9.85 is mid-period there: as it is
        assert server._evictable_at() == pytest.approx(9.85)

    _run(main)
