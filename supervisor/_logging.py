"""Structured logging with structlog: configured once, free when filtered out."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    fmt: str = "console",
    level: str = "info",
    stream: TextIO | None = None,
    processors: tuple[Any, ...] = (),
) -> None:
    """Configure structlog for the process.

    Args:
        fmt: ``"console"`` (readable, for people) or ``"json"`` (one object a line).
        level: the lowest level written; below it a log call is a bare return.
        stream: where lines go (default: standard error).
        processors: extra processors run before rendering (redaction, storm folding).
    """
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
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


def get_logger(**bound: Any) -> Any:
    """A structlog logger with ``bound`` values."""
    return structlog.get_logger("supervisor").bind(**bound)
