"""Anti-exploit checks on every purchase: impossible amounts and purchase rates.

The security system is a guard of the economy: ``Economy.purchase`` asks
``check`` before anything else, so a blocked purchase is rejected
(``blocked:impossible_amount`` / ``blocked:rate_limit``) and never debited,
journalled or acknowledged.

* Impossible amounts: not an integer, not positive, or above ``max_amount``.
* Rate: a token bucket per player, ``max_rate`` purchases a second with
  bursts of up to ``burst``. Time is the economy's simulated clock, so the
  rule holds in simulated seconds, identically after a restore.
* A player id that is not an int64 (no player has one) is refused as
  ``impossible_player``: it is counted and logged, not kept per player.

The per-player state is kept in dicts of plain numbers (tokens, the time
they were counted, offences), which the garbage collector does not track,
and a snapshot packs each as one block of int64/float64 bytes: capturing
100,000 players' buckets allocates no object per player (a list per bucket
made every capture allocate thousands, and each few hundred allocations
start a collection inside the snapshot's stall). A bucket is moved to the end
of both dicts whenever it is counted, so they are ordered oldest count first
and every tick forgets the buckets counted more than ``burst / max_rate``
seconds ago (full again, they behave like new ones) from the front: the work
is the number forgotten, not a scan of every bucket once a second.

Each violation is counted (by kind and by player) and logged through
``ctx.log``, so it goes through the supervisor's redaction pipeline.
``health()`` is degraded while the violations of the last ``window`` seconds
reach ``alarm``.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from supervisor import Context

from .players import array_from_bytes, numbers_to_bytes

if TYPE_CHECKING:
    from .economy import Economy

__all__ = ["Security"]

#: Player ids are int64 (the players' ids, and how a snapshot stores them).
_MIN_ID, _MAX_ID = -(2**63), 2**63 - 1


def _player(value: Any) -> int:
    """A player id from an old snapshot: an int64, as every player's is (else corrupt)."""
    pid = int(value)
    if not _MIN_ID <= pid <= _MAX_ID:
        raise ValueError(f"player id {pid} is not an int64")
    return pid


# Options validated when built, not at every assignment (see ``Economy``).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Security:
    """Blocks impossible and too-frequent purchases; counts and logs every violation.

    Args:
        max_rate: purchases per player per second, sustained.
        burst: purchases a player may make at once.
        max_amount: the largest plausible purchase, in cents.
        window: seconds over which violations are counted for ``health()``.
        alarm: violations within ``window`` that make the system degraded.
    """

    max_rate: float = 2.0
    burst: int = 5
    max_amount: int = 10**12
    window: float = 60.0
    alarm: int = 100
    name: str = "security"

    critical: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ("economy",)
    priority: ClassVar[int] = 0

    #: Violations since the world began, by kind and by player.
    violations: dict[str, int] = attrs.field(init=False, factory=dict)
    offenders: dict[int, int] = attrs.field(init=False, factory=dict)
    checked: int = attrs.field(init=False, default=0)
    #: Per player whose bucket may not be full yet: its tokens, and when they were
    #: counted. Both in the same order, oldest count first (see the module's doc).
    _tokens: dict[int, float] = attrs.field(init=False, factory=dict)
    _counted: dict[int, float] = attrs.field(init=False, factory=dict)
    _recent: collections.deque[float] = attrs.field(init=False, factory=collections.deque)
    _now: float = attrs.field(init=False, default=0.0)
    _economy: Economy | None = attrs.field(init=False, default=None)
    _log: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.max_rate <= 0 or self.burst < 1 or self.max_amount < 1:
            raise ValueError("max_rate must be > 0, burst and max_amount >= 1")
        if self.window <= 0 or self.alarm < 1:
            raise ValueError("window must be > 0 and alarm >= 1")

    # ------------------------------------------------------------------ the guard

    def check(self, player: int, amount: int, item: str, now: float) -> str | None:
        """None to allow a purchase; otherwise the violation's kind (it is counted and logged)."""
        self.checked += 1
        if type(player) is not int or not _MIN_ID <= player <= _MAX_ID:
            return self._violation("impossible_player", None, amount, item, now)
        if type(amount) is not int or amount <= 0 or amount > self.max_amount:
            return self._violation("impossible_amount", player, amount, item, now)
        buckets, counted = self._tokens, self._counted
        # Popped and put back: the bucket moves to the end of both dicts.
        tokens = buckets.pop(player, None)
        if tokens is None:
            tokens = float(self.burst)
        else:
            tokens = min(float(self.burst), tokens + (now - counted.pop(player)) * self.max_rate)
        counted[player] = now
        if tokens < 1.0:
            buckets[player] = tokens
            return self._violation("rate_limit", player, amount, item, now)
        buckets[player] = tokens - 1.0
        return None

    def _violation(self, kind: str, player: int | None, amount: Any, item: str, now: float) -> str:
        self.violations[kind] = self.violations.get(kind, 0) + 1
        if player is not None:
            self.offenders[player] = self.offenders.get(player, 0) + 1
        self._recent.append(now)
        if self._log is not None:
            self._log.warning(
                "security.violation", kind=kind, player=player, amount=repr(amount), item=item
            )
        return kind

    # ------------------------------------------------------------------ hooks

    def start(self, ctx: Context) -> None:
        self._log = ctx.log
        self._economy = ctx.system("economy")
        assert self._economy is not None
        self._economy.add_guard(self.check)

    def stop(self, ctx: Context) -> None:
        if self._economy is not None:
            self._economy.remove_guard(self.check)

    def tick(self, ctx: Context) -> None:
        assert self._economy is not None, "security ticked before start"
        now = self._now = self._economy.clock
        recent = self._recent
        horizon = now - self.window
        while recent and recent[0] < horizon:
            recent.popleft()
        # Forget the buckets refilled for sure, oldest first: they behave like new ones.
        # Full by the rule's own arithmetic too (``check`` would clamp to exactly
        # ``burst``), so forgetting never changes a verdict, even by a rounding.
        full, rate = float(self.burst), self.max_rate
        refilled = now - full / rate
        counted, tokens = self._counted, self._tokens
        idle = 0
        for pid, at in counted.items():
            if at > refilled or tokens[pid] + (now - at) * rate < full:
                break
            idle += 1
        for pid in list(itertools.islice(counted, idle)):
            del counted[pid], tokens[pid]

    def health(self) -> str:
        return "degraded" if len(self._recent) >= self.alarm else "healthy"

    @property
    def total(self) -> int:
        """All violations since the world began."""
        return sum(self.violations.values())

    def snapshot(self) -> dict[str, Any]:
        offenders = self.offenders
        return {
            "violations": dict(self.violations),
            "offenders": numbers_to_bytes("q", offenders),
            "offences": numbers_to_bytes("q", offenders.values()),
            "checked": self.checked,
            "bucket_players": numbers_to_bytes("q", self._counted),
            "bucket_tokens": numbers_to_bytes("d", self._tokens.values()),
            "bucket_counted": numbers_to_bytes("d", self._counted.values()),
            "recent": numbers_to_bytes("d", self._recent),
            "now": self._now,
        }

    def restore(self, state: dict[str, Any]) -> None:
        # Everything is read before anything is assigned: a damaged state changes nothing.
        violations = {str(k): int(v) for k, v in state["violations"].items()}
        if "buckets" in state:  # a snapshot from before the state was packed as bytes
            offenders = {_player(p): int(n) for p, n in state["offenders"]}
            buckets = sorted(
                ((_player(p), float(t), float(at)) for p, t, at in state["buckets"]),
                key=lambda bucket: bucket[2],  # oldest count first
            )
        else:
            offences = array_from_bytes("q", state["offences"])
            offenders = dict(zip(array_from_bytes("q", state["offenders"]), offences, strict=True))
            buckets = list(
                zip(
                    array_from_bytes("q", state["bucket_players"]),
                    array_from_bytes("d", state["bucket_tokens"]),
                    array_from_bytes("d", state["bucket_counted"]),
                    strict=True,
                )
            )
        checked = int(state["checked"])
        recent = collections.deque(array_from_bytes("d", state["recent"]))
        now = float(state["now"])
        self.violations, self.offenders, self.checked = violations, offenders, checked
        self._tokens = {p: t for p, t, _ in buckets}
        self._counted = {p: at for p, _, at in buckets}
        self._recent, self._now = recent, now
