"""The redactor's two rule modules, each on its own, and the order the Redactor runs them in.

``_redact_shapes.redact_secrets`` takes secrets and addresses,
``_redact_numbers.redact_numbers`` the numbers that identify someone; the
Redactor runs secrets first. These tests pin that split: each module takes
its own shapes and leaves the other's alone, and the order decides what a
number under a sensitive key becomes.
"""

from __future__ import annotations

import pytest

from supervisor._core._redact import Redactor
from supervisor._core._redact_numbers import redact_int, redact_numbers
from supervisor._core._redact_shapes import (
    CARD,
    EMAIL,
    IBAN,
    IP,
    PHONE,
    REDACTED,
    SSN,
    TOKEN,
    redact_secrets,
)

#: (text, what redact_secrets makes of it); none of them holds a number shape.
SECRETS = [
    ("password=hunter2 ok", f"password={REDACTED} ok"),
    ("mail bob@example.com now", f"mail {EMAIL} now"),
    ("key sk_live_abcdefgh12345678 used", f"key {TOKEN} used"),
    ("Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
]
#: (text, what redact_numbers makes of it); none of them holds a secret shape.
NUMBERS = [
    ("card 4111 1111 1111 1111 ok", f"card {CARD} ok"),
    ("pay DE89 3704 0044 0532 0130 00 now", f"pay {IBAN} now"),
    ("call +44 20 7946 0958 today", f"call {PHONE} today"),
    ("peer 10.0.0.1:80", f"peer {IP}:80"),
    ("ssn 123-45-6789", f"ssn {SSN}"),
]


class TestEachModuleAlone:
    @pytest.mark.parametrize(("text", "expected"), SECRETS)
    def test_secrets_take_secrets(self, text: str, expected: str) -> None:
        """redact_secrets replaces keys, credentials and addresses."""
        assert redact_secrets(text, ()) == expected

    @pytest.mark.parametrize(("text", "expected"), NUMBERS)
    def test_secrets_leave_numbers(self, text: str, expected: str) -> None:
        """redact_secrets does not touch the number shapes: they are the other module's."""
        assert redact_secrets(text, ()) == text

    @pytest.mark.parametrize(("text", "expected"), NUMBERS)
    def test_numbers_take_numbers(self, text: str, expected: str) -> None:
        """redact_numbers replaces cards, IBANs, phones, IPs and SSNs."""
        assert redact_numbers(text) == expected

    @pytest.mark.parametrize(("text", "expected"), SECRETS)
    def test_numbers_leave_secrets(self, text: str, expected: str) -> None:
        """redact_numbers does not touch secrets or addresses."""
        assert redact_numbers(text) == text

    def test_extra_keys_reach_the_secret_rules(self) -> None:
        """The redactor's extra key names are the secret rules' argument, not a global."""
        assert redact_secrets("pin=1234", ()) == "pin=1234"
        assert redact_secrets("pin=1234", ("pin",)) == f"pin={REDACTED}"

    def test_int_cards(self) -> None:
        """A card number held as an int is a card; other ints stay ints."""
        assert redact_int(4111111111111111) == CARD
        assert redact_int(4111111111111112) == 4111111111111112


class TestOrder:
    def test_secrets_before_numbers(self) -> None:
        """A card number under a sensitive key is a password: [redacted], not [card].

        Numbers first would leave ``password=[card]``, telling the reader the
        password was a card number.
        """
        text = "password=4111111111111111"
        assert redact_numbers(text) == f"password={CARD}"
        assert Redactor().text(text) == f"password={REDACTED}"

    @pytest.mark.parametrize(("text", "expected"), SECRETS + NUMBERS)
    def test_redactor_runs_both(self, text: str, expected: str) -> None:
        """The Redactor applies both modules, and a second pass changes nothing."""
        once = Redactor().text(text)
        assert once == expected
        assert Redactor().text(once) == once
