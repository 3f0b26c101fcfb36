"""``GET /dashboard/events``: one frame a second, built once, pushed to every open dashboard.

Server-Sent Events (``text/event-stream``) rather than a WebSocket: the page
only listens, ``EventSource`` reconnects by itself, and it is plain HTTP/1.1
through the same listener, deadlines and connection cap as every request.

**One broadcaster, never per client.** :class:`Broadcaster` runs as a
supervised service (``sup.services``: off the tick; a crash is logged,
counted and restarted with backoff while the tick goes on). Once a second it
reads the supervisor's views, encodes ONE frame, and offers the same bytes to
every subscriber's queue with ``send_nowait``. A subscriber whose queue is
full (a client that does not read) is dropped, its stream ended: nothing is
buffered past ``QUEUE_FRAMES`` frames per client. A client that hangs up
half-way frees its slot at once (its stream task watches ``http.disconnect``).
At most ``max_streams`` streams are open (503 past it), never more than half
of ``[api] max_connections``, so dashboards cannot take every connection slot
from the API.

**The series** comes from the tick histograms the core already keeps: each
second the broadcaster copies the bucket counts of ``sup.lateness`` and
``sup.work`` and turns the difference from the previous copy into that
second's p50/p99 (:meth:`WindowStats.between`, as the 10 s / 60 s windows of
:mod:`supervisor._core._windows` do). Nothing is added to the tick.

The stream (each ``data:`` is one line of JSON)::

    retry: 2000
    event: hello
    data: {"interval": 1.0, "history": [POINT, ...], "frame": FRAME or null}

    event: frame
    data: FRAME

    event: frame
    data: FRAME
    ...

``history`` is the last ``HISTORY`` (300) points, oldest first. ``FRAME``::

    {
      "t": 1764615000.0,                    # wall clock (Unix seconds)
      "status": {...},                      # exactly GET /v1/status (sup.status().as_dict())
      "series": POINT,                      # the second just ended
      "alerts": [RULE, ...],                # rules firing or pending, as in GET /v1/alerts "rules"
      "errors": {
        "recent": [RECORD, ...],            # newest first, redacted: GET /v1/errors "records"
        "total": 12,                        # errors counted since start (sum of status.errors)
        "trend": [{"t": 1764614940, "count": 3}, ...]   # per minute, oldest first, last 30
      }
    }

``POINT``: ``{"t": unix seconds, "ticks": n, "lateness_p50": s,
"lateness_p99": s, "work_p50": s, "work_p99": s}``, figures in seconds (0
when no tick ended in that second).
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import attrs
import trio

from .._alerts import alerts_view
from .._core._histogram import Histogram, WindowStats
from .._logging import get_logger
from ._requests import Family, Receive, Send, dumps

__all__ = ["HISTORY", "QUEUE_FRAMES", "Broadcaster", "Subscriber"]

# Spreads the streams' sends: not a secret, only a spread.
_JITTER: Final = random.Random()
#: Per-second points kept for a newcomer's ``hello``: five minutes.
HISTORY: Final = 300
#: Frames queued per client before it is dropped as too slow.
QUEUE_FRAMES: Final = 4
#: Streams open at once, at most (and never more than half the API's connections).
MAX_STREAMS: Final = 128
#: Per-minute error counts kept for the trend.
TREND_MINUTES: Final = 30
#: Subscribers offered a frame between two checkpoints.
FANOUT_SLICE: Final = 25
#: Each stream sends every frame this long after it is published, an offset
#: drawn at random within SEND_SPREAD seconds once per stream: a hundred
#: streams do not all write in one scheduler batch in front of a due tick,
#: and each stream still gets a frame exactly once a second.
SEND_SPREAD: Final = 0.2
#: Recent error records in each frame.
RECENT_ERRORS: Final = 20
#: What ``EventSource`` waits before reconnecting (milliseconds).
_RETRY_MS: Final = 2000
_STREAM_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-accel-buffering", b"no"),
)


class Observed(Protocol):
    """What the broadcaster reads of the supervisor (``Supervisor`` has all of it)."""

    @property
    def lateness(self) -> Histogram: ...

    @property
    def work(self) -> Histogram: ...

    @property
    def errors(self) -> Any: ...  # the error log: ``total`` errors counted since start

    def status(self) -> Any: ...

    def error_view(self, *, limit: int = 20, system: str | None = None) -> Any: ...


@attrs.define(eq=False)
class Subscriber:
    """One open stream: the broadcaster's end of its bounded queue, and the stream's end."""

    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]


def _event(name: str, data: bytes) -> bytes:
    # dumps() ends with a newline and never contains another one (JSON escapes them).
    return b"event: " + name.encode("ascii") + b"\ndata: " + data.rstrip(b"\n") + b"\n\n"


@attrs.define(eq=False)
class Broadcaster:
    """Builds one frame per ``interval`` and offers it to every subscriber; see the module doc."""

    sup: Observed
    interval: float = 1.0
    max_streams: int = MAX_STREAMS
    queue_frames: int = QUEUE_FRAMES
    spread: float = SEND_SPREAD
    wall: Callable[[], float] = time.time
    #: Seconds published (a point each), and frames built (only while someone listens).
    rounds: int = attrs.field(default=0, init=False)
    frames: int = attrs.field(default=0, init=False)
    #: Streams dropped because their client did not keep up.
    dropped: int = attrs.field(default=0, init=False)
    #: Streams refused because ``max_streams`` were open.
    refused: int = attrs.field(default=0, init=False)
    history: collections.deque[dict[str, float | int]] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=HISTORY)
    )
    _subs: dict[Subscriber, None] = attrs.field(init=False, factory=dict)
    _counts: tuple[Sequence[int], Sequence[int]] | None = attrs.field(init=False, default=None)
    _trend: collections.deque[list[int]] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=TREND_MINUTES)
    )
    _errors_seen: int | None = attrs.field(init=False, default=None)
    _latest: tuple[int, bytes] | None = attrs.field(init=False, default=None)
    _hello: tuple[int, bytes] | None = attrs.field(init=False, default=None)
    _log: Any = attrs.field(init=False, factory=lambda: get_logger(component="dashboard"))

    @property
    def streams(self) -> int:
        """Streams open now."""
        return len(self._subs)

    def metric_families(self) -> tuple[Family, ...]:
        """The stream's counters for ``/metrics`` (``supervisor_api_dashboard_...``)."""
        return (
            ("dashboard_streams", "gauge", "Dashboard event streams open now.",
             None, {"": len(self._subs)}),
            ("dashboard_streams_total", "counter",
             "Dashboard event streams ended early: dropped (the client did not keep up) or "
             "refused (too many open).",
             "outcome", {"dropped": self.dropped, "refused": self.refused}),
            ("dashboard_frames_total", "counter",
             "Dashboard frames built (one a second while a dashboard is open).",
             None, {"": self.frames}),
        )  # fmt: skip

    # ------------------------------------------------------------- service

    async def broadcast(self, _sup: object, task_status: trio.TaskStatus[None]) -> None:
        """The supervised service: a frame every ``interval`` until cancelled.

        Streams are ended when it stops (the run ends, or it crashed and will
        be restarted): ``EventSource`` reconnects by itself.
        """
        task_status.started()
        try:
            while True:
                await self.publish()
                await trio.sleep(self.interval)
        finally:
            for sub in list(self._subs):
                self._drop(sub)

    async def publish(self) -> None:
        """This second's point; then, if anyone listens, its frame to every subscriber.

        With no dashboard open only the point and the error count are taken
        (two copies of bucket counts, no status, no JSON). Otherwise the work
        is cut in pieces of well under a millisecond (the point; the frame;
        the offers, ``FANOUT_SLICE`` subscribers at a time) with a checkpoint
        between them, so a tick that falls due meanwhile runs in between
        (bench/dashboard_frames.py).
        """
        self.take_point()
        if not self._subs:
            return
        await trio.lowlevel.checkpoint()
        event = _event("frame", self.frame())
        subs = list(self._subs)
        for start in range(0, len(subs), FANOUT_SLICE):
            await trio.lowlevel.checkpoint()
            self.offer(event, subs[start : start + FANOUT_SLICE])

    def take_point(self) -> None:
        """Append this second's point to the history and count its errors (cheap; no I/O)."""
        now = self.wall()
        self._point(now)
        self._count_errors(now, self.sup.errors.total)
        self.rounds += 1

    def offer(self, event: bytes, subs: list[Subscriber]) -> None:
        """Queue ``event`` for each of ``subs``; one whose queue is full is dropped."""
        for sub in subs:
            if sub not in self._subs:
                continue  # left meanwhile
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
                self._drop(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(sub)

    def frame(self) -> bytes:
        """The frame of the latest second (JSON bytes), built at most once per second."""
        if self._latest is not None and self._latest[0] == self.rounds:
            return self._latest[1]
        status = self.sup.status().as_dict()
        errors = self.sup.error_view(limit=RECENT_ERRORS).as_dict()
        point = self.history[-1] if self.history else None
        frame = {
            "t": self.wall() if point is None else point["t"],
            "status": status,
            "series": point,
            "alerts": [
                rule
                for rule in alerts_view(self.sup).get("rules", [])
                if rule.get("state") in ("firing", "pending")
            ],
            "errors": {
                "recent": errors["records"],
                "total": self._errors_seen or 0,
                "trend": [{"t": t, "count": n} for t, n in self._trend],
            },
        }
        self.frames += 1
        self._latest = (self.rounds, dumps(frame))
        return self._latest[1]

    def _point(self, now: float) -> dict[str, float | int]:
        lateness, work = self.sup.lateness, self.sup.work
        current = (lateness.counts(), work.counts())
        previous = self._counts
        self._counts = current
        point: dict[str, float | int] = {"t": now, "ticks": 0}
        for name in ("lateness_p50", "lateness_p99", "work_p50", "work_p99"):
            point[name] = 0.0
        if previous is not None and sum(current[0]) >= sum(previous[0]):
            late = WindowStats.between(current[0], previous[0], lateness.max)
            busy = WindowStats.between(current[1], previous[1], work.max)
            point.update(
                ticks=late.count,
                lateness_p50=late.p50,
                lateness_p99=late.p99,
                work_p50=busy.p50,
                work_p99=busy.p99,
            )
        self.history.append(point)
        return point

    def _count_errors(self, now: float, total: int) -> None:
        seen, self._errors_seen = self._errors_seen, total
        # A lower total than before: the counts were reset (a restart); count from 0.
        new = 0 if seen is None else total - seen if total >= seen else total
        minute = int(now // 60 * 60)
        if self._trend and self._trend[-1][0] == minute:
            self._trend[-1][1] += new
        else:
            self._trend.append([minute, new])

    # -------------------------------------------------------------- streams

    def subscribe(self, max_connections: int) -> Subscriber | None:
        """A new stream's queue, or None when ``max_streams`` (or half the connections) are open."""
        cap = min(self.max_streams, max(1, max_connections // 2))
        if len(self._subs) >= cap:
            self.refused += 1
            return None
        send, receive = trio.open_memory_channel[bytes](self.queue_frames)
        sub = Subscriber(send=send, receive=receive)
        self._subs[sub] = None
        return sub

    def _drop(self, sub: Subscriber) -> None:
        self._subs.pop(sub, None)
        sub.send.close()

    def hello(self) -> bytes:
        """The first event of a stream: the history and the latest frame (encoded once a second)."""
        if self._hello is None or self._hello[0] != self.rounds:
            data = dumps({"interval": self.interval, "history": list(self.history), "frame": None})
            if self.rounds:
                # Splice the encoded frame in rather than decode and re-encode it.
                data = data.rstrip(b"\n")[: -len(b"null}")] + self.frame().rstrip(b"\n") + b"}\n"
            self._hello = (self.rounds, b"retry: %d\n" % _RETRY_MS + _event("hello", data))
        return self._hello[1]

    async def stream(self, sub: Subscriber, receive: Receive, send: Send) -> None:
        """Serve one stream until the client leaves, is dropped, or the broadcaster stops."""
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEADERS)}
            )
            await send({"type": "http.response.body", "body": self.hello(), "more_body": True})
            offset = self.spread * _JITTER.random()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                async for event in sub.receive:
                    await trio.sleep(offset)
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                nursery.cancel_scope.cancel()
            # Dropped or the service stopped: end the response cleanly.
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._drop(sub)
            sub.receive.close()


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client hangs up (the request has no body to read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            scope.cancel()
            return
