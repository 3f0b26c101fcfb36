"""Simulated players joining and leaving: a seeded random process.

The population hovers around ``count``. On every tick each online player
leaves with probability ``churn * dt`` (``churn`` is per second), and on
average ``churn * dt * count`` players join, so the crowd stays near
``count``. A joiner is a returning player (one of those seen before) with
probability ``returning``, else a new one with the next id. The first tick
brings the initial ``count`` players in, so the systems downstream see every
player arrive through the same ``joined`` list.

Each tick publishes ``joined`` and ``left`` (valid on the tick named by
``events_tick``) for the systems that depend on this one, and the ``players``
gauge. The work per tick is proportional to the number of arrivals and
departures, not to the population: leavers are drawn by index and removed by
swapping with the last element.

The random stream is part of the snapshot, so a restored world draws exactly
the numbers the original would have (``tests/test_world.py``,
``TestSnapshot``).
"""

from __future__ import annotations

import random
import struct
import sys
from array import array
from collections.abc import Collection
from typing import Any, ClassVar

import attrs

from supervisor import Context

__all__ = [
    "Players",
    "array_from_bytes",
    "array_to_bytes",
    "numbers_to_bytes",
    "rng_state",
    "set_rng_state",
    "stochastic_round",
]


def array_to_bytes(values: array[Any]) -> bytes:
    """An array (int64 ids, float64 times) as little-endian bytes: one memory copy.

    Not one msgpack number per element: 100,000 ids become bytes in well
    under a millisecond (a msgpack list of them takes 2 ms, building it from a
    list another 5), the capture allocates no object per element (nothing for
    the garbage collector to count), and a snapshot reads the same on any
    machine (shared snapshot stores).
    """
    if sys.byteorder == "big":  # pragma: no cover - no big-endian machine to test on
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def numbers_to_bytes(typecode: str, values: Collection[Any]) -> bytes:
    """Numbers (a dict's keys or values: ``"q"`` int64, ``"d"`` float64) as ``array_to_bytes`` does.

    ``struct`` packs straight from the collection, at 15-35 ns a number:
    building an ``array`` from it first costs 50-100 ns a number.
    """
    return struct.pack(f"<{len(values)}{typecode}", *values)


def array_from_bytes(typecode: str, data: bytes | list[Any]) -> array[Any]:
    """Undo ``array_to_bytes`` (or ``numbers_to_bytes``) for ``typecode`` ("q" ids, "d" times).

    A length that is not a multiple of the item size is refused (corrupt). A
    plain list of numbers is accepted too: snapshots written before the state
    was packed as bytes hold lists, and a world must resume from them.
    """
    if isinstance(data, list):
        return array(typecode, data)
    values = array(typecode)
    if not isinstance(data, bytes) or len(data) % values.itemsize:
        raise ValueError(f"expected {values.itemsize}-byte {typecode!r} array bytes")
    values.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values


def rng_state(rng: random.Random) -> list[Any]:
    """``rng.getstate()`` as plain lists, for msgpack."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    """Undo ``rng_state``: continue ``rng`` exactly where the saved one stopped."""
    version, internal, gauss = state
    rng.setstate((int(version), tuple(int(x) for x in internal), gauss))


def stochastic_round(rng: random.Random, x: float) -> int:
    """``x`` rounded down or up at random, so that the mean is exactly ``x``.

    Used for "how many events this tick" with one random draw, instead of a
    draw per player.
    """
    n = int(x)
    if rng.random() < x - n:
        n += 1
    return n


def _positive_int(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _rate(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
        raise ValueError(
            f"{attribute.name} must be a number of at least 0 (per second), got {value!r}"
        )


def _fraction(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a number from 0 to 1, got {value!r}")


# Options validated when built, not at every assignment (see ``Economy``).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Players:
    """A seeded crowd of simulated players; publishes ``joined``, ``left`` and the gauge.

    Args:
        count: the population the crowd hovers around.
        churn: the share of online players leaving per second (as many join).
        returning: the chance that a joiner is a player seen before.
        seed: the random seed; the same seed gives the same history.
        max_offline: how many departed players are remembered as possible returners.
    """

    count: int = attrs.field(default=200, validator=_positive_int)
    churn: float = attrs.field(default=0.01, validator=_rate)
    returning: float = attrs.field(default=0.5, validator=_fraction)
    seed: int = 1
    max_offline: int = attrs.field(default=10_000, validator=_positive_int)
    name: str = "players"

    critical: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0

    #: The players online now (int64 ids: a snapshot copies them as one block).
    #: Read it; do not change it.
    online: array[int] = attrs.field(init=False, factory=lambda: array("q"))
    #: Players seen before and offline now: the pool returners are drawn from.
    offline: array[int] = attrs.field(init=False, factory=lambda: array("q"))
    #: Who joined and who left on tick ``events_tick`` (-1: no valid events).
    joined: list[int] = attrs.field(init=False, factory=list)
    left: list[int] = attrs.field(init=False, factory=list)
    events_tick: int = attrs.field(init=False, default=-1)
    #: Bumped whenever ``online`` may have changed outside ``joined``/``left``
    #: (restore, a failed tick): dependents then resynchronise from ``online``.
    epoch: int = attrs.field(init=False, default=0)
    next_id: int = attrs.field(init=False, default=0)
    seeded: bool = attrs.field(init=False, default=False)
    joins: int = attrs.field(init=False, default=0)
    leaves: int = attrs.field(init=False, default=0)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def start(self, ctx: Context) -> None:
        ctx.report("players", len(self.online))

    def tick(self, ctx: Context) -> None:
        # Invalid until this tick's lists are complete: a tick that fails half
        # way must not hand dependents half a list (see ``recover``).
        self.events_tick = -1
        rng = self._rng
        online = self.online
        if not self.seeded:
            first = self.next_id
            self.next_id = first + self.count
            joined = list(range(first, self.next_id))
            online.extend(joined)
            self.seeded = True
            left: list[int] = []
        else:
            rate = self.churn * ctx.dt
            left = []
            leaving = min(stochastic_round(rng, rate * len(online)), len(online))
            for _ in range(leaving):
                i = rng.randrange(len(online))
                pid = online[i]
                online[i] = online[-1]
                online.pop()
                left.append(pid)
            joined = []
            offline = self.offline
            for _ in range(stochastic_round(rng, rate * self.count)):
                if offline and rng.random() < self.returning:
                    i = rng.randrange(len(offline))
                    pid = offline[i]
                    offline[i] = offline[-1]
                    offline.pop()
                else:
                    pid = self.next_id
                    self.next_id += 1
                online.append(pid)
                joined.append(pid)
            if left:
                # Leavers become possible returners only from the next tick on,
                # so nobody leaves and joins within one tick.
                offline.extend(left)
                while len(offline) > self.max_offline:
                    i = rng.randrange(len(offline))
                    offline[i] = offline[-1]
                    offline.pop()
        self.joined = joined
        self.left = left
        self.joins += len(joined)
        self.leaves += len(left)
        self.events_tick = ctx.tick
        ctx.report("players", len(online))

    def recover(self, ctx: Context, error: Any) -> None:
        """After a failed tick ``online`` may hold changes no list announced: resync."""
        self.events_tick = -1
        self.epoch += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "online": array_to_bytes(self.online),
            "offline": array_to_bytes(self.offline),
            "next_id": self.next_id,
            "seeded": self.seeded,
            "joins": self.joins,
            "leaves": self.leaves,
            "rng": rng_state(self._rng),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.online = array_from_bytes("q", state["online"])
        self.offline = array_from_bytes("q", state["offline"])
        self.next_id = int(state["next_id"])
        self.seeded = bool(state["seeded"])
        self.joins = int(state["joins"])
        self.leaves = int(state["leaves"])
        set_rng_state(self._rng, state["rng"])
        self.joined, self.left, self.events_tick = [], [], -1
        self.epoch += 1
