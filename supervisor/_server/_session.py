"""Dashboard sessions: signed cookies, their CSRF tokens, and the failed-login limiter.

A browser cannot send ``Authorization: Bearer`` from a plain form, and a token
must never sit in a URL, so ``POST /dashboard/login`` exchanges a token once
for a session cookie. The cookie is the browser's *ambient* credential: the
browser attaches it to every request to our origin, including ones another
page makes it send. Hence:

* **Signed with a per-process random key** (HMAC-SHA256,
  :func:`secrets.token_bytes`): nothing on disk, so a restart of the process
  revokes every session at once, and a cookie cannot be forged or altered
  (its caller, role, expiry are inside the signed part).
* **Known to the server** (:class:`Sessions` keeps the id of every live
  session, bounded): logout really ends a session, not only the browser's
  copy of the cookie; a cookie stolen before logout is worthless after it.
* **Expiring** (``SESSION_LIFETIME``), checked against the signed expiry.
* **Tied to the token it came from**: the session keeps the token's digest,
  and the API accepts the session only while that token is still configured
  (a phase whose ``[api] tokens`` drops it ends the session too).
* **CSRF**: each session has a CSRF token derived from the session id with
  the same key (HMAC, nothing more to store). Every state-changing request
  authenticated by the cookie must echo it in ``X-CSRF-Token``; another
  origin can make the browser send the cookie but cannot read the token
  (``SameSite=Strict`` is the first wall, this is the second).
* **Failed logins are rate-limited per peer** (:class:`LoginLimiter`, a token
  bucket per address or Unix uid, bounded in memory), so the form is not a
  faster token-guessing oracle than the API.

No I/O and no clock of its own: ``now`` (wall seconds for the signed expiry,
monotonic seconds for the limiter) is passed in, so the tests set time exactly.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import math
import secrets
from typing import Final

import attrs

from .._core._control import Caller

__all__ = [
    "COOKIE_NAME",
    "SESSION_LIFETIME",
    "LoginLimiter",
    "Session",
    "Sessions",
]

#: The cookie's name.
COOKIE_NAME: Final = "supervisor_session"
#: Seconds a session lasts from its login.
SESSION_LIFETIME: Final = 12 * 3600.0
#: Live sessions kept; past it the oldest is ended (a flood of logins with a
#: valid token cannot grow memory without bound).
MAX_SESSIONS: Final = 1024
#: Live sessions per caller (token name); a further login ends that caller's
#: oldest, so no caller (a viewer) can push everybody else's sessions out.
MAX_PER_CALLER: Final = 16
#: A cookie value longer than this is not ours (refused before any decoding).
_MAX_COOKIE: Final = 512
#: Bytes of randomness in a session id.
_ID_BYTES: Final = 18


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """The bytes ``text`` encodes, only if ``_b64`` gives exactly ``text`` for them.

    Without the check a cookie had several spellings: the spare low bits of
    its last character are ignored by the decoder, so an altered last
    character could still be accepted (one cookie in ~20 in
    ``tests/test_dashboard_server.py::TestSessions::test_any_altered_byte_is_refused``).

    Raises:
        ValueError: not base64url, or not in its one canonical form.
    """
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical encoding")
    return data


@attrs.frozen
class Session:
    """One live dashboard session.

    Attributes:
        id: random, unguessable; the cookie carries it under the signature.
        caller: who logged in (name and role as the token says).
        token: sha256 hex of the token used (None for a Unix socket owner).
        expires: wall-clock seconds (Unix time) when the session ends.
        csrf: the token state-changing requests must echo in ``X-CSRF-Token``.
    """

    id: str
    caller: Caller
    token: str | None
    expires: float
    csrf: str


@attrs.define(eq=False)
class Sessions:
    """Issues, checks and ends sessions; the key lives only in this process."""

    lifetime: float = SESSION_LIFETIME
    max_sessions: int = MAX_SESSIONS
    max_per_caller: int = MAX_PER_CALLER
    _key: bytes = attrs.field(factory=lambda: secrets.token_bytes(32))
    # id -> session, insertion-ordered: the first is the oldest.
    _live: dict[str, Session] = attrs.field(factory=dict)

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def open(self, caller: Caller, *, token: str | None, now: float) -> tuple[Session, str]:
        """A new session for ``caller``, and the cookie value that carries it."""
        self._expire(now)
        own = [sid for sid, s in self._live.items() if s.caller.name == caller.name]
        for sid in own[: max(0, len(own) - self.max_per_caller + 1)]:
            del self._live[sid]
        while len(self._live) >= self.max_sessions:
            del self._live[next(iter(self._live))]
        sid = _b64(secrets.token_bytes(_ID_BYTES))
        expires = math.floor(now + self.lifetime)
        csrf = _b64(self._sign(b"csrf:" + sid.encode("ascii")))
        session = Session(id=sid, caller=caller, token=token, expires=expires, csrf=csrf)
        self._live[sid] = session
        payload = json.dumps(
            {"i": sid, "n": caller.name, "r": caller.role, "e": expires},
            separators=(",", ":"),
        ).encode("utf-8")
        return session, f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def check(self, value: str, *, now: float) -> Session | None:
        """The live session a cookie value carries, or None (forged, altered, expired, ended)."""
        if len(value) > _MAX_COOKIE or value.count(".") != 1:
            return None
        body, _, mac = value.partition(".")
        try:
            payload = _unb64(body)
            signature = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            fields = json.loads(payload)
        except ValueError:  # pragma: no cover - we signed it, so it is our JSON
            return None
        session = self._live.get(fields.get("i", ""))
        if session is None or session.expires <= now:
            return None
        # The signed fields must be this session's (defence in depth: ids are random).
        if (fields.get("n"), fields.get("r"), fields.get("e")) != (
            session.caller.name,
            session.caller.role,
            session.expires,
        ):
            return None
        return session

    def close(self, session_id: str) -> None:
        """End a session (logout); its cookie is refused from now on."""
        self._live.pop(session_id, None)

    def csrf_ok(self, session: Session, presented: bytes | None) -> bool:
        """True when ``presented`` is the session's CSRF token (constant-time)."""
        if presented is None:
            return False
        return hmac.compare_digest(presented, session.csrf.encode("ascii"))

    def __len__(self) -> int:
        return len(self._live)

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._live.items() if s.expires <= now]:
            del self._live[sid]


@attrs.define(eq=False)
class LoginLimiter:
    """Failed logins allowed per peer: a token bucket of ``burst``, refilled one per ``every`` s.

    Only failures spend from the bucket; a peer whose bucket is empty is
    answered 429 without its token being looked at. At most ``max_peers``
    peers are tracked; past it the one tracked longest is forgotten (an
    attacker with many addresses gets ``burst`` tries per address, no more
    than it would have anyway).
    """

    burst: int = 5
    every: float = 12.0
    max_peers: int = 4096
    # peer -> (tokens left, monotonic time of that count)
    _peers: collections.OrderedDict[str, tuple[float, float]] = attrs.field(
        factory=collections.OrderedDict
    )

    def _level(self, peer: str, now: float) -> float:
        state = self._peers.get(peer)
        if state is None:
            return float(self.burst)
        tokens, since = state
        return min(float(self.burst), tokens + max(0.0, now - since) / self.every)

    def retry_after(self, peer: str, now: float) -> float:
        """Seconds until ``peer`` may try again (0: it may now)."""
        level = self._level(peer, now)
        return 0.0 if level >= 1.0 else (1.0 - level) * self.every

    def failed(self, peer: str, now: float) -> None:
        """Spend one try of ``peer``."""
        level = max(0.0, self._level(peer, now) - 1.0)
        self._peers.pop(peer, None)
        while len(self._peers) >= self.max_peers:
            self._peers.popitem(last=False)
        self._peers[peer] = (level, now)
