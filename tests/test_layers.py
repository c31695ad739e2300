"""Imports go one way: workflows (pure) <- core (reintegration) and activities <- api, worker, command line.

A forbidden import fails here, and so does an import of the project's own modules hidden inside a
function (the way a cycle is dodged), except in the command line, which loads what each command
needs when it runs it (`reintegration token` starts without the web stack).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workflows", "reintegration", "activities", "api", "worker")
# Who may import whom (besides itself).
ALLOWED = {
    "workflows": set(),
    "reintegration": {"workflows"},
    "activities": {"workflows", "reintegration"},
    "api": {"workflows", "reintegration"},
    "worker": {"workflows", "reintegration", "activities"},
}
LAZY_ALLOWED = {"reintegration/cli.py"}


def _modules() -> list[Path]:
    files = [ROOT / "worker.py"]
    for package in PACKAGES[:-1]:
        files += sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if "migrations/versions" not in f.as_posix()]


def _layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(top-level package, line, inside a function) of every import of the project's own modules."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for name in _imported(child):
                if name in PACKAGES:
                    found.append((name, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def test_imports_go_one_way_and_none_hides_in_a_function():
    problems = []
    for path in _modules():
        layer, relative = _layer(path), path.relative_to(ROOT).as_posix()
        for name, line, in_function in _imports(ast.parse(path.read_text(), filename=str(path))):
            if name != layer and name not in ALLOWED[layer]:
                problems.append(f"{relative}:{line} imports {name} ({layer} may import {sorted(ALLOWED[layer])})")
            elif in_function and relative not in LAZY_ALLOWED:
                problems.append(f"{relative}:{line} imports {name} inside a function")
    assert problems == []


def test_the_check_finds_what_it_forbids(tmp_path):
    tree = ast.parse("import os\nfrom activities.read_model import x\ndef f():\n    from reintegration import db\n")
    assert _imports(tree) == [("activities", 2, False), ("reintegration", 4, True)]
