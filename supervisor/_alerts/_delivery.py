"""Delivery of alert notifications: a bounded queue per destination, retried with capped backoff.

The evaluator only ever calls :meth:`Destination.offer`, which never waits:
a full queue drops the notification and counts it. Each destination's
:meth:`Destination.deliver` runs as a supervised service: it takes what is
queued (Alertmanager takes a batch in one POST), posts it with httpx (on
trio, so the tick loop runs while a request waits), and on a failure (no
connection, a timeout, an answer that is not 2xx) retries with a doubling
delay capped at :data:`BACKOFF_MAX`, giving up after :data:`ATTEMPTS`
tries (counted). Counters by outcome are exported in ``/metrics``
(``supervisor_alert_notifications{destination,outcome}``).

Two formats: Alertmanager's v2 API (``POST /api/v2/alerts``, a list of
alerts with ``labels``, ``annotations``, ``startsAt`` and ``endsAt``; a
resolve is the same alert with ``endsAt`` in the past), and a webhook's JSON,
shaped like Alertmanager's own webhook payload (``status``, ``alerts``) so a
receiver written for one takes the other.
"""

from __future__ import annotations

import collections
import datetime
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from .._logging import get_logger
from ._evaluator import State

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ATTEMPTS",
    "BACKOFF_MAX",
    "OUTCOMES",
    "Destination",
    "Notification",
    "alertmanager_alert",
    "rfc3339",
]

#: Tries per notification (the first and the retries).
ATTEMPTS: Final = 6
BACKOFF_INITIAL: Final = 0.5
BACKOFF_MAX: Final = 30.0
#: Seconds for one POST, connecting included.
TIMEOUT: Final = 5.0
#: Alerts per POST to Alertmanager.
BATCH: Final = 64
#: Every outcome counted, always exported (0 until it happens).
OUTCOMES: Final = ("sent", "failed_attempt", "gave_up", "dropped_queue_full")

#: One alert as Alertmanager's v2 API takes it (a JSON object).
Notification = dict[str, Any]


def rfc3339(wall: float) -> str:
    """Wall-clock seconds as Alertmanager's timestamps (UTC, milliseconds)."""
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_alert(
    *,
    name: str,
    severity: str,
    instance: str,
    status: State,
    starts_at: float,
    ends_at: float,
    annotations: Mapping[str, str],
) -> Notification:
    """One alert in Alertmanager's v2 shape, plus ``status`` for webhooks.

    ``ends_at`` is when it resolved, or (while firing) when Alertmanager
    should consider it resolved unless it hears again.
    """
    return {
        "status": "resolved" if status is State.RESOLVED else "firing",
        "labels": {"alertname": name, "severity": severity, "instance": instance},
        "annotations": dict(annotations),
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": "",
    }


class Destination:
    """One place notifications go: an Alertmanager, or a webhook."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        alertmanager: bool,
        queue: int,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        # httpx (~8 MB and ~60 ms with its transport, httpcore) is imported
        # here, when a destination is configured and the alerts are attached:
        # not by a run without destinations, and not in a step of a delivery
        # service, on the loop, while the world ticks.
        import httpcore  # noqa: F401, PLC0415
        import httpx  # noqa: PLC0415

        self._httpx = httpx
        self.name = name
        self.alertmanager = alertmanager
        self.url = url.rstrip("/") + "/api/v2/alerts" if alertmanager else url
        self._send, self._receive = trio.open_memory_channel[Notification](queue)
        self._client = client
        # Built now, before the run: the CA bundle takes ~20-35 ms to load, a
        # stall the tick would feel if the service built it. An http:// URL
        # never uses it, so it gets a context without certificates.
        self._tls = (
            ssl.create_default_context()
            if self.url.startswith("https:")
            else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        )
        self.counts: collections.Counter[str] = collections.Counter(dict.fromkeys(OUTCOMES, 0))
        self.last_error: str | None = None
        self._log = get_logger(destination=name)

    def offer(self, notification: Notification) -> bool:
        """Queue ``notification`` without waiting; False (counted) when the queue is full."""
        try:
            self._send.send_nowait(notification)
        except trio.WouldBlock:
            self.counts["dropped_queue_full"] += 1
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: where, how much is queued, the outcome counts, the last error."""
        return {
            "destination": self.name,
            "kind": "alertmanager" if self.alertmanager else "webhook",
            "queued": self._receive.statistics().current_buffer_used,
            **{k: self.counts[k] for k in OUTCOMES},
            "last_error": self.last_error,
        }

    async def deliver(self, closing: trio.Event) -> None:
        """Post what is queued until ``closing`` is set (the service's body)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, closing, nursery.cancel_scope)
            client = self._client or self._httpx.AsyncClient(timeout=TIMEOUT, verify=self._tls)
            try:
                while True:
                    batch = [await self._receive.receive()]
                    limit = BATCH if self.alertmanager else 1
                    while len(batch) < limit:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    await self._post(client, batch)
            finally:
                if self._client is None:
                    with trio.CancelScope(shield=True):
                        await client.aclose()

    @staticmethod
    async def _watch(closing: trio.Event, scope: trio.CancelScope) -> None:
        await closing.wait()
        scope.cancel()

    async def _post(self, client: httpx.AsyncClient, batch: Sequence[Notification]) -> None:
        body: Any = list(batch) if self.alertmanager else _webhook_body(batch[0])
        delay = BACKOFF_INITIAL
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = await client.post(self.url, json=body)
                if 200 <= answer.status_code < 300:
                    self.counts["sent"] += len(batch)
                    return
                problem = f"HTTP {answer.status_code}"
            except self._httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.counts["failed_attempt"] += 1
            self.last_error = problem[:200]
            self._log.warning("alert.delivery_failed", attempt=attempt, error=self.last_error)
            if attempt < ATTEMPTS:
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        self.counts["gave_up"] += len(batch)
        self._log.error("alert.delivery_gave_up", alerts=len(batch), error=self.last_error)


def _webhook_body(alert: Notification) -> dict[str, Any]:
    """Alertmanager's webhook payload shape, for one alert."""
    return {
        "version": "4",
        "receiver": "supervisor",
        "status": alert["status"],
        "alerts": [alert],
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "groupLabels": {"alertname": alert["labels"]["alertname"]},
    }
