"""Flags per player (issue 13): the stable hash, monotone sets, segments, the rollout API."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import (
    Config,
    ConfigError,
    FlagChange,
    FlagConfig,
    Phase,
    UnknownFlagError,
)
from supervisor._core import _flags as _flags_module
from supervisor.testing import make_supervisor, run_systems

#: (flag, player id, bucket): the formula's answers, fixed forever (a change re-buckets every
#: player of every running rollout, so it must fail here first).
GOLDEN = [
    ("new_shop", 42, 2957),
    ("new_shop", "42", 2957),
    ("new_shop", "player-7", 5405),
    ("shop_layout", 1, 8717),
    ("a", 0, 3135),
    ("ünïcode", "😀", 2336),
]


def _reference_bucket(name: str, player: int | str) -> int:
    """The documented formula, written out again independently of ``_flags``."""
    h = zlib.crc32(f"{name}:{player}".encode())
    return (h * 2654435761 % 2**32) * 10_000 // 2**32


def _flags(tables: dict[str, Any], **more: Any) -> Any:
    return make_supervisor([], config={"flags": tables, **more}).flags


class TestHash:
    @pytest.mark.parametrize(("name", "player", "expected"), GOLDEN)
    def test_golden_values(self, name: str, player: int | str, expected: int) -> None:
        """The bucket of a few players is fixed, and is the documented formula."""
        assert _flags_module.bucket(name, player) == expected == _reference_bucket(name, player)

    def test_same_in_another_process_with_another_hash_seed(self) -> None:
        """No ``hash()``: a process with a different PYTHONHASHSEED gives the same answers."""
        code = (
            "from supervisor._core._flags import bucket\n"
            f"print([bucket(n, p) for n, p, _ in {GOLDEN!r}])"
        )
        for seed in ("1", "12345"):
            out = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
            )
            assert out.stdout.strip() == str([b for _, _, b in GOLDEN])

    def test_int_and_text_ids_are_one_player(self) -> None:
        """42 and "42" are the same player (an OpenFeature targeting key is a string)."""
        flags = _flags({"f": {"percent": 50}})
        assert all(flags.flag("f", i) == flags.flag("f", str(i)) for i in range(2000))

    def test_two_flags_are_independent(self) -> None:
        """At 50 % each, about a quarter of players have both: CRC's linearity is mixed away."""
        flags = _flags({"f": {"percent": 50}, "g": {"percent": 50}})
        both = sum(flags.flag("f", i) and flags.flag("g", i) for i in range(20_000))
        assert 4_600 < both < 5_400

    def test_the_share_is_the_percent(self) -> None:
        flags = _flags({"f": {"percent": 10}})
        on = sum(flags.flag("f", i) for i in range(20_000))
        assert 1_800 < on < 2_200


class TestMonotone:
    @given(low=st.floats(0, 100, allow_nan=False), high=st.floats(0, 100, allow_nan=False))
    def test_a_larger_percent_is_a_superset(self, low: float, high: float) -> None:
        """10 % is a subset of 25 %: a player keeps the feature as the rollout grows."""
        low, high = sorted((low, high))
        flags = _flags({"f": {"percent": low}})
        before = {p for p in range(3000) if flags.flag("f", p)}
        flags.set_percent("f", high, reason="grow")
        after = {p for p in range(3000) if flags.flag("f", p)}
        assert before <= after

    def test_rollout_steps_nest(self) -> None:
        flags = _flags({"f": {"percent": 0}})
        sets = []
        for pct in (0, 1, 5, 25, 100):
            flags.set_percent("f", pct, reason="step")
            sets.append({p for p in range(5000) if flags.flag("f", p)})
        assert all(a <= b for a, b in itertools.pairwise(sets))
        assert sets[0] == set()
        assert sets[-1] == set(range(5000))


class TestSegmentsAndSwitches:
    def test_segments_override_the_percent(self) -> None:
        flags = _flags({"f": {"percent": 0, "segments": ["beta"]}})
        flags.set_segments(7, ["beta", "eu"])
        flags.set_segments("8", ["eu"])
        assert flags.flag("f", 7)
        assert flags.flag("f", "7")
        assert not flags.flag("f", 8)
        flags.set_segments(7, ())  # the player left
        assert not flags.flag("f", 7)

    def test_disabled_is_off_for_everyone_segments_included(self) -> None:
        flags = _flags({"f": {"enabled": False, "percent": 100, "segments": ["beta"]}})
        flags.set_segments(1, ["beta"])
        assert not any(flags.flag("f", p) for p in range(100))
        assert not flags.flag("f")

    def test_without_a_player_it_is_on_only_for_everyone(self) -> None:
        """A rollout's first 1 % must not turn a server-wide feature on."""
        flags = _flags({"f": {"percent": 99.99}, "g": {}})
        assert not flags.flag("f")
        assert flags.flag("g")

    def test_bad_player_ids_are_refused(self) -> None:
        flags = _flags({"f": {"percent": 50}})
        for bad in (True, 1.5, b"1", (1,)):
            with pytest.raises(TypeError, match="int or a str"):
                flags.flag("f", bad)
        with pytest.raises(TypeError):
            flags.set_segments(1, [3])

    def test_unknown_flag_names_the_nearest(self) -> None:
        flags = _flags({"new_shop": {}})
        with pytest.raises(KeyError, match="did you mean 'new_shop'"):
            flags.flag("new_shp", 1)

    def test_segment_table_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_flags_module, "MAX_SEGMENT_PLAYERS", 3)
        flags = _flags_module.Flags()
        for p in range(5):
            flags.set_segments(p, ["beta"])
        assert flags.segments_refused == 2
        assert flags.segments_of(4) == frozenset()
        assert flags.segments_of(0) == {"beta"}


class TestRuntimeApi:
    """What the staged rollout uses: percent, set_percent, names, listeners."""

    def test_percent_names_and_listeners(self) -> None:
        flags = _flags({"b": {"percent": 10}, "a": {}})
        heard: list[FlagChange] = []
        flags.listeners.append(heard.append)
        assert flags.names() == ["a", "b"]
        assert flags.percent("b") == 10.0
        flags.set_percent("b", 25, reason="rollout step 2", source="rollout")
        assert flags.percent("b") == 25.0
        assert heard == [FlagChange("b", 10.0, 25.0, "rollout step 2", "rollout")]

    @pytest.mark.parametrize("bad", [-0.01, 100.01, float("nan"), float("inf"), True, "50", None])
    def test_bad_percent_changes_nothing(self, bad: Any) -> None:
        flags = _flags({"f": {"percent": 10}})
        heard: list[FlagChange] = []
        flags.listeners.append(heard.append)
        with pytest.raises(ValueError, match="0 to 100"):
            flags.set_percent("f", bad, reason="x")
        assert flags.percent("f") == 10.0
        assert heard == []

    def test_unknown_flag_is_a_clear_error(self) -> None:
        flags = _flags({"f": {}})
        with pytest.raises(UnknownFlagError) as info:
            flags.set_percent("nope", 5, reason="x")
        assert str(info.value) == "no flag 'nope' (known: f)"
        with pytest.raises(UnknownFlagError):
            flags.percent("nope")

    def test_run_time_percent_outlives_a_phase_change(self) -> None:
        """A rollout's percent stays; the other keys follow the phase's overlay."""
        sup = make_supervisor(
            [],
            config={
                "flags": {"f": {"percent": 10}, "g": {"percent": 10}},
                "phases": {"production": {"flags": {"f": {"percent": 50, "segments": ["vip"]},
                                                    "g": {"percent": 70}}}},
            },
        )  # fmt: skip
        sup.flags.set_percent("f", 5, reason="rollout")
        sup._lifecycle.enter_phase(Phase.PRODUCTION, caller="test", reason="go", action="phase")
        assert sup.flags.percent("f") == 5.0
        assert sup.flags.percent("g") == 70.0
        assert sup.flags.describe()[0]["segments"] == ["vip"]


class TestConfig:
    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"percent": 101}, "[flags.f.percent] expected a number from 0 to 100"),
            ({"percent": "10"}, "[flags.f.percent] expected a number, got str"),
            ({"percent": float("nan")}, "[flags.f.percent] expected a number from 0 to 100"),
            ({"percnt": 10}, "[flags.f.percnt] unknown key; did you mean 'percent'?"),
            ({"enabled": "yes"}, "[flags.f.enabled] expected true or false"),
            ({"segments": "beta"}, "[flags.f.segments] expected a list of segment names"),
            ({"segments": ["a b"]}, "[flags.f.segments] segment name 'a b' must be"),
        ],
    )
    def test_bad_flag_tables(self, table: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError) as info:
            Config.from_mapping({"flags": {"f": table}}, env={})
        assert str(info.value).startswith(f"<config>: {message}")

    def test_bad_flag_name_and_shape(self) -> None:
        with pytest.raises(ConfigError, match="flag name 'a/b'"):
            Config.from_mapping({"flags": {"a/b": {}}}, env={})
        with pytest.raises(ConfigError, match=r"\[flags.f\] expected a table"):
            Config.from_mapping({"flags": {"f": 3}}, env={})
        with pytest.raises(ConfigError, match="unknown section; did you mean 'flags'"):
            Config.from_mapping({"flgs": {}}, env={})

    def test_bad_overlay_fails_at_load(self) -> None:
        with pytest.raises(ConfigError, match=r"phases.production.*flags.f.percent"):
            Config.from_mapping(
                {"flags": {"f": {}}, "phases": {"production": {"flags": {"f": {"percent": -1}}}}},
                env={},
            )

    def test_round_trip(self) -> None:
        config = Config.from_mapping(
            {
                "flags": {"f": {"percent": 12.5, "segments": ["beta"]}, "g": {"enabled": False}},
                "experiments": {"e": {"arms": {"a": 1, "b": 3}}},
            },
            env={},
        )
        again = Config.from_mapping(config.as_mapping(), env={})
        assert again.flags == config.flags
        assert again.experiments == config.experiments
        assert config.flags["f"] == FlagConfig(name="f", percent=12.5, segments=("beta",))


class _Shop:
    """A system that asks a flag for each of its players every tick."""

    def __init__(self) -> None:
        self.on: set[int] = set()

    def start(self, ctx: Any) -> None:
        ctx.player_segments(3, ["beta"])

    def tick(self, ctx: Any) -> None:
        self.on = {p for p in range(200) if ctx.flag("new_shop", p)}


def test_a_system_reads_flags_through_ctx() -> None:
    shop = _Shop()
    run = run_systems(
        named={"shop": shop},
        ticks=3,
        config={"flags": {"new_shop": {"percent": 10, "segments": ["beta"]}}},
    )
    flags = run.supervisor.flags
    assert run.errors == []
    assert 3 in shop.on
    assert shop.on == {p for p in range(200) if flags.flag("new_shop", p)}
    assert len(shop.on) < 40


def test_evaluation_keeps_no_memory() -> None:
    """A million evaluations of known players leave nothing allocated behind.

    (Transient ints and the key's bytes are freed before the call returns;
    bench/flags.py reports the peak and the time per evaluation.)
    """
    flags = _flags({"f": {"percent": 50, "segments": ["beta"]}})
    flags.set_segments(5, ["beta"])
    flag = flags.flag
    for p in range(1000):  # warm: every code path, every small int
        flag("f", p)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(100):
            for p in range(1000):
                flag("f", p)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = [
        s
        for s in after.compare_to(before, "filename")
        if s.size_diff > 0 and s.traceback[0].filename == _flags_module.__file__
    ]
    assert grown == []
