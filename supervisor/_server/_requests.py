"""What a request to the API may be, and how an answer is made: no I/O, no state.

The route table, the JSON schemas of the actions, and the parsers that turn
a request's path, method, query string, headers and body into checked values
or an :class:`HttpError` (404, 405, 400, 401). :mod:`supervisor._server._app`
applies them in its fixed order; keeping them here leaves the app with the
order and the calls into the supervisor, and makes each parser testable
without a server.
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import pwd
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import attrs
import trio

from .._address import MAX_REASON
from .._core._phase import Phase
from .._store._query import parse_since

if TYPE_CHECKING:
    from ._connection import ServerStats

__all__ = [
    "JSON_TYPE",
    "ROUTES",
    "ASGIApp",
    "Answer",
    "Family",
    "HttpError",
    "Receive",
    "Route",
    "Scope",
    "Send",
    "check_name",
    "cookie_values",
    "dumps",
    "echo",
    "header_values",
    "json_answer",
    "parse_object",
    "prometheus_text",
    "query",
    "resolve",
    "rollout_of",
    "scope_peer_uid",
    "server_families",
    "since_param",
    "source_of",
    "system_of",
    "uid_name",
    "unauthorized",
    "validate",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE: Final = b"application/json"
_MAX_PHASE_NAME: Final = 64
_MAX_SYSTEM_NAME: Final = 200
# Echoed back in a 400 naming an unknown key: enough to recognise a typo.
_MAX_ECHO: Final = 40


@attrs.frozen
class Answer:
    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: tuple[tuple[bytes, bytes], ...] = ()
    detail: str = "ok"  # what the audit log records as the result


class HttpError(Exception):
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


def dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, allow_nan=False, ensure_ascii=False, default=_json_default)
    except ValueError:  # a NaN or an infinity somewhere
        text = json.dumps(_finite(obj), allow_nan=False, ensure_ascii=False, default=_json_default)
    return text.encode("utf-8") + b"\n"


#: A metric family: (name, type, help, label, {label value: sample}); label None:
#: one unlabelled sample (keyed "").
Family = tuple[str, str, str, str | None, Mapping[str, float]]


def prometheus_text(prefix: str, families: Iterable[Family]) -> bytes:
    """``families`` in the Prometheus text format, each name prefixed."""
    lines = []
    for name, kind, text, label, samples in families:
        full = prefix + name
        lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
        for value, count in samples.items():
            labels = "" if label is None else f'{{{label}="{value}"}}'
            lines.append(f"{full}{labels} {float(count)}")
    return ("\n".join(lines) + "\n").encode("ascii")


def server_families(
    st: ServerStats,
    *,
    body_timeouts: int,
    audit_failures: int,
    audit_refusals: int,
    sessions: int,
) -> tuple[Family, ...]:
    """The API server's own metric families (connections, deadlines, audit, sessions)."""
    return (
        ("connections_total", "counter",
         "API connections: served, or evicted before their request to make room.",
         "outcome", {"accepted": st.accepted, "evicted": st.evicted}),
        ("connections_open", "gauge", "API connections open now.", None, {"": st.open}),
        ("accept_pauses_total", "counter",
         "Times accepting paused: every connection was serving a request (newcomers wait).",
         None, {"": st.accept_pauses}),
        ("accept_paused_seconds_total", "counter",
         "Seconds accepting was paused with every connection serving a request.",
         None, {"": st.paused_seconds}),
        ("timeouts_total", "counter", "API connections or requests ended by a deadline.",
         "kind", {"header": st.header_timeouts, "keep_alive": st.keep_alive_timeouts,
                  "send": st.send_timeouts, "body": body_timeouts}),
        ("connection_errors_total", "counter",
         "API connections that ended with an error (logged, never raised).",
         None, {"": st.errors}),
        ("audit_failures_total", "counter", "Audit lines that could not be written.",
         None, {"": audit_failures}),
        ("unaudited_refusals_total", "counter",
         "Actions refused (503) because their audit line could not be written.",
         None, {"": audit_refusals}),
        ("dashboard_sessions", "gauge", "Dashboard sessions open now.",
         None, {"": sessions}),
    )  # fmt: skip


def json_answer(
    status: int, obj: Any, *, detail: str = "ok", headers: Iterable[tuple[bytes, bytes]] = ()
) -> Answer:
    return Answer(status, dumps(obj), headers=tuple(headers), detail=detail)


def echo(text: str) -> str:
    """A user-supplied name, shortened for an error message."""
    return repr(text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "...")


# ------------------------------------------------------------------- routes


@attrs.frozen
class Route:
    method: str  # "GET" routes answer HEAD too
    handler: str  # name of a method of the app (_app._Api)
    params: frozenset[str] = frozenset()  # allowed query parameters
    public: bool = False  # probes: no token ever looked at
    action: str | None = None  # audited control action


ROUTES: Final[Mapping[str, Route]] = {
    "/healthz": Route("GET", "_healthz", public=True),
    "/readyz": Route("GET", "_readyz", public=True),
    "/metrics": Route("GET", "_metrics"),
    "/v1/status": Route("GET", "_status"),
    "/v1/readiness": Route("GET", "_readiness"),
    "/v1/errors": Route(
        "GET", "_errors", params=frozenset({"limit", "system", "since", "fingerprint"})
    ),
    "/v1/errors/trends": Route(
        "GET", "_trends", params=frozenset({"since", "bucket", "system", "fingerprint"})
    ),
    "/v1/alerts": Route("GET", "_alerts"),
    "/v1/experiments": Route("GET", "_experiments"),
    "/v1/shutdown": Route("POST", "_shutdown", action="shutdown"),
    "/v1/restart": Route("POST", "_restart", action="restart"),
    "/v1/phase": Route("POST", "_phase", action="phase"),
    "/v1/snapshot": Route("POST", "_snapshot", action="snapshot"),
    # A system's name is a path segment: ``resolve`` reads it (``system_of``).
    "/v1/systems/{name}/quarantine": Route("POST", "_quarantine", action="quarantine"),
    "/v1/systems/{name}/release": Route("POST", "_release", action="release"),
    # Staged rollouts (issue 13): the flag's name is a path segment (``rollout_of``).
    "/v1/rollouts": Route("GET", "_rollouts"),
    **{
        f"/v1/rollouts/{{flag}}/{verb}": Route("POST", f"_rollout_{verb}", action=f"rollout_{verb}")
        for verb in ("start", "pause", "resume", "abort")
    },
}
_SYSTEM_PATH: Final = re.compile(r"/v1/systems/([^/]{1,200})/(quarantine|release)")
_ROLLOUT_PATH: Final = re.compile(r"/v1/rollouts/([^/]{1,128})/(start|pause|resume|abort)")

# Per action: key -> (type, default); a default of _REQUIRED means the key must be
# given, _OMITTED that an absent key stays absent (the audit line shows what was sent).
_REQUIRED: Final = object()
_OMITTED: Final = object()
_SCHEMAS: Final[Mapping[str, Mapping[str, tuple[type, Any]]]] = {
    "shutdown": {"emergency": (bool, False), "reason": (str, "")},
    # The core's restart takes no reason: it is kept for the audit log (the page asks for one).
    "restart": {"reason": (str, _OMITTED)},
    "phase": {"phase": (str, _REQUIRED), "force": (bool, False), "reason": (str, "")},
    "quarantine": {"reason": (str, "")},
    "release": {"reason": (str, "")},
    "snapshot": {"reason": (str, "")},
    "rollout_start": {
        "steps": (str, _REQUIRED),
        "every": (str, _REQUIRED),
        "rollback_on": (list, ()),
        "reason": (str, ""),
    },
    "rollout_pause": {"reason": (str, "")},
    "rollout_resume": {"reason": (str, "")},
    "rollout_abort": {"reason": (str, "")},
}
_TYPE_NAMES: Final = {bool: "true or false", str: "a string", list: "a list of strings"}


class _DuplicateKey(ValueError):
    """Raised while parsing a JSON body that names one key twice."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key is ambiguous (which one did the caller mean, and which
    # one would the audit log show?), so it is refused rather than last-wins.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {echo(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``.

    Raises:
        HttpError: 400, the body is not UTF-8 JSON or not an object.
    """
    if not body.strip():
        return {}
    try:
        obj = json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateKey as exc:
        raise HttpError(400, f"invalid JSON body: {exc}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise HttpError(400, "the body must be a JSON object")
    return obj


def validate(action: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of ``action`` from ``obj``, with defaults filled in.

    Raises:
        HttpError: 400 naming the first unknown, missing or mistyped key.
    """
    schema = _SCHEMAS[action]
    for key in obj:
        if key not in schema:
            known = ", ".join(schema) or "none"
            raise HttpError(400, f"unknown key {echo(key)} (known keys: {known})")
    out: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        if key not in obj:
            if default is _REQUIRED:
                raise HttpError(400, f"missing key {key!r}")
            if default is not _OMITTED:
                out[key] = default
            continue
        value = obj[key]
        # type() rather than isinstance: True is an int, and 1 is not a bool.
        if type(value) is not kind:
            raise HttpError(400, f"key {key!r} must be {_TYPE_NAMES[kind]}")
        out[key] = value
    if len(out.get("reason", "")) > MAX_REASON:
        raise HttpError(400, f"key 'reason' must be at most {MAX_REASON} characters")
    if action == "phase":
        if len(out["phase"]) > _MAX_PHASE_NAME:
            raise HttpError(400, "key 'phase' names no phase")
        try:
            out["phase"] = Phase.parse(out["phase"]).value
        except ValueError as exc:
            raise HttpError(400, f"key 'phase': {exc}") from None
    return out


def query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all of them known.

    Raises:
        HttpError: 400 naming the unknown or repeated parameter.
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
        raise HttpError(400, "malformed query string") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise HttpError(400, f"unknown query parameter {echo(key)} (known: {known})")
        if key in out:
            raise HttpError(400, f"query parameter {key!r} given twice")
        out[key] = value
    return out


def resolve(path: str, method: str) -> Route:
    """The route for ``method path`` (HEAD counts as GET).

    Raises:
        HttpError: 404 for an unknown path, 405 (with ``Allow``) for a wrong method.
    """
    route = ROUTES.get(path)
    if route is None and (match := _SYSTEM_PATH.fullmatch(path)):
        route = ROUTES[f"/v1/systems/{{name}}/{match[2]}"]
    if route is None and (match := _ROLLOUT_PATH.fullmatch(path)):
        route = ROUTES[f"/v1/rollouts/{{flag}}/{match[2]}"]
    if route is None:
        raise HttpError(404, f"no such endpoint: {echo(path)}")
    if method == route.method or (method == "HEAD" and route.method == "GET"):
        return route
    allow = b"GET, HEAD" if route.method == "GET" else route.method.encode()
    raise HttpError(405, f"{path} takes {route.method}", headers=[(b"allow", allow)])


def system_of(path: str) -> dict[str, str]:
    """``{"name": NAME}`` for ``/v1/systems/NAME/...`` (ASGI paths are percent-decoded), else {}."""
    match = _SYSTEM_PATH.fullmatch(path)
    return {"name": match[1]} if match else {}


def rollout_of(path: str) -> dict[str, str]:
    """``{"flag": FLAG}`` for ``/v1/rollouts/FLAG/<verb>``, else {}."""
    match = _ROLLOUT_PATH.fullmatch(path)
    return {"flag": match[1]} if match else {}


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope.get("headers", ()) if k.lower() == name]


def cookie_values(scope: Scope, name: str) -> list[str]:
    """Every value the ``Cookie`` header(s) give ``name`` (a browser may send several)."""
    key = name.encode("ascii")
    out = []
    for header in header_values(scope, b"cookie"):
        for part in header.split(b";"):
            k, sep, v = part.strip().partition(b"=")
            if sep and k == key:
                out.append(v.decode("latin-1"))
    return out


def check_name(param: str, value: str | None) -> None:
    """A ``system`` or ``fingerprint`` query parameter: printable, 1 to 200 characters.

    Raises:
        HttpError: 400 naming the parameter.
    """
    if value is not None and (
        not value or len(value) > _MAX_SYSTEM_NAME or not value.isprintable()
    ):
        raise HttpError(400, f"query parameter {param!r} must be a {param} name")


def since_param(text: str, now: float | None = None) -> float:
    """The ``since`` query parameter as Unix seconds.

    Raises:
        HttpError: 400 naming the parameter.
    """
    try:
        return parse_since(text, time.time() if now is None else now)
    except ValueError as exc:
        raise HttpError(400, f"query parameter 'since': {exc}") from None


def scope_peer_uid(scope: Scope) -> int | None:
    """The Unix peer's uid our listener put in the scope, or None (TCP, or another server)."""
    extensions = scope.get("extensions") or {}
    uid = extensions.get("peer_uid")
    return uid if type(uid) is int else None


def uid_name(uid: int) -> str:
    """``uid:N(name)``, or ``uid:N`` when the user database has no name for it."""
    try:
        return f"uid:{uid}({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid:{uid}"


def source_of(scope: Scope) -> str:
    """Where a request came from, for aggregating anonymous refusals: an address, or a uid."""
    uid = scope_peer_uid(scope)
    if uid is not None:
        return f"uid:{uid}"
    client = scope.get("client")
    return str(client[0]) if client else "local"


def unauthorized(message: str, *, invalid: bool) -> HttpError:
    challenge = b'Bearer error="invalid_token"' if invalid else b"Bearer"
    return HttpError(401, message, headers=[(b"www-authenticate", challenge)])


#: The exposition module; ``_serve.install_lazy_metrics`` loads it on the first scrape.
METRICS_MODULE: Final = "supervisor._server._metrics"


async def load_metrics() -> None:
    """Import the exposition (prometheus_client, ~3 MB) in a worker thread, once.

    Called by ``GET /metrics`` before it builds the text, so the import's
    file reads and compiles are not a stall of the loop.
    """
    if METRICS_MODULE not in sys.modules:
        await trio.to_thread.run_sync(importlib.import_module, METRICS_MODULE)
