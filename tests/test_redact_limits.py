"""Limits never keep half a secret: cuts at message and traceback bounds, and keys cut in two.

A text cut before it is redacted can split a secret so that no rule knows
either half any more, and the kept half leaks. The core cuts error messages
(``MESSAGE_CHARS``, keeping the head) and tracebacks (``TRACEBACK_CHARS``,
keeping the tail), and bounds the text it redacts at all (``SCAN_CHARS``);
:meth:`Redactor.text_within` is the redactor's own bounded form. Each is
driven here with secrets placed across each cut.
"""

from __future__ import annotations

import pytest
from redaction_corpus import PEM_PKCS8, PEM_RSA

from supervisor import ErrorRecord
from supervisor._core._redact import Redactor
from supervisor._core._redact_shapes import PRIVATE_KEY
from supervisor._core._safecall import MESSAGE_CHARS, SCAN_CHARS, TRACEBACK_CHARS, make_record

RED = Redactor()
IBAN = "DE89 3704 0044 0532 0130 00"
#: A key of realistic size (1,700 base64 characters): it shrinks 130x when redacted.
BIG_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n" * 26
    + "-----END PRIVATE KEY-----"
)


def _record(message: str, note: str | None = None) -> ErrorRecord:
    """The error record the core makes (redacting) of a ValueError raised with ``message``."""
    try:
        error = ValueError(message)
        if note is not None:
            error.add_note(note)
        raise error
    except ValueError as exc:
        return make_record(
            exc,
            time=0.0,
            tick=1,
            system="leaky",
            hook="tick",
            phase="testing",
            gauges={},
            health="healthy",
            traceback_limit=10,
            redact=RED.text,
        )


def _shrinking_head_with_iban_at(cut: int) -> str:
    """Big keys (which redact to almost nothing), then the IBAN across ``cut``, then more."""
    head = (BIG_PEM + "\n") * (cut // (len(BIG_PEM) + 1))
    pad = cut - len(head) - 12
    return head + "z" * pad + " " + IBAN + " tail" + "w" * 100


class TestPemWithoutItsBegin:
    """The tail of a key (its BEGIN line cut away) is still a key."""

    @pytest.mark.parametrize("pem", [PEM_RSA, PEM_PKCS8, BIG_PEM], ids=["rsa", "pkcs8", "big"])
    def test_lines_then_end(self, pem: str) -> None:
        """From any line after BEGIN to END: the base64 lines and END become the placeholder."""
        lines = pem.split("\n")
        for first in range(1, len(lines) - 1):
            tail = "\n".join(lines[first:])
            out = RED.text(f"...\n{tail}\nValueError: bad key")
            assert out == f"...\n{PRIVATE_KEY}\nValueError: bad key", first

    def test_escaped_newlines(self) -> None:
        """The same in a repr, where the newlines are ``\\n``."""
        escaped = PEM_PKCS8.replace("\n", "\\n")
        tail = escaped[escaped.index("\\n", 30) + 2 :]
        assert RED.text(f"key '{tail}' end") == f"key '{PRIVATE_KEY}' end"

    def test_end_line_alone_is_kept(self) -> None:
        """An END line with no key before it says nothing and stays."""
        text = "-----END PRIVATE KEY----- was expected"
        assert RED.text(text) == text

    def test_long_base64_without_end_is_linear(self) -> None:
        """An END first, then 35,000 base64 characters: one pass, nothing changed after it."""
        text = (
            "-----END PRIVATE KEY-----\n" + ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 2 + "\n") * 500
        )
        assert RED.text(text) == text


class TestTextWithin:
    """The redactor's own bounded form against the same placements."""

    def test_iban_at_the_window_edge_of_shrinking_keys(self) -> None:
        """Keys shrink the head below the limit: the IBAN split by the window's cut is dropped."""
        text = _shrinking_head_with_iban_at(max(MESSAGE_CHARS * 2, MESSAGE_CHARS + 1024))
        out = RED.text_within(text, MESSAGE_CHARS)
        assert "3704" not in out
        assert "DE89" not in out

    def test_key_across_the_tail_cut(self) -> None:
        """Keeping the tail: a key whose BEGIN falls before the cut is still redacted whole."""
        filler = "x" * (TRACEBACK_CHARS - 400)
        text = "frame\n" * 2000 + BIG_PEM + "\n" + filler + "\nValueError: bad"
        out = RED.text_within(text, TRACEBACK_CHARS, keep="tail", marker="...\n")
        assert "MIIEvQ" not in out
        assert out.endswith("ValueError: bad")


class TestCoreLimits:
    """The records the core makes (``make_record`` with the redactor), cut at its bounds."""

    def test_message_straddling_the_limit(self) -> None:
        """An address across ``MESSAGE_CHARS``: gone whole, not cut into a kept head."""
        record = _record("x" * (MESSAGE_CHARS - 14) + " straddle.victim@example.com more")
        assert "straddle" not in record.message
        assert "straddle" not in record.traceback

    def test_message_over_the_scan_bound_with_shrinking_keys(self) -> None:
        """Over ``SCAN_CHARS``: an IBAN split at the pre-redaction cut must not be kept.

        Big keys shrink 130x when redacted, so what was cut at ``SCAN_CHARS``
        (at a whitespace, inside the IBAN's grouping) lands within
        ``MESSAGE_CHARS`` after redaction: ``DE89 3704`` is no IBAN any more.
        """
        record = _record(_shrinking_head_with_iban_at(SCAN_CHARS))
        assert "3704" not in record.message, record.message[-80:]
        assert "3704" not in record.traceback

    def test_traceback_over_the_scan_bound_cuts_inside_a_key(self) -> None:
        """A note of keys over ``SCAN_CHARS``: the tail kept starts inside a key, still a key."""
        keys = (BIG_PEM + "\n") * (SCAN_CHARS // len(BIG_PEM) + 2)
        record = _record("bad key", note=keys + "while loading the keys")
        assert len(record.traceback) <= TRACEBACK_CHARS + 8
        assert "MIIEvQ" not in record.traceback
        assert record.traceback.rstrip().endswith("while loading the keys")


class TestTextAfterCut:
    """Text cut while redaction was off, redacted later (entering a redacting phase)."""

    def test_head_cut_inside_an_address(self) -> None:
        """``...straddle.vict...``: the cut edge goes, so the half address does."""
        text = "x" * (MESSAGE_CHARS - 14) + " straddle.victim@example.com"
        cut = text[:MESSAGE_CHARS] + "..."
        assert "straddle.vict" in RED.text(cut)  # redacting the cut text as it is leaks
        out = RED.text_after_cut(cut)
        assert "straddle" not in out
        assert out.endswith("...")

    def test_tail_cut_inside_an_iban(self) -> None:
        """A traceback's kept tail starting inside an IBAN: its last groups go."""
        text = "...\n0532 0130 00 rest of the frame\n" + "frame\n" * 100 + "ValueError: x"
        out = RED.text_after_cut(text, keep="tail", marker="...\n")
        assert "0532" not in out
        assert out.endswith("ValueError: x")

    def test_without_the_marker_it_is_text(self) -> None:
        """Not cut (no marker where ``keep`` says): redacted like any text."""
        assert RED.text_after_cut("mail bob@example.com") == "mail [email]"


class TestHostileShapes:
    """Texts shaped against each rule (their cost is in ``bench/redact.py``): right answers."""

    def test_labels_running_into_an_at(self) -> None:
        """``x@aa.aa...aa@``: the domain runs into a next local part, so no address here."""
        text = "x@" + "aa." * 1000 + "aa@"
        assert RED.text(text) == text

    def test_begin_lines_without_end(self) -> None:
        """BEGIN after BEGIN and no END: each header is a (truncated, empty) key."""
        text = "-----BEGIN PRIVATE KEY-----\n" * 100
        assert RED.text(text) == f"{PRIVATE_KEY}\n" * 100

    def test_keys_without_end_between_begins(self) -> None:
        """A key cut short before the next key's BEGIN: both go, the second whole."""
        lines = PEM_PKCS8.split("\n")
        text = "\n".join(lines[:2]) + "\n" + PEM_PKCS8 + "\nafter"
        assert RED.text(text) == f"{PRIVATE_KEY}\n{PRIVATE_KEY}\nafter"

    @pytest.mark.parametrize("unit", ["12 ", "123 ", "00 ", "+1 ", "DE89 ", "12-"])
    def test_long_runs_of_groups(self, unit: str) -> None:
        """Thousands of digit groups: nothing found, nothing changed, in one pass."""
        text = unit * 1000
        assert RED.text(text) == text
