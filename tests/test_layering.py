"""The package layout is the architecture: no import cycles, and each layer only looks down.

Imports made only for type checking count too: a cycle of types is still two modules that
cannot be understood (or moved) one without the other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pounce"

#: Each package may import the packages listed after it, never the ones before.
LAYERS = (
    "cli",
    "workers",
    "server",
    "protocols",
    "transport",
    "pipeline",
    "features",
    "logs",
    "asgi",
    "config",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.append(node.module)
                targets += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in graph.get(node, ()):
            if target == start:
                return [*path, target]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_itself_through_others() -> None:
    graph = _imports()
    cycles = [cycle for name in sorted(graph) if (cycle := _cycle_from(graph, name))]
    assert cycles == []


@pytest.mark.parametrize("package", LAYERS)
def test_packages_only_import_lower_layers(package: str) -> None:
    higher = set(LAYERS[: LAYERS.index(package)])
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _imports().items()
        if module.startswith(f"pounce.{package}")
        for target in targets
        if target.split(".")[1] in higher
    )
    assert wrong == []
