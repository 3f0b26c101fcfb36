"""The public surface: ``supervisor`` and ``supervisor.testing`` export exactly what a user needs.

Modelled on trio's ``src/trio/_tests/test_exports.py``. A plugin author
imports from ``supervisor`` (and ``supervisor.testing``) and nowhere else, so:

* ``__all__`` is exactly the public names (``PUBLIC`` below: changing the
  surface is a deliberate edit of this test), sorted, each importable and
  each documented;
* every other name a public module defines itself is private (``_name``);
* a public name never leaks a private one: every ``supervisor`` class named
  in a public signature, field or ``Raises:`` section is itself exported,
  or a user could not write the annotation or catch the exception without
  importing a private module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import supervisor
import supervisor.testing

#: The public names of ``supervisor``; the surface changes only by editing this set.
PUBLIC = {
    "SnapshotTaken",
    "SnapshotsConfig",
    "SystemAction",
    "Unknown",
    "Windowed",
    "WindowStats",  # issue 10's operator
    "ExperimentConfig",  # issue 13: flags and experiments
    "FlagConfig",
    "FlagChange",
    "Flags",
    "UnknownExperimentError",
    "UnknownFlagError",
    "StatusView",
    "SnapshotStatus",
    "ShutdownResult",
    "RestartResult",
    "PhaseChange",
    "ErrorView",
    "AgonesConfig",  # issue 14: Config.agones
    "GameServerState",  # issue 14: what a system's ``agones_gameserver`` holds
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
    "ErrorsConfig",
    "FeaturesConfig",
    "FleetConfig",
    "HistogramStats",
    "LifecycleEvent",
    "LoggingConfig",
    "MachineFacts",
    "Phase",
    "PhaseError",
    "PluginError",
    "Profile",
    "ReadinessCheck",
    "ReadinessReport",
    "RecoveryConfig",
    "Refused",
    "RunSummary",
    "SloConfig",
    "StartRefused",
    "StartupError",
    "StepInterrupted",
    "StepTimeout",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorStats",
    "System",
    "SystemStats",
    "SystemsConfig",
    "TokenConfig",
    "WatchdogConfig",
    "configure_logging",
}

#: The public names of ``supervisor.testing``.
TESTING = {
    "FIXED_FACTS",
    "TestRun",
    "Ticking",
    "capture_logs",
    "make_supervisor",
    "run_systems",
    "run_systems_async",
}

PUBLIC_MODULES = (supervisor, supervisor.testing)


def _exported() -> dict[str, Any]:
    """Every exported name of the public modules, with its object."""
    return {name: getattr(m, name) for m in PUBLIC_MODULES for name in m.__all__}


class TestAll:
    """``__all__`` of each public module."""

    @pytest.mark.parametrize(
        ("module", "expected"), [(supervisor, PUBLIC), (supervisor.testing, TESTING)]
    )
    def test_all_is_exactly_the_public_names(
        self, module: types.ModuleType, expected: set[str]
    ) -> None:
        """``__all__`` lists the expected names, once each, sorted (easy to review)."""
        assert sorted(module.__all__) == sorted(expected)
        assert module.__all__ == sorted(module.__all__)

    @pytest.mark.parametrize("module", PUBLIC_MODULES)
    def test_every_name_defined_here_is_exported_or_private(self, module: types.ModuleType) -> None:
        """A name the module binds itself (class, def, assignment) is exported or starts with ``_``.

        Read from the source with ``ast``, so an import (``Any``, ``attrs``)
        is not mistaken for a definition, and a lazily loaded name counts.
        """
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        defined = set()
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        public = {n for n in defined if not n.startswith("_")}
        assert public <= set(module.__all__)

    def test_nothing_else_looks_public(self) -> None:
        """Besides ``__all__``, the package shows only imports and the ``testing`` module.

        A class or function of ``supervisor`` reachable as ``supervisor.X``
        must be one of the public names.
        """
        extra = {
            name
            for name in dir(supervisor)
            if not name.startswith("_") and name not in supervisor.__all__
        }
        ours = {
            name
            for name in extra
            if getattr(getattr(supervisor, name), "__module__", "").startswith("supervisor")
        }
        assert ours == set()

    def test_unknown_name_is_an_attribute_error(self) -> None:
        """The lazy ``__getattr__`` refuses a name it does not know, as a module should."""
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            _ = supervisor.Nope


class TestEachName:
    """Every exported name, one by one."""

    @pytest.mark.parametrize("name", sorted(PUBLIC))
    def test_importable_from_a_fresh_interpreter(self, name: str) -> None:
        """``from supervisor import NAME`` works on its own (the lazy ones included)."""
        out = subprocess.run(
            [sys.executable, "-c", f"from supervisor import {name}; print({name}.__name__)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == name

    @pytest.mark.parametrize("name", sorted(_exported()))
    def test_documented(self, name: str) -> None:
        """A class or function has its own docstring; a constant a ``#:`` comment above it."""
        obj = _exported()[name]
        if inspect.isclass(obj) or inspect.isroutine(obj):
            # obj.__doc__, not inspect.getdoc: a class does not inherit its parent's.
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
            return
        module = next(m for m in PUBLIC_MODULES if name in m.__all__)
        source = inspect.getsource(module).splitlines()
        line = next(i for i, text in enumerate(source) if text.startswith(f"{name} ="))
        assert source[line - 1].startswith("#:"), f"{name} has no #: comment"

    @pytest.mark.parametrize("name", sorted(_exported()))
    def test_lives_in_a_private_module(self, name: str) -> None:
        """Implementation modules start with ``_``; the public ones only re-export.

        (``supervisor.testing`` defines its own helpers: it is their home.)
        """
        obj = _exported()[name]
        module = str(getattr(obj, "__module__", None) or type(obj).__module__)
        if module == "supervisor.testing":
            return
        assert module.startswith("supervisor._"), module


def _public_members(obj: Any) -> Iterator[tuple[str, Any]]:
    """``obj`` itself and, for a class, its constructor, public methods and properties."""
    yield obj.__qualname__, obj
    if not inspect.isclass(obj):
        return
    for attr, value in vars(obj).items():
        if attr.startswith("_") and attr != "__init__":
            continue
        fn = value
        if isinstance(value, property):
            fn = value.fget
        elif isinstance(value, staticmethod | classmethod):
            fn = value.__func__
        if inspect.isfunction(fn):
            yield f"{obj.__qualname__}.{attr}", fn


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RAISES = re.compile(r"^\s*Raises:\s*$((?:\n\s+\S.*$)+)", re.MULTILINE)
_RAISED = re.compile(r"^\s+([A-Z][A-Za-z0-9_]*):", re.MULTILINE)


def _mentioned(qualname: str, member: Any) -> Iterator[tuple[str, str]]:
    """``(where, name)`` of every identifier in ``member``'s annotations and ``Raises:``."""
    annotations: list[str] = []
    if inspect.isclass(member):
        for klass in reversed(member.__mro__):
            annotations += [str(a) for a in vars(klass).get("__annotations__", {}).values()]
    else:
        annotations += [str(a) for a in getattr(member, "__annotations__", {}).values()]
    for text in annotations:
        for ident in _IDENT.findall(text):
            yield f"{qualname} annotation", ident
    for block in _RAISES.findall(inspect.getdoc(member) or ""):
        for ident in _RAISED.findall(block):
            yield f"{qualname} Raises", ident


def _supervisor_classes() -> dict[str, set[str]]:
    """Every class defined in a ``supervisor`` module: name -> the modules defining one."""
    found: dict[str, set[str]] = {}
    for module in _supervisor_modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                found.setdefault(name, set()).add(module.__name__)
    return found


def _supervisor_modules() -> list[types.ModuleType]:
    root = Path(supervisor.__file__).parent
    names = [
        "supervisor." + ".".join(p.relative_to(root).with_suffix("").parts)
        for p in sorted(root.rglob("*.py"))
        if p.name != "__init__.py"
    ]
    return [importlib.import_module(n) for n in names]


#: Classes of ``supervisor`` a public signature may name without exporting
#: them, each with the reason a user never needs to import it.
NOT_FOR_USERS: dict[str, str] = {
    "Reader": "what ctx.variant is bound to: Flags.reader makes one per system at "
    "registration; a plugin calls ctx.variant and never names it",
    "Renderer": "what configure_logging returns so that `run` can switch the log format "
    "to JSON on entering PRODUCTION; a user keeps the object, never builds or names it",
    "_Slot": "the slot Context(host, slot, log) is built with, by the supervisor",
    "ContextHost": "Context(host, slot, log) is built by the supervisor, one per system; a "
    "plugin receives its ctx and never constructs one",
    "RunState": "Supervisor.run_state: the state of the current run, read (reason, stopped), "
    "made fresh by run(); never built or named by a user",
    "Optimizer": "Supervisor.optimizer: read for its statistics() and events (plain views); "
    "built by the supervisor from [features] optimizer",
    "Histogram": "Supervisor.snapshot_stall/snapshot_write: read through .stats(), which "
    "returns the exported HistogramStats",
}


def test_no_public_name_leaks_a_private_one() -> None:
    """Every ``supervisor`` class a public signature, field or ``Raises:`` names is exported.

    ``Supervisor.shutdown(caller=...)`` once needed ``Caller`` from a private
    module; this finds such a leak wherever it appears. Builtins, typing
    names and third-party types (``trio``, ``structlog``) are not ours.
    """
    classes = _supervisor_classes()
    exported = set(_exported())
    leaks = set()
    for obj in _exported().values():
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        for qualname, member in _public_members(obj):
            for where, ident in _mentioned(qualname, member):
                if ident in classes and ident not in exported and ident not in NOT_FOR_USERS:
                    leaks.add(f"{where}: {ident} ({', '.join(sorted(classes[ident]))})")
    assert sorted(leaks) == []


def test_system_protocol_documents_every_hook() -> None:
    """``System``'s docstring names every hook registration resolves, and every attribute it reads.

    The hooks are optional, so the Protocol declares only ``tick``: its
    docstring is where a plugin author learns the rest, and must not fall
    behind the plugin loader.
    """
    from supervisor._core._plugins import OPTIONAL_HOOKS

    doc = supervisor.System.__doc__ or ""
    for hook in OPTIONAL_HOOKS:
        assert f"``{hook}(" in doc, hook
    for attribute in ("name", "critical", "depends_on", "priority"):
        assert f"``{attribute}" in doc, attribute
    assert isinstance(supervisor.testing.Ticking(), supervisor.System)
    assert not isinstance(object(), supervisor.System)


class _AsyncTick:
    async def tick(self, ctx: supervisor.Context) -> None:
        ctx.report("ticks", ctx.tick)


def test_system_is_a_type_a_plugin_can_annotate() -> None:
    """A sync and an async ``tick`` both satisfy ``System`` (mypy strict checks this file)."""
    from systems.example import Heartbeat

    typed: list[supervisor.System] = [Heartbeat(), _AsyncTick(), supervisor.testing.Ticking()]
    result = supervisor.testing.run_systems(*typed, ticks=3)
    assert result.errors == []
    assert result.system("heartbeat").beats == 3
