"""``[fleet]`` and what the fleet reads back from Redis: every bad value refused in one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from supervisor import Config, ConfigError, FleetConfig
from supervisor._cli._config_cmd import shown_mapping
from supervisor._core._config_fleet import check_redis_url, default_member_id, safe_url
from supervisor._fleet._protocol import BadMessage, Command, parse_command, parse_record


class TestFleetConfig:
    def test_off_by_default(self) -> None:
        """No ``redis``, no fleet: nothing is attached to a run."""
        assert not Config().fleet.enabled

    def test_a_fleet_with_its_derived_figures(self) -> None:
        """The TTL is heartbeat x missed; the id defaults to HOST-PID."""
        fleet = Config.from_mapping(
            {"fleet": {"redis": "redis://10.0.0.5:6379/2", "heartbeat": "500ms", "missed": 4}},
            env={},
        ).fleet
        assert fleet.enabled
        assert fleet.heartbeat_seconds == 0.5
        assert fleet.ttl_seconds == 2.0
        assert fleet.member_id() == default_member_id()
        assert FleetConfig(redis="unix:///run/redis.sock", id="eu-1").member_id() == "eu-1"

    def test_the_environment_sets_the_url(self) -> None:
        """``SUPERVISOR_FLEET_REDIS`` like every other key."""
        config = Config.from_mapping({}, env={"SUPERVISOR_FLEET_REDIS": "redis://r:6379/0"})
        assert config.fleet.redis == "redis://r:6379/0"

    @pytest.mark.parametrize(
        ("table", "key", "message"),
        [
            ({"redis": "http://r:6379"}, "fleet.redis", "scheme 'http'"),
            ({"redis": "redis://"}, "fleet.redis", "names no host"),
            ({"redis": "redis://r:70000/0"}, "fleet.redis", "not a valid URL"),
            ({"redis": "redis://r:6379/zero"}, "fleet.redis", "database must be a number"),
            ({"redis": "redis://r:6379/0 --evil"}, "fleet.redis", "without spaces"),
            ({"redis": "redis://r/\n0"}, "fleet.redis", "printable"),
            ({"redis": "unix://relative.sock"}, "fleet.redis", "absolute path"),
            ({"redis": 6379}, "fleet.redis", "expected a string"),
            ({"id": "a:b"}, "fleet.id", "expected 1-128 letters"),
            ({"id": "x" * 129}, "fleet.id", "expected 1-128 letters"),
            ({"namespace": "*"}, "fleet.namespace", "expected 1-128 letters"),
            ({"heartbeat": "0s"}, "fleet.heartbeat", "more than 0s"),
            ({"heartbeat": "50ms"}, "fleet.heartbeat", "between 0.1s and 60s"),
            ({"heartbeat": 1}, "fleet.heartbeat", "not a duration"),
            ({"missed": 1}, "fleet.missed", "below the minimum"),
            ({"timeout": float("nan")}, "fleet.timeout", "finite"),
            ({"standby": "yes"}, "fleet.standby", "true or false"),
        ],
    )
    def test_a_bad_value_is_one_line_naming_the_key(
        self, table: dict[str, Any], key: str, message: str
    ) -> None:
        """Hostile or mistaken values fail at load, naming ``fleet.KEY``."""
        with pytest.raises(ConfigError) as caught:
            Config.from_mapping({"fleet": table}, env={})
        assert caught.value.key == key
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)

    def test_config_show_masks_the_password(self) -> None:
        """``supervisor config show`` never prints the Redis password."""
        config = Config.from_mapping({"fleet": {"redis": "redis://u:s3cret@r:6379/0"}}, env={})
        assert shown_mapping(config)["fleet"]["redis"] == "redis://u:***@r:6379/0"

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("rediss://user:pw@h/0", "rediss://user:***@h/0"),
        ],
    )
    def test_safe_url(self, url: str, shown: str) -> None:
        """Only the password goes."""
        assert check_redis_url(url) is None
        assert safe_url(url) == shown


def _command(**changes: Any) -> str:
    body = {
        "generation": 3,
        "action": "emergency",
        "reason": "r",
        "origin": "cli:u@h",
        "time": 1.5,
        "phase": None,
        "force": False,
        **changes,
    }
    return json.dumps(body)


class TestWhatRedisHolds:
    def test_a_command_reads_back_as_written(self) -> None:
        """The round trip a broadcast and a flag make."""
        assert parse_command(_command()) == Command(
            generation=3, action="emergency", reason="r", origin="cli:u@h", time=1.5
        )
        assert parse_command(_command(action="phase", phase="testing")).flag == "phase"

    @pytest.mark.parametrize(
        "text",
        [
            "nope",
            "[1]",
            _command(generation=0),
            _command(generation=True),
            _command(generation="3"),
            _command(action="shutdown"),
            _command(action="phase", phase="emergency_shutdown"),
            _command(reason="x" * 501),
            _command(reason=None),
            _command(time=float("inf")),
            _command(force="yes"),
            "{" * 9000,
        ],
    )
    def test_anything_else_is_refused(self, text: str) -> None:
        """Anyone who reaches the Redis can write: only our shapes are acted on."""
        with pytest.raises(BadMessage):
            parse_command(text)

    def test_a_record_must_have_exactly_its_fields(self) -> None:
        """Extra or missing keys, or wrong kinds, make a record unreadable."""
        record = {
            "id": "m", "host": "h", "pid": 1, "version": "0.1", "phase": "development",
            "tick_rate": 60.0, "measured_tick_rate": None, "lateness_p99_ms": None,
            "players": None, "errors": 0, "api": None, "state_dir": "/s", "started": 1.0,
            "heartbeat": 2.0,
        }  # fmt: skip
        assert parse_record(json.dumps(record))["id"] == "m"
        for bad in ({**record, "extra": 1}, {**record, "errors": "0"}, {**record, "id": 5}):
            with pytest.raises(BadMessage):
                parse_record(json.dumps(bad))
