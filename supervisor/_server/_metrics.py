"""Prometheus metrics: a custom collector reading the supervisor's own counters.

Nothing is recorded twice: the tick histograms are re-bucketed from the
supervisor's fine log-linear ones at scrape time, and per-system step time
is a summary over each system's ring window. Labels are only system names,
gauge names, phase names and fixed reason words (bounded), never player ids
or messages.

Belt and braces, whatever the core already did at the source: while
redaction is on, every label value that is not one of our own constants (a
system name, a gauge name, a reason key) goes through the redactor here; a
gauge or resource value that is not a finite number is skipped (and
counted in ``supervisor_gauges_skipped``) rather than turned into a failed
scrape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .._alerts import engine_for, slo_burn_rates
from .._core._histogram import LATENCY_BUCKETS, Histogram, HistogramStats
from .._core._phase import Phase

if TYPE_CHECKING:
    from .._core._redact import Redactor
    from .._core._windows import Windowed

__all__ = ["LATENCY_BUCKETS", "MetricsSource", "SupervisorMetrics", "install"]


class MetricsSource(Protocol):
    """What the collector reads of a supervisor: public counters and views only."""

    @property
    def redactor(self) -> Redactor: ...
    @property
    def tick(self) -> int: ...
    @property
    def work(self) -> Histogram: ...
    @property
    def lateness(self) -> Histogram: ...
    @property
    def overruns(self) -> int: ...
    @property
    def dropped_ticks(self) -> int: ...
    @property
    def tick_rate(self) -> float: ...
    @property
    def budget(self) -> float: ...
    @property
    def optimizer_adjustments(self) -> int: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def errors(self) -> Any: ...  # an ErrorLog: counts, dropped
    @property
    def names(self) -> list[str]: ...
    @property
    def gauges(self) -> Mapping[str, float]: ...
    @property
    def resources(self) -> Mapping[str, float]: ...
    @property
    def snapshot_stall(self) -> Histogram: ...
    @property
    def snapshot_failures(self) -> int: ...
    def quarantined(self) -> tuple[str, ...]: ...
    def windows(self) -> Windowed: ...
    def step_window(self, name: str, since: int = 0) -> list[float]: ...
    @property
    def system_memory(self) -> Mapping[str, int]: ...


class _Exported(MetricsSource, Protocol):
    metrics_exporter: Callable[[], tuple[bytes, str]] | None


#: Reasons always exposed (0 until they happen), so the series are stable.
_DROP_REASONS = (
    "traceback_budget",
    "group_evicted",
    "log_fold_evicted",
    "gauge_error",
    "gauge_limit",
    "ring_full",
)


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a real, finite number (bool and int included), else None."""
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        return None
    return number if math.isfinite(number) else None


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    counts = hist.cumulative(LATENCY_BUCKETS)
    buckets = [(repr(b), float(c)) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)]
    buckets.append(("+Inf", float(hist.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


def _tick_times(sup: MetricsSource) -> Iterator[Metric]:
    """The tick histograms since start, then lateness and work p50/p99 over 10 s and 60 s."""
    yield _histogram("supervisor_tick_duration_seconds", "Work time of each tick.", sup.work)
    yield _histogram(
        "supervisor_tick_lateness_seconds",
        "How late each tick started after its deadline.",
        sup.lateness,
    )
    figures = sup.windows()
    families = {
        kind: GaugeMetricFamily(
            f"supervisor_tick_{kind}_window_seconds",
            f"Tick {kind} quantiles over a recent window (the histogram counts since start).",
            labels=["window", "quantile"],
        )
        for kind in ("lateness", "work")
    }
    for label, lateness, work in figures.windows:
        for kind, stats in (("lateness", lateness), ("work", work)):
            families[kind].add_metric([label, "0.5"], stats.p50)
            families[kind].add_metric([label, "0.99"], stats.p99)
    yield from families.values()
    if figures.measured_tick_rate is not None:
        yield GaugeMetricFamily(
            "supervisor_tick_rate_measured_hz",
            "Ticks per second run over the last 10 s.",
            value=figures.measured_tick_rate,
        )


def _system_memory(sup: MetricsSource, label: Callable[[str], str]) -> Metric:
    """Live memory per system, while ``[features] memory_tracking`` samples it (else empty)."""
    memory = GaugeMetricFamily(
        "supervisor_system_memory_bytes",
        "Live Python memory each system's code allocated ([features] memory_tracking).",
        labels=["system"],
    )
    for name, size in sup.system_memory.items():
        memory.add_metric([label(name)], size)
    return memory


class _Collector(Collector):
    def __init__(self, sup: MetricsSource) -> None:
        self._sup = sup

    def _label(self) -> Callable[[str], str]:
        """What a label value from the core goes through: the redactor while it is on."""
        redactor = self._sup.redactor
        return redactor.text if redactor.enabled else str

    def collect(self) -> Iterator[Metric]:
        sup = self._sup
        label = self._label()
        yield CounterMetricFamily("supervisor_ticks", "Ticks run.", value=sup.tick)
        yield from _tick_times(sup)
        yield CounterMetricFamily(
            "supervisor_tick_overruns", "Ticks whose work exceeded the budget.", value=sup.overruns
        )
        yield CounterMetricFamily(
            "supervisor_dropped_ticks",
            "Ticks dropped by the overrun policy.",
            value=sup.dropped_ticks,
        )
        yield GaugeMetricFamily(
            "supervisor_tick_rate_hz", "Current tick rate.", value=sup.tick_rate
        )
        yield GaugeMetricFamily(
            "supervisor_tick_budget_seconds", "Work budget of one tick.", value=sup.budget
        )
        yield CounterMetricFamily(
            "supervisor_optimizer_adjustments",
            "Optimizer decisions applied.",
            value=sup.optimizer_adjustments,
        )
        phase = GaugeMetricFamily("supervisor_phase", "1 for the current phase.", labels=["phase"])
        for p in Phase:
            phase.add_metric([p.value], 1.0 if p is sup.phase else 0.0)
        yield phase

        step = Metric(
            "supervisor_system_step_seconds",
            "Step time of each system over its recent window (up to 1024 ticks).",
            "summary",
        )
        errors = CounterMetricFamily(
            "supervisor_system_errors", "Errors recorded per system.", labels=["system"]
        )
        quarantined = GaugeMetricFamily(
            "supervisor_system_quarantined", "1 while a system is quarantined.", labels=["system"]
        )
        counts = sup.errors.counts
        quarantine = set(sup.quarantined())
        for name in sup.names:
            window = HistogramStats.from_values(sup.step_window(name))
            system = label(name)
            for q, v in (("0.5", window.p50), ("0.95", window.p95), ("0.99", window.p99)):
                step.add_sample(
                    "supervisor_system_step_seconds", {"system": system, "quantile": q}, v
                )
            step.add_sample(
                "supervisor_system_step_seconds_count", {"system": system}, window.count
            )
            step.add_sample(
                "supervisor_system_step_seconds_sum",
                {"system": system},
                window.mean * window.count,
            )
            errors.add_metric([system], counts.get(name, 0))
            quarantined.add_metric([system], 1.0 if name in quarantine else 0.0)
        yield step
        yield _system_memory(sup, label)
        yield errors
        yield quarantined

        gauges = GaugeMetricFamily(
            "supervisor_gauge", "Gauges reported by systems (ctx.report).", labels=["name"]
        )
        skipped = 0
        seen: set[str] = set()
        # A copy: the gauges dict is the tick loop's, and is never iterated live.
        for key, value in list(sup.gauges.items()):
            number = _finite(value)
            name = label(str(key))
            if number is None or name in seen:  # two names redacted alike: keep the first
                skipped += 1
                continue
            seen.add(name)
            gauges.add_metric([name], number)
        yield gauges
        yield GaugeMetricFamily(
            "supervisor_gauges_skipped",
            "Gauges left out of this scrape: not a finite number, or a duplicate redacted name.",
            value=skipped,
        )
        res = sup.resources
        for key, doc in (
            ("rss_bytes", "Resident memory of the supervisor process."),
            ("cpu_percent", "CPU of the supervisor process, percent of one core."),
            ("threads", "Threads of the supervisor process."),
            ("open_files", "Open file descriptors of the supervisor process."),
        ):
            number = _finite(res.get(key))
            if number is not None:
                yield GaugeMetricFamily(f"supervisor_process_{key}", doc, value=number)
        yield _histogram(
            "supervisor_snapshot_stall_seconds",
            "Tick-loop time spent capturing periodic snapshots.",
            sup.snapshot_stall,
        )
        dropped = CounterMetricFamily(
            "supervisor_errors_dropped",
            "Error-recording work skipped to stay bounded, by reason.",
            labels=["reason"],
        )
        counts_dropped = sup.errors.dropped
        for reason in sorted(set(_DROP_REASONS) | set(counts_dropped)):
            dropped.add_metric([label(str(reason))], counts_dropped.get(reason, 0))
        yield dropped
        yield CounterMetricFamily(
            "supervisor_snapshot_failures",
            "Snapshots that could not be written.",
            value=sup.snapshot_failures,
        )


class _AlertCollector(Collector):
    """The alert engine's metrics, when one is attached (issue 11)."""

    def __init__(self, sup: MetricsSource) -> None:
        self._sup = sup

    def collect(self) -> Iterator[Metric]:
        return _alert_metrics(self._sup)


def _alert_metrics(sup: MetricsSource) -> Iterator[Metric]:
    """Issue 11: SLO burn rates; each rule's firing state, each destination's notifications."""
    burn = GaugeMetricFamily(
        "supervisor_slo_burn_rate",
        "How fast the window spends the SLO's error budget (1: exactly over the SLO's window).",
        labels=["slo", "window"],
    )
    for slo, window, value in slo_burn_rates(sup):
        burn.add_metric([slo, window], value)
    if burn.samples:
        yield burn
    engine = engine_for(sup)
    if engine is None:
        return
    firing = GaugeMetricFamily(
        "supervisor_alerts_firing", "1 while an alert rule fires.", labels=["rule", "severity"]
    )
    for st in engine.states():
        firing.add_metric([st.rule.name, st.rule.severity], 1.0 if st.state == "firing" else 0.0)
    yield firing
    sent = CounterMetricFamily(
        "supervisor_alert_notifications",
        "Alert notifications by destination and outcome (sent, failed_attempt, gave_up, "
        "dropped_queue_full).",
        labels=["destination", "outcome"],
    )
    for dest in engine.destinations:
        for outcome, count in sorted(dest.counts.items()):
            sent.add_metric([dest.name, outcome], count)
    yield sent
    yield CounterMetricFamily(
        "supervisor_error_fingerprints_new",
        "Error fingerprints first seen since the process started (read by the alert evaluator).",
        value=engine.fingerprints.new,
    )


class SupervisorMetrics:
    """The Prometheus registry of one supervisor."""

    def __init__(self, sup: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(sup))
        self.registry.register(_AlertCollector(sup))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def install(sup: _Exported) -> None:
    """Give ``sup`` its Prometheus exposition (``sup.metrics_text()``, ``GET /metrics``).

    Installed by the server layer: the core imports no metrics library.
    """
    sup.metrics_exporter = SupervisorMetrics(sup).exposition
