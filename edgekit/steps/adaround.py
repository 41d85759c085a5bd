"""Adaptive rounding of INT8 weights (AdaRound, Nagel et al. 2020) on the QDQ graph itself.

Rounding each weight to the nearest INT8 step minimises the weight's own error, not the layer's
output error: on depthwise and 1x1 layers with few inputs per output, the rounding errors of one
output channel do not average out. AdaRound chooses, per weight, whether to round down or up so that
the layer's output on the calibration data stays closest to the float layer's:

    min_V  || X_q (s * clip(floor(W / s) + h(V), -127, 127))^T - X W^T ||^2 + lambda * sum(1 - |2 h(V) - 1|^beta)

``X_q`` is the layer's real input in the QDQ graph (quantized upstream, through its own input
quantizer), ``X`` its float input, ``h`` a rectified sigmoid that the annealed regulariser drives to
0 or 1. The scales stay the quantizer's (symmetric, per output channel), so the graph keeps its form:
only the INT8 weight initializers change, and TensorRT's rules, the targets and the rewrites see the
same graph. Rows of ``X_q`` / ``X W^T`` are sampled output positions (convolution patches), so the
optimisation is a small matrix problem per layer, in torch on the CPU.

The layers are re-rounded in graph order, each on its input in the graph as re-rounded so far (one
pass of the QDQ graph per layer; the float rows come from one pass of the float graph): a layer
compensates the error its inputs really carry, not the error nearest rounding upstream would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console
from edgekit.errors import require
from edgekit.onnx_graph import attributes, cpu_session, drop_unused
from edgekit.onnx_graph import graph_maps as _maps
from edgekit.steps.qdq_graph import load, save

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
QMIN, QMAX = -127, 127  # symmetric INT8 weights, as ONNX Runtime's quantizer stores them
LR = 1e-2  # Adam on the rounding variables (they start at the float weight; 1,000 steps reach 0 or 1)
ROW_BUDGET = 8_000_000  # floats of sampled input rows kept per layer (rows x patch length)
BATCH_BUDGET = 2_000_000  # floats of input rows per optimisation step


@dataclass
class Layer:
    """One quantized layer as a matrix problem: output = rows @ weight.T (+ bias), per group."""

    name: str
    node: Any
    init: Any  # the INT8 weight initializer
    shape: tuple[int, ...]
    scale: np.ndarray  # per output channel
    weight: np.ndarray  # float, (out, k) with k = patch length per group
    groups: int
    x_name: str  # the layer's input tensor in the QDQ graph
    f_in: str  # its float input in the float graph
    kind: str  # conv | dense
    transposed: bool  # the initializer is (in, out): the matrix is its transpose
    attrs: dict[str, Any]
    rows_q: list[np.ndarray]
    rows_f: list[np.ndarray]


def _layers(qmodel: Any, fmodel: Any) -> list[Layer]:
    from onnx import numpy_helper

    graph = qmodel.graph
    inits, producers, consumers = _maps(graph)
    f_nodes = {n.name: n for n in fmodel.graph.node}
    f_inits = {t.name: t for t in fmodel.graph.initializer}
    out: list[Layer] = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.name not in f_nodes or len(node.input) < 2:
            continue
        dq, x_dq, fnode = producers.get(node.input[1]), producers.get(node.input[0]), f_nodes[node.name]
        if (dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits
                or x_dq is None or x_dq.op_type != "DequantizeLinear" or fnode.input[1] not in f_inits
                or len(consumers.get(dq.input[0], [])) != 1):
            continue
        init = inits[dq.input[0]]
        q = numpy_helper.to_array(init)
        zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else np.zeros(1)
        if q.dtype != np.int8 or np.any(zero != 0):
            continue
        w = numpy_helper.to_array(f_inits[fnode.input[1]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64).ravel()
        a = attributes(node)
        if node.op_type == "Conv":
            if w.ndim != 4 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                continue
            matrix, groups, kind, axis, transposed = w.reshape(w.shape[0], -1), int(a.get("group", 1)), "conv", 0, False
        elif node.op_type == "Gemm":
            if a.get("transA", 0) or w.ndim != 2 or a.get("alpha", 1.0) != 1.0:
                continue
            transposed = not a.get("transB", 0)
            matrix, groups, kind, axis = (w.T if transposed else w), 1, "dense", 1 if transposed else 0
        else:
            if w.ndim != 2:
                continue
            matrix, groups, kind, axis, transposed = w.T, 1, "dense", 1, True
        dq_axis = int(attributes(dq).get("axis", 1)) % q.ndim
        if scale.size not in (1, matrix.shape[0]) or (scale.size > 1 and dq_axis != axis):
            continue
        out.append(Layer(node.name, node, init, tuple(q.shape), np.broadcast_to(scale, (matrix.shape[0],)).copy(), matrix,
                         groups, node.input[0], fnode.input[0], kind, transposed, a, [], []))
    return out


def _rows(x: np.ndarray, layer: Layer) -> np.ndarray:
    """Every row of a layer's matrix problem for this input: a dense layer's input vectors, or a
    convolution's patches (one per output position, channel-major as the weight is)."""
    import torch
    import torch.nn.functional as F

    if layer.kind == "dense":
        return x.reshape(-1, x.shape[-1])
    a = layer.attrs
    pads = list(a.get("pads", [0, 0, 0, 0]))
    t = F.pad(torch.from_numpy(np.ascontiguousarray(x, np.float32)), (pads[1], pads[3], pads[0], pads[2]))
    cols = F.unfold(t, (layer.shape[2], layer.shape[3]), dilation=tuple(a.get("dilations", [1, 1])),
                    stride=tuple(a.get("strides", [1, 1])))
    return cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).numpy()  # (n * positions, C * kh * kw)


def _probe(model: Any, names: list[str]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """feed -> the tensors ``names``, computing only the part of the graph they depend on (a graph
    input is its feed)."""
    import onnx

    graph = model.graph
    _, producers, _ = _maps(graph)
    given = {i.name for i in graph.input}
    computed = [n for n in names if n not in given]
    if not computed:
        return lambda feed: {n: feed[n] for n in names}
    needed: set[str] = set()
    stack = list(computed)
    while stack:
        node = producers.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if n.name in needed]
    used = {i for n in nodes for i in n.input}
    sub = onnx.helper.make_graph(nodes, graph.name, [i for i in graph.input if i.name in used],
                                 [onnx.ValueInfoProto(name=n) for n in computed],
                                 [t for t in graph.initializer if t.name in used])
    probe = onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    sess = cpu_session(probe.SerializeToString(), threads=0)
    wanted = {i.name for i in sess.get_inputs()}

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(zip(computed, sess.run(computed, {k: v for k, v in feed.items() if k in wanted}), strict=True))
        return {n: feed[n] if n in given else out[n] for n in names}

    return run


def _take(layer: Layer, rows_per_layer: int, feeds: int) -> int:
    k = int(layer.weight.shape[1]) * layer.groups
    return max(64, min(rows_per_layer, ROW_BUDGET // max(k, 1)) // max(feeds, 1))


def _pick(rows: np.ndarray, take: int, seed: int, layer: int, batch: int) -> np.ndarray:
    """The same positions for the quantized and the float input: drawn from the row count alone."""
    rng = np.random.default_rng([seed, layer, batch])
    picked: np.ndarray = rows[rng.choice(rows.shape[0], size=min(take, rows.shape[0]), replace=False)].astype(np.float32)
    return picked


def collect_float(fmodel: Any, layers: list[Layer], feeds: list[dict[str, np.ndarray]], rows_per_layer: int, seed: int) -> None:
    """Every layer's sampled float input rows, in one pass of the float graph."""
    names = sorted({layer.f_in for layer in layers})
    probe = _probe(fmodel, names)
    for b, feed in enumerate(feeds):
        values = probe(feed)
        for i, layer in enumerate(layers):
            layer.rows_f.append(_pick(_rows(values[layer.f_in], layer), _take(layer, rows_per_layer, len(feeds)), seed, i, b))


def collect_quantized(qmodel: Any, layer: Layer, index: int, feeds: list[dict[str, np.ndarray]], rows_per_layer: int,
                      seed: int) -> None:
    """One layer's sampled input rows in the QDQ graph as it is now (the layers before it re-rounded)."""
    probe = _probe(qmodel, [layer.x_name])
    for b, feed in enumerate(feeds):
        x = probe(feed)[layer.x_name]
        layer.rows_q.append(_pick(_rows(x, layer), _take(layer, rows_per_layer, len(feeds)), seed, index, b))


def _h(v: Any) -> Any:
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def optimise(layer: Layer, iterations: int, reg: float = 0.01, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """The INT8 weight (the initializer's shape) AdaRound picks for one layer, and the layer's output
    error (mean squared, on its sampled rows) with nearest rounding and with the rounding chosen."""
    import torch

    torch.manual_seed(seed)
    xq = torch.from_numpy(np.concatenate(layer.rows_q))
    xf = torch.from_numpy(np.concatenate(layer.rows_f))
    g = layer.groups
    out_ch = layer.weight.shape[0]
    w = torch.from_numpy(layer.weight.astype(np.float32))
    s = torch.from_numpy(layer.scale.astype(np.float32))[:, None]
    k = w.shape[1]

    def apply(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if g == 1:
            return x @ weight.T
        xg = x.reshape(x.shape[0], g, k)
        if out_ch == g:  # depthwise: one output per group
            return (xg * weight.reshape(1, g, k)).sum(-1)
        return torch.bmm(xg.transpose(0, 1), weight.reshape(g, out_ch // g, k).transpose(1, 2)).transpose(0, 1).reshape(x.shape[0], out_ch)

    with torch.no_grad():
        target = apply(xf, w)
        floor = torch.floor(w / s)
        rest = (w / s - floor).clamp(1e-4, 1 - 1e-4)
        nearest = torch.clamp(torch.round(w / s), QMIN, QMAX)

        def error(q: torch.Tensor) -> float:
            return float(((apply(xq, q * s) - target) ** 2).mean())

        before = error(nearest)
    v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(v) = rest: starts at the float weight
    opt = torch.optim.Adam([v], lr=LR)
    n = xq.shape[0]
    batch = max(64, min(512, BATCH_BUDGET // max(xq.shape[1], 1)))  # rows per step: wide depthwise layers take fewer
    warm = int(0.2 * iterations)
    norm = float(target.pow(2).mean()) + 1e-12  # the loss in units of the output's power: one lambda for every layer
    for it in range(iterations):
        idx = torch.randint(0, n, (min(batch, n),))
        soft = torch.clamp(floor + _h(v), QMIN, QMAX) * s
        rec = ((apply(xq[idx], soft) - target[idx]) ** 2).mean() / norm
        if it < warm:
            loss = rec
        else:
            beta = 20 + (2 - 20) * (it - warm) / max(iterations - warm, 1)
            loss = rec + reg * (1 - (2 * _h(v) - 1).abs().pow(beta)).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        chosen = torch.clamp(floor + (_h(v) >= 0.5).float(), QMIN, QMAX)
        after = error(chosen)
        if after > before:  # never worse than nearest on the rows it saw
            chosen, after = nearest, before
    q = chosen.numpy().astype(np.int8)
    return (q.T if layer.transposed else q).reshape(layer.shape), before, after


def adaround(qdq_path: Path, float_path: Path, batches: Iterator[dict[str, np.ndarray]], iterations: int,
             rows_per_layer: int = 4096, cache: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Re-round the INT8 weights of every quantized Conv/Gemm/MatMul of the QDQ graph at ``qdq_path``
    (in place). ``cache``: layer -> the INT8 weight chosen before; a layer found there (same shape) is
    not optimised again (the accuracy budget re-quantizes the same layers many times). Returns per
    layer its sampled output error before and after."""
    require("torch", "full", "rounding: adaround")
    from onnx import numpy_helper

    qmodel, fmodel = load(qdq_path), load(float_path)
    layers = _layers(qmodel, fmodel)
    cache = {} if cache is None else cache
    todo = [layer for layer in layers if layer.name not in cache or cache[layer.name].shape != layer.shape]
    report: dict[str, dict[str, float]] = {}
    if todo:
        from rich.progress import track

        feeds = list(batches)
        collect_float(fmodel, todo, feeds, rows_per_layer, seed=0)
        for i, layer in enumerate(track(todo, description="adaround", console=console.err, transient=True)):
            collect_quantized(qmodel, layer, i, feeds, rows_per_layer, seed=0)
            q, before, after = optimise(layer, iterations)
            cache[layer.name] = q
            layer.init.CopyFrom(numpy_helper.from_array(q, layer.init.name))  # the next layers see this rounding
            report[layer.name] = {"mse_nearest": before, "mse_adaround": after}
            layer.rows_q.clear()
            layer.rows_f.clear()
    for layer in layers:
        if layer.name in cache and cache[layer.name].shape == layer.shape:
            layer.init.CopyFrom(numpy_helper.from_array(cache[layer.name], layer.init.name))
    drop_unused(qmodel.graph)
    save(qmodel, qdq_path)
    return report
