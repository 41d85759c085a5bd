"""A static check that a QDQ graph follows TensorRT's explicit-quantization rules (DESIGN.md §4).

TensorRT compiles QuantizeLinear/DequantizeLinear graphs when: the quantized type is INT8 with zero
point 0 (symmetric); per-channel weight scales sit on the output-channel axis; biases stay float (no
DequantizeLinear of an INT32 bias); weights are INT8 initializers read by a DequantizeLinear; every
QuantizeLinear feeds DequantizeLinear nodes only, with the same scale; and an activation's Q/DQ sits
on the input of an op TensorRT fuses it into. Each rule has a failing graph in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import QdqRuleError
from edgekit.onnx_graph import graph_maps

# ops whose inputs TensorRT's explicit quantization fuses a DequantizeLinear into
FUSABLE = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Concat", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Relu", "Sigmoid", "Mul", "Sub", "Reshape", "Transpose", "Flatten",
    "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Pad", "Gather", "Identity", "Clip",
    "ReduceMean", "Softmax", "LeakyRelu", "HardSwish", "HardSigmoid", "Div", "Pow", "Where",
}  # fmt: skip
WEIGHT_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": -1}  # output-channel axis of the weight


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


def _weight_axis(consumer: Any, rank: int) -> int | None:
    """The output-channel axis of the weight input of a Conv / ConvTranspose / Gemm / MatMul."""
    op = consumer.op_type
    if op == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    axis = WEIGHT_OPS.get(op)
    if axis is None:
        return None
    return axis % rank if rank else None


def check_qdq(model: Any) -> list[Violation]:
    """All rule violations in an ONNX ModelProto (empty when TensorRT can take the graph)."""
    from onnx import numpy_helper

    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def array(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    out: list[Violation] = []
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq:
        label = node.name or node.output[0]
        scale = array(node.input[1])
        zp = array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None or zp.dtype != np.int8:
            dtype = "uint8 (default)" if zp is None else str(zp.dtype)
            out.append(Violation("int8", label, f"quantized type is {dtype}; TensorRT wants int8"))
        elif np.any(zp != 0):
            out.append(Violation("zero-point", label, "zero point is not 0 (TensorRT is symmetric only)"))
        if scale is not None and np.any(scale <= 0):
            out.append(Violation("scale", label, "scale must be positive"))
        if node.op_type == "DequantizeLinear":
            src = array(node.input[0])
            if src is not None and src.dtype == np.int32:
                out.append(Violation("float-bias", label, "DequantizeLinear of an INT32 tensor (a quantized bias); keep biases float"))
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            w = node.input[1] if len(node.input) > 1 else ""
            wp = producers.get(w)
            if w in inits and inits[w].data_type == 1:
                # a float weight is fine only if the layer is deliberately left in float (no Q/DQ on its input)
                xp = producers.get(node.input[0])
                if xp is not None and xp.op_type == "DequantizeLinear":
                    out.append(Violation("int8-weights", node.name or node.output[0],
                                         "activation is quantized but the weight is a float initializer, not INT8 + DequantizeLinear"))
            if wp is not None and wp.op_type == "DequantizeLinear":
                src = array(wp.input[0])
                if src is None:
                    qp = producers.get(wp.input[0])
                    if qp is not None and qp.op_type == "QuantizeLinear" and qp.input[0] in inits:
                        out.append(Violation("int8-weights", wp.name or wp.output[0],
                                             "weight is quantized at run time from float; store it as an INT8 initializer"))
                    continue
                scale = array(wp.input[1])
                if scale is not None and scale.size > 1:
                    axis_attr = next((a.i for a in wp.attribute if a.name == "axis"), 1)
                    want = _weight_axis(node, src.ndim)
                    if want is not None and axis_attr % src.ndim != want:
                        out.append(Violation("per-channel-axis", wp.name or wp.output[0],
                                             f"per-channel scales on axis {axis_attr}; the output-channel axis is {want}"))
                    if want is not None and scale.size != src.shape[want]:
                        out.append(Violation("per-channel-axis", wp.name or wp.output[0],
                                             f"{scale.size} scales for {src.shape[want]} output channels"))
            if len(node.input) > 2 and node.input[2]:
                bp = producers.get(node.input[2])
                if bp is not None and bp.op_type == "DequantizeLinear":
                    out.append(Violation("float-bias", node.name or node.output[0], "bias comes through a DequantizeLinear; keep it float"))
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            label = node.name or node.output[0]
            users = consumers.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users):
                out.append(Violation("placement", label, "a QuantizeLinear must feed DequantizeLinear nodes only"))
                continue
            qs = array(node.input[1])
            for u in users:
                ds = array(u.input[1])
                if qs is not None and ds is not None and (qs.shape != ds.shape or not np.allclose(qs, ds)):
                    out.append(Violation("placement", u.name or u.output[0], "Q and DQ of one tensor have different scales"))
        if node.op_type == "DequantizeLinear" and array(node.input[0]) is None:
            for user in consumers.get(node.output[0], []):
                if user.op_type not in FUSABLE and user.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                    out.append(Violation("placement", node.name or node.output[0],
                                         f"activation Q/DQ feeds {user.op_type}, which TensorRT does not fuse it into"))
    return out


def check_file(path: Path) -> list[Violation]:
    import onnx

    return check_qdq(onnx.load(str(path)))


def assert_tensorrt_portable(path: Path) -> None:
    problems = check_file(path)
    if problems:
        listed = "; ".join(str(p) for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise QdqRuleError(f"the QDQ graph breaks TensorRT's rules: {listed}{more}")
