"""``edgekit explain``: where an INT8 graph loses accuracy, layer by layer, and what would fix it.

For every quantized layer (a Conv/Gemm/MatMul with an INT8 weight) of the QDQ graph, compared with the
float graph it was quantized from (``reference.onnx`` in the INT8 artifact, same node names):

- the error the layer adds **alone** (its float input, quantized by the graph's own input quantizer,
  through its INT8 weight) and **accumulated** (its output in the QDQ graph), as SQNR in dB
  (signal power over error power: higher is better) and the cosine of the accumulated output;
- the share of its input that the calibrated range clips, and its float input's observed range;
- its weights' per-channel range (max |w| per output channel) and the SQNR of the INT8 weight;
- the task metric and the output error when this layer alone runs in float (its weight and its input
  unquantized, everything else as in the QDQ graph): its contribution to the drop.

Three passes over the data (float graph, QDQ graph, every layer alone in one graph) plus one per layer
for the contributions. The QDQ graph's own arithmetic (ONNX Runtime's reference kernels), so the
figures are the same on every CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgekit import console
from edgekit.artifact import REFERENCE_ONNX, Artifact, check_output, staging
from edgekit.errors import ArtifactError, BadInputError, DataError, ModelError, require
from edgekit.onnx_graph import cpu_session, dequantized_weight, drop_unused, graph_maps

EXPLAIN_SCHEMA = 1
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
BATCH = 32
CLIP_ADVICE = 0.001  # a layer whose input is clipped more than this gets an activation_range suggestion
WIDE = 4.0  # ... and one whose calibrated range is this many times the observed one
MOST = 0.5  # the closing line names the fewest layers whose contributions add up to this share of the drop
SIGNIFICANT = 0.1  # ... each recovering at least this share of it


class LayerReport(BaseModel):
    name: str
    op: str
    position: int  # order in the graph (topological)
    sqnr_alone_db: float | None
    sqnr_accumulated_db: float | None
    cosine_accumulated: float | None
    clipped_fraction: float | None  # of the layer's input, by its calibrated range
    calibrated_range: list[float] | None  # [low, high] its input quantizer represents
    observed_range: list[float] | None  # [min, max] of its float input on the data
    weight_channel_absmax: dict[str, float]  # min / median / max over output channels of max |w|
    weight_sqnr_db: float | None
    float_metric: float | None = None  # the task metric with this layer alone in float
    metric_gain: float | None = None  # float_metric minus the INT8 graph's
    output_error_removed: float | None = None  # share of the output MSE vs float that goes with it
    # from this artifact's ONNX Runtime INT8 build on this CPU kind, when it exists (latency placement)
    int8_ms: float | None = None
    float_ms: float | None = None
    placement: str | None = None  # int8 | float: what that build runs the layer as


class ExplainReport(BaseModel):
    schema_version: int = EXPLAIN_SCHEMA
    created: str
    artifact: str
    recipe: str | None
    data: str
    split: str
    samples: int
    metric: str
    float_value: float | None
    int8_value: float | None
    drop: float | None
    output_mse: float
    probed: bool
    seconds: float  # the whole command
    seconds_passes: float  # the three passes (float, INT8, layers alone)
    seconds_probes: float  # one evaluation per layer in float
    layers: list[LayerReport]  # sorted by contribution to the drop, largest first
    culprits: list[str]
    advice: str
    placement: dict[str, Any] | None = None  # the build it came from: path, cpu, chosen, candidates' ms


# --------------------------------------------------------------------------- the graphs


@dataclass
class _Layer:
    name: str
    op: str
    position: int
    node: Any  # the node in the QDQ graph
    f_in: str  # its input tensor in the float graph
    f_out: str  # its output tensor in the float graph
    q_pre: str | None  # the tensor its input quantizer reads in the QDQ graph (None: the input is not quantized)
    q_out: str
    act: tuple[Any, Any] | None  # (QuantizeLinear, DequantizeLinear) on its input
    weight_dq: Any
    f_weight: str | None  # the float weight initializer in the reference graph


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _layers(qmodel: Any, fmodel: Any) -> list[_Layer]:
    graph = qmodel.graph
    inits, producers, _ = graph_maps(graph)
    f_nodes = {n.name: n for n in fmodel.graph.node}
    f_inits = {t.name for t in fmodel.graph.initializer}
    layers = []
    for position, node in enumerate(graph.node):
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            continue
        wdq = producers.get(node.input[1])
        if wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in inits:
            continue
        fnode = f_nodes.get(node.name)
        if fnode is None or fnode.op_type != node.op_type:
            raise ArtifactError(f"layer '{node.name}' of the INT8 graph is not in its float reference graph",
                                hint="the reference.onnx does not belong to this model.onnx; re-run compress")
        dq = producers.get(node.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        act = (q, dq) if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits else None
        layers.append(_Layer(name=node.name, op=node.op_type, position=position, node=node, f_in=fnode.input[0],
                             f_out=fnode.output[0], q_pre=act[0].input[0] if act else None, q_out=node.output[0], act=act,
                             weight_dq=wdq, f_weight=fnode.input[1] if fnode.input[1] in f_inits else None))
    if not layers:
        raise ArtifactError("the graph has no layer with an INT8 weight", hint="explain takes an INT8 (QDQ) model")
    return layers


def _with_outputs(model: Any, names: list[str], path: Path) -> None:
    import onnx

    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    onnx.save(model, str(path))


def _alone_model(qmodel: Any, layers: list[_Layer], path: Path) -> dict[str, tuple[str, str]]:
    """One graph holding, for every layer, its input quantizer and INT8 weight applied to a float input:
    ``in::<layer>`` -> ``out::<layer>``. Returns {layer: (input, output)} for the layers it could hold
    (a layer whose other inputs are computed, not constant, is left out)."""
    import onnx
    from onnx import helper

    inits, _, _ = graph_maps(qmodel.graph)
    nodes, used, io = [], set(), {}
    inputs, outputs = [], []
    for layer in layers:
        extra = [i for i in layer.node.input[2:] if i]
        if any(i not in inits for i in extra):
            continue
        x_in, y_out = f"in::{layer.name}", f"out::{layer.name}"
        x = x_in
        if layer.act is not None:
            q, dq = layer.act
            nodes.append(helper.make_node("QuantizeLinear", [x, *q.input[1:]], [f"q::{layer.name}"], name=f"q::{layer.name}"))
            nodes[-1].attribute.extend(q.attribute)
            nodes.append(helper.make_node("DequantizeLinear", [f"q::{layer.name}", *dq.input[1:]], [f"dq::{layer.name}"],
                                          name=f"dq::{layer.name}"))
            nodes[-1].attribute.extend(dq.attribute)
            used |= {i for i in [*q.input[1:], *dq.input[1:]] if i}
            x = f"dq::{layer.name}"
        wdq = layer.weight_dq
        w = f"w::{layer.name}"
        nodes.append(helper.make_node("DequantizeLinear", list(wdq.input), [w], name=f"wdq::{layer.name}"))
        nodes[-1].attribute.extend(wdq.attribute)
        used |= {i for i in wdq.input if i}
        copy = helper.make_node(layer.op, [x, w, *layer.node.input[2:]], [y_out], name=f"alone::{layer.name}")
        copy.attribute.extend(layer.node.attribute)
        if layer.node.domain:
            copy.domain = layer.node.domain
        nodes.append(copy)
        used |= set(extra)
        inputs.append(helper.make_tensor_value_info(x_in, onnx.TensorProto.FLOAT, None))
        outputs.append(onnx.ValueInfoProto(name=y_out))
        io[layer.name] = (x_in, y_out)
    graph = helper.make_graph(nodes, "explain-alone", inputs, outputs, [inits[n] for n in sorted(used)])
    model = helper.make_model(graph, opset_imports=list(qmodel.opset_import))
    model.ir_version = qmodel.ir_version
    onnx.save(model, str(path))
    return io


def _kept_float(qmodel: Any, fmodel: Any, layer: _Layer, path: Path) -> bool:
    """The QDQ graph with this one layer in float: its float weight, its input before the quantizer."""
    import copy

    if layer.f_weight is None:
        return False
    model = copy.deepcopy(qmodel)
    node = next(n for n in model.graph.node if n.name == layer.name)
    f_node = next(n for n in fmodel.graph.node if n.name == layer.name)
    f_inits = {t.name: t for t in fmodel.graph.initializer}
    # the float weight and the float bias (bias correction fitted the bias to the INT8 weight)
    for k in (1, 2):
        if k < len(f_node.input) and k < len(node.input) and f_node.input[k] in f_inits:
            kept = copy.deepcopy(f_inits[f_node.input[k]])
            kept.name = f"explain::float::{layer.name}::{k}"
            model.graph.initializer.append(kept)
            node.input[k] = kept.name
    if layer.q_pre is not None:
        node.input[0] = layer.q_pre
    drop_unused(model.graph)
    import onnx

    onnx.save(model, str(path))
    return True


# --------------------------------------------------------------------------- measuring


def _session(path: Path) -> Any:
    return cpu_session(path, threads=0)  # the reference kernels; 0: all cores


def _batches(x: dict[str, np.ndarray], size: int = BATCH) -> Iterator[dict[str, np.ndarray]]:
    n = next(iter(x.values())).shape[0]
    for i in range(0, n, size):
        yield {k: np.ascontiguousarray(v[i : i + size]) for k, v in x.items()}


def _db(signal: float, noise: float) -> float | None:
    if signal <= 0:
        return None
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf


def _qrange(q: Any, inits: dict[str, Any]) -> tuple[float, float]:
    """[low, high] a QuantizeLinear represents (per-tensor activations)."""
    from onnx import numpy_helper

    scale = float(np.ravel(numpy_helper.to_array(inits[q.input[1]]))[0])
    zp_arr = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
    zp = float(np.ravel(zp_arr)[0])
    info = np.iinfo(zp_arr.dtype)
    return (info.min - zp) * scale, (info.max - zp) * scale


def _weight_stats(layer: _Layer, q_inits: dict[str, Any], f_inits: dict[str, Any]) -> tuple[dict[str, float], float | None]:
    from onnx import numpy_helper

    wq = dequantized_weight(layer.weight_dq, q_inits)
    if layer.f_weight is None or wq is None:
        return {}, None
    w = numpy_helper.to_array(f_inits[layer.f_weight]).astype(np.float64)
    if w.shape != wq.shape:
        return {}, None
    trans_b = next((a.i for a in layer.node.attribute if a.name == "transB"), 0)
    axis = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0 if trans_b else 1}.get(layer.op, w.ndim - 1)  # output channels
    per_channel = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1)
    stats = {"min": float(per_channel.min()), "median": float(np.median(per_channel)), "max": float(per_channel.max())}
    return stats, _db(float((w**2).sum()), float(((wq - w) ** 2).sum()))


@dataclass
class _Acc:
    signal: float = 0.0
    alone: float = 0.0
    accumulated: float = 0.0
    cosine: float = 0.0
    samples: int = 0
    clipped: int = 0
    seen: int = 0
    low: float = math.inf
    high: float = -math.inf


def _cos_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    num = (a2 * b2).sum(1)
    den = np.sqrt((a2**2).sum(1) * (b2**2).sum(1))
    return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)


def _measure(fmodel: Any, qmodel: Any, layers: list[_Layer], x: dict[str, np.ndarray],
             work: Path) -> tuple[dict[str, _Acc], np.ndarray, np.ndarray]:
    """Per-layer sums over the data; and the float and QDQ graphs' first outputs."""
    q_inits, _, _ = graph_maps(qmodel.graph)
    f_first = fmodel.graph.output[0].name
    q_first = qmodel.graph.output[0].name
    f_names = sorted({t for layer in layers for t in (layer.f_in, layer.f_out)} | {f_first})
    q_names = sorted({t for layer in layers for t in (layer.q_out, layer.q_pre) if t} | {q_first})
    import copy

    _with_outputs(copy.deepcopy(fmodel), f_names, work / "float-taps.onnx")
    _with_outputs(copy.deepcopy(qmodel), q_names, work / "int8-taps.onnx")
    alone_io = _alone_model(qmodel, layers, work / "alone.onnx")
    fs, qs, alone = _session(work / "float-taps.onnx"), _session(work / "int8-taps.onnx"), _session(work / "alone.onnx")
    ranges = {layer.name: _qrange(layer.act[0], q_inits) for layer in layers if layer.act is not None}
    acc = {layer.name: _Acc() for layer in layers}
    f_out, q_out = [], []
    n = next(iter(x.values())).shape[0]
    with console.progress() as bar:
        task = bar.add_task("explain: float, INT8, alone", total=n, status="")
        for feed in _batches(x):
            fv = dict(zip(f_names, fs.run(f_names, feed), strict=True))
            qv = dict(zip(q_names, qs.run(q_names, feed), strict=True))
            a_out = [y for _, y in alone_io.values()]
            a_feed = {alone_io[layer.name][0]: fv[layer.f_in].astype(np.float32) for layer in layers if layer.name in alone_io}
            av = dict(zip(a_out, alone.run(a_out, a_feed), strict=True)) if alone_io else {}
            f_out.append(fv[f_first])
            q_out.append(qv[q_first])
            for layer in layers:
                a = acc[layer.name]
                ref = fv[layer.f_out].astype(np.float64)
                a.signal += float((ref**2).sum())
                a.accumulated += float(((qv[layer.q_out] - ref) ** 2).sum())
                a.cosine += float(_cos_per_sample(qv[layer.q_out].astype(np.float64), ref).sum())
                a.samples += ref.shape[0]
                if layer.name in alone_io:
                    a.alone += float(((av[alone_io[layer.name][1]] - ref) ** 2).sum())
                f_in = fv[layer.f_in]
                a.low, a.high = min(a.low, float(f_in.min())), max(a.high, float(f_in.max()))
                if layer.q_pre is not None:
                    low, high = ranges[layer.name]
                    scale = (high - low) / 255.0
                    pre = qv[layer.q_pre]
                    a.clipped += int(((pre > high + scale / 2) | (pre < low - scale / 2)).sum())
                    a.seen += pre.size
            bar.advance(task, next(iter(feed.values())).shape[0])
    return acc, np.concatenate(f_out), np.concatenate(q_out)


# --------------------------------------------------------------------------- the report


def _advice(rows: list[LayerReport], drop: float | None, metric: str, probed: bool, resolution: float = 0.0) -> tuple[list[str], str]:
    """The closing line: the fewest layers (at most 3) whose float runs recover ``MOST`` of the drop,
    with the recipe lines that keep them float or fit their range; else that the drop is spread.
    ``resolution``: what one sample is worth in the metric (top-1 on n samples: 1/n); a drop or a gain
    of less than two samples is noise, not a finding."""
    if not rows:
        return [], "no quantized layer"
    top = rows[0]
    noise = 2 * resolution
    if probed and drop is not None and 0 < drop < noise:
        drop_text = f"{drop:.4f}, under {noise:.4f} = 2 samples: within sampling noise"
        return [top.name], (f"INT8 costs no measurable {metric} here (drop {drop_text}); the largest output error comes "
                            f"from {top.name}; measure on more samples (--samples, --split) to tell more")
    if probed and drop is not None and drop > 0:
        # a layer counts when keeping it float recovers a real share of the drop (not sampling noise)
        helping = [r for r in rows if (r.metric_gain or 0.0) >= max(SIGNIFICANT * drop, noise)]
        culprits: list[LayerReport] = []
        for row in helping[:3]:
            culprits.append(row)
            if sum(r.metric_gain or 0.0 for r in culprits) >= MOST * drop:
                break
        gained = sum(r.metric_gain or 0.0 for r in culprits)
        if culprits and gained >= MOST * drop:
            names = [r.name for r in culprits]
            text = (f"{len(names)} of {len(rows)} layers are behind most of the {metric} drop of {drop:.4f}: "
                    + ", ".join(f"{r.name} (+{r.metric_gain:.4f} in float)" for r in culprits)
                    + f"; together +{gained:.4f}. In the recipe's quantize step: ignore: [{', '.join(repr(n) for n in names)}]")
            misfit = [r for r in culprits if _range_misfit(r)]
            if misfit:
                text += ", or fit their input range to the data: overrides: {" + ", ".join(
                    f"{r.name!r}: {{activation_range: [{r.observed_range[0]:.4g}, {r.observed_range[1]:.4g}]}}"  # type: ignore[index]
                    for r in misfit) + "}"
            return names, text
        best = culprits or rows[:1]
        return [r.name for r in best], (
            f"the {metric} drop of {drop:.4f} is spread over many layers: the {len(best)} that recover most in float "
            f"({', '.join(r.name for r in best)}) give back {sum(r.metric_gain or 0.0 for r in best):+.4f}; keeping "
            "layers float will not fix it: calibrate on more or better samples, or try another method")
    why = (f"keeping it float removes {top.output_error_removed:.0%} of the output error"
           if top.output_error_removed is not None else f"SQNR alone {_fmt_db(top.sqnr_alone_db)}")
    lead = (f"INT8 costs no {metric} here (drop {drop:+.4f})" if drop is not None and drop <= 0
            else "layers ranked by the error they add alone (no float runs)")
    return [top.name], f"{lead}; the largest error comes from {top.name} ({why}); to keep it float: ignore: [{top.name!r}]"


def _range_misfit(r: LayerReport) -> bool:
    """Its input is clipped, or its calibrated range is many times wider than the data's (coarse steps)."""
    if not r.observed_range or not r.calibrated_range:
        return False
    observed = r.observed_range[1] - r.observed_range[0]
    calibrated = r.calibrated_range[1] - r.calibrated_range[0]
    return (r.clipped_fraction or 0.0) > CLIP_ADVICE or (observed > 0 and calibrated > WIDE * observed)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _fmt_db(v: float | None) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.1f} dB")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.4f}"


COLUMNS = ["#", "layer", "op", "gain in float", "error removed", "SQNR alone", "SQNR accum.", "cosine",
           "input clipped", "w ch. max/median", "w SQNR"]
PLACEMENT_COLUMNS = ["ORT ms INT8/float", "runs as"]


def _columns(report: ExplainReport) -> list[str]:
    return COLUMNS + (PLACEMENT_COLUMNS if report.placement else [])


def _cells(i: int, r: LayerReport, placed: bool = False) -> list[str]:
    w = r.weight_channel_absmax
    spread = f"{w['max'] / w['median']:.1f}" if w and w.get("median") else "-"
    cells = [str(i + 1), r.name, r.op, _signed(r.metric_gain), _pct(r.output_error_removed), _fmt_db(r.sqnr_alone_db),
             _fmt_db(r.sqnr_accumulated_db), "-" if r.cosine_accumulated is None else f"{r.cosine_accumulated:.4f}",
             _pct(r.clipped_fraction), spread, _fmt_db(r.weight_sqnr_db)]
    if placed:
        times = "-" if r.int8_ms is None or r.float_ms is None else f"{r.int8_ms:.3f}/{r.float_ms:.3f}"
        cells += [times, r.placement or "-"]
    return cells


def _placement(art: Artifact) -> dict[str, Any] | None:
    """The newest ONNX Runtime INT8 build of ``art`` with a latency placement measured on this CPU kind."""
    import json

    from edgekit.cpu import detect

    kind, found = detect().kind, []
    for manifest in (art.path / "builds").glob("onnxruntime-int8-*/manifest.json"):
        try:
            record = json.loads(manifest.read_text())
            placed = record["target"]["options"].get("placement")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if isinstance(placed, dict) and placed.get("cpu") == kind and isinstance(placed.get("regions"), list):
            found.append((manifest.stat().st_mtime, manifest.parent, placed))
    if not found:
        return None
    _, path, placed = max(found, key=lambda f: f[0])
    return {"build": str(path), **placed}


def _annotate(rows: list[LayerReport], placed: dict[str, Any]) -> None:
    regions = {r.get("layer"): r for r in placed["regions"] if isinstance(r, dict)}
    for row in rows:
        region = regions.get(row.name)
        if region is not None:
            row.int8_ms, row.float_ms, row.placement = region.get("int8_ms"), region.get("float_ms"), region.get("choice")


def markdown(report: ExplainReport) -> str:
    head = (f"# edgekit explain: {report.artifact}\n\n{report.metric} on {report.data} ({report.split} split, "
            f"{report.samples} samples): float {_num(report.float_value)}, INT8 {_num(report.int8_value)}, "
            f"drop {_signed(report.drop)} ({report.seconds:.1f} s)\n\n")
    columns, placed = _columns(report), report.placement is not None
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cells(i, r, placed)) + " |" for i, r in enumerate(report.layers)]
    return head + "\n".join(lines) + f"\n\n{report.advice}{_placement_line(report)}\n"


def _placement_line(report: ExplainReport) -> str:
    p = report.placement
    if not p:
        return ""
    n = sum(r.placement == "float" for r in report.layers)
    return (f"\n\nLatency on ONNX Runtime ({p.get('cpu')}, build {p.get('build')}): every layer INT8 "
            f"{p.get('int8_ms')} ms, every layer float {p.get('float_ms')} ms; it runs {p.get('chosen')} "
            f"({n} of {len(report.layers)} layers float), {p.get('chosen_ms')} ms.")


def print_table(report: ExplainReport) -> None:
    from rich.table import Table

    if console.is_quiet():
        return
    table = Table(title=f"explain: {report.metric} float {_num(report.float_value)} -> INT8 {_num(report.int8_value)} on "
                  f"{report.samples} {report.split} samples; layers by contribution to the drop")
    for c in _columns(report):
        table.add_column(c, justify="left" if c in ("layer", "op", "runs as") else "right")
    for i, r in enumerate(report.layers):
        table.add_row(*_cells(i, r, report.placement is not None))
    console.err.print(table)
    console.err.print(report.advice + _placement_line(report))


def plot(report: ExplainReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report.layers, key=lambda r: r.position)

    def db(v: float | None) -> float:
        return float("nan") if v is None or math.isinf(v) else v

    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.6))
    xs = np.arange(len(rows))
    colors = ["tab:red" if r.name in report.culprits else "tab:blue" for r in rows]
    ax.bar(xs, [db(r.sqnr_alone_db) for r in rows], color=colors, alpha=0.7, label="SQNR of the layer alone")
    ax.plot(xs, [db(r.sqnr_accumulated_db) for r in rows], color="black", marker=".", label="SQNR accumulated")
    ax.set_xticks(xs)
    ax.set_xticklabels([r.name for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR (dB; lower = more error)")
    ax.set_title(f"INT8 error along the network ({report.metric} {_num(report.float_value)} -> {_num(report.int8_value)}); "
                 "red: the layers named",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: ExplainReport, out: Path, overwrite: bool) -> None:
    with staging(out, overwrite) as tmp:
        (tmp / "explain.json").write_text(report.model_dump_json(indent=2) + "\n")
        (tmp / "explain.md").write_text(markdown(report))
        plot(report, tmp / "explain.png")


# --------------------------------------------------------------------------- the command's API


def _graphs(art: Artifact, recipe: str | None, calib: str | None, data: str, tmp: Path) -> tuple[Path, Path]:
    """(QDQ graph, its float reference): the artifact's own, or the recipe's run on it in ``tmp``."""
    if art.manifest.quantized:
        if recipe:
            raise BadInputError(f"{art.path} is already INT8; --recipe quantizes a float artifact first",
                                hint="explain the INT8 artifact as it is (no --recipe), or give its float parent")
        reference = art.path / REFERENCE_ONNX
        if REFERENCE_ONNX not in art.manifest.files or not reference.is_file():
            raise ArtifactError(f"{art.path} has no {REFERENCE_ONNX} (made by an older edgekit)",
                                hint="explain its float parent with --recipe, or re-run compress")
        if art.onnx_path is None:  # pragma: no cover - an INT8 artifact is its QDQ graph
            raise ArtifactError(f"{art.path} has no ONNX graph")
        return art.onnx_path, reference
    if not recipe:
        raise BadInputError(f"{art.path} is a float model: nothing to explain without quantizing it",
                            hint="give --recipe int8 (quantized in memory, nothing written but the report)")
    from edgekit.compress import plan, run_steps

    parsed, _, plan_data = plan(art, recipe, calib)
    if not parsed.quantizes:
        raise BadInputError(f"recipe '{parsed.name}' has no quantize step", hint="explain is about INT8: try --recipe int8")
    state, _, _ = run_steps(art, parsed, plan_data or data, tmp / "run")
    if state.onnx is None or state.reference is None:  # pragma: no cover - a quantize step sets both
        raise ModelError(f"recipe '{parsed.name}' gave no INT8 graph")
    return state.onnx, state.reference


def explain(art: Artifact, *, recipe: str | None = None, calib: str | None = None, data: str | None = None,
            split: str = "val", samples: int | None = 1000, probe: bool = True, out: Path | None = None,
            overwrite: bool = False) -> ExplainReport:
    require("onnx", "full", "explain")
    require("onnxruntime", "onnxruntime", "explain")
    import tempfile

    from edgekit.data import take
    from edgekit.evaluate import predict_qdq, split_inputs
    from edgekit.metrics import task_metric

    if art.kind not in ("checkpoint", "compressed"):
        raise BadInputError(f"{art.path} is a {art.kind} artifact; explain takes a compressed INT8 one (or a float one with --recipe)")
    if split not in ("train", "val", "test"):
        raise BadInputError(f"unknown split '{split}'", hint="train, val or test")
    source = data or art.root().manifest.data or art.manifest.data
    if not source:
        raise DataError("explain needs data to measure on: the model was imported without --data", hint="pass --data SOURCE")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = out or art.path / "explain" / (f"{Path(recipe).stem}-{stamp}" if recipe and not art.manifest.quantized else stamp)
    check_output(out, overwrite, art.chain_paths())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-explain-") as scratch:
        work = Path(scratch)
        qpath, fpath = _graphs(art, recipe, calib, source, work)
        x, y = split_inputs(source, split, art.io)
        x, y = take((x, y), samples)
        n = next(iter(x.values())).shape[0]
        console.info(f"explaining {qpath.name} against its float graph on {n} samples of {source} ({split} split)")
        qmodel, fmodel = _load(qpath), _load(fpath)
        layers = _layers(qmodel, fmodel)
        t1 = time.perf_counter()
        acc, f_out, q_out = _measure(fmodel, qmodel, layers, x, work)
        t2 = time.perf_counter()
        metric, float_value = task_metric(art.io, f_out, y, f_out)
        _, int8_value = task_metric(art.io, q_out, y, f_out)
        mse = float(((q_out.astype(np.float64) - f_out) ** 2).mean())
        q_inits, _, _ = graph_maps(qmodel.graph)
        f_inits, _, _ = graph_maps(fmodel.graph)
        rows = []
        for layer in layers:
            a = acc[layer.name]
            wstats, wsqnr = _weight_stats(layer, q_inits, f_inits)
            rows.append(LayerReport(
                name=layer.name, op=layer.op, position=layer.position,
                sqnr_alone_db=_db(a.signal, a.alone) if a.alone or a.signal else None,
                sqnr_accumulated_db=_db(a.signal, a.accumulated), cosine_accumulated=a.cosine / max(a.samples, 1),
                clipped_fraction=a.clipped / a.seen if a.seen else None,
                calibrated_range=list(_qrange(layer.act[0], q_inits)) if layer.act is not None else None,
                observed_range=[a.low, a.high] if math.isfinite(a.low) else None,
                weight_channel_absmax=wstats, weight_sqnr_db=wsqnr))
        if probe:
            with console.progress() as bar:
                task = bar.add_task("explain: each layer in float", total=len(layers), status="")
                for layer, row in zip(layers, rows, strict=True):
                    path = work / "kept-float.onnx"
                    if _kept_float(qmodel, fmodel, layer, path):
                        out_k = predict_qdq(path, x)
                        _, value = task_metric(art.io, out_k, y, f_out)
                        row.float_metric = value
                        row.metric_gain = None if value is None or int8_value is None else value - int8_value
                        row.output_error_removed = (1 - float(((out_k.astype(np.float64) - f_out) ** 2).mean()) / mse
                                                    if mse > 0 else 0.0)
                    bar.update(task, advance=1, status=layer.name[-30:])
        t3 = time.perf_counter()
    rows.sort(key=lambda r: (-(r.metric_gain or 0.0), -(r.output_error_removed or 0.0),
                             r.sqnr_alone_db if r.sqnr_alone_db is not None else math.inf))
    drop = None if float_value is None or int8_value is None else float_value - int8_value
    culprits, advice = _advice(rows, drop, metric, probe, resolution=1 / n if metric == "top1" else 0.0)
    placed = _placement(art) if art.manifest.quantized else None
    if placed:
        _annotate(rows, placed)
    report = ExplainReport(created=stamp, artifact=str(art.path), recipe=recipe if not art.manifest.quantized else None,
                           data=source, split=split, samples=n, metric=metric, float_value=float_value,
                           int8_value=int8_value, drop=drop, output_mse=mse, probed=probe,
                           seconds=time.perf_counter() - t0, seconds_passes=t2 - t1, seconds_probes=t3 - t2, layers=rows, culprits=culprits, advice=advice,
                           placement={k: v for k, v in placed.items() if k != "regions"} if placed else None)
    write(report, out, overwrite)
    print_table(report)
    console.info(f"[green]wrote[/green] {out}/explain.json, explain.md, explain.png")
    return report


__all__ = ["ExplainReport", "LayerReport", "explain"]
