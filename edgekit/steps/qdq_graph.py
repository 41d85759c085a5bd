"""Graph work around ONNX Runtime's quantizer: pre-processing, clean-ups, statistics, bias
correction and SmoothQuant-style smoothing. Everything here reads and writes ONNX files.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.onnx_graph import cpu_session, dequantized_weight, drop_unused
from edgekit.onnx_graph import graph_maps as _maps

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _save(model: Any, path: Path) -> None:
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
    model = _load(dst)
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
    _save(model, dst)


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
    graph = _load(path).graph
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
    graph = _load(path).graph
    ops = {n.op_type for n in graph.node}
    return bool({"LayerNormalization", "Softmax"} & ops) and "MatMul" in ops


def weighted_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of Conv/Gemm/MatMul nodes whose weight is a constant."""
    graph = _load(path).graph
    inits = {t.name for t in graph.initializer}
    return [(n.name, n.op_type) for n in graph.node if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits]


def drop_graph_output_qdq(path: Path) -> int:
    """Keep model outputs float: remove Q -> DQ pairs that end in a graph output."""
    model = _load(path)
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
    _save(model, path)
    return removed


def unquantize_excluded_inputs(path: Path, excluded: set[str]) -> int:
    """ORT shares one Q/DQ pair among all consumers of a tensor, so an excluded node can still read a
    quantized input; re-wire such inputs to the float tensor."""
    model = _load(path)
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
    _save(model, path)
    return fixed


# --------------------------------------------------------------------------- statistics


def tensor_stats(path: Path, tensors: dict[str, int], batches: Iterator[dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Per-channel mean and max |x| of intermediate tensors over calibration batches.

    ``tensors`` maps a tensor name to its channel axis (1 for conv inputs, -1 for matmul inputs).
    """
    import onnx

    model = _load(path)
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

    qmodel, fmodel = _load(qdq_path), _load(float_path)
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
    _save(qmodel, qdq_path)
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

    qmodel, fmodel = _load(qdq_path), _load(float_path)
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
    _save(qmodel, qdq_path)
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

    model = _load(path)
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
    _save(model, path)
    return count


def fallback_groups(path: Path, quantized_ops: list[str]) -> dict[str, set[str]]:
    """For each weighted node, the nodes to keep in float with it: the quantizable non-weighted ops on
    its input path back to the previous weighted op (Relu, Add, pooling...) and the activation right
    after it. Falling back a Conv alone would leave the clipped activation Q/DQ around it in place."""
    graph = _load(path).graph
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
    model = _load(path)
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
    _save(model, path)
    return rewired


def quant_noise(path: Path, groups: dict[str, set[str]], batches: Iterator[dict[str, np.ndarray]]) -> dict[str, float]:
    """For each fallback group, the worst noise-to-signal ratio ||DQ(Q(x)) - x||^2 / ||x||^2 among
    the activation Q/DQ pairs it owns (on its nodes' inputs and outputs), measured in one pass: a
    cheap sensitivity ranking when probing every layer would be slow. A pair that re-quantizes an
    already quantized tensor (after a quantized Relu, say) measures 0; the group's other pairs speak."""
    import onnx

    model = _load(path)
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


# --------------------------------------------------------------------------- output steps

_PASS_THROUGH = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def output_steps(path: Path) -> dict[str, float]:
    """Per graph output, its quantization step in the output's own units: what one rounding step of
    the last quantized tensor moves the output by. An output read from a DequantizeLinear moves by its
    scale; one computed by a Conv/Gemm/MatMul from a quantized input ``x`` by ``scale_x * ||w_j||_2``
    at most over output channels (one-step rounding differences across the input add in quadrature).
    Shape-only ops and a bias Add pass through. Outputs with no such step (e.g. after a Softmax, or a
    float graph) are left out."""
    model = _load(path)
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
