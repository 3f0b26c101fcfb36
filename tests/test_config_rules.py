"""Config rules hold on construction: built in code, the same ConfigError as from TOML.

One test per rule, each building the class directly (no loader involved) and
comparing with the message the TOML path gives for the same mistake; then a
property test over generated mappings: whatever ``Config.from_mapping``
accepts comes back equal from ``as_mapping``, whatever it refuses is a
ConfigError (never another exception).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import Config, ConfigError, Phase, Profile
from supervisor._core._config_fields import plain
from supervisor._core._config_sections import (
    SECTIONS,
    ApiConfig,
    LoggingConfig,
    RecoveryConfig,
    SupervisorConfig,
    SystemsConfig,
    TokenConfig,
    WatchdogConfig,
)

DIGEST = hashlib.sha256(b"correct horse battery staple").hexdigest()
SECTION_CLASSES: list[type[Any]] = [*SECTIONS.values(), Profile]


def raised(build: Callable[[], object]) -> ConfigError:
    """The ConfigError ``build()`` raises (the test fails if it raises nothing)."""
    with pytest.raises(ConfigError) as ei:
        build()
    assert "\n" not in str(ei.value)
    return ei.value


def from_toml_mapping(raw: Mapping[str, Any]) -> ConfigError:
    """The ConfigError the loader gives for ``raw`` (no environment read)."""
    return raised(lambda: Config.from_mapping(raw, env={}))


def fields_where(test: Callable[[attrs.Attribute[Any]], bool]) -> list[tuple[type[Any], str]]:
    """Every (section class, field name) whose field passes ``test``."""
    return [(cls, f.name) for cls in SECTION_CLASSES for f in attrs.fields(cls) if test(f)]


def field_id(case: tuple[type[Any], str]) -> str:
    return f"{case[0].section}.{case[1]}"


TIMEOUTS = fields_where(lambda f: "timeout" in f.name)
CHOICES = fields_where(lambda f: f.metadata.get("choices") is not None)


class TestSectionRules:
    """The rules of the settings sections, each refused in code with the TOML path's message."""

    def test_unknown_overrun_word(self) -> None:
        """``SupervisorConfig(overrun="bogus")``: the same line the file gives."""
        err = raised(lambda: SupervisorConfig(overrun="bogus"))
        assert str(err) == "[supervisor.overrun] 'bogus' is not one of 'catch_up', 'skip'"
        assert err.message == from_toml_mapping({"supervisor": {"overrun": "bogus"}}).message

    def test_negative_max_catch_up(self) -> None:
        """``SupervisorConfig(max_catch_up=-3)`` names the key and the bound."""
        err = raised(lambda: SupervisorConfig(max_catch_up=-3))
        assert str(err) == "[supervisor.max_catch_up] -3 is below the minimum 0"

    def test_history_zero(self) -> None:
        """``RecoveryConfig(history=0)``: a history of nothing records nothing."""
        err = raised(lambda: RecoveryConfig(history=0))
        assert str(err) == "[recovery.history] 0 is below the minimum 1"

    @pytest.mark.parametrize("case", TIMEOUTS, ids=field_id)
    def test_negative_timeout(self, case: tuple[type[Any], str]) -> None:
        """Every ``*timeout`` key refuses a negative number, naming itself."""
        cls, name = case
        err = raised(lambda: cls(**{name: -1.0}))
        assert err.key == f"{cls.section}.{name}"
        assert "-1.0 is below the minimum" in err.message

    @pytest.mark.parametrize("case", CHOICES, ids=field_id)
    def test_unknown_enum_word(self, case: tuple[type[Any], str]) -> None:
        """Every key with a fixed set of words refuses another word, listing the set."""
        cls, name = case
        err = raised(lambda: cls(**{name: "bogus"}))
        assert err.key == f"{cls.section}.{name}"
        assert err.message.startswith("'bogus' is not one of ")

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_in_an_optional_key(self, bad: float) -> None:
        """An optional number (unset by default) still refuses NaN and infinities."""
        err = raised(lambda: SupervisorConfig(tick_rate=bad))
        assert err.key == "supervisor.tick_rate"
        assert "finite" in err.message

    def test_level_word_from_code_and_file_agree(self) -> None:
        """The message does not depend on where the value came from."""
        in_code = raised(lambda: LoggingConfig(level="loud"))
        from_file = from_toml_mapping({"logging": {"level": "loud"}})
        assert (in_code.key, in_code.message) == (from_file.key, from_file.message)
        assert from_file.source == "<config>"
        assert in_code.source is None

    def test_cross_field_rule_in_code(self) -> None:
        """``kill_timeout`` below ``hang_timeout`` is refused in code too."""
        err = raised(lambda: WatchdogConfig(hang_timeout=0.5, kill_timeout=0.1))
        assert err.key == "watchdog.kill_timeout"


class TestTokenRules:
    """A TokenConfig built in code is checked like an ``[[api.tokens]]`` table."""

    @pytest.mark.parametrize("name", ["", None, 3])
    def test_name_required(self, name: Any) -> None:
        """A token needs a non-empty string name."""
        err = raised(lambda: TokenConfig(name=name, role="viewer", sha256=DIGEST))
        assert str(err) == "[api.tokens] needs a non-empty 'name'"

    def test_unknown_role(self) -> None:
        """Roles are 'viewer' and 'operator' only."""
        err = raised(lambda: TokenConfig(name="ops", role="admin", sha256=DIGEST))
        assert str(err) == "[api.tokens] role must be 'viewer' or 'operator', got 'admin'"

    @pytest.mark.parametrize("digest", ["abc", "g" * 64, "0x" + "a" * 62, " " + "a" * 63, 7])
    def test_digest_is_64_hex_digits(self, digest: Any) -> None:
        """Only 64 hex digits: never the token itself, never a prefixed or padded hash."""
        err = raised(lambda: TokenConfig(name="ops", role="viewer", sha256=digest))
        assert "sha256 must be 64 hex digits" in err.message

    def test_digest_lower_cased(self) -> None:
        """An upper-case digest is stored lower-case, as the API compares it."""
        assert TokenConfig(name="ops", role="viewer", sha256=DIGEST.upper()).sha256 == DIGEST

    def test_duplicate_names_in_code(self) -> None:
        """Two tokens of one name are refused naming the second, as in the file."""
        token = TokenConfig(name="ops", role="viewer", sha256=DIGEST)
        err = raised(lambda: ApiConfig(tokens=(token, token)))
        assert str(err) == "[api.tokens[1]] duplicate token name 'ops'"


class TestSystemsRules:
    """A SystemsConfig built in code is checked like a ``[systems]`` table."""

    @pytest.mark.parametrize("enabled", [("",), (3,), "economy"])
    def test_enabled_names(self, enabled: Any) -> None:
        """``enabled`` is a list of non-empty names (one string is not a list)."""
        err = raised(lambda: SystemsConfig(enabled=enabled))
        assert str(err) == "[systems.enabled] expected a list of system names or import strings"

    def test_enabled_twice(self) -> None:
        """A system enabled twice is refused, naming it."""
        err = raised(lambda: SystemsConfig(enabled=["economy", "economy"]))
        assert str(err) == "[systems.enabled] 'economy' is enabled twice"

    def test_enabled_list_becomes_tuple(self) -> None:
        """A list given in code is stored as a tuple, as from a file."""
        assert SystemsConfig(enabled=["a", "b"]).enabled == ("a", "b")

    @pytest.mark.parametrize("use", ["", 3])
    def test_use_names_a_class(self, use: Any) -> None:
        """``use`` must name a class."""
        err = raised(lambda: SystemsConfig(options={"bank": {"use": use}}))
        assert str(err) == "[systems.bank.use] 'use' must name a system class"

    def test_options_are_tables(self) -> None:
        """A system's options are a table of constructor arguments."""
        err = raised(lambda: SystemsConfig(options={"bank": 3}))
        assert err.key == "systems.bank"

    def test_enabled_is_not_a_system_name(self) -> None:
        """``enabled`` as a system's name would read back as the list of systems."""
        err = raised(lambda: SystemsConfig(options={"enabled": {}}))
        assert str(err) == "[systems.enabled] not a system name"


class TestConfigRules:
    """A Config built in code: its profiles and phase overlays are checked too."""

    def test_auto_profile_name(self) -> None:
        """'auto' means "detect": no profile may be called that, in code or in a file."""
        err = raised(lambda: Profile(name="auto"))
        assert err.message == "'auto' is reserved for detection"
        assert from_toml_mapping({"profiles": {"auto": {}}}).key == "profiles.auto"

    def test_profile_keyed_by_its_name(self) -> None:
        """``profiles`` maps each name to the Profile of that name."""
        err = raised(lambda: Config(profiles={"arena": Profile(name="other")}))
        assert str(err) == "[profiles.arena] expected a Profile named 'arena'"

    def test_unknown_overlay_phase(self) -> None:
        """An overlay for a phase that does not exist is refused with a suggestion."""
        err = raised(lambda: Config(overlays={"prod": {}}))
        assert err.key == "phases.prod"
        assert "did you mean 'production'?" in err.message

    def test_overlay_cannot_move_the_state(self) -> None:
        """The fixed keys are refused in an overlay built in code, like in a file."""
        err = raised(lambda: Config(overlays={"production": {"supervisor": {"state_dir": "x"}}}))
        assert err.key == "phases.production.supervisor.state_dir"

    def test_overlay_cannot_nest_phases(self) -> None:
        """An overlay holds sections, not more overlays."""
        err = raised(lambda: Config(overlays={"testing": {"phases": {}}}))
        assert str(err) == "[phases.testing] an overlay cannot hold phases"

    def test_bad_overlay_value_fails_at_load_naming_the_phase(self) -> None:
        """An overlay's values are checked when loaded, the source naming the phase."""
        err = from_toml_mapping({"phases": {"testing": {"recovery": {"history": 0}}}})
        assert str(err) == "<config> [phases.testing]: [recovery.history] 0 is below the minimum 1"


def _setting_values(field: attrs.Attribute[Any]) -> st.SearchStrategy[Any]:
    """Values a setting accepts: in range, of its kind (cross-field rules may still refuse)."""
    meta = field.metadata
    kind, low, high = meta.get("kind"), meta.get("min", 0), meta.get("max", 0)
    valid: st.SearchStrategy[Any]
    if meta.get("choices") is not None:
        valid = st.sampled_from(meta["choices"])
    elif kind is float:
        valid = st.floats(low, high, allow_nan=False) | st.integers(int(low), int(min(high, 1e6)))
    elif kind is int:
        valid = st.integers(low, high)
    elif kind is bool:
        valid = st.booleans()
    else:
        valid = st.text(min_size=meta.get("min_len", 0), max_size=20).filter(
            lambda text: "\x00" not in text
        )
    return valid | st.none() if meta.get("optional") else valid


#: Pairs of keys that must be in order (low, high) when both are set.
ORDERED = (
    ("hang_timeout", "kill_timeout"),
    ("backoff_initial", "backoff_max"),
    ("min_tick_rate", "tick_rate"),
)


def _mostly_consistent(table: dict[str, Any]) -> dict[str, Any]:
    """Order the pairs the cross-field rules compare, and set TLS files both or neither."""
    for low, high in ORDERED:
        if table.get(low) is not None and table.get(high) is not None:
            table[low], table[high] = sorted((table[low], table[high]))
    if (table.get("tls_cert") is None) != (table.get("tls_key") is None):
        table.pop("tls_cert", None)
        table.pop("tls_key", None)
    return table


def _table(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    fields = [f for f in attrs.fields(cls) if plain(f)]
    tables = st.fixed_dictionaries({}, optional={f.name: _setting_values(f) for f in fields})
    return tables.map(_mostly_consistent)


_TOKEN = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["ops", "ci"]),
        "role": st.sampled_from(["viewer", "operator"]),
        "sha256": st.sampled_from([DIGEST, DIGEST.upper()]),
    }
)
_SECTION_TABLES = {name: _table(cls) for name, cls in SECTIONS.items()}
_SECTION_TABLES["api"] = st.builds(
    lambda table, tokens: {**table, "tokens": tokens} if tokens else table,
    _SECTION_TABLES["api"],
    st.lists(_TOKEN, max_size=2, unique_by=lambda token: token["name"]),
)
_SYSTEMS = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.lists(
            st.sampled_from(["economy", "bank", "pkg.mod:Cls"]), max_size=3, unique=True
        ),
        "bank": st.fixed_dictionaries(
            {}, optional={"use": st.just("pkg.mod:Bank"), "rate": st.integers()}
        ),
        "economy": st.just({"tax": 0.25}),
    },
)
_PROFILES = st.dictionaries(st.sampled_from(["low", "arena"]), _table(Profile), max_size=2)
FIXED = ("state_dir", "snapshot_generations", "snapshot_key")
_OVERLAY = st.fixed_dictionaries(
    {},
    optional={
        "supervisor": _table(SupervisorConfig).map(
            lambda table: {k: v for k, v in table.items() if k not in FIXED}
        ),
        "logging": _table(LoggingConfig),
    },
)
_PHASES = st.dictionaries(st.sampled_from([p.value for p in Phase]), _OVERLAY, max_size=2)
#: Configs whose every value has a valid kind and range (cross-field rules may refuse).
RAW_CONFIGS = st.fixed_dictionaries(
    {},
    optional={**_SECTION_TABLES, "systems": _SYSTEMS, "profiles": _PROFILES, "phases": _PHASES},
)
#: Where one wrong value is put, and the wrong values.
SETTINGS = [(cls.section, name) for cls, name in fields_where(plain) if cls is not Profile]
WRONG = st.sampled_from([math.nan, -math.inf, -1e309, -5, "", "\x00", True, [1], {"a": 1}])
EXTRA = [
    ("bogus", {}),
    ("phases", {"prod": {}}),
    ("phases", {"testing": {"supervisor": {"state_dir": "elsewhere"}}}),
    ("systems", {"enabled": ["a", "a"]}),
    ("systems", {"bank": {"use": ""}}),
    ("profiles", {"auto": {}}),
    ("api", {"tokens": [{"name": "ops", "role": "root", "sha256": DIGEST}]}),
]


def _with_wrong_value(raw: dict[str, Any], where: tuple[str, str], bad: Any) -> dict[str, Any]:
    section, key = where
    table = raw.get(section, {})
    return {**raw, section: {**table, key: bad}}


#: Mostly configs of valid values; now and then one wrong value or one wrong table.
HOSTILE_CONFIGS = st.one_of(
    RAW_CONFIGS,
    RAW_CONFIGS,
    st.builds(_with_wrong_value, RAW_CONFIGS, st.sampled_from(SETTINGS), WRONG),
    st.builds(lambda raw, extra: {**raw, extra[0]: extra[1]}, RAW_CONFIGS, st.sampled_from(EXTRA)),
)


class TestRoundTrip:
    """``from_mapping`` and ``as_mapping`` agree on every config the loader accepts."""

    def test_defaults_round_trip(self) -> None:
        """The default config spelt out reads back as the default config."""
        assert Config.from_mapping(Config().as_mapping(), env={}) == Config(source="<config>")

    @settings(max_examples=300, deadline=None)
    @given(raw=HOSTILE_CONFIGS)
    def test_accepted_round_trips_refused_raises_config_error(self, raw: dict[str, Any]) -> None:
        """Accepted: as_mapping reads back equal, overlays included. Refused: a ConfigError."""
        try:
            config = Config.from_mapping(raw, env={})
        except ConfigError as exc:
            refusal = str(exc)
        else:
            refusal = ""
        if refusal:
            assert "\n" not in refusal
            return
        again = Config.from_mapping(config.as_mapping(), env={})
        assert again == config
        assert again.as_mapping() == config.as_mapping()
        for phase in config.overlays:
            assert again.for_phase(Phase(phase)) == config.for_phase(Phase(phase))
