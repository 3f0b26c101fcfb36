"""Redaction of personal data and secrets before anything leaves the process.

Every log event, error record (message, traceback, captured values), snapshot of
the error history, API answer and audit entry goes through a :class:`Redactor`
first. A redacted item is replaced by a typed placeholder so an operator still
sees *what kind* of thing was there:

==================  ==============================================================
placeholder         replaces
==================  ==============================================================
``[email]``         e-mail addresses (``local@domain.tld``; a dot in the domain is
                    required, so ``root@localhost`` is kept), internationalised
                    ones too (``josé.garcía@exämple.com``, ``xn--`` domains),
                    quoted local parts (``"john doe"@example.com``) and the
                    URL-encoded form (``bob%40example.com``)
``[ip]``            IPv4 dotted quads and IPv6 addresses (full, ``::``-compressed,
                    IPv4-mapped, with ``%zone``); port / prefix suffixes are kept
``[token]``         ``Bearer xxx`` credentials (the word ``Bearer`` is kept), API
                    keys of known shapes (``sk_live_``/``sk_test_``/``pk_``/``rk_``,
                    ``sk-``, ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``,
                    ``github_pat_``, ``AKIA``/``ASIA``, ``xox?-``, ``xapp-``,
                    ``AIza``, ``glpat-``, ``npm_``, JWTs), and long hex (16+) or
                    base64-ish (20+, with a digit) values after a ``...key=`` /
                    ``...key:``
``[card]``          13-19 digit card-like numbers, plain or grouped by spaces or
                    dashes the way cards are printed (4-4-4-4[-3], 4-6-5, 4-6-4),
                    whose first digit is 2-6 and which pass the Luhn check
``[iban]``          IBANs: a known country code in capitals, that country's
                    length, the ISO 13616 mod-97 check; compact or grouped by
                    spaces
``[phone]``         ``+`` and 8-15 digits in groups (E.164: ``+44 20 7946 0958``,
                    ``+1 (415) 555-2671``, ``+49 (0)30 123456``); North American
                    ``(415) 555-2671``, ``415-555-2671``, ``415.555.2671``;
                    national numbers with trunk prefix 0 and 10-12 digits in
                    groups of 2+ (``020 7946 0958``, ``06.12.34.56.78``); ``00``
                    international prefixes
``[ssn]``           US social security numbers ``123-45-6789`` (not area 000,
                    666 or 9xx, group 00, serial 0000)
``[private key]``   PEM private key blocks (RSA, EC, PKCS#8, OpenSSH, encrypted,
                    PGP), BEGIN to END, as lines or with ``\\n`` escapes as a
                    repr shows them; without an END line, the header and the
                    base64 lines after it
``[redacted]``      the value under a sensitive key: in mappings the whole value;
                    in text ``key=value`` / ``key: value`` / ``"key": "value"``;
                    a ``Cookie:`` header line; the ``user:pass@`` of a URL (the
                    password may hold ``@``, ``/``, ``:``: it runs to the last
                    ``@`` before the host)
``[bytes]``         any ``bytes`` / ``bytearray`` / ``memoryview`` value
==================  ==============================================================

Sensitive keys are :data:`._redact_shapes.DEFAULT_SENSITIVE_KEYS` plus ``Redactor.extra_keys``.
Keys are compared case-insensitively after mapping ``-``, ``.`` and spaces to
``_``, so ``X-Auth-Token``, ``db_password`` and ``ApiKey`` all count.

Decisions (``tests/test_redact.py`` and the shared corpus
``tests/redaction_corpus.py`` pin each of them):

* Mapping keys match by *substring*, as configured: ``session_count`` and
  ``tokenizer`` as mapping keys are redacted too. Structured data errs on the
  safe side. ``None`` and ``""`` under a sensitive key are kept, since "the
  password is empty" is a common configuration fault and reveals nothing.
* In free text a key is an identifier (``[\\w.-]+``) containing a sensitive
  word that is *not* followed by another lower-case letter (an ``s``/``id``/
  ``ids`` suffix is allowed), then ``=`` or ``:``. So ``db_password=x``,
  ``authToken: x``, ``session_id=x`` and ``tokens: 12`` are redacted, while
  ``tokenizer: loaded`` and ``passwordless=true`` are not. A sensitive word
  followed only by a space (``password hunter2``) is not detected.
* Dotted quads are always IPs, so ``version 1.2.3.4`` becomes ``version [ip]``;
  ``v1.2.3.4``, ``1.2.3``, ``1.2.3.4.5`` and ``10:00:00`` are kept. The
  loopback (``127.0.0.1:9100`` -> ``[ip]:9100``, ``::1``) is redacted like any
  address: the redactor cannot tell whose address a message holds.
* Phone numbers are the shape most easily confused with the numbers logs are
  full of, so only distinctive layouts count: a leading ``+``; brackets or
  ``-``/``.`` in the North American 3-3-4 layout (``512 256 1024`` with spaces
  is a list of sizes); a trunk ``0`` followed by a non-zero digit and 10-12
  digits in all (``frame 007 008 009`` is kept). A bare run of digits is
  never a phone number. Timestamps, dates, durations, decimals, versions,
  UUIDs and ports never form one: a group that touches a letter, ``.5``,
  ``:30`` or ``-1`` belongs to something else.
* SSNs only with dashes (``123-45-6789``); nine bare digits are not one.
* IBANs need capitals (ISO 13616's form): a lower-case one is not detected.
* ``_`` is a boundary for cards, keys and IBANs: ``gauge_4111111111111111``
  becomes ``gauge_[card]`` (a secret glued into a snake_case name, such as a
  gauge name, is found); a letter or digit is not (``task_live_x`` is kept).
* Kept on purpose: three-part versions, tick counts, ISO timestamps, durations
  (``0.25s``), player ids (``player-1234``), numbers failing Luhn, numbers whose
  first digit is 0, 1 or 7-9 (epoch-millisecond timestamps start with ``1`` and
  would otherwise pass Luhn one time in ten), git commit ids of any length,
  UUIDs (they identify records, not people), and words like ``tokenizer`` in
  prose.
* Integers (not ``bool``) are checked as card numbers too, because a card number
  captured as a local variable is an ``int``. Other numbers, ``None``, enums,
  dates/times, ``Decimal``, ``Fraction`` and ``UUID`` are kept as they are.
* ``bytes`` become ``[bytes]``: binary payloads (msgpack snapshots, packets) can
  hold anything, and patterns cannot be trusted on a lossy decode.
* attrs and dataclass instances become plain dicts of their (redacted) fields;
  any other object becomes the redacted ``repr()`` string. Both change the type:
  an unknown object's repr is the only form in which it can be checked, and
  keeping the original would let a later ``str()`` leak it.
* Mappings become ``dict``, lists ``list``, tuples (named ones too) ``tuple``,
  sets ``set`` and frozensets ``frozenset``, always new objects. Keys are
  redacted like values; if two keys redact to the same string (two e-mails),
  the later one gets a ``#2``, ``#3`` suffix instead of overwriting.
* Nesting deeper than ``max_depth`` (cycles included) raises
  :class:`RedactionError`. :meth:`Redactor.record` and the structlog processor
  fail *closed*: they drop the record and count it in ``Redactor.dropped``
  rather than emit something half-redacted.
* :meth:`Redactor.text` is idempotent: redacting twice gives the same string
  as redacting once (placeholders never match any pattern).
* Text as a ``repr`` shows it is read like the text itself: an escaped
  newline or tab (the two characters ``\\n``) separates like a real one, and
  a value quoted with escaped quotes (``secret: \\'x\\'``, a ``KeyError``'s
  message) is still a quoted value.
* Cut *after* redacting (:meth:`Redactor.text_within`): cutting first can
  split a secret so that no rule knows it any more, and half of it would be
  kept.

Place :meth:`Redactor.structlog_processor` after ``format_exc_info`` /
``dict_tracebacks`` (so tracebacks are strings by then) and after anything
that needs live objects in the event dict; :func:`supervisor.configure_logging`
does (exceptions, then redaction, then level, timestamp and the renderer).

This is pattern matching: it catches the listed shapes, not every possible
secret. A secret with no recognisable shape, outside a sensitive key, passes.

Timing of :meth:`Redactor.text` per 200-250 character line: ``python -m
bench.redact`` (``timeit``, best of 5 runs of 20,000 calls; CPython 3.11 on the
shared 2-core dev box at a load average of 3-4 from other jobs, so the range
over several runs is given). Before / after the shapes added for issue 8,
both measured in the same process::

    prose, nothing to redact (fast path)                1.3-1.7 ->  1.5-1.7 us
    event line full of numbers, nothing found           6.4-8.2 -> 12-18 us
    line with one e-mail (non-ASCII: missed before)     3.6-4.5 ->  6.3-7.8 us
    line with one phone number (missed before)          5.4-5.9 ->  7.4-8.5 us
    line with one ``session_id=...``                   10.1-12.9 -> 13.3-19.8 us
    line with one IBAN (missed before)                  7.2-10.3 -> 12-16 us
    any string, enabled=False                                     0.04 us

A whole log event (eight fields, ``system.error``) through
:func:`supervisor.configure_logging` into memory: JSON 6.7-8.8 us without
redaction, 22-32 us with it (31 us before, when every mapping key was
normalised and checked on every event; now the verdict is cached for keys
nothing was found in).

The fast path is one character-class search plus a few ``in`` tests; in the
slow path each rule runs only behind a cheap necessary condition (a character,
a word, a short gate pattern), so a line pays for the rules it might match.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import sys
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import Any, Final, Literal

import attrs
import structlog

from ._redact_numbers import redact_int, redact_numbers
from ._redact_shapes import (
    BYTES,
    PLACEHOLDERS,
    REDACTED,
    TRIGGER_CHARS,
    convert_extra_keys,
    key_words,
    might_hold_prefix,
    normalise_key,
    redact_secrets,
    sensitive_key,
)

__all__ = ["RedactionError", "Redactor"]

# Scalars that cannot carry free text (or whose text is code, like enum names).
# Enum comes before str/int in the dispatch because StrEnum and IntEnum exist.
_INERT: Final = (
    bool,
    float,
    complex,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    enum.Enum,
)

_STRUCTLOG_META: Final = ("_record", "_from_structlog")


def _exact_number(obj: object) -> bool:
    """A ``Decimal`` or a ``Fraction``: inert like the scalars of ``_INERT``.

    Checked through ``sys.modules`` rather than imported: an instance exists
    only once a program imported ``decimal`` or ``fractions``, and a run that
    never does is spared their ~0.4 MB (``bench/run_rss.py``).
    """
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return True
    fractions = sys.modules.get("fractions")
    return fractions is not None and isinstance(obj, fractions.Fraction)


# A repr (a KeyError's message, a captured value) or JSON inside a string
# writes a newline as the two characters `\n`: the `n` would then glue itself
# to the next line's first word (`\n4111...` is no card, `\nbob@x.org` an
# address with local part `nbob`). While the rules run, each such escape is
# one private-use character that no rule takes as part of anything, and is
# put back after (only when the text holds none of them already).
_ESCAPES: Final = (("\\n", "\ue000"), ("\\r", "\ue001"), ("\\t", "\ue002"))


# `Redactor.text_within`: how much of an over-long text is redacted (a window
# of at least this many times the limit), and how many redacted characters at
# the window's cut edge are dropped (a secret the window split is no longer
# recognisable; none of the shapes is longer once its header is gone).
_WINDOW_FACTOR: Final = 2
_CUT_GUARD: Final = 256
_LONGEST_PLACEHOLDER: Final = max(map(len, PLACEHOLDERS))


class RedactionError(RuntimeError):
    """A value could not be redacted safely.

    Raised by :meth:`Redactor.value` when a structure nests deeper than
    ``Redactor.max_depth`` (which includes reference cycles), and when
    inspecting a value fails (its ``__repr__`` raises, iterating it raises,
    ...). In the second case the message names only the types involved, never
    the original error text, which might hold the very data being redacted.

    :meth:`Redactor.record` and :meth:`Redactor.structlog_processor` never let
    it escape: they drop the record instead (fail closed).
    """


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def _masked(v: object) -> object:
    if v is None or (isinstance(v, str) and not v):
        return v
    return REDACTED


def _unique_key(out: Mapping[object, object], key: object) -> object:
    n = 2
    while (candidate := f"{key}#{n}") in out:
        n += 1
    return candidate


@attrs.define(eq=False)
class Redactor:
    """Redacts personal data and secrets from strings and structures.

    Attributes:
        enabled: When False, every method returns its input unchanged.
        extra_keys: More sensitive key names (from configuration), added to
            :data:`._redact_shapes.DEFAULT_SENSITIVE_KEYS`. Normalised on assignment.
        dropped: Records dropped by the fail-closed paths (:meth:`record` and
            the structlog processor).
        max_depth: Deepest container nesting :meth:`value` accepts.
    """

    enabled: bool = True
    extra_keys: tuple[str, ...] = attrs.field(default=(), converter=convert_extra_keys)
    dropped: int = 0
    max_depth: int = attrs.field(default=32, validator=_positive)

    def text(self, s: str) -> str:
        """Redact one string.

        Args:
            s: Any text: a message, a formatted traceback, a header line.

        Returns:
            ``s`` itself when nothing matched (or when disabled), otherwise a
            new string with placeholders. Never raises on any ``str``.
        """
        if not self.enabled or (
            TRIGGER_CHARS.search(s) is None and not might_hold_prefix(s) and "PRIVATE KEY" not in s
        ):
            return s
        return self._text(s)

    def _text(self, s: str) -> str:
        # Rule order matters for idempotence: a later rule's placeholder must
        # never complete an earlier rule's match. Secrets (PEM blocks, keys,
        # credentials) and addresses go before numbers (IBANs, phones, IPs,
        # cards): `password=4111...` is a password, not a card.
        if "\\" not in s or "\ue000" in s or "\ue001" in s or "\ue002" in s:
            return redact_numbers(redact_secrets(s, self.extra_keys))
        for escape, stand_in in _ESCAPES:
            s = s.replace(escape, stand_in)
        s = redact_numbers(redact_secrets(s, self.extra_keys))
        for escape, stand_in in _ESCAPES:
            s = s.replace(stand_in, escape)
        return s

    def text_within(
        self,
        s: str,
        limit: int,
        *,
        keep: Literal["head", "tail"] = "head",
        marker: str = "...",
    ) -> str:
        """Redact ``s`` and bound it to ``limit`` characters: redaction first, then the cut.

        Cutting first can split a secret so that no rule knows it any more
        (``straddle.victim@exa`` is no address, ``DE89 3704 00`` no IBAN) and
        half of it is kept. Here the kept side is redacted whole, within a
        window of ``2 * limit`` characters (at least ``limit + 1024``), so a
        megabyte message costs no more than the window; when the window itself
        cut ``s``, the last 256 redacted characters at that edge are dropped.
        A placeholder split by the final cut is dropped whole.

        Args:
            s: The text, of any length.
            limit: Most characters kept (the marker comes on top).
            keep: ``"head"`` (messages) or ``"tail"`` (tracebacks: the
                innermost frames and the error line are at the end).
            marker: Added on the cut side when anything was cut.

        Returns:
            The redacted text, at most ``limit + len(marker)`` characters.
        """
        if len(s) <= limit:
            return self.text(s)
        window = max(limit * _WINDOW_FACTOR, limit + 1024)
        if keep == "head":
            out = self.text(s[:window])
            if len(s) > window:
                out = out[: max(0, len(out) - _CUT_GUARD)]
            if len(out) > limit:
                out = out[:limit]
                bracket = out.rfind("[", max(0, limit - _LONGEST_PLACEHOLDER))
                if bracket >= 0 and "]" not in out[bracket:]:
                    out = out[:bracket]
            return out + marker
        out = self.text(s[-window:])
        if len(s) > window:
            out = out[_CUT_GUARD:]
        if len(out) > limit:
            out = out[-limit:]
            bracket = out.find("]", 0, _LONGEST_PLACEHOLDER)
            if bracket >= 0 and "[" not in out[:bracket]:
                out = out[bracket + 1 :]
        return marker + out

    def text_after_cut(
        self, s: str, *, keep: Literal["head", "tail"] = "head", marker: str = "..."
    ) -> str:
        """Redact a text that was cut *before* redaction (kept while redaction was off).

        A secret the old cut split is no longer recognisable, so the 256
        characters at the cut edge go (the same guard as :meth:`text_within`)
        before the rest is redacted. Call it only for text that was cut: the
        caller knows (a message at its limit with ``marker`` at the end).

        Args:
            s: The cut text, ``marker`` included.
            keep: Which side the cut kept: ``"head"`` (the marker ends ``s``)
                or ``"tail"`` (the marker starts it).
            marker: The cut's marker.

        Returns:
            The redacted text with its marker; ``text(s)`` if the marker is
            not where ``keep`` says.
        """
        if keep == "head" and s.endswith(marker):
            body = s[: len(s) - len(marker)]
            return self.text(body[: max(0, len(body) - _CUT_GUARD)]) + marker
        if keep == "tail" and s.startswith(marker):
            return marker + self.text(s[len(marker) + _CUT_GUARD :])
        return self.text(s)

    def value(self, obj: object) -> object:
        """Redact a value recursively, building new containers.

        Strings go through :meth:`text`; under a sensitive mapping key the whole
        value becomes ``[redacted]``; see the module docstring for every type.

        Args:
            obj: Any value: a scalar, a container, an attrs/dataclass instance
                or an arbitrary object. It is never mutated.

        Returns:
            The redacted value (``obj`` itself when disabled, or for scalars
            that need no change).

        Raises:
            RedactionError: The structure is deeper than ``max_depth`` (or
                cyclic), or inspecting part of it raised.
        """
        if not self.enabled:
            return obj
        try:
            return self._value(obj, 0)
        except RedactionError:
            raise
        except Exception as exc:
            # `from None`: the cause's message may contain the unredacted data.
            raise RedactionError(
                f"cannot redact a {type(obj).__name__}: {type(exc).__name__} raised inside"
            ) from None

    def _value(self, obj: object, depth: int) -> object:
        if obj is None or isinstance(obj, _INERT):
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, int):
            return redact_int(obj)
        if isinstance(obj, bytes | bytearray | memoryview):
            return BYTES
        if _exact_number(obj):
            return obj
        if depth >= self.max_depth:
            raise RedactionError(f"structure nested deeper than max_depth={self.max_depth}")
        depth += 1
        if isinstance(obj, Mapping):
            return self._mapping(obj.items(), depth)
        if isinstance(obj, list):
            return [self._value(x, depth) for x in obj]
        if isinstance(obj, tuple):
            return tuple([self._value(x, depth) for x in obj])
        if isinstance(obj, frozenset):
            return frozenset([self._hashable(x, depth) for x in obj])
        if isinstance(obj, set):
            return {self._hashable(x, depth) for x in obj}
        return self._object(obj, depth)

    def _object(self, obj: object, depth: int) -> object:
        """An instance that is no container: its fields (attrs, dataclass), else its repr."""
        cls = type(obj)
        if not isinstance(obj, type):
            if attrs.has(cls):
                fields = attrs.fields(cls)
                return self._mapping(((f.name, getattr(obj, f.name)) for f in fields), depth)
            if dataclasses.is_dataclass(obj):
                return self._mapping(
                    ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)), depth
                )
        return self.text(repr(obj))

    def _hashable(self, obj: object, depth: int) -> object:
        new = self._value(obj, depth)
        # An attrs/dataclass key or set member turns into an unhashable dict.
        return new if isinstance(new, Hashable) else self.text(repr(obj))

    def _mapping(self, items: Iterable[tuple[object, object]], depth: int) -> dict[Any, Any]:
        words = key_words(self.extra_keys)
        out: dict[Any, Any] = {}
        for key, val in items:
            if isinstance(key, str):
                new_key: object = self.text(key)
                if new_key == key:
                    # The common case: event and record keys repeat, so the
                    # verdict is cached (only for keys nothing was found in).
                    sensitive = sensitive_key(key, self.extra_keys)
                else:
                    # The redacted key is checked too: `sk_live_...` as a key
                    # turns into `[token]`, and a second pass must not mask it.
                    norm = f"{normalise_key(key)} {normalise_key(str(new_key))}"
                    sensitive = any(w in norm for w in words)
            else:
                sensitive = False
                new_key = self._hashable(key, depth)
            if new_key in out:
                new_key = _unique_key(out, new_key)
            out[new_key] = _masked(val) if sensitive else self._value(val, depth)
        return out

    def record(self, mapping: Mapping[str, Any]) -> dict[str, Any] | None:
        """Redact a record, failing closed.

        Args:
            mapping: An error record, log event, snapshot or API answer.

        Returns:
            A new redacted dict; ``None`` if redaction raised anything (the
            record is dropped and ``dropped`` incremented). When disabled, the
            input itself (copied into a dict only if it is not one).
        """
        if not self.enabled:
            return mapping if isinstance(mapping, dict) else dict(mapping)
        try:
            result = self.value(mapping)
        except Exception:
            # Fail closed: emitting a half-redacted record could leak exactly
            # the data this module exists to hide. Base exceptions (Cancelled,
            # KeyboardInterrupt) propagate untouched.
            self.dropped += 1
            return None
        if not isinstance(result, dict):  # not a Mapping after all: same verdict
            self.dropped += 1
            return None
        return result

    def structlog_processor(
        self,
    ) -> Callable[[Any, str, MutableMapping[str, Any]], Mapping[str, Any]]:
        """Build a structlog processor that redacts the event dict.

        The processor returns a new redacted dict. If redaction fails it counts
        the drop in ``dropped`` and raises :class:`structlog.DropEvent`, so the
        event is not logged at all. ``enabled`` is read on every call.

        structlog's own plumbing keys (``_record``, ``_from_structlog``, put in
        by ``ProcessorFormatter`` for later processors and removed before
        rendering) are passed through untouched: turning the ``LogRecord``
        into a string would break ``ExtraAdder`` and friends.

        Returns:
            The processor, for ``structlog.configure(processors=[...])``.
        """

        def redact_event_dict(
            logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
        ) -> Mapping[str, Any]:
            if not self.enabled:
                return event_dict
            meta = {k: event_dict[k] for k in _STRUCTLOG_META if k in event_dict}
            if meta:
                event_dict = {k: v for k, v in event_dict.items() if k not in meta}
            redacted = self.record(event_dict)
            if redacted is None:
                raise structlog.DropEvent
            redacted.update(meta)
            return redacted

        return redact_event_dict
