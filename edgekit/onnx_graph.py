"""Helpers over an ONNX graph (a ``GraphProto``) shared by the quantize step, its checker and the
targets' rewrites: they sit below all three."""

from __future__ import annotations

from typing import Any


def graph_maps(graph: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """An ONNX graph's initializers by name, the node producing each tensor, the nodes reading it."""
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, producers, consumers
