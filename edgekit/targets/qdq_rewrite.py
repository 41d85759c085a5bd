"""Build-time re-expressions of the portable QDQ graph for a target's kernels (DESIGN.md §4).

The stored graph is symmetric INT8 with zero point 0, which TensorRT needs. CPU kernels prefer
other encodings of the same numbers:

- ``fold_relu_pairs`` (exact): ``Q(s,z) -> DQ -> Relu -> Q(s,z)`` equals ``Relu -> Q(s,z)``, because
  rounding, clamping and Relu commute when both quantizers share scale and zero point. It removes
  a requantization per layer.
- ``fold_passthrough_pairs`` (exact): a second quantizer with the first one's scale and zero point
  right after a MaxPool (which only picks values) is dropped: the values are already on its grid.
  OpenVINO's VNNI model only (the portable one needs the pair: ``wide_layers_float`` finds a signed
  layer input by it).
- ``nonnegative_to_u8`` (exact up to the saturation point): an activation produced by Relu (or
  pooled, reshaped or summed from such) is never negative, so its S8 zero-point-0 quantizer uses only 0..127; as U8 with zero point 0 and the same
  scale it gives the same values, and saturates at 255*s instead of 127*s (only values above the
  calibrated range differ, and they come out closer to float). This is what oneDNN and ONNX
  Runtime's u8 x s8 kernels want, and it lets ONNX Runtime fold the Relu into the quantizer.
- ``s8_to_u8`` (exact): any other S8 activation with scale s and zero point 0 is a U8 one with scale
  s and zero point 128. Weights stay S8.
- ``fold_float_weights`` (exact): a Conv whose output is not quantized cannot become
  an integer kernel, so ONNX Runtime would dequantize its constant weights on every run; they are
  dequantized once, at build time, into a float initializer.

- ``u8_to_7bit`` (exact): an activation ``nonnegative_to_u8`` made U8 reads ``Clip(x, 0, 127 s)``,
  so it keeps the portable graph's 0..127 (and its saturation point); with 8-bit weights no u8 x s8
  pair sum can pass 32767 on x86 CPUs without VNNI (``edgekit.cpu``). A quantizer that was U8 to
  begin with (asymmetric profiles) uses 0..255 and is left alone: clipping it would change it.
- ``wide_layers_float`` (exact): a layer whose input may hold u8 values above 127 (an S8 input,
  which OpenVINO's kernels shift to 0..255, or a U8 one not kept to 7 bits) can saturate its pair
  sums on CPUs without VNNI; it runs in float on its dequantized input and weights instead, which is
  exactly what the QDQ graph computes.

- ``keep_float`` (not exact; closer to float): the layers named (a latency-aware placement chose them,
  ``edgekit.targets.placement``) run in float: their weights are dequantized once, and every
  activation Q/DQ pair that only float layers produce and read is dropped, so a float region runs
  with no quantize round trip inside it. Only the quantization noise those pairs added goes: the
  build is nearer to the float model than the QDQ graph is, within the parity bound.

Every build that uses them is parity-checked against the stored graph on ONNX Runtime's reference
kernels, and records what it rewrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import require
from edgekit.onnx_graph import dequantized_weight, drop_unused, graph_maps


def _array(inits: dict[str, Any], name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name]) if name in inits else None


def _same_qparams(inits: dict[str, Any], a: Any, b: Any) -> bool:
    sa, sb = _array(inits, a.input[1]), _array(inits, b.input[1])
    za = _array(inits, a.input[2]) if len(a.input) > 2 else None
    zb = _array(inits, b.input[2]) if len(b.input) > 2 else None
    if sa is None or sb is None or za is None or zb is None:
        return False
    return sa.shape == sb.shape and bool(np.array_equal(sa, sb)) and za.dtype == zb.dtype and bool(np.array_equal(za, zb))


def fold_relu_pairs(model: Any) -> int:
    """Q(s,z) -> DQ -> Relu -> Q(s,z)  ==>  Relu -> Q(s,z). Returns how many pairs were removed."""
    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    outputs = {o.name for o in graph.output}
    removed = 0
    for relu in [n for n in graph.node if n.op_type == "Relu"]:
        dq = producers.get(relu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            continue
        q = producers.get(dq.input[0])
        after = consumers.get(relu.output[0], [])
        if q is None or q.op_type != "QuantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        if len(consumers.get(dq.output[0], [])) != 1 or len(consumers.get(q.output[0], [])) != 1:
            continue
        if dq.output[0] in outputs or not _same_qparams(inits, q, after[0]):
            continue
        relu.input[0] = q.input[0]
        graph.node.remove(dq)
        graph.node.remove(q)
        removed += 1
    return removed


# ops whose every output value is one of their input's values (MaxPool pads with -inf, not 0). Only
# MaxPool is folded: the same fold before MobileNetV3's Flatten -> Gemm made OpenVINO's build ~5 %
# slower on x86-avx512-vnni (9 alternating repeats), as if the Gemm no longer saw its quantizer
PASS_THROUGH = ("MaxPool",)


def fold_passthrough_pairs(model: Any) -> int:
    """Q1 -> DQ1 -> MaxPool -> Q2 -> DQ2 with Q2's scale and zero point equal to Q1's  ==>
    Q1 -> DQ1 -> MaxPool: the op's outputs are values of DQ1's grid, which Q2 maps to the same
    integers (exact). OpenVINO propagates the first quantizer through such ops itself; the
    second one, once ``u8_to_7bit`` puts a Clip before it, it runs as its own FakeQuantize with a
    layout change on each side (ResNet-18's MaxPool: ~0.1 ms of 2.9 on x86-avx512-vnni). Not for
    ONNX Runtime, whose integer kernels need a DequantizeLinear right before them."""
    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    outputs = {o.name for o in graph.output}
    removed = 0
    for q2 in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]:
        op = producers.get(q2.input[0])
        if op is None or op.op_type not in PASS_THROUGH or len(op.output) != 1:
            continue
        dq1 = producers.get(op.input[0])
        q1 = producers.get(dq1.input[0]) if dq1 is not None and dq1.op_type == "DequantizeLinear" else None
        if q1 is None or q1.op_type != "QuantizeLinear" or not _same_qparams(inits, q1, q2):
            continue
        dq2s = consumers.get(q2.output[0], [])
        if (not dq2s or q2.output[0] in outputs or len(consumers.get(op.output[0], [])) != 1
                or any(d.op_type != "DequantizeLinear" or d.output[0] in outputs or not _same_qparams(inits, q2, d)
                       for d in dq2s)):
            continue
        _bypass(graph, consumers, q2, dq2s, op.output[0])
        removed += 1
    return removed


def _bypass(graph: Any, consumers: dict[str, list[Any]], q: Any, dqs: list[Any], tensor: str) -> None:
    """Remove the pair ``q -> dqs``: what read a DQ's output reads ``tensor`` instead."""
    for d in dqs:
        for u in consumers.get(d.output[0], []):
            for k, name in enumerate(u.input):
                if name == d.output[0]:
                    u.input[k] = tensor
        graph.node.remove(d)
    graph.node.remove(q)


# ops whose output is non-negative when every activation input is (pooling keeps values or averages them)
KEEPS_SIGN = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Concat", "Add")


def _nonnegative(graph: Any, inits: dict[str, Any], producers: dict[str, Any]) -> set[str]:
    """Tensors that are never negative: Relu outputs, Clip(min >= 0) outputs, and what pooling,
    reshaping, concatenating, adding or a Q/DQ round trip makes of them (nodes are in topological order)."""
    found: set[str] = set()
    for node in graph.node:
        acts = [i for i in node.input if i and i not in inits]
        if node.op_type == "Relu":
            ok = True
        elif node.op_type == "Clip":
            low = _array(inits, node.input[1]) if len(node.input) > 1 and node.input[1] else None
            ok = low is not None and float(np.min(low)) >= 0.0
        elif node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            ok = q is not None and q.op_type == "QuantizeLinear" and q.input[0] in found
        elif node.op_type in ("Reshape", "Flatten"):
            ok = node.input[0] in found  # the shape input says nothing about the sign
        elif node.op_type in KEEPS_SIGN:
            # constants count too: Relu(x) + (-0.5) is negative, Relu(x) + 0.5 is not
            consts = [_array(inits, i) for i in node.input if i in inits]
            ok = bool(acts) and all(i in found for i in acts) and all(c.size == 0 or float(np.min(c)) >= 0.0
                                                                    for c in consts if c is not None)
        else:
            ok = False
        if ok:
            found.update(node.output[:1])
    return found


FROM_S8 = "__edgekit_u8_zero_"  # the zero points nonnegative_to_u8 writes: these U8 values were S8 0..127


def nonnegative_to_u8(model: Any) -> int:
    """S8 zero-point-0 activation quantizers of a never-negative tensor become U8 zero-point-0 (same scale)."""
    from onnx import numpy_helper

    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    nonnegative = _nonnegative(graph, inits, producers)
    new_zero: dict[tuple[int, ...], str] = {}
    count = 0
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if q.input[0] not in nonnegative or len(q.input) < 3:
            continue
        zp = _array(inits, q.input[2])
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            continue
        key = tuple(zp.shape)
        if key not in new_zero:
            t = numpy_helper.from_array(np.zeros(zp.shape, np.uint8), f"{FROM_S8}{len(new_zero)}")
            graph.initializer.append(t)
            new_zero[key] = t.name
        q.input[2] = new_zero[key]
        for dq in consumers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear" and len(dq.input) > 2:
                dq.input[2] = new_zero[key]
        count += 1
    return count


def s8_to_u8(model: Any) -> int:
    """Every remaining S8 zero-point-0 activation quantizer becomes U8 with zero point 128 (exact)."""
    from onnx import numpy_helper

    graph = model.graph
    inits, _, consumers = graph_maps(graph)
    u8: dict[str, str] = {}
    count = 0
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if q.input[0] in inits or len(q.input) < 3:
            continue
        zp = _array(inits, q.input[2])
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            continue
        if q.input[2] not in u8:
            t = numpy_helper.from_array(np.full(zp.shape, 128, np.uint8), f"{q.input[2]}__u8")
            graph.initializer.append(t)
            u8[q.input[2]] = t.name
        name = u8[q.input[2]]
        q.input[2] = name
        for dq in consumers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear" and len(dq.input) > 2:
                dq.input[2] = name
        count += 1
    return count


def fold_float_weights(model: Any) -> int:
    """DQ(constant weight) -> Conv with no QuantizeLinear after it  ==>  a float weight."""
    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    folded = 0
    # Conv only: ONNX Runtime runs DQ -> MatMul/Gemm with a float output as an integer kernel too
    for node in [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]:
        if any(u.op_type == "QuantizeLinear" for o in node.output for u in consumers.get(o, [])):
            continue
        for k, name in enumerate(node.input[1:], start=1):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or not all(i in inits for i in dq.input if i):
                continue
            node.input[k] = _dequantized(graph, inits, dq, name)
            folded += 1
    _drop_dead_dequantizers(graph)
    return folded


def u8_to_7bit(model: Any) -> int:
    """The activation quantizers ``nonnegative_to_u8`` made U8 read ``Clip(x, 0, 127 s)`` instead of
    ``x`` (a Relu that feeds only such a quantizer becomes that Clip): u8 values stay in 0..127, the
    portable graph's own S8 range, so u8 x s8 pair sums stay below 2 * 127 * 128 < 32767 on CPUs
    without VNNI. A quantizer that was U8 in the stored graph means 0..255 and is not touched."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits, producers, consumers = graph_maps(graph)
    count = 0
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if q.input[0] in inits or len(q.input) < 3:
            continue
        zp, scale = _array(inits, q.input[2]), _array(inits, q.input[1])
        if not q.input[2].startswith(FROM_S8) or zp is None or scale is None or np.any(zp != 0) or scale.size != 1:
            continue
        high = numpy_helper.from_array(np.asarray(127.0 * float(scale.reshape(())), np.float32), f"{q.name or q.output[0]}__u7_max")
        low = numpy_helper.from_array(np.zeros((), np.float32), f"{q.name or q.output[0]}__u7_min")
        graph.initializer.extend([low, high])
        src = producers.get(q.input[0])
        if src is not None and src.op_type == "Relu" and len(consumers.get(src.output[0], [])) == 1:
            src.op_type = "Clip"
            src.input.extend([low.name, high.name])
        else:
            clipped = f"{q.input[0]}__u7_{count}"
            at = list(graph.node).index(q)
            graph.node.insert(at, helper.make_node("Clip", [q.input[0], low.name, high.name], [clipped],
                                                   name=f"{q.name or 'q'}__u7_clip"))
            q.input[0] = clipped
        count += 1
    return count


WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _fits_7bit(q: Any, inits: dict[str, Any], producers: dict[str, Any]) -> bool:
    """Whether a U8 zero-point-0 quantizer reads a ``Clip(x, >= 0, <= 127 s)``: its values are 0..127."""
    clip, scale = producers.get(q.input[0]), _array(inits, q.input[1])
    if clip is None or clip.op_type != "Clip" or len(clip.input) < 3 or scale is None or scale.size != 1:
        return False
    low, high = _array(inits, clip.input[1]), _array(inits, clip.input[2])
    return (low is not None and high is not None and float(np.min(low)) >= 0.0
            and float(np.max(high)) <= 127.0 * float(scale.reshape(())) * (1 + 1e-6))


def _wide_input(node: Any, inits: dict[str, Any], producers: dict[str, Any]) -> bool:
    """Whether a layer's activation input is a Q/DQ whose u8 form may exceed 127: S8 (kernels shift it
    to 0..255), or U8 with a zero point other than 0 or not kept to 7 bits by ``u8_to_7bit``."""
    dq = producers.get(node.input[0])
    if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
        return False
    zp = _array(inits, dq.input[2])
    if zp is None:
        return False
    if zp.dtype == np.int8:
        return True
    q = producers.get(dq.input[0])
    return bool(np.any(zp != 0)) or q is None or q.op_type != "QuantizeLinear" or not _fits_7bit(q, inits, producers)


def wide_layers_float(model: Any) -> int:
    """Layers reading an activation that may exceed 0..127 as u8 run in float with their weights
    dequantized once: the input Q/DQ stays, so the result is exactly the QDQ graph's, and no
    u8 x s8 pair can saturate."""
    graph = model.graph
    inits, producers, _ = graph_maps(graph)
    count = 0
    for node in [n for n in graph.node if n.op_type in WEIGHTED_OPS]:
        if not _wide_input(node, inits, producers) or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or not all(i in inits for i in dq.input if i):
            continue
        node.input[1] = _dequantized(graph, inits, dq, node.input[1])
        count += 1
    _drop_dead_dequantizers(graph)
    return count


def layer_regions(graph: Any) -> dict[str, str]:
    """Each node's region: a weighted layer with a constant weight (quantized or float) names its
    own; every other node belongs to the region of what produces its first activation input (a
    layer's activation, quantizers and Relu/HardSwish after it), and a node of constants only to the
    region of its first reader (a weight's DequantizeLinear). Keys and values are node names (first
    output names for unnamed nodes); nodes before any layer map to ''."""
    inits, producers, consumers = graph_maps(graph)
    key = {id(n): n.name or n.output[0] for n in graph.node}
    region: dict[int, str] = {}
    for node in graph.node:  # topological order
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and _constant(node.input[1], inits, producers):
            region[id(node)] = key[id(node)]
            continue
        src = next((producers[i] for i in node.input if i and i not in inits and i in producers), None)
        region[id(node)] = region.get(id(src), "") if src is not None else ""
    for node in reversed(graph.node):
        if not any(i and i not in inits for i in node.input):
            readers = [u for o in node.output for u in consumers.get(o, [])]
            if readers:
                region[id(node)] = region.get(id(readers[0]), "")
    return {key[id(n)]: region[id(n)] for n in graph.node}


def _constant(name: str, inits: dict[str, Any], producers: dict[str, Any]) -> bool:
    """A stored weight: an initializer, or a DequantizeLinear of initializers."""
    if name in inits:
        return True
    dq = producers.get(name)
    return dq is not None and dq.op_type == "DequantizeLinear" and all(i in inits for i in dq.input if i)


def keep_float(model: Any, layers: set[str]) -> int:
    """The named weighted layers run in float (weights dequantized at build time), and an activation
    Q/DQ pair is dropped where the region producing it and every region reading it are float (the
    graph input's region, '', counts as float). Returns how many quantized layers went float."""
    graph = model.graph
    regions = layer_regions(graph)
    inits, producers, consumers = graph_maps(graph)
    outputs = {o.name for o in graph.output}

    def floats(node: Any) -> bool:
        r = regions.get(node.name or node.output[0], "")
        return r == "" or r in layers

    count = 0
    for node in [n for n in graph.node if n.op_type in WEIGHTED_OPS and (n.name or n.output[0]) in layers]:
        quantized = False
        for k, name in enumerate(node.input[1:], start=1):
            dq = producers.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear" and all(i in inits for i in dq.input if i):
                node.input[k] = _dequantized(graph, inits, dq, name)
                quantized = True
        count += quantized
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]:
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.output[0] in outputs for d in dqs) or q.output[0] in outputs:
            continue
        readers = [u for d in dqs for u in consumers.get(d.output[0], [])]
        if not floats(q) or not all(floats(u) for u in readers):
            continue
        _bypass(graph, consumers, q, dqs, q.input[0])
    _drop_dead_dequantizers(graph)
    return count


def _drop_dead_dequantizers(graph: Any) -> None:
    """DequantizeLinear nodes nothing reads any more (their weights were dequantized at build time)."""
    _, _, consumers = graph_maps(graph)
    outputs = {o.name for o in graph.output}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and not consumers.get(n.output[0])
               and n.output[0] not in outputs]:
        graph.node.remove(dq)


def _dequantized(graph: Any, inits: dict[str, Any], dq: Any, name: str) -> str:
    """A float initializer holding what ``dq`` computes from its constant inputs; returns its name."""
    from onnx import numpy_helper

    w = dequantized_weight(dq, inits, np.float32)  # float32 arithmetic, as DequantizeLinear's own
    assert w is not None  # noqa: S101 - callers pass a DQ of initializers
    new = numpy_helper.from_array(w.astype(np.float32), f"{name}__float")
    graph.initializer.append(new)
    return str(new.name)


def rewrite(src: Path, dst: Path, steps: tuple[str, ...], float_layers: set[str] | None = None) -> dict[str, int]:
    """Apply the named re-expressions in order (after ``keep_float`` of ``float_layers`` when given);
    returns how many places each changed."""
    require("onnx", "full", "INT8 builds")
    import onnx

    model = onnx.load(str(src))
    counts = {"keep_float": keep_float(model, float_layers)} if float_layers else {}
    fns = {"fold_relu_pairs": fold_relu_pairs, "fold_passthrough_pairs": fold_passthrough_pairs,
           "nonnegative_to_u8": nonnegative_to_u8, "s8_to_u8": s8_to_u8,
           "fold_float_weights": fold_float_weights, "u8_to_7bit": u8_to_7bit,
           "wide_layers_float": wide_layers_float}
    counts.update({name: fns[name](model) for name in steps})
    drop_unused(model.graph)
    onnx.save(model, str(dst))
    return counts
