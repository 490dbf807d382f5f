"""The package's layering, read from the source: ``export`` (conversion and the parity gate) and
``bench`` (timing) both sit on ``runtime`` and never import each other, ``runtime`` imports
neither, the package has no import cycle outside the register-by-import pattern of ``models/``,
``data/`` and ``losses/`` (imports inside functions count: they only hide a cycle), no function is
longer than 80 lines, and every export format registers a converter module and has a runtime module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Dict, List, Set

import mobile_distill
from mobile_distill.export.formats import FORMATS

ROOT = Path(mobile_distill.__file__).parent


def import_graph(root: Path, name: str) -> Dict[str, Set[str]]:
    """module -> the modules of the same package tree it imports, anywhere in the file."""
    files = {_module(root, name, p): p for p in root.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from . import x`: x may be a module
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def _module(root: Path, name: str, path: Path) -> str:
    parts = [name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def cycles(graph: Dict[str, Set[str]], prefix: str) -> List[List[str]]:
    """Import cycles among the modules under ``prefix`` (each found once per entry point)."""
    nodes = {m for m in graph if m == prefix or m.startswith(prefix + ".")}
    found, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m] & nodes):
            if state.get(n) == "open":
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(nodes):
        if m not in state:
            visit(m, [m])
    return found


def _crossings(graph, source: str, target: str) -> List[str]:
    return [f"{m} -> {n}" for m, deps in graph.items() if m.startswith(source + ".") or m == source
            for n in deps if n == target or n.startswith(target + ".")]


def test_export_and_bench_never_import_each_other_and_sit_on_runtime():
    graph = import_graph(ROOT, "mobile_distill")
    assert not _crossings(graph, "mobile_distill.export", "mobile_distill.bench")
    assert not _crossings(graph, "mobile_distill.bench", "mobile_distill.export")
    for upper in ("mobile_distill.export", "mobile_distill.bench"):
        assert not _crossings(graph, "mobile_distill.runtime", upper)
        assert _crossings(graph, upper, "mobile_distill.runtime")  # both really use it


# The registries: a package whose __init__ imports its modules so that they register themselves
# (``register_model``, ``register_dataset``, ``register_loss``), and whose modules import the
# registry from it. That cycle is the pattern; any other is a layering mistake.
REGISTRIES = ("mobile_distill.models", "mobile_distill.data", "mobile_distill.losses")


def _outside_registries(found: List[List[str]]) -> List[List[str]]:
    return [c for c in found if not any(c[0] == r and all(m == r or m.startswith(r + ".") for m in c)
                                        for r in REGISTRIES)]


def test_no_import_cycle_in_the_package_outside_the_registries():
    graph = import_graph(ROOT, "mobile_distill")
    assert not _outside_registries(cycles(graph, "mobile_distill")), _outside_registries(cycles(graph, "mobile_distill"))
    for package in ("mobile_distill.bench", "mobile_distill.export", "mobile_distill.runtime", "mobile_distill.train"):
        assert not cycles(graph, package), package


def test_the_registry_exception_is_narrow():
    """Only a cycle that stays inside one registry package, through its __init__, is allowed."""
    inside = ["mobile_distill.losses", "mobile_distill.losses.rkd", "mobile_distill.losses"]
    across = ["mobile_distill.losses", "mobile_distill.losses.combine", "mobile_distill.distributed",
              "mobile_distill.losses"]
    elsewhere = ["mobile_distill.asymmetric", "mobile_distill.export.metadata", "mobile_distill.asymmetric"]
    assert _outside_registries([inside, across, elsewhere]) == [across, elsewhere]


def long_functions(root: Path, limit: int = 80) -> List[str]:
    """Functions (docstring included) longer than ``limit`` lines, as ``path:line name (n lines)``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_longer_than_80_lines(tmp_path):
    assert not long_functions(ROOT)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n" + "    x = 1\n" * 81)
    assert long_functions(tmp_path / "pkg") == ["pkg/m.py:1 f (82 lines)"]


def test_the_walker_sees_function_level_imports_and_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from .x import f\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from .y import g\n    return g\n")
    (pkg / "a" / "y.py").write_text("from . import x\nfrom ..b import h\n")
    (pkg / "b.py").write_text("def h():\n    from pkg.a.x import f\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a.x"] == {"pkg.a.y"} and graph["pkg.a.y"] == {"pkg.a.x", "pkg.b", "pkg.a"}
    assert ["pkg.a.x", "pkg.a.y", "pkg.a.x"] in cycles(graph, "pkg.a") and not cycles(graph, "pkg.b")
    assert _crossings(graph, "pkg.b", "pkg.a") == ["pkg.b -> pkg.a.x"]


def test_every_format_has_a_converter_and_a_runtime():
    from mobile_distill.export.formats import get
    from mobile_distill.export.registry import EXPORTERS
    from mobile_distill.runtime import RUNNERS

    assert FORMATS == ("onnx", "tflite", "coreml", "executorch") == tuple(EXPORTERS)  # registered by their own modules
    for fmt in FORMATS:
        converter = get(fmt)
        assert converter.convert.__module__ == converter.__name__, fmt
        runtime = importlib.import_module(f"mobile_distill.runtime.{fmt}")
        assert callable(converter.convert) and callable(converter.run), fmt
        assert RUNNERS[fmt].__module__ == runtime.__name__, fmt
    from mobile_distill.export.manifest import MODEL_SUFFIXES
    from mobile_distill.export.registry import SUFFIXES

    assert set(MODEL_SUFFIXES) == set(SUFFIXES)  # the manifest knows every format's files
