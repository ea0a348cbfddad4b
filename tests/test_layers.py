"""The import graph of attnbench/, lazy imports (inside functions) included: no cycle between modules, and no
layer importing one above it (the layering the README's Architecture section draws)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "attnbench"

# bottom to top: a unit (a subpackage or a top-level module) imports only units of lower layers
LAYERS = [
    ["__init__", "errors"],
    ["signals", "values", "seeds", "printable"],
    ["attention", "track"],
    ["backbones", "data"],
    ["plugins"],
    ["config"],
    ["engine", "tasks"],
    ["job", "compare", "launch", "check_variant", "run_efficiency"],
    ["bench", "callbacks", "sweeper"],
    ["cli"],
    ["__main__", "gpu_check"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = ("attnbench", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The attnbench modules ``name`` imports anywhere in its file: ``from .x import y`` counts as module
    ``x.y`` when that is a module, else as ``x``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def unit(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_unit_has_a_layer() -> None:
    assert {unit(m) for m in MODULES} <= set(RANK), {unit(m) for m in MODULES} - set(RANK)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as the list of its modules (the first one repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return [*trail[trail.index(target):], target]
            if target not in state:
                cycle = visit(target, [*trail, target])
                if cycle:
                    return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [name])
            if cycle:
                return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{name} imports {target}" for name, targets in sorted(graph.items()) for target in sorted(targets)
            if unit(target) != unit(name) and RANK[unit(target)] >= RANK[unit(name)]]


def test_no_import_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_layer_imports_a_higher_one() -> None:
    assert not upward_imports(GRAPH)


def test_the_checks_see_lazy_imports_cycles_and_upward_imports() -> None:
    assert "attnbench.engine.trainer" in GRAPH["attnbench.job"] or "attnbench.engine" in GRAPH["attnbench.job"]
    assert "attnbench.tasks" in GRAPH["attnbench.bench"]  # imported inside bench.build only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward_imports({"attnbench.data.text": {"attnbench.tasks.rate"}}) == [
        "attnbench.data.text imports attnbench.tasks.rate"]
