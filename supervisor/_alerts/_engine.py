"""Alerts attached to a supervisor: read once a second, evaluate, log, notify.

:func:`attach_alerts` is the seam with the runtime, the way ``attach_api``
is: it appends supervised services to ``sup.services`` (the evaluator, and
one deliverer per destination), each returning when ``sup.closing`` is set.
Nothing runs per tick: the evaluator reads public counters once a second
(:func:`._signals.read`), between ticks, and delivery is asynchronous I/O on
bounded queues. The server layer finds the engine of a supervisor with
:func:`engine_for` (``GET /v1/alerts``, the ``supervisor_alerts_firing`` metric),
and its SLOs' burn rates with :func:`slo_burn_rates` (``supervisor_slo_burn_rate``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import trio

from .._core._config_alerts import AlertRule, AlertsConfig
from .._errors import ConfigError
from .._logging import get_logger
from ._delivery import Destination, alertmanager_alert
from ._evaluator import AlertState, Evaluator, State, Transition
from ._signals import BurnRate, Fingerprints, Reading, Window, read

if TYPE_CHECKING:
    from .._core._runtime import Supervisor

__all__ = [
    "BURN_WINDOWS",
    "EVALUATE_EVERY",
    "AlertEngine",
    "alerts_view",
    "attach_alerts",
    "engine_for",
    "slo_burn_rates",
]

#: Seconds between evaluations.
EVALUATE_EVERY: Final = 1.0
#: The windows ``/metrics`` gives each SLO's burn rate over: the SRE
#: workbook's pairs, 1h with 5m (fast burn, pages) and 6h with 30m (slow burn, tickets).
BURN_WINDOWS: Final = ("5m", "30m", "1h", "6h")

_ENGINES: weakref.WeakKeyDictionary[Any, AlertEngine] = weakref.WeakKeyDictionary()
#: Each supervisor's SLO store reading and the SLOs it answers, for ``/metrics``.
_BURN_RATES: weakref.WeakKeyDictionary[Any, tuple[BurnRate, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def engine_for(sup: object) -> AlertEngine | None:
    """The alert engine attached to ``sup``, if any."""
    return _ENGINES.get(sup)


def slo_burn_rates(sup: object) -> Iterator[tuple[str, str, float]]:
    """``(slo, window, burn rate)`` of every configured SLO over :data:`BURN_WINDOWS`, now.

    Read from the SLO store given to :func:`attach_alerts` (nothing without
    one). A window the store cannot answer (it raised) is left out: a
    missing sample, never a failed scrape.
    """
    burn_rate, slos = _BURN_RATES.get(sup, (None, ()))
    if burn_rate is None:
        return
    for slo in slos:
        for window in BURN_WINDOWS:
            try:
                value = float(burn_rate(slo, window))
            except Exception:  # a sample left out, never a failed scrape
                continue
            yield slo, window, value


def alerts_view(sup: object) -> dict[str, Any]:
    """What ``GET /v1/alerts`` answers (no rules, nothing firing, when none are attached)."""
    engine = _ENGINES.get(sup)
    if engine is None:
        return {
            "rules": [],
            "firing": [],
            "destinations": [],
            "evaluations": 0,
            "value_failures": 0,
        }
    return engine.view()


class AlertEngine:
    """The rules' evaluator, the window it reads, and the destinations it notifies."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        burn_rate: BurnRate | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.window = Window(config.window, burn_rate=burn_rate)
        self.evaluator = Evaluator(config.rules)
        self.wall = wall
        self.destinations: list[Destination] = []
        if config.alertmanager is not None:
            self.destinations.append(
                Destination(
                    "alertmanager", config.alertmanager, alertmanager=True, queue=config.queue
                )
            )
        for i, url in enumerate(config.webhooks):
            self.destinations.append(
                Destination(f"webhook{i}", url, alertmanager=False, queue=config.queue)
            )
        self.fingerprints = Fingerprints()
        #: Rule values that could not be read (a raising SLO store), counted.
        self.value_failures = 0
        self.evaluations = 0
        self._sent_at: dict[str, float] = {}
        #: Rules whose value failed at the last evaluation (logged once per failing spell).
        self._unreadable: set[str] = set()
        self._now = 0.0
        self._log = get_logger()
        #: Called with each rule that starts firing (the error store notes it as an incident).
        self.on_firing: list[Callable[[AlertRule], None]] = []

    def step(self, reading: Reading) -> list[Transition]:
        """Take one reading, evaluate every rule, log and notify what changed."""
        self._now = now = reading.at
        wall = self.wall()
        self.window.push(reading)
        values: dict[str, float | None] = {}
        for st in self.evaluator.states:
            rule = st.rule
            try:
                values[rule.name] = self.window.value(rule.metric, dict(rule.labels))
            except Exception as exc:
                self.value_failures += 1
                values[rule.name] = None
                if rule.name not in self._unreadable:
                    self._unreadable.add(rule.name)
                    self._log.warning(
                        "alert.value_failed", rule=rule.name, error=type(exc).__name__
                    )
            else:
                self._unreadable.discard(rule.name)
        self.evaluations += 1
        transitions = self.evaluator.evaluate(now, wall, values)
        states = {st.rule.name: st for st in self.evaluator.states}
        for t in transitions:
            emit = self._log.warning if t.after is State.FIRING else self._log.info
            emit(
                f"alert.{t.after.value}",
                rule=t.rule.name,
                severity=t.rule.severity,
                when=t.rule.when,
                value=t.value,
                before=t.before.value,
            )
            if t.after in (State.FIRING, State.RESOLVED):
                self._notify(states[t.rule.name], now, wall, webhooks=True)
            if t.after is State.FIRING:
                for listener in self.on_firing:
                    listener(t.rule)
        for st in self.evaluator.firing():
            if now - self._sent_at.get(st.rule.name, now) >= self.config.resend:
                self._notify(st, now, wall, webhooks=False)
        return transitions

    def _notify(self, st: AlertState, now: float, wall: float, *, webhooks: bool) -> None:
        """Queue ``st`` for Alertmanager (and the webhooks, for a transition)."""
        rule = st.rule
        assert st.starts_at is not None
        resolved = st.state is State.RESOLVED
        value = "none" if st.value is None else f"{st.value:g}"
        alert = alertmanager_alert(
            name=rule.name,
            severity=rule.severity,
            instance=self.config.instance,
            status=st.state,
            starts_at=st.starts_at,
            # Firing: Alertmanager resolves it by itself unless re-sent before then.
            ends_at=st.ends_at
            if resolved and st.ends_at is not None
            else wall + 4 * self.config.resend,
            annotations={
                "summary": rule.summary or f"{rule.when} (now {value})",
                "when": rule.when,
                "value": value,
            },
        )
        if resolved:
            self._sent_at.pop(rule.name, None)
        else:
            self._sent_at[rule.name] = now
        for dest in self.destinations:
            if dest.alertmanager or webhooks:
                dest.offer(alert)

    def view(self) -> dict[str, Any]:
        """What ``GET /v1/alerts`` answers: each rule's state, and each destination's counts."""
        return {
            "rules": [st.as_dict(self._now) for st in self.evaluator.states],
            "firing": [st.rule.name for st in self.evaluator.firing()],
            "destinations": [d.as_dict() for d in self.destinations],
            "evaluations": self.evaluations,
            "value_failures": self.value_failures,
        }

    def states(self) -> list[AlertState]:
        """Every rule's state (for the metrics)."""
        return list(self.evaluator.states)


def attach_alerts(sup: Supervisor, *, burn_rate: BurnRate | None = None) -> AlertEngine | None:
    """Evaluate ``[alerts]`` rules inside ``sup``'s run and deliver their notifications.

    Appends the evaluator and one deliverer per destination to
    ``sup.services``. No engine is attached (None) when there are no rules;
    ``burn_rate`` is kept either way, for :func:`slo_burn_rates`.

    Args:
        burn_rate: ``slo_burn_rate(slo, window) -> float`` from the SLO
            store; rules naming ``slo_burn_rate`` need it.

    Raises:
        ConfigError: a rule names ``slo_burn_rate`` and there is no SLO store.
    """
    config = sup.config.alerts
    for rule in config.rules:
        if rule.metric != "slo_burn_rate":
            continue
        problem = None
        if burn_rate is None:
            problem = "names slo_burn_rate, but there is no SLO store to read it from"
        elif (slo := dict(rule.labels).get("slo")) not in sup.config.slo:
            problem = f"names slo {slo!r}, but there is no [slo.{slo}] table"
        if problem is not None:
            raise ConfigError(
                problem, source=sup.config.source, key=f"alerts.rules.{rule.name}.when"
            )
    if burn_rate is not None:
        _BURN_RATES[sup] = (burn_rate, tuple(sup.config.slo))
    if not config.rules:
        return None
    engine = AlertEngine(config, burn_rate=burn_rate)
    _ENGINES[sup] = engine

    async def alerts_evaluate(
        sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while not sup.closing.is_set():
            engine.step(read(sup, engine.fingerprints, trio.current_time()))
            with trio.move_on_after(EVALUATE_EVERY):
                await sup.closing.wait()

    sup.services.append(alerts_evaluate)
    for dest in engine.destinations:

        async def alerts_deliver(
            sup: Supervisor,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
            dest: Destination = dest,
        ) -> None:
            task_status.started()
            await dest.deliver(sup.closing)

        sup.services.append(alerts_deliver)
    return engine
