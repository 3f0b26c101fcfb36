"""Feature flags per player and experiments, evaluated on the tick without allocating.

A player's *bucket* in a flag or experiment NAME is ::

    h = crc32(f"{NAME}:{player_id}".encode("utf-8"))    # CRC-32 (zlib, IEEE)
    bucket = (h * 2654435761 % 2**32) * 10000 >> 32     # 0 .. 9999

(``player_id`` as text: the int 42 and the string ``"42"`` are one player,
so an OpenFeature targeting key, always a string, agrees with ``ctx.flag``).
CRC-32 is in every language's standard library and is the same in every
process and Python version (``hash()`` is salted per process, so it is never
used). CRC is linear: the CRCs of one player in two flags differ by a constant
XOR, so they are scrambled by Knuth's multiplicative hash (2654435761 is about
2**32 / the golden ratio; the carries of the product mix every bit into the
high ones), and the high bits are mapped onto 0..9999 by Lemire's
multiply-shift, uniform to within 10000 / 2**32. ``tests/test_flags.py``
checks that two flags at 50 % overlap on a quarter of the players.

A flag at ``percent`` is on for buckets below ``percent * 100``: raising the
percent only adds players (10 % is a subset of 25 %), and lowering it takes
back the last ones added. An experiment's arms own consecutive ranges of
buckets by weight, looked up in a 10,000-byte table made once.

Everything per flag is made when the config is read (the seed, the threshold,
the segment set); an evaluation is a dict lookup, one ``encode``, one CRC
continued from the flag's seed and three integer operations, written out in
``Flags.flag`` and ``Flags.variant`` (calling a helper would cost as much as
the hash itself): no object outlives it, and nothing grows per player but the
bounded tables below (``bench/flags.py`` measures both).

:class:`Flags` is also the narrow runtime API the staged rollout drives:
``percent``, ``set_percent`` (with a reason; listeners hear every change),
``names``. A percent set at run time outlives phase changes (a rollout owns
it) until it is set again; the other keys follow the phase's overlay.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs

if TYPE_CHECKING:
    from ._config import Config
    from ._config_flags import ExperimentConfig, FlagConfig
    from ._config_sections import RecoveryConfig

__all__ = [
    "BUCKETS",
    "MAX_PLAYERS_SEEN",
    "MAX_SEGMENT_PLAYERS",
    "FlagChange",
    "Flags",
    "Reader",
    "UnknownExperimentError",
    "UnknownFlagError",
    "bucket",
]

BUCKETS: Final = 10_000
#: Players whose segments are kept (``ctx.player_segments``); more are refused, counted.
#: (About 150 bytes a player: the set of segments is shared by every player in it.)
MAX_SEGMENT_PLAYERS: Final = 100_000
#: Distinct players counted per experiment; past it players are still served, not counted.
MAX_PLAYERS_SEEN: Final = 100_000
_crc32 = zlib.crc32


class UnknownFlagError(KeyError):
    """``ctx.flag``/``set_percent`` named no ``[flags.NAME]`` table."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownExperimentError(KeyError):
    """``ctx.variant`` named no ``[experiments.NAME]`` table."""

    def __str__(self) -> str:
        return str(self.args[0])


def seed_of(name: str) -> int:
    """The CRC-32 of ``NAME:``, from which every player's CRC continues."""
    return zlib.crc32(name.encode("utf-8") + b":")


def player_key(player_id: object) -> str:
    """A player id as the text that is hashed (an int in decimal, a string as it is).

    Raises:
        TypeError: not an int or a str (a bool is refused: it is no player).
    """
    kind = type(player_id)
    return player_id if kind is str else str(player_id) if kind is int else _refuse(kind)  # type: ignore[return-value]


def _refuse(kind: type) -> NoReturn:
    raise TypeError(f"a player id is an int or a str, not {kind.__name__}")


def bucket(name: str, player_id: int | str) -> int:
    """The player's bucket, 0 to 9999, in flag or experiment ``name`` (the formula above)."""
    h = _crc32(player_key(player_id).encode("utf-8"), seed_of(name))
    return (h * 2654435761 & 0xFFFFFFFF) * 10000 >> 32


@attrs.frozen
class FlagChange:
    """A flag's percent was changed at run time (what ``Flags.listeners`` hear)."""

    flag: str
    old: float
    new: float
    reason: str
    source: str


class _Flag:
    """One flag, precomputed for the hot path; updated in place, never replaced."""

    __slots__ = ("config_percent", "enabled", "everyone", "name", "override", "seed", "segments",
                 "threshold")  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.seed = seed_of(name)
        self.enabled = False
        self.config_percent = 0.0
        self.override: float | None = None
        self.segments: frozenset[str] = frozenset()
        self.threshold = 0
        self.everyone = False

    def configure(self, config: FlagConfig) -> None:
        self.enabled = config.enabled
        self.config_percent = config.percent
        self.segments = frozenset(config.segments) if config.enabled else frozenset()
        self.derive()

    def derive(self) -> None:
        pct = self.percent
        self.threshold = round(pct * 100) if self.enabled else 0
        self.everyone = self.threshold >= BUCKETS

    @property
    def percent(self) -> float:
        return self.config_percent if self.override is None else self.override


class _Experiment:
    """One experiment: its bucket -> arm table and its counters per arm."""

    __slots__ = ("arms", "config", "enabled", "errors", "evals", "exposure", "last_arm", "name",
                 "players", "seed", "seen", "table", "units")  # fmt: skip

    def __init__(self, config: ExperimentConfig) -> None:
        self.name = config.name
        self.seed = seed_of(config.name)
        self.arms = config.arm_names
        n = len(self.arms)
        self.evals = [0] * n
        self.errors = [0] * n
        self.exposure = [0.0] * n
        self.players = [0] * n
        #: CRCs of the players counted (bounded by MAX_PLAYERS_SEEN).
        self.seen: set[int] = set()
        #: The arm each reading system was last given: its next error counts for that arm.
        self.last_arm: dict[str, int] = {}
        self.configure(config)

    def configure(self, config: ExperimentConfig) -> None:
        self.config = config
        self.enabled = config.enabled
        if config.arm_names != self.arms:
            # Only an overlay can change the arms: the counters start again.
            self.__init__(config)  # type: ignore[misc]
            return
        total = sum(weight for _, weight in config.arms)
        table = bytearray(BUCKETS)
        edge = 0
        cumulative = 0.0
        for i, (_, weight) in enumerate(config.arms):
            cumulative += weight
            end = BUCKETS if i == len(config.arms) - 1 else round(cumulative / total * BUCKETS)
            table[edge:end] = bytes([i]) * (end - edge)
            edge = end
        self.table = bytes(table)
        #: Unit system -> its arm's index: every player such a system serves is
        #: in the system's arm (the arm whose recovery policy it runs under).
        self.units = {unit: self.arms.index(self.arm_of_unit(unit)) for unit in config.systems}

    def arm_of_unit(self, unit: str) -> str:
        """The arm of a system (a recovery unit): pinned by ``assign``, else hashed."""
        pinned = dict(self.config.assign).get(unit)
        if pinned is not None:
            return pinned
        if not self.enabled:
            return self.arms[0]
        return self.arms[self.table[bucket(self.name, unit)]]


class Reader:
    """One system's view of the experiments: ``ctx.variant`` is its ``variant``.

    It knows the system and its step, so each evaluation counts exposure
    (player-seconds: the step it serves the player for) and remembers the arm
    the system's next error counts for, without ``ctx`` passing them on every
    call (the hot path makes one call).
    """

    __slots__ = ("_experiments", "_loop", "_slot", "system")

    def __init__(
        self, experiments: dict[str, _Experiment], system: str | None, loop: Any, slot: Any
    ) -> None:
        self._experiments = experiments
        self.system = system
        self._loop = loop
        self._slot = slot

    def variant(self, name: str, player_id: int | str) -> str:
        """The arm of ``[experiments.NAME]`` the player is in (see ``Context.variant``).

        Raises:
            UnknownExperimentError: no ``[experiments.NAME]``.
            TypeError: the player id is not an int or a str.
        """
        e = self._experiments.get(name)
        if e is None:
            raise UnknownExperimentError(_unknown("experiment", name, self._experiments))
        kind = type(player_id)
        key: str = player_id if kind is str else str(player_id) if kind is int else _refuse(kind)  # type: ignore[assignment]
        h = _crc32(key.encode(), e.seed)
        arm = e.table[(h * 2654435761 & 0xFFFFFFFF) * 10000 >> 32] if e.enabled else 0
        if e.units:
            arm = e.units.get(self.system, arm)  # type: ignore[arg-type]
        e.evals[arm] += 1
        slot = self._slot
        if slot is not None:
            e.exposure[arm] += self._loop.dt * slot.every
            e.last_arm[self.system] = arm  # type: ignore[index]
        # Players are told apart by their CRC (an int hashes for free; two of
        # 100,000 players share one about once: a count, not an identity).
        seen = e.seen
        if h not in seen and len(seen) < MAX_PLAYERS_SEEN:
            seen.add(h)
            e.players[arm] += 1
        return e.arms[arm]


class Flags:
    """The flags and experiments of a supervisor (``sup.flags``), and their run-time changes.

    Built empty, then ``configure``d from the active config at start and at
    every phase change.
    """

    def __init__(self) -> None:
        self._flags: dict[str, _Flag] = {}
        self._experiments: dict[str, _Experiment] = {}
        #: Player key -> the segments a system said it is in.
        self._segments: dict[str, frozenset[str]] = {}
        self._combinations: dict[frozenset[str], frozenset[str]] = {}
        #: Called with a FlagChange after every ``set_percent``.
        self.listeners: list[Callable[[FlagChange], None]] = []
        #: ``player_segments`` calls refused because the table was full.
        self.segments_refused = 0
        self._anonymous = Reader(self._experiments, None, None, None)

    def configure(self, config: Config) -> None:
        """Take the flags and experiments of ``config`` (the active one); overrides are kept."""
        for name, flag_config in config.flags.items():
            flag = self._flags.get(name)
            if flag is None:
                flag = self._flags[name] = _Flag(name)
            flag.configure(flag_config)
        for name, exp_config in config.experiments.items():
            experiment = self._experiments.get(name)
            if experiment is None:
                self._experiments[name] = _Experiment(exp_config)
            else:
                experiment.configure(exp_config)

    # ------------------------------------------------------------------ the hot path

    def flag(self, name: str, player_id: int | str | None = None) -> bool:
        """Whether flag ``name`` is on for ``player_id``.

        Without a player: whether it is on for everyone (enabled at 100 %),
        so a server-wide feature is not turned on by a rollout's first 1 %.

        Raises:
            UnknownFlagError: no ``[flags.NAME]``.
            TypeError: the player id is not an int or a str.
        """
        f = self._flags.get(name)
        if f is None:
            raise UnknownFlagError(_unknown("flag", name, self._flags))
        if f.everyone or player_id is None:
            return f.everyone
        # (player_key, written out: a call would cost a fifth of the evaluation)
        kind = type(player_id)
        key: str = player_id if kind is str else str(player_id) if kind is int else _refuse(kind)  # type: ignore[assignment]
        if f.threshold:
            h = _crc32(key.encode(), f.seed)
            if (h * 2654435761 & 0xFFFFFFFF) * 10000 >> 32 < f.threshold:
                return True
        if f.segments:
            mine = self._segments.get(key)
            return mine is not None and not f.segments.isdisjoint(mine)
        return False

    def variant(self, name: str, player_id: int | str) -> str:
        """The arm of experiment ``name`` that ``player_id`` is in, counted for no system.

        (What OpenFeature's string evaluation answers; a system's ``ctx.variant``
        is its own ``Reader``'s, which also feeds exposure and error counts.)

        Raises:
            UnknownExperimentError: no ``[experiments.NAME]``.
            TypeError: the player id is not an int or a str.
        """
        return self._anonymous.variant(name, player_id)

    def reader(self, system: str, loop: Any, slot: Any) -> Reader:
        """``ctx.variant`` of one system: ``loop.dt * slot.every`` is its step."""
        return Reader(self._experiments, system, loop, slot)

    def set_segments(self, player_id: int | str, segments: Iterable[str]) -> None:
        """Record the segments a player is in (none: forget the player).

        Raises:
            TypeError: the player id is not an int or a str, or a segment is not a str.
        """
        key = player_key(player_id)
        mine = frozenset(segments)
        if not all(type(s) is str for s in mine):
            raise TypeError("segments are names (str)")
        # One set object per combination of segments, not per player (bounded too).
        shared = self._combinations.get(mine)
        if shared is not None:
            mine = shared
        elif len(self._combinations) < MAX_SEGMENT_PLAYERS:
            self._combinations[mine] = mine
        if not mine:
            self._segments.pop(key, None)
        elif key in self._segments or len(self._segments) < MAX_SEGMENT_PLAYERS:
            self._segments[key] = mine
        else:
            self.segments_refused += 1

    def segments_of(self, player_id: int | str) -> frozenset[str]:
        """The segments last recorded for a player (empty when none)."""
        return self._segments.get(player_key(player_id), frozenset())

    # ------------------------------------------------------------------ the rollout's API

    def names(self) -> list[str]:
        """Every flag's name, sorted."""
        return sorted(self._flags)

    def percent(self, name: str) -> float:
        """The flag's percent in force (a run-time one, else the active config's).

        Raises:
            UnknownFlagError: no such flag.
        """
        return self._get(name).percent

    def set_percent(self, name: str, pct: float, *, reason: str, source: str = "code") -> None:
        """Set the flag's percent at run time (it outlives phase changes) and tell the listeners.

        Raises:
            UnknownFlagError: no such flag.
            ValueError: ``pct`` is not a number from 0 to 100, or ``reason`` is not text.
        """
        flag = self._get(name)
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
            raise ValueError(f"a percent is a number from 0 to 100, not {pct!r}")
        if not isinstance(reason, str):
            raise TypeError("a reason is text")
        old = flag.percent
        flag.override = float(pct)
        flag.derive()
        change = FlagChange(flag=name, old=old, new=float(pct), reason=reason, source=source)
        for listener in self.listeners:
            listener(change)

    def enabled(self, name: str) -> bool:
        """Whether the flag is enabled (its kill switch).

        Raises:
            UnknownFlagError: no such flag.
        """
        return self._get(name).enabled

    def _get(self, name: str) -> _Flag:
        flag = self._flags.get(name) if isinstance(name, str) else None
        if flag is None:
            raise UnknownFlagError(_unknown("flag", str(name), self._flags))
        return flag

    # ------------------------------------------------------------------ views

    def describe(self) -> list[dict[str, Any]]:
        """Every flag as JSON: name, enabled, percent (and whether set at run time), segments."""
        return [
            {
                "name": f.name,
                "enabled": f.enabled,
                "percent": f.percent,
                "runtime_percent": f.override is not None,
                "segments": sorted(f.segments),
            }
            for f in sorted(self._flags.values(), key=lambda f: f.name)
        ]

    def is_flag(self, name: object) -> bool:
        """Whether ``name`` is a flag's name."""
        return isinstance(name, str) and name in self._flags

    def is_experiment(self, name: object) -> bool:
        """Whether ``name`` is an experiment's name."""
        return isinstance(name, str) and name in self._experiments

    def experiment_names(self) -> list[str]:
        """Every experiment's name, sorted."""
        return sorted(self._experiments)

    def count_error(self, system: str) -> None:
        """An error of ``system``: it counts for its own arm when it is an experiment's
        unit, else for the arm the experiment last gave it."""
        for e in self._experiments.values():
            arm = e.units.get(system, e.last_arm.get(system))
            if arm is not None:
                e.errors[arm] += 1

    def counters(self, name: str) -> Mapping[str, Any]:
        """An experiment's raw counters: arms, players, evaluations, exposure, errors, readers.

        Raises:
            UnknownExperimentError: no such experiment.
        """
        e = self._experiments.get(name)
        if e is None:
            raise UnknownExperimentError(_unknown("experiment", name, self._experiments))
        return {
            "name": e.name,
            "enabled": e.enabled,
            "arms": list(e.arms),
            "players": list(e.players),
            "players_capped": len(e.seen) >= MAX_PLAYERS_SEEN,
            "evaluations": list(e.evals),
            "exposure_seconds": list(e.exposure),
            "errors": list(e.errors),
            "systems": sorted(e.last_arm),
        }

    def recovery_units(self, base: RecoveryConfig) -> dict[str, tuple[str, str, RecoveryConfig]]:
        """System -> (experiment, arm, recovery policy), where an arm sets a recovery policy."""
        out: dict[str, tuple[str, str, RecoveryConfig]] = {}
        for e in self._experiments.values():
            if not e.config.recovery:
                continue
            for unit in e.config.systems:
                arm = e.arm_of_unit(unit)
                out[unit] = (e.name, arm, e.config.recovery_for(arm, base))
        return out


def _unknown(what: str, name: str, known: Mapping[str, Any]) -> str:
    import difflib  # noqa: PLC0415 - only on this error path

    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(known)[:20]) or f"none: add a [{what}s.NAME] table"
    return f"no {what} {str(name)[:128]!r}{hint} (known: {listed})"
