"""Structured logging with structlog: configured once, free when filtered out.

The processor chain, in order, and why:

1. ``format_exc_info``: an ``exc_info`` (``log.exception``, ``exc_info=True``
   or an exception object) becomes a plain traceback string under
   ``exception``, without local variables. Rich's console traceback shows
   every frame's locals (passwords, player e-mails, tokens) and renders them
   *after* every processor ran, so nothing could redact them.
2. the caller's ``processors`` (the redactor): they see the formatted
   exception text like any other value, in both formats.
3. level and timestamp: added after redaction, which has nothing to find in
   them and would only spend time on a timestamp.
4. the :class:`Renderer`, console or JSON. Its console renderer is also given
   the plain formatter, should an ``exc_info`` ever get that far.

Lines are written by structlog's ``WriteLogger``: each line and its newline in
one ``write`` call (``PrintLogger`` uses ``print``, which writes the text and
the newline separately, so a live status line redrawn in between could land
inside a log line).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["Renderer", "configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class Renderer:
    """The last processor: console or JSON, switchable while running.

    Bound loggers keep the processors they were made with, so the format is
    switched here (entering PRODUCTION turns JSON on) rather than by
    reconfiguring structlog.
    """

    def __init__(self, fmt: str, colors: bool) -> None:
        self.format = fmt
        self._json = structlog.processors.JSONRenderer()
        # plain_traceback: no rich frames with locals, whatever is installed.
        self._console = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )

    def __call__(self, logger: Any, name: str, event_dict: Any) -> Any:
        if self.format == "json":
            return self._json(logger, name, event_dict)
        return self._console(logger, name, event_dict)


def configure_logging(
    fmt: str = "console",
    level: str = "info",
    stream: TextIO | None = None,
    processors: tuple[Any, ...] = (),
) -> Renderer:
    """Configure structlog for the process.

    Args:
        fmt: ``"console"`` (readable, for people) or ``"json"`` (one object a line).
        level: the lowest level written; below it a log call is a bare return.
        stream: where lines go (default: standard error, as it is at this call).
        processors: extra processors run after exceptions are formatted and
            before level, timestamp and rendering (redaction goes here).

    Returns:
        The renderer, whose ``format`` may be switched later.
    """
    out = stream or sys.stderr
    renderer = Renderer(fmt, colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.processors.format_exc_info,
            *processors,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    return renderer


def get_logger(**bound: Any) -> Any:
    """A structlog logger with ``bound`` values.

    Lazy: it takes structlog's configuration when it logs, not when it is
    made, so a supervisor built before ``configure_logging`` still logs where
    and how the CLI configured.
    """
    return structlog.get_logger("supervisor", **bound)
