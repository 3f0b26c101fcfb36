"""The ``[snapshots]`` section: a shared snapshot store and the name of this world in it.

``store`` is a directory on storage every supervisor that may take a world
over can reach (NFS, a mounted volume); each world's snapshots go to
``STORE/<world>/`` with the local store's atomic writes, checksums and
generations (``supervisor/_core/_snapshot_shared.py``). ``world`` names this
supervisor's world there (default: this host's name) and is what
``supervisor run --resume-from WORLD`` names on another machine.
"""

from __future__ import annotations

import re
import socket
from typing import Any, ClassVar

import attrs

from .._errors import ConfigError
from ._config_fields import Section, check

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
        raise ConfigError(
            "expected a directory (a redis:// or other URL store is not supported yet)",
            key="snapshots.store",
        )
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

