"""The redaction corpus through :meth:`Redactor.text`: every secret hidden, every innocent kept.

The corpus (``tests/redaction_corpus.py``) is shared with the surface test,
which runs the same samples through a real supervisor. Here each sample is
checked alone, inside a log-like sentence, next to numbers that must survive,
as an ``int`` where it is one, and twice (idempotence).
"""

from __future__ import annotations

import json

import pytest
from redaction_corpus import INNOCENT, POLICY, SECRETS, SHAPES, Secret

from supervisor._core._redact import Redactor
from supervisor._core._redact_shapes import PLACEHOLDERS

RED = Redactor()

#: Shapes whose rule takes the rest of the line (a Cookie header's pairs).
TO_END_OF_LINE = frozenset({"cookie"})


def _ids(secret: Secret) -> str:
    return f"{secret.shape}:{secret.text[:24]}"


class TestCorpusSize:
    """The corpus is as broad as the issue asks."""

    def test_counts(self) -> None:
        """At least 80 secrets over at least 20 shapes, and at least 40 innocent strings."""
        assert len(SECRETS) >= 80
        assert len(SHAPES) >= 20
        assert len(INNOCENT) >= 40

    def test_needles_are_in_their_text(self) -> None:
        """Every needle (what a surface must never show) is part of its sample."""
        for secret in SECRETS:
            for needle in secret.needles:
                assert needle in secret.text, secret


class TestSecrets:
    """Every secret is replaced by its placeholder."""

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_alone(self, secret: Secret) -> None:
        """The sample alone becomes exactly ``redacted``."""
        assert RED.text(secret.text) == secret.redacted

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_in_a_log_line(self, secret: Secret) -> None:
        """Inside a sentence with ticks, durations and a timestamp, only the secret changes."""
        head = "tick 48213 at 2026-12-01T14:26:32Z took 0.000679988 s: "
        tail = " (attempt 3 of 5, v1.2.3)"
        if secret.shape in TO_END_OF_LINE:
            tail = "\n" + tail
        assert RED.text(f"{head}{secret.text}{tail}") == f"{head}{secret.redacted}{tail}"

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_no_needle_survives_in_json(self, secret: Secret) -> None:
        """Redacted inside a structure and serialised, no needle is left, escaped or not."""
        record = RED.value({"message": f"failed for {secret.text}", "args": [secret.text]})
        for dump in (json.dumps(record), json.dumps(record, ensure_ascii=False)):
            for needle in secret.needles:
                assert needle not in dump
                assert json.dumps(needle)[1:-1] not in dump

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_inside_a_repr(self, secret: Secret) -> None:
        """In a repr (``KeyError(msg)``, a captured local) newlines are ``\\n``: still found."""
        out = RED.text(str(KeyError(f"head\n{secret.text}\ntail 'q' \"qq\"")))
        for needle in secret.needles:
            assert needle not in out
            assert repr(needle)[1:-1] not in out
        assert RED.text(out) == out

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_idempotent(self, secret: Secret) -> None:
        """Redacting the redacted text again changes nothing."""
        once = RED.text(f"x {secret.text} y")
        assert RED.text(once) == once

    def test_every_sample_in_one_message(self) -> None:
        """All samples joined in one message: none leaks (rules do not shadow each other)."""
        message = " | ".join(s.text for s in SECRETS)
        out = RED.text(message)
        for secret in SECRETS:
            for needle in secret.needles:
                assert needle not in out, (secret.shape, needle)
        assert RED.text(out) == out

    def test_card_numbers_as_ints(self) -> None:
        """A card number held as an int (a captured local) is redacted too."""
        for secret in SECRETS:
            if secret.shape == "card" and secret.text.isdigit():
                assert RED.value(int(secret.text)) == "[card]"


class TestInnocent:
    """What the logs are full of stays as it is."""

    @pytest.mark.parametrize("item", INNOCENT, ids=lambda i: i.kind)
    def test_unchanged(self, item: object) -> None:
        """The string comes back equal."""
        text = item.text  # type: ignore[attr-defined]
        assert RED.text(text) == text

    def test_innocent_next_to_secrets(self) -> None:
        """Innocent text around a secret is kept around its placeholder."""
        for item in INNOCENT:
            line = f"{item.text} bob@example.com {item.text}"
            assert RED.text(line) == f"{item.text} [email] {item.text}", item.kind


class TestPolicy:
    """Decisions pinned: loopback, near misses, key before shape."""

    @pytest.mark.parametrize(("name", "text", "expected"), POLICY, ids=[p[0] for p in POLICY])
    def test_policy(self, name: str, text: str, expected: str) -> None:
        """Each decision as the module docstring states it."""
        assert RED.text(text) == expected


class TestSnakeCaseNames:
    """Secrets glued into identifiers by ``_`` (gauge names, metric labels) are found."""

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("g_4111111111111111", "g_[card]"),
            ("aws_AKIAIOSFODNN7EXAMPLE", "aws_[token]"),
            ("x_ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ", "x_[token]"),
            ("iban_DE89370400440532013000", "iban_[iban]"),
            ("players_online", "players_online"),
            ("task_live_abcdefghijk", "task_live_abcdefghijk"),
        ],
    )
    def test_identifier(self, name: str, expected: str) -> None:
        """``_`` is a boundary for cards, keys and IBANs; letters and digits are not."""
        assert RED.text(name) == expected


def test_placeholders_match_no_rule() -> None:
    """Every placeholder, alone or joined to digits and separators, is left alone."""
    for placeholder in PLACEHOLDERS:
        for text in (
            placeholder,
            f"{placeholder} 020 7946",
            f"+1 {placeholder}",
            f"{placeholder}@x.org",
        ):
            assert RED.text(RED.text(text)) == RED.text(text)
        assert RED.text(placeholder) == placeholder


class TestFoundByTheSurfaceTestAndHypothesis:
    """Cases that broke on the way: each would fail on the first version of the new rules."""

    def test_key_value_inside_a_keyerror(self) -> None:
        """``str(KeyError(msg))`` is a repr: its quotes are escaped; the value still goes."""
        message = str(KeyError("secret: 'Zebra-Sunset-42' and \"x\""))
        out = RED.text(message)
        assert "Zebra-Sunset-42" not in out
        assert "secret: \\'[redacted]\\'" in out

    def test_key_value_in_escaped_json(self) -> None:
        """Escaped JSON inside a string keeps its shape and loses the value."""
        assert RED.text('{\\"password\\": \\"pw1\\"}') == '{\\"password\\": \\"[redacted]\\"}'

    @pytest.mark.parametrize(
        "text",
        [
            "password://(415) 555-2671",
            "+44 20 7946 0958+44 20 7946 0958",
            "020 7946 0958(415) 555-2671",
            "+44 20 7946 0958020 7946 0958password",
            "020 7946 0958:020 7946 0958",
            '"josé@exämple.com\\"john doe"@x.org',
        ],
    )
    def test_idempotent_on_neighbouring_shapes(self, text: str) -> None:
        """Two shapes side by side: the second pass finds nothing the first did not."""
        once = RED.text(text)
        assert RED.text(once) == once


class TestTextWithin:
    """Redaction before the cut: a secret across the limit is never half-kept."""

    LIMIT = 2000

    def test_short_text_is_just_redacted(self) -> None:
        """Within the limit, text_within is text."""
        assert RED.text_within("mail bob@example.com", self.LIMIT) == "mail [email]"

    def test_secret_across_the_cut_is_gone(self) -> None:
        """An address straddling the limit: cut first it leaves ``straddle.vict``; here nothing."""
        s = "x" * (self.LIMIT - 14) + " straddle.victim@example.com and more"
        cut_first = RED.text(s[: self.LIMIT])
        assert "straddle.vict" in cut_first  # the old order: cut, then redact
        out = RED.text_within(s, self.LIMIT)
        assert "straddle" not in out
        assert out.endswith("...")
        assert len(out) <= self.LIMIT + 3

    @pytest.mark.parametrize("secret", SECRETS, ids=_ids)
    def test_every_shape_at_every_offset_of_the_cut(self, secret: Secret) -> None:
        """Each sample placed so the cut falls inside it, at every position: no needle kept."""
        for offset in range(1, len(secret.text)):
            pad = ("y " * self.LIMIT)[: self.LIMIT - offset - 1] + " "
            out = RED.text_within(pad + secret.text + " tail", self.LIMIT)
            assert len(out) <= self.LIMIT + 3
            for needle in secret.needles:
                assert needle[:12] not in out, offset

    def test_window_shrinking_does_not_keep_its_cut_edge(self) -> None:
        """Long keys shrink to placeholders; the address split by the window's edge is dropped."""
        pem = SECRETS[-4].text  # a multi-line PEM key
        head = (pem + "\n") * 40
        window = max(self.LIMIT * 2, self.LIMIT + 1024)
        pad = window - len(head) - 10
        s = head + "z" * pad + " victim.person@example.com" + "w" * 5000
        out = RED.text_within(s, self.LIMIT)
        assert "victim" not in out
        assert "MII" not in out

    def test_tail_keeps_the_end_redacted(self) -> None:
        """``keep='tail'`` (tracebacks): the start is cut after redaction, the marker first."""
        s = "head 4111 1111 1111 1111 " + "t" * (self.LIMIT - 12) + " error for bob@example.com"
        out = RED.text_within(s, self.LIMIT, keep="tail", marker="...\n")
        assert out.startswith("...\n")
        assert out.endswith("error for [email]")
        assert "4111" not in out
        assert len(out) <= self.LIMIT + 4

    def test_disabled_only_cuts(self) -> None:
        """With redaction off, the text is cut, nothing replaced."""
        off = Redactor(enabled=False)
        assert off.text_within("bob@example.com" * 10, 20) == "bob@example.combob@e..."
