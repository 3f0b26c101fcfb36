"""The HTTP API: a small, exact ASGI app over :class:`~supervisor._core._control.Controlled`.

No web framework: ten routes, each answer JSON (``{"error": ...}`` on
errors) except ``/metrics``. Every request is checked in the same order, so
the status code a hostile request gets is predictable (``tests/test_api.py``
pins each step):

1. the route (404), then the method (405, with ``Allow``);
2. the caller: ``Authorization: Bearer <token>``; a presented token that
   matches no configured hash is always 401. Without one, the dashboard's
   session cookie (:mod:`supervisor._server._session`): a live session whose
   token is still configured is its caller, and a POST it authenticates
   must carry the session's ``X-CSRF-Token`` (403 otherwise); an invalid
   cookie counts as none. Without either: on TCP, 401; on the Unix socket
   the peer's uid (``SO_PEERCRED``, read by the listener) decides: the
   socket's owner (this process's user, or root) is an operator named
   ``uid:N(user)`` in every phase, any other uid is 403. Then the role (403);
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

The parsers and the route table are in :mod:`supervisor._server._requests`;
serving the app on a socket is :mod:`supervisor._server._serve`; the
``/dashboard`` routes are :mod:`supervisor._server._dashboard`.
(why no web framework: the README's section on the dashboard).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import trio

from .._address import MAX_ERRORS_LIMIT
from .._alerts import alerts_view
from .._core._config_sections import ApiConfig, TokenConfig, parse_duration
from .._core._control import Caller, Controlled, Refused, Unknown
from .._core._experiments import experiments_view
from .._core._redact import Redactor
from .._logging import get_logger
from .._rollout._plan import RolloutInputError
from .._rollout._service import rollout_act, rollouts_view
from .._store._query import (
    correlation,
    new_fingerprints,
    pick_bucket,
    records,
    store_info,
    trends,
)
from .._store._shipper import ErrorShipper
from ._audit import AuditEntry, AuditLog
from ._connection import ServerStats
from ._dashboard import Dashboard
from ._events import Broadcaster
from ._requests import (
    JSON_TYPE,
    Answer,
    ASGIApp,
    HttpError,
    Receive,
    Route,
    Scope,
    Send,
    check_name,
    cookie_values,
    header_values,
    json_answer,
    load_metrics,
    parse_object,
    prometheus_text,
    query,
    resolve,
    rollout_of,
    scope_peer_uid,
    server_families,
    since_param,
    source_of,
    system_of,
    uid_name,
    unauthorized,
    validate,
)
from ._session import COOKIE_NAME, Session, Sessions

__all__ = ["Api", "make_app"]

#: ``/v1/errors?limit=`` default.
DEFAULT_ERRORS_LIMIT: Final = 20
_BASE_HEADERS: Final = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)
_DASHBOARD: Final = "/dashboard"
_LIMIT_RE: Final = re.compile(r"[0-9]{1,7}", re.ASCII)
#: A body in more parts (chunks) than this is refused (413), whatever its size.
MAX_BODY_PARTS: Final = 1024
# Refusals of callers with no identity: aggregated in the audit log.
_ANONYMOUS_REFUSALS: Final = frozenset({401, 403})


@attrs.define(eq=False)
class _AuditNote:
    """What the audit line of one action request says, filled in as checks pass."""

    action: str
    source: str = "local"  # the client's address, or the Unix peer's uid
    caller: Caller | None = None
    arguments: dict[str, Any] | None = None
    unaudited: bool = False  # refused (503): the attempt line could not be written


@attrs.define(eq=False)
class Api:
    """The ASGI app; see the module docstring for the order of checks."""

    sup: Controlled
    api: ApiConfig
    tcp: bool
    audit: AuditLog
    redactor: Redactor | None
    #: The durable error store, when attached: ``/v1/errors?since=``, ``/v1/errors/trends``.
    error_store: ErrorShipper | None = None
    stats: ServerStats = attrs.field(factory=ServerStats)
    #: The dashboard's live stream (its service is attached by ``attach_api``).
    events: Broadcaster | None = None
    #: Dashboard sessions: the key is this process's, so a restart ends them all.
    sessions: Sessions = attrs.field(factory=Sessions)
    dashboard: Dashboard = attrs.field(init=False)
    #: Action requests refused (503) because their audit line could not be written.
    audit_refusals: int = attrs.field(default=0, init=False)
    #: Requests answered 408 because their body did not arrive in time.
    body_timeouts: int = attrs.field(default=0, init=False)
    # (sha256 hex as bytes, caller) for each configured token, built once.
    _tokens: tuple[tuple[bytes, Caller], ...] = attrs.field(init=False)
    _owners: dict[int, Caller] = attrs.field(init=False)
    _log: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.use_tokens(self.api.tokens)
        # The two uids that own the 0600 socket: this process's user and
        # root. Names are looked up once here: getpwuid may block (NSS/LDAP).
        self._owners = {
            uid: Caller(name=uid_name(uid), role="operator") for uid in {os.getuid(), 0}
        }
        self._log = get_logger(component="api")
        self.dashboard = Dashboard(
            self, events=self.events, max_connections=self.api.max_connections
        )

    def use_tokens(self, tokens: tuple[TokenConfig, ...]) -> None:
        """Accept these tokens from now on (the phase in force changed its ``[api] tokens``)."""
        self._tokens = tuple(
            (t.sha256.encode("ascii"), Caller(name=t.name, role=t.role)) for t in tokens
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
                if path == _DASHBOARD or path.startswith(_DASHBOARD + "/"):
                    streamed = await self.dashboard.handle(scope, receive, send)
                    if streamed is None:
                        return  # the live stream answered by itself
                    answer = streamed
                else:
                    route = resolve(path, method)
                    if route.action is not None:
                        note = _AuditNote(action=route.action, source=source_of(scope))
                    answer = await self._route(route, scope, receive, note)
            except HttpError as exc:
                answer = self._error_answer(exc)
            except Exception:
                self._log.exception("api.internal_error", method=method, path=path)
                answer = json_answer(500, {"error": "internal error"}, detail="internal error")
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

    def _error_answer(self, exc: HttpError) -> Answer:
        message = self.redactor.text(exc.message) if self.redactor else exc.message
        return json_answer(exc.status, {"error": message}, detail=message, headers=exc.headers)

    async def _route(
        self, route: Route, scope: Scope, receive: Receive, note: _AuditNote | None
    ) -> Answer:
        if route.public:
            handler: Callable[..., Awaitable[Answer]] = getattr(self, route.handler)
            query(scope, route.params)
            return await handler()
        caller, session = self.identify(scope)
        if note is not None:
            note.caller = caller
        if route.method == "POST" and session is not None:
            self._check_csrf(scope, session)
        if route.method == "POST" and caller.role != "operator":
            raise HttpError(403, f"role {caller.role!r} may not {route.action}; needs operator")
        params = query(scope, route.params)
        if route.method == "GET":
            view: Callable[..., Awaitable[Answer]] = getattr(self, route.handler)
            return await view(**params)
        # Every POST route is an action, so it has an audit note.
        assert route.action is not None
        assert note is not None
        body = await self.read_body(scope, receive, media=JSON_TYPE, limit=self.api.max_body)
        arguments = validate(route.action, parse_object(body))
        arguments.update(system_of(str(scope.get("path", ""))))
        arguments.update(rollout_of(str(scope.get("path", ""))))
        note.arguments = arguments
        # Fail closed: the attempt is on disk before anything changes, or
        # nothing changes (tests/test_api_audit.py).
        if not await self.write_entry(self._entry(note, stage="attempt")):
            note.unaudited = True
            self.audit_refusals += 1
            self._log.error(
                "api.refused_unaudited",
                action=route.action,
                caller=caller.name,
                refusals=self.audit_refusals,
            )
            raise HttpError(
                503, "the audit log cannot be written, so the action was not carried out"
            )
        act: Callable[..., Awaitable[dict[str, Any]]] = getattr(self, route.handler)
        return await self._act(route.action, act, arguments, caller)

    def identify(self, scope: Scope) -> tuple[Caller, Session | None]:
        """The caller of a non-probe request, and the dashboard session it came with (if any).

        A presented token always decides. Without one, a live session cookie
        does (its CSRF token is checked by the caller of this, for POSTs).
        Without either, on the Unix socket, the peer's uid (``SO_PEERCRED``,
        put in the scope by the listener) does: the socket's owner (this
        process's user, or root) is an operator in every phase (contract
        section 8), so no phase change can lock the operator out; any other
        uid is refused. On TCP a token or a session is always needed.

        Raises:
            HttpError: 401 for a presented token that matches no hash, or for
                a missing one where a token is required; 403 for a Unix peer
                that does not own the socket.
        """
        values = header_values(scope, b"authorization")
        if not values:
            session = self._session(scope)
            if session is not None:
                return session.caller, session
            uid = None if self.tcp else scope_peer_uid(scope)
            if uid is None:
                raise unauthorized(
                    "a token is required: send it in the Authorization header as Bearer <token>",
                    invalid=False,
                )
            owner = self._owners.get(uid)
            if owner is None:
                raise HttpError(
                    403,
                    f"uid {uid} does not own this socket: send a token in the Authorization header",
                )
            return owner, None
        if len(values) > 1:
            raise unauthorized("more than one Authorization header", invalid=True)
        scheme, _, token = values[0].strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise unauthorized(
                "expected the Authorization header to be Bearer <token>", invalid=True
            )
        found = self.match_token(token)
        if found is None:
            raise unauthorized("invalid token", invalid=True)
        return found[0], None

    def match_token(self, token: bytes) -> tuple[Caller, str] | None:
        """The caller a token stands for and the token's sha256 hex, or None when none matches."""
        digest = hashlib.sha256(token).hexdigest().encode("ascii")
        found: Caller | None = None
        # Compare against every hash, without stopping at a match, so the
        # time taken says nothing about which (or whether a) token matched.
        for expected, caller in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = caller
        return None if found is None else (found, digest.decode("ascii"))

    def _session(self, scope: Scope) -> Session | None:
        """The live session of the request's cookie whose token is still configured, or None."""
        values = cookie_values(scope, COOKIE_NAME)
        if len(values) != 1:
            return None  # none, or several (ambiguous: a planted cookie beside ours)
        session = self.sessions.check(values[0], now=time.time())
        if session is None:
            return None
        if session.token is not None and not any(
            hmac.compare_digest(session.token.encode("ascii"), expected)
            for expected, _ in self._tokens
        ):
            return None  # the token it came from is no longer accepted (phase change)
        return session

    def _check_csrf(self, scope: Scope, session: Session) -> None:
        """A state-changing request made with the session cookie must echo its CSRF token.

        Raises:
            HttpError: 403, the ``X-CSRF-Token`` header is missing, repeated or wrong.
        """
        values = header_values(scope, b"x-csrf-token")
        presented = values[0].strip() if len(values) == 1 else None
        if not self.sessions.csrf_ok(session, presented):
            raise HttpError(
                403,
                "missing or wrong X-CSRF-Token: a request made with the dashboard's "
                "session cookie must carry the session's CSRF token",
            )

    async def read_body(self, scope: Scope, receive: Receive, *, media: bytes, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes, of the media type ``media`` (or none given).

        Raises:
            HttpError: 413 as soon as the body (declared or received) is too
                large or comes in too many parts, without reading the rest;
                415 for another media type (JSON also takes ``+json``); 408
                when the whole body has not arrived ``api.body_timeout``
                seconds after it was asked for.
        """
        too_large = HttpError(
            413,
            f"the body is larger than {limit} bytes",
            headers=[(b"connection", b"close")],
        )
        lengths = header_values(scope, b"content-length")
        if lengths:
            text = lengths[0].strip()
            if len(lengths) > 1 or not text.isdigit():
                raise HttpError(400, "malformed Content-Length")
            if int(text) > limit:
                raise too_large
        types = header_values(scope, b"content-type")
        if types:
            given = types[0].split(b";", 1)[0].strip().lower()
            if given != media and not (media == JSON_TYPE and given.endswith(b"+json")):
                raise HttpError(415, f"the body must be {media.decode('ascii')}")
        chunks: list[bytes] = []
        size = 0
        # A fixed deadline for the whole body, not per part: a chunked body
        # that dribbles a byte a second (or never ends) still ends here.
        with trio.move_on_after(self.api.body_timeout):
            while True:
                message = await receive()
                if message.get("type") == "http.disconnect":
                    raise HttpError(400, "the client went away before sending the body")
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if len(chunks) > MAX_BODY_PARTS:
                    raise HttpError(
                        413,
                        f"the body came in more than {MAX_BODY_PARTS} parts",
                        headers=[(b"connection", b"close")],
                    )
                if not message.get("more_body", False):
                    return b"".join(chunks)
        self.body_timeouts += 1
        raise HttpError(
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
    ) -> Answer:
        self._log.info("api.action", action=action, caller=caller.name, **arguments)
        try:
            result = await handler(caller=caller, **arguments)
        except RolloutInputError as exc:  # bad steps, duration or rule: the request's fault
            raise HttpError(400, str(exc)) from None
        except Refused as exc:
            payload = {k: v for k, v in exc.payload.items() if k != "error"}
            body: dict[str, Any] = {"error": exc.detail, **payload}
            if self.redactor is not None:
                body = self.redactor.record(body) or {"error": self.redactor.text(exc.detail)}
            self._log.info("api.refused", action=action, caller=caller.name, detail=exc.detail)
            return json_answer(404 if isinstance(exc, Unknown) else 409, body, detail=body["error"])
        except Exception:
            self._log.exception("api.action_failed", action=action, caller=caller.name)
            return json_answer(500, {"error": "internal error"}, detail="internal error")
        detail = result.get("detail") if isinstance(result, Mapping) else None
        return json_answer(200, result, detail=detail if isinstance(detail, str) else "ok")

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

    async def write_entry(self, entry: AuditEntry) -> bool:
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
        await self.write_entry(self._entry(note, stage="result", status=status, detail=detail))

    async def _record(self, note: _AuditNote, answer: Answer) -> None:
        """The audit line(s) for an answered action request."""
        if note.caller is None and answer.status in _ANONYMOUS_REFUSALS:
            # Anonymous refusals change nothing and cost an attacker nothing:
            # counted per source and minute, not one fsync each.
            await self.refusal(
                source=note.source, action=note.action, status=answer.status, detail=answer.detail
            )
            return
        if note.unaudited:
            return  # refused because the attempt line failed: nothing happened
        await self._write_result(note, answer.status, answer.detail)

    async def refusal(self, *, source: str, action: str, status: int, detail: str) -> None:
        """Audit a refusal of a caller with no identity (counted per source and minute)."""
        for entry in self.audit.tally_refusal(
            source=source, action=action, status=status, detail=detail
        ):
            await self.write_entry(entry)

    async def flush_audit(self, *, final: bool = False) -> None:
        """Write the refusal counts of minutes that are over (all of them when ``final``)."""
        for entry in self.audit.finished_refusals(final=final):
            await self.write_entry(entry)

    @staticmethod
    async def _send(send: Send, answer: Answer, *, head: bool) -> None:
        own = {name for name, _ in answer.headers}
        headers = [
            (b"content-type", answer.content_type),
            (b"content-length", str(len(answer.body)).encode("ascii")),
            *(h for h in _BASE_HEADERS if h[0] not in own),  # a static file's cache-control
            *answer.headers,
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else answer.body})

    # ---------------------------------------------------------- handlers

    async def _healthz(self) -> Answer:
        alive, detail = self.sup.liveness()
        return json_answer(200 if alive else 503, {"alive": bool(alive), "detail": detail})

    async def _readyz(self) -> Answer:
        ready, reasons = self.sup.readiness_gate()
        return json_answer(200 if ready else 503, {"ready": bool(ready), "reasons": list(reasons)})

    async def _metrics(self) -> Answer:
        await load_metrics()  # the first scrape imports prometheus_client off the loop
        body, content_type = self.sup.metrics_text()
        return Answer(
            200, body + self._server_metrics(), content_type=content_type.encode("latin-1")
        )

    def _server_metrics(self) -> bytes:
        """The API's own counters, in the Prometheus text format, appended to the core's."""
        families = server_families(
            self.stats,
            body_timeouts=self.body_timeouts,
            audit_failures=self.audit.failures,
            audit_refusals=self.audit_refusals,
            sessions=len(self.sessions),
        )
        if self.events is not None:
            families += self.events.metric_families()
        return prometheus_text("supervisor_api_", families)

    async def _status(self) -> Answer:
        return json_answer(200, self.sup.status().as_dict())

    async def _readiness(self) -> Answer:
        # 200 either way: the request worked; the report's "ok" says the rest.
        return json_answer(200, self.sup.readiness().as_dict())

    async def _errors(
        self,
        limit: str | None = None,
        system: str | None = None,
        since: str | None = None,
        fingerprint: str | None = None,
    ) -> Answer:
        count = DEFAULT_ERRORS_LIMIT
        if limit is not None:
            if not _LIMIT_RE.fullmatch(limit) or not 1 <= int(limit) <= MAX_ERRORS_LIMIT:
                raise HttpError(
                    400,
                    f"query parameter 'limit' must be a whole number from 1 to {MAX_ERRORS_LIMIT}",
                )
            count = int(limit)
        check_name("system", system)
        if since is None and fingerprint is None:
            return json_answer(200, self.sup.error_view(limit=count, system=system).as_dict())
        store = self._store()
        check_name("fingerprint", fingerprint)
        view = await store.read(
            records,
            since=None if since is None else since_param(since),
            system=system,
            fingerprint=fingerprint,
            limit=count,
            tracebacks=not store.hide_tracebacks,
        )
        return json_answer(200, view)

    async def _trends(
        self,
        since: str | None = None,
        bucket: str | None = None,
        system: str | None = None,
        fingerprint: str | None = None,
    ) -> Answer:
        store = self._store()
        check_name("system", system)
        check_name("fingerprint", fingerprint)
        now = time.time()
        start = since_param(since or "1h", now)
        try:
            width = pick_bucket(now - start) if bucket is None else parse_duration(bucket)
        except ValueError as exc:
            raise HttpError(400, f"query parameter 'bucket': {exc}") from None

        def answer(conn: sqlite3.Connection) -> dict[str, Any]:
            return {
                **trends(conn, since=start, now=now, bucket=width, system=system,
                         fingerprint=fingerprint),
                "new": new_fingerprints(conn),
                "correlation": correlation(conn, start, now),
                "store": {**store_info(conn), **store.stats()},
            }  # fmt: skip

        try:
            return json_answer(200, await store.read(answer))
        except ValueError as exc:  # too many buckets
            raise HttpError(400, str(exc)) from None

    def _store(self) -> ErrorShipper:
        if self.error_store is None:
            raise HttpError(404, "the error store is off ([errors] store = false)")
        return self.error_store

    async def _alerts(self) -> Answer:
        return json_answer(200, alerts_view(self.sup))

    async def _experiments(self) -> Answer:
        return json_answer(200, experiments_view(self.sup))

    async def _shutdown(self, *, caller: Caller, emergency: bool, reason: str) -> dict[str, Any]:
        answer = await self.sup.shutdown(emergency=emergency, reason=reason, caller=caller)
        return answer.as_dict()

    async def _restart(self, *, caller: Caller, reason: str = "") -> dict[str, Any]:
        del reason  # audited with the request; the core's restart takes none
        return (await self.sup.restart(caller=caller)).as_dict()

    async def _phase(
        self, *, caller: Caller, phase: str, force: bool, reason: str
    ) -> dict[str, Any]:
        answer = await self.sup.change_phase(phase, force=force, reason=reason, caller=caller)
        return answer.as_dict()

    async def _quarantine(self, *, caller: Caller, name: str, reason: str) -> dict[str, Any]:
        return (await self.sup.quarantine(name, reason=reason, caller=caller)).as_dict()

    async def _release(self, *, caller: Caller, name: str, reason: str) -> dict[str, Any]:
        return (await self.sup.release(name, reason=reason, caller=caller)).as_dict()

    async def _snapshot(self, *, caller: Caller, reason: str) -> dict[str, Any]:
        return (await self.sup.snapshot(reason=reason, caller=caller)).as_dict()

    async def _rollouts(self) -> Answer:
        return json_answer(200, rollouts_view(self.sup))

    async def _rollout_start(self, *, caller: Caller, flag: str, **args: Any) -> dict[str, Any]:
        return await rollout_act(self.sup, "start", flag, by=caller.name, **args)

    async def _rollout_pause(self, *, caller: Caller, flag: str, **args: Any) -> dict[str, Any]:
        return await rollout_act(self.sup, "pause", flag, by=caller.name, **args)

    async def _rollout_resume(self, *, caller: Caller, flag: str, **args: Any) -> dict[str, Any]:
        return await rollout_act(self.sup, "resume", flag, by=caller.name, **args)

    async def _rollout_abort(self, *, caller: Caller, flag: str, **args: Any) -> dict[str, Any]:
        return await rollout_act(self.sup, "abort", flag, by=caller.name, **args)


def make_app(
    sup: Controlled,
    *,
    api: ApiConfig,
    tcp: bool,
    audit: AuditLog,
    redactor: Redactor | None = None,
    stats: ServerStats | None = None,
    error_store: ErrorShipper | None = None,
) -> ASGIApp:
    """Build the ASGI app serving ``sup``.

    Args:
        sup: the supervisor (anything implementing :class:`Controlled`).
        api: the ``[api]`` section: the token hashes, ``max_body``, ``body_timeout``.
        tcp: True when the app is served on TCP: a token is then always needed.
        audit: where every action request is recorded.
        redactor: applied to error answers (the audit log has its own).
        stats: the listener's counters, shown in ``/metrics``
            (:func:`~supervisor._server._serve.serve_api` uses the app's own
            when given none).
        error_store: the durable error store's shipper (``/v1/errors?since=``,
            ``/v1/errors/trends``); None answers those 404.

    Returns:
        The ASGI 3 application, for
        :func:`~supervisor._server._serve.serve_api` or any ASGI server.
    """
    return Api(
        sup=sup,
        api=api,
        tcp=tcp,
        audit=audit,
        redactor=redactor,
        stats=stats or ServerStats(),
        error_store=error_store,
    )
