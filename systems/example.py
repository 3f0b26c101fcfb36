"""A small built-in example world, run by ``supervisor run`` when no config names systems.

``Heartbeat`` counts ticks and simulated time; ``Wanderers`` moves a seeded
crowd of players on a grid and publishes the ``players`` gauge. Both keep
their state in ``snapshot()`` so a restart continues where they stopped.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from supervisor import Context


@attrs.define(eq=False)
class Heartbeat:
    """Counts ticks and the simulated seconds they cover."""

    name: str = "heartbeat"
    critical: bool = False
    priority: int = -10
    beats: int = 0
    sim_time: float = 0.0

    def tick(self, ctx: Context) -> None:
        self.beats += 1
        self.sim_time += ctx.dt

    def snapshot(self) -> dict[str, Any]:
        return {"beats": self.beats, "sim_time": self.sim_time}

    def restore(self, state: dict[str, Any]) -> None:
        self.beats = int(state["beats"])
        self.sim_time = float(state["sim_time"])


@attrs.define(eq=False)
class Wanderers:
    """A seeded crowd walking a grid; the ``players`` gauge is its size."""

    count: int = 20
    size: int = 64
    seed: int = 1
    name: str = "wanderers"
    depends_on: tuple[str, ...] = ()
    positions: list[list[int]] = attrs.field(factory=list)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.count < 0 or self.size < 1:
            raise ValueError("count must be >= 0 and size >= 1")
        self._rng = random.Random(self.seed)

    def start(self, ctx: Context) -> None:
        if not self.positions:
            rnd = self._rng.randrange
            self.positions = [[rnd(self.size), rnd(self.size)] for _ in range(self.count)]
        ctx.report("players", len(self.positions))

    def tick(self, ctx: Context) -> None:
        rnd = self._rng.randrange
        size = self.size
        for pos in self.positions:
            pos[0] = (pos[0] + rnd(3) - 1) % size
            pos[1] = (pos[1] + rnd(3) - 1) % size

    def snapshot(self) -> dict[str, Any]:
        return {"positions": self.positions}

    def restore(self, state: dict[str, Any]) -> None:
        self.positions = [[int(x), int(y)] for x, y in state["positions"]]
