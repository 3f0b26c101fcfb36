"""supervisor: a fixed-tick game-server supervisor runtime on trio.

The layers, each importing only the ones below it (``tests/test_layers.py``
enforces it): the runtime core ``_core`` -- the tick loop, SafeCall, phases,
snapshots, config -- imports no server, CLI or metrics library; the HTTP
server ``_server`` (API, listener, audit, Prometheus exposition) reaches the
core through the ``Controlled`` protocol of ``_core._control``; the command
line ``_cli`` sits on top. The leaves ``_errors``, ``_files``, ``_address``
and ``_logging`` are shared by all of them. A plugin author imports from
``supervisor`` (and ``supervisor.testing``) and nowhere else: ``System`` says
what a game system may define, ``Context`` is what it sees.

The names of the tick loop (``Supervisor`` and its summaries), SafeCall's
records, ``MachineFacts`` and ``configure_logging`` are loaded on first use
(PEP 562), so ``supervisor --help`` and the client commands, which import
``supervisor._cli._main``, load neither trio, psutil, msgpack nor structlog
(``tests/test_cli_imports.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._core._config import Config
from ._core._config_agones import AgonesConfig
from ._core._config_alerts import AlertRule, AlertsConfig
from ._core._config_flags import ExperimentConfig, FlagConfig
from ._core._config_fleet import FleetConfig
from ._core._config_sections import (
    ApiConfig,
    ErrorsConfig,
    FeaturesConfig,
    LoggingConfig,
    Profile,
    RecoveryConfig,
    SloConfig,
    SupervisorConfig,
    SystemsConfig,
    TokenConfig,
    WatchdogConfig,
)
from ._core._config_snapshots import SnapshotsConfig
from ._core._context import Context
from ._core._control import (
    Caller,
    LifecycleEvent,
    ReadinessCheck,
    ReadinessReport,
    Refused,
    Unknown,
)
from ._core._flags import FlagChange, Flags, UnknownExperimentError, UnknownFlagError
from ._core._histogram import HistogramStats, WindowStats
from ._core._phase import Phase
from ._core._system import System
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
    from ._agones._state import GameServerState
    from ._core._profiles import MachineFacts
    from ._core._runtime import Supervisor
    from ._core._safecall import ErrorGroup, ErrorRecord
    from ._core._views import (
        ErrorView,
        PhaseChange,
        RestartResult,
        RunSummary,
        ShutdownResult,
        SnapshotStatus,
        SnapshotTaken,
        StatusView,
        SupervisorStats,
        SystemAction,
        SystemStats,
    )
    from ._core._windows import Windowed
    from ._logging import configure_logging

#: Public names loaded on first use: {name: module}.
_LAZY = {
    "configure_logging": "._logging",
    "ErrorGroup": "._core._safecall",
    "ErrorRecord": "._core._safecall",
    "MachineFacts": "._core._profiles",
    "PhaseChange": "._core._views",
    "RestartResult": "._core._views",
    "RunSummary": "._core._views",
    "ShutdownResult": "._core._views",
    "SnapshotStatus": "._core._views",
    "StatusView": "._core._views",
    "ErrorView": "._core._views",
    "GameServerState": "._agones._state",
    "Supervisor": "._core._runtime",
    "SupervisorStats": "._core._views",
    "SystemStats": "._core._views",
    "SystemAction": "._core._views",
    "SnapshotTaken": "._core._views",
    "Windowed": "._core._windows",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AgonesConfig",
    "AlertRule",
    "AlertsConfig",
    "ApiConfig",
    "Caller",
    "Config",
    "ConfigError",
    "Context",
    "DependencyError",
    "ErrorGroup",
    "ErrorRecord",
    "ErrorView",
    "ErrorsConfig",
    "ExperimentConfig",
    "FeaturesConfig",
    "FlagChange",
    "FlagConfig",
    "Flags",
    "FleetConfig",
    "GameServerState",
    "HistogramStats",
    "LifecycleEvent",
    "LoggingConfig",
    "MachineFacts",
    "Phase",
    "PhaseChange",
    "PhaseError",
    "PluginError",
    "Profile",
    "ReadinessCheck",
    "ReadinessReport",
    "RecoveryConfig",
    "Refused",
    "RestartResult",
    "RunSummary",
    "ShutdownResult",
    "SloConfig",
    "SnapshotStatus",
    "SnapshotTaken",
    "SnapshotsConfig",
    "StartRefused",
    "StartupError",
    "StatusView",
    "StepInterrupted",
    "StepTimeout",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorStats",
    "System",
    "SystemAction",
    "SystemStats",
    "SystemsConfig",
    "TokenConfig",
    "Unknown",
    "UnknownExperimentError",
    "UnknownFlagError",
    "WatchdogConfig",
    "WindowStats",
    "Windowed",
    "configure_logging",
]
