"""The performance optimizer's decision engine: measurements in, decisions out.

Pure and clock-injected: no trio, no psutil, no I/O. The supervisor calls
``Optimizer.observe`` off the hot path (every 0.25-0.5 s of its clock) with an
``Observation`` of the recent ticks, applies each returned ``Decision`` and
shows ``statistics()`` in status. Time is whatever ``Observation.now`` says.

The load is ``work_p95 / budget``: the windowed p95 of one tick's work time
as a fraction of the tick budget. Two views of it count:

* the *smoothed* load, an exponentially weighted moving average with time
  constant ``smoothing`` seconds (independent of how often ``observe`` is
  called), which must stay above ``overload`` for ``sustain`` seconds -- a
  single dip does not restart that clock, and a single spike has decayed
  below the threshold before ``sustain`` has passed;
* the *windowed* p95 of the latest observation, which must also be above
  ``overload`` when the optimizer acts, so a smoothed value that still
  remembers a load that has gone never acts on its own.

Under sustained overload it sheds load in steps: first it throttles the
least important non-critical system (highest ``priority`` number, at least the
profile's ``throttle_priority``; the most expensive on a tie) by doubling how
many ticks apart it runs, up to the profile's ``max_throttle``; only when
nothing is left whose throttling would save at least ``min_gain`` of the
budget does it lower the tick rate by ``rate_step``, never below the
profile's ``min_tick_rate`` and never while a phase pins the rate. One
*action* takes as many steps (up to ``batch``) as the model predicts are
needed to bring the load under the middle of the hysteresis band, and
actions are ``cooldown`` apart. Every step is its own decision, pushed on a
stack.

When headroom lasts, it undoes the steps one by one, last first. Headroom is
judged on the *prediction* for the step about to be undone: the load after
undoing it must stay under ``headroom`` (below ``overload``: that gap, on a
cautious prediction, is the hysteresis that keeps a load sitting at either
threshold from flip-flopping; ``TestHysteresis``).
Restoring is deliberately slower than shedding: the headroom must hold for
``sustain`` seconds again after every action, and ``cooldown`` must have
passed. A restore that was wrong -- the optimizer had to shed again within
``flap_window`` -- doubles the time the next restore must wait (up to
``max_hold`` times ``sustain``), so even a load the model mispredicts gives a
bounded number of decisions (``TestFlapGuard``).

Prediction model (estimates; the closed loop corrects them):

* throttling a system from every ``e`` to every ``e2`` ticks removes
  ``mean * (1/e - 1/e2)`` from the tick work (its cost amortised over the
  ticks, exact when the supervisor staggers throttled systems over ticks);
* restoring it adds back ``p95 * (1/e2 - 1/e)`` -- the p95, to be cautious;
* changing the rate from ``r`` to ``r2`` scales the load by ``r2 / r`` (the
  budget is a fixed fraction of the period; the work per tick is unchanged).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._config_sections import Profile

__all__ = [
    "Decision",
    "DecisionKind",
    "Observation",
    "Optimizer",
    "OptimizerStats",
    "SystemLoad",
]

DecisionKind = Literal["throttle", "unthrottle", "rate_down", "rate_up"]

#: The kind that undoes each kind of step.
_INVERSE: dict[DecisionKind, DecisionKind] = {
    "throttle": "unthrottle",
    "rate_down": "rate_up",
}
#: Kinds that shed load (the others restore it).
SHED_KINDS: frozenset[str] = frozenset(_INVERSE)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def _every(n: float) -> str:
    return "every tick" if n <= 1 else f"every {n:g} ticks"


def _hz(rate: float) -> str:
    return f"{rate:.4g} Hz"


@attrs.frozen(kw_only=True)
class SystemLoad:
    """One system's recent cost, measured by the supervisor.

    ``p95`` and ``mean`` are the cost of *one step when it runs*, in seconds,
    over the same window as the observation (ticks a throttled system skips
    are not samples).
    """

    name: str
    priority: int = 0
    critical: bool = False
    p95: float = 0.0
    mean: float = 0.0
    #: The throttle the supervisor applies now (1 = every tick).
    every: int = 1


@attrs.frozen(kw_only=True)
class Observation:
    """The supervisor's recent ticks, as the optimizer sees them.

    Raises:
        ValueError: ``rate`` or ``budget`` is not positive, or a time is negative.
    """

    #: The supervisor's clock, in seconds.
    now: float
    #: The tick rate now, in Hz (``Supervisor.tick_rate``, including a pending change).
    rate: float
    #: The work budget of one tick now, in seconds.
    budget: float
    #: p95 of one tick's work time over the window, in seconds.
    work_p95: float
    work_mean: float = 0.0
    #: Ticks dropped during the window.
    dropped: int = 0
    #: Seconds of ticks the measurements cover, ending at ``now``. Observations
    #: whose window began before the optimizer's last action are stale: they
    #: describe the old setting and are not used as evidence.
    window: float = 0.0
    systems: tuple[SystemLoad, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.rate > 0 or not self.budget > 0:
            raise ValueError(f"rate and budget must be positive, got {self.rate}, {self.budget}")
        if self.work_p95 < 0 or self.window < 0 or self.dropped < 0:
            raise ValueError("work_p95, window and dropped must not be negative")

    @property
    def load(self) -> float:
        """The windowed p95 of the tick work as a fraction of the budget."""
        return self.work_p95 / self.budget


@attrs.frozen(kw_only=True)
class Decision:
    """One change the optimizer made: what, to what, and why.

    ``before`` and ``after`` are a throttle (run every N ticks) for
    ``throttle``/``unthrottle`` and a tick rate in Hz for
    ``rate_down``/``rate_up``. ``after`` is absolute: apply it as is.
    """

    time: float
    kind: DecisionKind
    #: The system for ``throttle``/``unthrottle``; None for rate changes.
    target: str | None
    before: float
    after: float
    reason: str
    #: The load (p95 / budget) when the decision was made, and the load predicted after it.
    load: float
    predicted: float

    @property
    def sheds(self) -> bool:
        """True for a step that sheds load, False for one that restores it."""
        return self.kind in SHED_KINDS

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (for status and the event log)."""
        return attrs.asdict(self)


OptimizerState = Literal["steady", "overloaded", "saturated", "headroom", "settling"]


@attrs.frozen(kw_only=True)
class OptimizerStats:
    """The optimizer at one moment: what status shows."""

    state: OptimizerState
    adjustments: int
    #: The tick rate the optimizer wants now, the rate it restores to, and a phase's pin.
    rate: float
    base_rate: float
    pinned_rate: float | None
    #: Throttled systems: name -> every N ticks.
    throttles: Mapping[str, int]
    #: Steps in force, oldest first; they are undone last first.
    steps: tuple[Decision, ...]
    #: The latest windowed load and the smoothed load (p95 / budget); None before any sample.
    load: float | None
    smoothed: float | None
    last_action: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        d = attrs.asdict(self, recurse=False)
        d["throttles"] = dict(self.throttles)
        d["steps"] = [s.as_dict() for s in self.steps]
        return d


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _not_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


@attrs.define(eq=False, kw_only=True)
class Optimizer:
    """Decides when to throttle systems and change the tick rate, and when to undo it.

    Args:
        profile: the device profile (its floor, ``throttle_priority``, ``max_throttle``).
        base_rate: the tick rate to restore to (the configured rate).
        overload: a load (p95 / budget) above this is overload.
        headroom: a predicted load after undoing a step below this is headroom.
        sustain: seconds a condition must hold before the optimizer acts.
        cooldown: seconds after any action before the next.
        smoothing: time constant of the smoothed load, in seconds.
        rate_step: factor applied to the rate by one ``rate_down``.
        min_gain: a throttle that saves less than this fraction of the budget is not a step.
        flap_window: shedding again within this many seconds of a restore is a flap.
        max_hold: the longest a restore waits after flaps, in multiples of ``sustain``.
        batch: the most steps one action sheds (1: one step per cooldown).
        history: decisions kept in ``events``.
        pinned_rate: set while a phase pins the rate: no rate decision is made.

    Raises:
        ValueError: a parameter is out of range, or ``headroom`` is not below ``overload``.
    """

    profile: Profile
    base_rate: float = attrs.field(validator=_positive)
    overload: float = attrs.field(default=0.9, validator=_positive)
    headroom: float = attrs.field(default=0.8, validator=_positive)
    sustain: float = attrs.field(default=2.0, validator=_not_negative)
    cooldown: float = attrs.field(default=3.0, validator=_not_negative)
    smoothing: float = attrs.field(default=1.0, validator=_not_negative)
    rate_step: float = attrs.field(default=0.75, validator=_positive)
    min_gain: float = attrs.field(default=0.02, validator=_not_negative)
    flap_window: float = attrs.field(default=30.0, validator=_not_negative)
    max_hold: int = attrs.field(default=32, validator=_positive)
    batch: int = attrs.field(default=8, validator=_positive)
    history: int = attrs.field(default=100, validator=_positive)
    pinned_rate: float | None = None

    _rate: float = attrs.field(init=False)
    _steps: list[Decision] = attrs.field(init=False, factory=list)
    _throttles: dict[str, int] = attrs.field(init=False, factory=dict)
    _events: collections.deque[Decision] = attrs.field(init=False)
    _adjustments: int = attrs.field(init=False, default=0)
    _load: float | None = attrs.field(init=False, default=None)
    _ewma: float | None = attrs.field(init=False, default=None)
    _sample_time: float | None = attrs.field(init=False, default=None)
    _over_since: float | None = attrs.field(init=False, default=None)
    _headroom_since: float | None = attrs.field(init=False, default=None)
    _last_action: float | None = attrs.field(init=False, default=None)
    _last_restore: float | None = attrs.field(init=False, default=None)
    _hold: int = attrs.field(init=False, default=1)
    _state: OptimizerState = attrs.field(init=False, default="steady")

    def __attrs_post_init__(self) -> None:
        if self.headroom >= self.overload:
            raise ValueError(f"headroom ({self.headroom}) must be below overload ({self.overload})")
        if self.rate_step >= 1:
            raise ValueError(f"rate_step must be below 1, got {self.rate_step}")
        self._rate = self.base_rate
        self._events = collections.deque(maxlen=self.history)

    # ------------------------------------------------------------------ views

    @property
    def events(self) -> tuple[Decision, ...]:
        """The latest decisions (up to ``history``), oldest first."""
        return tuple(self._events)

    @property
    def adjustments(self) -> int:
        """Decisions made so far (``supervisor_optimizer_adjustments_total``)."""
        return self._adjustments

    @property
    def rate(self) -> float:
        """The tick rate the optimizer wants now."""
        return self._rate

    @property
    def floor(self) -> float:
        """The lowest rate it may set: the profile's floor (the base rate if that is lower)."""
        return min(self.profile.min_tick_rate, self.base_rate)

    def throttle(self, name: str) -> int:
        """The throttle the optimizer wants for system ``name`` (1 = every tick)."""
        return self._throttles.get(name, 1)

    def statistics(self) -> OptimizerStats:
        """A frozen view of the optimizer now."""
        return OptimizerStats(
            state=self._state,
            adjustments=self._adjustments,
            rate=self._rate,
            base_rate=self.base_rate,
            pinned_rate=self.pinned_rate,
            throttles=dict(self._throttles),
            steps=tuple(self._steps),
            load=self._load,
            smoothed=self._ewma,
            last_action=self._last_action,
        )

    # ------------------------------------------------------------------ control

    def rebase(self, rate: float) -> None:
        """Take ``rate`` as the base rate: someone else (an operator, a phase) set it.

        The optimizer's own rate steps are forgotten (its throttles stay), and
        the conditions start over, since the measurements describe the old rate.
        ``observe`` does this by itself when ``Observation.rate`` is not the
        rate it expects.
        """
        self.base_rate = rate
        self._rate = rate
        self._steps = [s for s in self._steps if s.target is not None]
        self._restart_conditions()

    def release(self, now: float, *, reason: str = "optimizer disabled") -> list[Decision]:
        """Undo every step at once, last first (the feature flag was turned off).

        Apply the returned decisions like those of ``observe``. Rate steps are
        dropped without a decision while the rate is pinned.
        """
        out: list[Decision] = []
        while self._steps:
            step = self._steps[-1]
            if step.target is None and self.pinned_rate is not None:
                self._steps.pop()
                continue
            load = self._load if self._load is not None else 0.0
            out.append(self._apply(self._undo_of(step, now, reason, load, load)))
        self._restart_conditions()
        return out

    # ------------------------------------------------------------------ the decision

    def observe(self, obs: Observation) -> list[Decision]:
        """Take one observation; return the decisions to apply now, in order.

        Usually none; a restore is one decision; shedding may be several steps
        (a batch), each its own decision.

        Apply each decision's ``after`` as is: ``supervisor.set_tick_rate(after)``
        for a rate change, ``every = int(after)`` on the target system for a
        throttle change.
        """
        self._sync_rate(obs)
        now = obs.now
        if self._last_action is not None and now - min(obs.window, self.cooldown) < (
            self._last_action
        ):
            # The window still holds ticks from before the last action.
            self._state = "settling"
            return []
        load = obs.load
        self._load = load
        self._smooth(now, load)
        ewma = self._ewma
        assert ewma is not None
        cooled = self._last_action is None or now - self._last_action >= self.cooldown

        if ewma > self.overload:
            self._headroom_since = None
            if self._over_since is None:
                self._over_since = now
            self._state = "overloaded"
            if load > self.overload and now - self._over_since >= self.sustain and cooled:
                shed = self._shed_batch(obs, load)
                if not shed:
                    self._state = "saturated"
                return shed
            return []

        self._over_since = None
        self._state = "steady"
        if not self._steps or obs.dropped:
            self._headroom_since = None
            return []
        step = self._steps[-1]
        worst = max(load, ewma)
        predicted = self._predict_undo(step, obs, worst)
        if predicted >= self.headroom:
            self._headroom_since = None
            return []
        self._state = "headroom"
        if self._headroom_since is None:
            self._headroom_since = now
        hold = self.sustain * self._hold
        held = now - self._headroom_since
        if held < hold or not cooled:
            return []
        reason = (
            f"headroom for {held:.3g} s: tick work p95 {_ms(obs.work_p95)} is {_pct(load)} "
            f"of the {_ms(obs.budget)} budget (smoothed {_pct(ewma)}); "
            f"predicted {_pct(predicted)} after undoing this step"
        )
        return [self._apply(self._undo_of(step, now, reason, load, predicted))]

    # ------------------------------------------------------------------ internals

    def _sync_rate(self, obs: Observation) -> None:
        if self.pinned_rate is not None:
            # A pinned rate belongs to the phase: the optimizer's rate steps are void.
            if any(s.target is None for s in self._steps) or not math.isclose(
                obs.rate, self._rate, rel_tol=1e-6
            ):
                self._steps = [s for s in self._steps if s.target is not None]
                self._rate = obs.rate
                self._restart_conditions()
        elif not math.isclose(obs.rate, self._rate, rel_tol=1e-6):
            self.rebase(obs.rate)

    def _smooth(self, now: float, load: float) -> None:
        if self._ewma is None or self._sample_time is None:
            self._ewma = load
        else:
            dt = max(0.0, now - self._sample_time)
            alpha = 1.0 - math.exp(-dt / self.smoothing) if self.smoothing > 0 else 1.0
            self._ewma += alpha * (load - self._ewma)
        self._sample_time = now

    def _restart_conditions(self) -> None:
        self._over_since = None
        self._headroom_since = None
        self._ewma = None
        self._sample_time = None

    def _shed_batch(self, obs: Observation, load: float) -> list[Decision]:
        """Shed until the predicted load is under the middle of the hysteresis band.

        Each step is its own decision, pushed on the stack and undone on its
        own; shedding the whole estimated excess at once (up to ``batch``
        steps) instead of one step per cooldown is what makes a surge end in
        seconds (``TestClosedLoop``), while restoring stays one step at a time.
        """
        target = (self.overload + self.headroom) / 2
        over = (
            f"tick work p95 {_ms(obs.work_p95)} is {_pct(load)} of the {_ms(obs.budget)} budget"
            f" (smoothed {_pct(self._ewma or load)}) for {obs.now - (self._over_since or 0):.3g} s"
        )
        if obs.dropped:
            over += f", {obs.dropped} tick(s) dropped"
        out: list[Decision] = []
        predicted = load
        while len(out) < self.batch and (not out or predicted >= target):
            decision = self._shed(obs, over, load, predicted)
            if decision is None:
                break
            out.append(self._apply(decision))
            predicted = decision.predicted
        return out

    def _shed(self, obs: Observation, over: str, load: float, predicted: float) -> Decision | None:
        """The next step that sheds load: a throttle if one is worth it, else a rate step.

        ``predicted`` is the load expected after the steps already taken in
        this batch; the budget is scaled to the rate those steps set.
        """
        profile = self.profile
        rate = self._rate
        budget = obs.budget * obs.rate / rate
        best: tuple[tuple[int, float, str], SystemLoad, int, float] | None = None
        for s in obs.systems:
            if s.critical or s.priority < profile.throttle_priority:
                continue
            every = self._throttles.get(s.name, 1)
            if every >= profile.max_throttle:
                continue
            new = min(every * 2, profile.max_throttle)
            gain = s.mean * (1 / every - 1 / new) / budget
            if gain < self.min_gain:
                continue
            # Least important first (highest priority number), then most expensive per tick.
            key = (-s.priority, -s.mean / every, s.name)
            if best is None or key < best[0]:
                best = (key, s, new, gain)
        if best is not None:
            _, s, new, gain = best
            every = self._throttles.get(s.name, 1)
            return Decision(
                time=obs.now,
                kind="throttle",
                target=s.name,
                before=every,
                after=new,
                reason=(
                    f"{over}; {s.name} (priority {s.priority}) costs {_ms(s.mean)} per step "
                    f"(p95 {_ms(s.p95)}): run it {_every(new)} instead of {_every(every)}"
                ),
                load=load,
                predicted=max(0.0, predicted - gain),
            )
        if self.pinned_rate is not None:
            return None
        new_rate = max(self.floor, round(rate * self.rate_step, 3))
        if new_rate >= rate:
            return None
        return Decision(
            time=obs.now,
            kind="rate_down",
            target=None,
            before=rate,
            after=new_rate,
            reason=(
                f"{over}; nothing left worth throttling: lower the tick rate "
                f"{_hz(rate)} -> {_hz(new_rate)} (floor {_hz(self.floor)})"
            ),
            load=load,
            predicted=predicted * new_rate / rate,
        )

    def _predict_undo(self, step: Decision, obs: Observation, load: float) -> float:
        if step.target is None:
            return load * step.before / step.after
        s = next((s for s in obs.systems if s.name == step.target), None)
        if s is None:
            return load
        return load + s.p95 * (1 / step.before - 1 / step.after) / obs.budget

    def _undo_of(
        self, step: Decision, now: float, reason: str, load: float, predicted: float
    ) -> Decision:
        if step.target is None:
            what = f"restore the tick rate {_hz(step.after)} -> {_hz(step.before)}"
        else:
            what = f"run {step.target} {_every(step.before)} again instead of {_every(step.after)}"
        return Decision(
            time=now,
            kind=_INVERSE[step.kind],
            target=step.target,
            before=step.after,
            after=step.before,
            reason=f"{reason}: {what}",
            load=load,
            predicted=predicted,
        )

    def _apply(self, decision: Decision) -> Decision:
        now = decision.time
        if decision.sheds:
            self._steps.append(decision)
            restore = self._last_restore
            if restore is not None and restore == self._last_action:
                if now - restore < self.flap_window:
                    # The last restore did not hold: wait longer before the next one.
                    self._hold = min(self._hold * 2, self.max_hold)
                else:
                    self._hold = 1
        else:
            self._steps.pop()
            self._last_restore = now
            # A restore starts a new episode: a new overload must be sustained again.
            self._over_since = None
        if decision.target is None:
            self._rate = decision.after
        elif decision.after <= 1:
            self._throttles.pop(decision.target, None)
        else:
            self._throttles[decision.target] = int(decision.after)
        # Shedding keeps the overload clock (the next step only waits for the
        # cooldown); headroom must be seen again under the new setting.
        self._headroom_since = None
        self._ewma = None
        self._sample_time = None
        self._last_action = now
        self._adjustments += 1
        self._events.append(decision)
        return decision
