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

Sensitive keys are :data:`DEFAULT_SENSITIVE_KEYS` plus ``Redactor.extra_keys``.
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
import decimal
import enum
import fractions
import functools
import ipaddress
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Final, Literal

import attrs
import structlog

__all__ = [
    "BYTES",
    "CARD",
    "DEFAULT_SENSITIVE_KEYS",
    "EMAIL",
    "IBAN",
    "IP",
    "PHONE",
    "PLACEHOLDERS",
    "PRIVATE_KEY",
    "REDACTED",
    "SSN",
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
IBAN: Final = "[iban]"
PHONE: Final = "[phone]"
SSN: Final = "[ssn]"
# A space, not `_`/`-`: `private-key` would be a sensitive key to the text rule.
PRIVATE_KEY: Final = "[private key]"

#: Every placeholder this module writes (none of them matches any rule).
PLACEHOLDERS: Final = (EMAIL, IP, TOKEN, CARD, REDACTED, BYTES, IBAN, PHONE, SSN, PRIVATE_KEY)

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
    r"(?<!\w)(?P<head>(?:set-)?cookie[ \t]*:[ \t]*)[^\r\n\ue000\ue001]+", _AI | re.MULTILINE
)

_GENERIC_KEY: Final = re.compile(
    r"(?<![\w.-])(?P<head>[\w.-]*key[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?:[0-9a-f]{16,}|(?=[\w+/-]*[0-9])[\w+/-]{20,}={0,2})(?![\w+/=-])",
    _AI,
)

# `scheme://user:password@host`. The user runs to the first ':' (it may be an
# e-mail address); the password is greedy up to the *last* '@' before a
# space or quote, because passwords hold '@', '/', ':' and '#' (`p@ss/w0rd`).
# A path holding '@' after a port (`http://h:80/@x`) is over-redacted, which
# is the safe side. No '[' in the user part: `[redacted]@` is never matched
# again, and `http://[::1]:80` is not userinfo.
_URL_USERINFO: Final = re.compile(r"(?<=://)[^/\s:\[\]\"'<>]+:[^\s\"'<>]*@(?=[\w\[])", _A)

# PEM private keys (PKCS#1/#8, EC, OpenSSH, encrypted, PGP blocks), as real
# lines or as a repr with `\n` escapes. With no END line (a truncated log
# line) the header and every following base64-looking line go.
# The block's end is found with one forward search for the next END line
# (`_pem_spans`), not a lazy `.*?END` per BEGIN, which rescanned the rest of
# the text for every BEGIN without an END (quadratic).
_PEM_BEGIN: Final = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----", re.ASCII)
_PEM_BODY: Final = re.compile(
    r"(?:(?:[ \t\r\n\ue000-\ue002]|\\[rn])+"
    r"(?:[A-Za-z0-9+/]{16,}={0,2}|(?:Proc-Type|DEK-Info|Comment):[^\r\n\\]*))*",
    re.ASCII,
)

# An END line whose BEGIN was cut away (the kept tail of a long traceback):
# the base64 lines before it are found by walking back (`_pem_tail_spans`),
# which stays linear where a regex would retry from every line start.
_PEM_END: Final = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----", re.ASCII)
_PEM_SEPARATORS: Final = frozenset(" \t\r\n\ue000\ue001\ue002")
_BASE64_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
)

# Capitalised `Bearer` is the HTTP scheme; lower-case `bearer` is also an
# English word ("the bearer of"), so it needs a token-length value.
_BEARER: Final = re.compile(
    r"\b(?P<head>Bearer[ \t]+)[\w.~+/-]+=*|\b(?P<head2>bearer[ \t]+)[\w.~+/-]{16,}=*", _A
)

# Not after a letter or digit; after '_' is fine, so a key inside a
# snake_case identifier (`gauge_AKIA...`, `x_ghp_...`) is found too.
_API_KEY: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"[spr]k_(?:live|test)_\w{8,}"
    r"|sk-[\w-]{20,}"
    r"|gh[pousr]_\w{20,}"
    r"|github_pat_\w{20,}"
    r"|A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[\w-]{35,}"
    r"|eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*"
    r"|glpat-[\w-]{20,}"
    r"|npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"
    r"|xapp-[0-9]-[A-Za-z0-9-]{10,}"
    r")",
    _A,
)

# E-mail: `@domain` is matched by regex (the literal '@' lets re skip ahead
# fast) and the local part, always the whole run of local-part characters
# before the '@', is found by walking back in `_email_spans`; a regex that
# starts at the local part is 4x slower. A domain that runs into the next
# address's local part (`a@b.cox@c.de`) is refused, and the second address
# taken instead (else a second pass would find it): checked once per match in
# `_email_spans`, because the same check as a lookahead rescanned the rest of
# the text at every label the regex gave back (quadratic: 0.4 s for 32 KiB of
# `aa.aa.aa...@`). Not re.ASCII: local parts and domains may be
# internationalised (`josé@exämple.com`, RFC 6531), and the top-level domain
# may be a punycode `xn--` label.
_DOMAIN: Final = r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:xn--[A-Za-z0-9-]{1,59}|[^\W\d_]{2,63})"
_EMAIL_DOMAIN: Final = re.compile(r"@" + _DOMAIN)
# URL-encoded (`?email=bob%40example.com`): the same, after `%40`.
_EMAIL_DOMAIN_ENCODED: Final = re.compile(r"%40" + _DOMAIN)
# What may follow a domain and still belong to one address-like token.
_ADDRESS_RUN: Final = re.compile(r"[\w.%+-]*")
# ASCII local-part characters besides letters and digits (`str.isalnum` takes
# the non-ASCII ones). Not '=', '\'', '/', '&' or '{': in log text they are far
# more often the separator before an address (`user=bob@x.org`) than part of it.
_EMAIL_LOCAL_PUNCT: Final = frozenset("_.%+-!#$*^~")
# A quoted local part (`"john doe"@example.com`) is at most 64 characters.
_QUOTED_LOCAL_MAX: Final = 66

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

# IBAN: ISO 13616 writes the country code in capitals, and capitals are rare
# in log text, so the scan starts on them (skipped in C), with the left edge
# checked after the first one. Grouping by single spaces anywhere is
# accepted; the country's exact length and the mod-97 check decide
# (`_iban_end`). A lower-case IBAN is not detected.
_IBAN_START: Final = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}", _A)
_IBAN_BODY: Final = re.compile(r"[A-Z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}", _A)

# IBAN lengths by country (SWIFT IBAN registry).
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# International phone numbers: '+', a country code, then digit groups joined
# by one separator, brackets allowed (`+1 (415) 555-2671`, `+49 (0)30 123456`).
# Every repetition starts with a separator, so the pattern cannot backtrack
# badly; digit counts (8-15, E.164) and the right edge are checked in
# `_e164_sub`. Not after a word character or '+' (`1e+10`, `a+b`), nor after
# a placeholder's ']' (`[phone]+44...`: the first pass saw a digit there).
_E164: Final = re.compile(
    r"\+(?<![\w+\]]\+)[1-9][0-9]*(?:(?:[ .-]?\(|\)[ .-]?|[ .-])[0-9]+)*\)?", _A
)

# National phone numbers and SSNs: runs of digit groups joined by one of
# ' .-', the first group 2-5 digits (or bracketed: `(415) `, `(030) `; or a
# North American `1-`/`1 `, so `1-800-555-0199` is a run whose span from
# `800` is a number; a lone first digit in general would make every decimal
# a candidate). Which spans are phone numbers or SSNs is decided in Python
# (`_groups_sub`). A run cannot start right after a word character, '.', '+'
# or '-' (decimals, versions, UUIDs, dates and E.164 numbers are something
# else), nor after a placeholder's ']' (the first pass saw what the
# placeholder replaced).
_DIGIT_GROUPS: Final = re.compile(
    r"[(0-9](?<![\w.+)\]-][(0-9])"
    r"(?:(?<=\()(?P<area>[0-9]{2,5})\)(?P<psep> ?)|(?<=[0-9])[0-9]{1,4}[ .-]|(?<=1)[ -](?=[2-9]))"
    r"[0-9]{2,8}(?:[ .-][0-9]{2,8})*"
    # The last group must not run on into a word, a decimal or a time
    # (`2026-11-21 10:00` stops before `10`). A placeholder there counts as
    # the digits it replaced: else a second pass would see a new edge.
    r"(?![\w]|[.:-][0-9\[])",
    _A,
)
_GROUP_SEPS: Final = re.compile(r"([ .-])")

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
# touches a letter, a digit, '.', or '-' on either side is part of something
# else (a UUID, a decimal, a hex id) and is left alone; '_' is a boundary, so
# a number inside a snake_case name (`gauge_4111...`) is still found.
_DIGIT_RUN: Final = re.compile(
    r"[0-9](?<![A-Za-z0-9.-][0-9])[0-9]{2,18}(?:[ -][0-9]{3,19})*(?![A-Za-z0-9-]|\.[0-9])",
    _A,
)
_GROUP_SPLIT: Final = re.compile(r"([ -])")
_IPV4_GATE: Final = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]", _A)
_CARD_GATE: Final = re.compile(r"[0-9][0-9 -]{12}", _A)


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
        or "xapp-" in s
        or "glpat-" in s
        or ("_" in s and ("gh" in s or "github_pat_" in s or "npm_" in s))
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


@functools.lru_cache(maxsize=1024)
def _sensitive_key(key: str, extra: tuple[str, ...]) -> bool:
    """Whether mapping key ``key`` holds a sensitive word (cached: keys repeat)."""
    norm = _normalise_key(key)
    return any(w in norm for w in _key_words(extra))


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


_PLACEHOLDER_REST: Final = r"(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS) + r")\]"


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
        r"(?P<sep>\\?[\"']?[ \t]*[:=][ \t]*)"
        r"(?P<val>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
        # Quoted with escaped quotes, as a repr or JSON inside a string shows
        # it (`KeyError("secret: \\'x\\'")` prints `secret: \'x\'`).
        r"|\\'(?:[^\\\n]|\\[^'\n])*\\'|\\\"(?:[^\\\n]|\\[^\"\n])*\\\""
        # Unquoted: up to a delimiter. `Authorization: Bearer x` takes the
        # scheme word with it. A stray opening quote is taken too, so an
        # unterminated quoted value is still caught.
        # It stops at a placeholder, so a rule that runs later and writes one
        # right after the value (`password:x(415) 555-2671`) does not make a
        # second pass take that placeholder as part of the value.
        r"|[\"']?(?:(?:bearer|basic|digest|token|negotiate)[ \t]+)?"
        # Runs without '[' (possessive: no backtracking into them), and a '['
        # only where no placeholder starts.
        r"(?:[^\s,;&\"'(){}<>\[\ue000-\ue002]++|\[(?!" + _PLACEHOLDER_REST + r"))+)",
        _AI,
    )


def _kv_sub(m: re.Match[str]) -> str:
    val = m["val"]
    quote = val[0]
    if len(val) >= 2 and quote in "\"'" and val[-1] == quote:
        return f"{m['key']}{m['sep']}{quote}{REDACTED}{quote}"
    if len(val) >= 4 and quote == "\\" and val[1] in "\"'" and val[-2:] == val[:2]:
        return f"{m['key']}{m['sep']}{val[:2]}{REDACTED}{val[:2]}"
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


def _pem_tail_start(s: str, end: int, floor: int) -> int:
    """Start of the base64 lines right before ``s[end]`` (an END line), or ``end``."""
    start = end
    i = end
    while True:
        j = i  # back over the separators (at least one) before i
        while j > floor and (
            s[j - 1] in _PEM_SEPARATORS or (s[j - 1] in "nr" and s[j - 2 : j - 1] == "\\")
        ):
            j -= 2 if s[j - 1] in "nr" else 1
        k = j  # back over one base64 line
        while k > floor and s[k - 1] in _BASE64_CHARS:
            k -= 1
        if j == i or j - k < 16:
            return start
        start = i = k


def _splice(s: str, spans: Iterator[tuple[int, int]], placeholder: str) -> str:
    """``s`` with each span (in order, none overlapping) replaced by ``placeholder``.

    The span finders below are generators that see the end of the last span
    (``done``), so a rule that walks back (an address's local part, a key's
    lines) never walks into text already replaced.
    """
    out: list[str] = []
    done = 0
    for start, end in spans:
        out.append(s[done:start])
        out.append(placeholder)
        done = end
    if not out:
        return s
    out.append(s[done:])
    return "".join(out)


def _pem_spans(s: str) -> Iterator[tuple[int, int]]:
    """Whole blocks, BEGIN to the next END; a BEGIN with no END before the next
    BEGIN (a truncated key) takes its base64 lines."""
    done = 0
    end: re.Match[str] | None = None
    searched_from = -1  # `end` is the first END at or after this position
    for m in _PEM_BEGIN.finditer(s):
        if m.start() < done:
            continue
        if searched_from < 0 or (end is not None and end.start() < m.end()):
            end = _PEM_END.search(s, m.end())
            searched_from = m.end()
        following = s.find("-----BEGIN", m.end())
        if end is not None and (following < 0 or end.start() < following):
            stop = end.end()
        else:
            body = _PEM_BODY.match(s, m.end())
            stop = m.end() if body is None else body.end()
        yield m.start(), stop
        done = stop


def _pem_tail_spans(s: str) -> Iterator[tuple[int, int]]:
    done = 0
    for m in _PEM_END.finditer(s):
        start = _pem_tail_start(s, m.start(), done)
        if start < m.start():  # an END line alone says nothing
            yield start, m.end()
            done = m.end()


def _local_part_start(s: str, at: int, floor: int) -> int:
    """Where the local part of the address whose '@' is at ``s[at]`` starts.

    Returns ``at`` when there is none. ``floor`` is the end of the text already
    emitted: an earlier address is never walked back into.
    """
    if at > floor and s[at - 1] == '"':
        # A quoted local part: back to the opening quote on the same line.
        j = at - 2
        lowest = max(floor, at - _QUOTED_LOCAL_MAX)
        while j >= lowest:
            ch = s[j]
            if ch in "\n[]":  # no line break; no brackets, so never a placeholder inside
                break
            if ch == '"' and (j == 0 or s[j - 1] != "\\"):
                return j if j < at - 2 else at  # `""@x.org` names no one
            j -= 1
        return at
    start = at
    while start > floor and ((ch := s[start - 1]) in _EMAIL_LOCAL_PUNCT or ch.isalnum()):
        start -= 1
    return start


def _email_spans(s: str, domain: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    done = 0
    for m in domain.finditer(s):
        run = _ADDRESS_RUN.match(s, m.end())
        assert run is not None  # `*`: it always matches
        if s.startswith("@", run.end()) or "%40" in run[0]:
            continue  # the domain runs into the next address's local part
        start = _local_part_start(s, m.start(), done)
        # No local part: `@handle.tld`, or right after a placeholder.
        if start < m.start():
            yield start, m.end()
            done = m.end()


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _iban_end(s: str, start: int, stop: int) -> int:
    """End of the IBAN starting at ``s[start]`` within ``s[start:stop]``, or -1.

    Exactly the country's length of characters is read (single spaces between
    them skipped); the next character must not continue a word, and the
    ISO 13616 check (the number with the first four characters moved to the
    end, letters as 10-35, is 1 modulo 97) must hold.
    """
    length = _IBAN_LENGTHS.get(s[start : start + 2].upper())
    if length is None:
        return -1
    chars: list[str] = []
    i = start
    while i < stop and len(chars) < length:
        if s[i] != " ":
            chars.append(s[i])
        i += 1
    if len(chars) < length or (i < len(s) and s[i].isalnum()):
        return -1
    compact = "".join(chars).upper()
    number = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
    return i if int(number) % 97 == 1 else -1


def _iban_spans(s: str) -> Iterator[tuple[int, int]]:
    done = 0
    for m in _IBAN_START.finditer(s):
        start = m.start()
        if start < done or (start > 0 and s[start - 1].isalnum()):
            continue
        body = _IBAN_BODY.match(s, start)
        end = -1 if body is None else _iban_end(s, start, body.end())
        if end >= 0:
            yield start, end
            done = end


_DIGITS: Final = re.compile(r"[0-9]+", _A)


def _touches_right(s: str, end: int) -> bool:
    """Whether ``s[end:]`` continues the number before it (a word, `.5`, `:30`, `-1`).

    A placeholder after the separator (`:[phone]`) counts as the digits it
    replaced, so a second pass sees the same edge as the first.
    """
    if end >= len(s):
        return False
    ch = s[end]
    if _is_word_char(ch):
        return True
    return ch in ".:-" and end + 1 < len(s) and (s[end + 1].isdigit() or s[end + 1] == "[")


def _e164_prefix_ok(part: str, digits: int) -> bool:
    # One dot is a decimal (`+12345678.9`); brackets must be balanced.
    return 8 <= digits <= 15 and part.count("(") == part.count(")") and part.count(".") != 1


def _e164_sub(m: re.Match[str]) -> str:
    """The longest prefix (by digit groups) of the match that is a phone number.

    Every prefix is tried, not just the longest one under 15 digits: a later
    rule may replace the tail of the run (`+44 20 7946 0958020 7946` holds a
    national number), and a second pass must not then find a number in what
    is left. A last group running on into a word belongs to that word.
    """
    text = m[0]
    groups = list(_DIGITS.finditer(text))
    if _touches_right(m.string, m.end()):
        groups.pop()
    best = 0
    digits = 0
    for g in groups:
        digits += len(g[0])
        if digits > 15:
            break
        cut = g.end()
        if text[cut : cut + 1] == ")" and text.count("(", 0, cut) > text.count(")", 0, cut):
            cut += 1
        if _e164_prefix_ok(text[:cut], digits):
            best = cut
    return PHONE + text[best:] if best else text


def _span_kind(groups: list[str], seps: list[str], bracketed: bool) -> str | None:
    """The placeholder for digit groups that form a phone number or an SSN, else None.

    Shapes: US SSN ``123-45-6789`` (never area 000, 666 or 9xx, group 00,
    serial 0000); North American ``415-555-2671``, ``415.555.2671``,
    ``(415) 555-2671`` (not spaces alone: ``512 256 1024`` is a list of
    sizes); a national number with trunk prefix ``0`` and 10-12 digits in
    groups of 2+ joined by one kind of separator (``020 7946 0958``,
    ``06.12.34.56.78``, ``(030) 1234567``); an international ``00`` prefix
    with 10-17 digits (``0049 30 1234567``).
    """
    lens = [len(g) for g in groups]
    own_seps = set(seps[1:] if bracketed else seps)
    if lens == [3, 2, 4] and not bracketed and own_seps == {"-"}:
        area, group, serial = groups
        ok = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
        return SSN if ok else None
    if len(own_seps) > 1:
        return None
    first = groups[0]
    nanp = lens == [3, 3, 4] and first[0] in "23456789" and groups[1][0] in "23456789"
    if nanp and (bracketed or own_seps <= {"-", "."}):
        return PHONE
    digits = sum(lens)
    if len(first) > 1 and first[0] == "0" and first[1] != "0" and 10 <= digits <= 12:
        return PHONE
    if first[:2] == "00" and len(first) > 2 and first[2] != "0" and 10 <= digits <= 17:
        return PHONE
    return None


def _groups_sub(m: re.Match[str]) -> str:
    text = m[0]
    if m["area"] is not None:
        head = f"({m['area']})"
        parts = _GROUP_SEPS.split(text[m.end("psep") - m.start() :])
        texts = [head, *parts[0::2]]
        groups = [m["area"], *parts[0::2]]
        seps = [m["psep"], *parts[1::2]]
    else:
        parts = _GROUP_SEPS.split(text)
        texts = groups = parts[0::2]
        seps = parts[1::2]
    n = len(groups)
    out: list[str] = []
    i = 0
    while i < n:
        found: tuple[int, str] | None = None
        total = len(groups[i])
        bracketed = i == 0 and texts[0] != groups[0]
        # Every shape starts with a 3-digit group (SSN, North American) or a
        # 0 (trunk or international prefix): other groups start none, and a
        # run of thousands (`12 12 12 ...`) is read in one pass.
        first = groups[i]
        hopeless = len(first) != 3 and first[0] != "0" and not bracketed
        # Longest span from group i, as for cards: every span is tried, so
        # what is left holds none and a second pass finds nothing.
        for j in range(i + 1, 0 if hopeless else n):
            total += len(groups[j])
            if total > 17:
                break
            kind = _span_kind(groups[i : j + 1], seps[i:j], bracketed)
            if kind is not None:
                found = (j, kind)
        end, piece = found if found is not None else (i, texts[i])
        out.append(piece)
        if end < n - 1:
            out.append(seps[end])
        i = end + 1
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
        if not self.enabled or (
            _TRIGGER_CHARS.search(s) is None
            and not _might_hold_prefix(s)
            and "PRIVATE KEY" not in s
        ):
            return s
        return self._text(s)

    def _text(self, s: str) -> str:
        if "\\" not in s or "\ue000" in s or "\ue001" in s or "\ue002" in s:
            return self._rules(s)
        for escape, stand_in in _ESCAPES:
            s = s.replace(escape, stand_in)
        s = self._rules(s)
        for escape, stand_in in _ESCAPES:
            s = s.replace(stand_in, escape)
        return s

    def _rules(self, s: str) -> str:
        # Rule order matters for idempotence: a later rule's placeholder must
        # never complete an earlier rule's match. A PEM block goes first, whole
        # (`private_key: -----BEGIN ...` must not leave the body to the key
        # rule, which takes one word). Key-based rules run next so
        # `password=a@b.com` becomes `password=[redacted]`, not `...=[email]`.
        # IBANs and phone numbers run before cards: their digit groups could
        # otherwise hold a Luhn-valid run and be half-redacted.
        if "PRIVATE KEY" in s:
            s = _splice(s, _pem_spans(s), PRIVATE_KEY)
            if "PRIVATE KEY" in s:
                s = _splice(s, _pem_tail_spans(s), PRIVATE_KEY)
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
            s = _splice(s, _email_spans(s, _EMAIL_DOMAIN), EMAIL)
        if "%40" in s:
            s = _splice(s, _email_spans(s, _EMAIL_DOMAIN_ENCODED), EMAIL)
        s = _splice(s, _iban_spans(s), IBAN)
        if "+" in s:
            s = _E164.sub(_e164_sub, s)
        if "::" in s or s.count(":") >= 7:
            s = _IPV6.sub(_ipv6_sub, s)
        # The gates are necessary conditions, searched 2-3x faster than the
        # full patterns run; most log lines with numbers stop here.
        if s.count(".") >= 3 and _IPV4_GATE.search(s) is not None:
            s = _IPV4.sub(_ipv4_sub, s)
        s = _DIGIT_GROUPS.sub(_groups_sub, s)
        if _CARD_GATE.search(s) is not None:
            s = _DIGIT_RUN.sub(_card_sub, s)
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
                if new_key == key:
                    # The common case: event and record keys repeat, so the
                    # verdict is cached (only for keys nothing was found in).
                    sensitive = _sensitive_key(key, self.extra_keys)
                else:
                    # The redacted key is checked too: `sk_live_...` as a key
                    # turns into `[token]`, and a second pass must not mask it.
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
