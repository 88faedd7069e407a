"""The import graph of livetrain's own modules: no cycle, and no import from a lower layer to a higher one.

Every import counts, also those inside functions (they are how CLIs stay light, but they are dependencies).
Layers, lowest first; a module may import modules of lower layers, and modules of its own layer only within
its own group (the longest listed prefix it falls under), so that no two parts or two CLIs import each other.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("livetrain", "processing", "streamer", "pipelines", "lambdas", "infra")
CLIS = ["streamer.cli", "pipelines.cli", "pipelines.local.cli", "pipelines.local.serve_cli", "infra.cli",
        "infra.local.cli"]
LAYERS = [
    ["livetrain", "processing", "lambdas"],  # the kernel; and the code that ships alone, importing nothing of ours
    ["streamer", "pipelines"],  # the parts
    ["pipelines.local"],  # the local engine, endpoint and algorithms
    ["infra"],  # CloudFormation, deploy, the rules
    ["infra.local"],  # the local stack and the demo
    CLIS,  # each part's commands
    ["livetrain.cli"],  # the entry point
    ["livetrain.__main__"],  # python -m livetrain
]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path, known: dict[str, Path]) -> set[str]:
    """Every absolute import in `path` (a `from package import module` of ours names the module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                         for alias in node.names)
    return names


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `path` imports."""
    return imported_names(path, known) & set(known)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def group_of(module: str) -> tuple[int, str]:
    """(layer, group): the longest listed prefix the module falls under."""
    matches = [(len(prefix), layer, prefix) for layer, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    _, layer, prefix = max(matches)
    return layer, prefix


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_module():
    edges = graph()
    assert {"livetrain.cli", "pipelines.driver", "pipelines.local.steps.tuning", "infra.local.demo"} <= set(edges)
    assert "pipelines.local.steps.tuning" in edges["pipelines.local.steps"]  # `from package import module`
    assert "pipelines.definition" in edges["pipelines.driver"]  # an import inside a function counts


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = []
    for module, targets in graph().items():
        layer, group = group_of(module)
        for target in targets:
            target_layer, target_group = group_of(target)
            if target_layer > layer or (target_layer == layer and target_group != group):
                wrong.append(f"{module} ({group}) imports {target} ({target_group})")
    assert wrong == []


def test_code_that_ships_alone_imports_only_itself():
    """The processing scripts run in SageMaker's container and the Lambda in its runtime, each with only its own
    files next to it."""
    edges = graph()
    for module, targets in edges.items():
        if module.startswith(("processing", "lambdas")):
            assert {target.split(".")[0] for target in targets} <= {module.split(".")[0]}, module


def test_every_third_party_import_is_installed_by_the_dev_extra():
    """`make install` (pip install -e .[dev]) brings whatever any module, benchmark or test imports, also inside
    functions: CI's fresh environment has nothing else. (A benchmark once imported statsmodels undeclared.)"""
    known = modules()
    missing = set()
    for directory in (*PACKAGES, "bench", "tests"):
        for path in (ROOT / directory).rglob("*.py"):
            for name in imported_names(path, known):
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in PACKAGES or top in ("bench", "tests"):
                    continue
                if not (path.parent / f"{top}.py").is_file() and importlib.util.find_spec(top) is None:
                    missing.add(f"{top} (imported by {path.relative_to(ROOT)})")
    assert sorted(missing) == []
