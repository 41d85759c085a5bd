"""The suite's own honesty: no assertion in tests/ or benchmarks/ is true whatever it checks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _always_true(node: ast.expr) -> bool:
    """``x or True``, ``True``, a non-empty literal: an assert of this passes whatever ``x`` is."""
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        return any(_always_true(v) for v in node.values)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return all(_always_true(v) for v in node.values)
    return isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and bool(getattr(node, "elts", getattr(node, "keys", [])))


def _vacuous(source: str) -> list[int]:
    return [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assert) and _always_true(n.test)]


def test_the_check_finds_vacuous_asserts() -> None:
    assert _vacuous("assert x or True\nassert (a, 'why')\nassert y\nassert y or z\n") == [1, 2]


def test_no_assertion_can_never_fail() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for folder in ("tests", "benchmarks", "edgekit")
             for path in sorted((ROOT / folder).rglob("*.py")) for line in _vacuous(path.read_text())]
    assert not found, found
