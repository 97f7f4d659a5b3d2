"""The engine's shape, kept by tests: sub-packages by purpose, imports in one direction, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

QCORE = Path(__file__).resolve().parents[1] / "qcore"
# Each layer may import itself and the layers listed for it; nothing points the other way.
ALLOWED = {
    "quant": set(),
    "zoo": {"quant"},
    "analysis": {"quant", "zoo"},
    "runtime": {"quant", "zoo", "analysis"},
    "train": {"quant", "zoo", "analysis", "runtime"},
    "workflow": {"quant", "zoo", "analysis", "runtime", "train", "i18n"},
    "store": {"quant", "zoo"},
    "bench": {"quant", "zoo", "analysis", "runtime", "store"},
    "i18n": set(),
}
TOP_MODULES = {"__init__.py", "__main__.py", "console.py", "figures.py"}  # console: the CLI's progress printer
MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in QCORE.rglob("*.py") if "__pycache__" not in p.parts)


def _qcore_imports(path: Path) -> set[str]:
    """The qcore sub-packages a module imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "qcore" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_qcore_has_only_sub_packages_and_the_top_modules():
    top = {p.name for p in QCORE.iterdir() if p.suffix == ".py"}
    assert top == TOP_MODULES
    packages = {p.name for p in QCORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_imports_point_one_way():
    wrong = []
    for path in _modules():
        rel = path.relative_to(QCORE)
        if len(rel.parts) == 1:
            continue  # __main__ and figures sit on top and may import anything; __init__ imports nothing
        layer = rel.parts[0]
        for target in _qcore_imports(path) - {layer} - ALLOWED[layer]:
            wrong.append(f"{rel} imports qcore.{target}")
    assert not wrong, wrong


def test_the_allowed_directions_have_no_cycle():
    seen: set[str] = set()

    def visit(layer: str, path: tuple[str, ...]) -> None:
        assert layer not in path, " -> ".join((*path, layer))
        for below in ALLOWED[layer]:
            visit(below, (*path, layer))

    for layer in ALLOWED:
        visit(layer, ())
        seen.add(layer)
    assert seen == set(ALLOWED)


def test_figures_and_the_engine_never_import_streamlit():
    for path in _modules():
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path


def test_no_function_is_long():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(QCORE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
