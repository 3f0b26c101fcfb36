"""The GameServer as the sidecar describes it, reduced to a frozen value systems can read.

The sidecar's JSON (grpc-gateway, snake_case: ``object_meta``, ``status``)
is read field by field; anything of the wrong type is left out rather than
trusted, so a surprise in a newer Agones costs a missing field, not a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._errors import printable

__all__ = ["ALLOCATED", "RESERVED", "GameServerState"]

#: The GameServer states a game server acts on (Agones' ``GameServerState`` values).
ALLOCATED: Final = "Allocated"
RESERVED: Final = "Reserved"
#: Labels/annotations/ports/counters kept from one GameServer (the rest are dropped).
MAX_ENTRIES: Final = 256
_MAX_TEXT: Final = 1024


def _text(value: Any) -> str:
    """A string field, cut short, control characters escaped (it reaches logs and terminals)."""
    return printable(value[:_MAX_TEXT]) if isinstance(value, str) else ""


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if len(out) >= MAX_ENTRIES:
            break
        if isinstance(key, str) and isinstance(item, str):
            out[_text(key)] = _text(item)
    return out


def _int(value: Any) -> int | None:
    """An int64 as grpc-gateway writes it (a string) or a plain integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def _ports(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        (_text(item.get("name")), port)
        for item in value[:MAX_ENTRIES]
        if isinstance(item, Mapping) and (port := _int(item.get("port"))) is not None
    )


def _counters(value: Any) -> dict[str, tuple[int, int]]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, tuple[int, int]] = {}
    for key, item in list(value.items())[:MAX_ENTRIES]:
        if isinstance(key, str) and isinstance(item, Mapping):
            out[_text(key)] = (_int(item.get("count")) or 0, _int(item.get("capacity")) or 0)
    return out


@attrs.frozen(kw_only=True)
class GameServerState:
    """One GameServer as the sidecar last described it.

    ``state`` is Agones' state name (``Scheduled``, ``RequestReady``,
    ``Ready``, ``Reserved``, ``Allocated``, ``Shutdown``...); ``labels`` and
    ``annotations`` are the GameServer's (an allocation often passes the
    match's details as annotations); ``counters`` maps a Counter's name to
    ``(count, capacity)``.
    """

    name: str = ""
    namespace: str = ""
    state: str = ""
    address: str = ""
    ports: tuple[tuple[str, int], ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    counters: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)

    @property
    def allocated(self) -> bool:
        """Players have been (or are being) sent here: the state is ``Allocated``."""
        return self.state == ALLOCATED

    @property
    def reserved(self) -> bool:
        """The state is ``Reserved``: kept from scale-down and allocation for a while."""
        return self.state == RESERVED

    @classmethod
    def from_json(cls, body: Any) -> GameServerState:
        """The state in a ``GameServer`` JSON object (fields of the wrong type are left out)."""
        if not isinstance(body, Mapping):
            return cls()
        meta = body.get("object_meta")
        meta = meta if isinstance(meta, Mapping) else {}
        status = body.get("status")
        status = status if isinstance(status, Mapping) else {}
        return cls(
            name=_text(meta.get("name")),
            namespace=_text(meta.get("namespace")),
            state=_text(status.get("state")),
            address=_text(status.get("address")),
            ports=_ports(status.get("ports")),
            labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")),
            counters=_counters(status.get("counters")),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (status shows it)."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "state": self.state,
            "address": self.address,
            "ports": [{"name": name, "port": port} for name, port in self.ports],
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "counters": {
                name: {"count": count, "capacity": capacity}
                for name, (count, capacity) in self.counters.items()
            },
        }
