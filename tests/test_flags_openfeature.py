"""The supervisor as an OpenFeature provider (issue 13): answers as ctx.flag and ctx.variant."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from supervisor.openfeature import SupervisorProvider
from supervisor.testing import make_supervisor, run_systems

CONFIG = {
    "flags": {"new_shop": {"percent": 30, "segments": ["beta"]}, "everyone": {}},
    "experiments": {"shop_layout": {"arms": {"grid": 50, "list": 30, "carousel": 20}}},
}


@pytest.fixture
def sup_and_client() -> Iterator[tuple[Any, OpenFeatureClient]]:
    sup = make_supervisor([], config=CONFIG)
    api.set_provider(SupervisorProvider(sup.flags), domain="test-supervisor")
    try:
        yield sup, api.get_client("test-supervisor")
    finally:
        api.clear_providers()


def _key(player: int) -> EvaluationContext:
    return EvaluationContext(targeting_key=str(player))


def test_boolean_answers_equal_ctx_flag(sup_and_client: tuple[Any, OpenFeatureClient]) -> None:
    sup, client = sup_and_client
    sup.flags.set_segments(12345, ["beta"])
    for player in [*range(2000), 12345]:
        expected = sup.flags.flag("new_shop", player)
        assert client.get_boolean_value("new_shop", not expected, _key(player)) is expected


def test_string_answers_equal_ctx_variant(sup_and_client: tuple[Any, OpenFeatureClient]) -> None:
    sup, client = sup_and_client
    for player in range(2000):
        details = client.get_string_details("shop_layout", "none", _key(player))
        assert details.value == sup.flags.variant("shop_layout", player)
        assert details.reason == Reason.SPLIT


def test_answers_equal_what_a_system_saw() -> None:
    """Inside a run: a system's ctx.flag and game code's OpenFeature client agree."""
    seen: dict[int, tuple[bool, str]] = {}

    class Shop:
        def tick(self, ctx: Any) -> None:
            for p in range(300):
                seen[p] = (ctx.flag("new_shop", p), ctx.variant("shop_layout", p))

    run = run_systems(named={"shop": Shop()}, ticks=2, config=CONFIG)
    api.set_provider(SupervisorProvider(run.supervisor.flags), domain="run")
    try:
        client = api.get_client("run")
        for p, (flag, arm) in seen.items():
            assert client.get_boolean_value("new_shop", not flag, _key(p)) is flag
            assert client.get_string_value("shop_layout", "?", _key(p)) == arm
    finally:
        api.clear_providers()


def test_without_a_targeting_key(sup_and_client: tuple[Any, OpenFeatureClient]) -> None:
    """A flag answers for everyone; an experiment needs a player, so the default comes back."""
    _, client = sup_and_client
    assert client.get_boolean_value("everyone", False) is True
    assert client.get_boolean_value("new_shop", True) is False
    details = client.get_string_details("shop_layout", "fallback")
    assert details.value == "fallback"
    assert details.error_code == ErrorCode.TARGETING_KEY_MISSING


@pytest.mark.parametrize(
    ("call", "key", "code"),
    [
        ("get_boolean_details", "nope", ErrorCode.FLAG_NOT_FOUND),
        ("get_string_details", "nope", ErrorCode.FLAG_NOT_FOUND),
        ("get_boolean_details", "shop_layout", ErrorCode.TYPE_MISMATCH),
        ("get_string_details", "new_shop", ErrorCode.TYPE_MISMATCH),
        ("get_integer_details", "new_shop", ErrorCode.TYPE_MISMATCH),
        ("get_float_details", "nope", ErrorCode.FLAG_NOT_FOUND),
        ("get_object_details", "shop_layout", ErrorCode.TYPE_MISMATCH),
    ],
)
def test_errors_return_the_default(
    sup_and_client: tuple[Any, OpenFeatureClient], call: str, key: str, code: ErrorCode
) -> None:
    _, client = sup_and_client
    defaults = {
        "get_boolean_details": True,
        "get_string_details": "d",
        "get_integer_details": 7,
        "get_float_details": 1.5,
        "get_object_details": {"x": 1},
    }
    details = getattr(client, call)(key, defaults[call], _key(1))
    assert details.value == defaults[call]
    assert details.error_code == code


def test_import_supervisor_does_not_load_openfeature() -> None:
    code = "import sys, supervisor; print('openfeature' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
