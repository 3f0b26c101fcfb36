"""Rollouts attached to a supervisor: the flags they move, the rules they watch, the service.

:func:`attach_rollouts` is the seam with the runtime, as ``attach_alerts`` is:
it restores the record from ``state_dir`` before the run starts, subscribes
to the alert engine's rules starting to fire, adds the ``rollouts`` section
to status, and appends the service that moves the rollouts on
(:meth:`~supervisor._rollout._manager.Rollouts.serve`) to ``sup.services``,
where a crash is logged, counted and restarted while the tick goes on. The
server finds it with :func:`rollouts_for`.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, Final

import trio

from .._alerts import AlertEngine, engine_for
from .._alerts._evaluator import State as AlertState
from .._core._control import Unknown
from ._file import RolloutFile
from ._manager import AuditSink, FlagControl, Rollouts
from ._plan import Rollout

if TYPE_CHECKING:
    from .._core._runtime import Supervisor

__all__ = ["ROLLBACK_ALERT", "attach_rollouts", "rollout_act", "rollouts_for", "rollouts_view"]

#: The alert a rollback raises (Alertmanager and webhooks), and how long it stays
#: (Alertmanager resolves it then; the rollout's status keeps the reason).
ROLLBACK_ALERT: Final = "rollout_rolled_back"
ROLLBACK_ALERT_FOR: Final = 3600.0

_ROLLOUTS: weakref.WeakKeyDictionary[Any, Rollouts] = weakref.WeakKeyDictionary()


def rollouts_for(sup: object) -> Rollouts | None:
    """The rollouts attached to ``sup``, if any."""
    return _ROLLOUTS.get(sup)


def rollouts_view(sup: object) -> dict[str, Any]:
    """What ``GET /v1/rollouts`` answers (no rollouts when none are attached)."""
    rollouts = _ROLLOUTS.get(sup)
    if rollouts is None:
        return {"rollouts": [], "problems": [], "enabled": False}
    return {**rollouts.view(), "enabled": True}


async def rollout_act(
    sup: object, verb: str, flag: str, *, by: str, **arguments: Any
) -> dict[str, Any]:
    """Carry out ``POST /v1/rollouts/FLAG/VERB`` (start, pause, resume, abort) for ``by``.

    Raises:
        Unknown: ``sup`` has no flags (so no rollouts), or the flag is unknown.
        RolloutInputError: bad steps, duration or rule name.
        RolloutRefused: not possible in the rollout's state, or not recorded.
    """
    rollouts = _ROLLOUTS.get(sup)
    if rollouts is None:
        raise Unknown("no rollouts: this supervisor has no [flags] in its config")
    if verb == "start":
        return await rollouts.start(flag, by=by, **arguments)
    command = {"pause": rollouts.pause, "resume": rollouts.resume, "abort": rollouts.abort}[verb]
    return await command(flag, by=by, **arguments)


def _alert_rollback(engine: AlertEngine, rollout: Rollout) -> None:
    """Tell the alert destinations a rollout was rolled back (a page-severity alert)."""
    if not engine.destinations:
        return
    # The delivery module loads httpx: only a run with a destination pays for it.
    from .._alerts._delivery import alertmanager_alert  # noqa: PLC0415

    wall = time.time()
    alert = alertmanager_alert(
        name=ROLLBACK_ALERT,
        severity="page",
        instance=engine.config.instance,
        status=AlertState.FIRING,
        starts_at=wall,
        ends_at=wall + ROLLBACK_ALERT_FOR,
        annotations={"summary": f"rollout of {rollout.flag}: {rollout.reason}",
                     "flag": rollout.flag},
    )  # fmt: skip
    alert["labels"]["flag"] = rollout.flag
    for dest in engine.destinations:
        dest.offer(alert)


def attach_rollouts(sup: Supervisor, *, audit: AuditSink | None = None) -> Rollouts | None:
    """Run staged rollouts of ``sup``'s flags inside its run (None: it has no flags).

    Call after ``attach_alerts``: a rollout watches the engine's rules.

    Args:
        audit: writes one audit line (blocking; called from a worker thread)
            for each automatic change: a step, a completion, a rollback.
    """
    flags: FlagControl | None = getattr(sup, "flags", None)
    if flags is None:
        return None
    engine = engine_for(sup)
    rollouts = Rollouts(flags=flags, file=RolloutFile(sup.state_dir), audit=audit)
    if engine is not None:
        rollouts.rules = frozenset(st.rule.name for st in engine.states())
        rollouts.firing = lambda: [st.rule.name for st in engine.evaluator.firing()]
        engine.on_firing.append(lambda rule: rollouts.rule_fired(rule.name))
        rollouts.on_rollback.append(lambda rollout: _alert_rollback(engine, rollout))
    listeners = getattr(flags, "listeners", None)
    if isinstance(listeners, list):  # someone else setting a flag pauses its rollout
        listeners.append(rollouts.flag_changed)
    rollouts.restore()
    _ROLLOUTS[sup] = rollouts
    sup.status_sections["rollouts"] = rollouts.view

    async def rollouts_serve(
        sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await rollouts.serve(sup.closing)

    sup.services.append(rollouts_serve)
    return rollouts
