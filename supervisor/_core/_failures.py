"""Failure recording: an exception becomes a kept, redacted record and a folded log line.

Building a record runs plugin code (``__str__``, ``__notes__``...), so the
slot is marked for the watchdog meanwhile. Formatting tracebacks and
writing log lines are the costly parts of an error storm: both are budgeted
(token buckets), and repeats of one fingerprint fold into one storm line.
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import StepInterrupted, StepTimeout
from ._kernel import Kernel
from ._safecall import ErrorRecord, TokenBucket, fingerprint, is_a, make_record
from ._slots import Slot

__all__ = ["FailureRecorder"]

#: Tracebacks formatted per second across all fingerprints (a storm reuses them),
#: and at most this many at once.
FORMAT_BUDGET = 200
FORMAT_BURST = 10
#: Seconds during which further failures of one fingerprint fold into one storm line.
LOG_FOLD_INTERVAL = 5.0
#: Error log lines per second at most (and at once); storm lines report the rest.
LOG_BUDGET = 20
LOG_BURST = 5
#: Fingerprints folded at once (bounded memory); storms wider than STORM_LINES
#: are reported in one aggregate line.
MAX_LOG_FOLDS = 5_000
STORM_LINES = 10

_Fold = tuple[float, int, str, str]  # (first seen, suppressed, system, error type)


class FailureRecorder:
    """Makes, keeps and logs the records of failures (one per runtime)."""

    def __init__(self, kernel: Kernel) -> None:
        self._k = kernel
        self._reused_tb: str | None = None
        self._format_tokens = TokenBucket(FORMAT_BUDGET, FORMAT_BURST)
        self._log_folds: dict[str, _Fold] = {}
        self._log_tokens = TokenBucket(LOG_BUDGET, LOG_BURST)
        #: Called with every record right after it is kept (the durable error
        #: store's enqueue): each must be O(1) and never block; one that raises
        #: is counted (``errors.dropped["sink_failed"]``) and removed.
        self.sinks: list[Callable[[ErrorRecord], None]] = []

    def record(
        self,
        slot: Slot,
        hook: str,
        exc: BaseException,
        *,
        kind: str = "error",
        failed: bool = True,
    ) -> ErrorRecord:
        """Make, redact and keep the record of ``exc``; ``failed`` marks the step as failed.

        Building it runs plugin code (``__str__``, ``__notes__``...), guarded in
        ``make_record``; the slot is marked meanwhile so that the watchdog
        interrupts a ``__str__`` that hangs. (A gauge error is recorded from
        inside the system's own step: the marker is put back as it was.)
        """
        k = self._k
        loop = k.loop
        marked = loop.current
        loop.current = slot
        loop.call_seq += 1
        try:
            record = self._make(slot, hook, exc, kind)
        except StepInterrupted:  # landed between make_record's own guards
            record = self._make(
                slot, hook, StepInterrupted("recording this error hung and was interrupted"), kind
            )
        finally:
            loop.current = marked
            loop.call_seq += 1
        k.last_record = record
        k.errors.add(record, formatted=record.traceback is not self._reused_tb)
        if self.sinks:
            self._deliver(record)
        if failed:
            slot.failed_tick = loop.tick
        return record

    def _deliver(self, record: ErrorRecord) -> None:
        """Hand ``record`` to every sink; drop a sink that raises (counted)."""
        broken = []
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:
                self._k.errors.dropped["sink_failed"] += 1
                broken.append(sink)
        for sink in broken:
            self.sinks.remove(sink)

    def _make(self, slot: Slot, hook: str, exc: BaseException, kind: str) -> ErrorRecord:
        k = self._k
        stack = None
        if is_a(exc, StepInterrupted):
            kind = "interrupted"
            stack, slot.hang_stack = slot.hang_stack, None
        elif is_a(exc, StepTimeout):
            kind = "timeout"
        now = k.wall()
        fp = fingerprint(exc)
        # Formatting a traceback is the costly part of a record: an error storm
        # reuses its fingerprint's, formatted at most once a second, and all
        # fingerprints together at most FORMAT_BUDGET times a second, evenly.
        tb = k.errors.recent_traceback(fp, now, 1.0)
        if tb is None and not self._format_tokens.take(now):
            tb = "(traceback not formatted: error storm)"
            k.errors.dropped["traceback_budget"] += 1
        self._reused_tb = tb
        return make_record(
            exc,
            fingerprint_value=fp,
            traceback_text=tb,
            time=now,
            tick=k.loop.tick,
            system=slot.name,
            hook=hook,
            phase=k.phase.value,
            gauges=k.gauges,
            health=slot.health,
            traceback_limit=k.active.recovery.traceback_limit,
            kind=kind,
            stack=stack,
            redactor=k.redactor,
            checkpoint=self._new_call,
        )

    def _new_call(self) -> None:
        """A new call into plugin code on the marked slot: the watchdog's clock starts afresh."""
        self._k.loop.call_seq += 1

    def log(self, record: ErrorRecord) -> None:
        """Log a failure, folding storms.

        One line per fingerprint per ``LOG_FOLD_INTERVAL``, and at most
        ``LOG_BUDGET`` such lines a second in all: past it, a new fingerprint
        is counted (and reported by the next storm line) instead of logged.
        """
        folds = self._log_folds
        fold = folds.get(record.fingerprint)
        now = record.time
        # Folds are tuples of plain values: the cyclic GC stops tracking them,
        # so thousands of them cost a full collection nothing.
        if fold is not None and now - fold[0] < LOG_FOLD_INTERVAL:
            folds[record.fingerprint] = (fold[0], fold[1] + 1, fold[2], fold[3])
            return
        if fold is not None and fold[1]:
            self._log_storm(record.fingerprint, fold)
        if not self._log_tokens.take(now):
            folds[record.fingerprint] = (now, 1, record.system, record.exc_type)
        else:
            folds[record.fingerprint] = (now, 0, record.system, record.exc_type)
            self._k.log.error(
                "system.error",
                system=record.system,
                hook=record.hook,
                tick=record.tick,
                error=record.exc_type,
                message=record.message,
                fingerprint=record.fingerprint,
                kind=record.kind,
            )
        if len(folds) > MAX_LOG_FOLDS:
            folds.pop(next(iter(folds)))
            self._k.errors.dropped["log_fold_evicted"] += 1

    def record_and_log(self, slot: Slot, hook: str, exc: BaseException) -> ErrorRecord:
        """``record`` then ``log``: a hook's failure."""
        record = self.record(slot, hook, exc)
        self.log(record)
        return record

    def _log_storm(self, fp: str, fold: _Fold) -> None:
        self._k.log.error(
            "system.error_storm",
            fingerprint=fp,
            system=fold[2],
            error=fold[3],
            suppressed=fold[1],
            interval=LOG_FOLD_INTERVAL,
        )

    def flush(self, *, all_folds: bool = False) -> None:
        """Report folded failures: a line per fingerprint, or one line for a wide storm."""
        now = self._k.wall()
        due = [
            (fp, fold)
            for fp, fold in self._log_folds.items()
            if all_folds or now - fold[0] >= LOG_FOLD_INTERVAL
        ]
        storms = [(fp, fold) for fp, fold in due if fold[1]]
        if len(storms) <= STORM_LINES:
            for fp, fold in storms:
                self._log_storm(fp, fold)
        else:
            storms.sort(key=lambda item: item[1][1], reverse=True)
            self._k.log.error(
                "system.error_storm",
                fingerprints=len(storms),
                suppressed=sum(fold[1] for _, fold in storms),
                top=[
                    {"fingerprint": fp, "system": f[2], "error": f[3], "suppressed": f[1]}
                    for fp, f in storms[:STORM_LINES]
                ],
                interval=LOG_FOLD_INTERVAL,
            )
        for fp, _ in due:
            del self._log_folds[fp]
