"""supervisor: a fixed-tick game-server supervisor runtime on trio.

The core -- the tick loop, SafeCall, phases and snapshots (``_runtime``,
``_safecall``, ``_timing``, ``_phase``, ``_snapshot``) -- imports nothing
from the layers built on it: the CLI (``_cli``, ``_client``, ``_live``) and
the HTTP API (``_api``, ``_audit``), which reach it through ``sup.services``
and the ``Controlled`` protocol of ``_control``. It drives pure helpers
(the optimizer's decision engine, readiness, redaction) and loads the
Prometheus collector (``_metrics``) only when first scraped. A plugin author
imports from ``supervisor`` (and ``supervisor.testing``) and nowhere else.

The names of the tick loop (``Supervisor`` and its summaries), SafeCall's
records and ``configure_logging`` are loaded on first use (PEP 562), so
``supervisor --help`` and the client commands, which import
``supervisor._cli._main``, load neither trio, psutil, msgpack nor structlog.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._core._config import Config, Profile
from ._core._context import Context
from ._core._histogram import HistogramStats
from ._core._phase import Phase
from ._errors import (
    ConfigError,
    DependencyError,
    PhaseError,
    PluginError,
    StartRefused,
    StartupError,
    StepInterrupted,
    StepTimeout,
    SupervisorError,
)

if TYPE_CHECKING:
    from ._core._runtime import Supervisor
    from ._core._safecall import ErrorGroup, ErrorRecord
    from ._core._views import RunSummary, SupervisorStats, SystemStats
    from ._logging import configure_logging

#: Public names loaded on first use: {name: module}.
_LAZY = {
    "configure_logging": "._logging",
    "ErrorGroup": "._core._safecall",
    "ErrorRecord": "._core._safecall",
    "RunSummary": "._core._views",
    "Supervisor": "._core._runtime",
    "SupervisorStats": "._core._views",
    "SystemStats": "._core._views",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Config",
    "ConfigError",
    "Context",
    "DependencyError",
    "ErrorGroup",
    "ErrorRecord",
    "HistogramStats",
    "Phase",
    "PhaseError",
    "PluginError",
    "Profile",
    "RunSummary",
    "StartRefused",
    "StartupError",
    "StepInterrupted",
    "StepTimeout",
    "Supervisor",
    "SupervisorError",
    "SupervisorStats",
    "SystemStats",
    "configure_logging",
]
