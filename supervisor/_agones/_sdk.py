"""The Agones SDK sidecar's REST API, spoken with h11 on trio's own TCP streams.

Agones ships no Python SDK; its sidecar serves the gRPC SDK through a
grpc-gateway on ``http://localhost:$AGONES_SDK_HTTP_PORT``: ``POST /ready``,
``/health``, ``/shutdown``, ``/allocate``, ``/reserve``; ``GET /gameserver``;
``GET /watch/gameserver`` (one JSON object per line, ``{"result": GameServer}``,
for as long as the connection stays open); ``PUT /metadata/label`` and
``/metadata/annotation`` (``{"key", "value"}``); the beta Counters API
``GET``/``PATCH /v1beta1/counters/{name}`` (int64 values as JSON strings,
as grpc-gateway writes them). A failure is ``{"code", "message"}`` with a
gRPC code and an HTTP status (500 for most). Sources: the REST guide
(agones.dev, "REST Game Server Client API") and ``sdks/swagger/*.json`` in
googleforgames/agones.

Why h11 and not httpx (a dependency already): httpx's streaming bodies are
async generators nested three deep; reading an answer only up to a limit,
or abandoning the endless watch stream half-way, leaves the inner ones
unfinished, and trio warns about each. h11 is the HTTP/1.1 engine under
httpx's own transport (sans-IO, maintained by python-hyper): here it parses,
and we decide how much to read. One connection per call (loopback, a call
every second or two: nothing to pool).

Every call is bounded by ``timeout`` as a whole and every answer by
``MAX_ANSWER`` bytes; nothing here retries (the link decides when to try
again). The sidecar is local, but its answers are read defensively: a watch
line is capped, and a malformed one is an error, not a crash.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final
from urllib.parse import quote

import h11
import trio

from .._errors import printable
from ._state import GameServerState

__all__ = ["MAX_WATCH_LINE", "NOT_FOUND", "OUT_OF_RANGE", "AgonesSDK", "SdkError"]

#: Longest watch line read (a GameServer with every label and annotation fits easily).
MAX_WATCH_LINE: Final = 1 << 20
#: Bytes of an error answer read (the message is cut to 200 characters anyway).
MAX_ERROR_BODY: Final = 65536
#: Longest answer read from a call (a GameServer with every label and annotation fits).
MAX_ANSWER: Final = 1 << 20
#: Bytes asked of the socket at a time.
READ_SIZE: Final = 65536
#: gRPC's NOT_FOUND: the counter (or list) does not exist on this GameServer.
NOT_FOUND: Final = 5
#: gRPC's OUT_OF_RANGE: a Counter's count past its capacity.
OUT_OF_RANGE: Final = 11


class SdkError(Exception):
    """The sidecar could not be reached, or answered with an error.

    ``code`` is the gRPC code of the answer (None when there was no answer)
    and ``status`` its HTTP status.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @property
    def not_found(self) -> bool:
        """The sidecar said the thing asked for does not exist (no such Counter)."""
        return self.code == NOT_FOUND or self.status == 404


def _error_from(status: int, content: bytes) -> SdkError:
    """An error answer as an SdkError: ``{"code", "message"}`` when the body has them."""
    code: int | None = None
    message = f"HTTP {status}"
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        raw_code, raw_message = body.get("code"), body.get("message")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        if isinstance(raw_message, str) and raw_message:
            message = f"{message}: {printable(raw_message[:200])}"
    return SdkError(message, code=code, status=status)


class AgonesSDK:
    """One client of the sidecar at ``http://127.0.0.1:PORT`` (use ``async with``).

    Args:
        port: the sidecar's HTTP port.
        timeout: seconds each request (and each wait for a watch line) may take.
    """

    def __init__(self, port: int, *, timeout: float, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}"
        self._host = host
        self._port = port
        self._timeout = timeout

    async def __aenter__(self) -> AgonesSDK:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing is held between calls (one connection per call); kept for ``async with``."""

    async def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> tuple[trio.SocketStream, h11.Connection]:
        """Connect and send one request (JSON body ``{}`` for POST/PUT/PATCH without one).

        Raises:
            OSError, trio.BrokenResourceError: no connection (callers turn them into SdkError).
        """
        stream = await trio.open_tcp_stream(self._host, self._port)
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{self._host}:{self._port}"), ("Accept", "application/json")]
        data = b""
        if method != "GET":
            data = json.dumps(body if body is not None else {}).encode()
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        try:
            request = h11.Request(method=method, target=path, headers=headers)
            await stream.send_all(
                conn.send(request) + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage())
            )
        except BaseException:
            await stream.aclose()
            raise
        return stream, conn

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer.

        Raises:
            SdkError: no connection, past the timeout, an answer over
                MAX_ANSWER bytes, an error answer, or a body that is not JSON.
        """
        try:
            with trio.fail_after(self._timeout):
                stream, conn = await self._send(method, path, body)
                async with stream:
                    status = await _read_status(stream, conn)
                    content = await _read_body(stream, conn, MAX_ANSWER)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as exc:
            raise SdkError(f"{type(exc).__name__}: {str(exc)[:200] or 'no answer'}") from None
        if status != 200:
            raise _error_from(status, content)
        try:
            return json.loads(content) if content.strip() else {}
        except ValueError:
            raise SdkError("the answer is not JSON", status=200) from None

    # ------------------------------------------------------------------ lifecycle

    async def ready(self) -> None:
        """The game server is ready to take players (GameServer state ``Ready``)."""
        await self._call("POST", "/ready")

    async def health(self) -> None:
        """One health ping; Agones marks the server Unhealthy when they stop."""
        await self._call("POST", "/health")

    async def shutdown(self) -> None:
        """The game server is done: Agones moves it to ``Shutdown`` and deletes the pod."""
        await self._call("POST", "/shutdown")

    async def allocate(self) -> None:
        """Mark this game server ``Allocated`` (a matchmaker usually allocates instead)."""
        await self._call("POST", "/allocate")

    async def reserve(self, seconds: int) -> None:
        """Hold the game server ``Reserved`` for ``seconds`` (no scale-down, no allocation)."""
        await self._call("POST", "/reserve", {"seconds": str(int(seconds))})

    # ------------------------------------------------------------------ metadata

    async def set_label(self, key: str, value: str) -> None:
        """Set label ``agones.dev/sdk-<key>`` on the GameServer."""
        await self._call("PUT", "/metadata/label", {"key": key, "value": value})

    async def set_annotation(self, key: str, value: str) -> None:
        """Set annotation ``agones.dev/sdk-<key>`` on the GameServer."""
        await self._call("PUT", "/metadata/annotation", {"key": key, "value": value})

    # ------------------------------------------------------------------ counters (beta)

    async def get_counter(self, name: str) -> tuple[int, int]:
        """(count, capacity) of Counter ``name``.

        Raises:
            SdkError: as for every call; ``not_found`` when there is no such Counter.
        """
        body = await self._call("GET", f"/v1beta1/counters/{_segment(name)}")
        return _int64(body, "count"), _int64(body, "capacity")

    async def set_counter(self, name: str, count: int) -> int:
        """Set Counter ``name``'s count; the count the sidecar kept.

        Raises:
            SdkError: as for every call; ``not_found`` when there is no such
                Counter, code 11 (OUT_OF_RANGE) past its capacity.
        """
        body = await self._call(
            "PATCH", f"/v1beta1/counters/{_segment(name)}", {"count": str(int(count))}
        )
        return _int64(body, "count")

    # ------------------------------------------------------------------ the GameServer

    async def gameserver(self) -> GameServerState:
        """The backing GameServer now."""
        return GameServerState.from_json(await self._call("GET", "/gameserver"))

    async def _open_watch(self) -> tuple[trio.SocketStream, h11.Connection]:
        """Connect (bounded by the timeout) and send the watch request.

        Raises:
            SdkError: no connection.
        """
        try:
            with trio.fail_after(self._timeout):
                return await self._send("GET", "/watch/gameserver", None)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise SdkError(f"{type(exc).__name__}: {str(exc)[:200] or 'no connection'}") from None

    async def watch(self) -> AsyncGenerator[GameServerState, None]:
        """Each update of the GameServer, as the sidecar streams it, until the stream ends.

        Only connecting is bounded by the timeout: an idle stream is normal
        (updates come when something changes); closing the generator (the
        link does, with ``aclosing``) closes the connection.

        Raises:
            SdkError: no connection, an error answer, or a line that is too
                long or not a GameServer.
        """
        stream, conn = await self._open_watch()
        async with stream:
            try:
                status = await _read_status(stream, conn)
                if status != 200:
                    raise _error_from(status, await _read_body(stream, conn, MAX_ERROR_BODY))
                buffer = b""
                while isinstance(event := await _next_event(stream, conn), h11.Data):
                    lines, buffer = _split_lines(buffer + event.data)
                    for line in lines:
                        yield _watch_line(line)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                raise SdkError(f"{type(exc).__name__}: {str(exc)[:200] or 'stream lost'}") from None
            # EndOfMessage or ConnectionClosed: the stream is over.
            if buffer.strip():
                yield _watch_line(buffer)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    """The next h11 event of the answer, reading from ``stream`` as it needs."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(READ_SIZE))


async def _read_status(stream: trio.SocketStream, conn: h11.Connection) -> int:
    """The status of the answer (informational answers skipped).

    Raises:
        SdkError: the connection ended before an answer.
    """
    while True:
        event = await _next_event(stream, conn)
        if isinstance(event, h11.Response):
            return int(event.status_code)
        if not isinstance(event, h11.InformationalResponse):
            raise SdkError("the connection closed before an answer")


async def _read_body(stream: trio.SocketStream, conn: h11.Connection, limit: int) -> bytes:
    """The answer's body, to its end.

    Raises:
        SdkError: it is longer than ``limit`` bytes.
    """
    body = bytearray()
    while isinstance(event := await _next_event(stream, conn), h11.Data):
        body += event.data
        if len(body) > limit:
            raise SdkError(f"an answer over {limit} bytes")
    return bytes(body)


def _split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete, non-blank lines in ``buffer``, and the rest.

    Raises:
        SdkError: the unfinished line is already over MAX_WATCH_LINE bytes.
    """
    *lines, rest = buffer.split(b"\n")
    if len(rest) > MAX_WATCH_LINE:
        raise SdkError(f"a watch line over {MAX_WATCH_LINE} bytes")
    return [line for line in lines if line.strip()], rest


def _segment(name: str) -> str:
    """A counter name as one path segment (the config checks it; quoting is the second line)."""
    return quote(name, safe="")


def _int64(body: Any, key: str) -> int:
    """An int64 field as grpc-gateway writes it (a string), or a plain number; 0 when absent."""
    value = body.get(key, "0") if isinstance(body, Mapping) else "0"
    if isinstance(value, bool):
        raise SdkError(f"{key} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        return int(value)
    raise SdkError(f"{key} is not an integer")


def _watch_line(line: bytes) -> GameServerState:
    """One watch line: ``{"result": GameServer}`` (an ``{"error": ...}`` line is an SdkError)."""
    try:
        body = json.loads(line)
    except ValueError:
        raise SdkError("a watch line is not JSON") from None
    if not isinstance(body, Mapping):
        raise SdkError("a watch line is not a JSON object")
    if "result" not in body:
        error = body.get("error")
        detail = error.get("message") if isinstance(error, Mapping) else None
        raise SdkError(f"the watch stream failed: {printable(str(detail)[:200]) or 'no result'}")
    return GameServerState.from_json(body["result"])
