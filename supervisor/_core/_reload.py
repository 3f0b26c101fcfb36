"""Hot reload: rebuild named systems from their reloaded module between two ticks.

``run --reload`` (DEVELOPMENT only) asks for a reload of the modules whose
source changed; the reload runs as a post-tick chore, so no step runs while
it happens and the other systems tick on before and after it. For the
systems defined in a changed module and, transitively, the systems that
depend on them (they may hold references to the old instances):

1. each one's ``snapshot()`` state is taken (packed with msgpack: the same
   copy a snapshot file holds);
2. the modules are reloaded (``importlib.reload``);
3. each system is built again from its config: its factory
   (``functools.partial(build, name, cls, options)``) is re-resolved to the
   reloaded module's class by qualname, and ``build`` checks the arguments
   as at start-up;
4. each new instance gets its state back (``restore()``);
5. the old instances stop (reverse dependency order), the new ones start.

A failure in steps 1-4 leaves the old instances running, never stopped, and
the modules as they were (a half-executed module body is undone: the old
namespace is put back into the same module object, and that object back
into ``sys.modules``). A new instance that fails to start is stopped again
and the old instances are started again. Either way ONE log line
(``reload.failed``) says why, and ``status_sections["reload"]`` keeps the
last reload. Covered by ``tests/test_reload.py``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import msgpack
import trio

from .._errors import DependencyError
from ._kernel import Kernel
from ._phase import Phase
from ._plugins import SystemInfo, inspect_system
from ._plugins import order as dependency_order
from ._safecall import is_runtime_cancel, safe_message
from ._schedule import Chore
from ._slots import Slot
from ._steps import Steps

__all__ = ["ReloadFailed", "ReloadResult", "Reloader"]

#: What a slot runs: swapped as one between the old and the new instance.
_Parts = tuple[Any, SystemInfo, Any, bool, Any]


class ReloadFailed(Exception):
    """A reload step failed: the old code and instances are kept (``system`` names the culprit)."""

    def __init__(self, message: str, *, system: str | None = None) -> None:
        super().__init__(message)
        self.system = system


@attrs.frozen(kw_only=True)
class ReloadResult:
    """One reload: when, which modules and systems, and whether the new code runs."""

    time: float
    tick: int
    modules: tuple[str, ...]
    systems: tuple[str, ...]
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "time": self.time,
            "tick": self.tick,
            "modules": list(self.modules),
            "systems": list(self.systems),
            "ok": self.ok,
            "error": self.error,
        }


def module_of(slot: Slot) -> str:
    """The module that defines ``slot``'s system class (the one a reload re-executes)."""
    return type(slot.system).__module__


def _refreshed(obj: Any, modules: Mapping[str, _Saved]) -> Any:
    """``obj`` (a class or factory function) looked up again, by qualname, in its reloaded module.

    ``importlib.reload`` keeps the names the new source no longer defines, so
    a name still bound to the very object it was bound to before is gone.
    """
    saved = modules.get(getattr(obj, "__module__", "") or "")
    qualname = getattr(obj, "__qualname__", None)
    if saved is None or not isinstance(qualname, str) or "<locals>" in qualname:
        return obj
    first, *rest = qualname.split(".")
    found: Any = saved.module.__dict__.get(first)
    if found is None or found is saved.namespace.get(first):
        raise ReloadFailed(f"{qualname} is no longer defined in {saved.module.__name__}")
    for part in rest:
        found = getattr(found, part, None)
        if found is None:
            raise ReloadFailed(f"{qualname} is no longer defined in {saved.module.__name__}")
    return found


def refresh_factory(factory: Any, modules: Mapping[str, _Saved]) -> Any:
    """A config factory whose class (or factory function) points to the reloaded module."""
    if not isinstance(factory, functools.partial):
        return factory
    args = tuple(_refreshed(a, modules) for a in factory.args)
    return functools.partial(factory.func, *args, **factory.keywords)


class Reloader:
    """Reloads systems between two ticks (one per runtime; the chore runs it)."""

    def __init__(self, kernel: Kernel, steps: Steps) -> None:
        self._k = kernel
        self._steps = steps
        #: After the next tick: reload the modules asked for meanwhile.
        self.chore = Chore("reload", self._on_chore)
        self._asked: set[str] = set()
        #: What the callers of the reload to come wait on.
        self._pending = _Pending()
        #: The last reload (None: none yet).
        self.last: ReloadResult | None = None
        self.reloads = 0
        self.failures = 0
        self._told: set[str] = set()

    # ------------------------------------------------------------------ what can be reloaded

    def not_reloadable(self, slot: Slot) -> str | None:
        """Why ``slot`` cannot be reloaded, or None."""
        if slot.factory is None:
            return "registered in code without a factory"
        if getattr(slot.system, "reload", True) is False:
            return "opted out (reload = False)"
        module = sys.modules.get(module_of(slot))
        if module is None or getattr(module, "__file__", None) is None:
            return f"its module {module_of(slot)} has no source file"
        return None

    def watched(self) -> dict[Path, str]:
        """The source file of each reloadable system's module, to its module name.

        A system that cannot be reloaded is said so once, in one log line.
        """
        files: dict[Path, str] = {}
        for slot in self._k.slots.values():
            why = self.not_reloadable(slot)
            if why is not None:
                self._tell(slot.name, why)
                continue
            name = module_of(slot)
            files[Path(sys.modules[name].__file__ or "").resolve()] = name
        return files

    def _tell(self, system: str, why: str) -> None:
        if system not in self._told:
            self._told.add(system)
            self._k.log.info("reload.not_reloadable", system=system, reason=why)

    # ------------------------------------------------------------------ asking

    async def reload(self, modules: Iterable[str]) -> ReloadResult:
        """Reload ``modules`` after the current tick (at once outside a run); the outcome."""
        wanted = set(modules)
        run = self._k.run
        if run.running and run.stopping:
            # The systems are being stopped (a stop, an emergency): no chore runs again.
            return self._finish(self._result_of(wanted, (), "the run is stopping"))
        self._asked.update(wanted)
        if not run.running:
            return await self._reload_now()
        pending = self._pending
        self.chore.next_due = -float("inf")
        await pending.done.wait()
        assert pending.result is not None
        return pending.result

    async def _on_chore(self, _deadline: float) -> None:
        self.chore.next_due = float("inf")
        await self._reload_now()

    async def _reload_now(self) -> ReloadResult:
        asked, self._asked = self._asked, set()
        pending, self._pending = self._pending, _Pending()
        pending.result = self._finish(await self._reload(asked))
        pending.done.set()
        return pending.result

    def _finish(self, result: ReloadResult) -> ReloadResult:
        """Keep and log the outcome: ``reload.done``, or ONE ``reload.failed`` line."""
        self.last = result
        if result.ok:
            self.reloads += 1
            self._k.log.info(
                "reload.done", systems=",".join(result.systems), modules=",".join(result.modules)
            )
        else:
            self.failures += 1
            self._k.log.error(
                "reload.failed", system=",".join(result.systems) or None, error=result.error
            )
        return result

    def section(self) -> dict[str, Any]:
        """``status_sections["reload"]``: counts and the last reload."""
        return {
            "reloads": self.reloads,
            "failures": self.failures,
            "last": None if self.last is None else self.last.as_dict(),
        }

    # ------------------------------------------------------------------ the reload

    def _affected(self, modules: set[str]) -> list[Slot]:
        """The systems of ``modules`` and their dependents (transitively), in start order."""
        k = self._k
        order = k.order or list(k.slots.values())
        names = {s.name for s in order if module_of(s) in modules and not self.not_reloadable(s)}
        grew = True
        while grew:
            grew = False
            for slot in order:
                if slot.name not in names and names.intersection(slot.info.depends_on):
                    why = self.not_reloadable(slot)
                    if why is not None:
                        message = f"its dependent is not reloadable: {why}"
                        raise ReloadFailed(message, system=slot.name)
                    names.add(slot.name)
                    grew = True
        return [s for s in order if s.name in names]

    async def _reload(self, modules: set[str]) -> ReloadResult:
        k = self._k
        systems: tuple[str, ...] = ()
        error = None
        if k.phase is not Phase.DEVELOPMENT:
            error = f"reload is for the development phase only (now {k.phase.value})"
        else:
            try:
                affected = self._affected(modules)
                systems = tuple(s.name for s in affected)
                if affected:
                    touched = modules.intersection(module_of(s) for s in affected)
                    await self._swap(affected, sorted(touched))
            except ReloadFailed as exc:
                culprit = f"{exc.system}: " if exc.system else ""
                error = k.text(f"{culprit}{exc}")  # plugin text: redacted once, bounded
        return self._result_of(modules, systems, error)

    def _result_of(
        self, modules: set[str], systems: tuple[str, ...], error: str | None
    ) -> ReloadResult:
        k = self._k
        return ReloadResult(
            time=k.wall(),
            tick=k.loop.tick,
            modules=tuple(sorted(modules)),
            systems=systems,
            ok=error is None,
            error=error,
        )

    async def _call(self, slot: Slot, hook: str, *args: Any) -> Any:
        """A hook through SafeCall (recorded against the system); raise ReloadFailed if it fails."""
        ok, value = await self._steps.call(slot, hook, *args, timeout=self._k.stop_timeout)
        if not ok:
            raise ReloadFailed(f"{hook}() failed: {_why(value)}", system=slot.name)
        return value

    async def _swap(self, affected: list[Slot], modules: list[str]) -> None:
        """Steps 1-5 of the module docstring; on failure everything is as it was."""
        states: dict[str, bytes] = {}
        for slot in affected:
            if "snapshot" in slot.info.hooks:
                state = await self._call(slot, "snapshot")
                try:
                    states[slot.name] = msgpack.packb(state)
                except BaseException as exc:  # an unpackable type, or a hostile mapping's methods
                    if is_runtime_cancel(exc):
                        raise
                    raise ReloadFailed(f"snapshot() state: {_why(exc)}", system=slot.name) from None
        saved = self._reload_modules(modules, affected)
        old = {s.name: _parts(s) for s in affected}
        try:
            new = {s.name: self._build(s, saved) for s in affected}
            self._check_order(affected, new)
            for slot in affected:
                _install(slot, new[slot.name])
                if slot.name in states and "restore" in slot.info.hooks:
                    state = msgpack.unpackb(states[slot.name], raw=False, strict_map_key=False)
                    await self._call(slot, "restore", state)
        except BaseException:
            for slot in affected:
                _install(slot, old[slot.name])
            _put_back(saved)
            raise
        await self._restart(affected, old, new, saved)

    @contextlib.contextmanager
    def _marked(self, slot: Slot) -> Iterator[None]:
        """Plugin code of ``slot`` runs: the watchdog interrupts it past ``kill_timeout``."""
        loop = self._k.loop
        loop.current = slot
        loop.call_seq += 1
        try:
            yield
        finally:
            loop.current = None
            loop.call_seq += 1

    def _reload_modules(self, names: list[str], affected: list[Slot]) -> dict[str, _Saved]:
        """Reload each module; on failure put every one back as it was and raise ReloadFailed.

        A module body is plugin code: it runs marked as its first system's, so
        one stuck in a loop is interrupted by the watchdog like a hung step.
        """
        saved: dict[str, _Saved] = {}
        for name in names:
            module = sys.modules.get(name)
            if module is None:
                continue
            saved[name] = _Saved(module, dict(module.__dict__))
            try:
                with self._marked(next(s for s in affected if module_of(s) == name)):
                    importlib.reload(module)
            except BaseException as exc:
                _put_back(saved)
                if is_runtime_cancel(exc):
                    raise
                raise ReloadFailed(f"import of {name} failed: {_why(exc)}") from None
        return saved

    def _build(self, slot: Slot, saved: Mapping[str, _Saved]) -> _Parts:
        """A new instance from the refreshed factory (plugin code: marked for the watchdog)."""
        try:
            factory = refresh_factory(slot.factory, saved)
        except ReloadFailed as exc:
            raise ReloadFailed(str(exc), system=slot.name) from None
        try:
            with self._marked(slot):
                system = factory()
                info = inspect_system(system, slot.name, slot.info.origin)
        except BaseException as exc:
            if is_runtime_cancel(exc):
                raise
            raise ReloadFailed(f"build failed: {_why(exc)}", system=slot.name) from None
        return (system, info, info.tick.fn, info.tick.is_async, factory)

    def _check_order(self, affected: list[Slot], new: Mapping[str, _Parts]) -> None:
        """The new code's ``depends_on`` must still form an order with the other systems."""
        infos = [new[s.name][1] if s.name in new else s.info for s in self._k.slots.values()]
        try:
            dependency_order(infos)
        except DependencyError as exc:
            raise ReloadFailed(str(exc), system=affected[0].name) from None

    async def _restart(
        self,
        affected: list[Slot],
        old: Mapping[str, _Parts],
        new: Mapping[str, _Parts],
        saved: Mapping[str, _Saved],
    ) -> None:
        """Stop the old instances, start the new ones; a start that fails brings the old back."""
        k = self._k
        started = {s.name for s in affected if s.started}
        for slot in reversed(affected):
            if slot.name in started:
                _install(slot, old[slot.name])
                await self._steps.call(slot, "stop", slot.ctx, timeout=k.stop_timeout)
                _install(slot, new[slot.name])
        failure: ReloadFailed | None = None
        up: list[Slot] = []
        for slot in affected:
            if slot.name not in started:
                continue
            try:
                await self._call(slot, "start", slot.ctx)
            except ReloadFailed as exc:
                failure = exc
                break
            up.append(slot)
        if failure is None:
            k.order = [k.slots[n] for n in dependency_order(s.info for s in k.slots.values())]
            k.rebuild_active()
            return
        for slot in reversed(up):
            await self._steps.call(slot, "stop", slot.ctx, timeout=k.stop_timeout)
        for slot in affected:
            _install(slot, old[slot.name])
        _put_back(saved)
        for slot in affected:
            if slot.name in started:
                await self._steps.call(slot, "start", slot.ctx, timeout=k.stop_timeout * 5)
        raise failure


@attrs.define(eq=False)
class _Pending:
    """One reload to come: its callers wait for ``done``, then read ``result``."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: ReloadResult | None = None


@attrs.frozen
class _Saved:
    """A module as it was before its reload: the object and a copy of its namespace."""

    module: types.ModuleType
    namespace: dict[str, Any]


def _put_back(saved: Mapping[str, _Saved]) -> None:
    """Undo the reloads: old namespaces in the same module objects, those in ``sys.modules``."""
    for name, was in saved.items():
        was.module.__dict__.clear()
        was.module.__dict__.update(was.namespace)
        sys.modules[name] = was.module


def _parts(slot: Slot) -> _Parts:
    return (slot.system, slot.info, slot.tick_fn, slot.tick_async, slot.factory)


def _install(slot: Slot, parts: _Parts) -> None:
    slot.system, slot.info, slot.tick_fn, slot.tick_async, slot.factory = parts


def _why(exc: object) -> str:
    """``Type: message`` of a failure, on one line, bounded."""
    if isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {safe_message(exc)}"
    else:
        text = str(exc)
    return " ".join(text.split())[:300]
