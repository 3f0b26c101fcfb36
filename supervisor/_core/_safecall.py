"""SafeCall: error records, the error log, and bounded recovery per system.

Every hook call goes through the supervisor's SafeCall path. A failure
becomes a frozen ``ErrorRecord``; the ``ErrorLog`` keeps a ring of the last
``history`` records, counts per system, and groups by fingerprint. Each
system has a ``Breaker``: a restart budget of ``max_restarts`` within a
sliding ``window_seconds`` on the supervisor's clock (the intensity/period of
an Erlang/OTP supervisor); past it the system is quarantined, with a capped
exponential backoff before one half-open retry.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import itertools
import math
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import attrs
import trio

from ._config_sections import RecoveryConfig
from ._redact import Redactor

__all__ = [
    "Breaker",
    "BreakerState",
    "ErrorGroup",
    "ErrorLog",
    "ErrorRecord",
    "TokenBucket",
    "bounded",
    "is_a",
    "is_runtime_cancel",
    "make_record",
    "redact_kept",
    "safe_message",
    "safe_type_name",
]

#: Longest traceback text kept on a record (characters); the innermost frames are kept.
TRACEBACK_CHARS = 8000
#: Longest message kept on a record (characters).
MESSAGE_CHARS = 2000
#: Longest exception type name kept (characters).
TYPE_NAME_CHARS = 200
#: Most characters of a message redacted for one record: the redactor's window for
#: MESSAGE_CHARS (``Redactor.text_within`` cuts there first, and drops the edge).
SCAN_CHARS = max(2 * MESSAGE_CHARS, MESSAGE_CHARS + 1024)
#: What marks a cut: at the end of a message, at the start of a traceback.
CUT = "..."
CUT_TAIL = "...\n"


#: ``type.__mro__`` and ``BaseExceptionGroup.exceptions`` themselves: no class or
#: metaclass of a plugin can override what these read.
_MRO = type.__dict__["__mro__"].__get__
_GROUP_MEMBERS = BaseExceptionGroup.__dict__["exceptions"].__get__


def is_a(exc: BaseException, cls: type) -> bool:
    """``isinstance(exc, cls)`` that runs no code of ``exc``'s class.

    ``isinstance`` reads ``exc.__class__`` (a property a plugin may define)
    when the plain check fails, and an ABC's check hashes the class (a
    metaclass may define ``__hash__``): either could raise inside SafeCall's
    own handler. This compares the classes of the MRO by identity.
    """
    # A plain loop, not any(genexpr): about half the time on the failure path (bench/storm.py).
    for c in _MRO(type(exc)):  # noqa: SIM110
        if c is cls:
            return True
    return False


def _holds_cancelled(exc: BaseException, depth: int = 0) -> bool:
    if is_a(exc, trio.Cancelled):
        return True
    if depth < 32 and is_a(exc, BaseExceptionGroup):
        return any(_holds_cancelled(e, depth + 1) for e in _GROUP_MEMBERS(exc))
    return False


def is_runtime_cancel(exc: BaseException) -> bool:
    """Whether ``exc`` is the runtime's own cancellation, which SafeCall must let through.

    A ``trio.Cancelled`` (or a group holding one) belongs to the runtime only
    while an enclosing cancel scope is actually cancelled (the effective
    deadline is then ``-inf``): that is a forced stop or our own deadline,
    and the scope that was cancelled catches it. A ``Cancelled`` leaking out
    of a plugin with no cancelled scope around it (one it kept from its own
    scope and raised again) would otherwise crash the run: it is the
    plugin's failure. Only called on the failure path.
    """
    if not _holds_cancelled(exc):
        return False
    try:
        return trio.current_effective_deadline() == -math.inf
    except RuntimeError:  # outside trio: nobody to hand it to
        return False


def _plain(text: object, limit: int | None = None) -> str | None:
    """``text`` as an exact ``str`` (cut to ``limit``), never running its methods; else None."""
    if not isinstance(text, str):
        return None
    # str.__str__ copies a str subclass into a plain str without calling its overrides.
    text = str.__str__(text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def bounded(text: str, limit: int, redactor: Redactor | None = None, *, tail: bool = False) -> str:
    """``text`` redacted (when ``redactor`` is on), then cut to ``limit`` characters.

    Redaction comes first (``Redactor.text_within``): a secret that straddles
    the cut would otherwise lose its tail, no longer match its pattern, and
    leak its head. Without redaction, a plain cut marked with ``CUT`` (at the
    end) or ``CUT_TAIL`` (at the start, ``tail``: a traceback keeps its
    innermost frames); ``redact_record`` knows that mark when the text is
    redacted later.
    """
    if redactor is not None and redactor.enabled:
        if tail:
            return redactor.text_within(text, limit, keep="tail", marker=CUT_TAIL)
        return redactor.text_within(text, limit, marker=CUT)
    if len(text) <= limit:
        return text
    return CUT_TAIL + text[-limit:] if tail else text[:limit] + CUT


def redact_kept(text: str, limit: int, redactor: Redactor, *, tail: bool = False) -> str:
    """Redact ``text`` kept while redaction was off: a secret its cut split goes with the edge."""
    marker = CUT_TAIL if tail else CUT
    was_cut = len(text) == limit + len(marker) and (
        text.startswith(marker) if tail else text.endswith(marker)
    )
    if not was_cut:
        return redactor.text(text)
    return redactor.text_after_cut(text, keep="tail" if tail else "head", marker=marker)


#: ``type.__qualname__`` itself: a metaclass cannot override it.
_QUALNAME = type.__dict__["__qualname__"].__get__


def safe_type_name(exc: object) -> str:
    """The qualified name of ``exc``'s type (any object's), without trusting a metaclass."""
    try:
        name = _QUALNAME(type(exc))
    except BaseException:
        return "?"
    if type(name) is str and len(name) <= TYPE_NAME_CHARS:
        return name or "?"
    return _plain(name, TYPE_NAME_CHARS) or "?"


def _message(exc: BaseException) -> str | None:
    try:
        text = str(exc)
    except BaseException:  # a failing (or interrupted) __str__ is the plugin's, never ours
        return None
    return text if type(text) is str else _plain(text)


def safe_message(exc: BaseException, redactor: Redactor | None = None) -> str:
    """``str(exc)`` redacted and bounded to ``MESSAGE_CHARS``; ``<unprintable T>`` if it fails.

    ``__str__`` is plugin code: it may raise (anything, ``KeyboardInterrupt``
    included), return a non-string, or return megabytes. None of that may
    escape into the supervisor (``tests/test_faults_plugins.py``).
    """
    text = _message(exc)
    if text is None:
        return f"<unprintable {safe_type_name(exc)}>"
    return bounded(text, MESSAGE_CHARS, redactor)


def _frames_only(exc: BaseException, limit: int, message: str) -> str:
    """A traceback of ``exc`` that never calls its ``__str__`` (which already failed once)."""
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__, limit=-limit if limit else 0))
    except BaseException:  # a hostile __traceback__ property
        frames = ""
    return f"Traceback (most recent call last):\n{frames}{safe_type_name(exc)}: {message}\n"


def safe_traceback(exc: BaseException, limit: int) -> str:
    """The formatted traceback of ``exc`` (whole: ``bounded`` cuts it); a placeholder on failure.

    ``traceback.format_exception`` guards ``str(exc)`` itself, but also reads
    ``__notes__``, causes and contexts, all of which a hostile exception controls.
    """
    try:
        return "".join(traceback.format_exception(exc, limit=-limit if limit else 0))
    except BaseException:
        return f"<traceback of {safe_type_name(exc)} could not be formatted>"


@attrs.frozen(kw_only=True)
class ErrorRecord:
    """One failure of one hook call, with the context an operator needs."""

    id: int
    time: float  # wall-clock seconds (time.time())
    tick: int
    system: str
    hook: str
    phase: str
    exc_type: str
    message: str
    traceback: str
    fingerprint: str
    gauges: Mapping[str, float]
    health: str
    kind: str = "error"  # "error" | "timeout" | "interrupted" | "gauge"
    stack: str | None = None  # the blocking stack the hang watchdog saw, if any

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON- and msgpack-ready mapping."""
        d = attrs.asdict(self)
        d["gauges"] = dict(self.gauges)
        return d


def _innermost(tb: TracebackType | None) -> tuple[str, str]:
    frame_desc = ("?", "?")
    while tb is not None:
        code = tb.tb_frame.f_code
        frame_desc = (code.co_filename, code.co_qualname)
        tb = tb.tb_next
    return frame_desc


#: Fingerprints already computed, by (exception type, file, function): an error storm
#: hashes each failure site once. Bounded: emptied when it reaches this many.
_FINGERPRINTS: dict[tuple[type, str, str], str] = {}
FINGERPRINT_CACHE = 4096


def fingerprint(exc: BaseException) -> str:
    """Identity of a failure: the exception type and the innermost frame.

    The frame is its file and qualified function name (so ``Economy.tick``
    and ``Tycoon.tick`` differ); the line number is left out on purpose, so
    an edit above the failing line does not split one failure into two
    groups. Two instances of one class failing alike share a fingerprint;
    the error log still groups them per system.
    """
    kind = type(exc)
    try:
        filename, func = _innermost(exc.__traceback__)
    except BaseException:  # a hostile __traceback__ property
        filename, func = "?", "?"
    # Only plain classes and names are cache keys: hashing runs no code of theirs.
    plain = type(kind) is type and type(filename) is str and type(func) is str
    site = (kind, filename, func)
    if plain and (known := _FINGERPRINTS.get(site)) is not None:
        return known
    try:
        module = _plain(kind.__module__, TYPE_NAME_CHARS) or "?"
    except BaseException:  # a hostile __module__ property on a metaclass
        module = "?"
    key = f"{module}.{safe_type_name(exc)}|{_plain(filename) or '?'}|{_plain(func) or '?'}"
    value = hashlib.blake2b(key.encode(errors="replace"), digest_size=6).hexdigest()
    if plain:
        if len(_FINGERPRINTS) >= FINGERPRINT_CACHE:
            _FINGERPRINTS.clear()
        _FINGERPRINTS[site] = value
    return value


_ids = itertools.count(1)


def make_record(
    exc: BaseException,
    *,
    time: float,
    tick: int,
    system: str,
    hook: str,
    phase: str,
    gauges: Mapping[str, float],
    health: str,
    traceback_limit: int,
    kind: str = "error",
    stack: str | None = None,
    fingerprint_value: str | None = None,
    traceback_text: str | None = None,
    redactor: Redactor | None = None,
    checkpoint: Callable[[], None] | None = None,
    redact: Callable[[str], str] | None = None,
) -> ErrorRecord:
    """Build the frozen record of ``exc`` (the traceback bounded in frames and characters).

    Never runs plugin-controlled ``__str__``/``__repr__`` unguarded (see
    ``safe_message``). ``traceback_text`` reuses an already formatted (and
    already redacted) traceback: formatting is the costly part of a record,
    and an error storm reuses its group's. ``redactor``, when given and on,
    is applied once here to every free text of the record (before any cut),
    so no surface needs to redact it again. ``redact`` (a ``Redactor.text``)
    is the older spelling of ``redactor``. ``checkpoint`` is called before each call into plugin
    code (the supervisor starts the watchdog's clock afresh there, so each one
    gets its own ``kill_timeout``).
    """
    if redactor is None and isinstance(owner := getattr(redact, "__self__", None), Redactor):
        redactor = owner
    if redactor is not None and not redactor.enabled:
        redactor = None
    text = _message(exc)
    if text is None:
        message = f"<unprintable {safe_type_name(exc)}>"
    elif redactor is None and len(text) <= MESSAGE_CHARS:
        message = text  # the common case of an error storm, kept cheap
    else:
        message = bounded(text, MESSAGE_CHARS, redactor)
    if traceback_text is not None:
        tb = traceback_text
    elif text is None:
        # Its __str__ failed or hung once: formatting would call it again.
        tb = _frames_only(exc, traceback_limit, message)
        tb = bounded(tb, TRACEBACK_CHARS, redactor, tail=True)
    else:
        if checkpoint is not None:
            checkpoint()
        tb = safe_traceback(exc, traceback_limit)
        if len(text) > MESSAGE_CHARS:
            # The traceback ends with the message: a huge one, once, as the record shows it.
            tb = tb.replace(text, message)
        tb = bounded(tb, TRACEBACK_CHARS, redactor, tail=True)
    exc_type = safe_type_name(exc)
    if redactor is not None:
        exc_type = redactor.text(exc_type)
        if stack is not None:
            stack = redactor.text(stack)
    return ErrorRecord(
        id=next(_ids),
        time=time,
        tick=tick,
        system=system,
        hook=hook,
        phase=phase,
        exc_type=exc_type,
        message=message,
        traceback=tb,
        fingerprint=fingerprint_value or fingerprint(exc),
        gauges=dict(gauges),
        health=health,
        kind=kind,
        stack=stack,
    )


def redact_record(record: ErrorRecord, redactor: Redactor) -> ErrorRecord:
    """``record`` (made while redaction was off) with every free text redacted, gauges too."""
    redact = redactor.text
    message = redact_kept(record.message, MESSAGE_CHARS, redactor)
    # The traceback ends with the message as the record had it (cut, for a long one):
    # that copy goes the same way before the rest is redacted.
    traceback = record.traceback
    if record.message and message != record.message:
        traceback = traceback.replace(record.message, message)
    return attrs.evolve(
        record,
        message=message,
        exc_type=redact(record.exc_type),
        traceback=redact_kept(traceback, TRACEBACK_CHARS, redactor, tail=True),
        stack=None if record.stack is None else redact(record.stack),
        gauges={redact(k): v for k, v in record.gauges.items()},
    )


@attrs.frozen(kw_only=True)
class ErrorGroup:
    """Every record with one fingerprint: first and last seen, and how many."""

    fingerprint: str
    system: str
    exc_type: str
    message: str  # of the latest occurrence
    count: int
    first_seen: float
    last_seen: float
    first_tick: int
    last_tick: int

    def as_dict(self) -> dict[str, Any]:
        """The group as a JSON-ready mapping."""
        return attrs.asdict(self)


@attrs.define(eq=False)
class _GroupState:
    first: ErrorRecord
    last: ErrorRecord
    count: int = 1


class ErrorLog:
    """A ring of the last ``history`` records, plus counts and groups that never forget.

    Groups are bounded too (``max_groups``): past it the least recently seen
    group is dropped, so a storm of distinct fingerprints cannot grow memory.
    """

    def __init__(self, history: int = 100, max_groups: int = 1000) -> None:
        self.records: collections.deque[ErrorRecord] = collections.deque(maxlen=history)
        self.counts: collections.Counter[str] = collections.Counter()
        # Keyed by (system, fingerprint): one failure site in two systems is two groups.
        self._groups: collections.OrderedDict[tuple[str, str], _GroupState] = (
            collections.OrderedDict()
        )
        # Fingerprint -> (when formatted, traceback), shared by every system.
        self._formatted: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._max_groups = max_groups
        self.total = 0
        #: Work skipped to keep recording bounded, by reason (exported as a metric).
        self.dropped: collections.Counter[str] = collections.Counter()

    def add(self, record: ErrorRecord, *, formatted: bool = True) -> None:
        """Keep ``record``: in the ring, in its system's count, in its group.

        ``formatted`` says its traceback was freshly formatted (and may be
        reused by ``recent_traceback``).
        """
        self.records.append(record)
        self.counts[record.system] += 1
        self.total += 1
        key = (record.system, record.fingerprint)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = _GroupState(first=record, last=record)
            if len(self._groups) > self._max_groups:
                self._groups.popitem(last=False)
                self.dropped["group_evicted"] += 1
        else:
            group.last = record
            group.count += 1
            self._groups.move_to_end(key)
        if formatted:
            self._formatted[record.fingerprint] = (record.time, record.traceback)
            self._formatted.move_to_end(record.fingerprint)
            if len(self._formatted) > self._max_groups:
                self._formatted.popitem(last=False)

    def redact(self, redactor: Redactor) -> None:
        """Redact everything kept, once: called when the supervisor enters a redacting phase.

        Records made from then on are redacted when made (``make_record``).
        """
        done: dict[int, ErrorRecord] = {}

        def fix(record: ErrorRecord) -> ErrorRecord:
            new = done.get(record.id)
            if new is None:
                new = done[record.id] = redact_record(record, redactor)
            return new

        self.records = collections.deque(map(fix, self.records), maxlen=self.records.maxlen)
        for group in self._groups.values():
            group.first, group.last = fix(group.first), fix(group.last)
        for fp, (at, tb) in self._formatted.items():
            self._formatted[fp] = (at, redact_kept(tb, TRACEBACK_CHARS, redactor, tail=True))

    def recent_traceback(self, fp: str, now: float, within: float) -> str | None:
        """The traceback formatted for fingerprint ``fp`` less than ``within`` seconds ago."""
        entry = self._formatted.get(fp)
        if entry is None or now - entry[0] >= within:
            return None
        return entry[1]

    def recent(self, limit: int | None = None, system: str | None = None) -> list[ErrorRecord]:
        """The newest records first, optionally of one system only."""
        out = [r for r in reversed(self.records) if system is None or r.system == system]
        return out if limit is None else out[:limit]

    def groups(self, system: str | None = None) -> list[ErrorGroup]:
        """The groups, most recently seen first."""
        out = []
        for (_, fp), g in reversed(self._groups.items()):
            if system is not None and g.last.system != system:
                continue
            out.append(
                ErrorGroup(
                    fingerprint=fp,
                    system=g.last.system,
                    exc_type=g.last.exc_type,
                    message=g.last.message,
                    count=g.count,
                    first_seen=g.first.time,
                    last_seen=g.last.time,
                    first_tick=g.first.tick,
                    last_tick=g.last.tick,
                )
            )
        return out


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` at once: bounded work, spread evenly.

    Used for the costly parts of an error storm (formatting tracebacks,
    writing log lines), so that a storm's cost is the same on every tick
    rather than a burst on one.
    """

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Take a token at time ``now`` (seconds); False when none is left."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class BreakerState(enum.Enum):
    """Where a system stands in its recovery."""

    CLOSED = "running"  # ticked normally
    QUARANTINED = "quarantined"  # not ticked until its backoff ends
    HALF_OPEN = "retrying"  # ticked once more; one success closes, one failure re-opens


@attrs.define(eq=False, kw_only=True)
class Breaker:
    """The restart budget of one system (a sliding window on the supervisor's clock).

    ``failure(now)`` returns True while the budget holds (the system may be
    recovered and ticked again) and False when it is exhausted (quarantine).
    ``max_restarts`` failures within ``window`` pass; one more quarantines.
    """

    max_restarts: int
    window: float
    backoff_initial: float
    backoff_max: float
    state: BreakerState = BreakerState.CLOSED
    failures: collections.deque[float] = attrs.field(factory=collections.deque)
    quarantines: int = 0
    retry_at: float = 0.0

    @classmethod
    def of(cls, recovery: RecoveryConfig) -> Breaker:
        """A fresh breaker with the budget of ``recovery`` (the one place breakers are built)."""
        breaker = cls(max_restarts=0, window=0.0, backoff_initial=0.0, backoff_max=0.0)
        breaker.configure(recovery)
        return breaker

    def configure(self, recovery: RecoveryConfig) -> None:
        """Take the budget of ``recovery`` (a phase overlay may change it); the state is kept."""
        self.max_restarts = recovery.max_restarts
        self.window = recovery.window_seconds
        self.backoff_initial = recovery.backoff_initial
        self.backoff_max = recovery.backoff_max

    def failure(self, now: float) -> bool:
        """Count a failure at ``now``; return whether the budget still holds."""
        if self.state is BreakerState.HALF_OPEN:
            return False
        failures = self.failures
        failures.append(now)
        horizon = now - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return len(failures) <= self.max_restarts

    def quarantine(self, now: float) -> float:
        """Open the breaker; return when the half-open retry is due."""
        self.quarantines += 1
        backoff = min(self.backoff_initial * 2 ** (self.quarantines - 1), self.backoff_max)
        self.state = BreakerState.QUARANTINED
        self.retry_at = now + backoff
        return self.retry_at

    def half_open(self) -> None:
        """The backoff is over: allow one trial step."""
        self.state = BreakerState.HALF_OPEN

    def success(self) -> None:
        """A trial step passed: close, and forget the past failures and backoff."""
        self.state = BreakerState.CLOSED
        self.failures.clear()
        self.quarantines = 0
