"""The shape the code keeps: no import circle among pit's modules (TYPE_CHECKING imports count), no file over 400
lines, no function over 50 lines (docs/design.md §2)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "pit"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def trees() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The pit modules `tree` imports, at run time or for type checking (`from pit.x import y` names pit.x.y
    when that is a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & modules


def test_the_import_graph_has_no_circle() -> None:
    parsed = trees()
    graph = {name: imports(tree, set(parsed)) - {name} for name, tree in parsed.items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        raise AssertionError(f"import circle: {' imports '.join(reversed(err.args[1]))}") from None


def test_no_file_over_400_lines_and_no_function_over_50() -> None:
    long_files = [f"{p.relative_to(ROOT)}: {n}" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    long_functions = [f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}"
                      for name, tree in trees().items() for node in ast.walk(tree)
                      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.end_lineno - node.lineno + 1 > 50]
    assert not long_files and not long_functions, (long_files, long_functions)
