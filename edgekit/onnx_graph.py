"""Helpers over an ONNX graph (a ``GraphProto``) shared by the quantize step, its checker and the
targets' rewrites: they sit below all three."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import require


def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes by name, as Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def graph_maps(graph: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """An ONNX graph's initializers by name, the node producing each tensor, the nodes reading it."""
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, producers, consumers


def drop_unused(graph: Any) -> None:
    """Remove initializers nothing reads and shape records of tensors nothing produces (or whose
    element type a rewrite may have changed: QuantizeLinear outputs)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    produced = {o for n in graph.node for o in n.output}
    q_out = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    for vi in [v for v in graph.value_info if v.name not in produced or v.name in q_out]:
        graph.value_info.remove(vi)


def dequantized_weight(dq: Any, inits: dict[str, Any], dtype: Any = np.float64) -> np.ndarray | None:
    """What a DequantizeLinear computes from constant inputs (a stored INT8 weight), or None when its
    input is not an initializer. Per-tensor or per-channel (the node's ``axis``, default 1)."""
    from onnx import numpy_helper

    if dq.input[0] not in inits:
        return None
    q = numpy_helper.to_array(inits[dq.input[0]]).astype(dtype)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(dtype)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(dtype) if len(dq.input) > 2 and dq.input[2] else np.zeros((), dtype)
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim] = -1
    return np.asarray((q - zero.reshape(shape if zero.size > 1 else [])) * scale.reshape(shape if scale.size > 1 else []))


def cpu_session(model: Path | bytes, *, threads: int = 1, optimization: str = "disabled",
                config: dict[str, str] | None = None, optimized_path: Path | None = None,
                profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session for edgekit's own use (statistics, checks, the reference kernels):
    ``optimization="disabled"`` runs the graph exactly as ONNX defines it (a QDQ graph's own
    arithmetic, the same on every CPU); ``"all"`` as ONNX Runtime would. ``profile_prefix``: ONNX
    Runtime's profiler writes every kernel's time to a JSON file of that prefix. Targets make their own."""
    require("onnxruntime", "onnxruntime", "running ONNX models")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"])
