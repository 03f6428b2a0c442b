"""Import cycles and upward arrows in policy_export, counted from the import graph (grimp).

Run as ``python tests/import_graph.py`` for the listing; ``tests/test_import_graph.py`` holds both
counts at zero in ``make test``.

- A **cycle** is counted the way a directory view shows one: at every package, its children
  (modules, and sub-packages taken whole) are the nodes, and ``A -> B`` when anything in ``A``
  imports anything in ``B``; every strongly connected group of two or more siblings is one
  cycle. Lazy (function-level) and ``TYPE_CHECKING`` imports count: they are arrows too.
  A package's ``__init__`` is its facade and belongs to no sibling.
- An **upward arrow** is an import from a layer to a layer above it in the order of the
  ``layers`` contract in ``pyproject.toml`` (the one ``lint-imports`` enforces), lazy imports
  included; a module in no layer is reported, since it escapes the check.
"""

from __future__ import annotations

import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import grimp

ROOT = "policy_export"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(ROOT, include_external_packages=False, cache_dir=None)


def _child_of(module: str, package: str) -> str | None:
    """The direct child of ``package`` that ``module`` lies in (None: the package's __init__ or outside)."""
    prefix = package + "."
    if not module.startswith(prefix):
        return None
    return prefix + module[len(prefix) :].split(".", 1)[0]


def _sccs(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(sorted(group))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def cycles(graph: grimp.ImportGraph | None = None) -> list[list[str]]:
    """Every group of sibling modules/packages that import each other (directly or round a loop)."""
    graph = graph or _graph()
    modules = graph.modules
    packages = {m.rsplit(".", 1)[0] for m in modules if "." in m} | {ROOT}
    found = []
    for package in sorted(packages):
        nodes = {c for m in modules if (c := _child_of(m, package)) is not None}
        edges: dict[str, set[str]] = defaultdict(set)
        for importer in modules:
            a = _child_of(importer, package)
            if a is None:
                continue
            for imported in graph.find_modules_directly_imported_by(importer):
                b = _child_of(imported, package)
                if b is not None and b != a:
                    edges[a].add(b)
        found += [g for g in _sccs(nodes, edges) if len(g) > 1]
    return found


def layers() -> list[set[str]]:
    """The layers contract of pyproject.toml, top first, each a set of module names."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    contract = next(c for c in config if c["type"] == "layers")
    (container,) = contract["containers"]
    out = []
    for layer in contract["layers"]:
        names = layer.strip("()").replace(":", "|").split("|")
        out.append({f"{container}.{n.strip()}" for n in names if n.strip()})
    return out


def upward_arrows(graph: grimp.ImportGraph | None = None) -> list[str]:
    """Imports from a lower layer into a higher one (and modules that belong to no layer)."""
    graph = graph or _graph()
    order = layers()

    def level(module: str) -> int | None:
        for i, names in enumerate(order):
            if any(module == n or module.startswith(n + ".") for n in names):
                return i
        return None

    arrows = []
    for importer in sorted(graph.modules):
        if importer == ROOT:
            continue
        a = level(importer)
        if a is None:
            arrows.append(f"{importer} is in no layer")
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            b = level(imported)
            if b is not None and b < a:
                arrows.append(f"{importer} -> {imported}")
    return arrows


def main() -> int:
    graph = _graph()
    found, arrows = cycles(graph), upward_arrows(graph)
    for group in found:
        print("cycle:", " <-> ".join(group))
    for arrow in arrows:
        print("upward:", arrow)
    print(f"{len(found)} cycles, {len(arrows)} upward arrows")
    return 1 if found or arrows else 0


if __name__ == "__main__":
    sys.exit(main())
