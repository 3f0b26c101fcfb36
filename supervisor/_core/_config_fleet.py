"""The ``[fleet]`` section: the Redis fleet registry this supervisor joins, checked at load.

Off unless ``redis`` is set. The URL, the member id and the namespace end up
in Redis key names, log lines and ``supervisor fleet status`` tables, so they
are held to narrow shapes here (a bad one is a :class:`ConfigError` naming
the key, ``supervisor run`` exits 2), never discovered at the first heartbeat.
What a member does with it (heartbeats, broadcasts, the durable flags) is
``supervisor._fleet``'s job, a layer above the core.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from typing import Any, ClassVar, Final

import attrs

from .._errors import ConfigError
from ._config_fields import Section, parse_duration, setting

__all__ = ["NAME_PATTERN", "FleetConfig", "check_redis_url", "default_member_id", "safe_url"]

#: Member ids and namespaces: they become parts of Redis keys and table cells.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Redis URL schemes: TCP, TLS, and a Unix socket.
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
#: Heartbeats are at least this far apart, at most this.
HEARTBEAT_RANGE: Final = (0.1, 60.0)


def default_member_id() -> str:
    """``HOST-PID``, cut to a valid id: unique on one machine, readable in a table."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname() or "host")[:100] or "host"
    return f"{host.lstrip('._-') or 'host'}-{os.getpid()}"


def check_redis_url(url: object) -> str | None:
    """What is wrong with ``url`` as a Redis URL, or None.

    Accepts ``redis://[[user]:password@]HOST[:PORT][/DB]``, ``rediss://...``
    and ``unix://[[user]:password@]/PATH[?db=N]``; refuses anything else
    in one line (the CLI's ``--redis`` and the config key share this check).
    """
    if not isinstance(url, str):
        return f"expected a string, got {type(url).__name__}"
    if len(url) > 1024 or not url.isprintable() or any(c.isspace() for c in url):
        return "expected a redis:// URL of printable characters without spaces (≤ 1024)"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in REDIS_SCHEMES:
        return f"expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}"
    if parts.scheme == "unix":
        return None if parts.path.startswith("/") else "a unix:// URL needs an absolute path"
    if not parts.hostname:
        return "the URL names no host (redis://HOST:PORT/DB)"
    if port == 0:
        return "port 0 is not a Redis port"
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) <= 10_000):
        return f"the database must be a number, got {db!r}"
    return None


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for status, logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _redis_url(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    found = check_redis_url(value)
    if found is not None:
        raise ConfigError(found, key="fleet.redis")


def _name(key: str) -> Any:
    def valid(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
            raise ConfigError(
                f"expected 1-128 letters, digits, '.', '_' or '-' "
                f"(starting with a letter or digit), got {value!r:.60}",
                key=key,
            )

    return valid


def _duration(key: str, low: float, high: float) -> Any:
    def valid(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ConfigError(str(exc), key=key) from None
        if not low <= seconds <= high:
            raise ConfigError(f"{value!r} is not between {low:g}s and {high:g}s", key=key)

    return valid


@attrs.frozen(kw_only=True)
class FleetConfig(Section):
    """The ``[fleet]`` section: the Redis registry, this member's id, the heartbeat."""

    section: ClassVar[str] = "fleet"

    #: ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``); unset: no fleet.
    redis: str | None = attrs.field(
        default=None,
        metadata={"kind": str, "optional": True, "min_len": 1},
        validator=_redis_url,
    )
    #: This member's id in the registry (default: ``HOST-PID``).
    id: str | None = attrs.field(
        default=None, metadata={"kind": str, "optional": True}, validator=_name("fleet.id")
    )
    #: Prefix of every key and channel: fleets sharing one Redis stay apart.
    namespace: str = attrs.field(
        default="supervisor",
        metadata={"kind": str, "min_len": 1},
        validator=_name("fleet.namespace"),
    )
    #: Time between heartbeats (``"1s"``, ``"500ms"``).
    heartbeat: str = attrs.field(
        default="1s",
        metadata={"kind": str, "min_len": 1},
        validator=_duration("fleet.heartbeat", *HEARTBEAT_RANGE),
    )
    #: Heartbeats a member may miss before its registry entry expires.
    missed: int = setting(3, int, min=2, max=100)
    #: Seconds a Redis round trip (or a connection) may take before it counts as lost.
    timeout: float = setting(1.0, float, min=0.05, max=30.0)
    #: A standby runs no world of its own: it waits, ticking nothing, until a
    #: member's world lease expires, then takes that world over (``supervisor._fleet._failover``).
    standby: bool = setting(False, bool)

    @property
    def enabled(self) -> bool:
        """Whether this supervisor joins a fleet."""
        return self.redis is not None

    @property
    def heartbeat_seconds(self) -> float:
        """The heartbeat period in seconds."""
        return parse_duration(self.heartbeat)

    @property
    def ttl_seconds(self) -> float:
        """How long a registry entry lives without a heartbeat."""
        return self.heartbeat_seconds * self.missed

    def member_id(self) -> str:
        """The configured id, or ``HOST-PID``."""
        return self.id if self.id is not None else default_member_id()
