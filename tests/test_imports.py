"""The package's shape: no import cycle, the command line only in ``agc_core/cli/``, and
modules a newcomer can hold in their head.

The imports are read from the source (:mod:`ast`), not executed: every ``import`` and
``from ... import`` of a module, at its top or inside a function (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:`` (annotations only, never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the installed packages and their folders (kernels/ and models/ install as agc_core.*)
PACKAGES = {"agc_core": REPO / "agc_core", "agc_core.kernels": REPO / "kernels",
            "agc_core.models": REPO / "models"}
#: the command line's package, and the only module outside it that may import it
CLI = "agc_core.cli"
ENTRY_POINT = "agc_core.__main__"
#: lines a module may have
MAX_LINES = 700
#: modules allowed over MAX_LINES, with the reason
LONG_MODULES: dict[str, str] = {}


def modules() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts or (package == "agc_core" and parts[0] in (
                    "kernels", "models")):
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def imported_names(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import of a module that runs (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:  # a submodule, or a name of the module ``base``
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {package module it imports: line}."""
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges: dict[str, int] = {}
        for target, line in imported_names(name, path, known):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    inside = set(component)
    return "; ".join(f"{a} -> {b} (line {line})" for a in component
                     for b, line in sorted(graph[a].items()) if b in inside)


def test_the_walk_sees_the_package():
    graph = import_graph()
    assert {"agc_core.runner", "agc_core.cli", "agc_core.inference.mle",
            "agc_core.kernels.fill", "agc_core.models.train"} <= set(graph)
    assert "agc_core.inference.stage" in graph["agc_core.runner"]  # a lazy import counts


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(c, graph) for c in found)


def test_argparse_and_the_command_line_only_in_cli():
    known = modules()
    offenders = []
    for name, path in known.items():
        if name == CLI or name.startswith(CLI + "."):
            continue
        for target, line in imported_names(name, path, known):
            if target.split(".")[0] == "argparse" or (
                    (target == CLI or target.startswith(CLI + ".")) and name != ENTRY_POINT):
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not offenders, offenders


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted(modules().values()), ids=lambda p: str(p.relative_to(REPO)))
def test_module_length(path):
    relative = str(path.relative_to(REPO))
    lines = len(path.read_text().splitlines())
    if relative in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (f"{relative} has {lines} lines (at most {MAX_LINES}): split it "
                                "by responsibility")


def test_every_subpackage_is_installed():
    """pyproject's explicit package list names every package folder (a wheel leaves out any
    it does not name, though an editable install would still find it)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found <= listed, sorted(found - listed)
