"""Structured logging with structlog: configured once, free when filtered out."""

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
        self._console = structlog.dev.ConsoleRenderer(colors=colors)

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
        stream: where lines go (default: standard error).
        processors: extra processors run before rendering (redaction, storm folding).

    Returns:
        The renderer, whose ``format`` may be switched later.
    """
    renderer = Renderer(fmt, colors=(stream or sys.stderr).isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *processors,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
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
