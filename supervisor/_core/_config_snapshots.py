"""The ``[snapshots]`` section: a shared snapshot store and the name of this world in it.

``store`` is a directory on storage every supervisor that may take a world
over can reach (NFS, a mounted volume), or a Redis URL
(``redis://HOST:PORT/DB``, ``rediss://``, ``unix://``: the fleet's URL
check, its password masked wherever it is shown); each world's snapshots go
to ``STORE/<world>/`` (or the world's key in Redis) with the local store's
atomic writes, checksums and generations
(``supervisor/_core/_snapshot_shared.py``). ``world`` names this
supervisor's world there (default: this host's name) and is what
``supervisor run --resume-from WORLD`` names on another machine.
``max_mb`` caps one shared snapshot: a larger one is kept locally only.
"""

from __future__ import annotations

import re
import socket
from typing import Any, ClassVar

import attrs

from .._errors import ConfigError
from ._config_fields import Section, check, setting
from ._config_fleet import check_redis_url

__all__ = ["WORLD_NAME", "SnapshotsConfig", "check_world"]

#: A world's name: a folder name on every file system, never a path.
WORLD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_world(name: object, key: str = "snapshots.world") -> str:
    """``name`` if it is a valid world name, else a ConfigError naming ``key``."""
    if not isinstance(name, str) or not WORLD_NAME.fullmatch(name) or ".." in name:
        shown = repr(name)[:80]
        raise ConfigError(
            f"expected a world name (letters, digits, '.', '_', '-', at most 64), got {shown}",
            key=key,
        )
    return name


def _default_world() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname() or "")[:64].strip(".-")
    return host if host and WORLD_NAME.fullmatch(host) else "world"


def _store(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if "://" in value:
        found = check_redis_url(value)
        if found is not None:
            raise ConfigError(
                f"expected a directory or a Redis URL: {found}", key="snapshots.store"
            )
        return
    if "\x00" in value:
        raise ConfigError("a path cannot hold a NUL character", key="snapshots.store")


def _world(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    check_world(value)


@attrs.frozen(kw_only=True)
class SnapshotsConfig(Section):
    """``[snapshots]``: where snapshots are shared, and this world's name there."""

    section: ClassVar[str] = "snapshots"

    #: A directory on shared storage (relative: to the config file); unset: no sharing.
    store: str | None = attrs.field(
        default=None,
        metadata={"kind": str, "optional": True, "min_len": 1},
        validator=[check, _store],
    )
    #: This world's name in the store.
    world: str = attrs.field(
        default=attrs.Factory(_default_world),
        metadata={"kind": str, "min_len": 1},
        validator=[check, _world],
    )
    #: Largest shared snapshot in MiB (Redis takes at most 512 MiB in one value).
    max_mb: int = setting(64, int, min=1, max=512)

    @property
    def max_bytes(self) -> int:
        """``max_mb`` in bytes."""
        return self.max_mb * 1024 * 1024
