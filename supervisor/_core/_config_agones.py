"""The ``[agones]`` section: the Agones SDK sidecar a supervisor reports to (CONTRACT §12).

Checked on construction like every section. Whether the link is on is
decided with the environment (``AGONES_SDK_HTTP_PORT`` set by Agones turns
it on, see :meth:`AgonesConfig.sdk_port`); the link itself lives in
``supervisor._agones``, a capability above the core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final

import attrs

from .._errors import ConfigError
from ._config_fields import Section, setting

__all__ = ["DEFAULT_SDK_PORT", "SDK_PORT_VARIABLE", "AgonesConfig"]

#: The variable Agones sets in a game server's container, and the port it defaults to.
SDK_PORT_VARIABLE: Final = "AGONES_SDK_HTTP_PORT"
DEFAULT_SDK_PORT: Final = 9358
#: An Agones Counter name: a Kubernetes map key we keep to label-like characters.
_COUNTER: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _counter_name(instance: object, field: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            f"expected a string, got {type(value).__name__}", key=f"agones.{field.name}"
        )
    if value and _COUNTER.fullmatch(value) is None:
        raise ConfigError(
            f"{value!r} is not a counter name (letters, digits, '-', '_', '.'; at most 63)",
            key=f"agones.{field.name}",
        )


@attrs.frozen(kw_only=True)
class AgonesConfig(Section):
    """The ``[agones]`` section.

    ``health_interval`` is how often a Health ping goes out while the tick
    loop makes progress; Agones' ``health.periodSeconds`` should be at least
    twice it (``deploy/agones/README.md`` explains the arithmetic with
    ``failureThreshold`` and our watchdog).
    """

    section: ClassVar[str] = "agones"

    #: On without ``AGONES_SDK_HTTP_PORT`` (which turns it on by itself).
    enabled: bool = setting(False, bool)
    #: The sidecar's HTTP port; 0 reads ``AGONES_SDK_HTTP_PORT``, else 9358.
    port: int = setting(0, int, min=0, max=65535)
    #: Seconds between Health pings while ticks go on.
    health_interval: float = setting(2.0, float, min=0.05, max=300.0)
    #: Seconds one SDK request may take before it counts as failed.
    timeout: float = setting(2.0, float, min=0.05, max=60.0)
    #: Longest wait between retries of a failing sidecar (the backoff doubles up to it).
    backoff_max: float = setting(5.0, float, min=0.05, max=300.0)
    #: The gauge (``ctx.report``) whose value is written to the players Counter.
    players_gauge: str = setting("players", str)
    #: The beta Counter the players go to ("" = none).
    players_counter: str = attrs.field(
        default="players", metadata={"kind": str}, validator=_counter_name
    )
    #: Set the ``phase`` and ``profile`` labels (``agones.dev/sdk-phase``...).
    labels: bool = setting(True, bool)
    #: Call Shutdown once an emergency's state is preserved (off: stay up for an operator).
    shutdown_on_emergency: bool = setting(True, bool)

    def active(self, env: Mapping[str, str]) -> bool:
        """Whether the link is on: ``enabled``, or Agones named its sidecar in ``env``."""
        return self.enabled or bool(env.get(SDK_PORT_VARIABLE))

    def sdk_port(self, env: Mapping[str, str]) -> int:
        """The sidecar's port: ``port``, else ``AGONES_SDK_HTTP_PORT``, else 9358.

        Raises:
            ConfigError: ``AGONES_SDK_HTTP_PORT`` is not a port number.
        """
        if self.port:
            return self.port
        text = env.get(SDK_PORT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_SDK_PORT
        # ASCII digits only, 5 at most: int() takes "٣٠٠٠" and chokes on 5,000 digits.
        if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) <= 65535:
            raise ConfigError(
                f"{text[:40]!r} is not a port number (1-65535)", key=SDK_PORT_VARIABLE
            )
        return int(text)
