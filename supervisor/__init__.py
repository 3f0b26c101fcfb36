"""supervisor: a fixed-tick game-server supervisor runtime on trio.

The core -- the tick loop, SafeCall, phases and snapshots (``_supervisor``,
``_safecall``, ``_timing``, ``_phase``, ``_snapshot``) -- imports nothing
from the layers built on it: the CLI (``_cli``, ``_client``, ``_live``) and
the HTTP API (``_api``, ``_audit``), which reach it through ``sup.services``
and the ``Controlled`` protocol of ``_control``. It drives pure helpers
(the optimizer's decision engine, readiness, redaction) and loads the
Prometheus collector (``_metrics``) only when first scraped. A plugin author
imports from ``supervisor`` (and ``supervisor.testing``) and nowhere else.
"""

from ._config import Config, Profile
from ._context import Context
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
from ._histogram import HistogramStats
from ._logging import configure_logging
from ._phase import Phase
from ._safecall import ErrorGroup, ErrorRecord
from ._supervisor import RunSummary, Supervisor, SupervisorStats, SystemStats

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
