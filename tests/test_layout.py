"""The engine's shape, kept by tests: sub-packages by purpose, imports in one direction (between packages and
between modules, imports inside functions included), pages above the engine, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QCORE = ROOT / "qcore"
PAGES = ROOT / "views"  # the page scripts (app.py routes to them); the README says why the folder is not pages/
# Each layer may import itself and the layers listed for it; nothing points the other way.
ALLOWED = {
    "quant": set(),
    "zoo": {"quant"},
    "analysis": {"quant", "zoo"},
    "runtime": {"quant", "zoo", "analysis"},
    "train": {"quant", "zoo", "analysis", "runtime"},
    "workflow": {"quant", "zoo", "analysis", "runtime", "train", "i18n"},
    "store": {"quant", "zoo"},
    "run": {"quant", "zoo", "store"},
    "bench": {"quant", "zoo", "analysis", "runtime", "store", "run"},
    "i18n": set(),
    # the command line sits on top of the engine, beside the top modules (console: its progress printer)
    "cli": {"quant", "zoo", "analysis", "runtime", "train", "workflow", "store", "run", "bench", "i18n", "console",
            "figures"},
}
TOP_MODULES = {"__init__.py", "__main__.py", "console.py", "figures.py"}  # console: the CLI's progress printer
MAX_FUNCTION_LINES = 60


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


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports, at the top or inside functions (`from a.b import c` is the
    module a.b.c when there is one, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & known


def import_cycles(paths: list[Path], root: Path = ROOT) -> list[list[str]]:
    """Every group of modules that import each other, directly or around a loop (Tarjan's strongly connected
    components of the import graph, groups of two or more)."""
    known = {_module_name(p, root) for p in paths}
    graph = {_module_name(p, root): _module_imports(p, known) - {_module_name(p, root)} for p in paths}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

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
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_module_of_qcore_is_part_of_an_import_cycle():
    assert import_cycles(_modules()) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\n")
    assert import_cycles(sorted((tmp_path / "pkg").glob("*.py")), tmp_path) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_pages_call_the_engine_and_the_engine_never_imports_pages():
    pages = sorted(PAGES.glob("*.py")) + [ROOT / "app.py"]
    assert any("qcore" in {n.split(".")[0] for n in _top_names(p)} for p in pages)
    for path in _modules():
        assert not {"views", "pages", "app"} & {n.split(".")[0] for n in _top_names(path)}, path


def _top_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_figures_and_the_engine_never_import_streamlit():
    for path in _modules():
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path


def test_no_function_is_long():
    long = []
    for path in _modules() + sorted(PAGES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_every_engine_module_a_page_imports_is_imported_first_by_views_engine():
    """Simultaneous first visitors import the engine in parallel threads; views/_engine.py imports it once in one
    order before any page runs (its docstring says why). A page importing a qcore module missing there could bring
    the import deadlock back."""
    preloaded = set()
    for node in ast.walk(ast.parse((PAGES / "_engine.py").read_text())):
        if isinstance(node, ast.Import):
            preloaded |= {a.name for a in node.names}
    used = {}
    for path in [*PAGES.glob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qcore"):
                used.setdefault(node.module, path.name)
    missing = {m: page for m, page in used.items() if m not in preloaded}
    assert not missing, missing
