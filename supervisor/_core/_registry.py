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

import attrs

from .._errors import ConfigError, DependencyError, PluginError
from .._logging import get_logger
from ._context import Context
from ._kernel import Kernel
from ._plugins import build, discover, inspect_system, is_import_string, load_target
from ._plugins import order as dependency_order
from ._safecall import Breaker
from ._slots import Slot

__all__ = ["register", "register_from_config"]


def _default_name(factory: Any, target: str) -> str:
    """The name an import-string system runs under: its ``name`` default, else its class name."""
    if attrs.has(factory):
        field = attrs.fields_dict(factory).get("name")
        default = field.default if field is not None else None
    else:
        default = getattr(factory, "name", None)
    if isinstance(default, str) and default:
        return default
    return target.rpartition(":")[2].lower()


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
    found = discover()
    enabled = cfg.enabled if cfg.enabled is not None else tuple(found)
    source = k.config.source
    configured: set[str] = set()
    for entry in enabled:
        options = dict(cfg.options.get(entry, {}))
        target = options.pop("use", None) or entry
        if is_import_string(target):
            factory = load_target(target, system=entry)
            origin = f"import string ({target})"
            name = entry
            if is_import_string(entry):
                name = _default_name(factory, target)
                options = dict(cfg.options.get(name, {}))
                options.pop("use", None)
                configured.add(name)
        elif target in found:
            src = found[target]
            factory = src.load()
            origin = f"{src.origin}: {src.target}"
            name = entry
        else:
            known = ", ".join(sorted(found)) or "none installed"
            raise ConfigError(
                f"unknown system {target!r} (discoverable: {known}; or use 'pkg.module:Class')",
                source=source,
                key="systems.enabled",
            )
        configured.add(entry)
        # The same factory builds it now and again on every restart.
        make = functools.partial(build, name, factory, options, source=source)
        register(k, make(), name=name, origin=origin, factory=make)
    try:
        dependency_order(s.info for s in k.slots.values())
    except DependencyError as exc:
        # Found here, before anything starts, and reported against the config.
        raise ConfigError(str(exc), source=source, key="systems") from None
    for name in cfg.options:
        if name not in configured:
            raise ConfigError(
                "configures a system that is not enabled (add it to [systems] enabled)",
                source=source,
                key=f"systems.{name}",
            )
