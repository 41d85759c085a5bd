"""Graph work around ONNX Runtime's quantizer: pre-processing, the structural clean-ups of the QDQ
graph it writes (output pairs, excluded inputs, float regions), what a fallback keeps together and
each output's quantization step. Everything here reads and writes ONNX files; the statistics
measured over calibration data (bias correction, smoothing, noise) are in
:mod:`edgekit.steps.qdq_stats`.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.onnx_graph import dequantized_weight, drop_unused
from edgekit.onnx_graph import graph_maps as _maps

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def save(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def preprocess(src: Path, dst: Path) -> None:
    """ORT's quant_pre_process (shape inference, constant folding, BN folding), then: name every node
    (exclusion is by name), drop opset imports nobody uses, and fold Gemm's beta into its bias (ORT's
    quantizer resets beta to 1 without scaling the bias)."""
    from onnx import numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    cwd = os.getcwd()
    src, dst = src.resolve(), dst.resolve()
    os.chdir(dst.parent)  # ORT's symbolic shape inference writes temporary files into the working directory
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src.resolve()), str(dst.resolve()))
            except Exception:  # noqa: BLE001 - ORT's symbolic shape inference raises plain Exception on some transformer graphs
                quant_pre_process(str(src.resolve()), str(dst.resolve()), skip_symbolic_shape=True)
    finally:
        os.chdir(cwd)
        logging.getLogger().setLevel(quiet)
    model = load(dst)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        if node.op_type == "Gemm":
            beta = next((a for a in node.attribute if a.name == "beta"), None)
            if beta is not None and beta.f != 1.0 and len(node.input) > 2 and node.input[2] in inits:
                bias = numpy_helper.to_array(inits[node.input[2]]) * beta.f
                new = numpy_helper.from_array(bias.astype(np.float32), f"{node.input[2]}__beta_folded_{i}")
                graph.initializer.append(new)
                node.input[2] = new.name
                beta.f = 1.0
    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0) >= 14:  # HardSwish: opset 14+
        _refuse_hardswish(graph)
    used = {n.domain for n in graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    drop_unused(graph)
    save(model, dst)


def _refuse_hardswish(graph: Any) -> int:
    """ORT's pre-processing inlines HardSwish as ``Mul(x, HardSigmoid(x))``; put the op back. Split,
    the quantizer cannot tell the activation from a gate and OpenVINO no longer fuses it into the
    convolution (MobileNetV3 INT8 ran slower than FP32 for it)."""
    import onnx

    _, producers, consumers = _maps(graph)
    fused = 0
    for mul in [n for n in graph.node if n.op_type == "Mul" and len(n.input) == 2]:
        for k in (0, 1):
            hs = producers.get(mul.input[k])
            x = mul.input[1 - k]
            if hs is None or hs.op_type != "HardSigmoid" or hs.input[0] != x or len(consumers.get(hs.output[0], [])) != 1:
                continue
            attrs = {a.name: a.f for a in hs.attribute}
            if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
                continue
            at = list(graph.node).index(mul)
            graph.node.remove(mul)
            graph.node.remove(hs)
            graph.node.insert(at - 1, onnx.helper.make_node("HardSwish", [x], [mul.output[0]], name=f"{mul.name}_hardswish"))
            fused += 1
            break
    return fused


GATES = ("HardSigmoid", "Sigmoid")
POOLS = ("GlobalAveragePool", "ReduceMean")


def squeeze_excite_nodes(path: Path) -> set[str]:
    """The nodes of squeeze-and-excite branches: ``x -> global pool -> 1x1 layers -> gate -> Mul(x, .)``.
    They run on a 1x1 map, so INT8 saves little there and every Q/DQ costs a reorder. NNCF 3.4 does
    quantize them (not the gate): on OpenVINO that measured within noise of keeping them float on
    MobileNetV3 (x86-avx512-vnni, issue 16's notes), so they stay float by default."""
    graph = load(path).graph
    _, producers, _ = _maps(graph)
    found: set[str] = set()
    for mul in (n for n in graph.node if n.op_type == "Mul" and len(n.input) == 2):
        for k in (0, 1):
            gate = producers.get(mul.input[k])
            if gate is None or gate.op_type not in GATES:
                continue
            chain, node = [gate], producers.get(gate.input[0])
            while node is not None and node.op_type not in POOLS and len(chain) < 8:
                chain.append(node)
                node = producers.get(node.input[0])
            if node is not None and node.op_type in POOLS and node.input[0] == mul.input[1 - k]:
                found |= {n.name for n in chain} | {node.name}
    return found


def is_transformer(path: Path) -> bool:
    graph = load(path).graph
    ops = {n.op_type for n in graph.node}
    return bool({"LayerNormalization", "Softmax"} & ops) and "MatMul" in ops


def weighted_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of Conv/Gemm/MatMul nodes whose weight is a constant."""
    graph = load(path).graph
    inits = {t.name for t in graph.initializer}
    return [(n.name, n.op_type) for n in graph.node if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits]


def drop_graph_output_qdq(path: Path) -> int:
    """Keep model outputs float: remove Q -> DQ pairs that end in a graph output."""
    model = load(path)
    graph = model.graph
    _, producers, consumers = _maps(graph)
    removed = 0
    for out in graph.output:
        dq = producers.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1:
            continue
        src = q.input[0]
        if len(consumers.get(src, [])) != 1:
            continue
        graph.node.remove(q)
        graph.node.remove(dq)
        for node in graph.node:
            for k, o in enumerate(node.output):
                if o == src:
                    node.output[k] = out.name
        removed += 1
    drop_unused(graph)
    save(model, path)
    return removed


def unquantize_excluded_inputs(path: Path, excluded: set[str]) -> int:
    """ORT shares one Q/DQ pair among all consumers of a tensor, so an excluded node can still read a
    quantized input; re-wire such inputs to the float tensor."""
    model = load(path)
    graph = model.graph
    inits, producers, _ = _maps(graph)
    fixed = 0
    for node in graph.node:
        if node.name not in excluded:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
                fixed += 1
    graph_nodes = list(graph.node)
    _, _, consumers = _maps(graph)
    for node in graph_nodes:  # Q/DQ pairs nobody reads any more
        if node.op_type == "DequantizeLinear" and not consumers.get(node.output[0]) and node.output[0] not in {o.name for o in graph.output}:
            graph.node.remove(node)
    _, _, consumers = _maps(graph)
    for node in list(graph.node):
        if node.op_type == "QuantizeLinear" and not consumers.get(node.output[0]):
            graph.node.remove(node)
    drop_unused(graph)
    save(model, path)
    return fixed


def fallback_groups(path: Path, quantized_ops: list[str]) -> dict[str, set[str]]:
    """For each weighted node, the nodes to keep in float with it: the quantizable non-weighted ops on
    its input path back to the previous weighted op (Relu, Add, pooling...) and the activation right
    after it. Falling back a Conv alone would leave the clipped activation Q/DQ around it in place."""
    graph = load(path).graph
    inits, producers, consumers = _maps(graph)
    quantizable = set(quantized_ops) - set(WEIGHTED)
    groups: dict[str, set[str]] = {}
    for node in graph.node:
        if node.op_type not in WEIGHTED or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = {node.name}
        stack = [node.input[0]]
        seen: set[str] = set()
        while stack:
            tensor = stack.pop()
            prod = producers.get(tensor)
            if prod is None or prod.name in seen or prod.op_type in WEIGHTED:
                continue
            seen.add(prod.name)
            if prod.op_type in quantizable:
                group.add(prod.name)
            stack.extend(i for i in prod.input if i and i not in inits)
        for user in consumers.get(node.output[0], []):
            if user.op_type in ("Relu", "Clip") and user.op_type in quantizable:
                group.add(user.name)
        groups[node.name] = group
    return groups


# consumers an activation Q/DQ pair is worth keeping for (quantized ops TensorRT and the CPU kernels fuse)
KEEP_FOR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Flatten", "Reshape", "Concat", "QuantizeLinear", "DequantizeLinear"}


def float_consumers_read_float(path: Path) -> int:
    """A float op (Shape, HardSigmoid, a squeeze-excite Mul, a fallback layer...) reading a DQ output
    gets the float tensor instead, and pairs nobody quantized reads any more are removed: a float
    region is entered once, not through a Q/DQ round trip per op (and TensorRT's placement rules hold)."""
    model = load(path)
    graph = model.graph
    inits, producers, consumers = _maps(graph)
    outputs = {o.name for o in graph.output}
    rewired = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        for user in consumers.get(dq.output[0], []):
            if user.op_type in KEEP_FOR:
                continue
            for k, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[k] = q.input[0]
                    rewired += 1
    _, _, consumers = _maps(graph)
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits]:
        if not consumers.get(dq.output[0]) and dq.output[0] not in outputs:
            graph.node.remove(dq)
    _, _, consumers = _maps(graph)
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if not consumers.get(q.output[0]):
            graph.node.remove(q)
    drop_unused(graph)
    save(model, path)
    return rewired


# --------------------------------------------------------------------------- output steps

_PASS_THROUGH = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def output_steps(path: Path) -> dict[str, float]:
    """Per graph output, its quantization step in the output's own units: what one rounding step of
    the last quantized tensor moves the output by. An output read from a DequantizeLinear moves by its
    scale; one computed by a Conv/Gemm/MatMul from a quantized input ``x`` by ``scale_x * ||w_j||_2``
    at most over output channels (one-step rounding differences across the input add in quadrature).
    Shape-only ops and a bias Add pass through. Outputs with no such step (e.g. after a Softmax, or a
    float graph) are left out."""
    model = load(path)
    graph = model.graph
    inits, producers, _ = _maps(graph)
    steps: dict[str, float] = {}
    for out in graph.output:
        node = producers.get(out.name)
        while node is not None and (node.op_type in _PASS_THROUGH or (node.op_type == "Add" and any(i in inits for i in node.input))):
            node = producers.get(next(i for i in node.input if i not in inits))
        step = _node_step(graph, node, inits, producers) if node is not None else None
        if step is not None and step > 0:
            steps[out.name] = step
    return steps


def _scale_of(dq: Any, inits: dict[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64) if dq.input[1] in inits else None


def _node_step(graph: Any, node: Any, inits: dict[str, Any], producers: dict[str, Any]) -> float | None:
    if node.op_type == "DequantizeLinear":
        scale = _scale_of(node, inits)
        return None if scale is None else float(scale.max())
    if node.op_type not in WEIGHTED or len(node.input) < 2:
        return None
    x_dq, w_dq = producers.get(node.input[0]), producers.get(node.input[1])
    if x_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq is None or w_dq.op_type != "DequantizeLinear":
        return None
    scale_x, w = _scale_of(x_dq, inits), dequantized_weight(w_dq, inits)
    if scale_x is None or w is None or scale_x.size != 1:
        return None
    if node.op_type in ("Conv", "ConvTranspose"):
        axis_out = 0 if node.op_type == "Conv" else 1
        norms = np.sqrt((np.moveaxis(w, axis_out, 0).reshape(w.shape[axis_out], -1) ** 2).sum(1))
    elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1))
    else:  # MatMul / Gemm: weight (in, out)
        norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(0))
    return float(scale_x.item() * norms.max())
