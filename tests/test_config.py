"""Tests for the config: TOML in, frozen attrs sections out, every mistake named."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import Config, ConfigError, Phase, Profile
from supervisor._core._config import NON_CONFIG_VARIABLES, apply_env_overrides, parse_toml
from supervisor._core._config_sections import (
    BUILTIN_PROFILES,
    ApiConfig,
    FeaturesConfig,
    LoggingConfig,
    RecoveryConfig,
    SupervisorConfig,
    SystemsConfig,
    TokenConfig,
    WatchdogConfig,
)

DIGEST = hashlib.sha256(b"correct horse battery staple").hexdigest()
OTHER_DIGEST = hashlib.sha256(b"hunter2").hexdigest()


def load(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a config hermetically: no variable of the real environment is read."""
    return Config.from_mapping(raw, env={} if env is None else env)


def config_error(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ConfigError:
    """The ConfigError that loading ``raw`` raises."""
    with pytest.raises(ConfigError) as ei:
        load(raw, env)
    return ei.value


def token(**overrides: Any) -> dict[str, Any]:
    """A valid ``[api] tokens`` entry, with ``overrides`` applied."""
    item: dict[str, Any] = {"name": "ops", "role": "operator", "sha256": DIGEST}
    item.update(overrides)
    return item


class TestDefaults:
    def test_empty_mapping_gives_documented_defaults(self) -> None:
        """An empty config holds the defaults the contract documents."""
        cfg = load({})

        assert cfg.supervisor == SupervisorConfig(
            phase="development",
            profile="auto",
            tick_rate=None,
            overrun="catch_up",
            max_catch_up=5,
            state_dir="var",
            snapshot_interval=5.0,
            snapshot_generations=3,
        )
        assert (
            cfg.recovery.max_restarts,
            cfg.recovery.window_seconds,
            cfg.recovery.critical_error_limit,
            cfg.recovery.history,
        ) == (5, 30.0, 3, 100)
        assert cfg.watchdog == WatchdogConfig(hang_timeout=0.25, kill_timeout=1.0)
        assert cfg.features.optimizer is True
        assert cfg.features.watchdog is True
        assert cfg.api.listen == "unix:var/supervisor.sock"
        assert cfg.api.audit_log == "var/audit.jsonl"
        assert cfg.api.tokens == ()
        assert cfg.systems == SystemsConfig(enabled=None, options={})
        assert cfg.overlays == {}

    def test_empty_mapping_equals_default_instances(self) -> None:
        """Each section built from nothing equals the section's own default instance."""
        cfg = load({})

        assert cfg.supervisor == SupervisorConfig()
        assert cfg.recovery == RecoveryConfig()
        assert cfg.features == FeaturesConfig()
        assert cfg.logging == LoggingConfig()
        assert cfg.api == ApiConfig()

    def test_builtin_profiles_always_available(self) -> None:
        """Without ``[profiles]``, the low/medium/high built-ins are there, named."""
        cfg = load({})

        assert set(cfg.profiles) == {"low", "medium", "high"}
        assert all(name == p.name for name, p in cfg.profiles.items())

    def test_source_and_base_dir(self, tmp_path: Path) -> None:
        """``source`` names where the config came from; ``base_dir`` defaults to the cwd."""
        assert Config().source == "<defaults>"
        assert load({}).source == "<config>"
        assert load({}).base_dir == Path.cwd()
        assert Config.from_mapping({}, env={}, base_dir=tmp_path).base_dir == tmp_path

    def test_sections_are_frozen(self) -> None:
        """A loaded config cannot be changed behind the supervisor's back."""
        cfg = load({})

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            cfg.supervisor.tick_rate = 5.0  # type: ignore[misc]


class TestValues:
    @pytest.mark.parametrize(
        ("section", "key", "value", "expected"),
        [
            ("supervisor", "phase", "production", "production"),
            ("supervisor", "profile", "low", "low"),
            ("supervisor", "tick_rate", 60, 60.0),
            ("supervisor", "tick_rate", 12.5, 12.5),
            ("supervisor", "overrun", "skip", "skip"),
            ("supervisor", "max_catch_up", 0, 0),
            ("supervisor", "state_dir", "/srv/state", "/srv/state"),
            ("supervisor", "snapshot_interval", 0, 0.0),
            ("supervisor", "snapshot_generations", 7, 7),
            ("supervisor", "budget_fraction", 0.5, 0.5),
            ("supervisor", "stop_timeout", 3, 3.0),
            ("recovery", "max_restarts", 0, 0),
            ("recovery", "window_seconds", 10, 10.0),
            ("recovery", "critical_error_limit", 1, 1),
            ("recovery", "history", 5, 5),
            ("recovery", "traceback_limit", 0, 0),
            ("watchdog", "kill_timeout", 2, 2.0),
            ("features", "optimizer", False, False),
            ("features", "watchdog", False, False),
            ("features", "redaction", True, True),
            ("features", "api", False, False),
            ("features", "precise_timing", False, False),
            ("logging", "format", "json", "json"),
            ("logging", "level", "debug", "debug"),
            ("api", "listen", "127.0.0.1:9100", "127.0.0.1:9100"),
            ("api", "audit_log", "audit.jsonl", "audit.jsonl"),
            ("api", "max_body", 1, 1),
        ],
    )
    def test_valid_value_is_kept(self, section: str, key: str, value: Any, expected: Any) -> None:
        """Every key of every section accepts a value of its type; numbers become floats."""
        cfg = load({section: {key: value}})

        got = getattr(getattr(cfg, section), key)

        assert got == expected
        assert type(expected) is type(got)

    @pytest.mark.parametrize(
        ("section", "key", "value", "expected"),
        [
            ("supervisor", "tick_rate", "fast", "expected a number, got 'fast'"),
            ("supervisor", "tick_rate", [30], "expected a number"),
            ("supervisor", "phase", 1, "expected a string, got 1"),
            ("supervisor", "max_catch_up", 1.5, "expected an integer, got 1.5"),
            ("supervisor", "snapshot_generations", "3", "expected an integer"),
            ("supervisor", "state_dir", 5, "expected a string"),
            ("recovery", "window_seconds", "30s", "expected a number"),
            ("recovery", "history", 10.0, "expected an integer"),
            ("watchdog", "hang_timeout", "0.25", "expected a number"),
            ("features", "optimizer", 1, "expected true or false, got 1"),
            ("features", "watchdog", "yes", "expected true or false"),
            ("logging", "level", 10, "expected a string"),
            ("api", "max_body", "64k", "expected an integer"),
            ("api", "listen", 9100, "expected a string"),
        ],
    )
    def test_wrong_type_names_the_key(
        self, section: str, key: str, value: Any, expected: str
    ) -> None:
        """A value of the wrong type is a ConfigError naming ``[section.key]`` and the type."""
        err = config_error({section: {key: value}})

        assert err.key == f"{section}.{key}"
        assert err.source == "<config>"
        assert f"<config>: [{section}.{key}] " in str(err)
        assert expected in str(err)

    @pytest.mark.parametrize(
        ("section", "key", "expected"),
        [
            ("supervisor", "tick_rate", "expected a number, got True"),
            ("supervisor", "snapshot_interval", "expected a number"),
            ("supervisor", "max_catch_up", "expected an integer, got True"),
            ("recovery", "max_restarts", "expected an integer"),
            ("watchdog", "kill_timeout", "expected a number"),
            ("api", "max_body", "expected an integer"),
        ],
    )
    def test_bool_rejected_where_a_number_is_expected(
        self, section: str, key: str, expected: str
    ) -> None:
        """``true`` is not 1: booleans are refused for numeric keys although bool is an int."""
        err = config_error({section: {key: True}})

        assert err.key == f"{section}.{key}"
        assert expected in str(err)

    def test_section_not_a_table(self) -> None:
        """``supervisor = 5`` is an error naming the section."""
        err = config_error({"supervisor": 5})

        assert err.key == "supervisor"
        assert "expected a table" in str(err)

    def test_none_allowed_only_for_optional_keys(self) -> None:
        """An optional key (tick_rate) takes None; a required one (max_catch_up) does not."""
        assert load({"supervisor": {"tick_rate": None}}).supervisor.tick_rate is None
        assert "expected an integer" in str(config_error({"supervisor": {"max_catch_up": None}}))


class TestRanges:
    @pytest.mark.parametrize(
        ("section", "key", "value", "expected"),
        [
            ("supervisor", "tick_rate", 0, "0.0 is below the minimum 0.1"),
            ("supervisor", "tick_rate", -30, "below the minimum"),
            ("supervisor", "tick_rate", 20_000, "20000.0 is above the maximum 10000.0"),
            ("supervisor", "max_catch_up", -1, "-1 is below the minimum 0"),
            ("supervisor", "snapshot_interval", -0.5, "below the minimum"),
            ("supervisor", "snapshot_generations", 0, "below the minimum 1"),
            ("supervisor", "snapshot_generations", 1001, "above the maximum 1000"),
            ("supervisor", "budget_fraction", 1.5, "above the maximum 1.0"),
            ("supervisor", "budget_fraction", 0, "below the minimum"),
            ("supervisor", "stop_timeout", -1, "below the minimum"),
            ("recovery", "max_restarts", -1, "below the minimum"),
            ("recovery", "critical_error_limit", 0, "below the minimum 1"),
            ("recovery", "history", 0, "below the minimum 1"),
            ("recovery", "traceback_limit", 1001, "above the maximum"),
            ("watchdog", "hang_timeout", 0, "below the minimum 0.001"),
            ("api", "max_body", 0, "below the minimum 1"),
            ("api", "max_body", 16 * 1024 * 1024 + 1, "above the maximum"),
        ],
    )
    def test_out_of_range_names_key_and_bound(
        self, section: str, key: str, value: Any, expected: str
    ) -> None:
        """A value outside its range is refused, naming the key and the bound crossed."""
        err = config_error({section: {key: value}})

        assert err.key == f"{section}.{key}"
        assert expected in str(err)

    @pytest.mark.parametrize("rate", [0.1, 10_000])
    def test_bounds_are_inclusive(self, rate: float) -> None:
        """The minimum and maximum themselves are accepted."""
        assert load({"supervisor": {"tick_rate": rate}}).supervisor.tick_rate == float(rate)

    def test_kill_timeout_below_hang_timeout_rejected(self) -> None:
        """``watchdog.kill_timeout < hang_timeout`` cannot work and is refused at load."""
        err = config_error({"watchdog": {"hang_timeout": 2.0, "kill_timeout": 1.0}})

        assert err.key == "watchdog.kill_timeout"
        assert "kill_timeout (1.0) must be at least hang_timeout (2.0)" in str(err)

    def test_kill_timeout_below_default_hang_timeout_rejected(self) -> None:
        """The check also applies against a default: kill_timeout=0.1 < the 0.25 default."""
        err = config_error({"watchdog": {"kill_timeout": 0.1}})

        assert "kill_timeout (0.1) must be at least hang_timeout (0.25)" in str(err)

    def test_kill_timeout_equal_to_hang_timeout_allowed(self) -> None:
        """Equal timeouts are allowed: the step is interrupted as soon as it is noticed."""
        wd = load({"watchdog": {"hang_timeout": 0.5, "kill_timeout": 0.5}}).watchdog

        assert (wd.hang_timeout, wd.kill_timeout) == (0.5, 0.5)

    def test_backoff_max_below_backoff_initial_rejected(self) -> None:
        """Recovery backoff must not shrink: backoff_max < backoff_initial is an error."""
        err = config_error({"recovery": {"backoff_initial": 5, "backoff_max": 1}})

        assert err.key == "recovery.backoff_max"
        assert "backoff_max (1.0) must be at least backoff_initial (5.0)" in str(err)


class TestChoices:
    @pytest.mark.parametrize("overrun", ["catch_up", "skip"])
    def test_overrun_choices_accepted(self, overrun: str) -> None:
        """Both overrun policies are accepted."""
        assert load({"supervisor": {"overrun": overrun}}).supervisor.overrun == overrun

    @pytest.mark.parametrize("overrun", ["drop", "CATCH_UP", ""])
    def test_overrun_other_values_rejected(self, overrun: str) -> None:
        """Any other overrun value is refused, listing the choices."""
        err = config_error({"supervisor": {"overrun": overrun}})

        assert err.key == "supervisor.overrun"
        assert f"{overrun!r} is not one of 'catch_up', 'skip'" in str(err)

    @pytest.mark.parametrize(
        ("section", "key", "value"),
        [
            ("supervisor", "phase", "prod"),
            ("supervisor", "phase", "emergency_shutdown"),
            ("logging", "format", "xml"),
            ("logging", "level", "trace"),
        ],
    )
    def test_other_choice_keys(self, section: str, key: str, value: str) -> None:
        """Phase and logging keys are limited to their choices too."""
        err = config_error({section: {key: value}})

        assert err.key == f"{section}.{key}"
        assert "is not one of" in str(err)


class TestUnknownNames:
    def test_unknown_key_suggests_nearest(self) -> None:
        """``tick_rte`` is an error that suggests ``tick_rate``."""
        err = config_error({"supervisor": {"tick_rte": 30}})

        assert err.key == "supervisor.tick_rte"
        assert str(err) == "<config>: [supervisor.tick_rte] unknown key; did you mean 'tick_rate'?"

    @pytest.mark.parametrize(
        ("section", "key", "nearest"),
        [
            ("recovery", "max_restart", "max_restarts"),
            ("watchdog", "hang_timout", "hang_timeout"),
            ("features", "optimiser", "optimizer"),
            ("logging", "levl", "level"),
            ("api", "listn", "listen"),
        ],
    )
    def test_unknown_key_in_every_section(self, section: str, key: str, nearest: str) -> None:
        """Every section rejects unknown keys with a suggestion."""
        err = config_error({section: {key: 1}})

        assert err.key == f"{section}.{key}"
        assert f"did you mean {nearest!r}?" in str(err)

    def test_unknown_key_without_near_match_lists_known_keys(self) -> None:
        """With nothing close, the error lists the keys the section knows."""
        err = config_error({"watchdog": {"zzz": 1}})

        assert str(err).endswith("unknown key; known keys: hang_timeout, kill_timeout")

    def test_unknown_section_suggests_nearest(self) -> None:
        """A misspelt section is an error that suggests the nearest section."""
        err = config_error({"supervsor": {"tick_rate": 30}})

        assert err.key == "supervsor"
        assert "unknown section; did you mean 'supervisor'?" in str(err)

    @pytest.mark.parametrize(("section", "nearest"), [("system", "systems"), ("phase", "phases")])
    def test_unknown_section_suggests_special_sections(self, section: str, nearest: str) -> None:
        """``systems``, ``profiles`` and ``phases`` are known sections and can be suggested."""
        err = config_error({section: {}})

        assert f"did you mean {nearest!r}?" in str(err)

    def test_internal_field_is_not_a_key(self) -> None:
        """A field the loader sets itself (a profile's ``name``) cannot be set from the file."""
        err = config_error({"profiles": {"fast": {"name": "slow"}}})

        assert "unknown key" in str(err)

    def test_misspelt_tokens_suggests_tokens(self) -> None:
        """``[api] tokenz`` suggests ``tokens``, a key the section parses itself."""
        err = config_error({"api": {"tokenz": []}})

        assert "did you mean 'tokens'?" in str(err)


class TestApiTokens:
    def test_tokens_parsed(self) -> None:
        """Each entry becomes a TokenConfig with its name, role and digest."""
        api = load(
            {
                "api": {
                    "tokens": [
                        token(),
                        token(name="grafana", role="viewer", sha256=OTHER_DIGEST),
                    ]
                }
            }
        ).api

        assert api.tokens == (
            TokenConfig(name="ops", role="operator", sha256=DIGEST),
            TokenConfig(name="grafana", role="viewer", sha256=OTHER_DIGEST),
        )

    def test_digest_normalised_to_lower_case(self) -> None:
        """An upper-case hex digest is accepted and stored in lower case."""
        api = load({"api": {"tokens": [token(sha256=DIGEST.upper())]}}).api

        assert api.tokens[0].sha256 == DIGEST

    def test_tokens_alongside_other_keys(self) -> None:
        """``tokens`` does not disturb the other ``[api]`` keys, which are still checked."""
        api = load({"api": {"listen": "127.0.0.1:9100", "tokens": [token()]}}).api

        assert api.listen == "127.0.0.1:9100"
        assert len(api.tokens) == 1
        assert config_error({"api": {"tokens": [], "max_body": "x"}}).key == "api.max_body"

    @pytest.mark.parametrize(
        "digest",
        [
            DIGEST[:-1],
            DIGEST + "0",
            "",
            "g" * 64,
            "correct horse battery staple",
            123,
        ],
    )
    def test_bad_sha256_rejected(self, digest: Any) -> None:
        """sha256 must be exactly 64 hex digits; a plain token is refused."""
        err = config_error({"api": {"tokens": [token(sha256=digest)]}})

        assert err.key == "api.tokens[0]"
        assert "sha256 must be 64 hex digits" in str(err)

    @pytest.mark.parametrize(
        "digest",
        [
            "0x" + "a" * 62,
            "-" + "a" * 63,
            "+" + "a" * 63,
            "a" * 32 + "_" + "a" * 31,
            " " + "a" * 63,
        ],
        ids=["0x-prefix", "minus-sign", "plus-sign", "underscore", "leading-space"],
    )
    def test_sha256_must_be_only_hex_digits(self, digest: str) -> None:
        """A 64-character string with a prefix, sign, underscore or space is not a digest.

        BUG: the check is ``int(text, 16)``, which accepts ``0x``, a sign,
        underscores and surrounding whitespace, so these load and can never
        match any token.
        """
        err = config_error({"api": {"tokens": [token(sha256=digest)]}})

        assert "sha256 must be 64 hex digits" in str(err)

    @pytest.mark.parametrize("role", ["admin", "Operator", "", None])
    def test_bad_role_rejected(self, role: Any) -> None:
        """Only the roles viewer and operator exist; the error names the entry."""
        err = config_error({"api": {"tokens": [token(), token(name="x", role=role)]}})

        assert err.key == "api.tokens[1]"
        assert f"role must be 'viewer' or 'operator', got {role!r}" in str(err)

    def test_duplicate_names_rejected(self) -> None:
        """Two tokens with one name are refused, naming the second."""
        err = config_error(
            {"api": {"tokens": [token(), token(role="viewer", sha256=OTHER_DIGEST)]}}
        )

        assert err.key == "api.tokens[1]"
        assert "duplicate token name 'ops'" in str(err)

    def test_unknown_key_suggests_nearest(self) -> None:
        """An unknown key in an entry (``sha1``) names it and suggests ``sha256``."""
        err = config_error({"api": {"tokens": [token(sha1="abc")]}})

        assert err.key == "api.tokens[0].sha1"
        assert "did you mean 'sha256'?" in str(err)

    @pytest.mark.parametrize("name", ["", None, 5])
    def test_name_required(self, name: Any) -> None:
        """An entry needs a non-empty string name."""
        err = config_error({"api": {"tokens": [token(name=name)]}})

        assert "needs a non-empty 'name'" in str(err)

    def test_entry_not_a_table(self) -> None:
        """Each entry must be a table."""
        err = config_error({"api": {"tokens": [DIGEST]}})

        assert err.key == "api.tokens[0]"
        assert "expected a table" in str(err)

    def test_tokens_not_a_list(self) -> None:
        """``tokens`` must be a list of tables."""
        err = config_error({"api": {"tokens": token()}})

        assert err.key == "api.tokens"
        assert "expected a list of tables" in str(err)

    def test_api_not_a_table(self) -> None:
        """``api = "x"`` is an error naming the section."""
        assert config_error({"api": "127.0.0.1:9100"}).key == "api"


class TestProfiles:
    def test_profile_parsed_and_named(self) -> None:
        """``[profiles.NAME]`` becomes a Profile called NAME, beside the built-ins."""
        cfg = load(
            {"profiles": {"arena": {"tick_rate": 120, "budget_fraction": 0.5, "min_tick_rate": 30}}}
        )

        assert cfg.profiles["arena"] == Profile(
            name="arena", tick_rate=120.0, budget_fraction=0.5, min_tick_rate=30.0
        )
        assert set(cfg.profiles) == {"low", "medium", "high", "arena"}

    def test_profile_replaces_builtin_without_changing_it(self) -> None:
        """``[profiles.low]`` replaces the built-in for this config only."""
        cfg = load({"profiles": {"low": {"tick_rate": 15, "min_tick_rate": 5}}})

        assert cfg.profiles["low"].tick_rate == 15.0
        assert BUILTIN_PROFILES["low"].tick_rate == 20.0
        assert load({}).profiles["low"].tick_rate == 20.0

    def test_unknown_key_names_the_profile(self) -> None:
        """A typo in a profile names ``[profiles.NAME.key]`` and suggests the key."""
        err = config_error({"profiles": {"arena": {"tick_rte": 60}}})

        assert str(err) == (
            "<config>: [profiles.arena.tick_rte] unknown key; did you mean 'tick_rate'?"
        )

    def test_wrong_type_names_the_profile(self) -> None:
        """A wrong type in a profile names the profile and the key."""
        err = config_error({"profiles": {"arena": {"budget_fraction": "most"}}})

        assert "[profiles.arena.budget_fraction] expected a number, got 'most'" in str(err)

    def test_error_keeps_source_and_key(self) -> None:
        """A profile's error keeps ``source`` and ``key`` like every other ConfigError.

        BUG: ``_parse_profiles`` re-raises with ``source=None`` and no ``key``,
        so both attributes are None (only the message names them).
        """
        err = config_error({"profiles": {"arena": {"tick_rte": 60}}})

        assert (err.source, err.key) == ("<config>", "profiles.arena.tick_rte")

    def test_min_tick_rate_above_tick_rate_names_the_profile(self) -> None:
        """``min_tick_rate > tick_rate`` is refused, and the error names the profile.

        BUG: the check runs in ``__attrs_post_init__`` before the name is
        set, so the message reads ``[profiles] profile '': ...``.
        """
        err = config_error({"profiles": {"arena": {"tick_rate": 10, "min_tick_rate": 20}}})

        assert "min_tick_rate (20.0) exceeds tick_rate (10.0)" in str(err)
        assert err.key == "profiles.arena.min_tick_rate"

    def test_auto_is_reserved(self) -> None:
        """``auto`` means "detect", so no profile may take that name."""
        err = config_error({"profiles": {"auto": {"tick_rate": 30}}})

        assert err.key == "profiles.auto"
        assert "reserved" in str(err)

    def test_profile_not_a_table(self) -> None:
        """``[profiles] arena = 60`` is an error naming the profile."""
        err = config_error({"profiles": {"arena": 60}})

        assert err.key == "profiles.arena"

    def test_profiles_not_a_table(self) -> None:
        """``profiles = 1`` is an error naming the section."""
        assert config_error({"profiles": 1}).key == "profiles"


class TestPhaseOverlays:
    def test_for_phase_applies_overlay(self) -> None:
        """``for_phase`` returns the config with that phase's overlay merged in."""
        cfg = load(
            {
                "supervisor": {"tick_rate": 30, "overrun": "skip"},
                "features": {"optimizer": True},
                "phases": {
                    "production": {
                        "supervisor": {"tick_rate": 60},
                        "features": {"optimizer": False},
                    }
                },
            }
        )

        prod = cfg.for_phase(Phase.PRODUCTION)

        assert prod.supervisor.tick_rate == 60.0
        assert prod.supervisor.overrun == "skip"  # tables merge, keys not overlaid stay
        assert prod.features.optimizer is False
        assert cfg.supervisor.tick_rate == 30.0  # the base config is unchanged
        assert cfg.features.optimizer is True

    def test_for_phase_without_overlay_is_identity(self) -> None:
        """A phase with no overlay gets the very same config back."""
        cfg = load({"phases": {"production": {"supervisor": {"tick_rate": 60}}}})

        assert cfg.for_phase(Phase.DEVELOPMENT) is cfg
        assert cfg.for_phase(Phase.TESTING) is cfg

    def test_overlay_keeps_overlays_and_source(self) -> None:
        """The phase's config can itself be switched to another phase."""
        cfg = load(
            {
                "phases": {
                    "production": {"supervisor": {"tick_rate": 60}},
                    "testing": {"supervisor": {"tick_rate": 45}},
                }
            }
        )

        prod = cfg.for_phase(Phase.PRODUCTION)

        assert cfg.overlays == prod.overlays
        assert cfg.source == prod.source
        assert prod.for_phase(Phase.TESTING).supervisor.tick_rate == 45.0

    def test_overlay_can_add_sections_profiles_and_systems(self) -> None:
        """An overlay may add a section, a profile or systems the base does not have."""
        cfg = load(
            {
                "phases": {
                    "emergency_shutdown": {"logging": {"level": "debug"}},
                    "production": {
                        "profiles": {"arena": {"tick_rate": 90}},
                        "systems": {"enabled": ["heartbeat"]},
                    },
                }
            }
        )

        prod = cfg.for_phase(Phase.PRODUCTION)

        assert prod.profiles["arena"].tick_rate == 90.0
        assert prod.systems.enabled == ("heartbeat",)
        assert "arena" not in cfg.profiles
        assert cfg.for_phase(Phase.EMERGENCY_SHUTDOWN).logging.level == "debug"

    def test_bad_key_in_overlay_fails_at_load(self) -> None:
        """A typo in an overlay is caught when the file loads, not at the phase change."""
        err = config_error({"phases": {"production": {"supervisor": {"tick_rte": 60}}}})

        assert err.key == "supervisor.tick_rte"
        assert err.source == "<config> [phases.production]"
        assert "did you mean 'tick_rate'?" in str(err)

    def test_bad_value_in_overlay_fails_at_load(self) -> None:
        """A wrong value in an overlay is caught at load, naming the overlay."""
        err = config_error({"phases": {"production": {"supervisor": {"overrun": "drop"}}}})

        assert "[phases.production]" in str(err)
        assert err.key == "supervisor.overrun"

    def test_overlay_invalid_only_after_merge_fails_at_load(self) -> None:
        """Valid alone but invalid merged (kill below the base's hang) fails at load."""
        err = config_error(
            {
                "watchdog": {"hang_timeout": 0.5, "kill_timeout": 2.0},
                "phases": {"testing": {"watchdog": {"kill_timeout": 0.3}}},
            }
        )

        assert "[phases.testing]" in str(err)
        assert "kill_timeout (0.3) must be at least hang_timeout (0.5)" in str(err)

    def test_unknown_section_in_overlay(self) -> None:
        """An unknown section in an overlay is named and corrected."""
        err = config_error({"phases": {"production": {"featurs": {}}}})

        assert "did you mean 'features'?" in str(err)

    def test_unknown_phase_suggests_nearest(self) -> None:
        """``[phases.prod]`` suggests ``production``."""
        err = config_error({"phases": {"prod": {}}})

        assert err.key == "phases.prod"
        assert "unknown phase; did you mean 'production'?" in str(err)

    def test_overlay_not_a_table(self) -> None:
        """``[phases] production = 1`` is an error naming the phase."""
        err = config_error({"phases": {"production": 1}})

        assert err.key == "phases.production"

    def test_phases_not_a_table(self) -> None:
        """``phases = 1`` is an error."""
        assert config_error({"phases": 1}).key == "phases"

    def test_overlay_cannot_nest_phases(self) -> None:
        """An overlay holding ``phases`` is refused."""
        err = config_error({"phases": {"production": {"phases": {}}}})

        assert "an overlay cannot hold phases" in str(err)


class TestEnvOverrides:
    def test_number_override_becomes_float(self) -> None:
        """``SUPERVISOR_SUPERVISOR_TICK_RATE=60`` sets tick_rate to 60.0."""
        cfg = load({}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "60"})

        assert cfg.supervisor.tick_rate == 60.0
        assert type(cfg.supervisor.tick_rate) is float

    def test_override_wins_over_file(self) -> None:
        """An environment variable overrides the value in the file."""
        cfg = load({"supervisor": {"tick_rate": 30}}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "20"})

        assert cfg.supervisor.tick_rate == 20.0

    @pytest.mark.parametrize(
        ("var", "text", "section", "key", "expected"),
        [
            ("SUPERVISOR_SUPERVISOR_MAX_CATCH_UP", "9", "supervisor", "max_catch_up", 9),
            (
                "SUPERVISOR_SUPERVISOR_SNAPSHOT_INTERVAL",
                "0.5",
                "supervisor",
                "snapshot_interval",
                0.5,
            ),
            ("SUPERVISOR_FEATURES_OPTIMIZER", "false", "features", "optimizer", False),
            ("SUPERVISOR_WATCHDOG_KILL_TIMEOUT", "2.5", "watchdog", "kill_timeout", 2.5),
            ("SUPERVISOR_RECOVERY_MAX_RESTARTS", "0", "recovery", "max_restarts", 0),
            ("SUPERVISOR_SUPERVISOR_OVERRUN", "skip", "supervisor", "overrun", "skip"),
            (
                "SUPERVISOR_SUPERVISOR_STATE_DIR",
                "/srv/game state",
                "supervisor",
                "state_dir",
                "/srv/game state",
            ),
            ("SUPERVISOR_API_LISTEN", "127.0.0.1:9100", "api", "listen", "127.0.0.1:9100"),
            ("SUPERVISOR_API_LISTEN", '"unix:x.sock"', "api", "listen", "unix:x.sock"),
            ("SUPERVISOR_LOGGING_FORMAT", "json", "logging", "format", "json"),
        ],
    )
    def test_values_read_as_toml_else_plain_string(
        self, var: str, text: str, section: str, key: str, expected: Any
    ) -> None:
        """Values parse as TOML (numbers, booleans, quoted strings), else as plain strings."""
        cfg = load({}, env={var: text})

        got = getattr(getattr(cfg, section), key)

        assert got == expected
        assert type(expected) is type(got)

    def test_quoted_number_is_a_string_and_refused(self) -> None:
        """A TOML-quoted ``"60"`` is a string, so tick_rate refuses it, naming key and value."""
        err = config_error({}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": '"60"'})

        assert err.key == "supervisor.tick_rate"
        assert "expected a number, got '60'" in str(err)

    def test_bad_value_names_key_and_value(self) -> None:
        """A value of the wrong type from the environment is refused, naming key and value."""
        err = config_error({}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "fast"})

        assert err.key == "supervisor.tick_rate"
        assert "got 'fast'" in str(err)

    @pytest.mark.parametrize("var", ["SUPERVISOR_TOKEN", "SUPERVISORS_X_Y", "OTHER_SUPERVISOR_X"])
    def test_non_override_variables_ignored(self, var: str) -> None:
        """The client's SUPERVISOR_TOKEN and variables of other prefixes are not overrides."""
        assert load({}, env={var: "s3cret", "HOME": "/root"}).supervisor == SupervisorConfig()

    def test_unknown_key_in_known_section_names_the_variable(self) -> None:
        """``SUPERVISOR_SUPERVISOR_TICK_RTE`` is an error naming the variable and suggesting."""
        err = config_error({}, env={"SUPERVISOR_SUPERVISOR_TICK_RTE": "60"})

        assert err.source == "SUPERVISOR_SUPERVISOR_TICK_RTE"
        assert err.key == "supervisor.tick_rte"
        assert str(err).startswith("SUPERVISOR_SUPERVISOR_TICK_RTE: ")
        assert "did you mean 'tick_rate'?" in str(err)

    def test_override_into_non_table_section(self) -> None:
        """An override for a section that is not a table in the file is an error."""
        err = config_error({"supervisor": 5}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "60"})

        assert err.source == "SUPERVISOR_SUPERVISOR_TICK_RATE"

    def test_real_environment_read_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without ``env``, overrides come from ``os.environ``."""
        monkeypatch.setenv("SUPERVISOR_SUPERVISOR_TICK_RATE", "42")

        assert Config.from_mapping({}).supervisor.tick_rate == 42.0

    def test_input_mapping_not_mutated(self) -> None:
        """Overrides are applied to a copy; the caller's mapping is untouched."""
        raw: dict[str, Any] = {"supervisor": {"tick_rate": 30}}

        out = apply_env_overrides(raw, {"SUPERVISOR_SUPERVISOR_TICK_RATE": "60"})

        assert raw == {"supervisor": {"tick_rate": 30}}
        assert out == {"supervisor": {"tick_rate": 60}}

    def test_override_wins_over_phase_overlay(self) -> None:
        """An environment override beats the file's phase overlay too.

        BUG: overrides are applied to the raw file and the overlay is merged
        on top in ``for_phase``, so in production the file's 10 Hz silently
        beats the operator's ``SUPERVISOR_SUPERVISOR_TICK_RATE=60``.
        """
        cfg = load(
            {"phases": {"production": {"supervisor": {"tick_rate": 10}}}},
            env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "60"},
        )

        assert cfg.for_phase(Phase.PRODUCTION).supervisor.tick_rate == 60.0


class TestFromToml:
    def test_reads_file(self, tmp_path: Path) -> None:
        """A TOML file is read and validated; source and base_dir point at it."""
        path = tmp_path / "game.toml"
        path.write_text(
            '[supervisor]\ntick_rate = 60\noverrun = "skip"\n\n'
            '[systems]\nenabled = ["heartbeat"]\n\n'
            "[phases.production.features]\noptimizer = false\n",
            encoding="utf-8",
        )

        cfg = Config.from_toml(path, env={})

        assert cfg.supervisor.tick_rate == 60.0
        assert cfg.supervisor.overrun == "skip"
        assert cfg.systems.enabled == ("heartbeat",)
        assert cfg.for_phase(Phase.PRODUCTION).features.optimizer is False
        assert cfg.source == str(path)
        assert cfg.base_dir == tmp_path.resolve()

    def test_env_applies_to_files(self, tmp_path: Path) -> None:
        """Environment overrides apply to a file as well."""
        path = tmp_path / "game.toml"
        path.write_text("[supervisor]\ntick_rate = 60\n", encoding="utf-8")

        cfg = Config.from_toml(path, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "20"})

        assert cfg.supervisor.tick_rate == 20.0

    def test_error_names_the_file(self, tmp_path: Path) -> None:
        """A mistake in the file is reported with the file's name."""
        path = tmp_path / "game.toml"
        path.write_text("[supervisor]\ntick_rte = 60\n", encoding="utf-8")

        with pytest.raises(ConfigError) as ei:
            Config.from_toml(path, env={})

        assert ei.value.source == str(path)
        assert str(ei.value).startswith(f"{path}: [supervisor.tick_rte] unknown key")

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is one line naming it."""
        path = tmp_path / "nope.toml"

        with pytest.raises(ConfigError) as ei:
            Config.from_toml(path, env={})

        assert str(ei.value) == f"{path}: no such file"
        assert ei.value.__cause__ is None

    def test_not_toml(self, tmp_path: Path) -> None:
        """A file that is not TOML is one line naming it and the parse error."""
        path = tmp_path / "game.toml"
        path.write_text("[supervisor\ntick_rate = 60\n", encoding="utf-8")

        with pytest.raises(ConfigError) as ei:
            Config.from_toml(path, env={})

        msg = str(ei.value)
        assert msg.startswith(f"{path}: not valid TOML: ")
        assert "\n" not in msg
        assert ei.value.__suppress_context__

    def test_directory(self, tmp_path: Path) -> None:
        """A folder where a file is expected is one line naming it."""
        with pytest.raises(ConfigError) as ei:
            Config.from_toml(tmp_path, env={})

        assert str(ei.value) == f"{tmp_path}: is a directory, not a regular file"

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is one line naming it."""
        path = tmp_path / "game.toml"
        path.write_bytes(b'[supervisor]\nstate_dir = "\xff\xfe"\n')

        with pytest.raises(ConfigError) as ei:
            Config.from_toml(path, env={})

        assert str(ei.value) == f"{path}: not UTF-8 text: byte 0xff at offset 26"

    def test_path_resolves_against_config_folder(self, tmp_path: Path) -> None:
        """Relative paths in the config resolve against the file's folder, absolute stay."""
        path = tmp_path / "game.toml"
        path.write_text("", encoding="utf-8")
        cfg = Config.from_toml(path, env={})

        assert cfg.path(cfg.supervisor.state_dir) == tmp_path.resolve() / "var"
        assert cfg.path(str(Path(os.sep, "srv", "x"))) == Path(os.sep, "srv", "x")


class TestSystemsSection:
    def test_enabled_and_options(self) -> None:
        """``enabled`` becomes a tuple; each ``[systems.NAME]`` table is kept as options."""
        cfg = load(
            {
                "systems": {
                    "enabled": ["players", "bot_2", "my_pkg.mod:MySystem"],
                    "players": {"count": 200},
                    "bot_2": {"use": "players", "count": 50},
                }
            }
        )

        assert cfg.systems.enabled == ("players", "bot_2", "my_pkg.mod:MySystem")
        assert (cfg.systems.options) == {
            "players": {"count": 200},
            "bot_2": {"use": "players", "count": 50},
        }

    def test_no_enabled_means_none(self) -> None:
        """Without ``enabled``, ``enabled`` is None (every discovered system runs)."""
        assert load({"systems": {"players": {"count": 1}}}).systems.enabled is None

    def test_empty_enabled_list(self) -> None:
        """``enabled = []`` means no systems, distinct from no list."""
        assert load({"systems": {"enabled": []}}).systems.enabled == ()

    @pytest.mark.parametrize("enabled", ["players", ["players", 3], ["players", ""], {"a": 1}])
    def test_enabled_must_be_list_of_names(self, enabled: Any) -> None:
        """``enabled`` must be a list of non-empty strings."""
        err = config_error({"systems": {"enabled": enabled}})

        assert err.key == "systems.enabled"
        assert "expected a list of system names or import strings" in str(err)

    def test_duplicate_enabled_rejected(self) -> None:
        """A system enabled twice is named."""
        err = config_error({"systems": {"enabled": ["a", "b", "a"]}})

        assert err.key == "systems.enabled"
        assert "'a' is enabled twice" in str(err)

    @pytest.mark.parametrize("use", ["", 5, ["players"]])
    def test_use_must_name_a_class(self, use: Any) -> None:
        """``use`` must be a non-empty string."""
        err = config_error({"systems": {"bot": {"use": use}}})

        assert err.key == "systems.bot.use"
        assert "'use' must name a system class" in str(err)

    def test_non_table_rejected(self) -> None:
        """``[systems] players = 5`` is neither ``enabled`` nor a table: an error naming it."""
        err = config_error({"systems": {"players": 5}})

        assert err.key == "systems.players"
        assert "expected 'enabled' or a [systems.NAME] table" in str(err)

    def test_systems_not_a_table(self) -> None:
        """``systems = ["a"]`` is an error."""
        assert config_error({"systems": ["a"]}).key == "systems"


SECTION_CLASSES: list[type[Any]] = [
    SupervisorConfig,
    RecoveryConfig,
    WatchdogConfig,
    ApiConfig,
    Profile,
]


def number_fields(kind: type) -> list[tuple[type[Any], str]]:
    """Every (section class, field name) of a numeric kind, for tests that cover them all."""
    return [
        (cls, f.name)
        for cls in SECTION_CLASSES
        for f in attrs.fields(cls)
        if f.metadata.get("kind") is kind
    ]


FLOAT_FIELDS = number_fields(float)
INT_FIELDS = number_fields(int)


def field_id(case: tuple[type[Any], str]) -> str:
    return f"{case[0].section}.{case[1]}"


def from_file(tmp_path: Path, text: str | bytes, env: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "game.toml"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return Config.from_toml(path, env={} if env is None else env)


def file_error(tmp_path: Path, text: str | bytes, env: Mapping[str, str] | None = None) -> str:
    """The one-line message loading ``text`` as a config file gives."""
    with pytest.raises(ConfigError) as ei:
        from_file(tmp_path, text, env)
    message = str(ei.value)
    assert "\n" not in message
    assert ei.value.__cause__ is None
    return message


class TestNonFinite:
    """NaN and infinities are refused everywhere (old main: nan disabled the watchdog)."""

    @pytest.mark.parametrize("case", FLOAT_FIELDS, ids=field_id)
    @pytest.mark.parametrize("literal", ["nan", "+inf", "-inf", "-nan"])
    def test_in_a_file(self, tmp_path: Path, case: tuple[type[Any], str], literal: str) -> None:
        """``key = nan`` / ``inf`` in any float key of any section is one line naming it."""
        cls, name = case
        table = "profiles.arena" if cls is Profile else cls.section
        message = file_error(tmp_path, f"[{table}]\n{name} = {literal}\n")
        assert f"[{table}.{name}] expected a finite number, got" in message

    @pytest.mark.parametrize("case", FLOAT_FIELDS, ids=field_id)
    def test_built_in_code(self, case: tuple[type[Any], str]) -> None:
        """A section built in code is checked like one from a file."""
        cls, name = case
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ConfigError) as ei:
                cls(**{name: bad})
            assert ei.value.key == f"{cls.section}.{name}"
            assert "finite" in str(ei.value)

    def test_hang_timeout_nan(self) -> None:
        """The headline case: ``hang_timeout = nan`` no longer turns the watchdog off."""
        err = config_error({"watchdog": {"hang_timeout": math.nan}})
        assert str(err) == "<config>: [watchdog.hang_timeout] expected a finite number, got nan"

    def test_stop_timeout_nan_from_environment(self) -> None:
        """NaN from a variable is refused too, naming the variable."""
        err = config_error({}, env={"SUPERVISOR_SUPERVISOR_STOP_TIMEOUT": "nan"})
        assert str(err) == (
            "SUPERVISOR_SUPERVISOR_STOP_TIMEOUT: [supervisor.stop_timeout] "
            "expected a finite number, got nan"
        )

    def test_negative_zero_is_zero(self) -> None:
        """``-0.0`` is 0 where 0 is allowed, stored as +0.0 (never shown as -0.0)."""
        cfg = load({"supervisor": {"snapshot_interval": -0.0, "stop_timeout": -0}})
        assert math.copysign(1.0, cfg.supervisor.snapshot_interval) == 1.0
        assert cfg.supervisor.stop_timeout == 0.0


class TestUpperBounds:
    """Every number has a ceiling: no 1e308-second timeouts, no 2**70 counters."""

    @pytest.mark.parametrize("case", FLOAT_FIELDS, ids=field_id)
    def test_every_float_has_a_maximum(self, case: tuple[type[Any], str]) -> None:
        """1e308 (and a 400-digit integer, which float() cannot take) is refused by name."""
        cls, name = case
        for huge in (1e308, 10**400):
            with pytest.raises(ConfigError) as ei:
                cls(**{name: huge})
            assert ei.value.key == f"{cls.section}.{name}"
            assert "above the maximum" in str(ei.value)

    @pytest.mark.parametrize("case", INT_FIELDS, ids=field_id)
    def test_every_integer_has_bounds(self, case: tuple[type[Any], str]) -> None:
        """2**70 and -2**70 are refused by name for every integer key."""
        cls, name = case
        for huge, word in ((2**70, "above the maximum"), (-(2**70), "below the minimum")):
            with pytest.raises(ConfigError, match=word) as ei:
                cls(**{name: huge})
            assert ei.value.key == f"{cls.section}.{name}"

    def test_huge_integer_message_stays_short(self, tmp_path: Path) -> None:
        """A 4000-digit integer is shown cut short, still on one line."""
        message = file_error(tmp_path, f"[supervisor]\nmax_catch_up = {'9' * 4000}\n")
        assert "[supervisor.max_catch_up]" in message
        assert len(message) < 400

    def test_integer_too_long_for_python(self, tmp_path: Path) -> None:
        """Over 4300 digits Python's int() refuses: still one line, not a traceback."""
        message = file_error(tmp_path, f"[supervisor]\nmax_catch_up = {'9' * 5000}\n")
        assert "not valid TOML" in message


class TestCodeBuiltConfigs:
    """A config built in code is validated like one read from TOML."""

    def test_supervisor_config(self) -> None:
        """The brief's example: the first bad field is named (old main accepted both)."""
        with pytest.raises(ConfigError) as ei:
            SupervisorConfig(overrun="bogus", max_catch_up=-3)
        assert ei.value.key == "supervisor.overrun"
        assert "'bogus' is not one of 'catch_up', 'skip'" in str(ei.value)
        with pytest.raises(ConfigError, match=r"\[supervisor.max_catch_up\] -3 is below"):
            SupervisorConfig(max_catch_up=-3)

    def test_recovery_history_zero(self) -> None:
        """``RecoveryConfig(history=0)`` is refused naming recovery.history."""
        with pytest.raises(ConfigError) as ei:
            RecoveryConfig(history=0)
        assert str(ei.value) == "[recovery.history] 0 is below the minimum 1"

    def test_wrong_types(self) -> None:
        """Types are checked too: a string timeout, a bool count, an int flag."""
        with pytest.raises(ConfigError, match=r"watchdog\.hang_timeout"):
            WatchdogConfig(hang_timeout="0.25")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"recovery\.history"):
            RecoveryConfig(history=True)
        with pytest.raises(ConfigError, match=r"features\.optimizer"):
            FeaturesConfig(optimizer=1)  # type: ignore[arg-type]

    def test_evolve_is_checked(self) -> None:
        """attrs.evolve goes through the validators as well."""
        with pytest.raises(ConfigError, match=r"supervisor\.tick_rate"):
            attrs.evolve(SupervisorConfig(), tick_rate=math.inf)

    def test_integers_become_floats(self) -> None:
        """``stop_timeout=3`` in code is stored as 3.0, as from a file."""
        assert type(SupervisorConfig(stop_timeout=3).stop_timeout) is float

    def test_cross_field_checks_in_code(self) -> None:
        """Cross-field checks are ConfigErrors naming the key, not bare ValueErrors."""
        with pytest.raises(ConfigError) as ei:
            WatchdogConfig(hang_timeout=2.0, kill_timeout=1.0)
        assert ei.value.key == "watchdog.kill_timeout"

    def test_sections_of_a_config(self) -> None:
        """A Config takes only the section classes: a ConfigError naming the section."""
        with pytest.raises(ConfigError) as ei:
            Config(supervisor={"tick_rate": 30})  # type: ignore[arg-type]
        assert str(ei.value) == "[supervisor] expected a SupervisorConfig, got dict"

    def test_tokens_must_be_token_configs(self) -> None:
        """``ApiConfig(tokens=...)`` takes TokenConfig entries only."""
        with pytest.raises(ConfigError, match=r"\[api\.tokens\] expected TokenConfig entries"):
            ApiConfig(tokens=({"name": "x"},))


class TestTls:
    def test_both_or_neither(self) -> None:
        """tls_cert without tls_key (or the reverse) is refused naming the missing one."""
        err = config_error({"api": {"tls_cert": "cert.pem"}})
        assert err.key == "api.tls_key"
        assert "set both (PEM files) or neither" in str(err)
        assert config_error({"api": {"tls_key": "key.pem"}}).key == "api.tls_cert"

    def test_both(self) -> None:
        """Both together are accepted."""
        api = load({"api": {"tls_cert": "c.pem", "tls_key": "k.pem"}}).api
        assert (api.tls_cert, api.tls_key) == ("c.pem", "k.pem")

    def test_empty_path_refused(self) -> None:
        """An empty path is not 'no TLS'."""
        assert config_error({"api": {"tls_cert": "", "tls_key": "k"}}).key == "api.tls_cert"


class TestStrings:
    @pytest.mark.parametrize("key", ["state_dir", "profile"])
    def test_nul_refused(self, key: str) -> None:
        """A NUL byte (which os functions reject with a ValueError) is one line."""
        err = config_error({"supervisor": {key: "var\x00x"}})
        assert err.key == f"supervisor.{key}"
        assert "NUL" in str(err)

    def test_too_long(self) -> None:
        """Strings over 4096 characters are refused, the length named."""
        err = config_error({"api": {"listen": "x" * 5000}})
        assert "5000 characters long, over the limit of 4096" in str(err)

    @pytest.mark.parametrize(("section", "key"), [("supervisor", "state_dir"), ("api", "listen")])
    def test_empty_path_refused(self, section: str, key: str) -> None:
        """An empty path or address is refused rather than meaning the current folder."""
        assert str(config_error({section: {key: ""}})).endswith("must not be empty")


class TestSnapshotKey:
    KEY = "0123456789abcdef-secret"

    def test_bytes_for_the_store(self) -> None:
        """The key is handed to SnapshotStore as its UTF-8 bytes; unset is None."""
        cfg = load({"supervisor": {"snapshot_key": self.KEY}})
        assert cfg.supervisor.snapshot_key_bytes == self.KEY.encode()
        assert load({}).supervisor.snapshot_key_bytes is None

    def test_not_in_repr(self) -> None:
        """The key never shows in a repr (logs, status dumps)."""
        cfg = load({"supervisor": {"snapshot_key": self.KEY}})
        assert self.KEY not in repr(cfg.supervisor)
        assert self.KEY not in repr(cfg)

    def test_too_short(self) -> None:
        """A key under 16 characters is refused."""
        err = config_error({"supervisor": {"snapshot_key": "short"}})
        assert err.key == "supervisor.snapshot_key"
        assert "at least 16 characters" in str(err)

    def test_numeric_key_from_environment_stays_a_string(self) -> None:
        """A key of digits from the environment is the text, not a number."""
        digits = "12345678901234567890"
        cfg = load({}, env={"SUPERVISOR_SUPERVISOR_SNAPSHOT_KEY": digits})
        assert cfg.supervisor.snapshot_key == digits


class TestEnvironmentNames:
    def test_misspelt_section(self) -> None:
        """``SUPERVISOR_SUPERVISR_TICK_RATE`` is an error suggesting the right variable.

        Old main ignored it silently.
        """
        err = config_error({}, env={"SUPERVISOR_SUPERVISR_TICK_RATE": "60"})
        assert err.source == "SUPERVISOR_SUPERVISR_TICK_RATE"
        assert str(err).endswith("did you mean SUPERVISOR_SUPERVISOR_TICK_RATE?")

    def test_token_variable_allowed(self) -> None:
        """The client's SUPERVISOR_TOKEN stays allowed, as listed in NON_CONFIG_VARIABLES."""
        assert "SUPERVISOR_TOKEN" in NON_CONFIG_VARIABLES
        cfg = load({}, env={"SUPERVISOR_TOKEN": "s3cret", "SUPERVISOR_SUPERVISOR_TICK_RATE": "9"})
        assert cfg.supervisor.tick_rate == 9.0

    @pytest.mark.parametrize("var", ["SUPERVISOR_API", "SUPERVISOR_X", "SUPERVISOR_"])
    def test_not_a_config_variable(self, var: str) -> None:
        """A variable that names no section and key is an error naming it."""
        err = config_error({}, env={var: "1"})
        assert err.source == var
        assert "not a config variable" in str(err)

    @pytest.mark.parametrize("table", ["systems", "profiles", "phases"])
    def test_tables_not_settable(self, table: str) -> None:
        """[systems], [profiles] and [phases] cannot come from the environment: said so."""
        var = f"SUPERVISOR_{table.upper()}_X"
        err = config_error({}, env={var: "1"})
        assert f"[{table}] cannot be set from the environment" in str(err)

    def test_value_checked_with_the_field_validator(self) -> None:
        """An out-of-range value from a variable names the variable and the key."""
        err = config_error({}, env={"SUPERVISOR_RECOVERY_HISTORY": "0"})
        assert (
            str(err) == "SUPERVISOR_RECOVERY_HISTORY: [recovery.history] 0 is below the minimum 1"
        )

    def test_deeply_nested_value(self) -> None:
        """A 10,000-deep array in a variable is refused as a value, not a RecursionError."""
        err = config_error({}, env={"SUPERVISOR_SUPERVISOR_TICK_RATE": "[" * 10_000})
        assert err.key == "supervisor.tick_rate"


class TestHostileFiles:
    """Every hostile config file is one line (old main: tracebacks, hangs, unbounded reads)."""

    @pytest.mark.parametrize(
        "text",
        [
            "x = " + "[" * 10_000 + "]" * 10_000,
            "x = " + "{a=" * 10_000 + "1" + "}" * 10_000,
        ],
        ids=["arrays", "inline-tables"],
    )
    def test_deep_nesting(self, tmp_path: Path, text: str) -> None:
        """10,000 levels of arrays or inline tables: one line (old main: RecursionError)."""
        assert "nested too deeply" in file_error(tmp_path, text)

    def test_deep_dotted_keys(self, tmp_path: Path) -> None:
        """Dotted keys nest without recursion in tomllib, but are refused before deepcopy."""
        message = file_error(tmp_path, "[systems.a]\n" + ".".join(["k"] * 10_000) + " = 1\n")
        assert "nested too deeply (the limit is 32 levels" in message

    def test_nesting_at_the_limit(self, tmp_path: Path) -> None:
        """32 levels are fine (systems options may nest a little)."""
        cfg = from_file(tmp_path, "[systems.a]\n" + ".".join(["k"] * 29) + " = 1\n")
        assert "a" in cfg.systems.options

    def test_deep_mapping_built_in_code(self) -> None:
        """from_mapping checks depth as well (no RecursionError in deepcopy)."""
        raw: dict[str, Any] = {}
        inner = raw
        for _ in range(5000):
            inner["k"] = {}
            inner = inner["k"]
        assert "nested too deeply" in str(config_error(raw))

    def test_over_one_mebibyte(self, tmp_path: Path) -> None:
        """A 2 MB config (of comments) is refused by size, before parsing."""
        message = file_error(tmp_path, b"#" * 2_000_000)
        assert "too large: 2000000 bytes, over the 1048576-byte limit" in message

    @pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
    def test_dev_zero(self) -> None:
        """``--config /dev/zero`` is refused at once (old main read it without limit)."""
        with pytest.raises(ConfigError) as ei:
            Config.from_toml("/dev/zero", env={})
        assert str(ei.value) == "/dev/zero: is a character device, not a regular file"

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
    def test_fifo(self, tmp_path: Path) -> None:
        """A FIFO is refused without blocking (old main hung in open)."""
        path = tmp_path / "game.toml"
        os.mkfifo(path)
        code = (
            "import sys; from supervisor import Config, ConfigError\n"
            "try: Config.from_toml(sys.argv[1], env={})\n"
            "except ConfigError as e: print(e)\n"
        )
        # In a child with a timeout: a regression fails here instead of hanging the suite.
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        assert done.stdout == f"{path}: is a FIFO, not a regular file\n"

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused by type."""
        with pytest.raises(ConfigError, match="is a directory"):
            Config.from_toml(tmp_path, env={})

    def test_bom(self, tmp_path: Path) -> None:
        """A byte-order mark is named, with the fix."""
        message = file_error(tmp_path, b"\xef\xbb\xbf[supervisor]\n")
        assert message.endswith("starts with a byte-order mark (BOM); save it as UTF-8 without one")

    def test_binary_garbage(self, tmp_path: Path) -> None:
        """Random bytes are either not UTF-8 or not TOML: one line either way."""
        rng = random.Random(8)
        for _ in range(50):
            data = bytes(rng.randrange(256) for _ in range(200))
            message = file_error(tmp_path, data)
            assert "not UTF-8 text" in message or "not valid TOML" in message

    def test_duplicate_keys(self, tmp_path: Path) -> None:
        """A key given twice is refused by the parser, in one line."""
        message = file_error(tmp_path, "[supervisor]\ntick_rate = 30\ntick_rate = 60\n")
        assert "not valid TOML" in message

    def test_nul_in_file(self, tmp_path: Path) -> None:
        """A NUL byte in the file is refused by the parser."""
        assert "not valid TOML" in file_error(tmp_path, b"[supervisor]\x00\n")


class TestOneLine:
    """User-controlled names with control characters cannot split an error line."""

    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ('["a\\nb"]\n', "[a\\nb] unknown section"),
            ('[supervisor]\n"tick\\nrate" = 1\n', "[supervisor.tick\\nrate] unknown key"),
            ('[profiles."a\\nb"]\ntick_rate = nan\n', "[profiles.a\\nb.tick_rate]"),
            ('[phases."x\\ry"]\n', "[phases.x\\ry] unknown phase"),
            ('[systems]\n"p\\u2028q" = 5\n', "[systems.p\\u2028q]"),
        ],
    )
    def test_escaped_keys(self, tmp_path: Path, text: str, shown: str) -> None:
        """Newlines (and other separators) in keys are shown escaped."""
        assert shown in file_error(tmp_path, text)

    def test_escaped_variable_name(self) -> None:
        """A control character in a variable name is escaped too."""
        err = config_error({}, env={"SUPERVISOR_X\nY": "1"})
        assert err.source == "SUPERVISOR_X\\nY"

    def test_escaped_file_name(self, tmp_path: Path) -> None:
        """The file's own name is shown escaped."""
        path = tmp_path / "a\nb.toml"
        path.write_text("[x]\n")
        with pytest.raises(ConfigError) as ei:
            Config.from_toml(path, env={})
        assert "\n" not in str(ei.value)
        assert "a\\nb.toml" in str(ei.value)


class TestFixedKeys:
    @pytest.mark.parametrize("key", ["state_dir", "snapshot_generations", "snapshot_key"])
    def test_not_in_overlays(self, key: str) -> None:
        """The state folder, generations and snapshot key cannot change with the phase."""
        value: Any = {"state_dir": "x", "snapshot_generations": 2, "snapshot_key": "k" * 20}[key]
        err = config_error({"phases": {"production": {"supervisor": {key: value}}}})
        assert err.key == f"phases.production.supervisor.{key}"
        assert "cannot change with the phase" in str(err)


ALL_KEYS = sorted({f.name for cls in SECTION_CLASSES for f in attrs.fields(cls)} | {"x", "use"})
SECTION_NAMES = ["supervisor", "recovery", "watchdog", "features", "logging", "api", "systems"]
HOSTILE_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**60, max_value=2**80)
    | st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324])
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "a\nb", "x" * 5000])
    | st.lists(st.text(max_size=5) | st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)


def refusal(call: Callable[[], object]) -> str:
    """The ConfigError message ``call`` raises ("" if it succeeds); anything else propagates."""
    try:
        call()
    except ConfigError as exc:
        return str(exc)
    return ""


class TestFuzz:
    """Whatever the mapping, file or environment holds: a Config or a one-line ConfigError."""

    @settings(max_examples=400, deadline=None)
    @given(
        raw=st.dictionaries(
            st.sampled_from([*SECTION_NAMES, "profiles", "phases", "bogus"]),
            st.dictionaries(st.sampled_from(ALL_KEYS), HOSTILE_VALUES, max_size=4) | HOSTILE_VALUES,
            max_size=3,
        )
    )
    def test_mapping(self, raw: dict[str, Any]) -> None:
        """Arbitrary sections and values never raise anything but ConfigError."""
        assert "\n" not in refusal(lambda: load(raw))

    @settings(max_examples=300, deadline=None)
    @given(
        env=st.dictionaries(
            st.sampled_from(
                [f"SUPERVISOR_{s}_{k}".upper() for s in SECTION_NAMES for k in ALL_KEYS[:12]]
            )
            | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=12).map(
                lambda rest: "SUPERVISOR_" + rest
            ),
            st.text(max_size=12) | st.sampled_from(["nan", "inf", "-0", "1e309", "[" * 500]),
            max_size=3,
        )
    )
    def test_environment(self, env: dict[str, str]) -> None:
        """Arbitrary SUPERVISOR_* variables never raise anything but ConfigError."""
        assert "\n" not in refusal(lambda: load({}, env=env))

    @settings(max_examples=300, deadline=None)
    @given(
        data=st.binary(max_size=300)
        | st.lists(
            st.sampled_from(
                [
                    "[supervisor]\n",
                    "[watchdog]\n",
                    "[phases.production.watchdog]\n",
                    "tick_rate = nan\n",
                    "hang_timeout = inf\n",
                    "kill_timeout = 1e309\n",
                    "max_catch_up = 1180591620717411303424\n",
                    'state_dir = "a\\u0000b"\n',
                    "x = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
                    "a.b.c.d = 1\n",
                    "\ufeff",
                    "\x00",
                    "= 1\n",
                ]
            ),
            max_size=6,
        ).map(lambda parts: "".join(parts).encode())
    )
    def test_file_bytes(self, data: bytes) -> None:
        """Arbitrary bytes, and TOML assembled from hostile lines, never escape ConfigError."""
        assert "\n" not in refusal(
            lambda: Config.from_mapping(parse_toml(data, source="f.toml"), source="f.toml", env={})
        )
