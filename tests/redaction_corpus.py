"""The redaction corpus: secrets of every shape, and innocent text that must stay.

Shared by the unit tests (``tests/test_redact_corpus.py``: every sample
through :meth:`Redactor.text`) and the surface test
(``tests/test_redact_surfaces.py``: every sample through a running
supervisor, then every surface read back). Plain data, no imports from
``supervisor``, so a system under test can import it by path.

Each :class:`Secret` names its shape, the text as it appears in a message,
the text :meth:`Redactor.text` must turn it into, and ``needles``: the parts
that must never be seen on any surface (the secret part; the key name in
``password=...`` is not secret).

The placeholders are written out here (not imported) so that the corpus pins
them: a renamed placeholder is a visible change to every test.
"""

from __future__ import annotations

from typing import NamedTuple


class Secret(NamedTuple):
    """One secret sample."""

    shape: str
    text: str
    redacted: str
    needles: tuple[str, ...]


class Innocent(NamedTuple):
    """A string the redactor must return unchanged, and why it is innocent."""

    kind: str
    text: str


def _s(shape: str, text: str, redacted: str, *needles: str) -> Secret:
    return Secret(shape, text, redacted, needles or (text,))


PEM_RSA = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_PKCS8 = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----"
)
PEM_OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBXHG4wUuS5bbgpBfRWzcJvUFfxwtBX9RBhkbqSWZgW9wAAAJgWzTyZFs08\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
PEM_EC_TRUNCATED = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBYr1vYzl7Jp8mKqGd3XH6Q9sT0vW2a3b4c5d6e7f8g9oAoGCCqGSM49\n"
    "AwEHoUQDQgAE3Jt9k2Yq4xQeJpR7s8TnV0uWc1dZ"
)

# Valid Luhn / mod-97 / shape samples: public test numbers, never real ones.
SECRETS: tuple[Secret, ...] = (
    # --- e-mail addresses
    _s("email", "bob@example.com", "[email]"),
    _s("email", "bob.smith+tag@mail.example.co.uk", "[email]"),
    _s("email", "alice_99@example.org", "[email]"),
    _s("email", "o.connor-x@sub.example-mail.io", "[email]"),
    _s("email-nonascii", "josé.garcía@exämple.com", "[email]"),
    _s("email-nonascii", "müller@bücher.de", "[email]"),
    _s("email-nonascii", "дмитрий@пример.рф", "[email]"),
    _s("email-nonascii", "zoë@xn--exmple-cua.com", "[email]"),
    _s("email-urlencoded", "bob.jones%40example.com", "[email]"),
    _s("email-urlencoded", "?to=ann%2Bx%40mail.example.org&x=1", "?to=[email]&x=1", "mail.example"),
    _s("email-quoted", '"john doe"@example.com', "[email]", "john doe"),
    _s("email-quoted", '"jane.q@home"@example.net', "[email]", "jane.q@home"),
    # --- URL credentials
    _s(
        "url-credentials",
        "https://user:p@ss/w0rd@host.example.com/",
        "https://[redacted]@host.example.com/",
        "p@ss/w0rd",
        "user:p@ss",
    ),
    _s(
        "url-credentials",
        "postgres://alice:s3cr3t-Pw@db.example.com:5432/game",
        "postgres://[redacted]@db.example.com:5432/game",
        "s3cr3t-Pw",
    ),
    _s(
        "url-credentials",
        "redis://default:c0l0n:in:pass@cache:6379/0",
        "redis://[redacted]@cache:6379/0",
        "c0l0n:in:pass",
    ),
    _s(
        "url-credentials",
        "amqp://bob@example.com:h4sh#tag@mq.example.com/vhost",
        "amqp://[redacted]@mq.example.com/vhost",
        "h4sh#tag",
        "bob@example.com",
    ),
    # --- IP addresses
    _s("ipv4", "203.0.113.9", "[ip]"),
    _s("ipv4", "198.51.100.23:8080", "[ip]:8080", "198.51.100.23"),
    _s("ipv4", "10.20.30.40/24", "[ip]/24", "10.20.30.40"),
    _s("ipv6", "2001:db8:85a3::8a2e:370:7334", "[ip]"),
    _s("ipv6", "fe80::1ff:fe23:4567:890a%eth0", "[ip]", "fe80::1ff:fe23:4567:890a"),
    _s("ipv6", "::ffff:192.0.2.128", "[ip]", "192.0.2.128"),
    # --- bearer tokens and JWTs
    _s("bearer", "Bearer kq8Zr2vN5xL0pT7wY3mB", "Bearer [token]", "kq8Zr2vN5xL0pT7wY3mB"),
    _s(
        "bearer",
        "Authorization: Bearer Zm9vYmFyYmF6cXV4MTIz",
        "Authorization: [redacted]",
        "Zm9vYmFyYmF6cXV4MTIz",
    ),
    _s(
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "[token]",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    _s(
        "jwt",
        "eyJraWQiOiJrMSJ9.eyJwbGF5ZXIiOiJib2IifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "[token]",
        "eyJwbGF5ZXIiOiJib2IifQ",
        "c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    ),
    # --- cloud and service keys
    _s("aws-access-key-id", "AKIAIOSFODNN7EXAMPLE", "[token]"),
    _s("aws-access-key-id", "ASIAY34FZKBOKMUTVV7A", "[token]"),
    _s(
        "aws-secret-access-key",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key=[redacted]",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    _s(
        "aws-secret-access-key",
        '"SecretAccessKey": "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"',
        '"SecretAccessKey": "[redacted]"',
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    ),
    _s("gcp-api-key", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "[token]"),
    _s("gcp-api-key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "[token]"),
    _s("github-token", "ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ", "[token]"),
    _s("github-token", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "[token]"),
    _s(
        "github-token",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
        "[token]",
    ),
    _s("slack-token", "xoxb-2048-40961234-AbCdEfGhIjKlMnOpQrStUvWx", "[token]"),
    _s("slack-token", "xoxp-1234567890-0987654321-ZyXwVuTsRq", "[token]"),
    _s("stripe-key", "sk_live_51H8z7YkLmN0pQrStUvWxYz012345", "[token]"),
    _s("stripe-key", "rk_live_4eC39HqLyjWDarjtT1zdp7dc", "[token]"),
    _s("gitlab-token", "glpat-Xy9zAbCdEfGhIjKlMn0P", "[token]"),
    _s("npm-token", "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "[token]"),
    # --- values under sensitive keys
    _s("key-value", "password=hunter2-Xq9", "password=[redacted]", "hunter2-Xq9"),
    _s("key-value", "secret: 'Zebra-Sunset-42'", "secret: '[redacted]'", "Zebra-Sunset-42"),
    _s("key-value", "token=tk_9f8e7d6c5b", "token=[redacted]", "tk_9f8e7d6c5b"),
    _s("key-value", "api_key=Kq3mZx9LwP", "api_key=[redacted]", "Kq3mZx9LwP"),
    _s("key-value", "db_passwd: CorrectHorse77", "db_passwd: [redacted]", "CorrectHorse77"),
    _s(
        "key-value",
        '{"client_secret": "Hx7-Pq2-Wm5"}',
        '{"client_secret": "[redacted]"}',
        "Hx7-Pq2-Wm5",
    ),
    _s("key-value", "session_id=a1b2c3d4e5f6", "session_id=[redacted]", "a1b2c3d4e5f6"),
    _s(
        "key-value",
        "signing_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "signing_key: [token]",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    ),
    _s("cookie", "Cookie: sid=Qm5vY2tpZQ; theme=dark", "Cookie: [redacted]", "Qm5vY2tpZQ"),
    # --- payment cards (test numbers, Luhn-valid)
    _s("card", "4111111111111111", "[card]"),
    _s("card", "5555 5555 5555 4444", "[card]"),
    _s("card", "3782-822463-10005", "[card]"),
    _s("card", "6011 1111 1111 1117", "[card]"),
    _s("card", "2223003122003222", "[card]"),
    _s("card", "4012888888881881", "[card]"),
    # --- IBANs (mod-97 valid, the registry's examples)
    _s("iban", "DE89 3704 0044 0532 0130 00", "[iban]", "3704 0044 0532 0130"),
    _s("iban", "GB82 WEST 1234 5698 7654 32", "[iban]", "WEST 1234 5698 7654"),
    _s("iban", "FR14 2004 1010 0505 0001 3M02 606", "[iban]", "2004 1010 0505 0001"),
    _s("iban", "NL91ABNA0417164300", "[iban]"),
    _s("iban", "BE68 5390 0754 7034", "[iban]", "5390 0754 7034"),
    _s("iban", "CH93 0076 2011 6238 5295 7", "[iban]", "0076 2011 6238 5295"),
    _s("iban", "ES9121000418450200051332", "[iban]"),
    _s("iban", "IT60 X054 2811 1010 0000 0123 456", "[iban]", "X054 2811 1010 0000"),
    _s("iban", "NO9386011117947", "[iban]"),
    _s("iban", "PL61 1090 1014 0000 0712 1981 2874", "[iban]", "1090 1014 0000 0712"),
    # --- phone numbers: E.164 and national formats
    _s("phone-e164", "+14155552671", "[phone]"),
    _s("phone-e164", "+1 415 555 2671", "[phone]"),
    _s("phone-e164", "+44 20 7946 0958", "[phone]"),
    _s("phone-e164", "+49 (0)30 123456", "[phone]", "(0)30 123456"),
    _s("phone-e164", "+33 1 23 45 67 89", "[phone]"),
    _s("phone-e164", "+1 (212) 555-0123", "[phone]", "555-0123"),
    _s("phone-e164", "+91-98765-43210", "[phone]"),
    _s("phone-national", "(415) 555-2671", "[phone]"),
    _s("phone-national", "415-555-2671", "[phone]"),
    _s("phone-national", "212.555.0199", "[phone]"),
    _s("phone-national", "020 7946 0958", "[phone]"),
    _s("phone-national", "07700 900123", "[phone]"),
    _s("phone-national", "01 23 45 67 89", "[phone]"),
    _s("phone-national", "06.12.34.56.78", "[phone]"),
    _s("phone-national", "(030) 1234567", "[phone]", "1234567"),
    _s("phone-national", "0151-23456789", "[phone]"),
    _s("phone-national", "0049 30 1234567", "[phone]"),
    _s("phone-national", "1-800-555-0199", "1-[phone]", "800-555-0199"),
    # --- US social security numbers
    _s("ssn", "078-05-1120", "[ssn]"),
    _s("ssn", "219-09-9999", "[ssn]"),
    _s("ssn", "536-22-1234", "[ssn]"),
    # --- PEM private keys
    _s(
        "pem-private-key",
        PEM_RSA,
        "[private key]",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    ),
    _s(
        "pem-private-key",
        PEM_PKCS8,
        "[private key]",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    ),
    _s(
        "pem-private-key",
        PEM_OPENSSH,
        "[private key]",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    ),
    _s(
        "pem-private-key",
        PEM_EC_TRUNCATED,
        "[private key]",
        "MHcCAQEEIBYr1vYzl7Jp8mKqGd3XH6Q9sT0vW2a3b4c5d6e7f8g9oAoGCCqGSM49",
    ),
    _s(
        "pem-private-key",
        PEM_PKCS8.replace("\n", "\\n"),  # as a repr shows it: escaped newlines
        "[private key]",
        "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
    ),
)

# Decisions that are policy rather than secrets (pinned in the unit tests).
POLICY: tuple[tuple[str, str, str], ...] = (
    # Every dotted quad is an address: the redactor cannot know whose, so the
    # loopback is redacted like any other (the port stays).
    ("loopback-redacted", "127.0.0.1:9100", "[ip]:9100"),
    ("ipv6-loopback-redacted", "bound to ::1", "bound to [ip]"),
    # A number that is an IBAN's neighbour but fails mod-97 is not an IBAN.
    ("iban-bad-check-digits-kept", "GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"),
    # A phone number glued to a following word is part of an identifier.
    ("phone-glued-kept", "+14155552671abc", "+14155552671abc"),
    # A value under a sensitive key is redacted whatever its shape.
    ("key-wins-over-shape", "password=bob@example.com", "password=[redacted]"),
)

INNOCENT: tuple[Innocent, ...] = (
    Innocent("tick count", "tick 48213 done"),
    Innocent("tick key", "tick=1234567890 system=economy"),
    Innocent("iso timestamp", "at 2026-12-01T14:26:32.123456Z"),
    Innocent("iso timestamp offset", "2026-11-21T10:00:00.123+00:00"),
    Innocent("log timestamp", "2026-12-01 14:26:32,123 INFO started"),
    Innocent("date dmy", "on 05.12.2026 at 10:00"),
    Innocent("date dashes", "built 2026-01-05 10:00:00"),
    Innocent("clock", "uptime 1:02:03.456"),
    Innocent("duration", "step took 0.000679988 s"),
    Innocent("durations", "lateness p50 0.000123 p99 0.000456 max 0.0123"),
    Innocent("float repr", "budget 33.333333333333336 ms"),
    Innocent("signed delta", "drift +0.25 s, -12 ms"),
    Innocent("plus count", "retries +3 (total 12)"),
    Innocent("exponent", "rate 1e+10 and 2.5E-07"),
    Innocent("epoch seconds", "epoch 1764599192.123456"),
    Innocent("epoch millis", "ts 1732183200002"),
    Innocent("semver", "supervisor 1.2.3 started"),
    Innocent("semver pre-release", "version 2.0.0-rc.1+build.5"),
    Innocent("python version", "Python 3.11.7 on linux"),
    Innocent("port", "listening on port 9100"),
    Innocent("port range", "ports 9100-9200"),
    Innocent("unix socket", "unix:state/supervisor.sock"),
    Innocent(
        "sha256 digest",
        "sha256:3f786850e387550fdab836ed7e6dc881de23001b4f1a2b3c4d5e6f7081920a1b",
    ),
    Innocent("sha1 / git commit", "commit 3f786850e387550fdab836ed7e6dc881de23001b"),
    Innocent("short fingerprint", "fingerprint ab12cd34ef56"),
    Innocent("uuid", "uuid 550e8400-e29b-41d4-a716-446655440000"),
    Innocent("uuid digits", "12345678-1234-1234-1234-123456789012"),
    Innocent("pid and memory", "pid 12345 rss 45678592 bytes"),
    Innocent("size list", "sizes 512 256 1024 2048"),
    Innocent("latency list", "latencies 250 300 410 520 330 ms"),
    Innocent("thousands", "1,234,567 players and 12 345 678 coins"),
    Innocent("percent", "cpu 12.5 % of 2 cores"),
    Innocent("histogram bounds", "buckets 0.0001 0.0002 0.0005 0.001 0.0025"),
    Innocent("matrix", "grid [[1, 2], [3, 4]]"),
    Innocent("fraction", "retry 3/5 in 250ms"),
    Innocent("http status", "HTTP/1.1 503 Service Unavailable"),
    Innocent("snapshot file", "snapshot-000123.msgpack written"),
    Innocent("player id", "player-1234 joined lobby 42"),
    Innocent("order failing luhn", "order 4111111111111112"),
    Innocent("card-length number starting with 1", "id 1234567890123456"),
    Innocent("zero padded", "frame 007 008 009"),
    Innocent("room code", "room DE12 opened"),
    Innocent("tokenizer prose", "the tokenizer: loaded 3 rules"),
    Innocent("password prose", "password reset requested for player 1234"),
    Innocent("keyerror", "KeyError: 'token'"),
    Innocent("mac address", "nic 00:1a:2b:3c:4d:5e"),
    Innocent("cpp scope", "std::vector<int>"),
    Innocent("user at host", "root@localhost"),
    Innocent("handle", "follow @supervisor on the forum"),
    Innocent("arch", "x86_64 utf-8 TLSv1.3"),
    Innocent(
        "placeholders",
        "[email] [ip] [token] [card] [redacted] [bytes] [iban] [phone] [ssn] [private key]",
    ),
    Innocent("unicode prose", "joueur « Zoë » a quitté la partie 🎮"),
    Innocent("empty", ""),
)

SHAPES: tuple[str, ...] = tuple(dict.fromkeys(s.shape for s in SECRETS))
