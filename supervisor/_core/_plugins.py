"""Game systems as plugins: discovery, loading, validation and ordering.

A system is found three ways, all ending in the same validation: an entry
point in the group ``supervisor.systems``, an import string
(``pkg.module:Class``), or an object handed to ``Supervisor.register``.
Which hooks a system has, and whether each is async, is resolved here once,
at registration, so the tick loop never looks a hook up.
"""

from __future__ import annotations

import graphlib
import heapq
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, Literal, Union

import attrs

from .._errors import ConfigError, DependencyError, PluginError, SupervisorError
from ._safecall import safe_message, safe_type_name

__all__ = [
    "ENTRY_POINT_GROUP",
    "Hook",
    "PlannedSystem",
    "SystemInfo",
    "SystemSource",
    "discover",
    "order",
    "plan_systems",
]

ENTRY_POINT_GROUP = "supervisor.systems"

#: Hooks a system may define besides ``tick``; each may be sync or async.
OPTIONAL_HOOKS = ("start", "stop", "snapshot", "restore", "recover", "health")


@attrs.frozen
class SystemSource:
    """Where a system class comes from: an entry point or an import string."""

    name: str
    target: str
    origin: str  # "entry point (dist)" | "import string" | "code"

    def load(self) -> Any:
        """Import and return the class (or factory) this source names.

        Raises:
            PluginError: the module or attribute cannot be imported.
        """
        return load_target(self.target, system=self.name)


def load_target(target: str, *, system: str | None = None) -> Any:
    """Import ``pkg.module:attr`` (or ``pkg.module.attr``) and return the attribute.

    Raises:
        PluginError: the string is malformed, or importing it fails.
    """
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise PluginError(
            f"{target!r} is not an import string like 'pkg.module:Class'", system=system
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error at import time is the plugin's, not ours
        raise PluginError(
            f"cannot import {module_name!r}: {safe_type_name(exc)}: {safe_message(exc)}",
            system=system,
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{module_name!r} has no attribute {attr!r}", system=system) from None
    return obj


def discover() -> dict[str, SystemSource]:
    """Every system declared in the ``supervisor.systems`` entry-point group, by name."""
    found: dict[str, SystemSource] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        found.setdefault(ep.name, SystemSource(ep.name, ep.value, f"entry point ({dist})"))
    return found


def is_import_string(text: str) -> bool:
    """True when ``text`` looks like ``pkg.module:Class`` rather than a plain name."""
    return ":" in text


@attrs.frozen
class PlannedSystem:
    """One enabled system, resolved from the config but not built yet."""

    name: str
    factory: Any
    options: Mapping[str, Any]
    origin: str


def plan_systems(
    enabled: Iterable[str] | None,
    options: Mapping[str, Mapping[str, Any]],
    *,
    source: str = "<config>",
    found: Mapping[str, SystemSource] | None = None,
    problems: list[SupervisorError] | None = None,
) -> list[PlannedSystem]:
    """Resolve the ``[systems]`` section to factories and arguments; build nothing.

    With no ``enabled`` list every discovered system is enabled. Each error
    names the place to fix: ``use = "nosuch"`` is blamed on
    ``[systems.NAME] use``, an unknown name in the list on ``[systems] enabled``,
    a table for a system that is not enabled on that table.

    Args:
        problems: when given, every error is appended to it (and its system
            left out) instead of raised, so ``config check`` reports them all.

    Raises:
        ConfigError: an unknown system, or a table for one not enabled.
        PluginError: an import string or entry point cannot be imported.
    """
    found = discover() if found is None else found
    plans: list[PlannedSystem] = []
    configured: set[str] = set()
    for entry in tuple(found) if enabled is None else enabled:
        configured.add(entry)
        try:
            plan = _plan(entry, options, source, found)
        except SupervisorError as exc:
            if problems is None:
                raise
            problems.append(exc)
            continue
        configured.add(plan.name)
        plans.append(plan)
    for name in options:
        if name not in configured:
            unused = ConfigError(
                "configures a system that is not enabled (add it to [systems] enabled)",
                source=source,
                key=f"systems.{name}",
            )
            if problems is None:
                raise unused
            problems.append(unused)
    return plans


def _plan(
    entry: str,
    options: Mapping[str, Mapping[str, Any]],
    source: str,
    found: Mapping[str, SystemSource],
) -> PlannedSystem:
    """One entry of the enabled list, resolved (see :func:`plan_systems`)."""
    args = dict(options.get(entry, {}))
    use = args.pop("use", None)
    target = use or entry
    if is_import_string(target):
        factory = load_target(target, system=entry)
        name = entry
        if is_import_string(entry):
            name = default_name(factory, target)
            args = {k: v for k, v in options.get(name, {}).items() if k != "use"}
        return PlannedSystem(name, factory, args, f"import string ({target})")
    if target in found:
        src = found[target]
        return PlannedSystem(entry, src.load(), args, f"{src.origin}: {src.target}")
    known = ", ".join(sorted(found)) or "none installed"
    raise ConfigError(
        f"unknown system {target!r} (discoverable: {known}; or use 'pkg.module:Class')",
        source=source,
        key=f"systems.{entry}.use" if use else "systems.enabled",
    )


def default_name(factory: Any, target: str) -> str:
    """The name an import-string system runs under: its ``name`` default, else its class name."""
    if attrs.has(factory):
        field = attrs.fields_dict(factory).get("name")
        default = field.default if field is not None else None
    else:
        default = getattr(factory, "name", None)
    if isinstance(default, str) and default:
        return default
    return target.rpartition(":")[2].lower()


def build(name: str, factory: Any, kwargs: Mapping[str, Any], *, source: str = "<config>") -> Any:
    """Build a system by calling ``factory(**kwargs)``, checking the arguments first.

    Raises:
        ConfigError: an argument is unknown (nearest suggested), a required
            one is missing, or the constructor rejects a value.
    """
    if not callable(factory):
        raise PluginError(f"{factory!r} is not a class or callable", system=name)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        params = sig.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        accepted = [
            n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        for key in kwargs:
            if key not in params and not takes_any:
                import difflib  # noqa: PLC0415 - loaded only to word an error

                close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else (f"; it takes: {', '.join(accepted)}" if accepted else "; it takes none")
                )
                raise ConfigError(
                    f"system {name!r} has no argument {key!r}{hint}",
                    source=source,
                    key=f"systems.{name}.{key}",
                )
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in kwargs
        ]
        if missing:
            raise ConfigError(
                f"system {name!r} needs argument {missing[0]!r}",
                source=source,
                key=f"systems.{name}",
            )
        check_argument_types(name, factory, kwargs, source=source)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        # attrs validators raise TypeError(message, attribute, type, value):
        # the first argument is the sentence a user should read.
        # Never the plugin's own __str__ unguarded: it may raise or hang.
        args = BaseException.__dict__["args"].__get__(exc)  # not a property of theirs
        detail = (
            str.__str__(args[0])
            if type(args) is tuple and len(args) > 1 and isinstance(args[0], str)
            else safe_message(exc)
        )
        raise ConfigError(
            f"system {name!r} rejected its arguments: {detail}",
            source=source,
            key=f"systems.{name}",
        ) from None


# ------------------------------------------------------------ argument types


def check_argument_types(
    name: str, factory: Any, kwargs: Mapping[str, Any], *, source: str = "<config>"
) -> None:
    """Check each argument against the constructor's annotation (or attrs field type).

    A system built with ``day_seconds = "ten"`` would start and then raise
    ``TypeError`` every tick; refused here, before anything starts. Only the
    shapes a TOML value can take are judged (numbers, strings, booleans,
    lists, tables, unions, ``Literal``); an annotation this cannot read
    (a class of the plugin's own, a string it cannot resolve) lets the
    value through for the constructor to judge.

    Raises:
        ConfigError: a value does not match, naming the system, the argument,
            the expected and the given type.
    """
    hints = _argument_hints(factory)
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None or _matches(value, hint):
            continue
        raise ConfigError(
            f"system {name!r} argument {key!r} expects {_describe(hint)}, "
            f"got {_toml_type(value)} ({_short(value)})",
            source=source,
            key=f"systems.{name}.{key}",
        )


def _argument_hints(factory: Any) -> dict[str, Any]:
    """The resolved annotation of each constructor parameter that has a readable one.

    Each annotation is resolved on its own, so one that cannot be (a name
    imported only under TYPE_CHECKING, a class local to a function) leaves
    that parameter to the constructor and the others still checked. The
    class itself is not touched (``attrs.resolve_types`` would write to it).
    An attrs field with a converter is left to its converter.
    """
    if attrs.has(factory):
        # A field with a converter takes what the converter takes, not its type.
        raw = {
            f.alias: f.type
            for f in attrs.fields(factory)
            if f.init and f.type is not None and f.converter is None
        }
        module = sys.modules.get(factory.__module__)
        globalns = vars(module) if module is not None else {}
    else:
        target = (
            inspect.getattr_static(factory, "__init__") if isinstance(factory, type) else factory
        )
        raw = dict(getattr(target, "__annotations__", None) or {})
        globalns = getattr(target, "__globals__", {})
    hints = {}
    for name, annotation in raw.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation}, __globals__=globalns)
        try:
            hints[name] = typing.get_type_hints(holder)[name]
        except Exception:  # unresolvable: leave this one to the constructor
            continue
    hints.pop("return", None)
    return hints


def _matches(value: Any, hint: Any) -> bool:
    """True when ``value`` (as TOML gives it) fits ``hint``; True when ``hint`` is unknown."""
    if hint is Any or hint is object:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is typing.Annotated:
        return _matches(value, args[0])
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin in (list, tuple, set, frozenset, Sequence, Iterable) or hint in (list, tuple):
        return _matches_sequence(value, origin, args)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping) and all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items() if args
        )
    return True


def _matches_sequence(value: Any, origin: Any, args: tuple[Any, ...]) -> bool:
    if not isinstance(value, list | tuple):
        return False
    if not args:
        return True
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return len(args) == len(value) and all(map(_matches, value, args))
    return all(_matches(item, args[0]) for item in value)


def _describe(hint: Any) -> str:
    """The annotation as a person reads it: ``float``, ``list[str]``, ``int | None``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@attrs.frozen
class Hook:
    """A resolved hook: the bound callable and whether it must be awaited."""

    fn: Callable[..., Any]
    is_async: bool


@attrs.frozen
class SystemInfo:
    """What registration learned about a system, once."""

    name: str
    critical: bool
    depends_on: tuple[str, ...]
    priority: int
    origin: str
    tick: Hook
    hooks: Mapping[str, Hook]


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def inspect_system(system: Any, name: str, origin: str) -> SystemInfo:
    """Validate ``system`` and resolve its hooks.

    Raises:
        PluginError: no callable ``tick``, a hook that is not callable, or
            ``critical`` / ``depends_on`` / ``priority`` of the wrong type.
    """
    if not name or not isinstance(name, str):
        raise PluginError(f"a system needs a non-empty name, got {name!r}")
    tick = getattr(system, "tick", None)
    if not callable(tick):
        raise PluginError("has no callable tick(ctx) method", system=name)
    hooks: dict[str, Hook] = {}
    for hook in OPTIONAL_HOOKS:
        fn = getattr(system, hook, None)
        if fn is None:
            continue
        if not callable(fn):
            raise PluginError(f"{hook!r} is not callable", system=name)
        hooks[hook] = Hook(fn, _is_async(fn))
    critical = getattr(system, "critical", False)
    if not isinstance(critical, bool):
        raise PluginError(f"'critical' must be True or False, got {critical!r}", system=name)
    deps = getattr(system, "depends_on", ())
    if isinstance(deps, str) or not isinstance(deps, Iterable):
        raise PluginError(f"'depends_on' must be a tuple of names, got {deps!r}", system=name)
    deps = tuple(deps)
    if not all(isinstance(d, str) for d in deps):
        raise PluginError(f"'depends_on' must be a tuple of names, got {deps!r}", system=name)
    priority = getattr(system, "priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PluginError(f"'priority' must be an integer, got {priority!r}", system=name)
    return SystemInfo(
        name=name,
        critical=critical,
        depends_on=deps,
        priority=priority,
        origin=origin,
        tick=Hook(tick, _is_async(tick)),
        hooks=hooks,
    )


def order(infos: Iterable[SystemInfo]) -> list[str]:
    """Names in start/tick order: dependencies first, then lower priority, then name.

    Raises:
        DependencyError: a system depends on one that is not registered, or
            the dependencies form a cycle (the cycle is named).
    """
    by_name = {i.name: i for i in infos}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for info in by_name.values():
        for dep in info.depends_on:
            if dep not in by_name:
                others = [n for n in by_name if n != info.name]
                import difflib  # noqa: PLC0415 - loaded only to word an error

                close = difflib.get_close_matches(dep, others, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise DependencyError(
                    f"depends on {dep!r}, which is not enabled{hint}", system=info.name
                )
        sorter.add(info.name, *info.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = tuple(exc.args[1])
        raise DependencyError(
            "dependency cycle: " + " -> ".join(cycle), system=cycle[0], cycle=cycle
        ) from None
    heap: list[tuple[int, str]] = []
    out: list[str] = []
    while sorter.is_active():
        for ready in sorter.get_ready():
            heapq.heappush(heap, (by_name[ready].priority, ready))
        _, name = heapq.heappop(heap)
        out.append(name)
        sorter.done(name)
    return out
