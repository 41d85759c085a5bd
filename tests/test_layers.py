"""edgekit's imports, function-level ones included, form no loop, and the edges that once closed one
stay gone: building a model does not depend on a compression step, the exporter does not depend on
checkpoints, a step does not import another step (issue: one layering)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
STEPS = ("edgekit.steps.distill", "edgekit.steps.prune", "edgekit.steps.qat", "edgekit.steps.quantize")


def module_names() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the edgekit modules it imports anywhere in its body (``from a import b`` counts as
    ``a.b`` when that is a module)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("edgekit"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges[name].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name.startswith("edgekit"))
    return {m: {t for t in ts if t in mods and t != m} for m, ts in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_loop_through_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "edgekit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from edgekit import b\n")
    (pkg / "b.py").write_text("def f():\n    from edgekit.a import g\n")
    (pkg / "c.py").write_text("import edgekit.a\n")
    mods = {n: pkg / f"{n.split('.')[-1]}.py" for n in ("edgekit.a", "edgekit.b", "edgekit.c")}
    assert cycles(import_edges(mods)) == [["edgekit.a", "edgekit.b"]]


def test_edgekit_imports_form_no_loop() -> None:
    assert cycles(import_edges(module_names())) == []


@pytest.mark.parametrize(("importer", "forbidden", "why"), [
    ("edgekit.models", "edgekit.steps", "rebuilding a model must not depend on a compression step"),
    ("edgekit.export", "edgekit.checkpoint", "the exporter is below the artifacts it exports"),
    ("edgekit.evaluate", "edgekit.build", "evaluating is below building"),
    ("edgekit.steps", "edgekit.targets", "a step must not depend on a target"),
    ("edgekit.onnx_graph", "edgekit.steps", "the ONNX graph helpers are below the steps"),
])
def test_no_edge_runs_the_wrong_way(importer: str, forbidden: str, why: str) -> None:
    edges = import_edges(module_names())
    wrong = sorted(t for m, ts in edges.items() if m == importer or m.startswith(importer + ".")
                   for t in ts if t == forbidden or t.startswith(forbidden + "."))
    assert wrong == [], why


def test_steps_do_not_import_each_other() -> None:
    edges = import_edges(module_names())
    for step in STEPS:
        assert not edges[step] & (set(STEPS) - {step}), f"{step} imports another step"


# The layers, from the ground up (README, "For contributors"): a module imports only from its own
# layer or the ones below. The longest matching prefix places a module.
LAYERS: list[tuple[str, ...]] = [
    ("edgekit", "edgekit.errors", "edgekit.console", "edgekit.iospec", "edgekit.metrics", "edgekit.resources", "edgekit.cpu"),
    ("edgekit.artifact", "edgekit.recipe", "edgekit.data", "edgekit.trust", "edgekit.external_data"),
    ("edgekit.onnx_graph", "edgekit.models", "edgekit.torchutil"),
    ("edgekit.export", "edgekit.checkpoint", "edgekit.targets", "edgekit.importer"),
    ("edgekit.train", "edgekit.evaluate"),
    ("edgekit.steps",),
    ("edgekit.build", "edgekit.bench", "edgekit.package", "edgekit.compress", "edgekit.runtime", "edgekit.explain",
     "edgekit.verify", "edgekit.doctor", "edgekit.demo"),
    ("edgekit.commands", "edgekit.cli", "edgekit.__main__"),
]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p != "edgekit" and module.startswith(p + "."))) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})" for m, ts in edges.items() for t in ts
                  if (layer_of(t) or 0) > (layer_of(m) or 0))


def test_every_module_has_a_layer() -> None:
    assert [m for m in module_names() if layer_of(m) is None] == []


def test_no_import_runs_upward() -> None:
    assert upward(import_edges(module_names())) == []


def test_the_checker_finds_an_upward_import() -> None:
    edges = {"edgekit.models.structure": {"edgekit.steps.prune"}, "edgekit.build": {"edgekit.data"}}
    assert upward(edges) == ["edgekit.models.structure (layer 2) imports edgekit.steps.prune (layer 5)"]
