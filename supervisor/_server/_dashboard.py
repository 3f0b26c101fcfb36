"""The ``/dashboard`` routes: login, logout, the page, its static files, its session, its stream.

The page itself (HTML, script, styles, the vendored chart library) is in
``supervisor/_server/static/``, shipped as package data; this module serves
it and does the security around it (:mod:`supervisor._server._session` for
the cookie, :mod:`supervisor._server._events` for the live stream):

* ``GET /dashboard/login``: the form (a small HTML page made here, so the
  one error line is the server's, escaped). ``POST /dashboard/login`` with
  the form field ``token``: checked exactly as the API's bearer tokens are
  (same hashes, same roles); right → a session cookie and 303 to
  ``/dashboard``; wrong → the form again, 401, with one line; too many
  failures from one peer → 429 with ``Retry-After``, the token not even
  looked at. Logins (opened, failed, limited) are audited.
* ``POST /dashboard/logout``: ends the session on the server and clears the
  cookie (it needs the session's CSRF token, in ``X-CSRF-Token`` or the form
  field ``csrf``); 303 to the login form.
* ``GET /dashboard``: the page, for any role; a visitor without a session
  gets a 303 to the login form. The page's CSRF token and role are in
  ``<meta name="supervisor-csrf">`` / ``<meta name="supervisor-role">``
  (inserted after ``<head>``) and in ``GET /dashboard/session``
  (``{"name", "role", "csrf", "expires"}``; ``csrf`` and ``expires`` are
  null for the Unix socket's owner, who needs no cookie).
* ``GET /dashboard/static/NAME``: a file of the static folder, by its exact
  name (no folders, no dots in front, known types only: nothing else on
  disk is reachable), with an ETag and ``no-cache`` (revalidated: an upgrade
  is seen at once).
* ``GET /dashboard/events``: the live stream (viewer role).

Every HTML answer carries a strict ``Content-Security-Policy`` (only our
origin, no inline script or style, no framing) and ``Referrer-Policy:
no-referrer``. No route here takes a token in its URL.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import attrs
import trio

from .._core._control import Caller
from ._audit import AuditEntry
from ._events import Broadcaster
from ._requests import (
    Answer,
    HttpError,
    Receive,
    Scope,
    Send,
    header_values,
    json_answer,
    source_of,
)
from ._session import COOKIE_NAME, LoginLimiter, Session, Sessions

__all__ = ["CSP", "STATIC_DIR", "Dashboard", "session_cookie"]

#: Where the page's files are (package data).
STATIC_DIR: Final = Path(__file__).parent / "static"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_PAGE_HEADERS: Final = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
HTML_TYPE: Final = b"text/html; charset=utf-8"
FORM_TYPE: Final = b"application/x-www-form-urlencoded"
#: A login or logout form body larger than this is refused (413).
MAX_FORM: Final = 4096
#: Static files served, by suffix; anything else in the folder is not served.
_TYPES: Final = {
    ".html": HTML_TYPE,
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}
_STATIC_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}", re.ASCII)
#: A static file larger than this is not served (the folder is ours; a guard).
_MAX_STATIC: Final = 4 * 1024 * 1024
_PAGE: Final = "dashboard.html"
_LOGIN_FORM: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>supervisor: log in</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
</head>
<body class="login">
<main>
<h1>supervisor</h1>
<form method="post" action="/dashboard/login" id="login">
<label for="token">Token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
<p class="error" id="login-error" role="alert">{message}</p>
</main>
</body>
</html>
"""


class App(Protocol):
    """What the dashboard needs of the API app (:class:`supervisor._server._app.Api`)."""

    tcp: bool
    sessions: Sessions

    def identify(self, scope: Scope) -> tuple[Caller, Session | None]: ...

    def match_token(self, token: bytes) -> tuple[Caller, str] | None: ...

    async def read_body(
        self, scope: Scope, receive: Receive, *, media: bytes, limit: int
    ) -> bytes: ...

    async def write_entry(self, entry: AuditEntry) -> bool: ...

    async def refusal(self, *, source: str, action: str, status: int, detail: str) -> None: ...


def session_cookie(value: str, *, max_age: int, secure: bool) -> bytes:
    """The ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Path=/ (and Secure over TLS)."""
    flags = f"{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return (flags + ("; Secure" if secure else "")).encode("ascii")


def _redirect(location: str, *headers: tuple[bytes, bytes]) -> Answer:
    return Answer(
        303,
        b"",
        content_type=b"text/plain; charset=utf-8",
        headers=((b"location", location.encode("ascii")), *headers),
        detail="redirect",
    )


def _secure(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


@attrs.define(eq=False)
class _Static:
    body: bytes
    content_type: bytes
    etag: bytes


@attrs.define(eq=False)
class Dashboard:
    """The ``/dashboard`` routes of one API app."""

    app: App
    events: Broadcaster | None = None
    max_connections: int = 256
    static_dir: Path = STATIC_DIR
    limiter: LoginLimiter = attrs.field(factory=LoginLimiter)
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _files: dict[str, _Static] = attrs.field(init=False, factory=dict)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> Answer | None:
        """The answer to a ``/dashboard...`` request, or None when it was streamed here."""
        path = str(scope.get("path", ""))
        method = str(scope.get("method", ""))
        if path.startswith("/dashboard/static/"):
            _only(method, "GET", path)
            return await self._static(path.removeprefix("/dashboard/static/"), scope)
        if path == "/dashboard/login":
            if method == "POST":
                _same_origin(scope)
                return await self._login(scope, receive)
            _only(method, "GET, POST", path)
            return self._form("", status=200)
        if path == "/dashboard/logout":
            _only(method, "POST", path)
            _same_origin(scope)
            return await self._logout(scope, receive)
        if path in ("/dashboard", "/dashboard/"):
            _only(method, "GET", path)
            return await self._page(scope)
        if path == "/dashboard/session":
            _only(method, "GET", path)
            caller, session = self.app.identify(scope)
            return json_answer(200, _session_view(caller, session))
        if path == "/dashboard/events":
            if method != "GET":  # not even HEAD: its answer would be a stream
                raise HttpError(405, f"{path} takes GET", headers=[(b"allow", b"GET")])
            self.app.identify(scope)  # any role: 401/403 as the API
            return await self._stream(scope, receive, send)
        raise HttpError(404, "no such dashboard page")

    # ---------------------------------------------------------------- login

    def _form(
        self, message: str, *, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> Answer:
        import html  # noqa: PLC0415 - html.entities' tables load with the first page

        body = _LOGIN_FORM.replace("{message}", html.escape(message)).encode("utf-8")
        return Answer(
            status,
            body,
            content_type=HTML_TYPE,
            headers=(*_PAGE_HEADERS, *headers),
            detail=message or "ok",
        )

    async def _login(self, scope: Scope, receive: Receive) -> Answer:
        source = source_of(scope)
        wait = self.limiter.retry_after(source, self.monotonic())
        if wait > 0:
            await self.app.refusal(
                source=source, action="login", status=429, detail="too many failed logins"
            )
            return self._form(
                f"Too many failed logins: try again in {math.ceil(wait)} s.",
                status=429,
                headers=((b"retry-after", str(math.ceil(wait)).encode("ascii")),),
            )
        token = _form_field(
            await self.app.read_body(scope, receive, media=FORM_TYPE, limit=MAX_FORM), "token"
        )
        token = token.strip()  # a pasted token often brings a newline along
        found = self.app.match_token(token.encode("utf-8")) if token else None
        if found is None:
            self.limiter.failed(source, self.monotonic())
            await self.app.refusal(
                source=source, action="login", status=401, detail="invalid token"
            )
            return self._form("That token is not valid.", status=401)
        caller, digest = found
        now = self.wall()
        session, value = self.app.sessions.open(caller, token=digest, now=now)
        await self.app.write_entry(
            AuditEntry(
                caller=caller.name,
                role=caller.role,
                action="login",
                arguments=None,
                status=303,
                detail="dashboard session opened",
            )
        )
        max_age = max(0, round(session.expires - now))
        return _redirect(
            "/dashboard",
            (b"set-cookie", session_cookie(value, max_age=max_age, secure=_secure(scope))),
        )

    async def _logout(self, scope: Scope, receive: Receive) -> Answer:
        caller, session = self.app.identify(scope)
        body = await self.app.read_body(scope, receive, media=FORM_TYPE, limit=MAX_FORM)
        if session is not None:
            presented = header_values(scope, b"x-csrf-token")
            csrf = presented[0] if len(presented) == 1 else _form_field(body, "csrf").encode()
            if not self.app.sessions.csrf_ok(session, csrf or None):
                raise HttpError(403, "missing or wrong X-CSRF-Token for this session")
            self.app.sessions.close(session.id)
            await self.app.write_entry(
                AuditEntry(
                    caller=caller.name,
                    role=caller.role,
                    action="logout",
                    arguments=None,
                    status=303,
                    detail="dashboard session ended",
                )
            )
        return _redirect(
            "/dashboard/login",
            (b"set-cookie", session_cookie("", max_age=0, secure=_secure(scope))),
        )

    # ----------------------------------------------------------------- page

    async def _page(self, scope: Scope) -> Answer:
        try:
            caller, session = self.app.identify(scope)
        except HttpError as exc:
            if exc.status in (401, 403):
                return _redirect("/dashboard/login")
            raise
        page = await self._file(_PAGE)
        if page is None:
            raise HttpError(503, "the dashboard page is not installed (supervisor/_server/static)")
        import html  # noqa: PLC0415 - html.entities' tables load with the first page

        csrf = html.escape(session.csrf if session else "")
        meta = (
            f'<meta name="supervisor-csrf" content="{csrf}">'
            f'<meta name="supervisor-role" content="{html.escape(caller.role)}">'
        ).encode()
        body = page.body.replace(b"<head>", b"<head>" + meta, 1)
        return Answer(200, body, content_type=HTML_TYPE, headers=_PAGE_HEADERS)

    async def _static(self, name: str, scope: Scope) -> Answer:
        if not _STATIC_NAME.fullmatch(name) or ".." in name:
            raise HttpError(404, "no such dashboard file")
        found = await self._file(name)
        if found is None:
            raise HttpError(404, "no such dashboard file")
        headers = ((b"etag", found.etag), (b"cache-control", b"no-cache"))
        if found.etag in header_values(scope, b"if-none-match"):
            return Answer(304, b"", content_type=found.content_type, headers=headers)
        extra = _PAGE_HEADERS if found.content_type == HTML_TYPE else ()
        return Answer(200, found.body, content_type=found.content_type,
                      headers=(*headers, *extra))  # fmt: skip

    async def _file(self, name: str) -> _Static | None:
        """A static file by name, read once (in a worker thread: disk I/O stays off the loop).

        None when it is not a regular file of the folder with a served type.
        """
        cached = self._files.get(name)
        if cached is not None:
            return cached
        kind = _TYPES.get(Path(name).suffix.lower())
        if kind is None:
            return None
        body = await trio.to_thread.run_sync(_read_static, self.static_dir / name)
        if body is None:
            return None
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode("ascii") + b'"'
        self._files[name] = _Static(body=body, content_type=kind, etag=etag)
        return self._files[name]

    # --------------------------------------------------------------- stream

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> Answer | None:
        if self.events is None:
            raise HttpError(503, "the live stream is not running")
        sub = self.events.subscribe(self.max_connections)
        if sub is None:
            raise HttpError(
                503,
                "too many dashboard streams are open: try again later",
                headers=[(b"retry-after", b"5")],
            )
        await self.events.stream(sub, receive, send)
        return None


def _read_static(path: Path) -> bytes | None:
    """The file's bytes; None for a symlink (only what the package put there), a
    non-file, a file too large, or one that cannot be read."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with path.open("rb") as f:
            body = f.read(_MAX_STATIC + 1)
    except OSError:
        return None
    return None if len(body) > _MAX_STATIC else body


def _only(method: str, allowed: str, path: str) -> None:
    methods = allowed.split(", ")
    if method in methods or (method == "HEAD" and "GET" in methods):
        return
    raise HttpError(405, f"{path} takes {allowed}", headers=[(b"allow", allowed.encode())])


def _same_origin(scope: Scope) -> None:
    """Refuse a login or logout form posted from another site (login CSRF).

    ``SameSite=Strict`` keeps our cookie off cross-site requests, but a
    cross-site form could still log the victim's browser into the
    attacker's session. Current browsers send ``Sec-Fetch-Site`` on every
    request, and it alone decides when present: our own pages send
    ``Referrer-Policy: no-referrer``, under which Chromium posts our own
    login form with ``Origin: null`` (the Fetch standard's serialisation),
    so ``Origin`` cannot decide then. Without ``Sec-Fetch-Site`` (an older
    browser) an ``Origin``, when sent, must be this origin. Tools such as
    curl send neither and are not browsers.

    Raises:
        HttpError: 403 for a cross-site POST.
    """
    sites = header_values(scope, b"sec-fetch-site")
    if sites:
        if len(sites) > 1 or sites[0].strip().lower() not in (b"same-origin", b"none"):
            raise HttpError(403, "a dashboard form must be posted from the dashboard itself")
        return
    origins = header_values(scope, b"origin")
    if not origins:
        return
    hosts = header_values(scope, b"host")
    scheme = str(scope.get("scheme", "http")).encode("ascii")
    if len(origins) > 1 or not hosts or origins[0].strip() != scheme + b"://" + hosts[0].strip():
        raise HttpError(403, "a dashboard form must be posted from the dashboard itself")


def _form_field(body: bytes, name: str) -> str:
    """One field of a urlencoded form body ("" when absent).

    Raises:
        HttpError: 400 for a malformed body or a field given twice.
    """
    try:
        pairs = parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
            max_num_fields=8,
        )  # fmt: skip
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "malformed form body") from None
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise HttpError(400, f"form field {name!r} given twice")
    return values[0] if values else ""


def _session_view(caller: Caller, session: Session | None) -> dict[str, Any]:
    return {
        "name": caller.name,
        "role": caller.role,
        "csrf": None if session is None else session.csrf,
        "expires": None if session is None else session.expires,
    }
