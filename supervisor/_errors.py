"""Exception classes: one per condition, each keeping its culprit."""

from __future__ import annotations

from typing import Any


class SupervisorError(Exception):
    """Base of every error the supervisor raises on purpose."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(text.split())


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``), so a message stays one line.

    Names in error messages (keys, files, systems, arguments) come from the
    user; a newline in one must not split the one-line error the CLI prints.
    Idempotent: an escaped text is printable.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(SupervisorError, ValueError):
    """Raised when a config file, an override or a CLI value is invalid.

    ``source`` names the file (or environment variable) and ``key`` the
    dotted key at fault, so the CLI can print one line naming both.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source = None if source is None else printable(source)
        self.key = key = None if key is None else printable(key)
        self.message = message = printable(message)
        prefix = ""
        if source:
            prefix = f"{source}: "
        if key:
            prefix += f"[{key}] "
        super().__init__(prefix + message)


class PluginError(SupervisorError, ValueError):
    """Raised when a game system cannot be found, loaded or validated.

    ``system`` is the name it was enabled under.
    """

    def __init__(self, message: str, *, system: str | None = None):
        self.system = system
        message = printable(message)
        super().__init__(f"system {system!r}: {message}" if system else message)


class DependencyError(PluginError):
    """Raised when ``depends_on`` names an unknown system or forms a cycle."""

    def __init__(self, message: str, *, system: str | None = None, cycle: tuple[str, ...] = ()):
        self.cycle = cycle
        super().__init__(message, system=system)


class StartupError(SupervisorError, RuntimeError):
    """Raised when a critical system's ``start`` fails, aborting start-up.

    ``refused`` is True when the system refused to start on purpose (it
    raised :class:`StartRefused`): the CLI then exits 2, as for a config error.
    """

    def __init__(self, message: str, *, system: str, refused: bool = False):
        self.system = system
        self.refused = refused
        super().__init__(message)


class StartRefused(SupervisorError):
    """Raised by a system's ``start`` to refuse starting on purpose, with one clear line.

    For conditions an operator must decide on (a database that lost
    acknowledged data, say): ``supervisor run`` prints the message and exits 2.
    """


class StepTimeout(SupervisorError, TimeoutError):
    """Raised (and recorded) when an async step overruns its time budget and is cancelled."""


class StepInterrupted(BaseException):
    """Delivered asynchronously by the hang watchdog to a step past ``kill_timeout``.

    A ``BaseException`` so that a system's own ``except Exception`` does not
    swallow it; SafeCall catches it around every step and records a failure.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args or ("step interrupted by the hang watchdog",))


class PhaseError(SupervisorError, RuntimeError):
    """Raised when a phase change is not allowed from the current phase."""
