"""The import graph of gen4d: no cycles, and dependencies run one way (STYLE.md: cameras and
gaussians at the bottom, render above them, recon and train above those, cli on top;
``diffusion/`` does not import ``render/``; ``densify/`` works on any model with the
:class:`gen4d.densify.ops.DensifiableModel` interface and does not import ``recon/``).

The graph is read from the sources (every ``import``, at module level or inside a function), so a
lazy import that only hides a cycle still counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gen4d"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """gen4d module -> the gen4d modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "gen4d.render.core" in graph["gen4d.render"]
    assert "gen4d.densify.ops" in graph["gen4d.densify.strategy"]  # `from gen4d.densify import ops`


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


# (importer prefix, forbidden prefix): the layering rules of STYLE.md.
FORBIDDEN = [
    ("gen4d.diffusion", "gen4d.render"),
    ("gen4d.densify", "gen4d.recon"),
    ("gen4d.render", "gen4d.recon"),
    ("gen4d.render", "gen4d.densify"),
    ("gen4d.render", "gen4d.deform"),
    # The static Gaussians are below the renderer; gen4d.gaussians.dynamic (the deformable model,
    # which renders itself at each camera's time) sits above it (EXEMPT).
    ("gen4d.gaussians", "gen4d.render"),
    ("gen4d.gaussians", "gen4d.recon"),
    ("gen4d.cameras", "gen4d.render"),
    ("gen4d.cameras", "gen4d.gaussians"),
    ("gen4d._checks", "gen4d."),
    ("gen4d.metrics", "gen4d.recon"),
    ("gen4d.metrics", "gen4d.train"),
]


# (importer module, forbidden prefix) pairs a rule above does not cover.
EXEMPT = {("gen4d.gaussians.dynamic", "gen4d.render")}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix.rstrip(".") + ".")


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN, ids=[f"{a}-x-{b}" for a, b in FORBIDDEN])
def test_layering(importer, forbidden):
    graph = import_graph()
    bad = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        if _within(source, importer) and (source, forbidden) not in EXEMPT
        for target in targets
        if _within(target, forbidden) and not _within(target, importer)
    )
    assert not bad, bad


def test_every_module_imports_first():
    """Each module imports with no other gen4d module loaded before it (in one fresh interpreter,
    forgetting gen4d's modules between imports), so no module depends on an import order."""
    optional = ("gen4d.viewer", "gen4d.data.blender_worker")  # need viser / bpy
    names = [name for name in _modules() if not name.startswith(optional) and not name.endswith("__main__")]
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'gen4d' or m.startswith('gen4d.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
