"""The ``quantize`` step: INT8 post-training quantization to one portable QDQ graph.

Calibration runs once with ONNX Runtime's calibrators (minmax; percentile; entropy with TensorRT's
2048/128 histogram, since ORT's default 128/128 returns plain minmax), then the graph is quantized
as often as the accuracy budget needs without calibrating again. The stored graph is symmetric INT8
(zero point 0) with per-channel weights stored as INT8 initializers, per-tensor activations and float
biases, and is checked against TensorRT's rules. Transformer graphs keep LayerNorm / Softmax / GELU
in float, quantize only MatMuls with constant weights, and get SmoothQuant-style smoothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import console
from edgekit.errors import DataError, ModelError, require
from edgekit.iospec import IOSpec
from edgekit.recipe import QuantizeStep
from edgekit.steps import Context, State
from edgekit.steps import qdq_graph as g
from edgekit.steps import qdq_stats as stats
from edgekit.steps.adaround import adaround
from edgekit.steps.ptq import (
    CNN_OPS,
    TRANSFORMER_OPS,
    calibrate,
    calibration_set,
    chunks,
    float_graph,
    layer_overrides,
    mse_ranges,
    quantize_graph,
    range_table,
    select,
)

__all__ = ["CNN_OPS", "calibrate", "calibration_set", "mse_ranges", "range_table", "run"]

# --------------------------------------------------------------------------- evaluation


def _evaluate(model: Path, x: dict[str, np.ndarray], y: np.ndarray | None, io: IOSpec, ref: np.ndarray) -> tuple[float, float]:
    """(task metric on val, MSE of outputs vs the float graph) for one candidate graph."""
    from edgekit.evaluate import predict_qdq
    from edgekit.metrics import task_metric

    out = predict_qdq(model, x)  # the graph's own accuracy, the same on every CPU
    _, value = task_metric(io, out, y, ref)
    return float(value if value is not None else 0.0), float(((out - ref) ** 2).mean())


# --------------------------------------------------------------------------- the step


def run(state: State, opts: QuantizeStep, ctx: Context) -> State:
    require("onnxruntime", "onnxruntime", "INT8 quantization")
    require("onnx", "full", "INT8 quantization")
    from edgekit.evaluate import predict_onnx, split_inputs
    from edgekit.steps.qdq_check import assert_tensorrt_portable

    work = ctx.scratch("quantize")
    fp32 = float_graph(state, ctx, work)
    pre = work / "pre.onnx"
    g.preprocess(fp32, pre)
    transformer = g.is_transformer(pre)
    x_cal = calibration_set(opts, ctx, state.io)
    smoothed = 0
    if transformer and opts.smooth_quant in (True, "auto"):
        smoothed = stats.smooth(pre, chunks(x_cal), opts.smooth_alpha)
    elif opts.smooth_quant is True:
        smoothed = stats.smooth(pre, chunks(x_cal), opts.smooth_alpha)
    ops = TRANSFORMER_OPS if transformer else CNN_OPS
    nodes = g.weighted_nodes(pre)
    if not nodes:
        raise ModelError("the graph has no Conv/Gemm/MatMul with constant weights to quantize")
    all_nodes = [(n.name, n.op_type) for n in g.load(pre).graph.node]
    ignored = select(opts.ignore, all_nodes)
    skip, overrides = layer_overrides(opts, all_nodes, pre)
    ranges = frozen_ranges(state.ranges, pre) if state.ranges is not None else None
    bias_correction = opts.bias_correction if ranges is None else False  # qat trained with the rounding itself
    rounding = opts.rounding if ranges is None else "nearest"
    if rounding == "adaround" and "bias_correction" not in opts.model_fields_set:
        bias_correction = False  # adaround's objective includes each layer's mean shift; the weights-only correction would undo it
    rounded: dict[str, np.ndarray] = {}  # adaround's choice per layer, kept across the budget's re-quantizations
    rounding_report: dict[str, dict[str, float]] = {}
    if ranges is not None:
        console.info(f"  ranges: the {len(state.ranges or {})} qat trained with (no calibration, no bias correction)")
    else:
        console.info(f"  calibrating: {opts.method} on {next(iter(x_cal.values())).shape[0]} samples"
                     f"{', transformer graph (MatMul/Gemm only)' if transformer else ''}"
                     f"{f', {smoothed} inputs smoothed' if smoothed else ''}")
        ranges = calibrate(pre, x_cal, opts, ops, work)

    eval_source = ctx.data or opts.calibration  # a model imported without data: judge on the calibration set
    if not eval_source:
        raise DataError("the quantize step needs calibration data", hint="pass --calib SOURCE")
    x_val, y_val = split_inputs(eval_source, "val", state.io)
    ref_val = predict_onnx(pre, x_val)
    float_metric, _ = _evaluate(pre, x_val, y_val, state.io, ref_val)

    def make(exclude: set[str], path: Path) -> tuple[float, float]:
        quantize_graph(pre, path, ranges, exclude, ops, opts, overrides, transformer)
        if rounding == "adaround":
            rounding_report.update(adaround(path, pre, chunks(x_cal), opts.rounding_iterations, cache=rounded))
        if bias_correction == "full":
            stats.full_bias_correction(path, pre, chunks(x_cal))
        elif bias_correction:
            stats.bias_correction(path, pre, chunks(x_cal))
        return _evaluate(path, x_val, y_val, state.io, ref_val)

    squeeze_excite = g.squeeze_excite_nodes(pre) if opts.squeeze_excite_float and not transformer else set()
    base_exclude = ignored | skip | squeeze_excite
    candidate = work / "int8.onnx"
    metric, mse = make(base_exclude, candidate)
    console.info(f"  INT8 val {state.io.task == 'classification' and 'top-1' or 'score'}: {metric:.4f} "
                 f"(float {float_metric:.4f}, drop {float_metric - metric:+.4f})")
    fallback: list[dict[str, Any]] = []
    budget = None
    if opts.max_accuracy_drop is not None:
        groups = g.fallback_groups(pre, ops)
        limit = max(1, int(len(groups) * opts.max_fallback_fraction))
        def noise(path: Path, names: list[str]) -> dict[str, float]:
            return stats.quant_noise(path, {n: groups[n] for n in names}, chunks(x_val))

        budget_info = _fit_budget(make, groups, base_exclude, float_metric, metric, mse, opts.max_accuracy_drop, work, limit,
                                  noise)
        fallback, best_path, metric = budget_info["fallback"], budget_info["path"], budget_info["metric"]
        if best_path != candidate:
            shutil.copyfile(best_path, candidate)
        budget = {"max_accuracy_drop": opts.max_accuracy_drop, "float_val": float_metric, "int8_val": metric,
                  "plain_int8_val": budget_info["plain"], "met": float_metric - metric <= opts.max_accuracy_drop + 1e-12,
                  "fallback": fallback}
        if not budget["met"]:
            budget["explanation"] = (f"with {len(fallback)} of {len(groups)} layers in float (the most max_fallback_fraction "
                                     f"{opts.max_fallback_fraction} allows) the val metric is {metric:.4f}, "
                                     f"{float_metric - metric:.4f} below float (budget {opts.max_accuracy_drop})")
    if opts.profile == "portable":
        assert_tensorrt_portable(candidate)
    note = {
        "method": opts.method, "samples": int(next(iter(x_cal.values())).shape[0]), "calibration": opts.calibration or ctx.data,
        "profile": opts.profile, "tensorrt_portable": opts.profile == "portable", "transformer": transformer,
        "smoothed_inputs": smoothed, "squeeze_excite_float_nodes": len(squeeze_excite), "bias_correction": bias_correction,
        "rounding": rounding, **({"rounding_mse": rounding_report} if rounding_report else {}),
        "ranges": "qat" if state.ranges is not None else opts.method, "float_val": float_metric, "int8_val": metric,
        "float_layers": sorted(base_exclude | {f["node"] for f in fallback}),
        "float_nodes": sorted(base_exclude | {n for f in fallback for n in f["nodes"]}),
        "quantized_layers": len({n for n, _ in nodes} - base_exclude - {f["node"] for f in fallback}),
    }
    notes: dict[str, Any] = {"quantize": note}
    if budget is not None:
        notes["budget"] = budget
    (work / "ranges.json").write_text(json.dumps(range_table(ranges), indent=0))
    return State(module=state.module, spec=state.spec, io=state.io, onnx=candidate, quantized=True, reference=pre,
                 notes=notes)


PROBE_LIMIT = 16  # up to this many layers, each is probed; beyond, they are ranked by quantization noise


def frozen_ranges(kept: dict[str, tuple[float, float]], pre: Path) -> Any:
    """The activation ranges a qat step trained with, as ONNX Runtime's calibration result (for the
    same architecture, so the same tensor names)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    graph = g.load(pre).graph
    tensors = {t for n in graph.node for t in [*n.input, *n.output]} | {i.name for i in graph.input}
    foreign = sorted(set(kept) - tensors)
    if foreign:
        raise ModelError(f"the ranges qat kept are for another graph ({', '.join(foreign[:3])} not in this one)",
                         hint="keep the same model between qat and quantize (no step between them)")
    return TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32)) for k, (lo, hi) in kept.items()})


def _fit_budget(make: Any, groups: dict[str, set[str]], base_exclude: set[str], float_metric: float, metric: float,
                mse: float, budget: float, work: Path, limit: int, noise: Any) -> dict[str, Any]:
    """Keep the most sensitive layers in float until the val drop fits the budget.

    Sensitivity of a layer = what the val metric gains (then how much output error falls) when only
    that layer stays float. With many layers, probing each costs a quantization and an evaluation
    apiece, so they are ranked instead by the noise-to-signal ratio of their quantized activations
    (one pass). Layers are added to the float set in that order; the best graph seen is kept whether or
    not the budget is met.
    """
    plain = metric
    best = {"path": work / "int8.onnx", "metric": metric, "fallback": [], "plain": plain}
    if float_metric - metric <= budget:
        return best
    candidates = [n for n in groups if n not in base_exclude]
    ranking = "probe" if len(candidates) <= PROBE_LIMIT else "noise"
    console.info(f"  budget {budget} missed (drop {float_metric - metric:.4f}); ranking {len(candidates)} layers "
                 f"({'probing each' if ranking == 'probe' else 'by quantization noise'})")
    scores = []
    if ranking == "probe":
        for name in candidates:
            m, e = make(base_exclude | groups[name], work / "probe.onnx")
            scores.append((m - metric, mse - e, name))
    else:
        ratios = noise(work / "int8.onnx", candidates)
        scores = [(ratios.get(name, 0.0), 0.0, name) for name in candidates]
    scores.sort(key=lambda s: (-s[0], -s[1]))
    exclude = set(base_exclude)
    fallback: list[dict[str, Any]] = []
    for gain, err_drop, name in scores[:limit]:
        exclude |= groups[name]
        path = work / f"fallback-{len(fallback) + 1}.onnx"
        m, _ = make(exclude, path)
        fallback.append({"node": name, "nodes": sorted(groups[name]), "ranking": ranking, "sensitivity": float(gain),
                         "mse_reduction": float(err_drop), "val_after": float(m)})
        console.info(f"    float: {name} ({ranking} {gain:.4g}) -> val {m:.4f}")
        if m > best["metric"] or (float_metric - m <= budget and best["metric"] < m + 1e-12):
            best = {"path": path, "metric": m, "fallback": list(fallback), "plain": plain}
        if float_metric - m <= budget:
            return {"path": path, "metric": m, "fallback": list(fallback), "plain": plain}
    return best
