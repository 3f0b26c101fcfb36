"""The HTTP API: a small, exact ASGI app over :class:`~supervisor._core._control.Controlled`.

No web framework: nine routes, each answer JSON (``{"error": ...}`` on
errors) except ``/metrics``. Every request is checked in the same order, so
the status code a hostile request gets is predictable (``tests/test_api.py``
pins each step):

1. the route (404), then the method (405, with ``Allow``);
2. the caller: ``Authorization: Bearer <token>``; a presented token that
   matches no configured hash is always 401. Without one: on TCP, 401; on
   the Unix socket the peer's uid (``SO_PEERCRED``, read by the listener)
   decides: the socket's owner (this process's user, or root) is an
   operator named ``uid:N(user)`` in every phase, any other uid is 403.
   Then the role (403);
3. the query string (400), then the body: its size (413, before the rest is
   read), its media type (415), its parts (413 past ``MAX_BODY_PARTS``), its
   deadline (408 after ``body_timeout``), JSON syntax and the known keys
   with their types (400, naming the key);
4. the audit log: the attempt line is written first; if it cannot be, the
   action is refused (503) and nothing changes;
5. the supervisor call: ``Refused`` is 409, anything unexpected a logged 500
   without a traceback.

``/healthz`` and ``/readyz`` skip step 2 entirely: probes never carry
credentials, and their answers are exactly what the core's ``liveness()``
and ``readiness_gate()`` return (fixed words, numbers and system names),
with nothing added here.

Every POST to an action route is audited (:mod:`supervisor._server._audit`): an
attempt and a result line for an action carried out, a result line for a
request refused from a known caller, and a per-minute tally for anonymous
refusals (401/403 with no caller).

:func:`serve_api` serves the app inside the caller's trio run, on
``unix:PATH`` (mode 0600) or ``HOST:PORT`` (TLS with ``tls_cert``/``tls_key``),
through :mod:`supervisor._server._listener`: our own accept loop around hypercorn's
HTTP/1.1 protocol, with a connection cap and deadlines, in which no client
can raise. :func:`attach_api` wires it into a supervisor's run.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import pwd
import re
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import attrs
import hypercorn.config
import trio

from .._address import MAX_ERRORS_LIMIT, MAX_REASON, ListenAddress, parse_listen
from .._core._config import ApiConfig, TokenConfig
from .._core._control import Caller, Controlled, Refused
from .._core._phase import Phase
from .._core._redact import Redactor
from .._errors import ConfigError, SupervisorError
from .._files import UnsafePathError, check_output_path
from .._logging import get_logger
from ._audit import AuditEntry, AuditLog
from ._listener import ConnectionLimits, ServerStats, make_ssl_context, serve_connections
from ._metrics import install as install_metrics

if TYPE_CHECKING:
    from .._core._runtime import Supervisor

__all__ = [
    "ASGIApp",
    "ApiListenError",
    "ListenAddress",
    "attach_api",
    "make_app",
    "parse_listen",
    "serve_api",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Pending connections the kernel queues before accept(): as many as it allows.
_BACKLOG: Final = socket.SOMAXCONN
#: ``/v1/errors?limit=`` default.
DEFAULT_ERRORS_LIMIT: Final = 20
_MAX_SYSTEM_NAME: Final = 200
_MAX_PHASE_NAME: Final = 64
# Echoed back in a 400 naming an unknown key: enough to recognise a typo.
_MAX_ECHO: Final = 40

_JSON_TYPE: Final = b"application/json"
_BASE_HEADERS: Final = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
_LIMIT_RE: Final = re.compile(r"[0-9]{1,7}", re.ASCII)
#: A body in more parts (chunks) than this is refused (413), whatever its size.
MAX_BODY_PARTS: Final = 1024
# Refusals of callers with no identity: aggregated in the audit log.
_ANONYMOUS_REFUSALS: Final = frozenset({401, 403})


class ApiListenError(SupervisorError, OSError):
    """Raised by :func:`serve_api` when it cannot listen on ``[api] listen``.

    ``listen`` is the address at fault; the message says why (in use, another
    supervisor is serving there, a path that is not a socket, ...).
    """

    def __init__(self, message: str, *, listen: str) -> None:
        self.listen = listen
        super().__init__(f"[api] listen {listen!r}: {message}")


# ------------------------------------------------------------------ answers


@attrs.frozen
class _Answer:
    status: int
    body: bytes
    content_type: bytes = _JSON_TYPE
    headers: tuple[tuple[bytes, bytes], ...] = ()
    detail: str = "ok"  # what the audit log records as the result


class _HttpError(Exception):
    """An error answer, raised from anywhere in request handling."""

    def __init__(
        self, status: int, message: str, *, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities (not JSON) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    # A status dict from the core may hold values json does not know; an odd
    # type must not turn a status request into a 500.
    if attrs.has(type(obj)):
        return attrs.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if isinstance(obj, bytes | bytearray | memoryview):
        return "[bytes]"
    return str(obj)


def _dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, allow_nan=False, ensure_ascii=False, default=_json_default)
    except ValueError:  # a NaN or an infinity somewhere
        text = json.dumps(_finite(obj), allow_nan=False, ensure_ascii=False, default=_json_default)
    return text.encode("utf-8") + b"\n"


def _json(
    status: int, obj: Any, *, detail: str = "ok", headers: Iterable[tuple[bytes, bytes]] = ()
) -> _Answer:
    return _Answer(status, _dumps(obj), headers=tuple(headers), detail=detail)


def _echo(text: str) -> str:
    """A user-supplied name, shortened for an error message."""
    return repr(text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "...")


# ------------------------------------------------------------------- routes


@attrs.frozen
class _Route:
    method: str  # "GET" routes answer HEAD too
    handler: str  # name of an _Api method
    params: frozenset[str] = frozenset()  # allowed query parameters
    public: bool = False  # probes: no token ever looked at
    action: str | None = None  # audited control action


_ROUTES: Final[Mapping[str, _Route]] = {
    "/healthz": _Route("GET", "_healthz", public=True),
    "/readyz": _Route("GET", "_readyz", public=True),
    "/metrics": _Route("GET", "_metrics"),
    "/v1/status": _Route("GET", "_status"),
    "/v1/readiness": _Route("GET", "_readiness"),
    "/v1/errors": _Route("GET", "_errors", params=frozenset({"limit", "system"})),
    "/v1/shutdown": _Route("POST", "_shutdown", action="shutdown"),
    "/v1/restart": _Route("POST", "_restart", action="restart"),
    "/v1/phase": _Route("POST", "_phase", action="phase"),
}

# Per action: key -> (type, default); a default of _REQUIRED means the key must be given.
_REQUIRED: Final = object()
_SCHEMAS: Final[Mapping[str, Mapping[str, tuple[type, Any]]]] = {
    "shutdown": {"emergency": (bool, False), "reason": (str, "")},
    "restart": {},
    "phase": {"phase": (str, _REQUIRED), "force": (bool, False), "reason": (str, "")},
}
_TYPE_NAMES: Final = {bool: "true or false", str: "a string"}


@attrs.define(eq=False)
class _AuditNote:
    """What the audit line of one action request says, filled in as checks pass."""

    action: str
    source: str = "local"  # the client's address, or the Unix peer's uid
    caller: Caller | None = None
    arguments: dict[str, Any] | None = None
    unaudited: bool = False  # refused (503): the attempt line could not be written


class _DuplicateKey(ValueError):
    """Raised while parsing a JSON body that names one key twice."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key is ambiguous (which one did the caller mean, and which
    # one would the audit log show?), so it is refused rather than last-wins.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {_echo(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``.

    Raises:
        _HttpError: 400, the body is not UTF-8 JSON or not an object.
    """
    if not body.strip():
        return {}
    try:
        obj = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateKey as exc:
        raise _HttpError(400, f"invalid JSON body: {exc}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _HttpError(400, "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _HttpError(400, "the body must be a JSON object")
    return obj


def _validate(action: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of ``action`` from ``obj``, with defaults filled in.

    Raises:
        _HttpError: 400 naming the first unknown, missing or mistyped key.
    """
    schema = _SCHEMAS[action]
    for key in obj:
        if key not in schema:
            known = ", ".join(schema) or "none"
            raise _HttpError(400, f"unknown key {_echo(key)} (known keys: {known})")
    out: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        if key not in obj:
            if default is _REQUIRED:
                raise _HttpError(400, f"missing key {key!r}")
            out[key] = default
            continue
        value = obj[key]
        # type() rather than isinstance: True is an int, and 1 is not a bool.
        if type(value) is not kind:
            raise _HttpError(400, f"key {key!r} must be {_TYPE_NAMES[kind]}")
        out[key] = value
    if len(out.get("reason", "")) > MAX_REASON:
        raise _HttpError(400, f"key 'reason' must be at most {MAX_REASON} characters")
    if action == "phase":
        if len(out["phase"]) > _MAX_PHASE_NAME:
            raise _HttpError(400, "key 'phase' names no phase")
        try:
            out["phase"] = Phase.parse(out["phase"]).value
        except ValueError as exc:
            raise _HttpError(400, f"key 'phase': {exc}") from None
    return out


def _query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all of them known.

    Raises:
        _HttpError: 400 naming the unknown or repeated parameter.
    """
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return {}
    try:
        pairs = parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=len(allowed) + 1,
        )
    except ValueError:  # bad syntax, too many fields, or not UTF-8 once unquoted
        raise _HttpError(400, "malformed query string") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise _HttpError(400, f"unknown query parameter {_echo(key)} (known: {known})")
        if key in out:
            raise _HttpError(400, f"query parameter {key!r} given twice")
        out[key] = value
    return out


def _resolve(path: str, method: str) -> _Route:
    """The route for ``method path`` (HEAD counts as GET).

    Raises:
        _HttpError: 404 for an unknown path, 405 (with ``Allow``) for a wrong method.
    """
    route = _ROUTES.get(path)
    if route is None:
        raise _HttpError(404, f"no such endpoint: {_echo(path)}")
    if method == route.method or (method == "HEAD" and route.method == "GET"):
        return route
    allow = b"GET, HEAD" if route.method == "GET" else route.method.encode()
    raise _HttpError(405, f"{path} takes {route.method}", headers=[(b"allow", allow)])


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k.lower() == name]


def _peer_uid(scope: Scope) -> int | None:
    """The Unix peer's uid our listener put in the scope, or None (TCP, or another server)."""
    extensions = scope.get("extensions") or {}
    uid = extensions.get("peer_uid")
    return uid if type(uid) is int else None


def _uid_name(uid: int) -> str:
    """``uid:N(name)``, or ``uid:N`` when the user database has no name for it."""
    try:
        return f"uid:{uid}({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid:{uid}"


def _source(scope: Scope) -> str:
    """Where a request came from, for aggregating anonymous refusals: an address, or a uid."""
    uid = _peer_uid(scope)
    if uid is not None:
        return f"uid:{uid}"
    client = scope.get("client")
    return str(client[0]) if client else "local"


def _unauthorized(message: str, *, invalid: bool) -> _HttpError:
    challenge = b'Bearer error="invalid_token"' if invalid else b"Bearer"
    return _HttpError(401, message, headers=[(b"www-authenticate", challenge)])


# ---------------------------------------------------------------------- app


@attrs.define(eq=False)
class _Api:
    """The ASGI app; see the module docstring for the order of checks."""

    sup: Controlled
    api: ApiConfig
    tcp: bool
    audit: AuditLog
    redactor: Redactor | None
    # (sha256 hex as bytes, caller) for each configured token, built once.
    stats: ServerStats = attrs.field(factory=ServerStats)
    #: Action requests refused (503) because their audit line could not be written.
    audit_refusals: int = attrs.field(default=0, init=False)
    #: Requests answered 408 because their body did not arrive in time.
    body_timeouts: int = attrs.field(default=0, init=False)
    _tokens: tuple[tuple[bytes, Caller], ...] = attrs.field(init=False)
    _owners: dict[int, Caller] = attrs.field(init=False)
    _log: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.use_tokens(self.api.tokens)
        # The two uids that own the 0600 socket: this process's user and
        # root. Names are looked up once here: getpwuid may block (NSS/LDAP).
        self._owners = {
            uid: Caller(name=_uid_name(uid), role="operator") for uid in {os.getuid(), 0}
        }
        self._log = get_logger(component="api")

    def use_tokens(self, tokens: tuple[TokenConfig, ...]) -> None:
        """Accept these tokens from now on (the phase in force changed its ``[api] tokens``)."""
        self._tokens = tuple(
            (t.sha256.lower().encode("ascii"), Caller(name=t.name, role=t.role)) for t in tokens
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            # Closing before accepting makes the server answer 403.
            await send({"type": "websocket.close", "code": 1008})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        head = method == "HEAD"
        note: _AuditNote | None = None
        try:
            try:
                route = _resolve(path, method)
                if route.action is not None:
                    note = _AuditNote(action=route.action, source=_source(scope))
                answer = await self._route(route, scope, receive, note)
            except _HttpError as exc:
                answer = self._error_answer(exc)
            except Exception:
                self._log.exception("api.internal_error", method=method, path=path)
                answer = _json(500, {"error": "internal error"}, detail="internal error")
        except trio.Cancelled:
            # Cancelled mid-action (a shutdown can cancel its own request):
            # the audit log still gets the line, under a short shield.
            if note is not None and note.caller is not None:
                with trio.move_on_after(2.0) as scope_:
                    scope_.shield = True
                    await self._write_result(note, 499, "interrupted before an answer was sent")
            raise
        if note is not None:
            await self._record(note, answer)
        await self._send(send, answer, head=head)

    def _error_answer(self, exc: _HttpError) -> _Answer:
        message = self.redactor.text(exc.message) if self.redactor else exc.message
        return _json(exc.status, {"error": message}, detail=message, headers=exc.headers)

    async def _route(
        self, route: _Route, scope: Scope, receive: Receive, note: _AuditNote | None
    ) -> _Answer:
        if route.public:
            handler: Callable[..., Awaitable[_Answer]] = getattr(self, route.handler)
            _query(scope, route.params)
            return await handler()
        caller = self._authenticate(scope)
        if note is not None:
            note.caller = caller
        if route.method == "POST" and caller.role != "operator":
            raise _HttpError(403, f"role {caller.role!r} may not {route.action}; needs operator")
        params = _query(scope, route.params)
        if route.method == "GET":
            view: Callable[..., Awaitable[_Answer]] = getattr(self, route.handler)
            return await view(**params)
        # Every POST route is an action, so it has an audit note.
        assert route.action is not None
        assert note is not None
        arguments = _validate(route.action, _parse_object(await self._body(scope, receive)))
        note.arguments = arguments
        # Fail closed: the attempt is on disk before anything changes, or
        # nothing changes (tests/test_api_audit.py).
        if not await self._write_entry(self._entry(note, stage="attempt")):
            note.unaudited = True
            self.audit_refusals += 1
            self._log.error(
                "api.refused_unaudited",
                action=route.action,
                caller=caller.name,
                refusals=self.audit_refusals,
            )
            raise _HttpError(
                503, "the audit log cannot be written, so the action was not carried out"
            )
        act: Callable[..., Awaitable[dict[str, Any]]] = getattr(self, route.handler)
        return await self._act(route.action, act, arguments, caller)

    def _authenticate(self, scope: Scope) -> Caller:
        """The caller of a non-probe request.

        A presented token always decides. Without one, on the Unix socket, the
        peer's uid (``SO_PEERCRED``, put in the scope by the listener) does:
        the socket's owner (this process's user, or root) is an operator in
        every phase (contract section 8), so no phase change can lock the
        operator out; any other uid is refused. On TCP a token is always needed.

        Raises:
            _HttpError: 401 for a presented token that matches no hash, or for
                a missing one where a token is required; 403 for a Unix peer
                that does not own the socket.
        """
        values = _header(scope, b"authorization")
        if not values:
            uid = None if self.tcp else _peer_uid(scope)
            if uid is None:
                raise _unauthorized(
                    "a token is required: send it in the Authorization header as Bearer <token>",
                    invalid=False,
                )
            owner = self._owners.get(uid)
            if owner is None:
                raise _HttpError(
                    403,
                    f"uid {uid} does not own this socket: send a token in the Authorization header",
                )
            return owner
        if len(values) > 1:
            raise _unauthorized("more than one Authorization header", invalid=True)
        scheme, _, token = values[0].strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise _unauthorized(
                "expected the Authorization header to be Bearer <token>", invalid=True
            )
        digest = hashlib.sha256(token).hexdigest().encode("ascii")
        found: Caller | None = None
        # Compare against every hash, without stopping at a match, so the
        # time taken says nothing about which (or whether a) token matched.
        for expected, caller in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = caller
        if found is None:
            raise _unauthorized("invalid token", invalid=True)
        return found

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, at most ``api.max_body`` bytes.

        Raises:
            _HttpError: 413 as soon as the body (declared or received) is too
                large or comes in too many parts, without reading the rest;
                415 for a non-JSON media type; 408 when the whole body has
                not arrived ``api.body_timeout`` seconds after it was asked for.
        """
        limit = self.api.max_body
        too_large = _HttpError(
            413,
            f"the body is larger than {limit} bytes",
            headers=[(b"connection", b"close")],
        )
        lengths = _header(scope, b"content-length")
        if lengths:
            text = lengths[0].strip()
            if len(lengths) > 1 or not text.isdigit():
                raise _HttpError(400, "malformed Content-Length")
            if int(text) > limit:
                raise too_large
        types = _header(scope, b"content-type")
        if types:
            media = types[0].split(b";", 1)[0].strip().lower()
            if media != _JSON_TYPE and not media.endswith(b"+json"):
                raise _HttpError(415, "the body must be application/json")
        chunks: list[bytes] = []
        size = 0
        # A fixed deadline for the whole body, not per part: a chunked body
        # that dribbles a byte a second (or never ends) still ends here.
        with trio.move_on_after(self.api.body_timeout):
            while True:
                message = await receive()
                if message.get("type") == "http.disconnect":
                    raise _HttpError(400, "the client went away before sending the body")
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if len(chunks) > MAX_BODY_PARTS:
                    raise _HttpError(
                        413,
                        f"the body came in more than {MAX_BODY_PARTS} parts",
                        headers=[(b"connection", b"close")],
                    )
                if not message.get("more_body", False):
                    return b"".join(chunks)
        self.body_timeouts += 1
        raise _HttpError(
            408,
            f"the body did not arrive within {self.api.body_timeout:g} s",
            headers=[(b"connection", b"close")],
        )

    async def _act(
        self,
        action: str,
        handler: Callable[..., Awaitable[dict[str, Any]]],
        arguments: dict[str, Any],
        caller: Caller,
    ) -> _Answer:
        self._log.info("api.action", action=action, caller=caller.name, **arguments)
        try:
            result = await handler(caller=caller, **arguments)
        except Refused as exc:
            payload = {k: v for k, v in exc.payload.items() if k != "error"}
            body: dict[str, Any] = {"error": exc.detail, **payload}
            if self.redactor is not None:
                body = self.redactor.record(body) or {"error": self.redactor.text(exc.detail)}
            self._log.info("api.refused", action=action, caller=caller.name, detail=exc.detail)
            return _json(409, body, detail=str(body["error"]))
        except Exception:
            self._log.exception("api.action_failed", action=action, caller=caller.name)
            return _json(500, {"error": "internal error"}, detail="internal error")
        detail = result.get("detail") if isinstance(result, Mapping) else None
        return _json(200, result, detail=detail if isinstance(detail, str) else "ok")

    @staticmethod
    def _entry(
        note: _AuditNote, *, stage: str, status: int | None = None, detail: str = ""
    ) -> AuditEntry:
        return AuditEntry(
            caller=note.caller.name if note.caller else "anonymous",
            role=note.caller.role if note.caller else None,
            action=note.action,
            arguments=note.arguments,
            status=status,
            detail=detail,
            stage=stage,
        )

    async def _write_entry(self, entry: AuditEntry) -> bool:
        """Write one audit line from a worker thread; False when it is not on disk."""
        # write() never raises for I/O; anything else is our bug, counted
        # like a failed write so that an action is refused rather than unaudited.
        try:
            return await trio.to_thread.run_sync(self.audit.write, entry)
        except Exception:
            self.audit.failures += 1
            self._log.exception("api.audit_failed", action=entry.action)
            return False

    async def _write_result(self, note: _AuditNote, status: int, detail: str) -> None:
        await self._write_entry(self._entry(note, stage="result", status=status, detail=detail))

    async def _record(self, note: _AuditNote, answer: _Answer) -> None:
        """The audit line(s) for an answered action request."""
        if note.caller is None and answer.status in _ANONYMOUS_REFUSALS:
            # Anonymous refusals change nothing and cost an attacker nothing:
            # counted per source and minute, not one fsync each.
            for entry in self.audit.tally_refusal(
                source=note.source, action=note.action, status=answer.status, detail=answer.detail
            ):
                await self._write_entry(entry)
            return
        if note.unaudited:
            return  # refused because the attempt line failed: nothing happened
        await self._write_result(note, answer.status, answer.detail)

    async def flush_audit(self, *, final: bool = False) -> None:
        """Write the refusal counts of minutes that are over (all of them when ``final``)."""
        for entry in self.audit.finished_refusals(final=final):
            await self._write_entry(entry)

    @staticmethod
    async def _send(send: Send, answer: _Answer, *, head: bool) -> None:
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", str(len(answer.body)).encode("ascii")),
            *_BASE_HEADERS,
            *answer.headers,
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else answer.body})

    # ---------------------------------------------------------- handlers

    async def _healthz(self) -> _Answer:
        alive, detail = self.sup.liveness()
        return _json(200 if alive else 503, {"alive": bool(alive), "detail": detail})

    async def _readyz(self) -> _Answer:
        ready, reasons = self.sup.readiness_gate()
        return _json(200 if ready else 503, {"ready": bool(ready), "reasons": list(reasons)})

    async def _metrics(self) -> _Answer:
        body, content_type = self.sup.metrics_text()
        return _Answer(
            200, body + self._server_metrics(), content_type=content_type.encode("latin-1")
        )

    def _server_metrics(self) -> bytes:
        """The API's own counters, in the Prometheus text format, appended to the core's."""
        st = self.stats
        # (name, type, help, label, {label value: sample}); label None: one unlabelled sample.
        families: tuple[tuple[str, str, str, str | None, dict[str, int]], ...] = (
            ("connections_total", "counter",
             "API connections: served, refused at accept, or evicted before their request.",
             "outcome", {"accepted": st.accepted, "refused": st.refused, "evicted": st.evicted}),
            ("connections_open", "gauge", "API connections open now.", None, {"": st.open}),
            ("timeouts_total", "counter", "API connections or requests ended by a deadline.",
             "kind", {"header": st.header_timeouts, "keep_alive": st.keep_alive_timeouts,
                      "send": st.send_timeouts, "body": self.body_timeouts}),
            ("connection_errors_total", "counter",
             "API connections that ended with an error (logged, never raised).",
             None, {"": st.errors}),
            ("audit_failures_total", "counter", "Audit lines that could not be written.",
             None, {"": self.audit.failures}),
            ("unaudited_refusals_total", "counter",
             "Actions refused (503) because their audit line could not be written.",
             None, {"": self.audit_refusals}),
        )  # fmt: skip
        lines = []
        for name, kind, text, label, samples in families:
            full = f"supervisor_api_{name}"
            lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
            for value, count in samples.items():
                labels = "" if label is None else f'{{{label}="{value}"}}'
                lines.append(f"{full}{labels} {float(count)}")
        return ("\n".join(lines) + "\n").encode("ascii")

    async def _status(self) -> _Answer:
        return _json(200, self.sup.status().as_dict())

    async def _readiness(self) -> _Answer:
        # 200 either way: the request worked; the report's "ok" says the rest.
        return _json(200, self.sup.readiness().as_dict())

    async def _errors(self, limit: str | None = None, system: str | None = None) -> _Answer:
        count = DEFAULT_ERRORS_LIMIT
        if limit is not None:
            if not _LIMIT_RE.fullmatch(limit) or not 1 <= int(limit) <= MAX_ERRORS_LIMIT:
                raise _HttpError(
                    400,
                    f"query parameter 'limit' must be a whole number from 1 to {MAX_ERRORS_LIMIT}",
                )
            count = int(limit)
        if system is not None and (
            not system or len(system) > _MAX_SYSTEM_NAME or not system.isprintable()
        ):
            raise _HttpError(400, "query parameter 'system' must be a system name")
        return _json(200, self.sup.error_view(limit=count, system=system).as_dict())

    async def _shutdown(self, *, caller: Caller, emergency: bool, reason: str) -> dict[str, Any]:
        answer = await self.sup.shutdown(emergency=emergency, reason=reason, caller=caller)
        return answer.as_dict()

    async def _restart(self, *, caller: Caller) -> dict[str, Any]:
        return (await self.sup.restart(caller=caller)).as_dict()

    async def _phase(
        self, *, caller: Caller, phase: str, force: bool, reason: str
    ) -> dict[str, Any]:
        answer = await self.sup.change_phase(phase, force=force, reason=reason, caller=caller)
        return answer.as_dict()


def make_app(
    sup: Controlled,
    *,
    api: ApiConfig,
    tcp: bool,
    audit: AuditLog,
    redactor: Redactor | None = None,
    stats: ServerStats | None = None,
) -> ASGIApp:
    """Build the ASGI app serving ``sup``.

    Args:
        sup: the supervisor (anything implementing :class:`Controlled`).
        api: the ``[api]`` section: the token hashes, ``max_body``, ``body_timeout``.
        tcp: True when the app is served on TCP: a token is then always needed.
        audit: where every action request is recorded.
        redactor: applied to error answers (the audit log has its own).
        stats: the listener's counters, shown in ``/metrics`` (:func:`serve_api`
            uses the app's own when given none).

    Returns:
        The ASGI 3 application, for :func:`serve_api` or any ASGI server.
    """
    return _Api(
        sup=sup, api=api, tcp=tcp, audit=audit, redactor=redactor, stats=stats or ServerStats()
    )


# ------------------------------------------------------------------ serving


class _ToStructlog(logging.Handler):
    """Forwards hypercorn's own (error) log records to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = get_logger(component="api.server")
            level = record.levelname.lower()
            method = getattr(
                log, level if level in {"debug", "info", "warning", "error"} else "error"
            )
            extra = {}
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                extra["error"] = f"{type(exc).__name__}: {exc}"
            method("api.server", message=record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


@functools.cache
def _server_logger() -> logging.Logger:
    logger = logging.getLogger("supervisor.api.server")
    logger.propagate = False
    # WARNING: hypercorn's INFO lines ("Running on ... (CTRL + C to quit)")
    # are wrong for an embedded server; serve_api logs its own api.listening.
    logger.setLevel(logging.WARNING)
    logger.addHandler(_ToStructlog())
    return logger


def _unix_listener(address: ListenAddress, shown: str) -> socket.socket:
    assert address.path is not None
    path = Path(address.path)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        # A file where a folder of the path should be, a folder we may not
        # create or search: one line, at start-up, not a crashing service.
        raise ApiListenError(
            f"cannot prepare the socket's folder {str(path.parent)!r}: "
            f"{exc.strerror or type(exc).__name__}",
            listen=shown,
        ) from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ApiListenError("the path exists and is not a socket", listen=shown)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale: left by a process that died
        except OSError:
            pass  # cannot tell; let bind() report it
        else:
            raise ApiListenError(
                "another process is serving on this socket (is a supervisor already running?)",
                listen=shown,
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound and listening under a temporary name, then renamed into place:
    # the path never names a socket that refuses connections, so a client
    # that sees the file can connect (tests/test_api_audit.py::TestAttachApi).
    staging = path.with_name(f".{os.getpid()}.sock")  # short: socket paths are limited
    try:
        # umask 0177 makes bind() create the file 0600 at once, so there is
        # no moment at which another user could connect; chmod anyway in case
        # the platform ignores the umask for sockets.
        old = os.umask(0o177)
        try:
            staging.unlink(missing_ok=True)
            sock.bind(str(staging))
        finally:
            os.umask(old)
        os.chmod(staging, 0o600)
        sock.listen(_BACKLOG)
        os.rename(staging, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            staging.unlink()
        raise ApiListenError(exc.strerror or str(exc), listen=shown) from None
    return sock


def _tcp_listener(address: ListenAddress, shown: str) -> socket.socket:
    assert address.host is not None
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ApiListenError(f"cannot resolve the host: {exc}", listen=shown) from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise ApiListenError(exc.strerror or str(exc), listen=shown) from None
    return sock


def _is_loopback(sock: socket.socket) -> bool:
    host = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(api: ApiConfig, shown: str) -> ssl.SSLContext | None:
    """The TLS context of ``[api] tls_cert``/``tls_key``, or None when neither is set.

    ``ApiConfig`` refuses one without the other when it is built.

    Raises:
        ApiListenError: the files are not a usable pair.
    """
    if api.tls_cert is None or api.tls_key is None:
        return None
    try:
        return make_ssl_context(api.tls_cert, api.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ApiListenError(
            f"cannot use tls_cert {api.tls_cert!r} and tls_key {api.tls_key!r}: {reason}",
            listen=shown,
        ) from None


def _hypercorn_config(graceful_timeout: float) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.accesslog = None  # one api.action log line per change is enough
    config.errorlog = _server_logger()
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    return config


async def serve_api(
    app: ASGIApp,
    listen: str,
    *,
    api: ApiConfig | None = None,
    stats: ServerStats | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 1.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` until cancelled or ``shutdown_trigger`` returns.

    Use ``await nursery.start(serve_api, app, listen)``: it returns once the
    socket is listening, with the address actually bound (the real port for
    ``HOST:0``). A Unix socket's folder is created (0700) if missing, a stale
    socket file is removed, the new one is 0600, and it is removed on exit.
    Connections are served by :mod:`supervisor._server._listener`: capped, with
    deadlines, and no client can make this function raise once it has started.

    Args:
        app: the ASGI app (from :func:`make_app`).
        listen: ``unix:PATH`` or ``HOST:PORT`` (relative paths are relative
            to the working folder: resolve them before).
        api: the ``[api]`` section for the connection limits, TLS (TCP only;
            certificate paths as given) and ``allow_plaintext_tokens``; the
            defaults when None.
        stats: connection counters to update; the app's own when it has them.
        shutdown_trigger: when it returns, stop accepting and give open
            requests ``graceful_timeout`` seconds to finish.
        graceful_timeout: seconds open requests get after the trigger.

    Raises:
        ApiListenError: the address is malformed, in use, or not usable; TLS
            files that do not load; a plain-HTTP TCP listener on a
            non-loopback address without ``allow_plaintext_tokens``.
    """
    api = api or ApiConfig()
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        raise ApiListenError(str(exc), listen=listen) from None
    shown = str(address)
    tls = None
    if address.is_tcp:
        tls = _tls_context(api, shown)
        sock = _tcp_listener(address, shown)
        host, port = sock.getsockname()[:2]
        shown = str(attrs.evolve(address, host=host, port=port))
        if tls is None and not api.allow_plaintext_tokens and not _is_loopback(sock):
            sock.close()
            raise ApiListenError(
                "tokens would cross the network in plain text: set [api] tls_cert and "
                "tls_key, or allow_plaintext_tokens = true",
                listen=shown,
            )
    else:
        sock = _unix_listener(address, shown)
    inode = None if address.path is None else os.stat(address.path).st_ino
    if stats is None:
        own = getattr(app, "stats", None)
        stats = own if isinstance(own, ServerStats) else ServerStats()
    limits = ConnectionLimits(
        max_connections=api.max_connections,
        header_timeout=api.header_timeout,
        keep_alive_timeout=api.keep_alive_timeout,
        send_timeout=api.body_timeout,
    )
    log = get_logger(component="api")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    serve_connections,
                    app,
                    sock,
                    config=_hypercorn_config(graceful_timeout),
                    limits=limits,
                    stats=stats,
                    ssl_context=tls,
                    shutdown_trigger=shutdown_trigger,
                    graceful_timeout=graceful_timeout,
                )
            )
            log.info("api.listening", listen=shown, tls=tls is not None)
            task_status.started(shown)
    finally:
        sock.close()  # if serve_connections never took it over
        if address.path is not None:
            # Only our own socket file: a successor may already have replaced it.
            with contextlib.suppress(OSError):
                if os.stat(address.path).st_ino == inode:
                    os.unlink(address.path)


# ------------------------------------------------------------------ attaching

#: Seconds between writes of the anonymous-refusal counts of finished minutes.
_AUDIT_FLUSH_EVERY: Final = 60.0


def _check_audit_path(path: Path, source: str) -> None:
    """Refuse an audit path that exists and is not a regular file (one line).

    Raises:
        ConfigError: naming ``api.audit_log``.
    """
    try:
        check_output_path(path)
    except UnsafePathError as exc:
        raise ConfigError(exc.problem, source=source, key="api.audit_log") from None


def _only(group: BaseExceptionGroup[Any], kind: type[Exception]) -> Exception | None:
    """The one exception in ``group`` (nested groups flattened) if it is a ``kind``, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], kind):
        return leaves[0]
    return None


async def _wait_closing(sup: Supervisor) -> None:
    """Return when ``sup`` starts to close.

    ``sup.closing`` is read at call time: each run of a supervisor has its own event.
    """
    await sup.closing.wait()


def attach_api(sup: Supervisor) -> None:
    """Serve the HTTP API inside ``sup``'s run, from before the systems start.

    Appends one service to ``sup.services``: it serves ``[api] listen`` until
    ``sup.closing`` is set (so an answer in flight, such as the one to
    ``shutdown --emergency`` with ``--exit-on-emergency``, is sent before the
    process exits) and writes the audit log's anonymous-refusal counts once a
    minute and at the end. Also adds the audit log's writability to the
    readiness sink checks.

    Raises:
        ConfigError: ``[api] listen`` is malformed, or ``[api] audit_log``
            exists and is not a regular file.
    """
    api = sup.active_config.api
    source = sup.config.source
    try:
        addr = parse_listen(api.listen)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key="api.listen") from None
    listen = f"unix:{sup.config.path(addr.path)}" if addr.path else api.listen
    audit_path = sup.config.path(api.audit_log)
    _check_audit_path(audit_path, source)
    served = attrs.evolve(
        api,
        tls_cert=None if api.tls_cert is None else str(sup.config.path(api.tls_cert)),
        tls_key=None if api.tls_key is None else str(sup.config.path(api.tls_key)),
    )
    audit = AuditLog(audit_path, redactor=sup.redactor)
    sup.sink_checks.append(
        lambda: None if audit.writable() else f"the audit log {audit_path} is not writable"
    )
    app = _Api(sup=sup, api=served, tcp=addr.is_tcp, audit=audit, redactor=sup.redactor)
    install_metrics(sup)  # GET /metrics: the core imports no metrics library
    # The tokens of the phase in force: what readiness judges is what the API accepts.
    sup.phase_listeners.append(lambda _phase: app.use_tokens(sup.active_config.api.tokens))

    async def flush_refusals() -> None:
        try:
            while True:
                await trio.sleep(_AUDIT_FLUSH_EVERY)
                await app.flush_audit()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await app.flush_audit(final=True)

    async def serve(
        _sup: Supervisor, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_refusals)
                await serve_api(
                    app,
                    listen,
                    api=served,
                    shutdown_trigger=functools.partial(_wait_closing, sup),
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps serve_api's start-up error: callers catch the one line.
            error = _only(group, ApiListenError)
            if error is None:
                raise
            raise error from None

    sup.services.append(serve)
