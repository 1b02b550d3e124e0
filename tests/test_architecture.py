"""The package's shape: rooms with one job each, imports that flow one way, and no import cycle.

Imports are read from the source (every ``import``, also those inside functions, which are lazy but still a
dependency), so a cycle that only shows when two lazy imports meet at run time is caught too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reasonflux_rl"
ROOMS = ("rewards", "prm", "train", "tools", "prm_training", "lab")
# What a room may import from the package (besides itself and the SHARED modules below): the
# data flows prm -> rewards -> (train, tools); PRM training reads rows and stores progress as the tools do, judges
# with the outcome reward and checks its launch as train does; the lab builds its models with the PRM's layout, the
# tiny tokenizer and prm train; the dispatcher (cli) sits outside the rooms.
ALLOWED = {
    "prm": set(),
    "rewards": {"prm"},
    "train": {"prm", "rewards"},
    "tools": {"prm", "rewards"},
    "prm_training": {"prm", "rewards", "tools", "train"},
    "lab": {"prm", "prm_training", "tools"},
}
SHARED = {"errors", "trajectory", "data", "tiny", "lazy_exports"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` imports the module; `from module import name` the module itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_package_has_no_import_cycle():
    graph = GRAPH
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("source_room", ROOMS)
def test_rooms_import_only_downstream(source_room):
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items() if room(name) == source_room
        for target in targets
        if room(target) not in {source_room, *ALLOWED[source_room], *SHARED}
    )
    assert wrong == []


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_each_room_says_what_lives_there(package):
    docstring = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert docstring and len(docstring) > 40


def test_no_module_is_named_like_the_standard_library():
    import sys

    shadowing = sorted(n for n in MODULES if n.rpartition(".")[2] in sys.stdlib_module_names)
    assert shadowing == []
