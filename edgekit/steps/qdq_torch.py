"""A QDQ ONNX graph run by torch, differentiably, with trainable float weights: what the ``qat`` step
trains. Every node of the graph is one torch operation, so the rounding is the graph's own, at the
graph's own places: activation QuantizeLinear -> DequantizeLinear pairs round with their fixed scale
and zero point (round half to even, saturating, straight-through gradients), and each INT8 weight
is a float parameter (from the float graph the QDQ graph was made from) rounded per channel as ONNX
Runtime's quantizer rounds it (symmetric, scale max|w|/127, -127..127). Biases train in float.
``write_back`` puts the trained weights into the float graph, which the quantize step then quantizes
with the same ranges: the stored QDQ graph computes what was trained.

The op set is what CNN/MLP graphs use after ONNX Runtime's pre-processing; another op is a clear
error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import ModelError
from edgekit.onnx_graph import attributes, graph_maps

WEIGHTED = ("Conv", "Gemm", "MatMul")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()  # torch.round: half to even, as QuantizeLinear


class QdqGraph(nn.Module):
    """``forward(*inputs)`` computes the QDQ graph's first output (inputs in the graph's order)."""

    def __init__(self, qmodel: Any, fmodel: Any) -> None:
        from onnx import numpy_helper

        super().__init__()
        graph = qmodel.graph
        inits, producers, _ = graph_maps(graph)
        f_nodes = {n.name: n for n in fmodel.graph.node}
        f_inits = {t.name: t for t in fmodel.graph.initializer}
        self.nodes = list(graph.node)
        self.inputs = [i.name for i in graph.input if i.name not in inits]
        self.output = graph.output[0].name
        self.params = nn.ParameterDict()
        self.bias_of: dict[str, str] = {}  # bias initializer of the QDQ graph -> parameter key
        self.trained: dict[str, str] = {}  # parameter key -> the float graph's initializer it writes back to
        self.weight_of: dict[str, tuple[str, int]] = {}  # weight DQ output -> (parameter key, channel axis)
        for node in self.nodes:
            if node.op_type not in WEIGHTED or len(node.input) < 2 or node.name not in f_nodes:
                continue
            dq, fnode = producers.get(node.input[1]), f_nodes[node.name]
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or fnode.input[1] not in f_inits:
                continue
            weight = numpy_helper.to_array(f_inits[fnode.input[1]]).astype(np.float32)
            key = f"w{len(self.trained)}"
            self.params[key] = nn.Parameter(torch.from_numpy(weight.copy()))
            self.trained[key] = fnode.input[1]
            axis = int(attributes(dq).get("axis", 1)) % weight.ndim
            self.weight_of[dq.output[0]] = (key, axis)
            if len(node.input) > 2 and node.input[2] and len(fnode.input) > 2 and fnode.input[2] in f_inits:
                bkey = f"b{len(self.trained)}"
                self.params[bkey] = nn.Parameter(torch.from_numpy(numpy_helper.to_array(f_inits[fnode.input[2]]).astype(np.float32).copy()))
                self.trained[bkey] = fnode.input[2]
                self.bias_of[node.input[2]] = bkey
        unknown = sorted({n.op_type for n in self.nodes} - set(OPS) - {"QuantizeLinear", "DequantizeLinear"})
        if unknown:
            raise ModelError(f"qat runs the graph in torch and does not know the op(s) {', '.join(unknown)}",
                             hint="quantize this model post-training (recipe int8), or keep those layers out of the graph")
        self.const_key: dict[str, str] = {}  # constant initializers, as buffers (they follow .to(device))
        for name, init in inits.items():
            if name not in self.bias_of:
                self.const_key[name] = f"c{len(self.const_key)}"
                self.register_buffer(self.const_key[name], torch.from_numpy(np.array(numpy_helper.to_array(init))),
                                     persistent=False)

    def _value(self, name: str, env: dict[str, Any]) -> Any:
        if name in env:
            return env[name]
        if name in self.bias_of:
            return self.params[self.bias_of[name]]
        value = getattr(self, self.const_key[name])
        return value

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = dict(zip(self.inputs, args, strict=False)) | kwargs
        for node in self.nodes:
            op = node.op_type
            if op == "DequantizeLinear" and node.output[0] in self.weight_of:
                key, axis = self.weight_of[node.output[0]]
                w = self.params[key]
                dims = [d for d in range(w.ndim) if d != axis]
                shape = [1] * w.ndim
                shape[axis] = -1
                scale = (w.detach().abs().amax(dim=dims) / 127).clamp(min=1e-12).reshape(shape)
                env[node.output[0]] = torch.clamp(_round_ste(w / scale), -127, 127) * scale
                continue
            ins = [self._value(i, env) if i else None for i in node.input]
            if op == "QuantizeLinear":
                x, scale = ins[0], ins[1]
                zero = ins[2] if len(ins) > 2 and ins[2] is not None else torch.zeros((), dtype=torch.uint8)
                info = np.iinfo({torch.uint8: np.uint8, torch.int8: np.int8}[zero.dtype])
                assert x is not None and scale is not None  # noqa: S101 - a Q node has both
                env[node.output[0]] = torch.clamp(_round_ste(x / scale.float()) + zero.float(), info.min, info.max)
            elif op == "DequantizeLinear":
                k, scale = ins[0], ins[1]
                zero = ins[2] if len(ins) > 2 and ins[2] is not None else torch.zeros(())
                assert k is not None and scale is not None  # noqa: S101 - a DQ node has both
                env[node.output[0]] = (k.float() - zero.float()) * scale.float()
            else:
                result = OPS[op](ins, attributes(node))
                for name, value in zip(node.output, result if isinstance(result, tuple) else (result,), strict=False):
                    env[name] = value
        out: torch.Tensor = env[self.output]
        return out

    def write_back(self, fmodel: Any, path: Path) -> None:
        """The float graph with the trained weights and biases, saved to ``path``."""
        import onnx
        from onnx import numpy_helper

        by_name = {t.name: t for t in fmodel.graph.initializer}
        for key, init in self.trained.items():
            by_name[init].CopyFrom(numpy_helper.from_array(self.params[key].detach().cpu().numpy().astype(np.float32), init))
        onnx.save(fmodel, str(path))


# --------------------------------------------------------------------------- the ops

Op = Callable[[list[Any], dict[str, Any]], Any]


def _conv(ins: list[Any], a: dict[str, Any]) -> Any:
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError("qat: Conv with auto_pad is not supported", hint="export with explicit pads")
    rank = w.ndim - 2
    pads = list(a.get("pads", [0] * 2 * rank))
    begin, end = pads[:rank], pads[rank:]
    if begin != end:
        x = F.pad(x, [p for i in reversed(range(rank)) for p in (begin[i], end[i])])
        begin = [0] * rank
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(x, w, b, stride=a.get("strides", 1), padding=begin, dilation=a.get("dilations", 1), groups=a.get("group", 1))


def _gemm(ins: list[Any], a: dict[str, Any]) -> Any:
    x, w = ins[0], ins[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * ins[2] if len(ins) > 2 and ins[2] is not None else y


def _pool(kind: str) -> Op:
    def run(ins: list[Any], a: dict[str, Any]) -> Any:
        x = ins[0]
        k = list(a["kernel_shape"])
        rank = len(k)
        pads = list(a.get("pads", [0] * 2 * rank))
        begin, end = pads[:rank], pads[rank:]
        if begin != end:
            x = F.pad(x, [p for i in reversed(range(rank)) for p in (begin[i], end[i])],
                      value=-float("inf") if kind == "max" else 0.0)
            begin = [0] * rank
        stride = a.get("strides", [1] * rank)
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            maxpool: Any = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            return maxpool(x, k, stride, begin, dilation=a.get("dilations", [1] * rank), ceil_mode=ceil)
        avgpool: Any = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        return avgpool(x, k, stride, begin, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))

    return run


def _axes(ins: list[Any], a: dict[str, Any]) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    return [int(v) for v in ins[1].tolist()] if len(ins) > 1 and ins[1] is not None else None


def _clip(ins: list[Any], a: dict[str, Any]) -> Any:
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    return torch.clamp(ins[0], min=None if lo is None else float(lo), max=None if hi is None else float(hi))


def _reshape(ins: list[Any], a: dict[str, Any]) -> Any:
    x, shape = ins[0], [int(v) for v in ins[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(ins: list[Any], a: dict[str, Any]) -> Any:
    axis = a.get("axis", 1) % max(ins[0].ndim, 1)
    return ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)


def _reduce_mean(ins: list[Any], a: dict[str, Any]) -> Any:
    axes = _axes(ins, a)
    keep = bool(a.get("keepdims", 1))
    return ins[0].mean(dim=axes, keepdim=keep) if axes else ins[0].mean(dim=list(range(ins[0].ndim)), keepdim=keep)


def _squeeze(ins: list[Any], a: dict[str, Any]) -> Any:
    axes = _axes(ins, a)
    x = ins[0]
    for ax in sorted((ax % x.ndim for ax in axes), reverse=True) if axes else []:
        x = x.squeeze(ax)
    return x if axes else x.squeeze()


def _unsqueeze(ins: list[Any], a: dict[str, Any]) -> Any:
    x = ins[0]
    axes = _axes(ins, a) or []
    rank = x.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _gather(ins: list[Any], a: dict[str, Any]) -> Any:
    x, idx = ins[0], ins[1].long()
    axis = a.get("axis", 0) % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.index_select(x, axis, idx.reshape(-1)).reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])


def _constant(ins: list[Any], a: dict[str, Any]) -> Any:
    from onnx import numpy_helper

    return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))


OPS: dict[str, Op] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda ins, a: ins[0] @ ins[1],
    "Add": lambda ins, a: ins[0] + ins[1],
    "Sub": lambda ins, a: ins[0] - ins[1],
    "Mul": lambda ins, a: ins[0] * ins[1],
    "Div": lambda ins, a: ins[0] / ins[1],
    "Relu": lambda ins, a: F.relu(ins[0]),
    "LeakyRelu": lambda ins, a: F.leaky_relu(ins[0], a.get("alpha", 0.01)),
    "Clip": _clip,
    "Sigmoid": lambda ins, a: torch.sigmoid(ins[0]),
    "Tanh": lambda ins, a: torch.tanh(ins[0]),
    "HardSigmoid": lambda ins, a: torch.clamp(a.get("alpha", 0.2) * ins[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda ins, a: F.hardswish(ins[0]),
    "Erf": lambda ins, a: torch.erf(ins[0]),
    "Sqrt": lambda ins, a: torch.sqrt(ins[0]),
    "Pow": lambda ins, a: torch.pow(ins[0], ins[1]),
    "Softmax": lambda ins, a: torch.softmax(ins[0], dim=a.get("axis", -1)),
    "GlobalAveragePool": lambda ins, a: ins[0].mean(dim=list(range(2, ins[0].ndim)), keepdim=True),
    "GlobalMaxPool": lambda ins, a: ins[0].amax(dim=list(range(2, ins[0].ndim)), keepdim=True),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda ins, a: ins[0].permute(*a["perm"]) if "perm" in a else ins[0].permute(*reversed(range(ins[0].ndim))),
    "Concat": lambda ins, a: torch.cat([i for i in ins if i is not None], dim=a["axis"]),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "ReduceMean": _reduce_mean,
    "Identity": lambda ins, a: ins[0],
    "Dropout": lambda ins, a: ins[0],
    "Shape": lambda ins, a: torch.tensor(ins[0].shape, dtype=torch.int64),
    "Gather": _gather,
    "Cast": lambda ins, a: ins[0].float() if a.get("to") == 1 else ins[0].long() if a.get("to") == 7 else ins[0],
    "Constant": _constant,
}
