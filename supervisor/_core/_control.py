"""The control surface: what the HTTP API and the CLI may ask of a running supervisor.

The core implements it; the API layer depends only on this protocol and on
the frozen values below, never on the supervisor's internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

__all__ = [
    "Caller",
    "Controlled",
    "LifecycleEvent",
    "ReadinessCheck",
    "ReadinessReport",
    "Refused",
    "Unknown",
]


@attrs.frozen
class Caller:
    """Who asks: a token's name and role, or the peer of the Unix socket."""

    name: str  # token name, or "uid:1000" for an unauthenticated Unix-socket peer
    role: str  # "viewer" | "operator"


@attrs.frozen(kw_only=True)
class ReadinessCheck:
    """One check of the deployment readiness report."""

    name: str  # "systems_ready" | "performance" | "error_handling" | "security"
    ok: bool
    detail: str
    recommendation: str | None = None  # set when not ok

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class ReadinessReport:
    """Every check, and whether all passed."""

    checks: tuple[ReadinessCheck, ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> ReadinessCheck:
        """The check called ``name``.

        Raises:
            KeyError: no such check.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {"ok": self.ok, "checks": [c.as_dict() for c in self.checks]}


@attrs.frozen(kw_only=True)
class LifecycleEvent:
    """A phase change or lifecycle action: who asked, when, why, and what happened."""

    time: float  # wall clock
    tick: int
    action: str  # "phase" | "emergency" | "restart" | "shutdown" | "resume"
    before: str
    after: str
    caller: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return attrs.asdict(self)


class Refused(Exception):
    """Raised by a control action that is not allowed now; ``detail`` says why.

    ``payload`` carries structured context for the caller (for instance the
    readiness report that blocked a promotion).
    """

    def __init__(self, detail: str, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.payload = dict(payload or {})


class Unknown(Refused):
    """Raised by an action on a thing that does not exist (no such system): the API's 404."""


class View(Protocol):
    """A frozen view or an action's answer: ``as_dict()`` is its JSON (``_core._views``)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        ...


class Controlled(Protocol):
    """What the API layer needs from a supervisor."""

    def status(self) -> View:
        """Everything ``supervisor status`` shows (a ``StatusView``)."""
        ...

    def liveness(self) -> tuple[bool, str]:
        """(alive, detail): the tick loop made progress recently, or the emergency handler runs.

        Anonymous callers read it: the detail is fixed words and numbers only
        ("emergency_shutdown", "no tick for 1.20 s (limit 1.00 s)"), never free
        text, and no plugin code runs to answer.
        """
        ...

    def readiness_gate(self) -> tuple[bool, list[str]]:
        """(ready, reasons): not in EMERGENCY_SHUTDOWN and no system unhealthy or quarantined.

        Reasons are fixed words and system names only ("emergency_shutdown",
        "quarantined: economy", "unhealthy: x", "not ticking yet"); health is
        the value cached by the tick loop, so no plugin code runs to answer.
        """
        ...

    def readiness(self) -> ReadinessReport:
        """The deployment readiness report."""
        ...

    def error_view(self, *, limit: int, system: str | None) -> View:
        """Recent error records and groups by fingerprint (an ``ErrorView``, redacted when made)."""
        ...

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition and its content type."""
        ...

    async def shutdown(self, *, emergency: bool, reason: str, caller: Caller) -> View:
        """Stop gracefully, or enter EMERGENCY_SHUTDOWN (a ``ShutdownResult``).

        Raises Refused when not allowed.
        """
        ...

    async def restart(self, *, caller: Caller) -> View:
        """Rebuild the systems from preserved state (a ``RestartResult``).

        Raises Refused when not allowed, or when a critical system's
        constructor failed (the supervisor is then in EMERGENCY_SHUTDOWN with
        its state preserved; the payload says so).
        """
        ...

    async def quarantine(self, name: str, *, reason: str, caller: Caller) -> View:
        """Take system ``name`` out of the tick until released (a ``SystemAction``).

        Raises Unknown for no such system, Refused when it is held already.
        """
        ...

    async def release(self, name: str, *, reason: str, caller: Caller) -> View:
        """Put system ``name`` back into the tick, its budget reset (a ``SystemAction``).

        Raises Unknown for no such system, Refused when it is not quarantined.
        """
        ...

    async def snapshot(self, *, reason: str, caller: Caller) -> View:
        """Write a snapshot after the current tick; answered once written (``SnapshotTaken``).

        Raises Refused when not running, in an emergency, or snapshots are off.
        """
        ...

    async def change_phase(self, phase: str, *, force: bool, reason: str, caller: Caller) -> View:
        """Move to ``phase`` (a ``PhaseChange``). Raises Refused (with the readiness report).

        Leaving DEVELOPMENT with no ``[api] tokens`` needs ``force``; leaving
        PRODUCTION (but for an emergency) needs ``force`` and a ``reason``.
        """
        ...
