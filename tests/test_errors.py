"""The error classes keep a user's names on one line."""

from __future__ import annotations

import pytest

from supervisor import ConfigError, DependencyError, PluginError
from supervisor._errors import printable


@pytest.mark.parametrize("text", ["plain", "a\nb", "tab\there", "nul\x00", "esc\x1b[2J", "é ü ✓"])
def test_printable_is_one_line_and_idempotent(text: str) -> None:
    once = printable(text)
    assert once.isprintable()
    assert printable(once) == once
    if text.isprintable():
        assert once == text


def test_config_error_escapes_message_source_and_key() -> None:
    exc = ConfigError("bad\nvalue", source="conf\n.toml", key="api.\rlisten")
    assert "\n" not in str(exc)
    assert "\r" not in str(exc)
    assert str(exc) == "conf\\n.toml: [api.\\rlisten] bad\\nvalue"
    assert exc.key == "api.\\rlisten"


def test_plugin_errors_escape_the_message() -> None:
    assert "\n" not in str(PluginError("cannot import\nx", system="s"))
    assert "\n" not in str(DependencyError("cycle\na -> b", system="a"))
