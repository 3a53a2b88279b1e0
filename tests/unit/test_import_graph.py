"""The package's rooms: its import graph has no cycles, and the run path (flows, tasks and the
library) imports nothing from the local stack's package, which only the CLI uses."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("compare_models", "flows", "tasks", "deployments")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """First-party modules `path` imports anywhere in it (resolving `from package import module`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = _module_name(path).rsplit(".", node.level)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }


def test_the_import_graph_has_no_cycles():
    """Imports inside functions count too: a lazy import only hides a cycle."""
    try:
        tuple(TopologicalSorter(_graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_run_path_imports_nothing_from_the_local_stack():
    graph = _graph()
    outside = {
        module: sorted(m for m in imported if m.startswith("compare_models.local"))
        for module, imported in graph.items()
        if not module.startswith("compare_models.local")
        and not module.startswith("compare_models.cli")
    }
    assert not {m: i for m, i in outside.items() if i}, outside
    # and the local package is really there to be found (the test would pass on a typo)
    assert any(m.startswith("compare_models.local.") for m in graph)
