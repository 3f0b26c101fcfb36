"""Supervised services: long-running tasks started with a run, restarted with backoff.

A service is ``async def svc(sup, task_status=trio.TASK_STATUS_IGNORED)`` (the
HTTP API registers itself this way; the core does not import it). A crash
after ``task_status.started()`` is logged, counted and restarted with a
doubling backoff; the tick goes on. ``closing`` tells services to return;
they are cancelled SERVICE_GRACE seconds later.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._errors import SupervisorError
from ._redact import Redactor
from ._safecall import is_a, is_runtime_cancel, safe_message, safe_type_name

__all__ = ["SERVICE_GRACE", "Services"]

#: A crashed service is restarted after this backoff (seconds), doubling up to the maximum;
#: a service that ran for SERVICE_BACKOFF_MAX before crashing starts again from the initial one.
SERVICE_BACKOFF_INITIAL = 0.1
SERVICE_BACKOFF_MAX = 10.0
#: Seconds services get to return on their own once ``closing`` is set, before they are cancelled.
SERVICE_GRACE = 2.0


def _service_name(service: Any) -> str:
    """A service's name for logs and ``failures``: its function's name."""
    target = getattr(service, "func", service)  # a functools.partial names its function
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(service).__name__


class _ServiceStatus:
    """The ``task_status`` a supervised service gets: only its first ``started()`` counts.

    A restarted service calls ``started()`` again; by then the run is long
    past start-up, so the call is ignored.
    """

    __slots__ = ("_outer", "done")

    def __init__(self, outer: trio.TaskStatus[Any]) -> None:
        self._outer = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._outer.started(value)


class Services:
    """The services of one supervisor, and their supervision during a run."""

    def __init__(self, owner: object, redactor: Redactor, log: Any) -> None:
        self._owner = owner  # what each service is called with (the Supervisor)
        self._redactor = redactor
        self._log = log
        #: The services, in start order.
        self.services: list[Callable[..., Awaitable[Any]]] = []
        #: Crashes of each service (by its function's name).
        self.failures: collections.Counter[str] = collections.Counter()
        #: Set when the run is ending: services should return.
        self.closing = trio.Event()
        self._running = 0
        self._idle = trio.Event()

    def open(self) -> None:
        """A run begins: fresh ``closing`` and idle events."""
        if self.closing.is_set():  # a second run of this supervisor
            self.closing = trio.Event()
        self._idle = trio.Event()

    async def close(self, *, force: bool) -> None:
        """Set ``closing``; give the services SERVICE_GRACE seconds to return, unless forced.

        So an answer in flight (``shutdown --emergency`` with
        ``--exit-on-emergency``) is sent before the process exits.
        """
        self.closing.set()
        if self._running and not force:
            with trio.move_on_after(SERVICE_GRACE):
                await self._idle.wait()

    async def run(
        self, service: Callable[..., Awaitable[Any]], task_status: trio.TaskStatus[Any]
    ) -> None:
        """Run one service supervised: a crash is logged, counted and restarted with backoff.

        A ``SupervisorError`` before its first ``started()`` stays a start-up
        error (the run does not start). Any other failure, before or after
        ``started()``, and at any time later, is the service's: nothing it
        raises reaches the nursery that runs the tick loop. Only the runtime's
        own cancellation passes.
        """
        name = _service_name(service)
        status = _ServiceStatus(task_status)
        delay = SERVICE_BACKOFF_INITIAL
        self._running += 1
        try:
            while not self.closing.is_set():
                began = trio.current_time()
                try:
                    await service(self._owner, task_status=status)
                except BaseException as exc:
                    if is_runtime_cancel(exc):
                        raise
                    if not status.done and is_a(exc, SupervisorError):
                        raise
                    if trio.current_time() - began >= SERVICE_BACKOFF_MAX:
                        delay = SERVICE_BACKOFF_INITIAL  # it ran a good while: a fresh failure
                    self._crashed(name, exc, delay)
                else:
                    status.started()  # (nursery.start fails on a task that returns without it)
                    return  # a service that returns has finished its work
                status.started()  # a service that crashed before started() must not hold up the run
                with trio.move_on_after(delay):
                    await self.closing.wait()
                delay = min(delay * 2, SERVICE_BACKOFF_MAX)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    def _crashed(self, name: str, exc: BaseException, delay: float) -> None:
        self.failures[name] += 1
        self._log.error(
            "service.crashed",
            service=name,
            error=safe_type_name(exc),
            message=safe_message(exc, self._redactor),
            failures=self.failures[name],
            restart_in=delay,
        )
