"""Failure recording: an exception becomes a kept, redacted record and a folded log line.

A tick step's failure costs the tick only ``defer``: a handful of
references stored into a preallocated ring (the slot, the hook, the
exception with its traceback, the tick, the wall time, the health and the
gauges as they were). Fingerprinting, formatting, redaction, grouping, the
sinks (the durable store) and the log line run after the tick, in the
``errors`` chore (first of the post-tick chores), within half the slack to
the next deadline (nine tenths once the ring is half full): after the
first, a record is started only if it is expected to end within it
(``record_cost``, a moving average of what records took), so the chore runs
into the next tick only if one record costs more than the slack; what does
not fit waits for the next gap. A failure that finds
the ring full is counted (``errors.dropped["ring_full"]``) and not kept:
the tick never makes records to make room. The decisions that must happen
in the tick (the restart budget, quarantine, escalation) never wait for a
record (``Recovery.step_failed``). Every synchronous ``record`` settles the
pending ones first, so records keep the order the failures happened in.

Building a record runs plugin code (``__str__``, ``__notes__``...), so the
slot is marked for the watchdog meanwhile. Formatting tracebacks and
writing log lines are the costly parts of an error storm: both are budgeted
(token buckets), and repeats of one fingerprint fold into one storm line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import trio

from .._errors import StepInterrupted, StepTimeout
from ._kernel import Kernel
from ._phase import Phase
from ._safecall import ErrorRecord, TokenBucket, fingerprint, is_a, make_record
from ._schedule import Chore
from ._slots import Slot

__all__ = ["PENDING", "FailureRecorder"]

#: Tick failures waiting for their records at most (the ring is allocated once, a
#: power of two). Past it a failure is counted (``ring_full``), not kept: six ticks
#: of a 10,000 errors/s storm at 60 Hz, so only a loop with no slack for that long
#: (or one tick with more failures than this) loses records.
PENDING = 1024
#: Share of the slack to the next deadline an ``errors`` chore run may spend (the
#: chores after it get the rest).
SETTLE_SLACK = 0.5
#: The share once the ring is half full: records about to be lost come before the
#: later chores' room (the tenth left is the margin to the next deadline).
SETTLE_SLACK_FULL = 0.9
#: Weight of the newest record in ``record_cost``'s moving average: one record that
#: was preempted or ran a collection moves it by an eighth only.
COST_WEIGHT = 1 / 8

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
# What was true when the step failed: (tick, wall time, phase, health, gauges, hang stack).
_Made = tuple[int, float, Phase, str, Mapping[str, float], str | None]


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
        # The pending ring, one preallocated column per field (a failure stores
        # references, it allocates no entry): ``_head`` is the oldest.
        self._slots: list[Slot | None] = [None] * PENDING
        self._hooks: list[str] = [""] * PENDING
        self._excs: list[BaseException | None] = [None] * PENDING
        self._ticks: list[int] = [0] * PENDING
        self._times: list[float] = [0.0] * PENDING
        self._phases: list[Phase] = [Phase.DEVELOPMENT] * PENDING
        self._healths: list[str] = [""] * PENDING
        self._gauges: list[Mapping[str, float] | None] = [None] * PENDING
        self._stacks: list[str | None] = [None] * PENDING
        self._head = 0
        self.pending = 0
        #: Timer seconds a record takes to make (moving average): the next one is
        #: started only if this much is left before the chore's end.
        self.record_cost = 0.0
        #: The post-tick chore that makes the pending records (first of the chores).
        self.chore = Chore("errors", self._settle_chore)

    # ------------------------------------------------------------------ the tick's side

    def defer(self, slot: Slot, hook: str, exc: BaseException) -> None:
        """A tick step failed: keep what its record needs, make the record after the tick.

        The hot path of an error: a few stores into the ring, a copy of the
        gauge table (the record shows the gauges as they were), no plugin
        code, no formatting, no logging. ``slot.failed_tick`` is set now (the
        half-open trial reads it after this tick).
        """
        k = self._k
        if self.pending == PENDING:
            # Making room would cost the tick records' worth of work: count it instead.
            k.errors.dropped["ring_full"] += 1
            slot.failed_tick = k.loop.tick
            if is_a(exc, StepInterrupted):
                slot.hang_stack = None  # its record is not kept: no later record takes it
            return
        i = (self._head + self.pending) & (PENDING - 1)
        self._slots[i] = slot
        self._hooks[i] = hook
        self._excs[i] = exc
        self._ticks[i] = tick = k.loop.tick
        self._times[i] = k.wall()
        self._phases[i] = k.phase
        self._healths[i] = slot.health
        self._gauges[i] = dict(k.gauges) if k.gauges else None
        if slot.hang_stack is not None and is_a(exc, StepInterrupted):
            self._stacks[i], slot.hang_stack = slot.hang_stack, None
        self.pending += 1
        slot.failed_tick = tick
        self.chore.next_due = -math.inf

    def settled(self) -> ErrorRecord:
        """The record of the last failure, made now with every pending one before it.

        For the few who need a record inside the tick: a ``recover(ctx, error)``
        hook, an escalation's reason.
        """
        self.settle()
        record = self._k.last_record
        assert record is not None  # a failure was deferred or recorded before
        return record

    # ------------------------------------------------------------------ after the tick

    def settle(self, until: float = math.inf) -> None:
        """Make, keep and log pending records, oldest first, ending by the timer's ``until``.

        The oldest is made whatever ``until`` says (progress, and the record
        of a lone failure is made right after its tick, as what reads it at
        record time expects: an experiment's arm); the next ones only while
        ``record_cost`` fits before ``until``. The rest stay pending.
        """
        timer = self._k.timer
        made = 0
        while self.pending:
            start = timer()
            if made and start + self.record_cost >= until:
                break
            i = self._head
            slot, exc = self._slots[i], self._excs[i]
            assert slot is not None
            assert exc is not None
            stack, gauges = self._stacks[i], self._gauges[i]
            self._slots[i] = self._excs[i] = self._stacks[i] = self._gauges[i] = None
            self._head = (i + 1) & (PENDING - 1)
            self.pending -= 1
            record = self._keep(
                slot,
                self._hooks[i],
                exc,
                "error",
                tick=self._ticks[i],
                time=self._times[i],
                phase=self._phases[i],
                health=self._healths[i],
                gauges={} if gauges is None else gauges,
                stack=stack,
            )
            self.log(record)
            self.record_cost += (timer() - start - self.record_cost) * COST_WEIGHT
            made += 1
        if not self.pending:
            self.chore.next_due = math.inf

    async def _settle_chore(self, deadline: float) -> None:
        """The ``errors`` chore: make pending records within its share of the slack left.

        ``SETTLE_SLACK`` of it; ``SETTLE_SLACK_FULL`` once the ring is half full,
        when what does not fit now may soon be lost (``ring_full``).
        """
        k = self._k
        slack = deadline + 1.0 / k.rate - trio.current_time()
        share = SETTLE_SLACK_FULL if self.pending * 2 >= PENDING else SETTLE_SLACK
        self.settle(k.timer() + max(0.0, slack) * share)

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
        if self.pending:
            self.settle()  # records keep the order of the failures
        k = self._k
        stack = None
        if is_a(exc, StepInterrupted):
            stack, slot.hang_stack = slot.hang_stack, None
        record = self._keep(
            slot,
            hook,
            exc,
            kind,
            tick=k.loop.tick,
            time=k.wall(),
            phase=k.phase,
            health=slot.health,
            gauges=k.gauges,
            stack=stack,
        )
        if failed:
            slot.failed_tick = k.loop.tick
        return record

    def _keep(
        self,
        slot: Slot,
        hook: str,
        exc: BaseException,
        kind: str,
        *,
        tick: int,
        time: float,
        phase: Phase,
        health: str,
        gauges: Mapping[str, float],
        stack: str | None,
    ) -> ErrorRecord:
        """Make the record (the slot marked for the watchdog meanwhile), keep it, hand it on."""
        k = self._k
        loop = k.loop
        marked = loop.current
        loop.current = slot
        loop.call_seq += 1
        made = (tick, time, phase, health, gauges, stack)
        try:
            record = self._make(slot, hook, exc, kind, made)
        except StepInterrupted:  # landed between make_record's own guards
            record = self._make(
                slot,
                hook,
                StepInterrupted("recording this error hung and was interrupted"),
                kind,
                made,
            )
        finally:
            loop.current = marked
            loop.call_seq += 1
        k.last_record = record
        k.errors.add(record, formatted=record.traceback is not self._reused_tb)
        if self.sinks:
            self._deliver(record)
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

    def _make(
        self, slot: Slot, hook: str, exc: BaseException, kind: str, made: _Made
    ) -> ErrorRecord:
        k = self._k
        tick, now, phase, health, gauges, stack = made
        if is_a(exc, StepInterrupted):
            kind = "interrupted"
        elif is_a(exc, StepTimeout):
            kind = "timeout"
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
            tick=tick,
            system=slot.name,
            hook=hook,
            phase=phase.value,
            gauges=gauges,
            health=health,
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
        ``LOG_BUDGET`` lines (error and storm lines) a second in all: past it,
        a new fingerprint is counted (and reported by the next storm line)
        instead of logged, and a storm line is left to ``flush``.
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
            if not self._log_tokens.take(now):
                # No line to spare (a storm of many fingerprints): the fold goes on
                # counting, and the housekeeper's flush reports it (in one line
                # for a wide storm), so storm lines stay within LOG_BUDGET too.
                folds[record.fingerprint] = (fold[0], fold[1] + 1, fold[2], fold[3])
                return
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
        """Report folded failures: a line per fingerprint, or one line for a wide storm.

        At the end of a run (``all_folds``) the pending records are made
        first; the housekeeper's flush leaves them to the ``errors`` chore
        (a backlog made at once would stall the next tick).
        """
        if all_folds:
            self.settle()
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
