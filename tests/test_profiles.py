"""Device profiles: detection with psutil (faked here), the choice, and what it sets.

psutil and ``os.getloadavg`` are replaced with fakes so every test describes
one imaginary machine, whatever machine runs the tests.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import psutil
import pytest

from supervisor import Config, ConfigError, MachineFacts, Profile, Supervisor
from supervisor._core._config_sections import BUILTIN_PROFILES
from supervisor._core._profiles import choose_profile, detect_facts
from supervisor.testing import make_supervisor

PROFILES_TOML = Path(__file__).resolve().parent.parent / "configs" / "profiles.toml"
GIB = 2**30


class FakeMachine:
    """Installs fake psutil answers for one imaginary machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._mp = monkeypatch

    def __call__(
        self,
        cores: int | None,
        memory_gb: float,
        *,
        physical: int | None = None,
        freq_mhz: float | None = 2400.0,
        available_gb: float | None = None,
        load1: float = 0.25,
    ) -> None:
        def cpu_count(logical: bool = True) -> int | None:
            if logical:
                return cores
            return physical if physical is not None else cores

        def cpu_freq(percpu: bool = False) -> Any:
            if freq_mhz is None:
                return None  # psutil's answer where the frequency is unknown
            return SimpleNamespace(current=freq_mhz, min=800.0, max=freq_mhz)

        def virtual_memory() -> Any:
            total = int(memory_gb * GIB)
            avail = int((available_gb if available_gb is not None else memory_gb / 2) * GIB)
            return SimpleNamespace(total=total, available=avail, percent=0.0)

        self._mp.setattr(psutil, "cpu_count", cpu_count)
        self._mp.setattr(psutil, "cpu_freq", cpu_freq)
        self._mp.setattr(psutil, "virtual_memory", virtual_memory)
        self._mp.setattr(os, "getloadavg", lambda: (load1, 0.0, 0.0))


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeMachine:
    """Call it with (cores, memory_gb) to describe the machine psutil reports."""
    return FakeMachine(monkeypatch)


#: A user profile for big machines, as a ``[profiles.beast]`` table.
BEAST: dict[str, Any] = {
    "tick_rate": 128.0,
    "budget_fraction": 0.75,
    "min_tick_rate": 30.0,
    "min_cores": 16,
    "min_memory_gb": 32.0,
}


def facts(cores: int, memory_gb: float) -> MachineFacts:
    """Facts of a machine with ``cores`` logical cores and ``memory_gb`` GiB."""
    return MachineFacts(
        logical_cores=cores,
        physical_cores=cores,
        freq_mhz=2400.0,
        memory_total_gb=memory_gb,
        memory_available_gb=memory_gb / 2,
        load1=0.0,
    )


def config(raw: dict[str, Any] | None = None) -> Config:
    """A config from a TOML-shaped mapping, without reading the environment."""
    return Config.from_mapping(raw or {}, env={})


class TestDetectFacts:
    """``detect_facts`` reports what psutil says."""

    def test_reads_psutil(self, machine: FakeMachine) -> None:
        machine(8, 16, physical=4, freq_mhz=3100.0, available_gb=12, load1=1.5)
        assert detect_facts() == MachineFacts(
            logical_cores=8,
            physical_cores=4,
            freq_mhz=3100.0,
            memory_total_gb=16.0,
            memory_available_gb=12.0,
            load1=1.5,
        )

    def test_unknown_counts_and_frequency(self, machine: FakeMachine) -> None:
        """psutil answers None for counts it cannot read: one core, frequency 0."""
        machine(None, 1, freq_mhz=None)
        got = detect_facts()
        assert (got.logical_cores, got.physical_cores, got.freq_mhz) == (1, 1, 0.0)

    def test_no_load_average(self, machine: FakeMachine, monkeypatch: pytest.MonkeyPatch) -> None:
        """Where ``os.getloadavg`` does not exist (Windows), the load is 0."""
        machine(2, 4)
        monkeypatch.delattr(os, "getloadavg")
        assert detect_facts().load1 == 0.0

    def test_as_dict(self) -> None:
        assert facts(2, 4).as_dict() == {
            "logical_cores": 2,
            "physical_cores": 2,
            "freq_mhz": 2400.0,
            "memory_total_gb": 4.0,
            "memory_available_gb": 2.0,
            "load1": 0.0,
        }


class TestAuto:
    """``auto``: the most demanding built-in profile the machine meets."""

    @pytest.mark.parametrize(
        ("cores", "memory_gb", "expected"),
        [
            (1, 1, "low"),
            (1, 64, "low"),  # memory alone is not enough
            (2, 2, "medium"),
            (2, 16, "medium"),
            (4, 2, "medium"),  # cores but not the memory of "high"
            (4, 4, "high"),
            (8, 16, "high"),
            (64, 256, "high"),
        ],
    )
    def test_detected_machine_gets(
        self, machine: FakeMachine, cores: int, memory_gb: float, expected: str
    ) -> None:
        machine(cores, memory_gb)
        profile, _ = choose_profile(BUILTIN_PROFILES, "auto", detect_facts())
        assert profile.name == expected
        assert profile == BUILTIN_PROFILES[expected]

    def test_reason_names_the_facts(self) -> None:
        profile, reason = choose_profile(BUILTIN_PROFILES, "auto", facts(8, 16))
        assert profile.name == "high"
        assert "8 logical cores" in reason
        assert "16.0 GB" in reason
        assert "'high'" in reason
        assert "needs 4 cores, 4 GB" in reason

    def test_nothing_fits_takes_the_lightest(self) -> None:
        profiles = {
            "big": Profile(name="big", tick_rate=60.0, min_cores=8),
            "mid": Profile(name="mid", tick_rate=40.0, min_cores=4),
        }
        profile, reason = choose_profile(profiles, "auto", facts(2, 4))
        assert profile.name == "mid"
        assert "no profile fits 2 cores and 4.0 GB" in reason
        assert "'mid'" in reason


class TestByName:
    """A profile asked for by name wins over detection; an unknown name is an error."""

    @pytest.mark.parametrize(("cores", "memory_gb"), [(1, 1), (8, 16)])
    @pytest.mark.parametrize("wanted", ["low", "medium", "high"])
    def test_explicit_name_wins(self, wanted: str, cores: int, memory_gb: float) -> None:
        profile, reason = choose_profile(BUILTIN_PROFILES, wanted, facts(cores, memory_gb))
        assert profile is BUILTIN_PROFILES[wanted]
        assert reason == f"profile {wanted!r} was asked for"

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(ConfigError) as info:
            choose_profile(BUILTIN_PROFILES, "ultra", facts(8, 16))
        err = info.value
        assert err.key == "supervisor.profile"
        assert "'ultra'" in err.message
        for name in ("low", "medium", "high", "auto"):
            assert name in err.message

    def test_unknown_name_lists_user_profiles(self) -> None:
        cfg = config({"profiles": {"arena": {"tick_rate": 64.0}}})
        with pytest.raises(ConfigError, match=r"known: arena, high, low, medium, auto"):
            choose_profile(cfg.profiles, "ultra", facts(8, 16))

    def test_unknown_name_in_config_fails_the_supervisor(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown profile 'ultra'"):
            make_supervisor([], config={"supervisor": {"profile": "ultra"}})

    def test_name_from_config_and_from_the_argument(self) -> None:
        big = facts(8, 16)
        sup = make_supervisor([], config={"supervisor": {"profile": "low"}}, facts=big)
        assert sup.profile.name == "low"
        assert sup.profile_reason == "profile 'low' was asked for"
        # The argument (the CLI's --profile) wins over the config.
        sup = make_supervisor(
            [], config={"supervisor": {"profile": "low"}}, facts=big, profile="medium"
        )
        assert sup.profile.name == "medium"


class TestUserProfiles:
    """``[profiles.NAME]`` tables from the config take part in the choice."""

    def test_added_profile_is_considered(self) -> None:
        profiles = config({"profiles": {"beast": BEAST}}).profiles
        assert set(profiles) == {"low", "medium", "high", "beast"}
        assert profiles["beast"].name == "beast"
        assert choose_profile(profiles, "auto", facts(32, 64))[0].name == "beast"
        # A machine below its floors still gets a built-in.
        assert choose_profile(profiles, "auto", facts(8, 16))[0].name == "high"
        assert choose_profile(profiles, "auto", facts(16, 16))[0].name == "high"

    def test_replaced_builtin_is_considered(self) -> None:
        raw = {
            "profiles": {
                "high": {"tick_rate": 60.0, "min_tick_rate": 20.0, "min_cores": 16},
            }
        }
        profiles = config(raw).profiles
        assert profiles["high"].min_cores == 16
        assert choose_profile(profiles, "auto", facts(8, 16))[0].name == "medium"
        assert choose_profile(profiles, "auto", facts(16, 16))[0].name == "high"

    def test_supervisor_uses_a_user_profile(self) -> None:
        sup = make_supervisor([], config={"profiles": {"beast": BEAST}}, facts=facts(32, 64))
        assert sup.profile.name == "beast"
        assert sup.tick_rate == 128.0
        assert sup.budget == pytest.approx(0.75 / 128.0)
        assert "'beast'" in sup.profile_reason

    def test_auto_cannot_be_a_profile_name(self) -> None:
        with pytest.raises(ConfigError, match="reserved"):
            config({"profiles": {"auto": {"tick_rate": 30.0}}})


class TestSupervisorRate:
    """The chosen profile sets the tick rate and budget unless the config sets a rate."""

    @pytest.mark.parametrize(
        ("cores", "memory_gb", "name", "rate", "fraction"),
        [
            (1, 1, "low", 20.0, 0.7),
            (2, 2, "medium", 30.0, 0.8),
            (8, 16, "high", 60.0, 0.8),
        ],
    )
    def test_profile_sets_rate_and_budget(
        self, cores: int, memory_gb: float, name: str, rate: float, fraction: float
    ) -> None:
        sup = make_supervisor([], facts=facts(cores, memory_gb))
        assert sup.profile.name == name
        assert sup.tick_rate == rate
        assert sup.budget == pytest.approx(fraction / rate)
        assert sup.facts == facts(cores, memory_gb)
        assert f"{cores} logical cores" in sup.profile_reason

    def test_configured_tick_rate_overrides_the_profile(self) -> None:
        sup = make_supervisor([], config={"supervisor": {"tick_rate": 45}}, facts=facts(1, 1))
        assert sup.profile.name == "low"  # still chosen: its budget fraction and floors apply
        assert sup.tick_rate == 45.0
        assert sup.budget == pytest.approx(0.7 / 45.0)

    def test_argument_overrides_the_configured_rate(self) -> None:
        sup = make_supervisor(
            [], config={"supervisor": {"tick_rate": 45}}, facts=facts(8, 16), tick_rate=100.0
        )
        assert sup.tick_rate == 100.0
        assert sup.budget == pytest.approx(0.8 / 100.0)

    def test_configured_budget_fraction_overrides_the_profile(self) -> None:
        sup = make_supervisor(
            [], config={"supervisor": {"budget_fraction": 0.5}}, facts=facts(8, 16)
        )
        assert sup.tick_rate == 60.0
        assert sup.budget == pytest.approx(0.5 / 60.0)

    def test_phase_overlay_picks_the_profile(self) -> None:
        """``[phases.testing] supervisor.profile`` applies when starting in that phase."""
        raw = {"phases": {"testing": {"supervisor": {"profile": "low"}}}}
        big = facts(8, 16)
        assert make_supervisor([], config=raw, facts=big).profile.name == "high"
        assert make_supervisor([], config=raw, facts=big, phase="testing").profile.name == "low"

    def test_facts_default_to_detection(self, machine: FakeMachine, tmp_path: Path) -> None:
        """Without ``facts=``, the supervisor reads the machine with psutil once."""
        machine(1, 1)
        sup = Supervisor(Config(), state_dir=tmp_path, persist=False)
        assert sup.facts.logical_cores == 1
        assert sup.facts.memory_total_gb == 1.0
        assert sup.profile.name == "low"
        assert sup.tick_rate == 20.0


class TestShippedFile:
    """``configs/profiles.toml`` is the built-ins, written out."""

    def test_loads_to_the_builtins(self) -> None:
        cfg = Config.from_toml(PROFILES_TOML, env={})
        assert dict(cfg.profiles) == BUILTIN_PROFILES

    def test_every_key_is_written_out(self) -> None:
        """Each table sets every key, so it reads (and copies) as the whole profile."""
        raw = tomllib.loads(PROFILES_TOML.read_text(encoding="utf-8"))
        assert set(raw) == {"profiles"}
        keys = {f.name for f in attrs.fields(Profile) if not f.metadata.get("hidden")}
        assert set(raw["profiles"]) == set(BUILTIN_PROFILES)
        for name, table in raw["profiles"].items():
            assert set(table) == keys, name

    def test_every_key_is_explained(self) -> None:
        """The first table comments each key on the line above it."""
        lines = PROFILES_TOML.read_text(encoding="utf-8").splitlines()
        start = lines.index("[profiles.low]")
        end = lines.index("[profiles.medium]")
        for i in range(start + 1, end):
            if lines[i] and not lines[i].startswith("#"):
                assert lines[i - 1].startswith("#"), lines[i]
