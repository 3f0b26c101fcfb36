"""The Redis client of the fleet: coredis, opened lazily, every wait bounded.

Why coredis: it is a maintained, fully typed async client built on
AnyIO, so it runs under trio as it is (a member heartbeats from a trio task,
between ticks, with no thread). redis-py's async client is asyncio-only; its
sync client would need a worker thread per blocking call and a thread
blocked in ``SUBSCRIBE`` for the broadcast.

coredis is imported here, on first use, never at ``import supervisor``: a run
without ``[fleet]`` does not load it (it costs ~0.15 s and ~18 MB).
Retries are ours, not coredis's: each call fails within ``timeout`` and the
member reconnects with its own capped backoff, so an outage is seen (and
shown in status) at once instead of being retried inside a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import coredis

__all__ = ["open_client"]


def open_client(url: str, *, timeout: float) -> coredis.Redis[str]:
    """A client for ``url`` (not connected yet: ``async with`` it), decoding replies as text.

    Args:
        url: a URL :func:`supervisor._core._config_fleet.check_redis_url` accepts.
        timeout: seconds a connection or one reply may take.
    """
    import coredis
    from coredis.retry import NoRetryPolicy

    kwargs: dict[str, Any] = {"connect_timeout": timeout, "stream_timeout": timeout}
    return coredis.Redis.from_url(
        url,
        decode_responses=True,
        retry_policy=NoRetryPolicy(),
        verify_version=False,  # one round trip less per connection; any Redis >= 6.2 works
        **kwargs,
    )
