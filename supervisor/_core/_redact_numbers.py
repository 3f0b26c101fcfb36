"""The shapes of numbers that identify someone: IBANs, phone numbers, IPs, SSNs, cards.

The second half of :class:`._redact.Redactor`'s rules (:func:`redact_numbers`),
run after :func:`._redact_shapes.redact_secrets`. Each shape is found by a
loose pattern and decided in Python (country lengths and mod-97, E.164 digit
counts, North American and national layouts, octet ranges, Luhn and the
printed card layouts), because the exact grammars as regexes are slow and
easy to get wrong. The module docstring of :mod:`._redact` lists what each
shape takes and keeps.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Final

from ._redact_shapes import CARD, IBAN, IP, PHONE, SSN, splice

__all__ = ["redact_int", "redact_numbers"]

# As in `_redact_shapes`: \d and \w mean ASCII digits and word characters.
_A: Final = re.ASCII

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


def _ipv6_sub(m: re.Match[str]) -> str:
    addr = m["addr"]
    if addr.strip(":") == "":
        return m[0]  # "::" alone says nothing about anyone
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return m[0]
    return IP


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


def redact_int(n: int) -> object:
    # Only 13-19 digit ints can be cards; testing the size first keeps str()
    # away from huge ints (and its int-to-str digit limit).
    if 10**12 <= abs(n) < 10**19 and _is_card_number(str(abs(n))):
        return CARD
    return n


def redact_numbers(s: str) -> str:
    """``s`` with IBANs, phone numbers, IP addresses, SSNs and card numbers replaced.

    IBANs and phone numbers run before cards: their digit groups could
    otherwise hold a Luhn-valid run and be half-redacted.
    """
    s = splice(s, _iban_spans(s), IBAN)
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
