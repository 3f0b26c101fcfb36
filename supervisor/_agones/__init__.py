"""Agones: a supervisor as a game server of an Agones fleet (CONTRACT §12, issue 14).

A capability above the core and below the server. :func:`attach_agones`
plugs the link to the SDK sidecar into a run when ``AGONES_SDK_HTTP_PORT``
is set or ``[agones] enabled = true``: Ready once every system started,
Health from the tick loop's progress, the phase and profile as labels, the
players gauge as the ``players`` Counter, WatchGameServer's state in
``status`` and handed to systems that declare ``agones_gameserver``, and
Shutdown after a graceful stop or a preserved emergency.

Only :mod:`._attach` is loaded with the package: the link and its HTTP
client (h11) are imported when a run turns the link on, so a run without
Agones loads neither.
"""

from ._attach import attach_agones, link_for

__all__ = ["attach_agones", "link_for"]
