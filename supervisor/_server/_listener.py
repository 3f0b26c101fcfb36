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
* **Bounded.** At most ``max_connections`` at once: past it the oldest
  connection still waiting for its request head is closed to make room
  (``evicted``), once it is ``evict_grace`` (0.1 s) old. Preferring the
  newcomer over an idle holder keeps ``/healthz`` answering while an
  attacker holds every slot with idle or slowloris connections
  (``bench/held_connections.py``); the grace keeps an honest request that
  came in with a flood of connects from being evicted by the flood behind
  it before its head arrived (a ``/healthz`` probe in about one run of two
  of that bench, 38 ms old: its client's loop was busy). When every
  connection is serving a request or that young, nothing is closed: the
  accept loop pauses (``accept_pauses``, ``paused_seconds``) until a
  request ends or a holder may be evicted, never waking in the guard
  before a tick, and newcomers wait in the kernel's listen backlog. Closing
  them at accept, as before, only made them reconnect at once, each accept
  and close costing loop time at a pace the client sets. A longer grace
  costs every newcomer that wait: 0.5 s took that bench's ``/healthz`` p99
  from 30-35 ms to 414-448 ms (0.1 s: 50-78 ms).
* **No accepting just before a tick.** Under load (half the slots taken or
  more) the accept loop does not wait on the listening socket during the
  last quarter of a tick period (``TICK_GUARD``): it sleeps until the tick
  is due and accepts after it, what arrived meanwhile waiting in the kernel's
  backlog. Each accept wakes a task, starts a connection and may evict a
  holder whose task wakes too; with 600 held connections about 225 of each a
  second, and the ones that landed in the tick's own scheduler batch came
  before the tick. ``tick_due`` (``Supervisor.next_tick_due``) gives the next
  deadline; without it, or with few connections, accept as before. A slow
  head's polls keep out of the same guard (``_connection.clear_of_ticks``).
* **Peer credentials.** On a Unix socket the peer's uid (``SO_PEERCRED``) is
  put into each request's ASGI scope as ``scope["extensions"]["peer_uid"]``.
* **TLS** when given an :class:`ssl.SSLContext` (ALPN ``http/1.1``).

What happens on one connection (deadlines, the hypercorn race, HTTP/1.1 only,
holding cheaply) is :mod:`supervisor._server._connection`.

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

import errno
import math
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, cast

import attrs
import hypercorn.config
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.trio.worker_context import WorkerContext

from .._logging import get_logger
from ._connection import (
    Connection,
    ConnectionLimits,
    ServerStats,
    TickDue,
    clear_of_ticks,
    tick_guard,
)

__all__ = ["make_ssl_context", "peer_uid", "serve_connections"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Seconds between two log lines about the same kind of connection trouble.
LOG_EVERY: Final = 60.0
#: Accept errors that mean "out of descriptors or memory": wait, then go on.
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_EXHAUSTED_PAUSE: Final = 0.1
_PEERCRED_SIZE: Final = struct.calcsize("3i")


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


@attrs.frozen
class _PeerApp:
    """The app, with the Unix peer's uid put into every request's scope."""

    app: ASGIApp
    uid: int

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["peer_uid"] = self.uid
        await self.app(scope, receive, send)


@attrs.define(eq=False)
class _Server:
    """The accept loop and the set of live connections."""

    app: ASGIApp
    config: hypercorn.config.Config
    limits: ConnectionLimits
    stats: ServerStats
    ssl_context: ssl.SSLContext | None
    context: WorkerContext = attrs.field(factory=lambda: WorkerContext(None))
    #: The next tick's deadline on trio's clock and the tick period, or None (see the module).
    tick_due: TickDue | None = None
    # Insertion-ordered: the first waiting connection is the oldest.
    _conns: dict[Connection, None] = attrs.field(factory=dict)
    _room: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    _shared: ASGIWrapper = attrs.field(init=False)
    _errors_log: _Throttled = attrs.field(factory=lambda: _Throttled("api.connection_failed"))
    _paused_log: _Throttled = attrs.field(factory=lambda: _Throttled("api.accept_paused"))
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
                    stream = await self._accept(listener)
                except trio.ClosedResourceError:
                    return  # drain() closed the listener: let the open ones finish
                except OSError as exc:
                    self.stats.accept_errors += 1
                    self._accept_log(error=f"{type(exc).__name__}: {exc.strerror or exc}")
                    if exc.errno in _EXHAUSTED:
                        await trio.sleep(_EXHAUSTED_PAUSE)
                    continue
                if not self._has_room():
                    try:
                        await self._wait_for_room()
                    except BaseException:
                        stream.socket.close()
                        raise
                    if self.context.terminated.is_set():
                        stream.socket.close()  # drain() began meanwhile
                        return
                self._admit(stream, nursery)

    async def _accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection, never taken in the guard before a tick (see the module)."""
        while self.tick_due is not None and 2 * len(self._conns) >= self.limits.max_connections:
            due = self.tick_due()
            if due is None:
                break
            now = trio.current_time()
            guard_start, guard_end = tick_guard(now, due)
            if now >= guard_start:
                await trio.sleep_until(guard_end)
                continue
            with trio.move_on_at(guard_start):
                return await listener.accept()
        return await listener.accept()

    def _has_room(self) -> bool:
        """True when a new connection can be served now, evicting a waiting one if need be."""
        return len(self._conns) < self.limits.max_connections or self._evict_oldest()

    async def _wait_for_room(self) -> None:
        """Hold the accept loop (and one accepted newcomer) until a slot frees.

        Every slot is serving a request, or waiting for its head but younger
        than ``evict_grace``. Closing the newcomer would only make it come
        back (each accept and close costs loop time, and an attacker sets
        the pace); instead nothing more is accepted, so later arrivals wait
        in the kernel's listen backlog until a request ends or the oldest
        waiting connection is old enough to evict.
        """
        started = trio.current_time()
        self.stats.accept_pauses += 1
        self._paused_log(max_connections=self.limits.max_connections)
        while not self._has_room():
            with trio.move_on_at(self._evictable_at()):
                await self._room.park()
        self.stats.paused_seconds += trio.current_time() - started

    def _admit(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
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
        conn = Connection(
            app,
            self.config,
            self.context,
            served,
            limits=self.limits,
            stats=self.stats,
            tick_due=self.tick_due,
        )
        self._conns[conn] = None
        self.stats.accepted += 1
        self.stats.open += 1
        nursery.start_soon(self._run, conn, stream.socket)

    def _oldest_waiting(self) -> Connection | None:
        # Insertion order is accept order: the first waiting one is the oldest.
        for conn in self._conns:
            if conn.waiting:
                return conn
        return None

    def _evict_oldest(self) -> bool:
        """Evict the oldest connection waiting for a head, if it is past ``evict_grace``.

        A younger one is kept: in a flood of connects larger than the cap, an
        honest request that came in with the flood would otherwise be evicted
        by the connects behind it before its head arrived (see the module).
        """
        conn = self._oldest_waiting()
        # The same sum as _evictable_at: a wait woken at that time must find it evictable.
        if conn is None or trio.current_time() < conn.born + self.limits.evict_grace:
            return False
        del self._conns[conn]
        conn.evict()
        return True

    def _evictable_at(self) -> float:
        """When the oldest waiting connection may be evicted (inf: none is waiting).

        Never in the guard before a tick: the eviction and the newcomer's
        start would wake tasks in the tick's own scheduler batch.
        """
        conn = self._oldest_waiting()
        if conn is None:
            return math.inf
        when = conn.born + self.limits.evict_grace
        return when if self.tick_due is None else clear_of_ticks(when, self.tick_due())

    async def _run(self, conn: Connection, sock: trio.socket.SocketType) -> None:
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
            self._room.unpark()
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
    tick_due: Callable[[], tuple[float, float] | None] | None = None,
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
        tick_due: the next tick's deadline and period: a loaded server does
            not accept in the last ``TICK_GUARD`` of a period.
    """
    # The longest accept queue the kernel allows: a flood of connects that
    # overflows a short one makes the kernel drop handshakes, and a client
    # caught in that waits a retransmission (1 s and more) before its request
    # reaches us, long enough to miss header_timeout (tests/test_api_attack.py).
    sock.listen(socket.SOMAXCONN)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    server = _Server(app, config, limits, stats, ssl_context, tick_due=tick_due)
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(server.serve, listener)
        task_status.started()
        if shutdown_trigger is None:
            await trio.sleep_forever()
        await shutdown_trigger()
        await listener.aclose()
        await server.drain()
        nursery.cancel_scope.deadline = trio.current_time() + graceful_timeout
