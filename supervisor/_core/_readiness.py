"""The deployment readiness report: four checks, each with a recommendation when it fails.

Pure: the supervisor gathers the facts into ``ReadinessFacts``; ``assess``
judges them. Promotion to PRODUCTION requires every check to pass; starting
directly in PRODUCTION requires the security check.
"""

from __future__ import annotations

import attrs

from ._control import ReadinessCheck, ReadinessReport

__all__ = ["ReadinessFacts", "assess"]


@attrs.frozen(kw_only=True)
class ReadinessFacts:
    """What the checks look at, gathered by the supervisor at one moment."""

    # systems_ready
    not_started: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()
    unhealthy: tuple[str, ...] = ()
    # performance (over the recent window)
    window_ticks: int = 0
    work_p95: float = 0.0
    budget: float = 0.0
    dropped_in_window: int = 0
    realtime_fix: str | None = None  # realtime mode asked for and (partly) refused: what to change
    memory_tracking: bool = False  # [features] memory_tracking in the PRODUCTION overlay
    # error_handling (every step runs under SafeCall by construction: the sinks are what can fail)
    sink_problem: str | None = None  # None when the error sinks (state dir, audit log) are writable
    # security (of the phase being entered)
    target_phase: str = "production"
    api_enabled: bool = True
    api_tcp: bool = False
    tokens: int = 0
    socket_mode: int | None = None  # permission bits of the Unix socket, when there is one
    redaction: bool = True


def _systems(f: ReadinessFacts) -> ReadinessCheck:
    problems = []
    if f.not_started:
        problems.append(f"not started: {', '.join(f.not_started)}")
    if f.quarantined:
        problems.append(f"quarantined: {', '.join(f.quarantined)}")
    if f.unhealthy:
        problems.append(f"unhealthy: {', '.join(f.unhealthy)}")
    if not problems:
        return ReadinessCheck(
            name="systems_ready", ok=True, detail="every system started and healthy"
        )
    names = sorted({*f.not_started, *f.quarantined, *f.unhealthy})
    return ReadinessCheck(
        name="systems_ready",
        ok=False,
        detail="; ".join(problems),
        recommendation=(
            f"inspect `supervisor errors --system {names[0]}`, fix the cause, then "
            "`supervisor restart`; or disable the system in [systems] enabled"
        ),
    )


def _performance(f: ReadinessFacts) -> ReadinessCheck:
    if f.memory_tracking:
        return ReadinessCheck(
            name="performance",
            ok=False,
            detail="memory tracking is on ([features] memory_tracking: it slows every allocation)",
            recommendation="set [phases.production.features] memory_tracking = false",
        )
    if f.window_ticks == 0:
        return ReadinessCheck(
            name="performance",
            ok=False,
            detail="no ticks measured yet",
            recommendation="let the supervisor run for a few seconds under load, then ask again",
        )
    over = f.work_p95 > f.budget
    detail = (
        f"work p95 {f.work_p95 * 1e3:.3f} ms vs budget {f.budget * 1e3:.3f} ms over "
        f"{f.window_ticks} ticks; {f.dropped_in_window} dropped"
    )
    realtime = f"realtime mode was refused: {f.realtime_fix}" if f.realtime_fix else None
    if not over and f.dropped_in_window == 0:
        return ReadinessCheck(name="performance", ok=True, detail=detail, recommendation=realtime)
    return ReadinessCheck(
        name="performance",
        ok=False,
        detail=detail,
        recommendation=(
            "lower [supervisor] tick_rate or choose a lighter --profile, enable the optimizer "
            "([features] optimizer = true), or make the most expensive system cheaper "
            "(see per-system timing in `supervisor status`)" + (f"; {realtime}" if realtime else "")
        ),
    )


def _error_handling(f: ReadinessFacts) -> ReadinessCheck:
    if f.sink_problem is not None:
        return ReadinessCheck(
            name="error_handling",
            ok=False,
            detail=f.sink_problem,
            recommendation=(
                "make [supervisor] state_dir and [api] audit_log writable by the supervisor's "
                "user, with free disk space"
            ),
        )
    return ReadinessCheck(
        name="error_handling",
        ok=True,
        detail="SafeCall routes every hook; snapshot folder and audit log are writable",
    )


def _security(f: ReadinessFacts) -> ReadinessCheck:
    problems = []
    fixes = []
    outside_dev = f.target_phase != "development"
    if f.api_enabled and f.tokens == 0 and (outside_dev or f.api_tcp):
        where = "on a TCP listener" if f.api_tcp else f"in {f.target_phase}"
        problems.append(f"the API has no tokens {where}")
        fixes.append(
            'add [api] tokens with sha256 hashes (`printf %s "$TOKEN" | sha256sum`), '
            "roles viewer and operator"
        )
    if f.socket_mode is not None and f.socket_mode & 0o077:
        problems.append(f"the API socket is accessible to others (mode {f.socket_mode:o})")
        fixes.append("keep the socket's folder private (chmod 700) and the socket 600")
    if not f.redaction:
        problems.append("redaction of personal data is off")
        fixes.append(
            "remove [features] redaction = false (it is on by default outside development)"
        )
    if not problems:
        return ReadinessCheck(
            name="security",
            ok=True,
            detail="API tokens required, socket private, redaction on",
        )
    return ReadinessCheck(
        name="security",
        ok=False,
        detail="; ".join(problems),
        recommendation="; ".join(fixes),
    )


def assess(facts: ReadinessFacts) -> ReadinessReport:
    """Judge ``facts``: systems ready, performance, error handling, security."""
    return ReadinessReport(
        checks=(_systems(facts), _performance(facts), _error_handling(facts), _security(facts))
    )


def security_only(facts: ReadinessFacts) -> ReadinessReport:
    """The security check alone (starting directly in PRODUCTION requires it)."""
    return ReadinessReport(checks=(_security(facts),))
