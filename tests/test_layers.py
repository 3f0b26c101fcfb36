"""The layers of ``supervisor`` and the arrows between them, read from the source with ``ast``.

Layers, lowest first: the leaves (``_errors``, ``_files``, ``_address``,
``_logging``), the runtime core ``_core``, the HTTP server ``_server``, the
command line ``_cli``, and the public modules (``supervisor/__init__``,
``testing``, ``__main__``). Every import -- at module level, under
``if TYPE_CHECKING:``, inside a function, or a lazy name of ``_LAZY`` --
points to the same layer or a lower one; the core and the leaves import no
server, CLI or metrics library; the client commands load no server module
when imported; the demo world in ``systems/`` uses public names only; no
two ``supervisor`` modules import each other, however indirectly; and no
module or class grows past the size of one room.

Reading the source, not ``sys.modules``, sees the imports that do not run
on import (type checking, function bodies): those are the ones that grow
into a cycle or a layering violation unnoticed.
"""

from __future__ import annotations

import ast
import enum
import graphlib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import supervisor
import supervisor.testing

ROOT = Path(supervisor.__file__).parent
SYSTEMS = ROOT.parent / "systems"

#: The shared leaves at the top of the package.
LEAVES = frozenset({"_errors", "_files", "_address", "_logging"})

#: Libraries of the outside world: none of them may be imported by the core or the leaves.
OUTSIDE_LIBRARIES = frozenset(
    {"hypercorn", "h11", "click", "rich", "httpx", "httpcore", "prometheus_client"}
)

#: The client commands' modules: importing them loads no ``_server`` module.
CLIENT_MODULES = ("supervisor._cli._main", "supervisor._cli._client")


#: Hard limits for one module and one class (the aim is ~650 and ~550, with margin).
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 600



class Layer(enum.IntEnum):
    """Where a module sits; an import may only point to its own layer or a lower one."""

    LEAF = 0
    CORE = 1
    CAPABILITY = 2  # issue 11: the error store and alerts, above the core, below the server
    SERVER = 3
    CLI = 4
    PUBLIC = 5


class Kind(enum.Enum):
    """How an import is written, which decides when it runs."""

    MODULE = "module level"
    TYPE_CHECKING = "under TYPE_CHECKING"
    FUNCTION = "inside a function"
    LAZY = "lazy (_LAZY)"


@attrs.frozen
class Edge:
    """One import: ``importer`` imports ``imported`` (a module name), at ``line``."""

    importer: str
    imported: str
    kind: Kind
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.kind.value}, line {self.line})"


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at ``path``, a file under the package at ``root``."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> Layer:
    """The layer of a ``supervisor`` module, by its place in the package."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in {"testing", "__main__"}:
        return Layer.PUBLIC
    if parts[1] in LEAVES:
        return Layer.LEAF
    by_folder = {"_core": Layer.CORE, "_server": Layer.SERVER, "_cli": Layer.CLI}
    # issues 11-15: capabilities above the core, below the server
    by_folder |= dict.fromkeys(
        {"_store", "_alerts", "_rollout", "_fleet", "_agones", "_datastores"}, Layer.CAPABILITY
    )
    if parts[1] in by_folder:
        return by_folder[parts[1]]
    raise AssertionError(f"{name} is in no layer: add it to LEAVES or a folder")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, Kind]]:
    """Every import statement in ``tree``, with how it is written."""
    found: list[tuple[ast.Import | ast.ImportFrom, Kind]] = []

    def visit(node: ast.AST, kind: Kind) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, kind))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, Kind.FUNCTION)
            elif (
                isinstance(child, ast.If) and kind is Kind.MODULE and _is_type_checking(child.test)
            ):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), Kind.TYPE_CHECKING)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, Kind.MODULE)
    return found


def _lazy_targets(tree: ast.Module) -> list[tuple[str, int]]:
    """The modules named by a module-level ``_LAZY = {name: ".module"}`` (PEP 562 loading)."""
    found = []
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            for value in node.value.values:
                assert isinstance(value, ast.Constant), "_LAZY maps names to module strings"
                found.append((str(value.value), node.lineno))
    return found


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of a (possibly relative) import's module."""
    if level == 0:
        assert module is not None
        return module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


@attrs.frozen
class Graph:
    """The imports of a package: ``supervisor`` edges and the outside libraries each module uses."""

    modules: frozenset[str]
    edges: tuple[Edge, ...]
    libraries: dict[str, set[tuple[str, Kind, int]]]

    @classmethod
    def read(cls, root: Path) -> Graph:
        """Parse every module under ``root`` (a package folder)."""
        paths = sorted(root.rglob("*.py"))
        modules = frozenset(module_name(p, root) for p in paths)
        edges: list[Edge] = []
        libraries: dict[str, set[tuple[str, Kind, int]]] = {}
        for path in paths:
            name = module_name(path, root)
            is_package = path.name == "__init__.py"
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node, kind in _imports(tree):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    base = _resolve(name, is_package, node.level, node.module)
                    # `from pkg import mod` imports the submodule; `from pkg import
                    # name` depends on pkg itself. (A parent package is always
                    # imported first anyway: that is not a dependency.)
                    subs = [f"{base}.{a.name}" for a in node.names]
                    targets = [s for s in subs if s in modules]
                    if len(targets) < len(subs):
                        targets.append(base)
                for target in targets:
                    if target.split(".")[0] == root.name:
                        edges.append(Edge(name, target, kind, node.lineno))
                    else:
                        top = target.split(".")[0]
                        libraries.setdefault(name, set()).add((top, kind, node.lineno))
            for target, line in _lazy_targets(tree):
                absolute = _resolve(name, is_package, len(target) - len(target.lstrip(".")),
                                    target.lstrip(".") or None)  # fmt: skip
                edges.append(Edge(name, absolute, Kind.LAZY, line))
        return cls(modules, tuple(edges), libraries)

    def reachable(self, start: str, kinds: frozenset[Kind] = frozenset(Kind)) -> set[str]:
        """The ``supervisor`` modules ``start`` imports, transitively, by imports of ``kinds``."""
        seen = {start}
        todo = [start]
        while todo:
            current = todo.pop()
            for edge in self.edges:
                if edge.importer == current and edge.kind in kinds and edge.imported not in seen:
                    seen.add(edge.imported)
                    todo.append(edge.imported)
        return seen - {start}


GRAPH = Graph.read(ROOT)


def _checked_edges() -> list[Edge]:
    return list(GRAPH.edges)


class TestTheReader:
    """The graph itself: the rules below are only as good as what it sees."""

    def test_sees_every_kind_of_import(self) -> None:
        """Module-level, TYPE_CHECKING, function-local and lazy imports are all found."""
        tree = ast.parse(
            "import a\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import b\nelse:\n    import c\n"
            "def f():\n    import d\n"
            "class K:\n    async def g(self):\n        import e\n"
        )
        got = {(n.names[0].name, kind) for n, kind in _imports(tree) if isinstance(n, ast.Import)}
        assert got == {
            ("a", Kind.MODULE),
            ("b", Kind.TYPE_CHECKING),
            ("c", Kind.MODULE),
            ("d", Kind.FUNCTION),
            ("e", Kind.FUNCTION),
        }

    @pytest.mark.parametrize(
        ("importer", "is_package", "level", "module", "expected"),
        [
            ("supervisor._core._x", False, 1, "_y", "supervisor._core._y"),
            ("supervisor._core._x", False, 2, "_errors", "supervisor._errors"),
            ("supervisor._core", True, 1, "_y", "supervisor._core._y"),
            ("supervisor", True, 1, "_core._y", "supervisor._core._y"),
            ("supervisor._cli._x", False, 2, None, "supervisor"),
            ("supervisor._cli._x", False, 0, "trio", "trio"),
        ],
    )
    def test_resolves_relative_imports(
        self, importer: str, is_package: bool, level: int, module: str | None, expected: str
    ) -> None:
        """``from ..x import y`` in a module or a package ``__init__`` names the right module."""
        assert _resolve(importer, is_package, level, module) == expected

    def test_finds_the_edges_we_know_of(self) -> None:
        """A few edges that exist today are found, with their kind (a blind reader passes all)."""
        found = {(e.importer, e.imported, e.kind) for e in GRAPH.edges}
        assert ("supervisor._cli._main", "supervisor._cli._client", Kind.MODULE) in found
        assert ("supervisor._cli._main", "supervisor._cli._run", Kind.FUNCTION) in found
        assert ("supervisor", "supervisor._core._safecall", Kind.LAZY) in found
        assert ("supervisor", "supervisor._core._safecall", Kind.TYPE_CHECKING) in found
        assert ("trio", Kind.MODULE) in {
            (lib, k) for lib, k, _ in GRAPH.libraries["supervisor.testing"]
        }

    def test_sees_private_uses(self) -> None:
        """A private module, a name not in ``__all__`` and ``supervisor._x`` are all caught."""
        tree = ast.parse(
            "import supervisor\n"
            "from supervisor import Phase, Nope\n"
            "from supervisor._core._phase import Phase\n"
            "def f():\n    import supervisor._core\n    return supervisor._core\n"
        )
        assert list(_private_uses(tree)) == [
            "line 2: from supervisor import Nope",
            "line 3: from supervisor._core._phase import Phase",
            "line 5: import supervisor._core",
            "line 6: supervisor._core",
        ]

    def test_every_module_has_a_layer(self) -> None:
        """No module is outside the map (``layer_of`` raises for one)."""
        assert {layer_of(m) for m in GRAPH.modules} == set(Layer)


def test_every_import_points_down() -> None:
    """An import points to its own layer or a lower one: cli -> server -> core -> leaves.

    The public modules are the top: no private module imports ``supervisor``
    itself or ``supervisor.testing``.
    """
    up = [str(e) for e in _checked_edges() if layer_of(e.imported) > layer_of(e.importer)]
    assert up == []


def test_core_and_leaves_import_no_outside_library() -> None:
    """The runtime core and the leaves use none of the server, CLI or metrics libraries."""
    found = sorted(
        f"{module} imports {lib} ({kind.value}, line {line})"
        for module, libs in GRAPH.libraries.items()
        if layer_of(module) <= Layer.CORE
        for lib, kind, line in libs
        if lib in OUTSIDE_LIBRARIES
    )
    assert found == []


@pytest.mark.parametrize("client", CLIENT_MODULES)
def test_client_commands_load_no_server(client: str) -> None:
    """Importing a client command's module loads no ``_server`` module (module-level imports).

    ``tests/test_cli_imports.py`` checks the same at run time, for what
    the interpreter actually loads; this names the import that would do it.
    """
    loaded = GRAPH.reachable(client, frozenset({Kind.MODULE}))
    assert sorted(m for m in loaded if layer_of(m) is Layer.SERVER) == []


def test_no_import_cycle() -> None:
    """No two ``supervisor`` modules import each other, directly or not, by any kind of import.

    TYPE_CHECKING and function-local imports count: a cycle that does not
    bite at import time still ties two modules that can no longer be
    understood, tested or split apart one without the other.
    """
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for module in GRAPH.modules:
        sorter.add(module)
    for edge in _checked_edges():
        if edge.importer != edge.imported:
            sorter.add(edge.importer, edge.imported)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def _private_uses(tree: ast.Module) -> Iterator[str]:
    """Each import of a non-public ``supervisor`` name in ``tree``, and each ``supervisor._x``."""
    public = {"supervisor": supervisor, "supervisor.testing": supervisor.testing}
    for node, _kind in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "supervisor" and alias.name not in public:
                    yield f"line {node.lineno}: import {alias.name}"
        elif node.level == 0 and node.module and node.module.split(".")[0] == "supervisor":
            module = public.get(node.module)
            for alias in node.names:
                if module is None or alias.name not in module.__all__:
                    yield f"line {node.lineno}: from {node.module} import {alias.name}"
    for attr in ast.walk(tree):
        if (
            isinstance(attr, ast.Attribute)
            and isinstance(attr.value, ast.Name)
            and attr.value.id == "supervisor"
            and attr.attr.startswith("_")
        ):
            yield f"line {attr.lineno}: supervisor.{attr.attr}"


def _sizes() -> dict[str, tuple[int, int]]:
    """``{module or module.Class: (lines, limit)}`` for every module and class of the package."""
    sizes: dict[str, tuple[int, int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path, ROOT)
        text = path.read_text(encoding="utf-8")
        sizes[name] = (len(text.splitlines()), MAX_MODULE_LINES)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                sizes[f"{name}.{node.name}"] = (lines, MAX_CLASS_LINES)
    return sizes


def test_modules_and_classes_stay_small() -> None:
    """No module over MAX_MODULE_LINES, no class over MAX_CLASS_LINES: one room, one job."""
    over = {name for name, (lines, limit) in _sizes().items() if lines > limit}
    assert sorted(over) == []


class TestSystems:
    """The demo world is written the way a plugin author writes one."""

    SYSTEM_FILES = sorted(SYSTEMS.glob("*.py"))

    @pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.name)
    def test_imports_only_public_names(self, path: Path) -> None:
        """``systems/`` imports ``supervisor`` and ``supervisor.testing`` names in ``__all__`` only.

        By any kind of import, and no ``supervisor._private`` attribute either.
        """
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        wrong = list(_private_uses(tree))
        assert wrong == []

    def test_there_are_systems(self) -> None:
        """The parametrised test above has files to check (an empty glob would pass it)."""
        assert len(self.SYSTEM_FILES) >= 5
