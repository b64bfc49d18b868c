"""No import circles: in the core, the benchmarks and every plugin, no module imports
(at the top or inside a function) a module that imports it back, directly or through
others. A circle means two roles in one place; a lazy import hides it from Python's loader,
not from the reader, so function-level imports count too."""

import ast
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parents[1]
PACKAGES = [
    (REPO, "probe_base"),
    (REPO, "benchmarks"),
    *[(plugin, package.name) for plugin in (REPO / "probe_plugins").iterdir() for package in plugin.glob("probe_*")],
]


def modules_of(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            # a module's own package (its __init__) is loaded first anyway: not an edge
            if candidate and candidate != name and not name.startswith(candidate + "."):
                found.add(candidate)
    return found


def import_circles(root: Path, package: str, depth: int | None = None) -> list[list[str]]:
    """Strongly connected sets of modules; with ``depth``, of module names cut to their
    first ``depth`` parts (``depth=2``: the package's subpackages and top-level modules)."""
    modules = modules_of(root, package)

    def node(name):
        return ".".join(name.split(".")[:depth]) if depth else name

    names = sorted({node(n) for n in modules})
    index = {n: i for i, n in enumerate(names)}
    edges = [
        (index[node(a)], index[node(b)])
        for a in modules
        for b in imports_of(a, modules[a], modules)
        if node(a) != node(b) and node(a) != package
    ]
    if not edges:
        return []
    rows, cols = zip(*edges)
    graph = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(names), len(names)))
    n, labels = connected_components(graph, directed=True, connection="strong")
    return [sorted(names[i] for i in np.flatnonzero(labels == c)) for c in range(n) if (labels == c).sum() > 1]


@pytest.mark.parametrize("root, package", PACKAGES, ids=[p for _, p in PACKAGES])
def test_no_import_circles(root, package):
    assert import_circles(root, package) == []


def test_subpackages_point_one_way():
    """A subpackage (net/, domain/, io/, report/, integrations/, store/, cli/) is one layer:
    no two of them, or a subpackage and a top-level module, import each other."""
    assert import_circles(REPO, "probe_base", depth=2) == []


def test_the_layer_check_finds_a_circle_between_subpackages(tmp_path):
    package = tmp_path / "pkg"
    for sub in ("low", "high"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("from pkg.high.b import x\n")
    (package / "high" / "b.py").write_text("x = 1\n")
    (package / "high" / "c.py").write_text("from pkg.low.a import x\n")
    assert import_circles(tmp_path, "pkg") == []  # no circle between modules
    assert import_circles(tmp_path, "pkg", depth=2) == [["pkg.high", "pkg.low"]]


def test_the_check_finds_a_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import x\n")
    (package / "b.py").write_text("def x():\n    from . import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from .a import x\n")
    assert import_circles(tmp_path, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]
