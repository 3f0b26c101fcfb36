"""Prometheus metrics: a custom collector reading the supervisor's own counters.

Nothing is recorded twice: the tick histograms are re-bucketed from the
supervisor's fine log-linear ones at scrape time, and per-system step time
is a summary over each system's ring window. Labels are only system names
and phase names (bounded), never player ids or messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ._histogram import LATENCY_BUCKETS, Histogram, HistogramStats
from ._phase import Phase

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["LATENCY_BUCKETS", "SupervisorMetrics"]


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    counts = hist.cumulative(LATENCY_BUCKETS)
    buckets = [(repr(b), float(c)) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)]
    buckets.append(("+Inf", float(hist.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class _Collector(Collector):
    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    def collect(self) -> Iterator[Metric]:
        sup = self._sup
        yield CounterMetricFamily("supervisor_ticks", "Ticks run.", value=sup.tick)
        yield _histogram("supervisor_tick_duration_seconds", "Work time of each tick.", sup.work)
        yield _histogram(
            "supervisor_tick_lateness_seconds",
            "How late each tick started after its deadline.",
            sup.lateness,
        )
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
            for q, v in (("0.5", window.p50), ("0.95", window.p95), ("0.99", window.p99)):
                step.add_sample(
                    "supervisor_system_step_seconds", {"system": name, "quantile": q}, v
                )
            step.add_sample("supervisor_system_step_seconds_count", {"system": name}, window.count)
            step.add_sample(
                "supervisor_system_step_seconds_sum", {"system": name}, window.mean * window.count
            )
            errors.add_metric([name], counts.get(name, 0))
            quarantined.add_metric([name], 1.0 if name in quarantine else 0.0)
        yield step
        yield errors
        yield quarantined

        gauges = GaugeMetricFamily(
            "supervisor_gauge", "Gauges reported by systems (ctx.report).", labels=["name"]
        )
        for key, value in sup.gauges.items():
            gauges.add_metric([key], float(value))
        yield gauges
        res = sup.resources
        for key, doc in (
            ("rss_bytes", "Resident memory of the supervisor process."),
            ("cpu_percent", "CPU of the supervisor process, percent of one core."),
            ("threads", "Threads of the supervisor process."),
            ("open_files", "Open file descriptors of the supervisor process."),
        ):
            if key in res:
                yield GaugeMetricFamily(f"supervisor_process_{key}", doc, value=res[key])
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
        for reason in ("traceback_budget", "group_evicted", "log_fold_evicted"):
            dropped.add_metric([reason], sup.errors.dropped.get(reason, 0))
        yield dropped
        yield CounterMetricFamily(
            "supervisor_snapshot_failures",
            "Snapshots that could not be written.",
            value=sup.snapshot_failures,
        )


class SupervisorMetrics:
    """The Prometheus registry of one supervisor."""

    def __init__(self, sup: Supervisor) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(sup))

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
