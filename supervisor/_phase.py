"""Phases of a supervisor's life."""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """The phase a supervisor is in; values are the names used in config and the CLI."""

    DEVELOPMENT = "development"
    TESTING = "testing"
    PRODUCTION = "production"
    EMERGENCY_SHUTDOWN = "emergency_shutdown"

    @classmethod
    def parse(cls, text: str) -> Phase:
        """Return the phase named ``text`` (case-insensitive).

        Raises:
            ValueError: ``text`` names no phase; the message lists the valid names.
        """
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown phase {text!r} (expected one of: {names})") from None
