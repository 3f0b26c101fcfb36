"""One HTTP/1.1 connection: hypercorn's ``TCPServer`` with fixed deadlines, cheap to hold.

The accept loop (:mod:`supervisor._server._listener`) makes a :class:`Connection`
per accepted socket and runs it in its own task; this module is what happens
on that socket until it closes:

* **The hypercorn 0.18.0 / trio race, fixed at its root.** Upstream's
  ``TCPServer._close`` calls ``stream.send_eof()`` without holding
  ``send_lock``; when the app's task closes a connection (its answer is done
  while the client's body is still incomplete) at the moment the reading task
  sends h11's own 400 for a half-closed body, ``send_eof`` is inside its
  checkpoint holding trio's conflict detector and the shielded ``send_all``
  raises ``trio.BusyResourceError``, which ``protocol_send`` does not catch.
  :class:`Connection` sends EOF only under ``send_lock`` (skipping the lock
  when the closing task already holds it, as ``protocol_send`` does when a
  send fails) and also treats ``BusyResourceError`` from ``send_all`` as a
  closed peer. No fixed release exists (0.18.0 is the newest on PyPI); the
  regression test is ``tests/test_api_server.py::TestHalfClosed``.
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
  the socket (``Connection._poll``), so slowloris bytes sent in step do not
  wake hundreds of tasks in one scheduler batch in front of a due tick; a
  connection that never sent a whole head is hung up at once
  (``Connection._hang_up``: half the scheduler steps per evicted holder); a
  closed connection leaves no reference cycle for the garbage collector.
* **HTTP/1.1 only.** Hypercorn would switch a connection to HTTP/2 on an
  ``Upgrade: h2c`` header or the HTTP/2 preface; one HTTP/2 connection then
  runs up to 100 concurrent app tasks, outside the per-connection model. The
  upgrade header is ignored (RFC 9113 lets a server do so) and the preface is
  an ordinary unknown request.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable
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

__all__ = [
    "DEADLINE_SPREAD",
    "TICK_AFTER",
    "TICK_GUARD",
    "Connection",
    "ConnectionLimits",
    "ServerStats",
    "TickDue",
    "clear_of_ticks",
    "tick_guard",
]

# Jitter for pacing slow heads and spreading deadlines: not a secret, only a spread.
_JITTER: Final = random.Random()
#: Deadlines fall at random between (1 - DEADLINE_SPREAD) and 1 times their timeout.
DEADLINE_SPREAD: Final = 0.1


#: Share of the tick period before a deadline kept free of connection wake-ups we time.
TICK_GUARD: Final = 0.25
#: Such a wake-up moved out of the guard comes this long after the deadline (the tick first).
TICK_AFTER: Final = 200e-6
#: The next tick's deadline on trio's clock and the period (``Supervisor.next_tick_due``).
TickDue = Callable[[], "tuple[float, float] | None"]


def tick_guard(when: float, due: tuple[float, float]) -> tuple[float, float]:
    """The guard ``[start, end)`` of the first tick that ``when`` is not yet past.

    ``start`` is ``TICK_GUARD`` of a period before that tick, ``end`` is
    ``TICK_AFTER`` past it. The schedule is projected from ``due`` (the next
    deadline and the period) both ways, so a late or stopped loop still gets
    a regular grid.
    """
    deadline, period = due
    # The epsilon: at exactly ``end`` (where a wait for the guard wakes) rounding
    # must not give the same tick again, or the waiter would spin on it.
    ticks = math.floor((when - deadline - TICK_AFTER) / period + 1e-9) + 1
    tick = deadline + ticks * period
    return tick - TICK_GUARD * period, tick + TICK_AFTER


def clear_of_ticks(when: float, due: tuple[float, float] | None) -> float:
    """``when``, or just after a tick if ``when`` falls in the guard before that tick.

    A wake-up we choose the time of (a slow head's next poll) must not land
    in the last ``TICK_GUARD`` of a period: trio would run it in the tick's
    own scheduler batch, ahead of the tick.
    """
    if due is None:
        return when
    start, end = tick_guard(when, due)
    return end if when >= start else when


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
            in pieces (see ``Connection._poll``).
        evict_grace: seconds a new connection is never evicted for: the time
            an honest client has to get its request head in while a flood of
            connects fills every slot (``_listener``).
    """

    max_connections: int = 256
    header_timeout: float = 5.0
    keep_alive_timeout: float = 5.0
    send_timeout: float = 10.0
    head_pace: float = 0.25
    evict_grace: float = 0.1


@attrs.define(eq=False)
class ServerStats:
    """Counters of the connection layer, for ``/metrics`` and the bench.

    Attributes:
        accepted: connections served.
        evicted: connections closed to make room for a new one while they
            were still waiting for a request head.
        header_timeouts: connections closed because a request head was late.
        keep_alive_timeouts: idle keep-alive connections closed.
        send_timeouts: connections closed because the client did not take a response.
        errors: connections that ended with an exception (logged, never raised).
        accept_errors: accept() failures (out of descriptors, ...).
        open: connections open now.
        accept_pauses: times the accept loop paused because every connection
            was serving a request or younger than ``evict_grace`` (newcomers
            waited in the listen backlog).
        paused_seconds: seconds the accept loop spent paused.
    """

    accepted: int = 0
    evicted: int = 0
    header_timeouts: int = 0
    keep_alive_timeouts: int = 0
    send_timeouts: int = 0
    errors: int = 0
    accept_errors: int = 0
    open: int = 0
    accept_pauses: int = 0
    paused_seconds: float = 0.0


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


# Where a connection is: its deadline depends on it.
_HEAD: Final = "head"  # waiting for (the rest of) a request head
_REQUEST: Final = "request"  # the app has the request
_IDLE: Final = "idle"  # between requests (keep-alive)


class Connection(TCPServer):
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
        tick_due: TickDue | None = None,
    ) -> None:
        super().__init__(app, config, context, {}, cast(Any, stream))
        self.limits = limits
        self.stats = stats
        self.tick_due = tick_due
        self.stage = _HEAD
        self.evicted = False
        #: When the connection was accepted (trio's clock): young ones are not evicted.
        self.born = trio.current_time()
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
        asked = False
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
            asked = True
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
                if not asked and isinstance(cast(Any, self.stream), trio.SocketStream):
                    self._hang_up()
                else:
                    await self._close()
            finally:
                self._forget()

    def _hang_up(self) -> None:
        """Close a plain connection that never asked anything: EOF, then close, at once.

        Nothing was sent on it, so there is nothing to wait for: the same FIN
        as :meth:`_close` without its lock and its two checkpoints, which cost
        three scheduler steps for each evicted or timed-out holder
        (bench/held_connections.py).
        """
        sock = cast(Any, self.stream).socket
        with contextlib.suppress(OSError):  # the peer is already gone
            sock.shutdown(socket.SHUT_WR)
        sock.close()

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
        out whatever the clients do; one that would fall in the guard before
        a tick comes just after it instead (:func:`clear_of_ticks`). Only for
        a plain socket (TLS records need the SSL stream) and only once a head
        came in pieces.

        Raises:
            trio.ClosedResourceError: the socket was closed meanwhile.
            OSError: the read failed (reset by the peer).
        """
        sock: Any = cast(Any, self.stream).socket
        tick_due = self.tick_due
        while True:
            when = trio.current_time() + pace * (0.5 + _JITTER.random())
            if tick_due is not None:  # and never just before a tick
                when = clear_of_ticks(when, tick_due())
            await trio.sleep_until(when)
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
