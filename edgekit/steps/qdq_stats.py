"""Statistics measured on ONNX graphs over calibration batches, and the graph edits made from them:
per-channel activation statistics, bias correction (weights-only and full), SmoothQuant-style
smoothing and the quantization noise of each fallback group. The structural clean-ups around ONNX
Runtime's quantizer are in :mod:`edgekit.steps.qdq_graph`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.onnx_graph import cpu_session, dequantized_weight, drop_unused
from edgekit.onnx_graph import graph_maps as _maps
from edgekit.steps.qdq_graph import WEIGHTED, load, save

# --------------------------------------------------------------------------- statistics


def tensor_stats(path: Path, tensors: dict[str, int], batches: Iterator[dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Per-channel mean and max |x| of intermediate tensors over calibration batches.

    ``tensors`` maps a tensor name to its channel axis (1 for conv inputs, -1 for matmul inputs).
    """
    import onnx

    model = load(path)
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = cpu_session(model.SerializeToString(), threads=0)  # 0: ONNX Runtime's default, all cores
    names = list(tensors)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    absmax: dict[str, np.ndarray] = {}
    for feed in batches:
        for name, arr in zip(names, sess.run(names, feed), strict=True):
            axis = tensors[name] % arr.ndim
            moved = np.moveaxis(arr.astype(np.float64), axis, -1).reshape(-1, arr.shape[axis])
            sums[name] = sums.get(name, 0) + moved.sum(0)
            counts[name] = counts.get(name, 0) + moved.shape[0]
            absmax[name] = np.maximum(absmax.get(name, 0), np.abs(moved).max(0))
    return {n: {"mean": sums[n] / max(counts[n], 1), "absmax": absmax[n]} for n in names if n in sums}


# --------------------------------------------------------------------------- bias correction


def bias_correction(qdq_path: Path, float_path: Path, batches: Iterator[dict[str, np.ndarray]]) -> dict[str, float]:
    """Empirical bias correction: for each quantized Conv/Gemm/MatMul, subtract the expected output
    shift its weight rounding causes, (W_q - W) · E[x], from its float bias. E[x] is measured per input
    channel on the calibration data (through the float graph). Returns |shift| per corrected node."""
    from onnx import numpy_helper

    qmodel, fmodel = load(qdq_path), load(float_path)
    graph = qmodel.graph
    inits, producers, consumers = _maps(graph)
    f_inits = {t.name: t for t in fmodel.graph.initializer}
    f_nodes = {n.name: n for n in fmodel.graph.node}
    plan: dict[str, tuple[Any, np.ndarray, str]] = {}
    for node in graph.node:
        if node.op_type not in WEIGHTED or node.name not in f_nodes or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        fnode = f_nodes[node.name]
        if dq is None or dq.op_type != "DequantizeLinear" or fnode.input[1] not in f_inits:
            continue
        w_q = dequantized_weight(dq, inits)
        if w_q is None:
            continue
        w = numpy_helper.to_array(f_inits[fnode.input[1]]).astype(np.float64)
        if w.shape != w_q.shape:
            continue
        plan[node.name] = (node, w_q - w, fnode.input[0])
    if not plan:
        return {}
    axes = {inp: (1 if node.op_type in ("Conv", "ConvTranspose") else -1) for node, _, inp in plan.values()}
    stats = tensor_stats(float_path, axes, batches)
    shifts: dict[str, float] = {}
    for name, (node, dw, inp) in plan.items():
        if inp not in stats:
            continue
        mean = stats[inp]["mean"]
        delta = _output_shift(node, dw, mean)
        if delta is None:
            continue
        if _subtract_from_bias(node, graph, inits, consumers, delta):
            shifts[name] = float(np.abs(delta).mean())
    drop_unused(graph)
    save(qmodel, qdq_path)
    return shifts


def full_bias_correction(qdq_path: Path, float_path: Path, batches: Iterator[dict[str, np.ndarray]]) -> dict[str, float]:
    """Bias correction measured on the QDQ graph itself: for each quantized Conv/Gemm/MatMul, the mean
    per output channel of what it computes (quantized input, INT8 weight) minus what its float weight
    computes on the same unquantized input, over the calibration data, subtracted from its bias. Unlike
    the weights-only correction, it sees the layer's real (already quantized upstream) input, the
    rounding and clipping of that input, and zero padding at the borders, with no per-channel-mean
    shortcut. One pass; each layer's own shift (upstream shifts are their layers' to correct)."""
    import copy

    import onnx

    qmodel, fmodel = load(qdq_path), load(float_path)
    graph = qmodel.graph
    inits, producers, consumers = _maps(graph)
    f_inits = {t.name: t for t in fmodel.graph.initializer}
    f_nodes = {n.name: n for n in fmodel.graph.node}
    probe = copy.deepcopy(qmodel)
    taps: dict[str, tuple[Any, str, str, int]] = {}  # layer -> (node, its output, the float copy's output, channel axis)
    for node in graph.node:
        if node.op_type not in WEIGHTED or node.name not in f_nodes or len(node.input) < 2:
            continue
        dq, fnode = producers.get(node.input[1]), f_nodes[node.name]
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or fnode.input[1] not in f_inits:
            continue
        if any(i and i not in inits for i in node.input[2:]):
            continue
        x = node.input[0]
        act = producers.get(x)
        if act is not None and act.op_type == "DequantizeLinear":
            q = producers.get(act.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                x = q.input[0]
        weight = copy.deepcopy(f_inits[fnode.input[1]])
        weight.name = f"bc::w::{node.name}"
        probe.graph.initializer.append(weight)
        out = f"bc::y::{node.name}"
        twin = onnx.helper.make_node(node.op_type, [x, weight.name, *node.input[2:]], [out], name=f"bc::{node.name}")
        twin.attribute.extend(node.attribute)
        probe.graph.node.append(twin)
        taps[node.name] = (node, node.output[0], out, 1 if node.op_type in ("Conv", "ConvTranspose", "Gemm") else -1)
    if not taps:
        return {}
    names = sorted({t for _, a, b, _ in taps.values() for t in (a, b)})
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    sess = cpu_session(probe.SerializeToString(), threads=0)
    sums: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for feed in batches:
        values = dict(zip(names, sess.run(names, feed), strict=True))
        for name, (_, y_q, y_f, axis) in taps.items():
            diff = (values[y_q].astype(np.float64) - values[y_f]).swapaxes(axis % values[y_q].ndim, -1)
            diff = diff.reshape(-1, diff.shape[-1])
            sums[name] = sums.get(name, 0) + diff.sum(0)
            count[name] = count.get(name, 0) + diff.shape[0]
    shifts: dict[str, float] = {}
    for name, (node, _, _, _) in taps.items():
        delta = sums[name] / max(count[name], 1)
        if _subtract_from_bias(node, graph, inits, consumers, delta):
            shifts[name] = float(np.abs(delta).mean())
    drop_unused(graph)
    save(qmodel, qdq_path)
    return shifts


def _output_shift(node: Any, dw: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, cin_g = dw.shape[0], dw.shape[1]
        if mean.shape[0] != cin_g * group:
            return None
        per_tap = dw.reshape(out_ch, cin_g, -1).sum(-1)  # E[x] is one value per input channel
        g_of = np.arange(out_ch) // (out_ch // group)
        return np.array([per_tap[o] @ mean[g_of[o] * cin_g : (g_of[o] + 1) * cin_g] for o in range(out_ch)])
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = dw if trans_b else dw.T  # [out, in]
        return np.asarray(w @ mean) if w.shape[1] == mean.shape[0] else None
    if node.op_type == "MatMul" and dw.ndim == 2 and dw.shape[0] == mean.shape[0]:
        return np.asarray(mean @ dw)
    return None


def _subtract_from_bias(node: Any, graph: Any, inits: dict[str, Any], consumers: dict[str, list[Any]], delta: np.ndarray) -> bool:
    """The node's float bias minus ``delta`` (one value per output channel), as a new initializer."""
    from onnx import numpy_helper

    bias_name = _bias_input(node, graph, inits, consumers, delta.shape[0])
    if bias_name is None:
        return False
    bias = numpy_helper.to_array(inits[bias_name]).astype(np.float64) if bias_name in inits else np.zeros_like(delta)
    if bias.shape != delta.shape:
        return False
    new = numpy_helper.from_array((bias - delta).astype(np.float32), f"{node.name}__bias_corrected")
    graph.initializer.append(new)
    inits[new.name] = new
    _replace_bias(node, graph, consumers, bias_name, new.name)
    return True


def _bias_input(node: Any, graph: Any, inits: dict[str, Any], consumers: dict[str, list[Any]], width: int) -> str | None:
    """The float bias a node adds: Conv/Gemm input 2 (created if absent), or MatMul's following Add."""
    from onnx import numpy_helper

    if node.op_type in ("Conv", "Gemm"):
        if len(node.input) > 2 and node.input[2]:
            return node.input[2] if node.input[2] in inits else None
        zero = numpy_helper.from_array(np.zeros(width, np.float32), f"{node.name}__bias_zero")
        graph.initializer.append(zero)
        inits[zero.name] = zero
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = zero.name
        return zero.name
    users = consumers.get(node.output[0], [])
    if node.op_type == "MatMul" and len(users) == 1 and users[0].op_type == "Add":
        other = [i for i in users[0].input if i != node.output[0]]
        if other and other[0] in inits and numpy_helper.to_array(inits[other[0]]).shape == (width,):
            return str(other[0])
    return None


def _replace_bias(node: Any, graph: Any, consumers: dict[str, list[Any]], old: str, new: str) -> None:
    if node.op_type in ("Conv", "Gemm"):
        node.input[2] = new
        return
    add = consumers[node.output[0]][0]
    for k, name in enumerate(add.input):
        if name == old:
            add.input[k] = new


# --------------------------------------------------------------------------- SmoothQuant-style smoothing


def smooth(path: Path, batches: Iterator[dict[str, np.ndarray]], alpha: float) -> int:
    """Move activation outliers into the weights of MatMuls with constant weights: x W = (x / s)(s W)
    with s_j = max|x_j|^alpha / max|W_j|^(1 - alpha). A float Mul(1/s) is inserted before each smoothed
    input (shared by all MatMuls that read it), so the residual stream is untouched. Returns how many
    inputs were smoothed."""
    from onnx import helper, numpy_helper

    model = load(path)
    graph = model.graph
    inits, _, consumers = _maps(graph)
    groups: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and node.input[0] not in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.ndim == 2:
                groups.setdefault(node.input[0], []).append(node)
    if not groups:
        return 0
    stats = tensor_stats(path, {name: -1 for name in groups}, batches)
    count = 0
    for act, nodes in groups.items():
        if act not in stats:
            continue
        a_max = np.maximum(stats[act]["absmax"], 1e-5)
        weights = [numpy_helper.to_array(inits[n.input[1]]).astype(np.float64) for n in nodes]
        w_max = np.maximum(np.max([np.abs(w).max(1) for w in weights], axis=0), 1e-5)
        s = np.clip(a_max**alpha / w_max ** (1 - alpha), 1e-2, 1e2)
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{act}__smooth_inv")
        graph.initializer.append(inv)
        smoothed = f"{act}__smoothed"
        mul = helper.make_node("Mul", [act, inv.name], [smoothed], name=f"{act}__smooth")
        first = min(list(graph.node).index(n) for n in nodes)
        graph.node.insert(first, mul)
        for node, w in zip(nodes, weights, strict=True):
            scaled = numpy_helper.from_array((w * s[:, None]).astype(np.float32), f"{node.input[1]}__smoothed_{node.name}")
            graph.initializer.append(scaled)
            node.input[1] = scaled.name
            node.input[0] = smoothed
        count += 1
    del consumers
    drop_unused(graph)
    save(model, path)
    return count


def quant_noise(path: Path, groups: dict[str, set[str]], batches: Iterator[dict[str, np.ndarray]]) -> dict[str, float]:
    """For each fallback group, the worst noise-to-signal ratio ||DQ(Q(x)) - x||^2 / ||x||^2 among
    the activation Q/DQ pairs it owns (on its nodes' inputs and outputs), measured in one pass: a
    cheap sensitivity ranking when probing every layer would be slow. A pair that re-quantizes an
    already quantized tensor (after a quantized Relu, say) measures 0; the group's other pairs speak."""
    import onnx

    model = load(path)
    graph = model.graph
    inits, producers, consumers = _maps(graph)
    by_name = {n.name: n for n in graph.node}
    pairs: dict[str, tuple[str, str]] = {}  # Q input tensor -> (Q input, DQ output)
    owned: dict[str, set[str]] = {}
    for group, members in groups.items():
        for node in (by_name[m] for m in members if m in by_name):
            dqs = [producers.get(i) for i in node.input if i and i not in inits]
            qs = [user for o in node.output for user in consumers.get(o, []) if user.op_type == "QuantizeLinear"]
            for q in [producers.get(dq.input[0]) for dq in dqs if dq is not None and dq.op_type == "DequantizeLinear"] + qs:
                if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
                    continue
                dq = next((u for u in consumers.get(q.output[0], []) if u.op_type == "DequantizeLinear"), None)
                if dq is not None:
                    pairs[q.input[0]] = (q.input[0], dq.output[0])
                    owned.setdefault(group, set()).add(q.input[0])
    wanted = sorted({t for pair in pairs.values() for t in pair})
    existing = {o.name for o in graph.output}
    for t in wanted:
        if t not in existing:
            graph.output.append(onnx.ValueInfoProto(name=t))
    sess = cpu_session(model.SerializeToString(), threads=0)  # 0: ONNX Runtime's default, all cores
    err = dict.fromkeys(pairs, 0.0)
    sig = dict.fromkeys(pairs, 0.0)
    for feed in batches:
        values = dict(zip(wanted, sess.run(wanted, feed), strict=True))
        for key, (x, xq) in pairs.items():
            a = values[x].astype(np.float64)
            err[key] += float(((values[xq] - a) ** 2).sum())
            sig[key] += float((a**2).sum())
    ratio = {key: err[key] / max(sig[key], 1e-30) for key in pairs}
    return {group: max((ratio[k] for k in owned.get(group, ())), default=0.0) for group in groups}
