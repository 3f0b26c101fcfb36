"""What the fleet keeps in Redis: key names, member records, commands, and their checks.

One namespace (``[fleet] namespace``, default ``supervisor``) holds:

* ``NS:member:ID`` -- a member's record (JSON), written with a TTL of
  ``heartbeat x missed`` at every heartbeat: gone when the member is;
* ``NS:members`` -- a sorted set, member id -> wall time of its last
  heartbeat: a member listed here whose record has expired died without
  leaving (kill -9, a lost host), which is what a standby looks for to
  take its world over (see the failover design in the README);
* ``NS:generation`` -- the counter every fleet command takes its number from;
* ``NS:flag:emergency`` and ``NS:flag:phase`` -- the durable flags: the last
  command of each kind, with its generation. Members read them at start-up
  and at every heartbeat (pub/sub is at-most-once: a member that was
  disconnected or not yet started learns of a command here);
* ``NS:commands`` -- the pub/sub channel every command is published on;
* ``NS:audit`` -- a stream (``XADD``, capped) of every command issued and of
  every member's answer to it.

Everything read back from Redis is hostile until checked: anyone who can
reach the Redis can write there. :func:`parse_command` and
:func:`parse_record` accept only the shapes written here, bounded in size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._address import MAX_REASON
from .._core._phase import Phase

__all__ = [
    "ACTIONS",
    "AUDIT_MAXLEN",
    "BROADCAST_SCRIPT",
    "HEARTBEAT_SCRIPT",
    "MAX_MESSAGE",
    "BadMessage",
    "Command",
    "Keys",
    "parse_command",
    "parse_record",
]

#: Longest command or member record accepted (bytes of JSON).
MAX_MESSAGE: Final = 8192
#: Entries the audit stream keeps (approximately: ``XADD MAXLEN ~``).
AUDIT_MAXLEN: Final = 10_000
#: What a fleet command may ask.
ACTIONS: Final = ("emergency", "phase", "clear")
#: Phases ``fleet phase`` may move members to (an emergency is ``fleet emergency``).
FLEET_PHASES: Final = tuple(p.value for p in Phase if p is not Phase.EMERGENCY_SHUTDOWN)

#: Issue one command atomically: take a generation, set (or clear) the
#: durable flag, append to the audit stream, publish. KEYS: generation
#: counter, flag, audit stream. ARGV: channel, command JSON (no generation),
#: "set" or "del", stream cap. Returns {generation, receivers}.
BROADCAST_SCRIPT: Final = """
local gen = redis.call('INCR', KEYS[1])
local cmd = cjson.decode(ARGV[2])
cmd['generation'] = gen
local text = cjson.encode(cmd)
if ARGV[3] == 'set' then
  redis.call('SET', KEYS[2], text)
else
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'command', 'command', text)
local receivers = redis.call('PUBLISH', ARGV[1], text)
return {gen, receivers}
"""

#: One heartbeat in one round trip: the record with its TTL, the last-seen
#: time, stale ids pruned, and both durable flags read back. KEYS: record,
#: members, emergency flag, phase flag. ARGV: record JSON, TTL ms, id, now, prune-before.
HEARTBEAT_SCRIPT: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
return redis.call('MGET', KEYS[3], KEYS[4])
"""


class BadMessage(ValueError):
    """Raised when something read from Redis is not a command or record this module writes."""


@attrs.frozen
class Keys:
    """The key and channel names of one fleet namespace."""

    namespace: str

    def member(self, member_id: str) -> str:
        """The key of a member's record."""
        return f"{self.namespace}:member:{member_id}"

    @property
    def member_prefix(self) -> str:
        """What every member record's key starts with."""
        return f"{self.namespace}:member:"

    @property
    def members(self) -> str:
        """The sorted set of member ids by last heartbeat."""
        return f"{self.namespace}:members"

    @property
    def generation(self) -> str:
        """The command counter."""
        return f"{self.namespace}:generation"

    def flag(self, kind: str) -> str:
        """The durable flag of ``kind`` (``emergency`` or ``phase``)."""
        return f"{self.namespace}:flag:{kind}"

    @property
    def channel(self) -> str:
        """The pub/sub channel of commands."""
        return f"{self.namespace}:commands"

    @property
    def audit(self) -> str:
        """The audit stream."""
        return f"{self.namespace}:audit"


@attrs.frozen(kw_only=True)
class Command:
    """One fleet command as broadcast and kept in its durable flag."""

    generation: int
    action: str  # "emergency" | "phase" | "clear"
    reason: str
    origin: str  # who issued it: "cli:USER@HOST"
    time: float  # wall clock when issued
    phase: str | None = None  # the target of "phase"
    force: bool = False  # "phase": skip the readiness gate of a promotion

    @property
    def flag(self) -> str:
        """The durable flag this command sets or clears: ``emergency`` or ``phase``."""
        return "phase" if self.action == "phase" else "emergency"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the generation is left to Redis when issuing)."""
        return attrs.asdict(self)


def _loads(text: object) -> Mapping[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        raise BadMessage(f"not a JSON text of at most {MAX_MESSAGE} characters")
    try:
        data = json.loads(text)
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(data, dict):
        raise BadMessage("not a JSON object")
    return data


def _text(data: Mapping[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise BadMessage(f"{key!r}: expected a string of at most {limit} characters")
    return value


def _number(data: Mapping[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadMessage(f"{key!r}: expected a finite number")
    return float(value)


def parse_command(text: object) -> Command:
    """The command in ``text`` (a flag's value or a pub/sub message).

    Raises:
        BadMessage: not exactly a command :data:`BROADCAST_SCRIPT` wrote.
    """
    data = _loads(text)
    generation = data.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise BadMessage("'generation': expected a positive integer")
    action = data.get("action")
    if action not in ACTIONS:
        raise BadMessage(f"'action': expected one of {', '.join(ACTIONS)}")
    phase = data.get("phase")
    if action == "phase" and phase not in FLEET_PHASES:
        raise BadMessage(f"'phase': expected one of {', '.join(FLEET_PHASES)}")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise BadMessage("'force': expected true or false")
    when = _number(data, "time")
    assert when is not None
    return Command(
        generation=generation,
        action=action,
        reason=_text(data, "reason", MAX_REASON),
        origin=_text(data, "origin", 200),
        time=when,
        phase=phase if action == "phase" else None,
        force=force,
    )


#: A member record's keys: (name, kind); "text" values are bounded strings.
RECORD_FIELDS: Final = (
    ("id", "text"),
    ("host", "text"),
    ("pid", "number"),
    ("version", "text"),
    ("phase", "text"),
    ("tick_rate", "number"),
    ("measured_tick_rate", "number?"),
    ("lateness_p99_ms", "number?"),
    ("players", "number?"),
    ("errors", "number"),
    ("api", "text?"),
    ("state_dir", "text"),
    ("started", "number"),
    ("heartbeat", "number"),
)


def parse_record(text: object) -> dict[str, Any]:
    """A member record read back from Redis, with exactly :data:`RECORD_FIELDS`.

    Raises:
        BadMessage: any key missing, extra, or of the wrong kind.
    """
    data = _loads(text)
    if set(data) != {name for name, _kind in RECORD_FIELDS}:
        raise BadMessage("not a member record")
    out: dict[str, Any] = {}
    for name, kind in RECORD_FIELDS:
        if kind.startswith("text"):
            out[name] = (
                None if data[name] is None and kind.endswith("?") else _text(data, name, 1024)
            )
        else:
            out[name] = _number(data, name, optional=kind.endswith("?"))
    return out
