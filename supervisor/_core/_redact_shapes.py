"""The shapes of secrets and addresses in text, and the sensitive key names.

The first half of :class:`._redact.Redactor`'s rules: PEM private keys,
``Cookie:`` headers, ``key=value`` secrets (the sensitive words of
:data:`DEFAULT_SENSITIVE_KEYS` plus a redactor's extra keys), long values
after a ``...key=``, URL userinfo, ``Bearer`` credentials, API keys of known
shapes and e-mail addresses; plus the placeholders every rule writes. The
number shapes (IBANs, phones, IPs, SSNs, cards) are :mod:`._redact_numbers`.
The module docstring of :mod:`._redact` lists what each placeholder replaces
and the decisions behind each rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final

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
    "TRIGGER_CHARS",
    "convert_extra_keys",
    "key_words",
    "might_hold_prefix",
    "normalise_key",
    "redact_secrets",
    "sensitive_key",
    "splice",
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

#: Every placeholder the redactor writes (none of them matches any rule).
PLACEHOLDERS: Final = (EMAIL, IP, TOKEN, CARD, REDACTED, BYTES, IBAN, PHONE, SSN, PRIVATE_KEY)

#: Mapping keys holding one of these words (after normalise_key) are redacted whole.
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

_KEY_NORMALISER: Final = str.maketrans({"-": "_", ".": "_", " ": "_"})

# All patterns use re.ASCII: \d, \w and \s then mean what the shapes of
# addresses, keys and card numbers mean, and a non-ASCII digit is never a card.
_A: Final = re.ASCII
_AI: Final = re.ASCII | re.IGNORECASE

# Fast-path gate: a string without any of these characters and without a
# known key prefix (`might_hold_prefix`) cannot match a rule. '=' is here
# because `password=hunter` has no digit, '@' or ':'.
TRIGGER_CHARS: Final = re.compile(r"[0-9@:=]")

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


def might_hold_prefix(s: str) -> bool:
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


def normalise_key(key: str) -> str:
    return key.lower().translate(_KEY_NORMALISER)


def convert_extra_keys(keys: Iterable[str]) -> tuple[str, ...]:
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
        norm = normalise_key(key.strip())
        if not norm.strip("_"):
            raise ValueError(f"extra_keys entry {key!r} is blank and would match every key")
        out.append(norm)
    return tuple(out)


@functools.lru_cache(maxsize=32)
def key_words(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Return the normalised sensitive words, longest first, for ``extra``."""
    words = {normalise_key(w) for w in DEFAULT_SENSITIVE_KEYS} | set(extra)
    return tuple(sorted(words, key=lambda w: (-len(w), w)))


@functools.lru_cache(maxsize=1024)
def sensitive_key(key: str, extra: tuple[str, ...]) -> bool:
    """Whether mapping key ``key`` holds a sensitive word (cached: keys repeat)."""
    norm = normalise_key(key)
    return any(w in norm for w in key_words(extra))


@functools.lru_cache(maxsize=32)
def _gate_words(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Cheap substrings that must occur (lower-cased) for a text key to match.

    The first four characters of a word's first ``_``-separated part: text may
    write ``api_key`` as ``apikey`` or ``API-Key``, and all of them contain
    ``api``. Fewer, shorter words make this test cheaper (``pass`` covers three
    defaults); a false hit only costs running the exact pattern.
    """
    firsts = {next(p for p in w.split("_") if p)[:4] for w in key_words(extra)}
    return tuple(sorted(p for p in firsts if not any(q != p and q in p for q in firsts)))


_PLACEHOLDER_REST: Final = r"(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS) + r")\]"


@functools.lru_cache(maxsize=32)
def _kv_pattern(extra: tuple[str, ...]) -> re.Pattern[str]:
    """Compile the text ``key=value`` rule for the default plus ``extra`` keys."""
    words = key_words(extra)
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


def splice(s: str, spans: Iterator[tuple[int, int]], placeholder: str) -> str:
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


def redact_secrets(s: str, extra: tuple[str, ...]) -> str:
    """``s`` with PEM keys, key=value secrets, credentials, API keys and addresses replaced.

    Each rule runs only behind a cheap necessary condition (a word, a
    character), so a line pays only for the rules it might match.

    Args:
        s: Text past the fast-path gate, its ``\\n`` escapes stood in for.
        extra: The redactor's extra sensitive key names (normalised).
    """
    # A PEM block goes first, whole (`private_key: -----BEGIN ...` must not
    # leave the body to the key rule, which takes one word). Key-based rules
    # run next so `password=a@b.com` becomes `password=[redacted]`, not
    # `...=[email]`.
    if "PRIVATE KEY" in s:
        s = splice(s, _pem_spans(s), PRIVATE_KEY)
        if "PRIVATE KEY" in s:
            s = splice(s, _pem_tail_spans(s), PRIVATE_KEY)
    low = s.lower()
    has_sep = ":" in s or "=" in s
    if "cookie" in low and ":" in s:
        s = _COOKIE_HEADER.sub(_head_sub(REDACTED), s)
    if has_sep:
        if any(map(low.__contains__, _gate_words(extra))):
            s = _kv_pattern(extra).sub(_kv_sub, s)
        if "key" in low:
            s = _GENERIC_KEY.sub(_head_sub(TOKEN), s)
    if "@" in s and "://" in s:
        s = _URL_USERINFO.sub(f"{REDACTED}@", s)
    if "earer" in s:
        s = _BEARER.sub(_bearer_sub, s)
    if might_hold_prefix(s):
        s = _API_KEY.sub(TOKEN, s)
    if "@" in s:
        s = splice(s, _email_spans(s, _EMAIL_DOMAIN), EMAIL)
    if "%40" in s:
        s = splice(s, _email_spans(s, _EMAIL_DOMAIN_ENCODED), EMAIL)
    return s
