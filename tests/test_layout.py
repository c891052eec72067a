"""The source tree's shape: imports inside each package point one way, and files stay readable.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a cycle that
only exists lazily is still two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each importable package, by name, and where it lives.
PACKAGE_DIRS = {
    "core": ROOT / "core",
    "service": ROOT / "service",
    "guidance_client": ROOT / "client" / "guidance_client",
    "bench": ROOT / "bench",
    "tests": ROOT / "tests",
}
PACKAGES = tuple(PACKAGE_DIRS)
MAX_LINES = 600
# A longer file says why at its top, in its module docstring, on a line starting with this.
LENGTH_REASON = "Length:"


def _module_name(path: Path, package: str) -> str:
    parts = [package, *path.relative_to(PACKAGE_DIRS[package]).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(package: str) -> dict[str, Path]:
    return {_module_name(p, package): p for p in sorted(PACKAGE_DIRS[package].rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports, wherever in the file the import is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # `import a.b.c` also runs a and a.b: the deepest known module is the edge that matters.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    sources = _sources(package)
    known = set(sources)
    graph = {name: _imports(name, path, known) for name, path in sources.items()}
    # A package's __init__ re-exports its modules; importing a submodule runs it, not the reverse.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".") and t != package}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the list of modules along it, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == WHITE and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    cycle = _cycle(_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_long_files_say_why(package: str) -> None:
    unexplained = []
    for name, path in _sources(package).items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.startswith(LENGTH_REASON) for line in doc.splitlines()):
            unexplained.append(f"{name} ({text.count(chr(10))} lines)")
    assert not unexplained, f"over {MAX_LINES} lines with no '{LENGTH_REASON}' line in the docstring: {unexplained}"


def test_every_test_directory_is_a_package() -> None:
    """Test modules import each other by their full names (``tests.core.helpers``), never as
    top-level modules that only resolve from one directory (``from conftest import``)."""
    tests = PACKAGE_DIRS["tests"]
    missing = sorted(
        str(d.relative_to(ROOT)) for d in {p.parent for p in tests.rglob("*.py")} if not (d / "__init__.py").is_file()
    )
    assert not missing, f"test directories without __init__.py: {missing}"
    local = {p.stem for p in tests.rglob("*.py")} - {"__init__"}
    bare = []
    for name, path in _sources("tests").items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in local:
                bare.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                bare += [f"{name}: import {a.name}" for a in node.names if a.name.split(".")[0] in local]
    assert not bare, f"imports of test modules by a bare name: {bare}"
