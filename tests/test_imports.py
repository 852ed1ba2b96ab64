"""The package's import structure: a declared layering, no circles, a self-contained model family.

Every module under ``src/substrate_lm`` is read with :mod:`ast` (nothing is imported), and every
import statement in it counts: at the top of the file, inside a function, under ``if
TYPE_CHECKING``. An import placed inside a function still ties the two modules together; it only
hides a circle until the function runs. The checks:

1. every module belongs to a package (or top-level module) named in :data:`LAYERS`;
2. no import goes *up* :data:`LAYERS` (a lower package never imports a higher one: the model never
   imports the trainer, the trainer never imports docking, evaluation or the CLI);
3. no circle among the package's modules (importing ``a.b.c`` also runs ``a/__init__`` and
   ``a/b/__init__``, so those count as imported too, unless the importer is inside them);
4. ``substrate_lm.modeling`` imports only torch, transformers, the standard library and its own
   files (they are copied next to the weights and must load anywhere with ``trust_remote_code``);
5. library code never imports ``substrate_lm.cli``.

A failure names the file, the line and the import statement.
"""

from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "substrate_lm"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: The package order, lowest first: a module may import modules of its own entry and of the
#: entries before it, never of an entry after it. ``substrate_lm`` is the package root
#: (``substrate_lm/__init__.py``: ``__version__``); every other entry is a sub-package or a
#: top-level module.
LAYERS: list[str] = [
    "errors",       # SubstrateError: imports nothing of ours
    PACKAGE,        # the root: __version__ (imports errors)
    "logutil",
    "fsutil",
    "settings",     # the one settings engine
    "modeling",     # the self-contained HF model files (torch + transformers only, see below)
    "tokenizer",
    "substrates",
    "presets",
    "world",
    "factory",      # build a model from a preset, a substrate and a tokenizer
    "export",
    "loading",
    "convert",
    "data",
    "components",   # the causal-LM loss and LoRA, below every loop that uses them
    "training",
    "evaluation",
    "analysis",
    "docking",
    "experiments",
    "cli",          # the command line: the top, nothing of ours imports it
]

#: What the model files may import besides the standard library and their siblings.
MODELING_THIRD_PARTY = {"torch", "transformers"}


@dataclass(frozen=True)
class Import:
    """One first-party import: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int
    text: str
    level: int = 0

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parents[1])}:{self.line}: `{self.text}`"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    assert found, f"no modules found under {SRC}"
    return found


def _statement_text(source: str, node: ast.stmt) -> str:
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    return " ".join(text.split())


def _existing(name: str) -> str:
    """The longest prefix of ``name`` that is one of our modules (``a.b.func`` -> ``a.b``)."""
    mods = modules()
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from X import ...`` statement names (None when it goes above the root)."""
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        if node.level - 1 > len(base):
            return None
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=None)
def raw_imports() -> dict[str, list[tuple[ast.stmt, str]]]:
    """Every import statement of every module (at any depth), with the module's source text."""
    out = {}
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        out[name] = [(node, source) for node in ast.walk(tree)
                     if isinstance(node, (ast.Import, ast.ImportFrom))]
    return out


@functools.lru_cache(maxsize=None)
def first_party_imports() -> list[Import]:
    """Every import of one of our modules by another, resolved to module names."""
    mods = modules()
    found: list[Import] = []
    for name, statements in raw_imports().items():
        path = mods[name]
        is_package = path.name == "__init__.py"
        for node, source in statements:
            text = _statement_text(source, node)
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve_from(name, is_package, node)
                if base is None:
                    pytest.fail(f"{path}:{node.lineno}: `{text}` goes above the package root")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                target = _existing(target)
                if target != name:
                    found.append(Import(name, target, path, node.lineno, text,
                                        getattr(node, "level", 0)))
    return found


def layer_of(module: str) -> str:
    """The :data:`LAYERS` entry a module belongs to (``substrate_lm.training.trainer`` -> ``training``)."""
    parts = module.split(".")
    return PACKAGE if len(parts) == 1 else parts[1]


def _rank(layer: str) -> int:
    return LAYERS.index(layer)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.lru_cache(maxsize=None)
def graph() -> dict[str, dict[str, Import]]:
    """module -> {imported module: the first statement that imports it}.

    Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so a package that the
    importer is not itself inside counts as imported by the same statement.
    """
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules()}
    for imp in first_party_imports():
        own = set(_ancestors(imp.source)) | {imp.source}
        for target in [*_ancestors(imp.target), imp.target]:
            if target in own or target not in edges:
                continue
            edges[imp.source].setdefault(target, imp)
    return edges


# ----------------------------------------------------------------------------------------------


def test_every_module_is_in_a_declared_layer():
    unknown = sorted({layer_of(m) for m in modules()} - set(LAYERS))
    assert not unknown, (f"packages or modules missing from LAYERS in {__file__}: {unknown}; add each at "
                         f"the place in the order that its imports allow")


def test_no_import_goes_up_the_package_order():
    bad = []
    for imp in first_party_imports():
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src == dst or src not in LAYERS or dst not in LAYERS:
            continue
        if _rank(dst) > _rank(src):
            bad.append(f"  {imp.where()}\n      {src} (layer {_rank(src)}) imports {imp.target} "
                       f"({dst}, layer {_rank(dst)}), which is above it")
    if bad:
        order = " < ".join(LAYERS)
        pytest.fail(f"{len(bad)} import(s) go up the package order ({order}):\n" + "\n".join(bad)
                    + "\nmove the shared code down to the lower package (or to substrate_lm.components), "
                      "or pass it in as an argument")


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _a_cycle(start: str, members: set[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside one strongly connected component."""
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(edges[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if child in members and child not in seen:
                    seen.add(child)
                    prev[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{start} is in no cycle")  # pragma: no cover


def test_no_import_cycles():
    edges = graph()
    report = []
    for comp in _strongly_connected(edges):
        # one shortest circle through each module not yet shown, until every module of the tangle is
        lines = [f"  {len(comp)} modules import each other: {', '.join(comp)}"]
        shown: set[str] = set()
        for start in comp:
            if start in shown:
                continue
            cycle = _a_cycle(start, set(comp), edges)
            shown.update(cycle)
            lines.append(f"    circle: {' -> '.join(cycle)}")
            for a, b in zip(cycle, cycle[1:]):
                lines.append(f"      {edges[a][b].where()}  ({a} -> {b})")
        report.append("\n".join(lines))
    if report:
        pytest.fail(f"{len(report)} import tangle(s) (imports inside functions included):\n"
                    + "\n".join(report)
                    + "\nbreak each by moving what both sides need into the lower module")


def test_modeling_imports_only_torch_transformers_stdlib_and_siblings():
    allowed = set(sys.stdlib_module_names) | MODELING_THIRD_PARTY | {"__future__"}
    mods = modules()
    bad = []
    for name, statements in raw_imports().items():
        if layer_of(name) != "modeling":
            continue
        path = mods[name]
        for node, source in statements:
            text = _statement_text(source, node)
            loc = f"  {path.relative_to(SRC.parents[1])}:{node.lineno}: `{text}`"
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level > 1 or (path.name == "__init__.py" and node.level != 1):
                    bad.append(f"{loc}\n      reaches outside substrate_lm/modeling")
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] not in allowed:
                    bad.append(f"{loc}\n      imports {n!r}: the model files may import only torch, "
                               f"transformers, the standard library and each other (relatively)")
    if bad:
        pytest.fail("substrate_lm.modeling must stay self-contained (its files are copied next to the "
                    "weights and run with trust_remote_code):\n" + "\n".join(bad))


def test_library_code_never_imports_the_cli():
    bad = [f"  {imp.where()}  ({imp.source} -> {imp.target})" for imp in first_party_imports()
           if layer_of(imp.target) == "cli" and layer_of(imp.source) != "cli"]
    if bad:
        pytest.fail("library code imports substrate_lm.cli (the command line sits on top of the library, "
                    "never below it):\n" + "\n".join(bad))


def test_the_checks_see_imports_inside_functions():
    """The reader itself: relative imports resolve, imports in function bodies count."""
    imps = first_party_imports()
    # a known top-level import, resolved from its relative form
    assert any(i.source == f"{PACKAGE}.training.trainer" and i.target == f"{PACKAGE}.components.loss"
               for i in imps)
    # a known import inside a function (cli commands import the library lazily)
    assert any(layer_of(i.source) == "cli" and layer_of(i.target) == "training" for i in imps)
    assert _resolve_from("a.b.c", False, ast.parse("from ..x import y").body[0]) == "a.x"
    assert _resolve_from("a.b", True, ast.parse("from . import y").body[0]) == "a.b"
    edges = {"a": {"b": None}, "b": {"c": None}, "c": {"a": None}, "d": {"a": None}}
    assert _strongly_connected(edges) == [["a", "b", "c"]]
    assert _a_cycle("a", {"a", "b", "c"}, edges) == ["a", "b", "c", "a"]
