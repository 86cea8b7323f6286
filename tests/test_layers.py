"""The package's layers: imports (module level or inside functions) only point down the pipeline, with no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import recvae

PACKAGE = Path(recvae.__file__).parent
# Lower layers first; a module may import its own layer and any layer before it.
LAYERS = ["core", "data", "evaluation", "models", "training", "serving", "tracking", "tuning", "errors", "pipeline",
          "orchestration", "cli"]
CORE = {"paths", "config", "log", "urls", "digest"}
# models.kinds names the model kinds for everyone, the configuration's check included, and imports nothing itself;
# errors gathers each layer's error types (inside its functions) for the CLI and the Airflow tasks.
PLACED = {"recvae.models.kinds": "core", "recvae.errors": "errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recvae")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recvae"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> str:
    if module in PLACED:
        return PLACED[module]
    part = module.split(".")[1] if "." in module else "core"
    return "core" if part in CORE else part


def test_imports_point_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps
                    if LAYERS.index(_layer(b)) > LAYERS.index(_layer(a)))
    assert upward == []


def test_no_import_cycles():
    graph, cycles, state = _graph(), [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open" and not (dep == "recvae" or node.startswith(dep + ".")):
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
