"""Our accept loop around hypercorn's per-connection HTTP/1.1 server.

Why not ``hypercorn.trio.serve``: it lets any exception of any connection
escape into the caller's nursery, which is the nursery that runs the tick
loop, and it has no connection cap, no request-head deadline and no way to
read the Unix peer's credentials. This module keeps hypercorn's protocol code
(h11 parsing, the ASGI stream, the app task group) and replaces the parts
around it:

* **One connection cannot end the server.** Each connection runs in its own
  task whose exceptions are logged (rate-limited) and counted in
  :class:`ServerStats`, never raised. Only cancellation passes through.
* **The hypercorn 0.18.0 / trio race, fixed at its root.** Upstream's
  ``TCPServer._close`` calls ``stream.send_eof()`` without holding
  ``send_lock``; when the app's task closes a connection (its answer is done
  while the client's body is still incomplete) at the moment the reading task
  sends h11's own 400 for a half-closed body, ``send_eof`` is inside its
  checkpoint holding trio's conflict detector and the shielded ``send_all``
  raises ``trio.BusyResourceError``, which ``protocol_send`` does not catch.
  :class:`_Connection` sends EOF only under ``send_lock`` (skipping the lock
  when the closing task already holds it, as ``protocol_send`` does when a
  send fails) and also treats ``BusyResourceError`` from ``send_all`` as a
  closed peer. No fixed release exists (0.18.0 is the newest on PyPI); the
  regression test is ``tests/test_api_server.py::TestHalfClosed``.
* **Bounded.** At most ``max_connections`` at once: past it the oldest
  connection still waiting for its request head is closed to make room
  (``evicted``); when every connection is busy with a request, the new one is
  closed at accept (``refused``). Preferring the newcomer over an idle holder
  keeps ``/healthz`` answering while an attacker holds every slot with idle
  or slowloris connections (``bench/held_connections.py``).
* **Deadlines that data cannot extend.** A request head must be complete
  ``header_timeout`` seconds after the connection opens (or after the first
  byte of a later request); an idle keep-alive connection is closed after
  ``keep_alive_timeout``; a response the client does not take within
  ``send_timeout`` closes the connection. Each is a fixed deadline, not an
  inactivity timer, so a byte a second does not keep a connection alive. The
  body deadline (``body_timeout``, a 408) is the app's: only it knows when it
  reads a body. Deadlines are spread at random over the last tenth of
  their timeout so that connections opened together do not all expire at once.
* **Cheap to hold, spread out in time.** Nothing of hypercorn's is built
  for a connection until its first request head is whole (or longer than
  h11 would hold), so a slowloris holder never costs a protocol set-up and
  tear-down (held p99 1.6 -> 1.0 ms at the median of three interleaved 30 s
  runs of ``bench/held_connections.py``); a head that arrives in
  pieces is read by polling at random times rather than by a task waiting on
  the socket (``_Connection._poll``), so slowloris bytes sent in step do not
  wake hundreds of tasks in one scheduler batch in front of a due tick; a
  closed connection leaves no reference cycle for the garbage collector.
* **HTTP/1.1 only.** Hypercorn would switch a connection to HTTP/2 on an
  ``Upgrade: h2c`` header or the HTTP/2 preface; one HTTP/2 connection then
  runs up to 100 concurrent app tasks, outside the per-connection model. The
  upgrade header is ignored (RFC 9113 lets a server do so) and the preface is
  an ordinary unknown request.
* **Peer credentials.** On a Unix socket the peer's uid (``SO_PEERCRED``) is
  put into each request's ASGI scope as ``scope["extensions"]["peer_uid"]``.
* **TLS** when given an :class:`ssl.SSLContext` (ALPN ``http/1.1``).

Same trio loop as the ticks, not a thread of its own: a second Python thread
serving HTTP competes for the GIL, and each wake-up of the tick thread can
then wait up to ``sys.getswitchinterval()`` (5 ms) behind it, which is 50x
the 100 microsecond p99 target. A thread would only help while the trio loop
is completely stalled, and the watchdog already covers stalls. Measured
(demo world at 60 Hz, ``/metrics`` scraped 50 times a second by another
process, three runs each on a shared 2-core machine): tick lateness p99 7.4
to 12.9 ms on the same loop, 7.5 to 9.8 ms with the server on its own thread
and trio loop; no gain to pay a thread for. A fuller series confirmed it
(18 interleaved 15 s runs with 600 held connections: held p99 median 1.6 ms on
the same loop, 2.8 ms on a thread, also with a 0.5 ms switch interval or a
niced server thread). The work per connection here is small, bounded and
spread out (above), which is what keeps the loop free.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, cast

import attrs
import hypercorn.config
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr

from .._logging import get_logger

__all__ = [
    "ConnectionLimits",
    "ServerStats",
    "make_ssl_context",
    "peer_uid",
    "serve_connections",
]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Seconds between two log lines about the same kind of connection trouble.
LOG_EVERY: Final = 60.0
#: Accept errors that mean "out of descriptors or memory": wait, then go on.
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_EXHAUSTED_PAUSE: Final = 0.1
_PEERCRED_SIZE: Final = struct.calcsize("3i")
# Jitter for pacing slow heads and spreading deadlines: not a secret, only a spread.
_JITTER: Final = random.Random()
#: Deadlines fall at random between (1 - DEADLINE_SPREAD) and 1 times their timeout.
DEADLINE_SPREAD: Final = 0.1


def _within(timeout: float) -> float:
    """A deadline ``timeout`` seconds from now, less up to DEADLINE_SPREAD of it at random.

    Connections opened together (600 held by one client) would otherwise all
    expire at the same instant, and trio would close them all in one
    scheduler batch of several milliseconds, in front of a due tick
    (bench/held_connections.py). Never later than the configured timeout.
    """
    return trio.current_time() + timeout * (1.0 - DEADLINE_SPREAD * _JITTER.random())


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """How many connections, and how long each may take for what.

    Attributes:
        max_connections: connections served at once.
        header_timeout: seconds for a request head (and for a TLS handshake).
        keep_alive_timeout: seconds an idle keep-alive connection is kept.
        send_timeout: seconds the client has to take a response.
        head_pace: mean seconds between reads of a request head that arrives
            in pieces (see ``_Connection._poll``).
    """

    max_connections: int = 256
    header_timeout: float = 5.0
    keep_alive_timeout: float = 5.0
    send_timeout: float = 10.0
    head_pace: float = 0.25


@attrs.define(eq=False)
class ServerStats:
    """Counters of the connection layer, for ``/metrics`` and the bench.

    Attributes:
        accepted: connections served.
        refused: connections closed at accept: every slot was busy.
        evicted: connections closed to make room for a new one while they
            were still waiting for a request head.
        header_timeouts: connections closed because a request head was late.
        keep_alive_timeouts: idle keep-alive connections closed.
        send_timeouts: connections closed because the client did not take a response.
        errors: connections that ended with an exception (logged, never raised).
        accept_errors: accept() failures (out of descriptors, ...).
        open: connections open now.
    """

    accepted: int = 0
    refused: int = 0
    evicted: int = 0
    header_timeouts: int = 0
    keep_alive_timeouts: int = 0
    send_timeouts: int = 0
    errors: int = 0
    accept_errors: int = 0
    open: int = 0


def peer_uid(sock: trio.socket.SocketType) -> int | None:
    """The uid of the process at the other end of a Unix socket, or None if unknown."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED_SIZE)
    except (OSError, AttributeError):  # not Linux, or not a Unix socket
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def make_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+, ALPN ``http/1.1``) from PEM files.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the files are not a matching certificate and key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


@attrs.define(eq=False)
class _Throttled:
    """Logs one line per ``LOG_EVERY`` seconds for an event, with how many were folded."""

    event: str
    _next: float = -math.inf
    _folded: int = 0

    def __call__(self, **fields: Any) -> None:
        now = trio.current_time()
        if now < self._next:
            self._folded += 1
            return
        self._next = now + LOG_EVERY
        folded, self._folded = self._folded, 0
        get_logger(component="api.server").warning(self.event, folded=folded, **fields)


class _TaskGroup(TaskGroup):
    """Hypercorn's task group, without its deadlock when an app answers before reading the body.

    Upstream queues request messages for the app in a bounded channel
    (``max_app_queue_size``) that nothing closes when the app returns. An app
    that answers early (413 on a declared length, 401 before the body) while
    the client keeps sending leaves the connection's reading task blocked on a
    full channel forever, and the app's own last ``send`` blocks there too
    (hypercorn queues ``http.disconnect`` from inside it): both tasks and the
    connection slot are held until the process exits
    (``tests/test_api_server.py::TestDeadlines::test_body_in_too_many_chunks_is_413``).
    Here the channel is closed as soon as the app returns, messages for an app
    that has returned are dropped, and the app's own task never blocks on its
    own queue.
    """

    async def spawn_app(
        self, app: Any, config: hypercorn.config.Config, scope: Any, send: Any
    ) -> Callable[[Any], Awaitable[None]]:
        put, get = trio.open_memory_channel[Any](config.max_app_queue_size)
        app_task: list[trio.lowlevel.Task] = []

        async def run_app() -> None:
            app_task.append(trio.lowlevel.current_task())
            try:
                await app(scope, get.receive, send, trio.to_thread.run_sync, trio.from_thread.run)
            except Exception:  # the app's own bug: logged as hypercorn does, then closed
                await config.log.exception("Error in ASGI Framework")
            finally:
                get.close()
                await send(None)

        async def app_put(message: Any) -> None:
            if app_task and trio.lowlevel.current_task() is app_task[0]:
                # Queued from inside the app's own send: it cannot be reading now.
                with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                    put.send_nowait(message)
                return
            with contextlib.suppress(trio.BrokenResourceError):  # the app has returned
                await put.send(message)

        assert self._nursery is not None
        self._nursery.start_soon(run_app)
        return app_put


class _Http11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol without the switch to HTTP/2 (see the module docstring)."""

    async def _check_protocol(self, event: Any) -> None:
        return None


@attrs.frozen
class _PeerApp:
    """The app, with the Unix peer's uid put into every request's scope."""

    app: ASGIApp
    uid: int

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["peer_uid"] = self.uid
        await self.app(scope, receive, send)


# Where a connection is: its deadline depends on it.
_HEAD: Final = "head"  # waiting for (the rest of) a request head
_REQUEST: Final = "request"  # the app has the request
_IDLE: Final = "idle"  # between requests (keep-alive)


class _Connection(TCPServer):
    """Hypercorn's ``TCPServer`` with fixed deadlines, eviction and the ``_close`` race fixed."""

    def __init__(
        self,
        app: ASGIWrapper,
        config: hypercorn.config.Config,
        context: WorkerContext,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        *,
        limits: ConnectionLimits,
        stats: ServerStats,
    ) -> None:
        super().__init__(app, config, context, {}, cast(Any, stream))
        self.limits = limits
        self.stats = stats
        self.stage = _HEAD
        self.evicted = False
        self._deadline = _within(limits.header_timeout)
        self._reader: trio.CancelScope | None = None

    @property
    def waiting(self) -> bool:
        """True while no request is being served: the connection may be evicted."""
        return self.stage != _REQUEST

    def evict(self, *, count: bool = True) -> None:
        """Close this connection soon: it waits for a request head while a newcomer needs room.

        Also used at shutdown (``count=False``) to close idle connections.
        """
        self.evicted = True
        if count:
            self.stats.evicted += 1
        if self._reader is not None:
            self._reader.cancel()

    def _enter(self, stage: str, deadline: float) -> None:
        self.stage = stage
        self._deadline = deadline
        if self._reader is not None:
            self._reader.deadline = deadline

    async def run(self) -> None:
        """Serve the connection until it closes; OSErrors and broken streams end it quietly."""
        try:
            stream: Any = self.stream
            if isinstance(stream, trio.SSLStream):
                with trio.CancelScope(deadline=self._deadline) as scope:
                    self._reader = scope
                    if self.evicted:
                        scope.cancel()
                    await stream.do_handshake()
                self._reader = None
                if scope.cancelled_caught:
                    self._timed_out()
                    return
                sock = stream.transport_stream.socket
                secure = True
            else:
                sock = stream.socket
                secure = False
            # Nothing of hypercorn's is built until a whole head arrived: an
            # idle or slowloris holder costs a task and a socket, and evicting
            # it (or its timing out) is cheap.
            first = await self._first_head()
            if not first:
                return
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with _TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = cast(
                    Any,
                    _Http11Protocol(
                        self.app,
                        self.config,
                        self.context,
                        task_group,
                        ConnectionState({}),
                        secure,
                        client,
                        server,
                        self.protocol_send,
                    ),
                )
                await self._serve_requests(first)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away (reset, TLS failure, closed under us)
        finally:
            try:
                await self._close()
            finally:
                self._forget()

    async def _first_head(self) -> bytes | None:
        """The first request head, whole (or as much as h11 would hold), before any protocol.

        A slowloris client never completes its head within ``header_timeout``,
        so hypercorn's protocol (h11 state, task group, ASGI wrapper) is never
        built for it: holding, evicting and timing out such a connection costs
        a task and a socket, not a protocol set-up and tear-down each time.
        None or b"": nothing came (deadline, eviction, end of stream).
        """
        data = await self._receive(0.0)
        if not data:
            return data
        limit = self.config.h11_max_incomplete_size
        scanned = 0
        # A head ends at an empty line; h11 also accepts bare LFs.
        while b"\n\r\n" not in data[scanned:] and b"\n\n" not in data[scanned:]:
            if len(data) > limit:
                break  # hypercorn answers 431
            scanned = max(0, len(data) - 2)
            more = await self._receive(self.limits.head_pace)
            if not more:
                return more
            data += more
        return data

    def _forget(self) -> None:
        """Break the connection <-> protocol cycle (``protocol.send`` is our bound method).

        Without it every connection left ~28 objects for the cyclic garbage
        collector, whose pauses then grew with the connection churn an
        attacker controls; now reference counting frees a closed connection.
        """
        self.__dict__.pop("protocol", None)
        self.__dict__.pop("_task_group", None)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            await self._send_raw(event.data)
        elif isinstance(event, Closed):
            await self._close()
            await self.protocol.handle(Closed())
        elif isinstance(event, Updated):
            if event.idle:
                self._enter(_IDLE, _within(self.limits.keep_alive_timeout))
            else:
                self._enter(_REQUEST, math.inf)

    async def _send_raw(self, data: bytes) -> None:
        broken = False
        async with self.send_lock:
            # Shielded, as upstream: a half-sent response must not be cut by a
            # cancellation. The inner deadline still bounds a client that
            # never reads, which the shield alone would keep forever.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.limits.send_timeout) as timer:
                    try:
                        await self.stream.send_all(data)
                    except (
                        trio.BrokenResourceError,
                        trio.ClosedResourceError,
                        # Defence in depth for the race fixed in _close().
                        trio.BusyResourceError,
                    ):
                        broken = True
                if timer.cancelled_caught:
                    self.stats.send_timeouts += 1
                    broken = True
                    await trio.aclose_forcefully(self.stream)
        if broken:
            await self.protocol.handle(Closed())

    async def _receive(self, pause: float) -> bytes | None:
        """The next bytes (b"" at the end), or None: deadline passed, evicted, or stream broken."""
        with trio.CancelScope(deadline=self._deadline) as scope:
            self._reader = scope
            if self.evicted:
                scope.cancel()
            try:
                data: bytes | None
                if pause and isinstance(cast(Any, self.stream), trio.SocketStream):
                    data = await self._poll(pause)
                else:
                    if pause:
                        await trio.sleep(pause)
                    data = bytes(await self.stream.receive_some(MAX_RECV))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                data = None
        self._reader = None
        if scope.cancelled_caught:
            self._timed_out()
            return None
        return data

    async def _poll(self, pace: float) -> bytes:
        """The next piece of a slow head, read by polling instead of waiting on the socket.

        Slowloris clients send their bytes in step (a byte a second each):
        tasks waiting on their sockets would all wake in one scheduler batch
        of several milliseconds, in front of a due tick. Here no task waits
        on the socket: each sleeps a random while (``pace`` times 0.5 to
        1.5), then tries a non-blocking read, so the wake-ups stay spread
        out whatever the clients do. Only for a plain socket (TLS records
        need the SSL stream) and only once a head came in pieces.

        Raises:
            trio.ClosedResourceError: the socket was closed meanwhile.
            OSError: the read failed (reset by the peer).
        """
        sock: Any = cast(Any, self.stream).socket
        while True:
            await trio.sleep(pace * (0.5 + _JITTER.random()))
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError
            try:
                return os.read(fd, MAX_RECV)
            except BlockingIOError:
                continue

    async def _serve_requests(self, data: bytes) -> None:
        while True:
            if data and self.stage == _IDLE:
                self._enter(_HEAD, _within(self.limits.header_timeout))
            await self.protocol.handle(RawData(data))
            if not data:
                break
            # A head in pieces is read by polling, at random times (see
            # _poll). A client sending its head in one piece never gets
            # here; the head deadline still holds.
            pause = self.limits.head_pace if self.stage == _HEAD else 0.0
            received = await self._receive(pause)
            if received is None:
                break
            data = received
        await self.protocol.handle(Closed())

    def _timed_out(self) -> None:
        if self.evicted:
            return  # counted when evicted
        if self.stage == _IDLE:
            self.stats.keep_alive_timeouts += 1
        else:
            self.stats.header_timeouts += 1

    async def _close(self) -> None:
        # The root fix (see the module docstring): EOF only under send_lock.
        # The closing task may already hold it (a failed send closes from
        # inside protocol_send); trio's Lock is not reentrant, so skip it then.
        try:
            if self.send_lock.statistics().owner is trio.lowlevel.current_task():
                await self._send_eof()
            else:
                # Bounded: the holder may be stuck on a client that never
                # reads; its own send_timeout ends that, this is a backstop.
                with trio.move_on_after(self.limits.send_timeout):
                    async with self.send_lock:
                        await self._send_eof()
        finally:
            with trio.move_on_after(self.limits.send_timeout) as scope:
                await self.stream.aclose()
            if scope.cancelled_caught:
                await trio.aclose_forcefully(self.stream)

    async def _send_eof(self) -> None:
        stream: Any = self.stream  # typed SSLStream upstream; a SocketStream without TLS
        if not isinstance(stream, trio.SocketStream):
            return  # TLS: aclose() sends close_notify instead
        with contextlib.suppress(
            trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
        ):
            await stream.send_eof()  # suppressed: the peer is already gone


@attrs.define(eq=False)
class _Server:
    """The accept loop and the set of live connections."""

    app: ASGIApp
    config: hypercorn.config.Config
    limits: ConnectionLimits
    stats: ServerStats
    ssl_context: ssl.SSLContext | None
    context: WorkerContext = attrs.field(factory=lambda: WorkerContext(None))
    # Insertion-ordered: the first waiting connection is the oldest.
    _conns: dict[_Connection, None] = attrs.field(factory=dict)
    _shared: ASGIWrapper = attrs.field(init=False)
    _errors_log: _Throttled = attrs.field(factory=lambda: _Throttled("api.connection_failed"))
    _refused_log: _Throttled = attrs.field(factory=lambda: _Throttled("api.connections_refused"))
    _accept_log: _Throttled = attrs.field(factory=lambda: _Throttled("api.accept_failed"))

    def __attrs_post_init__(self) -> None:
        self._shared = ASGIWrapper(cast(Any, self.app))

    async def serve(
        self,
        listener: trio.SocketListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return  # drain() closed the listener: let the open ones finish
                except OSError as exc:
                    self.stats.accept_errors += 1
                    self._accept_log(error=f"{type(exc).__name__}: {exc.strerror or exc}")
                    if exc.errno in _EXHAUSTED:
                        await trio.sleep(_EXHAUSTED_PAUSE)
                    continue
                self._admit(stream, nursery)

    def _admit(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        if len(self._conns) >= self.limits.max_connections and not self._evict_oldest():
            self.stats.refused += 1
            self._refused_log(max_connections=self.limits.max_connections)
            stream.socket.close()
            return
        app = self._shared
        if stream.socket.family == socket.AF_UNIX:
            uid = peer_uid(stream.socket)
            if uid is not None:
                app = ASGIWrapper(cast(Any, _PeerApp(self.app, uid)))
        served: trio.SocketStream | trio.SSLStream[trio.SocketStream] = stream
        if self.ssl_context is not None:
            served = trio.SSLStream(
                stream, self.ssl_context, server_side=True, https_compatible=True
            )
        conn = _Connection(
            app, self.config, self.context, served, limits=self.limits, stats=self.stats
        )
        self._conns[conn] = None
        self.stats.accepted += 1
        self.stats.open += 1
        nursery.start_soon(self._run, conn, stream.socket)

    def _evict_oldest(self) -> bool:
        for conn in self._conns:
            if conn.waiting:
                del self._conns[conn]
                conn.evict()
                return True
        return False

    async def _run(self, conn: _Connection, sock: trio.socket.SocketType) -> None:
        try:
            await conn.run()
        except Exception as exc:  # nothing a client does may end the server
            self._failed(exc)
        except BaseExceptionGroup as group:
            # Cancellation passes; errors next to it are still only counted.
            errors, rest = group.split(Exception)
            if errors is not None:
                self._failed(errors)
            if rest is not None:
                raise rest from None
        finally:
            self._conns.pop(conn, None)
            self.stats.open -= 1
            sock.close()  # idempotent; covers a failure before hypercorn's own close

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self._errors_log(error=_describe(exc), errors=self.stats.errors)

    async def drain(self) -> None:
        """Stop keep-alive and close every connection that is not serving a request."""
        await self.context.terminated.set()
        for conn in list(self._conns):
            if conn.waiting:
                self._conns.pop(conn, None)
                conn.evict(count=False)


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception (the first leaf of a group), safe to log."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    try:
        text = str(exc)
    except Exception:  # a hostile __str__ must not fail the log line
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text[:200]}"


async def serve_connections(
    app: ASGIApp,
    sock: socket.socket,
    *,
    config: hypercorn.config.Config,
    limits: ConnectionLimits,
    stats: ServerStats,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound socket ``sock`` until cancelled or the trigger returns.

    After ``shutdown_trigger`` returns, new connections are no longer
    accepted, idle ones are closed, and requests in flight get
    ``graceful_timeout`` seconds to finish.

    Args:
        app: the ASGI app.
        sock: a bound, not yet listening, stream socket (TCP or Unix); taken over.
        config: hypercorn's config (header size limit, logging).
        limits: the connection cap and deadlines.
        stats: counters updated as connections come and go.
        ssl_context: serve TLS on every connection.
        shutdown_trigger: when it returns, stop gracefully.
        graceful_timeout: seconds requests in flight get after the trigger.
    """
    # The longest accept queue the kernel allows: a flood of connects that
    # overflows a short one makes the kernel drop handshakes, and a client
    # caught in that waits a retransmission (1 s and more) before its request
    # reaches us, long enough to miss header_timeout (tests/test_api_attack.py).
    sock.listen(socket.SOMAXCONN)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    server = _Server(app, config, limits, stats, ssl_context)
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(server.serve, listener)
        task_status.started()
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        await listener.aclose()
        await server.drain()
        nursery.cancel_scope.deadline = trio.current_time() + graceful_timeout
