"""The package's imports run one way, with no circles and no imports hidden inside functions.

Read from the source (ast), not by importing: ``cli`` -> ``engine.preview`` -> ``engine.batch`` -> ``engine.rendering``
-> ``engine.objectives`` / ``engine.backends`` -> the engine's core modules -> ``kernels``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Installed name -> folder (pyproject's package-dir).
PACKAGES = {"styleforge.engine": ROOT / "engine", "styleforge.kernels": ROOT / "kernels",
            "styleforge.cli": ROOT / "cli"}
#: Higher layers may import lower ones, never the reverse; equal layers may not import each other.
LAYERS = {
    "styleforge.cli": 5,
    "styleforge.engine": 4,  # the package's __init__: the public API, above everything it re-exports
    "styleforge.engine.preview": 3.5,  # above batch: it follows render, shot and batch callbacks
    "styleforge.engine.batch": 3,
    "styleforge.engine.video": 2.5,  # between batch (a shot is a job) and rendering (a frame is a render)
    "styleforge.engine.rendering": 2,
    "styleforge.engine.objectives": 1,
    "styleforge.engine.backends": 1,
    "styleforge.engine._core": 0,
    "styleforge.kernels": -1,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _layer(module: str) -> tuple[str, int]:
    """The layer a module belongs to (the engine's own private modules are its core)."""
    for prefix in ("styleforge.engine.preview", "styleforge.engine.batch", "styleforge.engine.video",
                   "styleforge.engine.rendering", "styleforge.engine.objectives", "styleforge.engine.backends"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    if module == "styleforge.engine":
        return module, LAYERS[module]
    if module.startswith("styleforge.engine."):
        return "styleforge.engine._core", 0
    top = ".".join(module.split(".")[:2])
    return top, LAYERS[top]


def _resolve(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("styleforge")]
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("styleforge"):
            return []
    else:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    known = _modules()
    targets = []
    for alias in node.names:  # "from . import _batch" names a module; "from .x import y" a name in x
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in known else base)
    return targets


def _imports() -> list[tuple[str, str, int, bool]]:
    """(importer, imported, line, inside a function) for every styleforge-internal import."""
    edges = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(inner) for function in functions for inner in ast.walk(function) if inner is not function}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, path, node):
                    edges.append((module, target, node.lineno, id(node) in nested))
    return edges


def test_no_styleforge_import_hides_inside_a_function():
    hidden = [f"{a} line {line} imports {b}" for a, b, line, inside in _imports() if inside]
    assert hidden == []


def test_imports_never_go_up_or_sideways_between_layers():
    wrong = []
    for importer, imported, line, _ in _imports():
        (group_a, rank_a), (group_b, rank_b) = _layer(importer), _layer(imported)
        if group_a != group_b and rank_b >= rank_a:
            wrong.append(f"{importer} line {line} imports {imported} ({group_a} -> {group_b})")
    assert wrong == []


def test_no_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for importer, imported, _, _ in _imports():
        if importer != imported:
            graph.setdefault(importer, set()).add(imported)
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_checker_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The test above can fail: an objectives module importing rendering is caught."""
    planted = ROOT / "engine" / "objectives" / "_planted_for_test.py"
    assert not planted.exists()
    try:
        planted.write_text("from ..rendering import render\n\n\ndef f():\n    from .. import batch\n")
        edges = _imports()
        assert any(a.endswith("_planted_for_test") and inside for a, _, _, inside in edges)
        with pytest.raises(AssertionError):
            test_imports_never_go_up_or_sideways_between_layers()
    finally:
        planted.unlink()


def test_the_cli_uses_only_the_public_engine_api():
    private = [f"{a} line {line} imports {b}" for a, b, line, _ in _imports()
               if a.startswith("styleforge.cli") and b.startswith("styleforge.engine") and "._" in b]
    assert private == []


def test_pyproject_ships_every_package():
    """A plain `pip install .` copies only the packages pyproject lists: a new subpackage that is
    not listed would be missing from the wheel (an editable install hides that)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert folders == listed
