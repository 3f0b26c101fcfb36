"""Tests for supervisor._core._redact: what is redacted, what is kept, and failing closed."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import traceback
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, cast

import attrs
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor._core._redact import RedactionError, Redactor
from supervisor._core._redact_shapes import (
    BYTES,
    CARD,
    DEFAULT_SENSITIVE_KEYS,
    EMAIL,
    IP,
    REDACTED,
    TOKEN,
)

# (id, input, expected output). Each kind appears alone and inside a message.
MUST_REDACT: list[tuple[str, str, str]] = [
    # e-mail
    ("email", "bob@example.com", EMAIL),
    ("email-plus-subdomain", "mail bob.smith+tag@mail.example.co.uk now", f"mail {EMAIL} now"),
    ("email-in-brackets", "<alice_99@example.org>", f"<{EMAIL}>"),
    ("two-emails-joined", "a@b.cox@c.de", f"a@{EMAIL}"),
    # IPv4
    ("ipv4", "10.0.0.1", IP),
    ("ipv4-port", "peer 192.168.1.20:8080 closed", f"peer {IP}:8080 closed"),
    ("ipv4-sentence-end", "banned 203.0.113.9.", f"banned {IP}."),
    ("ipv4-cidr", "allow 10.0.0.0/8", f"allow {IP}/8"),
    ("ipv4-version-quad", "version 1.2.3.4", f"version {IP}"),
    # IPv6
    ("ipv6-full", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", IP),
    ("ipv6-compressed", "from 2001:db8::8a2e:370:7334 ok", f"from {IP} ok"),
    ("ipv6-loopback", "bound to ::1", f"bound to {IP}"),
    ("ipv6-zone", "link fe80::1%eth0 up", f"link {IP} up"),
    ("ipv6-mapped-v4", "client ::ffff:192.0.2.7", f"client {IP}"),
    ("ipv6-url", "http://[2001:db8::1]:443/x", f"http://[{IP}]:443/x"),
    # bearer tokens and Authorization
    ("bearer", "Bearer abc.DEF-123_x~+/==", f"Bearer {TOKEN}"),
    ("bearer-after-other-header", "X-Upstream: Bearer eyJ0eXAi", f"X-Upstream: Bearer {TOKEN}"),
    ("bearer-lower-long", "sent bearer 0123456789abcdefXYZ", f"sent bearer {TOKEN}"),
    ("authorization-header", "Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
    ("authorization-basic", "authorization=Basic dXNlcjpwYXNz", f"authorization={REDACTED}"),
    # API keys of known shapes
    ("stripe-live", "key sk_live_51Hxyzabcdefghij", f"key {TOKEN}"),
    ("stripe-test", "rk_test_abcdefgh12345678", TOKEN),
    ("openai-style", "sk-proj-abcdefghijklmnopqrstuvwx", TOKEN),
    ("github-pat-classic", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", TOKEN),
    ("github-pat-fine", "github_pat_11ABCDEFG0abcdefghijklmnop", TOKEN),
    ("aws-access-key", "aws AKIAIOSFODNN7EXAMPLE used", f"aws {TOKEN} used"),
    ("slack", "xoxb-1234567890-abcdefghij", TOKEN),
    ("google", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", TOKEN),
    (
        "jwt",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N",
        f"jwt {TOKEN}",
    ),
    ("key-eq-hex", "key=0123456789abcdef0123", f"key={TOKEN}"),
    ("signing-key-b64", "signing_key: 'dGhpcyBpcyBhIHNlY3JldA0K'", f"signing_key: '{TOKEN}'"),
    ("token-eq", "token=abcdef", f"token={REDACTED}"),
    ("api-key-eq", "api_key=0123456789abcdef", f"api_key={REDACTED}"),
    ("api-key-dash", "x-api-key: 12345", f"x-api-key: {REDACTED}"),
    # card numbers (all pass Luhn)
    ("card-plain", "4111111111111111", CARD),
    ("card-spaces", "paid with 4111 1111 1111 1111 today", f"paid with {CARD} today"),
    ("card-dashes", "5555-5555-5555-4444", CARD),
    ("card-amex", "amex 3782 822463 10005", f"amex {CARD}"),
    ("card-13-digits", "4222222222222", CARD),
    ("card-19-digits", "6011 1111 1111 1111 102", CARD),
    ("card-followed-by-amount", "4111 1111 1111 1111 100 EUR", f"{CARD} 100 EUR"),
    # values under sensitive keys
    ("password-eq", "password=hunter2", f"password={REDACTED}"),
    ("db-password", "db_password=hunter2, user=bob", f"db_password={REDACTED}, user=bob"),
    ("x-auth-token", "X-Auth-Token: abc123", f"X-Auth-Token: {REDACTED}"),
    ("passwd-json", '{"passwd": "p a s s"}', f'{{"passwd": "{REDACTED}"}}'),
    ("secret-repr", "{'client_secret': 's3'}", f"{{'client_secret': '{REDACTED}'}}"),
    ("camel-token", "authToken: abc", f"authToken: {REDACTED}"),
    ("session-id", "session_id=9f8e7d", f"session_id={REDACTED}"),
    (
        "kwargs-repr",
        "connect(host='db', password='pw')",
        f"connect(host='db', password='{REDACTED}')",
    ),
    ("escaped-quote", r'password="a\"b" next', f'password="{REDACTED}" next'),
    ("unterminated-quote", 'password="abc', f"password={REDACTED}"),
    ("cookie-header", "Cookie: sid=1; theme=dark\nnext", f"Cookie: {REDACTED}\nnext"),
    ("set-cookie", "Set-Cookie: sid=abc; HttpOnly", f"Set-Cookie: {REDACTED}"),
    (
        "url-userinfo",
        "dsn postgres://alice:pw@db.example.com/x",
        f"dsn postgres://{REDACTED}@db.example.com/x",
    ),
    # several kinds in one message
    (
        "mixed",
        "user bob@example.com at 10.0.0.7 paid 4111-1111-1111-1111 token=t0k",
        f"user {EMAIL} at {IP} paid {CARD} token={REDACTED}",
    ),
]

# Strings that must come back unchanged (the decision for each is in the id).
MUST_KEEP: list[tuple[str, str]] = [
    ("semver", "supervisor 1.2.3 started"),
    ("v-prefixed-version", "v1.2.3 and v1.2.3.4"),
    ("five-part-version", "build 1.2.3.4.5"),
    ("tick-count", "tick 48213 done"),
    ("iso-timestamp", "at 2026-11-21T10:00:00Z and 2026-11-21T10:00:00.123+00:00"),
    ("clock-time", "started 10:00:00, lag 12:34"),
    ("duration", "phase took 0.25s (budget 16.6ms)"),
    ("player-id", "player-1234 joined"),
    ("order-number-fails-luhn", "order 123456789012"),
    ("long-number-fails-luhn", "id 4111111111111112"),
    ("epoch-millis-passes-luhn-but-starts-with-1", "ts 1732183200002"),
    ("commit-ids", "commit abc1234 and deadbeef1234"),
    ("full-sha", "at 3f786850e387550fdab836ed7e6dc881de23001b"),
    ("uuid", "uuid 550e8400-e29b-41d4-a716-446655440000"),
    ("uuid-all-digit-groups", "12345678-1234-1234-1234-123456789012"),
    ("tokenizer-prose", "the tokenizer is slow"),
    ("tokenizer-colon", "tokenizer: loaded 3 rules"),
    ("passwordless-flag", "passwordless=true"),
    ("password-without-separator", "password reset requested"),
    ("keyerror-message", "KeyError: 'token'"),
    ("bearer-prose", "the bearer of the flag"),
    ("short-key-value", "hotkey=F5"),
    ("number-list", "latencies 250 300 410 520 330 ms"),
    ("mac-like", "00:1a:2b:3c:4d:5e"),
    ("cpp-scope", "std::vector"),
    ("unspecified-ipv6-alone", "a :: b"),
    ("user-at-host-no-dot", "root@localhost"),
    ("placeholders", f"{EMAIL} {IP} {TOKEN} {CARD} {REDACTED} {BYTES}"),
    ("empty", ""),
    ("unicode", "joueur « Zoë » a quitté la partie 🎮"),
]

FORMATTED_TRACEBACK = """\
Traceback (most recent call last):
  File "/srv/supervisor/systems/auth.py", line 42, in login
    conn = store.open(user="carol@example.net", ip="198.51.100.23")
  File "/srv/supervisor/_safecall.py", line 7, in call
    raise AuthError(f"denied for {user}")
supervisor.AuthError: denied for carol@example.net from 2001:db8::42 with \
Authorization: Bearer eyJ0eXAiOiJKV1Qi and card 4111 1111 1111 1111 (password=hunter2)
"""

EXPECTED_TRACEBACK = f"""\
Traceback (most recent call last):
  File "/srv/supervisor/systems/auth.py", line 42, in login
    conn = store.open(user="{EMAIL}", ip="{IP}")
  File "/srv/supervisor/_safecall.py", line 7, in call
    raise AuthError(f"denied for {{user}}")
supervisor.AuthError: denied for {EMAIL} from {IP} with \
Authorization: {REDACTED} and card {CARD} (password={REDACTED})
"""

LEAKS = (
    "carol@example.net",
    "198.51.100.23",
    "2001:db8::42",
    "eyJ0eXAiOiJKV1Qi",
    "4111",
    "hunter2",
)


class Color(enum.Enum):
    """An enum whose value looks like an e-mail, to prove enums are kept."""

    RED = "red@example.com"


class Point(NamedTuple):
    """A named tuple: redacted into a plain tuple."""

    x: int
    label: str


@attrs.define
class AttrsRecord:
    """An attrs record as error history might hold it."""

    player: str
    api_token: str
    tick: int


@dataclasses.dataclass
class DataRecord:
    """A dataclass record, for the same conversion."""

    email: str
    password: str


class ReprRaises:
    """An object whose repr fails, as a broken captured value would."""

    def __repr__(self) -> str:
        raise ValueError("repr failed for bob@example.com")


class IterRaises(list[int]):
    """A list whose iteration fails."""

    def __iter__(self) -> Iterator[int]:
        raise RuntimeError("iteration failed")


def nested_lists(depth: int) -> list[Any]:
    """Return a list nested ``depth`` levels deep."""
    root: list[Any] = []
    node = root
    for _ in range(depth - 1):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


def captured_traceback() -> str:
    """Raise and format a real traceback with locals captured."""

    def handler(player_email: str) -> None:
        password = "hunter2"
        peer = "203.0.113.77"
        raise ConnectionError(f"login failed for {player_email} from {peer}, {password=}")

    try:
        handler("dave@example.com")
    except ConnectionError as exc:
        return "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
    raise AssertionError("unreachable")


class TestTextCorpus:
    """Redactor.text on the corpus of things to hide and things to keep."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [pytest.param(src, exp, id=name) for name, src, exp in MUST_REDACT],
    )
    def test_redacts(self, source: str, expected: str) -> None:
        """Each kind of personal data or secret is replaced by its typed placeholder."""
        assert Redactor().text(source) == expected

    @pytest.mark.parametrize("source", [pytest.param(src, id=name) for name, src in MUST_KEEP])
    def test_keeps(self, source: str) -> None:
        """Versions, ticks, timestamps, ids, Luhn failures, UUIDs and prose pass unchanged."""
        assert Redactor().text(source) == source

    def test_fast_path_returns_same_object(self) -> None:
        """A string with no digit, '@', ':', '=' or key prefix is returned as is, not copied."""
        s = "the heartbeat system finished its phase without trouble"
        assert Redactor().text(s) is s

    def test_extra_keys_apply_to_text(self) -> None:
        """Configured extra keys are recognised in key=value text as well."""
        r = Redactor(extra_keys=("pin", "X-Shard-Ref"))
        assert (
            r.text("pin=1234 shard_ref=2 spinner: ok") == f"pin={REDACTED} shard_ref=2 spinner: ok"
        )
        assert r.text("x.shard.ref: 7") == f"x.shard.ref: {REDACTED}"
        assert Redactor().text("pin=1234") == "pin=1234"


class TestTraceback:
    """Redactor.text on formatted Python tracebacks."""

    def test_formatted_traceback_string(self) -> None:
        """Every kind inside a traceback is redacted and its frame lines survive intact."""
        assert Redactor().text(FORMATTED_TRACEBACK) == EXPECTED_TRACEBACK

    def test_real_traceback_with_locals(self) -> None:
        """A real traceback with captured locals keeps its shape but loses the values."""
        tb = captured_traceback()
        assert "dave@example.com" in tb
        assert "hunter2" in tb
        out = Redactor().text(tb)
        for leak in ("dave@example.com", "hunter2", "203.0.113.77"):
            assert leak not in out
        assert out.startswith("Traceback (most recent call last):")
        assert "in handler" in out
        assert f"password = '{REDACTED}'" in out
        assert f"ConnectionError: login failed for {EMAIL} from {IP}" in out


class TestValue:
    """Redactor.value over nested structures."""

    def test_nested_error_record(self) -> None:
        """Strings at any depth are redacted and sensitive keys lose their whole value."""
        record = {
            "error": "ValueError: bad card 4111 1111 1111 1111",
            "context": {
                "player": {"email": "a@b.co", "ip": "10.0.0.9", "ids": ["player-1234"]},
                "headers": {
                    "Authorization": "Bearer abc",
                    "X-Auth-Token": ["t1", "t2"],
                    "Accept": "application/json",
                },
            },
            "history": [{"tick": 12, "msg": "from 2001:db8::1"}, ("ok", 10.5)],
            "config": {"db_password": "x", "API-KEY": 42, "session": {"id": 5}},
            "traceback": FORMATTED_TRACEBACK,
        }
        assert Redactor().value(record) == {
            "error": f"ValueError: bad card {CARD}",
            "context": {
                "player": {"email": EMAIL, "ip": IP, "ids": ["player-1234"]},
                "headers": {
                    "Authorization": REDACTED,
                    "X-Auth-Token": REDACTED,
                    "Accept": "application/json",
                },
            },
            "history": [{"tick": 12, "msg": f"from {IP}"}, ("ok", 10.5)],
            "config": {"db_password": REDACTED, "API-KEY": REDACTED, "session": REDACTED},
            "traceback": EXPECTED_TRACEBACK,
        }

    def test_serialised_record_has_no_leak(self) -> None:
        """After redaction, no original secret appears anywhere in the JSON form."""
        record = {
            "tb": FORMATTED_TRACEBACK,
            "values": [{"password": "hunter2", "peers": ["198.51.100.23", "2001:db8::42"]}],
        }
        dumped = json.dumps(Redactor().value(record))
        for leak in LEAKS:
            assert leak not in dumped

    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "PASSWORD",
            "db_password",
            "X-Auth-Token",
            "apiKey",
            "api-key",
            "Cookie",
            "session_count",
            "tokenizer",
            "client.secret",
            "passwd",
            "refresh_token",
        ],
    )
    def test_sensitive_keys_match_by_substring(self, key: str) -> None:
        """Mapping keys match case-insensitively and by substring, with - and . as _."""
        assert Redactor().value({key: "plain"}) == {key: REDACTED}

    def test_harmless_keys_are_not_masked(self) -> None:
        """Keys without a sensitive word keep their (clean) values."""
        data = {"player": "p1", "tick": 3, "keyboard": "qwerty", "author": "x"}
        assert Redactor().value(data) == data

    def test_none_and_empty_under_sensitive_key_are_kept(self) -> None:
        """A missing or empty secret stays visible, since that is the usual config fault."""
        assert Redactor().value({"password": None, "token": ""}) == {
            "password": None,
            "token": "",
        }

    def test_extra_keys(self) -> None:
        """extra_keys add sensitive names, normalised like the defaults."""
        r = Redactor(extra_keys=("Shard-PIN",))
        assert r.extra_keys == ("shard_pin",)
        assert r.value({"shard_pin": 1, "my.shard.pin": 2, "pin": 3}) == {
            "shard_pin": REDACTED,
            "my.shard.pin": REDACTED,
            "pin": 3,
        }

    def test_scalars(self) -> None:
        """Numbers, None, enums, dates and UUIDs are kept; card-like ints become [card]."""
        when = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC)
        uid = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
        items: list[object] = [
            None,
            True,
            7,
            2.5,
            decimal.Decimal("1.10"),
            when,
            uid,
            Color.RED,
            10**40,
        ]
        r = Redactor()
        for item in items:
            assert r.value(item) is item
        assert r.value(4111111111111111) == CARD
        assert r.value(-4111111111111111) == CARD
        assert r.value(4111111111111112) == 4111111111111112

    def test_bytes_become_placeholder(self) -> None:
        """bytes, bytearray and memoryview are never decoded: they become [bytes]."""
        r = Redactor()
        assert r.value([b"a@b.co", bytearray(b"x"), memoryview(b"y")]) == [BYTES] * 3

    def test_container_types(self) -> None:
        """Lists, tuples, sets and frozensets come back as new containers of the base type."""
        r = Redactor()
        assert r.value(("a@b.co", 1)) == (EMAIL, 1)
        assert r.value({"a@b.co", "x"}) == {EMAIL, "x"}
        assert r.value(frozenset({"10.0.0.1"})) == frozenset({IP})
        point = r.value(Point(1, "a@b.co"))
        assert type(point) is tuple
        assert point == (1, EMAIL)

    def test_keys_are_redacted_and_collisions_kept(self) -> None:
        """Keys are redacted too; two keys redacting alike get a #n suffix, not a merge."""
        out = Redactor().value({"a@b.co": 1, "c@d.co": 2, ("10.0.0.1", 3): "v"})
        assert out == {EMAIL: 1, f"{EMAIL}#2": 2, (IP, 3): "v"}

    def test_attrs_and_dataclass_become_dicts(self) -> None:
        """attrs and dataclass instances become dicts of redacted fields."""
        r = Redactor()
        assert r.value(AttrsRecord("p@x.io", "t0k", 9)) == {
            "player": EMAIL,
            "api_token": REDACTED,
            "tick": 9,
        }
        assert r.value([DataRecord("q@x.io", "pw")]) == [{"email": EMAIL, "password": REDACTED}]

    def test_unknown_objects_become_redacted_repr(self) -> None:
        """Other objects are replaced by their repr, redacted, so str() later cannot leak."""
        assert Redactor().value(ValueError("bad bob@example.com")) == f"ValueError('bad {EMAIL}')"

    def test_input_is_not_mutated(self) -> None:
        """The input structure is left exactly as it was and no container is reused."""
        data: dict[str, Any] = {
            "user": {"email": "a@b.co", "tags": ["10.0.0.1", {"password": "pw"}]},
            "pair": ("x", ["4111111111111111"]),
            "set": {"a@b.co"},
        }
        before = copy.deepcopy(data)
        out = Redactor().value(data)
        assert data == before
        assert isinstance(out, dict)
        assert out is not data
        assert out["user"] is not data["user"]
        assert out["user"]["tags"] is not data["user"]["tags"]
        assert out["pair"][1] is not data["pair"][1]

    def test_too_deep_raises(self) -> None:
        """Nesting beyond max_depth raises RedactionError; up to it is fine."""
        r = Redactor(max_depth=8)
        assert r.value(nested_lists(8)) == nested_lists(8)
        with pytest.raises(RedactionError, match="max_depth=8"):
            r.value(nested_lists(9))

    def test_cycle_raises(self) -> None:
        """A self-referencing structure hits the depth limit instead of recursing forever."""
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(RedactionError):
            Redactor().value(loop)

    def test_failing_repr_is_wrapped_without_its_message(self) -> None:
        """A raising __repr__ becomes RedactionError whose text omits the original message."""
        with pytest.raises(RedactionError) as info:
            Redactor().value({"x": ReprRaises()})
        assert "ValueError" in str(info.value)
        assert "bob@example.com" not in str(info.value)
        assert info.value.__suppress_context__


class TestRecord:
    """Redactor.record: redaction of whole records, failing closed."""

    def test_redacts_and_returns_new_dict(self) -> None:
        """A good record comes back redacted as a new dict and nothing is dropped."""
        r = Redactor()
        src = {"msg": "hi a@b.co", "token": "t"}
        assert r.record(src) == {"msg": f"hi {EMAIL}", "token": REDACTED}
        assert src == {"msg": "hi a@b.co", "token": "t"}
        assert r.dropped == 0

    @pytest.mark.parametrize(
        "bad",
        [
            pytest.param(ReprRaises(), id="repr-raises"),
            pytest.param(IterRaises([1]), id="iteration-raises"),
            pytest.param(nested_lists(40), id="too-deep"),
        ],
    )
    def test_fails_closed(self, bad: object) -> None:
        """When redaction raises, the record is dropped (None) and counted once."""
        r = Redactor()
        assert r.record({"ok": "fine", "bad": bad}) is None
        assert r.dropped == 1
        assert r.record({"ok": "fine"}) == {"ok": "fine"}
        assert r.dropped == 1

    def test_non_mapping_is_dropped(self) -> None:
        """Something that is not a mapping at run time is dropped, not passed through."""
        r = Redactor()
        assert r.record(cast("Mapping[str, Any]", ["a@b.co"])) is None
        assert r.dropped == 1

    def test_base_exceptions_propagate(self) -> None:
        """KeyboardInterrupt (like trio.Cancelled) is not swallowed as a drop."""

        class Interrupting:
            def __repr__(self) -> str:
                raise KeyboardInterrupt

        r = Redactor()
        with pytest.raises(KeyboardInterrupt):
            r.record({"x": Interrupting()})
        assert r.dropped == 0


class TestStructlogProcessor:
    """Redactor.structlog_processor inside a real structlog chain."""

    @staticmethod
    def logger(redactor: Redactor) -> Any:
        """A structlog logger rendering JSON after the redaction processor."""
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[redactor.structlog_processor(), structlog.processors.JSONRenderer()],
        )

    def test_redacts_event(self) -> None:
        """The event message and its fields are redacted before rendering."""
        line = self.logger(Redactor()).info("login from a@b.co", ip="10.0.0.1", password="pw")
        assert json.loads(line) == {"event": f"login from {EMAIL}", "ip": IP, "password": REDACTED}

    def test_drops_event_on_failure(self) -> None:
        """A failing redaction raises DropEvent, so the event is not logged, and is counted."""
        r = Redactor()
        processor = r.structlog_processor()
        with pytest.raises(structlog.DropEvent):
            processor(None, "info", {"event": "x", "value": ReprRaises()})
        assert r.dropped == 1
        assert self.logger(r).info("x", value=ReprRaises()) is None
        assert r.dropped == 2

    def test_structlog_meta_keys_pass_untouched(self) -> None:
        """ProcessorFormatter's _record/_from_structlog keep their live objects."""
        record = logging.LogRecord("x", logging.INFO, "f.py", 1, "a@b.co", None, None)
        out = Redactor().structlog_processor()(
            None, "info", {"event": "a@b.co", "_record": record, "_from_structlog": True}
        )
        assert out == {"event": EMAIL, "_record": record, "_from_structlog": True}
        assert out["_record"] is record

    def test_disabled_passes_event_through(self) -> None:
        """With enabled=False the processor returns the very same event dict."""
        event: dict[str, Any] = {"event": "a@b.co"}
        assert Redactor(enabled=False).structlog_processor()(None, "info", event) is event


class TestDisabled:
    """A disabled Redactor is the identity."""

    def test_identity(self) -> None:
        """text, value and record return their inputs unchanged (same objects)."""
        r = Redactor(enabled=False)
        s = "bob@example.com password=x 4111111111111111"
        data: dict[str, Any] = {"password": "x", "deep": nested_lists(100), "bad": ReprRaises()}
        assert r.text(s) is s
        assert r.value(data) is data
        assert r.record(data) is data
        assert r.dropped == 0


class TestConfig:
    """Validation of Redactor's configuration fields."""

    def test_extra_keys_single_string_rejected(self) -> None:
        """A bare string would turn every character into a key; it is refused."""
        with pytest.raises(TypeError):
            Redactor(extra_keys="pin")

    @pytest.mark.parametrize("blank", ["", "  ", "-", "_."])
    def test_extra_keys_blank_rejected(self, blank: str) -> None:
        """A blank key name would match every key; it is refused."""
        with pytest.raises(ValueError, match="blank"):
            Redactor(extra_keys=(blank,))

    def test_max_depth_positive(self) -> None:
        """max_depth below 1 is refused."""
        with pytest.raises(ValueError, match="max_depth"):
            Redactor(max_depth=0)

    def test_defaults_cover_the_brief(self) -> None:
        """The default sensitive words include every key name the spec requires."""
        for word in (
            "password",
            "passwd",
            "token",
            "secret",
            "authorization",
            "api_key",
            "apikey",
            "cookie",
            "session",
        ):
            assert word in DEFAULT_SENSITIVE_KEYS


# Fragments that collide with the patterns far more often than random text does.
FRAGMENTS = [
    "password",
    "token",
    "Token",
    "tokenizer",
    "key",
    "api_key",
    "=",
    ":",
    " ",
    "\n",
    "@",
    "a",
    "b.co",
    ".",
    "1",
    "0",
    "4111111111111111",
    "4111",
    "-",
    "Bearer ",
    "bearer ",
    REDACTED,
    TOKEN,
    IP,
    EMAIL,
    CARD,
    "::",
    "ffff",
    "10.0.0.1",
    "'",
    '"',
    "\\",
    "sk_live_",
    "x" * 20,
    "0123456789abcdef0123",
    "://",
    "Cookie: ",
    "_",
    "]",
    "[",
    "%",
    "eyJabcdef",
    "AKIA",
    "ABCDEFGHIJ123456",
    "ghp_",
    "AIza",
    "s",
    "id",
    "Authorization",
    "dead:beef",
    "3782 822463 10005",
    # the shapes added for issue 8
    "+",
    "(",
    ")",
    "+44 20 7946 0958",
    "020 7946 0958",
    "(415) 555-2671",
    "415.555.2671",
    "078-05-1120",
    "0049 30",
    "DE89 3704 0044 0532 0130 00",
    "NL91ABNA0417164300",
    "GB82",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "\\n",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "é",
    "josé@exämple.com",
    '"john doe"@x.org',
    "xn--",
    "https://u:p@ss/w@h",
    "glpat-",
    "npm_",
    "_",
    "[phone]",
    "[iban]",
    "[ssn]",
    "[private key]",
    "0.000123",
    "1-800-555-0199",
    "%40",
    " 0",
]
tricky_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=20).map(
    "".join
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["password", "msg", "a@b.co", "x", "tick"]) | tricky_text,
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


class TestProperties:
    """Properties of text() and value() over generated input."""

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(), tricky_text))
    def test_text_total_and_idempotent(self, s: str) -> None:
        """text() never raises on any string, and redacting twice equals redacting once."""
        r = Redactor()
        once = r.text(s)
        assert r.text(once) == once

    @settings(max_examples=100, deadline=None)
    @given(json_like)
    def test_value_idempotent_and_non_mutating(self, obj: object) -> None:
        """value() leaves its input untouched and a second pass changes nothing."""
        before = copy.deepcopy(obj)
        r = Redactor()
        once = r.value(obj)
        assert obj == before
        assert r.value(once) == once
