"""Registration: a system instance becomes a slot; the config's ``[systems]`` become instances.

Hooks are resolved once, here (``inspect_system``), so the hot path makes no
lookup. A system from the config gets a factory that builds it again on
every restart.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from .._errors import ConfigError, DependencyError, PluginError
from .._logging import get_logger
from ._context import Context
from ._kernel import Kernel
from ._plugins import build, inspect_system, plan_systems
from ._plugins import order as dependency_order
from ._safecall import Breaker
from ._slots import Slot

__all__ = ["register", "register_from_config"]


def register(
    k: Kernel,
    system: Any,
    *,
    name: str | None,
    origin: str,
    factory: Callable[[], Any] | None,
) -> None:
    """Add ``system`` to the table (see ``Supervisor.register``)."""
    if k.run.running:
        raise PluginError("cannot register while running", system=name)
    if name is None:
        name = getattr(system, "name", None) or type(system).__name__.lower()
    if name in k.slots:
        raise PluginError("a system of this name is already registered", system=name)
    info = inspect_system(system, name, origin)
    slot = Slot(
        name=name,
        system=system,
        info=info,
        tick_fn=info.tick.fn,
        tick_async=info.tick.is_async,
        factory=factory,
        breaker=Breaker.of(k.active.recovery),
    )
    slot.ctx = Context(k, slot, get_logger(system=name))
    slot.offset = len(k.slots)
    k.slots[name] = slot
    # The system's own name, when it keeps one, is the name it runs under.
    if getattr(system, "name", name) != name:
        with contextlib.suppress(AttributeError, TypeError):
            system.name = name


def register_from_config(k: Kernel) -> None:
    """Register the systems named by the config (see ``Supervisor.from_config``)."""
    cfg = k.active.systems
    source = k.config.source
    for plan in plan_systems(cfg.enabled, cfg.options, source=source):
        # The same factory builds it now and again on every restart.
        make = functools.partial(build, plan.name, plan.factory, plan.options, source=source)
        register(k, make(), name=plan.name, origin=plan.origin, factory=make)
    try:
        dependency_order(s.info for s in k.slots.values())
    except DependencyError as exc:
        # Found here, before anything starts, and reported against the config.
        raise ConfigError(str(exc), source=source, key="systems") from None
