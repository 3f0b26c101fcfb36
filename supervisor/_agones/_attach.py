"""Plugging the Agones link into a supervisor's run."""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from .._logging import get_logger

if TYPE_CHECKING:
    from .._core._runtime import Supervisor
    from ._link import AgonesLink

__all__ = ["attach_agones", "link_for"]

_LINKS: weakref.WeakKeyDictionary[Supervisor, AgonesLink] = weakref.WeakKeyDictionary()
"""The link of each supervisor (tests and the server read it through ``link_for``)."""


def attach_agones(sup: Supervisor, *, env: Mapping[str, str] | None = None) -> AgonesLink | None:
    """Link ``sup`` to its Agones sidecar, if Agones named one or ``[agones] enabled``.

    Appends two supervised services (``agones_lifecycle``, ``agones_watch``)
    to ``sup.services`` and the ``agones`` section to ``sup.status_sections``.
    Returns None (and attaches nothing) when the link is off.

    Args:
        env: where ``AGONES_SDK_HTTP_PORT`` is read (default ``os.environ``).

    Raises:
        ConfigError: ``AGONES_SDK_HTTP_PORT`` is not a port number.
    """
    env = os.environ if env is None else env
    config = sup.active_config.agones
    if not config.active(env):
        return None
    port = config.sdk_port(env)
    from ._link import AgonesLink  # noqa: PLC0415 (h11 loads only when the link is on)

    link = AgonesLink(
        sup=sup,
        port=port,
        timeout=config.timeout,
        health_interval=config.health_interval,
        backoff_max=config.backoff_max,
        players_gauge=config.players_gauge,
        players_counter=config.players_counter,
        labels=config.labels,
        shutdown_on_emergency=config.shutdown_on_emergency,
        log=get_logger(capability="agones"),
    )
    _LINKS[sup] = link

    async def agones_lifecycle(
        sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await link.lifecycle(task_status)

    async def agones_watch(
        sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await link.watch(task_status)

    sup.services.append(agones_lifecycle)
    sup.services.append(agones_watch)
    sup.status_sections["agones"] = link.status
    return link


def link_for(sup: Supervisor) -> AgonesLink | None:
    """The link attached to ``sup``, if any."""
    return _LINKS.get(sup)
