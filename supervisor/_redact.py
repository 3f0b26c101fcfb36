"""Redaction of personal data and secrets before anything leaves the process.

Every log event, error record (message, traceback, captured values), snapshot of
the error history, API answer and audit entry goes through a :class:`Redactor`
first. A redacted item is replaced by a typed placeholder so an operator still
sees *what kind* of thing was there:

==================  ==============================================================
placeholder         replaces
==================  ==============================================================
``[email]``         e-mail addresses (``local@domain.tld``; a dot in the domain is
                    required, so ``root@localhost`` is kept)
``[ip]``            IPv4 dotted quads and IPv6 addresses (full, ``::``-compressed,
                    IPv4-mapped, with ``%zone``); port / prefix suffixes are kept
``[token]``         ``Bearer xxx`` credentials (the word ``Bearer`` is kept), API
                    keys of known shapes (``sk_live_``/``sk_test_``/``pk_``/``rk_``,
                    ``sk-``, ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``,
                    ``github_pat_``, ``AKIA``/``ASIA``, ``xox?-``, ``AIza``, JWTs),
                    and long hex (16+) or base64-ish (20+, with a digit) values
                    after a ``...key=`` / ``...key:``
``[card]``          13-19 digit card-like numbers, plain or grouped by spaces or
                    dashes the way cards are printed (4-4-4-4[-3], 4-6-5, 4-6-4),
                    whose first digit is 2-6 and which pass the Luhn check
``[redacted]``      the value under a sensitive key: in mappings the whole value;
                    in text ``key=value`` / ``key: value`` / ``"key": "value"``;
                    a ``Cookie:`` header line; the ``user:pass@`` of a URL
``[bytes]``         any ``bytes`` / ``bytearray`` / ``memoryview`` value
==================  ==============================================================

Sensitive keys are :data:`DEFAULT_SENSITIVE_KEYS` plus ``Redactor.extra_keys``.
Keys are compared case-insensitively after mapping ``-``, ``.`` and spaces to
``_``, so ``X-Auth-Token``, ``db_password`` and ``ApiKey`` all count.

Decisions (the corpus in ``tests/test_redact.py`` pins each of them):

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
  ``v1.2.3.4``, ``1.2.3``, ``1.2.3.4.5`` and ``10:00:00`` are kept.
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

Place :meth:`Redactor.structlog_processor` last before the renderer: after
``format_exc_info`` / ``dict_tracebacks`` (so tracebacks are strings by then)
and after anything that needs live objects in the event dict.

This is pattern matching: it catches the listed shapes, not every possible
secret. A secret with no recognisable shape, outside a sensitive key, passes.

Timing of :meth:`Redactor.text` (CPython 3.11.7, ``timeit``, best of 5 runs of
20,000 calls, on the shared 2-core dev box with a load average of 1-4 from
other jobs, so the range over several runs is given)::

    200-char prose, nothing to redact (fast path)            2.4 -  3.1 us
    200-char log line with digits/timestamp, nothing found    9.2 - 15.0 us
    200-char line holding one e-mail                          8.2 - 10.7 us
    200-char line holding one ``session_id=...``             20.3 - 39.7 us
    any string, enabled=False                                 0.07 us

The fast path is one character-class search plus a few ``in`` tests; in the
slow path each rule runs only behind a cheap necessary condition (a character,
a word, a short gate pattern), so a line pays for the rules it might match.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import ipaddress
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping
from typing import Any, Final

import attrs
import structlog

__all__ = [
    "BYTES",
    "CARD",
    "DEFAULT_SENSITIVE_KEYS",
    "EMAIL",
    "IP",
    "REDACTED",
    "TOKEN",
    "RedactionError",
    "Redactor",
]

EMAIL: Final = "[email]"
IP: Final = "[ip]"
TOKEN: Final = "[token]"
CARD: Final = "[card]"
REDACTED: Final = "[redacted]"
BYTES: Final = "[bytes]"

DEFAULT_SENSITIVE_KEYS: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "cookie",
    "session",
)

# Scalars that cannot carry free text (or whose text is code, like enum names).
# Enum comes before str/int in the dispatch because StrEnum and IntEnum exist.
_INERT: Final = (
    bool,
    float,
    complex,
    decimal.Decimal,
    fractions.Fraction,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    enum.Enum,
)

_STRUCTLOG_META: Final = ("_record", "_from_structlog")

_KEY_NORMALISER: Final = str.maketrans({"-": "_", ".": "_", " ": "_"})

# All patterns use re.ASCII: \d, \w and \s then mean what the shapes of
# addresses, keys and card numbers mean, and a non-ASCII digit is never a card.
_A: Final = re.ASCII
_AI: Final = re.ASCII | re.IGNORECASE

# Fast-path gate: a string without any of these characters and without a
# known key prefix (`_might_hold_prefix`) cannot match a rule. '=' is here
# because `password=hunter` has no digit, '@' or ':'.
_TRIGGER_CHARS: Final = re.compile(r"[0-9@:=]")

# A Cookie header holds many `name=value` pairs; all of them go, to the end of
# the line, since the key=value rule would only take the first.
_COOKIE_HEADER: Final = re.compile(
    r"(?<!\w)(?P<head>(?:set-)?cookie[ \t]*:[ \t]*)[^\r\n]+", _AI | re.MULTILINE
)

_GENERIC_KEY: Final = re.compile(
    r"(?<![\w.-])(?P<head>[\w.-]*key[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?:[0-9a-f]{16,}|(?=[\w+/-]*[0-9])[\w+/-]{20,}={0,2})(?![\w+/=-])",
    _AI,
)

_URL_USERINFO: Final = re.compile(r"(?<=://)[^/\s:@\[\]]+:[^/\s@\[\]]+@", _A)

# Capitalised `Bearer` is the HTTP scheme; lower-case `bearer` is also an
# English word ("the bearer of"), so it needs a token-length value.
_BEARER: Final = re.compile(
    r"\b(?P<head>Bearer[ \t]+)[\w.~+/-]+=*|\b(?P<head2>bearer[ \t]+)[\w.~+/-]{16,}=*", _A
)

_API_KEY: Final = re.compile(
    r"\b(?:"
    r"[spr]k_(?:live|test)_\w{8,}"
    r"|sk-[\w-]{20,}"
    r"|gh[pousr]_\w{20,}"
    r"|github_pat_\w{20,}"
    r"|A[KS]IA[A-Z0-9]{16}\b"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[\w-]{35,}"
    r"|eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*"
    r")",
    _A,
)

# E-mail: `@domain` is matched by regex (the literal '@' lets re skip ahead
# fast) and the local part, always the whole run of local-part characters
# before the '@', is found by walking back in `_redact_emails`; a regex that
# starts at the local part is 4x slower. The lookahead refuses a domain that
# runs into the next address's local part (`a@b.cox@c.de`): the second address
# is taken instead, else a second pass would find it.
_EMAIL_DOMAIN: Final = re.compile(
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w.%+-]*@)",
    _A,
)
_EMAIL_LOCAL_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-"
)

# A loose candidate (hex digits and colons, two colons at least) validated by
# `ipaddress`: writing the full IPv6 grammar as a regex is slow and easy to get
# wrong. A bracket on the outer side is refused so that a later rule's
# placeholder (`1::10.0.0.1:` -> `1::[ip]:`) cannot create a new candidate.
_IPV6: Final = re.compile(
    r"(?<![\w:.\]])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)"
    r"(?P<addr>[0-9A-Fa-f:]{2,39}(?:(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3})?)"
    r"(?:%[\w.-]+)?(?![\w:\[]|\.[0-9])",
    _A,
)

# Patterns below start with a character class and check the left context with
# a lookbehind *after* it (`[0-9](?<![\w.][0-9])`): then re skips non-digits in
# C instead of testing the lookbehind at every index (4x faster). Octet ranges
# and leading zeros are checked in `_ipv4_sub`.
_IPV4: Final = re.compile(
    r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![\w]|\.[0-9])",
    _A,
)

# A run of digit groups; which groups form a card is decided in Python
# (`_card_sub`) because it needs Luhn and the printed group shapes. A run that
# touches a word character, '.', or '-' on either side is part of something
# else (a UUID, a decimal, an id) and is left alone.
_DIGIT_RUN: Final = re.compile(
    r"[0-9](?<![\w.-][0-9])[0-9]{2,18}(?:[ -][0-9]{3,19})*(?![\w-]|\.[0-9])",
    _A,
)
_GROUP_SPLIT: Final = re.compile(r"([ -])")
_IPV4_GATE: Final = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]", _A)
_CARD_GATE: Final = re.compile(r"[0-9][0-9 -]{12}", _A)


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


def _might_hold_prefix(s: str) -> bool:
    # Chained `in` tests run in C and cost ~1 us on 200 chars; one regex
    # alternation of the same prefixes costs ~10 us (re tries it at every index).
    return (
        "earer" in s
        or "k_" in s
        or "sk-" in s
        or "AKIA" in s
        or "ASIA" in s
        or "AIza" in s
        or "eyJ" in s
        or "xox" in s
        or ("_" in s and ("gh" in s or "github_pat_" in s))
    )


def _normalise_key(key: str) -> str:
    return key.lower().translate(_KEY_NORMALISER)


def _convert_extra_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """Normalise configured key names; reject shapes that would redact everything.

    Args:
        keys: Extra sensitive key names from configuration.

    Returns:
        The names, lower-cased with ``-``/``.``/space mapped to ``_``.

    Raises:
        TypeError: ``keys`` is a single string (iterating it would make every
            character a key) or holds a non-string.
        ValueError: A name is empty or blank (it would match every key).
    """
    if isinstance(keys, str):
        raise TypeError("extra_keys must be a sequence of key names, not one string")
    out: list[str] = []
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"extra_keys entries must be str, got {type(key).__name__}")
        norm = _normalise_key(key.strip())
        if not norm.strip("_"):
            raise ValueError(f"extra_keys entry {key!r} is blank and would match every key")
        out.append(norm)
    return tuple(out)


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@functools.lru_cache(maxsize=32)
def _key_words(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Return the normalised sensitive words, longest first, for ``extra``."""
    words = {_normalise_key(w) for w in DEFAULT_SENSITIVE_KEYS} | set(extra)
    return tuple(sorted(words, key=lambda w: (-len(w), w)))


@functools.lru_cache(maxsize=32)
def _gate_words(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Cheap substrings that must occur (lower-cased) for a text key to match.

    The first four characters of a word's first ``_``-separated part: text may
    write ``api_key`` as ``apikey`` or ``API-Key``, and all of them contain
    ``api``. Fewer, shorter words make this test cheaper (``pass`` covers three
    defaults); a false hit only costs running the exact pattern.
    """
    firsts = {next(p for p in w.split("_") if p)[:4] for w in _key_words(extra)}
    return tuple(sorted(p for p in firsts if not any(q != p and q in p for q in firsts)))


@functools.lru_cache(maxsize=32)
def _kv_pattern(extra: tuple[str, ...]) -> re.Pattern[str]:
    """Compile the text ``key=value`` rule for the default plus ``extra`` keys."""
    words = _key_words(extra)
    alts = "|".join(
        r"[_.-]?".join(re.escape(part) for part in word.split("_") if part) for word in words
    )
    # Tested before the alternation at each index of the lazy prefix: one class
    # test instead of a dozen failed alternatives (halves the cost).
    firsts = "".join(sorted({re.escape(w.lstrip("_")[0]) for w in words}))
    return re.compile(
        r"(?<![\w.-])"
        # Key: an identifier holding a sensitive word. The case-sensitive
        # lookahead rejects `tokenizer` but accepts `authToken` and `PASSWORD_X`.
        r"(?P<key>[\w.-]*?(?=[" + firsts + r"])(?:" + alts + r")(?:s|ids?)?(?-i:(?![a-z]))[\w.-]*)"
        r"(?P<sep>[\"']?[ \t]*[:=][ \t]*)"
        r"(?P<val>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
        # Unquoted: up to a delimiter. `Authorization: Bearer x` takes the
        # scheme word with it. A stray opening quote is taken too, so an
        # unterminated quoted value is still caught.
        r"|[\"']?(?:(?:bearer|basic|digest|token|negotiate)[ \t]+)?[^\s,;&\"'(){}<>]+)",
        _AI,
    )


def _kv_sub(m: re.Match[str]) -> str:
    val = m["val"]
    quote = val[0]
    if len(val) >= 2 and quote in "\"'" and val[-1] == quote:
        return f"{m['key']}{m['sep']}{quote}{REDACTED}{quote}"
    return f"{m['key']}{m['sep']}{REDACTED}"


def _head_sub(placeholder: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        return f"{m['head'] or ''}{placeholder}"

    return sub


def _bearer_sub(m: re.Match[str]) -> str:
    return f"{m['head'] or m['head2']}{TOKEN}"


def _ipv6_sub(m: re.Match[str]) -> str:
    addr = m["addr"]
    if addr.strip(":") == "":
        return m[0]  # "::" alone says nothing about anyone
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return m[0]
    return IP


def _redact_emails(s: str) -> str:
    out: list[str] = []
    done = 0  # end of the text already copied to `out`
    for m in _EMAIL_DOMAIN.finditer(s):
        at = start = m.start()
        # Never walk back past text already emitted (an earlier address).
        while start > done and s[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        if start == at:
            continue  # no local part: `@handle.tld`, or right after a placeholder
        out.append(s[done:start])
        out.append(EMAIL)
        done = m.end()
    if not out:
        return s
    out.append(s[done:])
    return "".join(out)


def _ipv4_sub(m: re.Match[str]) -> str:
    for octet in m[0].split("."):
        if int(octet) > 255 or (octet[0] == "0" and len(octet) > 1):
            return m[0]
    return IP


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card_number(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn_ok(digits)


def _card_shape(lengths: list[int], seps: set[str]) -> bool:
    """Whether digit groups look like a printed card number."""
    if len(lengths) == 1:
        return True
    if len(seps) != 1 or lengths[0] != 4:
        return False
    rest = lengths[1:]
    if all(n == 4 for n in rest[:-1]) and 3 <= rest[-1] <= 4:
        return True  # 4-4-4-4, 4-4-4-4-3, 4-4-4-3 ...
    return len(rest) == 2 and rest[0] == 6 and rest[1] in (4, 5)  # Amex, Diners


def _card_sub(m: re.Match[str]) -> str:
    parts = _GROUP_SPLIT.split(m[0])
    groups = parts[0::2]
    seps = parts[1::2]
    out: list[str] = []
    i = 0
    n = len(groups)
    while i < n:
        end = -1
        total = 0
        # Longest card-shaped span starting at group i. Every span is tried,
        # so groups left unredacted hold no card: a second pass finds nothing.
        for j in range(i, n):
            total += len(groups[j])
            if total > 19:
                break
            if (
                total >= 13
                and _card_shape([len(g) for g in groups[i : j + 1]], set(seps[i:j]))
                and _is_card_number("".join(groups[i : j + 1]))
            ):
                end = j
        if end < 0:
            out.append(groups[i])
            if i < n - 1:
                out.append(seps[i])
            i += 1
            continue
        out.append(CARD)
        if end < n - 1:
            out.append(seps[end])
        i = end + 1
    return "".join(out)


def _redact_int(n: int) -> object:
    # Only 13-19 digit ints can be cards; testing the size first keeps str()
    # away from huge ints (and its int-to-str digit limit).
    if 10**12 <= abs(n) < 10**19 and _is_card_number(str(abs(n))):
        return CARD
    return n


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
            :data:`DEFAULT_SENSITIVE_KEYS`. Normalised on assignment.
        dropped: Records dropped by the fail-closed paths (:meth:`record` and
            the structlog processor).
        max_depth: Deepest container nesting :meth:`value` accepts.
    """

    enabled: bool = True
    extra_keys: tuple[str, ...] = attrs.field(default=(), converter=_convert_extra_keys)
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
        if not self.enabled or (_TRIGGER_CHARS.search(s) is None and not _might_hold_prefix(s)):
            return s
        return self._text(s)

    def _text(self, s: str) -> str:
        # Rule order matters for idempotence: a later rule's placeholder must
        # never complete an earlier rule's match. Key-based rules run first so
        # `password=a@b.com` becomes `password=[redacted]`, not `...=[email]`.
        low = s.lower()
        has_sep = ":" in s or "=" in s
        if "cookie" in low and ":" in s:
            s = _COOKIE_HEADER.sub(_head_sub(REDACTED), s)
        if has_sep:
            extra = self.extra_keys
            if any(map(low.__contains__, _gate_words(extra))):
                s = _kv_pattern(extra).sub(_kv_sub, s)
            if "key" in low:
                s = _GENERIC_KEY.sub(_head_sub(TOKEN), s)
        if "@" in s and "://" in s:
            s = _URL_USERINFO.sub(f"{REDACTED}@", s)
        if "earer" in s:
            s = _BEARER.sub(_bearer_sub, s)
        if _might_hold_prefix(s):
            s = _API_KEY.sub(TOKEN, s)
        if "@" in s:
            s = _redact_emails(s)
        if "::" in s or s.count(":") >= 7:
            s = _IPV6.sub(_ipv6_sub, s)
        # The gates are necessary conditions, searched 2-3x faster than the
        # full patterns run; most log lines with numbers stop here.
        if s.count(".") >= 3 and _IPV4_GATE.search(s) is not None:
            s = _IPV4.sub(_ipv4_sub, s)
        if _CARD_GATE.search(s) is not None:
            s = _DIGIT_RUN.sub(_card_sub, s)
        return s

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
            return _redact_int(obj)
        if isinstance(obj, bytes | bytearray | memoryview):
            return BYTES
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
        words = _key_words(self.extra_keys)
        out: dict[Any, Any] = {}
        for key, val in items:
            if isinstance(key, str):
                new_key: object = self.text(key)
                # The redacted key is checked too: `sk_live_...` as a key turns
                # into `[token]`, and a second pass must not mask it then.
                norm = f"{_normalise_key(key)} {_normalise_key(str(new_key))}"
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
