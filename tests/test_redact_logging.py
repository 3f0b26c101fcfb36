"""Logs in both formats: exceptions as plain text without locals, redacted, one write a line."""

from __future__ import annotations

import io
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog

from supervisor import configure_logging
from supervisor._core._redact import Redactor

SECRET_LOCAL = "hunter2-Local-Xq9"
SECRET_EMAIL = "carol@example.net"


class Recorder(io.StringIO):
    """A text stream that remembers every ``write`` call separately."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


def _fail_with_secrets() -> None:
    password = SECRET_LOCAL  # a local: rich's console traceback would show it
    raise ConnectionError(f"login failed for {SECRET_EMAIL} ({len(password)} chars)")


def _log_exception(fmt: str, redactor: Redactor | None) -> str:
    stream = Recorder()
    processors = (redactor.structlog_processor(),) if redactor is not None else ()
    configure_logging(fmt, "info", stream=stream, processors=processors)
    log = structlog.get_logger("test")
    try:
        _fail_with_secrets()
    except ConnectionError:
        log.exception("login.failed", player=SECRET_EMAIL)
    return stream.getvalue()


class TestExceptions:
    """``log.exception`` renders a plain traceback that the redactor has seen."""

    @pytest.mark.parametrize("fmt", ["console", "json"])
    def test_traceback_redacted_without_locals(self, fmt: str) -> None:
        """The traceback is there (file, function, message), redacted, with no local values."""
        out = _log_exception(fmt, Redactor())
        assert "Traceback (most recent call last)" in out
        assert "_fail_with_secrets" in out
        assert "ConnectionError: login failed for [email]" in out
        assert SECRET_EMAIL not in out
        assert SECRET_LOCAL not in out

    @pytest.mark.parametrize("fmt", ["console", "json"])
    def test_no_locals_even_without_redaction(self, fmt: str) -> None:
        """With redaction off (development) a traceback still never prints local variables."""
        out = _log_exception(fmt, None)
        assert "Traceback (most recent call last)" in out
        assert SECRET_EMAIL in out  # not redacted: redaction is off
        assert SECRET_LOCAL not in out

    def test_json_exception_is_a_string_field(self) -> None:
        """In JSON the traceback is one string under ``exception`` (not ``exc_info: true``)."""
        event = json.loads(_log_exception("json", Redactor()))
        assert "exc_info" not in event
        assert isinstance(event["exception"], str)
        assert event["exception"].startswith("Traceback")
        assert event["player"] == "[email]"
        assert event["level"] == "error"

    def test_exception_object_as_exc_info(self) -> None:
        """``exc_info=exc`` (an exception object, outside ``except``) is formatted and redacted."""
        stream = Recorder()
        configure_logging("console", stream=stream, processors=(Redactor().structlog_processor(),))
        exc = ValueError(f"bad card 4111 1111 1111 1111 from {SECRET_EMAIL}")
        structlog.get_logger().error("x", exc_info=exc)
        out = stream.getvalue()
        assert "ValueError: bad card [card] from [email]" in out
        assert "4111" not in out
        assert SECRET_EMAIL not in out


class TestOrder:
    """Exceptions are formatted before the caller's processors; level and time after."""

    def test_processor_sees_formatted_exception_only(self) -> None:
        """A processor in ``processors`` gets the traceback as text, no exc_info, no timestamp."""
        seen: list[dict[str, Any]] = []

        def spy(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
            seen.append(dict(event_dict))
            return event_dict

        stream = Recorder()
        configure_logging("json", stream=stream, processors=(spy,))
        try:
            _fail_with_secrets()
        except ConnectionError:
            structlog.get_logger().exception("boom")
        (event,) = seen
        assert "exc_info" not in event
        assert isinstance(event["exception"], str)
        assert "timestamp" not in event
        assert "level" not in event
        rendered = json.loads(stream.getvalue())
        assert rendered["timestamp"].endswith("Z")
        assert rendered["level"] == "error"


class TestWholeLines:
    """Every log line reaches the stream in one write (the terminal's live line cannot split it)."""

    @pytest.mark.parametrize("fmt", ["console", "json"])
    def test_one_write_per_line(self, fmt: str) -> None:
        """Each event is exactly one ``write`` holding the line and its newline."""
        stream = Recorder()
        configure_logging(fmt, stream=stream)
        log = structlog.get_logger()
        for i in range(5):
            log.info("tick.done", tick=i)
        assert len(stream.calls) == 5
        for call in stream.calls:
            assert call.endswith("\n")
            assert call.count("\n") == 1

    def test_traceback_event_is_one_write(self) -> None:
        """A multi-line exception event is still one ``write``."""
        stream = Recorder()
        configure_logging("console", stream=stream)
        try:
            _fail_with_secrets()
        except ConnectionError:
            structlog.get_logger().exception("boom")
        assert len(stream.calls) == 1
        assert stream.calls[0].count("\n") > 2
