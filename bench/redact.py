"""Redactor.text cost per typical log line, and a whole log event with and without redaction.

Each line is redacted ``NUMBER`` times per run, best of ``REPEAT`` runs
(``timeit``), reported in microseconds per call. The lines are what the
supervisor's logs carry: prose without digits (the fast path), JSON-ish event
lines full of numbers (ticks, ISO timestamps, durations, versions, addresses)
with nothing to redact, and lines holding one secret of a common shape. Then
one ``system.error`` log event (eight fields) through ``configure_logging``
into memory, in both formats, without and with the redaction processor. Last,
hostile 32 KiB texts (the most the core redacts at once, ``SCAN_CHARS``)
shaped against each rule: milliseconds for one call, which must grow
linearly (a quadratic rule shows up here as hundreds of milliseconds).

Run: ``python -m bench.redact [--json FILE]``.
"""

from __future__ import annotations

import functools
import io
import sys
import timeit
from typing import Any

import structlog

from bench import _common
from supervisor import configure_logging
from supervisor._core._redact import Redactor

NUMBER = 20_000
REPEAT = 5

LINES: dict[str, str] = {
    "prose, fast path": (
        "system economy stopped gracefully after the operator asked for it; "
        "players were moved to the lobby and the world state was preserved as expected "
        "by the configuration of this particular deployment"
    ),
    "event line with numbers, nothing found": (
        "tick=48213 system=economy step=0.000679988 lateness=0.000123 budget=0.0333 "
        "at 2026-12-01T14:26:32.123456Z version 1.2.3 rss=45678592 players=1200 "
        "sha256:3f786850e387550fdab836ed7e6dc881de23001b4f1a2b3c4d5e6f7081920a1b"
    ),
    "line with one e-mail": (
        "player login failed for josé.garcía@exämple.com after 3 attempts in 0.25s; "
        "account locked until the operator releases it from the admin console, tick 4821"
    ),
    "line with one phone number": (
        "support callback requested by player 1234 at +44 20 7946 0958, queue position 12, "
        "expected wait 4.5 minutes, agent pool of 7 with 2 busy and 5 idle at tick 99812"
    ),
    "line with one key=value secret": (
        "connecting to the datastore with session_id=9f8e7d6c5b4a3f2e1d0c at tick 4821 "
        "after 2 retries; the pool holds 16 connections and 3 are idle right now ok"
    ),
    "line with one IBAN": (
        "payout of 120.50 EUR to DE89 3704 0044 0532 0130 00 queued at tick 4821 by the "
        "economy system; settlement expected within 2 business days, batch 77"
    ),
}


def measure() -> dict[str, float]:
    """Microseconds per ``Redactor.text`` call for each line (best of REPEAT)."""
    red = Redactor()
    out: dict[str, float] = {}
    for name, line in LINES.items():
        best = min(timeit.repeat(functools.partial(red.text, line), number=NUMBER, repeat=REPEAT))
        out[name] = round(best / NUMBER * 1e6, 2)
    off = Redactor(enabled=False)
    line = LINES["event line with numbers, nothing found"]
    best = min(timeit.repeat(functools.partial(off.text, line), number=NUMBER, repeat=REPEAT))
    out["any line, enabled=False"] = round(best / NUMBER * 1e6, 3)
    return out


EVENT: dict[str, Any] = {
    "system": "economy",
    "hook": "tick",
    "tick": 48213,
    "error": "ValueError",
    "message": "purchase 1234 failed after 0.000679988 s (attempt 3 of 5)",
    "fingerprint": "3e03b914f472",
    "kind": "error",
}


def measure_events() -> dict[str, float]:
    """Microseconds per log event through the whole processor chain, per format."""
    out: dict[str, float] = {}
    for fmt in ("json", "console"):
        for label, processors in (
            ("no redaction", ()),
            ("redacted", (Redactor().structlog_processor(),)),
        ):
            configure_logging(fmt, stream=io.StringIO(), processors=processors)
            log = structlog.get_logger()
            call = functools.partial(log.info, "system.error", **EVENT)
            best = min(timeit.repeat(call, number=NUMBER // 4, repeat=REPEAT))
            out[f"log event, {fmt}, {label}"] = round(best / (NUMBER // 4) * 1e6, 2)
    structlog.reset_defaults()
    return out


HOSTILE_CHARS = 32_768

HOSTILE: dict[str, str] = {
    "labels then @": "x@" + "aa." * (HOSTILE_CHARS // 3) + "aa@",
    "2-digit groups": "12 " * (HOSTILE_CHARS // 3),
    "3-digit groups": "123 " * (HOSTILE_CHARS // 4),
    "+ groups": "+1 " * (HOSTILE_CHARS // 3),
    "BEGIN lines, no END": "-----BEGIN PRIVATE KEY-----\n" * (HOSTILE_CHARS // 28),
    "card groups": "4111 " * (HOSTILE_CHARS // 5),
    "IBAN heads": "DE89 " * (HOSTILE_CHARS // 5),
    "password= runs": "password=" * (HOSTILE_CHARS // 9),
}


def measure_hostile() -> dict[str, float]:
    """Milliseconds for one ``Redactor.text`` call on each hostile text (best of REPEAT)."""
    red = Redactor()
    return {
        f"hostile 32 KiB: {name} (ms)": round(
            min(timeit.repeat(functools.partial(red.text, text), number=1, repeat=REPEAT)) * 1e3,
            2,
        )
        for name, text in HOSTILE.items()
    }


def main(argv: list[str] | None = None) -> None:
    """Print the figures (and write them as JSON with ``--json``)."""
    args = _common.parser(__doc__).parse_args(argv)
    figures = {**measure(), **measure_events(), **measure_hostile()}
    width = max(map(len, figures))
    for name, us in figures.items():
        unit = "" if name.endswith("(ms)") else " us"
        sys.stdout.write(f"{name:<{width}}  {us:8.2f}{unit}\n")
    _common.write_json(args.json, figures)


if __name__ == "__main__":
    main()
