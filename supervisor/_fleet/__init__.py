"""The fleet: a registry and control plane on Redis (CONTRACT §12, issue 14).

A capability above the core and below the server. :func:`attach_fleet` makes
a supervisor a member (heartbeats with a TTL, commands by broadcast and
durable flags, acted on through the supervisor's own control surface);
:mod:`._control` is what ``supervisor fleet`` uses to read the registry and
issue commands. Redis is reached with coredis (AnyIO, so it runs under trio),
imported only when a fleet is configured or asked.
"""

from ._control import FleetControl, member_rows
from ._member import AuditWriter, FleetAudit, FleetMember, attach_fleet, member_for
from ._protocol import Command, Keys

__all__ = [
    "AuditWriter",
    "Command",
    "FleetAudit",
    "FleetControl",
    "FleetMember",
    "Keys",
    "attach_fleet",
    "member_for",
    "member_rows",
]
